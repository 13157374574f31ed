//! The reading half of a connection: client frames to whole messages, checked as they arrive.
//!
//! State lives in [`Reader`], not in the future that reads, so reading can stop at any await (the
//! connection's `select!` ends) and resume in the close phase without losing a byte. A header is
//! judged before its payload is read; a data frame's payload is read straight into the buffer the
//! message will be shared from (its declared length is reserved at once: pages the client never
//! sends are never touched); control payloads (at most 125 bytes) get their own small buffer.
//!
//! A text message's UTF-8 is checked as its bytes arrive, fragment by fragment and read by read,
//! so invalid bytes fail the connection (1007) at once, not when the message ends.
//!
//! After wsline's own close frame, [`Reader::linger`] reads on and discards (bounded in bytes; the
//! close phase bounds it in time) until the client's close frame or the end of the stream: a
//! socket closed with unread bytes sends a reset, and the client would lose the close frame.

use crate::proto::message::{Message, Utf8Bytes};
use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::ws::frame::{self, Fragments, FrameError, Head, MAX_CLIENT_HEADER, OpCode};

/// What a client sent, once a whole message or control frame is in.
#[derive(Debug)]
pub enum Incoming {
    Message(Message),
    Ping(Bytes),
    Pong,
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
}

/// Why reading stopped.
#[derive(Debug)]
pub enum ReadEnd {
    /// The client broke the protocol or a limit: answer with the error's close code.
    Refused(FrameError),
    /// The stream ended or failed: nothing more can be read.
    Gone,
}

impl From<FrameError> for ReadEnd {
    fn from(e: FrameError) -> ReadEnd {
        ReadEnd::Refused(e)
    }
}

/// Reads client frames from `io`.
pub struct Reader<R> {
    io: R,
    /// Bytes the HTTP layer read past the upgrade request: the stream's first bytes.
    early: Bytes,
    /// `relay.max_message_size`.
    max: u64,
    /// The header being read, and how much of it has arrived.
    head: [u8; MAX_CLIENT_HEADER],
    have: usize,
    /// The frame whose payload is being read, and how much of it has arrived.
    frame: Option<(Head, u64)>,
    fragments: Fragments,
    /// The opcode of the data message being assembled.
    opcode: Option<OpCode>,
    /// That message's payload so far (unmasked).
    message: BytesMut,
    /// The payload of the control frame being read.
    control: Vec<u8>,
    /// How much of `message` is known to be valid UTF-8 (text messages); what follows is at most
    /// an incomplete character waiting for its next bytes.
    valid: usize,
    /// Payload bytes of a refused frame still to come: [`Reader::linger`] skips them.
    skip: u64,
    /// The client's close frame has been read (valid or not).
    peer_closed: bool,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub fn new(io: R, early: Bytes, max: u64) -> Reader<R> {
        Reader {
            io,
            early,
            max,
            head: [0; MAX_CLIENT_HEADER],
            have: 0,
            frame: None,
            fragments: Fragments::default(),
            opcode: None,
            message: BytesMut::new(),
            control: Vec::new(),
            valid: 0,
            skip: 0,
            peer_closed: false,
        }
    }

    /// The next message or control frame. Cancel-safe: progress is kept in `self`.
    #[cfg(test)]
    pub async fn next(&mut self) -> Result<Incoming, ReadEnd> {
        self.next_heard(|| {}).await
    }

