//! WebSocket framing (RFC 6455 §5) as pure functions: the header the server writes in front of a
//! shared payload, and the checks on every header a client sends.
//!
//! The write path never copies a payload here: [`header`] returns at most 10 bytes that the writer
//! sends, vectored, in front of the payload it shares with every other receiver. The read path
//! judges a header before any payload is buffered ([`parse_head`]), so a declared length over the
//! limit costs nothing; the fragmentation rules are [`Fragments`]; close frames are [`close_code`].

/// The opcodes of RFC 6455 §5.2; the others are reserved and refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation = 0x0,
    Text = 0x1,
    Binary = 0x2,
    Close = 0x8,
    Ping = 0x9,
    Pong = 0xA,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<OpCode> {
        Some(match bits {
            0x0 => OpCode::Continuation,
            0x1 => OpCode::Text,
            0x2 => OpCode::Binary,
            0x8 => OpCode::Close,
            0x9 => OpCode::Ping,
            0xA => OpCode::Pong,
            _ => return None,
        })
    }

    pub fn is_control(self) -> bool {
        (self as u8) & 0x8 != 0
    }
}

/// The longest header a server writes (no mask): 2 bytes, then a 64-bit length.
pub const MAX_SERVER_HEADER: usize = 10;
/// The longest header a client sends: 2 bytes, a 64-bit length and the 4-byte mask.
pub const MAX_CLIENT_HEADER: usize = 14;
/// Control frames carry at most 125 bytes (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

/// The header of one unfragmented, unmasked server frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    bytes: [u8; MAX_SERVER_HEADER],
    len: u8,
}

impl Header {
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The header of a final (FIN) server frame of `opcode` carrying `len` payload bytes.
pub fn header(opcode: OpCode, len: usize) -> Header {
    let mut bytes = [0u8; MAX_SERVER_HEADER];
    bytes[0] = 0x80 | opcode as u8;
    let n = if len < 126 {
        bytes[1] = len as u8;
        2
    } else if len <= 0xffff {
        bytes[1] = 126;
        bytes[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        4
    } else {
        bytes[1] = 127;
        bytes[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        10
    };
    Header { bytes, len: n }
}

/// A client frame's header, checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: [u8; 4],
    pub len: u64,
}

/// Why a client's frame or message is refused; each maps to one close code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("reserved bits set")]
    ReservedBits,
    #[error("unknown opcode")]
    UnknownOpcode,
    #[error("unmasked client frame")]
    Unmasked,
    #[error("fragmented control frame")]
    FragmentedControl,
    #[error("control frame over 125 bytes")]
    ControlTooLong,
    #[error("continuation without a message to continue")]
    OrphanContinuation,
    #[error("new data frame inside a fragmented message")]
    Interleaved,
    #[error("message too big")]
    TooBig,
    #[error("invalid UTF-8")]
    InvalidUtf8,
    #[error("bad close frame")]
    BadClose,
}

impl FrameError {
    /// The close code the server answers this with (RFC 6455 §7.4.1).
    pub fn close_code(self) -> u16 {
        match self {
            FrameError::TooBig => 1009,
            FrameError::InvalidUtf8 => 1007,
            _ => 1002,
        }
    }

    /// The close reason sent with the code.
    pub fn reason(self) -> &'static str {
        match self {
            FrameError::TooBig => "message too big",
            FrameError::InvalidUtf8 => "invalid UTF-8",
            _ => "protocol error",
        }
    }
}

/// How many header bytes a client frame has, judged from its first two.
pub fn head_len(first_two: [u8; 2]) -> usize {
    let ext = match first_two[1] & 0x7f {
        126 => 2,
        127 => 8,
        _ => 0,
    };
    let mask = if first_two[1] & 0x80 != 0 { 4 } else { 0 };
    2 + ext + mask
}

