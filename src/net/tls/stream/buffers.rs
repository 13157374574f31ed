//! The TLS stream's buffer and socket helpers: grow a buffer within its ceiling, free it once
//! drained, write it to the socket without waiting or while polling. Plain byte moving: they must
//! not know about records, rustls or the stream's state.

use std::io;
use std::task::{Context, Poll, ready};

use tokio::net::TcpStream;

use super::MAX_INCOMING;

/// The error of a stream whose peer went past [`MAX_INCOMING`] (or that failed before).
pub(super) fn ceiling_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!(
            "tls: the peer broke the protocol or sent over {MAX_INCOMING} bytes without completing a message"
        ),
    )
}

/// Removes the `n` bytes rustls is done with from the front of `incoming`, freeing it once empty.
pub(super) fn discard_front(incoming: &mut Vec<u8>, n: usize) {
    if n > 0 {
        incoming.drain(..n.min(incoming.len()));
    }
    if incoming.is_empty() && incoming.capacity() > 0 {
        *incoming = Vec::new();
    }
}

/// Sets `buf`'s length to `len` (zero-filled) with a capacity of at most `ceiling`: it grows by
/// doubling, like a `Vec`, but never past the ceiling.
pub(super) fn grow_within(buf: &mut Vec<u8>, len: usize, ceiling: usize) {
    if len > buf.capacity() && buf.capacity() > 0 {
        let target = (buf.capacity() * 2).max(len).min(ceiling.max(len));
        buf.reserve_exact(target - buf.len());
    }
    zero_extend(buf, len);
}

/// Sets `buf`'s length to `len`, filling with zeros: a fresh zeroed allocation, or copies from a
/// zeroed block (one `memcpy` each, where `Vec::resize` loops per byte in an unoptimized build).
pub(super) fn zero_extend(buf: &mut Vec<u8>, len: usize) {
    static ZEROS: [u8; 4096] = [0; 4096];
    if buf.capacity() == 0 {
        *buf = vec![0; len];
        return;
    }
    buf.truncate(len);
    buf.reserve(len - buf.len());
    while buf.len() < len {
        let n = (len - buf.len()).min(ZEROS.len());
        buf.extend_from_slice(&ZEROS[..n]);
    }
}

/// Writes what the socket takes of `buf[*at..]` without waiting; the buffer is freed once all of
/// it is written.
pub(super) fn try_write_all(tcp: &TcpStream, buf: &mut Vec<u8>, at: &mut usize) -> io::Result<()> {
    while *at < buf.len() {
        match tcp.try_write(&buf[*at..]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => *at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            Err(e) => return Err(e),
        }
    }
    *buf = Vec::new();
    *at = 0;
    Ok(())
}

/// Writes `buf[*at..]` to the socket; the buffer is freed once all of it is written.
pub(super) fn poll_write_all(
    tcp: &TcpStream,
    buf: &mut Vec<u8>,
    at: &mut usize,
    cx: &mut Context<'_>,
) -> Poll<io::Result<()>> {
    while *at < buf.len() {
        ready!(tcp.poll_write_ready(cx))?;
        match tcp.try_write(&buf[*at..]) {
            Ok(0) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
            Ok(n) => *at += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Poll::Ready(Err(e)),
        }
    }
    *buf = Vec::new();
    *at = 0;
    Poll::Ready(Ok(()))
}
