//! One TLS stream shared by its connection's reader, its writer and the fan-out's direct writes.
//!
//! The stream sits behind one short lock: each half takes it for one poll, and a direct write
//! ([`SharedTls::try_write_now`]) only tries it, so the fan-out never waits for a connection. The
//! lock is held for synchronous work only (records in or out, one system call), never across an
//! await. It replaces `tokio::io::split`, whose halves hide the stream from a third party.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::TlsStream;

/// The stream behind its lock.
pub struct SharedTls(Mutex<TlsStream>);

/// One half of a shared stream: the reader's or the writer's (each uses one direction only).
pub struct Half(Arc<SharedTls>);

/// Puts `stream` behind its lock: the reader's half, the writer's half and the handle for direct
/// writes.
pub fn share(stream: TlsStream) -> (Half, Half, Arc<SharedTls>) {
    let shared = Arc::new(SharedTls(Mutex::new(stream)));
    (Half(shared.clone()), Half(shared.clone()), shared)
}

impl SharedTls {
    /// [`TlsStream::try_write_now`] if the stream is free; `None` if a half holds it.
    pub fn try_write_now(&self, bufs: &[IoSlice<'_>]) -> Option<bool> {
        self.0.try_lock()?.try_write_now(bufs)
    }
}

impl AsyncRead for Half {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.0.lock()).poll_read(cx, buf)
    }
}

impl AsyncWrite for Half {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.0.lock()).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut *self.0.0.lock()).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.0.lock()).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut *self.0.0.lock()).poll_shutdown(cx)
    }
}