/// The payload length a whole header (`head_len` bytes) declares, valid or not: what to skip
/// to reach the next frame.
pub fn declared_len(bytes: &[u8]) -> u64 {
    match bytes[1] & 0x7f {
        126 => u64::from(u16::from_be_bytes([bytes[2], bytes[3]])),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&bytes[2..10]);
            u64::from_be_bytes(be)
        }
        n => u64::from(n),
    }
}

/// Checks a whole client header (`head_len` bytes) against RFC 6455 and the `max` message size.
pub fn parse_head(bytes: &[u8], max: u64) -> Result<Head, FrameError> {
    let (b0, b1) = (bytes[0], bytes[1]);
    if b0 & 0x70 != 0 {
        return Err(FrameError::ReservedBits);
    }
    let opcode = OpCode::from_bits(b0 & 0x0f).ok_or(FrameError::UnknownOpcode)?;
    let fin = b0 & 0x80 != 0;
    if b1 & 0x80 == 0 {
        return Err(FrameError::Unmasked);
    }
    let (len, rest) = match b1 & 0x7f {
        126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as u64, &bytes[4..]),
        127 => {
            let mut be = [0u8; 8];
            be.copy_from_slice(&bytes[2..10]);
            let len = u64::from_be_bytes(be);
            // RFC 6455 §5.2: the most significant bit must be 0.
            if len >> 63 != 0 {
                return Err(FrameError::ReservedBits);
            }
            (len, &bytes[10..])
        }
        n => (n as u64, &bytes[2..]),
    };
    if opcode.is_control() {
        if !fin {
            return Err(FrameError::FragmentedControl);
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(FrameError::ControlTooLong);
        }
    } else if len > max {
        return Err(FrameError::TooBig);
    }
    let mut mask = [0u8; 4];
    mask.copy_from_slice(&rest[..4]);
    Ok(Head {
        fin,
        opcode,
        mask,
        len,
    })
}

/// Unmasks `data` in place; `offset` is the position of `data[0]` within the frame's payload.
pub fn unmask(data: &mut [u8], mask: [u8; 4], offset: u64) {
    let shift = (offset % 4) as usize;
    for (i, b) in data.iter_mut().enumerate() {
        *b ^= mask[(i + shift) % 4];
    }
}

/// The fragmentation rule: which data message is in progress and how big it has grown.
#[derive(Debug, Default)]
pub struct Fragments {
    /// The opcode of the message being assembled, if a first fragment has arrived.
    open: Option<OpCode>,
    /// Payload bytes of that message so far, including the frame being judged.
    bytes: u64,
}

impl Fragments {
    /// Judges a data frame's header; returns the opcode of the message it belongs to.
    pub fn on_data(&mut self, head: &Head, max: u64) -> Result<OpCode, FrameError> {
        let opcode = match (self.open, head.opcode) {
            (None, OpCode::Continuation) => return Err(FrameError::OrphanContinuation),
            (Some(_), OpCode::Text | OpCode::Binary) => return Err(FrameError::Interleaved),
            (Some(open), _) => open,
            (None, op) => {
                self.bytes = 0;
                op
            }
        };
        self.bytes += head.len;
        if self.bytes > max {
            return Err(FrameError::TooBig);
        }
        self.open = if head.fin { None } else { Some(opcode) };
        Ok(opcode)
    }
}

/// A client close frame's code (`None` when it has no payload), checked per RFC 6455 §7.4.
pub fn close_code(payload: &[u8]) -> Result<Option<u16>, FrameError> {
    match payload {
        [] => Ok(None),
        [_] => Err(FrameError::BadClose),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            let valid = matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999);
            if !valid {
                return Err(FrameError::BadClose);
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(FrameError::InvalidUtf8);
            }
            Ok(Some(code))
        }
    }
}

