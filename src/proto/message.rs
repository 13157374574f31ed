//! The WebSocket message as wsline relays it: text (checked UTF-8) or binary, plus the ping and
//! pong a connection answers. Cheap to clone (the payload is a shared [`Bytes`]), so one message
//! can sit in many outboxes at once.
//!
//! Plain data: it knows nothing of frames, sockets or rooms (`ws/` reads and writes frames, the
//! relay queues messages). A close is not a message here: the connection's close phase writes
//! its own close frame.
//!
//! It must not grow past a payload handle and a tag: its size is every queued message's cost.

use std::fmt;
use std::ops::Deref;

use bytes::Bytes;

/// One WebSocket message. Its size is a queue slot's cost (`relay::outbox::SLOT_BYTES`): keep it
/// small (a payload handle and a tag, 40 bytes on 64-bit).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A text message: its payload is valid UTF-8.
    Text(Utf8Bytes),
    /// A binary message.
    Binary(Bytes),
    /// A ping (control frame, at most 125 bytes on the wire).
    Ping(Bytes),
    /// A pong (control frame, at most 125 bytes on the wire).
    Pong(Bytes),
}

impl Message {
    /// A text message.
    pub fn text(text: impl Into<Utf8Bytes>) -> Message {
        Message::Text(text.into())
    }

    /// A binary message.
    pub fn binary(data: impl Into<Bytes>) -> Message {
        Message::Binary(data.into())
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> usize {
        self.payload().len()
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.payload().is_empty()
    }

    /// The payload as bytes, whatever the kind.
    pub fn payload(&self) -> &[u8] {
        match self {
            Message::Text(t) => t.as_bytes(),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => b,
        }
    }

    /// The payload as text: a text message's own, any other's when it happens to be UTF-8.
    pub fn to_text(&self) -> Result<&str, std::str::Utf8Error> {
        match self {
            Message::Text(t) => Ok(t.as_str()),
            Message::Binary(b) | Message::Ping(b) | Message::Pong(b) => std::str::from_utf8(b),
        }
    }
}

/// Bytes that are valid UTF-8, checked once when made; cheap to clone and to share.
#[derive(Clone, PartialEq, Eq)]
pub struct Utf8Bytes(Bytes);

impl Utf8Bytes {
    /// A static string, without copying.
    pub const fn from_static(s: &'static str) -> Utf8Bytes {
        Utf8Bytes(Bytes::from_static(s.as_bytes()))
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // The only ways in are checked (`TryFrom<Bytes>`) or come from a `str`.
        std::str::from_utf8(&self.0).expect("Utf8Bytes holds UTF-8")
    }

    /// The text's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

impl Deref for Utf8Bytes {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<String> for Utf8Bytes {
    fn from(s: String) -> Utf8Bytes {
        Utf8Bytes(Bytes::from(s))
    }
}

impl From<&str> for Utf8Bytes {
    fn from(s: &str) -> Utf8Bytes {
        Utf8Bytes(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<&String> for Utf8Bytes {
    fn from(s: &String) -> Utf8Bytes {
        Utf8Bytes::from(s.as_str())
    }
}

impl TryFrom<Bytes> for Utf8Bytes {
    type Error = std::str::Utf8Error;

    /// Checks `bytes` once; afterwards the text is read without a check that can fail.
    fn try_from(bytes: Bytes) -> Result<Utf8Bytes, Self::Error> {
        std::str::from_utf8(&bytes)?;
        Ok(Utf8Bytes(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_is_no_bigger_than_tungstenites() {
        // relay::outbox counts each queued message as its payload plus this slot; tungstenite's
        // message took 56 bytes.
        assert!(std::mem::size_of::<Message>() <= 56);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(
            std::mem::size_of::<Message>(),
            40,
            "a payload handle and a tag"
        );
        assert_eq!(
            std::mem::size_of::<Utf8Bytes>(),
            std::mem::size_of::<Bytes>()
        );
    }

    #[test]
    fn text_is_checked_once_and_shared() {
        let t = Utf8Bytes::try_from(Bytes::from_static("héllo".as_bytes())).unwrap();
        assert_eq!(t.as_str(), "héllo");
        assert_eq!(&*t, "héllo");
        assert!(Utf8Bytes::try_from(Bytes::from_static(&[0xff, 0x00])).is_err());
        assert!(Utf8Bytes::try_from(Bytes::from_static(&[0xc3])).is_err());
        assert_eq!(format!("{t}"), "héllo");
        assert_eq!(format!("{t:?}"), "\"héllo\"");
    }

    #[test]
    fn constructors_lengths_and_text() {
        let m = Message::text("héllo");
        assert_eq!(m, Message::Text(Utf8Bytes::from_static("héllo")));
        assert_eq!(m.len(), 6);
        assert_eq!(m.to_text().unwrap(), "héllo");
        assert_eq!(Message::text(String::from("x")), Message::text("x"));
        let b = Message::binary(vec![0u8, 159]);
        assert_eq!(b, Message::Binary(Bytes::from_static(&[0, 159])));
        assert_eq!(b.len(), 2);
        assert!(b.to_text().is_err());
        assert!(Message::Ping(Bytes::new()).is_empty());
        assert_eq!(Message::Pong(Bytes::from_static(b"ok")).payload(), b"ok");
    }
}
