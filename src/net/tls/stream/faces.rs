//! The TLS stream's tokio faces, `AsyncRead` and `AsyncWrite`: plaintext out of `plain`, vectored
//! writes into records, flush and the close_notify at shutdown. They drive the stream's own state
//! machine (`process`, `poll_fill`, `encrypt`, `poll_send`) and must not parse or build records
//! themselves.

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use rustls::unbuffered::ConnectionState;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::buffers::{discard_front, zero_extend};
use super::{Rest, TlsStream};

impl AsyncRead for TlsStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        dst: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if this.plain_at < this.plain.len() {
                let n = dst.remaining().min(this.plain.len() - this.plain_at);
                dst.put_slice(&this.plain[this.plain_at..this.plain_at + n]);
                this.plain_at += n;
                if this.plain_at == this.plain.len() {
                    this.plain = Vec::new();
                    this.plain_at = 0;
                }
                return Poll::Ready(Ok(()));
            }
            if this.read_closed || dst.remaining() == 0 {
                return Poll::Ready(Ok(()));
            }
            this.process()?;
            if this.plain.is_empty() && !this.read_closed {
                ready!(this.poll_fill(cx))?;
            }
        }
    }
}

impl AsyncWrite for TlsStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if bufs.iter().all(|b| b.is_empty()) {
            return Poll::Ready(Ok(0));
        }
        if this.close_queued {
            return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into()));
        }
        // Bounded: what the socket has not taken yet must go before more is encrypted.
        ready!(this.poll_send(cx))?;
        match this.process()? {
            Rest::Writable => {}
            Rest::Closed => return Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Rest::Blocked => return Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
        let taken = this.encrypt(bufs)?;
        // One socket write per record sequence; what the socket does not take waits in `outgoing`.
        match this.poll_send(cx) {
            Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
            Poll::Ready(Ok(())) | Poll::Pending => {}
        }
        Poll::Ready(Ok(taken))
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_send(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.close_queued {
            ready!(this.poll_send(cx))?;
            if let Rest::Writable = this.process()? {
                let Self {
                    conn,
                    incoming,
                    outgoing,
                    failed,
                    ..
                } = this;
                let status = conn.process_tls_records(incoming);
                let discard = status.discard;
                *failed |= status.state.is_err();
                if let Ok(ConnectionState::WriteTraffic(mut traffic)) = status.state {
                    // An alert record: 2 bytes of alert, a header and the AEAD overhead.
                    let start = outgoing.len();
                    zero_extend(outgoing, start + 64);
                    match traffic.queue_close_notify(&mut outgoing[start..]) {
                        Ok(n) => outgoing.truncate(start + n),
                        Err(e) => {
                            outgoing.truncate(start);
                            discard_front(incoming, discard);
                            return Poll::Ready(Err(io::Error::other(e.to_string())));
                        }
                    }
                }
                discard_front(incoming, discard);
            }
            this.close_queued = true;
        }
        ready!(this.poll_send(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}