    /// The next message or control frame, calling `heard` whenever bytes arrive: a client sending a large message
    /// slowly is heard from all along, not only when the message completes.
    pub async fn next_heard(&mut self, heard: impl Fn()) -> Result<Incoming, ReadEnd> {
        loop {
            let Some((head, got)) = self.frame else {
                let need = if self.have < 2 {
                    2
                } else {
                    frame::head_len([self.head[0], self.head[1]])
                };
                if self.have < need {
                    let dst = &mut self.head[self.have..need];
                    self.have += read_into(&mut self.io, &mut self.early, dst).await?;
                    heard();
                    continue;
                }
                self.have = 0;
                let head = frame::parse_head(&self.head[..need], self.max).inspect_err(|_| {
                    self.skip = frame::declared_len(&self.head[..need]);
                    self.peer_closed = self.head[0] & 0x0f == OpCode::Close as u8;
                })?;
                if !head.opcode.is_control() {
                    let opcode = self.fragments.on_data(&head, self.max).inspect_err(|_| {
                        self.skip = head.len;
                    })?;
                    self.opcode = Some(opcode);
                    // The declared length is within the limit: reserve it (virtual memory only
                    // until the bytes arrive).
                    self.message.reserve(head.len as usize);
                }
                self.frame = Some((head, 0));
                continue;
            };
            if got < head.len {
                let left = (head.len - got) as usize;
                let n = if head.opcode.is_control() {
                    self.control.resize(head.len as usize, 0);
                    let start = got as usize;
                    let dst = &mut self.control[start..];
                    let n = read_into(&mut self.io, &mut self.early, dst).await?;
                    frame::unmask(&mut self.control[start..start + n], head.mask, got);
                    heard();
                    n
                } else {
                    let start = self.message.len();
                    if !self.early.is_empty() {
                        let n = left.min(self.early.len());
                        self.message.extend_from_slice(&self.early.split_to(n));
                    } else {
                        let mut dst = (&mut self.message).limit(left);
                        match self.io.read_buf(&mut dst).await {
                            Ok(0) | Err(_) => return Err(ReadEnd::Gone),
                            Ok(_) => {}
                        }
                    }
                    frame::unmask(&mut self.message[start..], head.mask, got);
                    heard();
                    let n = self.message.len() - start;
                    if self.opcode == Some(OpCode::Text) {
                        self.check_utf8().inspect_err(|_| {
                            // The rest of this frame is skipped by [`Reader::linger`].
                            self.frame = None;
                            self.skip = head.len - got - n as u64;
                        })?;
                    }
                    n
                };
                self.frame = Some((head, got + n as u64));
                continue;
            }
            self.frame = None;
            match head.opcode {
                OpCode::Ping => {
                    return Ok(Incoming::Ping(std::mem::take(&mut self.control).into()));
                }
                OpCode::Pong => {
                    self.control = Vec::new();
                    return Ok(Incoming::Pong);
                }
                OpCode::Close => {
                    // Even a malformed close ends what the client sends: nothing to linger for.
                    self.peer_closed = true;
                    let code = frame::close_code(&std::mem::take(&mut self.control))?;
                    return Ok(Incoming::Close(code));
                }
                _ if !head.fin => {}
                _ => {
                    let data = std::mem::take(&mut self.message).freeze();
                    let valid = std::mem::take(&mut self.valid);
                    return Ok(Incoming::Message(match self.opcode.take() {
                        // Checked as it arrived: what is left is a character cut off at the end.
                        Some(OpCode::Text) if valid != data.len() => {
                            return Err(FrameError::InvalidUtf8.into());
                        }
                        Some(OpCode::Text) => Message::Text(
                            Utf8Bytes::try_from(data).map_err(|_| FrameError::InvalidUtf8)?,
                        ),
                        _ => Message::Binary(data),
                    }));
                }
            }
        }
    }
}

impl<R: AsyncRead + Unpin> Reader<R> {
    /// Checks the text message's bytes that arrived since the last check. An incomplete
    /// character at the end waits for the next bytes; an invalid sequence is refused at once.
    fn check_utf8(&mut self) -> Result<(), FrameError> {
        match std::str::from_utf8(&self.message[self.valid..]) {
            Ok(_) => self.valid = self.message.len(),
            Err(e) if e.error_len().is_none() => self.valid += e.valid_up_to(),
            Err(_) => return Err(FrameError::InvalidUtf8),
        }
        Ok(())
    }

    /// After the server's close frame: reads and discards what the client still sends, at most
    /// `budget` bytes, until its close frame (whose code is returned; `None` at once if it sent one
    /// already, valid or not) or the end of the stream
    /// (`None`). The rest of a refused or unfinished frame is skipped by its declared length;
    /// the frames after it are read by their headers alone, payloads skipped unread.
    pub async fn linger(&mut self, mut budget: u64) -> Option<u16> {
        if let Some((head, got)) = self.frame.take() {
            self.skip += head.len - got;
        }
        self.message = BytesMut::new();
        self.opcode = None;
        self.valid = 0;
        let mut scratch = vec![0u8; LINGER_CHUNK];
        loop {
            while self.skip > 0 {
                let n = (self.skip.min(budget) as usize).min(scratch.len());
                if n == 0 {
                    return None;
                }
                let n = read_into(&mut self.io, &mut self.early, &mut scratch[..n])
                    .await
                    .ok()?;
                self.skip -= n as u64;
                budget -= n as u64;
            }
            if self.peer_closed {
                return None;
            }
            let need = if self.have < 2 {
                2
            } else {
                frame::head_len([self.head[0], self.head[1]])
            };
            if self.have < need {
                if budget == 0 {
                    return None;
                }
                let dst = &mut self.head[self.have..need];
                let n = read_into(&mut self.io, &mut self.early, dst).await.ok()?;
                self.have += n;
                budget = budget.saturating_sub(n as u64);
                continue;
            }
            let head = &self.head[..need];
            self.have = 0;
            match frame::parse_head(head, frame::MAX_CONTROL_PAYLOAD as u64) {
                Ok(head) if head.opcode == OpCode::Close => {
                    let mut payload = [0u8; frame::MAX_CONTROL_PAYLOAD];
                    let payload = &mut payload[..head.len as usize];
                    let mut got = 0;
                    while got < payload.len() {
                        let dst = &mut payload[got..];
                        got += read_into(&mut self.io, &mut self.early, dst).await.ok()?;
                    }
                    frame::unmask(payload, head.mask, 0);
                    return Some(frame::close_code(payload).ok().flatten().unwrap_or(1005));
                }
                _ => self.skip = frame::declared_len(head),
            }
        }
    }
}