/// The payload of a server close frame: the code, then the reason.
pub fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    p
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 6455 §5.7's mask key.
    const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn masked(b0: u8, payload: &[u8]) -> Vec<u8> {
        let mut out = vec![b0];
        match payload.len() {
            n if n < 126 => out.push(0x80 | n as u8),
            n if n <= 0xffff => {
                out.push(0x80 | 126);
                out.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                out.push(0x80 | 127);
                out.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        out.extend_from_slice(&MASK);
        let start = out.len();
        out.extend_from_slice(payload);
        unmask(&mut out[start..], MASK, 0);
        out
    }

    #[test]
    fn server_headers_match_rfc_6455_examples() {
        // §5.7: a single-frame unmasked text message "Hello".
        assert_eq!(header(OpCode::Text, 5).as_bytes(), &[0x81, 0x05]);
        // §5.7: an unmasked Ping "Hello" and its Pong.
        assert_eq!(header(OpCode::Ping, 5).as_bytes(), &[0x89, 0x05]);
        assert_eq!(header(OpCode::Pong, 5).as_bytes(), &[0x8a, 0x05]);
        // §5.7: 256 bytes binary message in a single unmasked frame.
        assert_eq!(
            header(OpCode::Binary, 256).as_bytes(),
            &[0x82, 0x7E, 0x01, 0x00]
        );
        // §5.7: 64 KiB binary message in a single unmasked frame.
        assert_eq!(
            header(OpCode::Binary, 65536).as_bytes(),
            &[0x82, 0x7F, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00]
        );
    }

    #[test]
    fn server_header_length_boundaries() {
        assert_eq!(header(OpCode::Binary, 0).as_bytes(), &[0x82, 0]);
        assert_eq!(header(OpCode::Binary, 125).as_bytes(), &[0x82, 125]);
        assert_eq!(header(OpCode::Binary, 126).as_bytes(), &[0x82, 126, 0, 126]);
        assert_eq!(
            header(OpCode::Binary, 0xffff).as_bytes(),
            &[0x82, 126, 0xff, 0xff]
        );
        assert_eq!(header(OpCode::Close, 2).as_bytes(), &[0x88, 2]);
        assert_eq!(header(OpCode::Binary, 16 << 20).len(), 10);
    }

    #[test]
    fn the_rfc_masked_hello_is_parsed_and_unmasked() {
        // §5.7: a single-frame masked text message "Hello".
        let frame = [
            0x81, 0x85, 0x37, 0xfa, 0x21, 0x3d, 0x7f, 0x9f, 0x4d, 0x51, 0x58,
        ];
        assert_eq!(head_len([frame[0], frame[1]]), 6);
        let head = parse_head(&frame[..6], 1024).unwrap();
        assert_eq!(
            head,
            Head {
                fin: true,
                opcode: OpCode::Text,
                mask: MASK,
                len: 5
            }
        );
        let mut payload = frame[6..].to_vec();
        // Unmasking in two pieces gives the same as in one.
        let (a, b) = payload.split_at_mut(2);
        unmask(a, MASK, 0);
        unmask(b, MASK, 2);
        assert_eq!(payload, b"Hello");
    }

    #[test]
    fn extended_lengths_are_read() {
        let f = masked(0x82, &[7u8; 300]);
        assert_eq!(head_len([f[0], f[1]]), 8);
        assert_eq!(parse_head(&f[..8], 1 << 20).unwrap().len, 300);
        let f = masked(0x82, &[7u8; 70_000]);
        assert_eq!(head_len([f[0], f[1]]), 14);
        assert_eq!(parse_head(&f[..14], 1 << 20).unwrap().len, 70_000);
    }

    #[test]
    fn hostile_headers_get_their_errors() {
        let check =
            |bytes: &[u8], max: u64| parse_head(&bytes[..head_len([bytes[0], bytes[1]])], max);
        assert_eq!(check(&masked(0xC1, b"x"), 9), Err(FrameError::ReservedBits));
        assert_eq!(
            check(&masked(0x83, b"x"), 9),
            Err(FrameError::UnknownOpcode)
        );
        assert_eq!(
            check(&masked(0x8B, b"x"), 9),
            Err(FrameError::UnknownOpcode)
        );
        assert_eq!(
            check(&masked(0x09, b"p"), 9),
            Err(FrameError::FragmentedControl)
        );
        assert_eq!(
            check(&masked(0x89, &[0; 126]), 999),
            Err(FrameError::ControlTooLong)
        );
        assert_eq!(check(&[0x81, 0x01, b'x'], 9), Err(FrameError::Unmasked));
        assert_eq!(check(&masked(0x82, &[0; 10]), 9), Err(FrameError::TooBig));
        // A control frame is judged by its own limit, not the message size.
        assert!(check(&masked(0x89, &[0; 125]), 9).is_ok());
        let mut huge = vec![0x82, 0xff];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        huge.extend_from_slice(&MASK);
        assert_eq!(check(&huge, 9), Err(FrameError::ReservedBits));
        huge[2] = 0x7f;
        assert_eq!(check(&huge, 9), Err(FrameError::TooBig));
        for code in [
            FrameError::ReservedBits,
            FrameError::Unmasked,
            FrameError::BadClose,
        ] {
            assert_eq!(code.close_code(), 1002);
        }
        assert_eq!(FrameError::TooBig.close_code(), 1009);
        assert_eq!(FrameError::InvalidUtf8.close_code(), 1007);
    }

    fn head(fin: bool, opcode: OpCode, len: u64) -> Head {
        Head {
            fin,
            opcode,
            mask: MASK,
            len,
        }
    }

    #[test]
    fn fragments_follow_the_rules() {
        let mut f = Fragments::default();
        assert_eq!(
            f.on_data(&head(true, OpCode::Continuation, 1), 10),
            Err(FrameError::OrphanContinuation)
        );
        let mut f = Fragments::default();
        assert_eq!(
            f.on_data(&head(false, OpCode::Text, 4), 10),
            Ok(OpCode::Text)
        );
        assert_eq!(
            f.on_data(&head(true, OpCode::Binary, 1), 10),
            Err(FrameError::Interleaved)
        );
        let mut f = Fragments::default();
        assert_eq!(
            f.on_data(&head(false, OpCode::Binary, 6), 10),
            Ok(OpCode::Binary)
        );
        assert_eq!(
            f.on_data(&head(false, OpCode::Continuation, 4), 10),
            Ok(OpCode::Binary)
        );
        assert_eq!(
            f.on_data(&head(true, OpCode::Continuation, 1), 10),
            Err(FrameError::TooBig)
        );
        // After a whole message, the next starts afresh.
        let mut f = Fragments::default();
        assert_eq!(
            f.on_data(&head(false, OpCode::Text, 6), 10),
            Ok(OpCode::Text)
        );
        assert_eq!(
            f.on_data(&head(true, OpCode::Continuation, 4), 10),
            Ok(OpCode::Text)
        );
        assert_eq!(
            f.on_data(&head(true, OpCode::Binary, 10), 10),
            Ok(OpCode::Binary)
        );
    }

    #[test]
    fn close_frames_are_checked() {
        assert_eq!(close_code(&[]), Ok(None));
        assert_eq!(close_code(&[0x03]), Err(FrameError::BadClose));
        assert_eq!(close_code(&[0x03, 0xE8]), Ok(Some(1000)));
        assert_eq!(close_code(&[0x0F, 0xA0, b'o', b'k']), Ok(Some(4000)));
        for reserved in [999u16, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert_eq!(
                close_code(&reserved.to_be_bytes()),
                Err(FrameError::BadClose),
                "{reserved}"
            );
        }
        assert_eq!(
            close_code(&[0x03, 0xE8, 0xff]),
            Err(FrameError::InvalidUtf8)
        );
        assert_eq!(close_payload(1013, "slow consumer")[..2], [0x03, 0xF5]);
    }
}