/// What [`Reader::linger`] reads at a time (a buffer it frees when it ends).
const LINGER_CHUNK: usize = 16 * 1024;

/// Reads at least one byte into `dst`, from `early` first. A closed or failed stream is `Gone`.
async fn read_into<R: AsyncRead + Unpin>(
    io: &mut R,
    early: &mut Bytes,
    dst: &mut [u8],
) -> Result<usize, ReadEnd> {
    if !early.is_empty() {
        let n = dst.len().min(early.len());
        dst[..n].copy_from_slice(&early.split_to(n));
        return Ok(n);
    }
    match io.read(dst).await {
        Ok(0) | Err(_) => Err(ReadEnd::Gone),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1, 2, 3, 4];
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
        }
        out.extend_from_slice(&mask);
        let start = out.len();
        out.extend_from_slice(payload);
        frame::unmask(&mut out[start..], mask, 0);
        out
    }

    #[tokio::test]
    async fn fragments_and_pings_arrive_one_byte_at_a_time() {
        let (mut client, server) = tokio::io::duplex(1);
        let mut wire = masked(0x01, b"hel"); // text, not final
        wire.extend(masked(0x89, b"ping")); // a ping between fragments
        wire.extend(masked(0x80, &[b'l'; 300])); // final continuation, 16-bit length
        wire.extend(masked(0x88, &[0x03, 0xE8]));
        // The first two bytes arrived with the request head.
        let early = Bytes::copy_from_slice(&wire[..2]);
        let rest = wire[2..].to_vec();
        tokio::spawn(async move { client.write_all(&rest).await });
        let mut reader = Reader::new(server, early, 1024);
        assert!(matches!(reader.next().await, Ok(Incoming::Ping(p)) if p == "ping"));
        let mut text = b"hel".to_vec();
        text.extend([b'l'; 300]);
        match reader.next().await {
            Ok(Incoming::Message(Message::Text(t))) => assert_eq!(t.as_bytes(), text),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            reader.next().await,
            Ok(Incoming::Close(Some(1000)))
        ));
        assert!(matches!(reader.next().await, Err(ReadEnd::Gone)));
    }

    #[tokio::test]
    async fn limits_and_utf8_are_judged() {
        for (wire, expected) in [
            (masked(0x82, &[0; 200]), FrameError::TooBig),
            (masked(0x81, &[0xff]), FrameError::InvalidUtf8),
            (masked(0x88, &[0x03]), FrameError::BadClose),
        ] {
            let mut reader = Reader::new(tokio::io::empty(), Bytes::from(wire), 100);
            match reader.next().await {
                Err(ReadEnd::Refused(e)) => assert_eq!(e, expected),
                other => panic!("{other:?}"),
            }
        }
    }

    /// Arbitrary bytes, some of them well-formed frame headers, in pieces of arbitrary size:
    /// every outcome is a message, a control frame, a refusal or the end, never a panic or a
    /// message over the limit.
    #[tokio::test]
    async fn random_input_never_panics_and_never_exceeds_the_limit() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2_000 {
            let mut wire = Vec::new();
            while wire.len() < 400 {
                match next() % 3 {
                    0 => wire.push(next() as u8),
                    1 => {
                        let op = [0x0, 0x1, 0x2, 0x8, 0x9, 0xA][(next() % 6) as usize];
                        let fin = if next() % 2 == 0 { 0x80 } else { 0 };
                        let len = (next() % 140) as usize;
                        let payload: Vec<u8> = (0..len).map(|_| next() as u8).collect();
                        wire.extend(masked(fin | op, &payload));
                    }
                    _ => wire.extend(masked(0x81, b"ok")),
                }
            }
            let mut reader = Reader::new(tokio::io::empty(), Bytes::from(wire), 128);
            for _ in 0..1_000 {
                match reader.next().await {
                    Ok(Incoming::Message(m)) => assert!(m.len() <= 128),
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
        }
    }
}
