//! The sender envelope (`relay.envelope = "json"`): each text message is relayed as
//! `{"type":"message","room":ROOM,"from":NAME,"data":TEXT}`, so a chat can trust who said what.
//!
//! `from` is the sender's checked `?name=` (or `null`), fixed when the connection was admitted;
//! nothing the client sends can change it. The wrapped form is the message: it is what every
//! member receives (the sender too, with `relay.echo`), what history keeps and replays, and what
//! the queues count. Binary messages cannot be wrapped and are refused with close `1003`.
//!
//! The per-connection part (`{"type":"message","room":..,"from":..,"data":`) is rendered once at
//! admission; each message costs one allocation: that prefix, the text JSON-escaped, `}`.
//!
//! Pure rendering: this file must not queue, lock or read a socket.

use crate::proto::message::{Message, Utf8Bytes};

use crate::config::Envelope as Mode;

/// The close reason sent with `1003` when a binary message arrives under the JSON envelope.
pub const BINARY_REFUSED: &str = "binary messages are not relayed with relay.envelope = \"json\"";

/// One connection's envelope: its rendered prefix.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// `{"type":"message","room":"R","from":"N","data":` for this sender.
    prefix: String,
}

impl Envelope {
    /// The envelope for a member of `room` named `from`; `None` when `mode` is raw relay.
    pub fn new(mode: Mode, room: &str, from: Option<&str>) -> Option<Envelope> {
        if mode == Mode::None {
            return None;
        }
        let mut prefix = String::with_capacity(64 + room.len() + from.map_or(4, str::len));
        prefix.push_str(r#"{"type":"message","room":"#);
        escape_into(&mut prefix, room);
        prefix.push_str(r#","from":"#);
        match from {
            Some(name) => escape_into(&mut prefix, name),
            None => prefix.push_str("null"),
        }
        prefix.push_str(r#","data":"#);
        Some(Envelope { prefix })
    }

    /// The envelope of a message the backend API publishes into `room`:
    /// `{"type":"message","room":R,"from":null,"source":"api","data":TEXT}`. No member's message
    /// can carry `source`: a member's prefix is fixed at admission and its text is escaped into
    /// `data`.
    pub fn api(room: &str) -> Envelope {
        let mut prefix = String::with_capacity(80 + room.len());
        prefix.push_str(r#"{"type":"message","room":"#);
        escape_into(&mut prefix, room);
        prefix.push_str(r#","from":null,"source":"api","data":"#);
        Envelope { prefix }
    }

    /// `text` wrapped for relay.
    pub fn wrap(&self, text: &str) -> Utf8Bytes {
        let mut out = String::with_capacity(self.prefix.len() + text.len() + text.len() / 8 + 3);
        out.push_str(&self.prefix);
        escape_into(&mut out, text);
        out.push('}');
        Utf8Bytes::from(out)
    }
}

/// What a client's text or binary message becomes for relay: unchanged without an envelope, a
/// text wrapped with one; `None` for a binary message under an envelope (close `1003`).
pub fn apply(envelope: Option<&Envelope>, msg: Message) -> Option<Message> {
    match (envelope, msg) {
        (None, msg) => Some(msg),
        (Some(envelope), Message::Text(text)) => Some(Message::Text(envelope.wrap(&text))),
        (Some(_), Message::Binary(_)) => None,
        (Some(_), other) => Some(other),
    }
}

/// Appends `s` as a JSON string (quotes included): `"` and `\` escaped, control characters as
/// `\n`-style or `\u00XX` escapes; everything else, non-ASCII included, as UTF-8.
fn escape_into(out: &mut String, s: &str) {
    out.push('"');
    let mut clean = 0;
    for (i, b) in s.bytes().enumerate() {
        let escape = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x08 => "\\b",
            0x0c => "\\f",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Every byte matched above is ASCII, so `i` is a character boundary.
        out.push_str(&s[clean..i]);
        if escape.is_empty() {
            out.push_str(&format!("\\u{b:04x}"));
        } else {
            out.push_str(escape);
        }
        clean = i + 1;
    }
    out.push_str(&s[clean..]);
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn wrapped(room: &str, from: Option<&str>, text: &str) -> String {
        Envelope::new(Mode::Json, room, from)
            .unwrap()
            .wrap(text)
            .as_str()
            .to_owned()
    }

    #[test]
    fn the_contract_shape() {
        assert_eq!(
            wrapped("1234", Some("alice"), "hi"),
            r#"{"type":"message","room":"1234","from":"alice","data":"hi"}"#
        );
        assert_eq!(
            wrapped("lobby", None, "hi"),
            r#"{"type":"message","room":"lobby","from":null,"data":"hi"}"#
        );
    }

    #[test]
    fn raw_relay_has_no_envelope() {
        assert!(Envelope::new(Mode::None, "r", Some("a")).is_none());
        let binary = Message::binary(vec![0u8, 159]);
        assert_eq!(apply(None, binary.clone()), Some(binary.clone()));
        assert_eq!(apply(None, Message::text("x")), Some(Message::text("x")));
    }

    #[test]
    fn with_an_envelope_text_is_wrapped_and_binary_refused() {
        let envelope = Envelope::new(Mode::Json, "r", Some("bob"));
        assert_eq!(
            apply(envelope.as_ref(), Message::text("hi")),
            Some(Message::text(
                r#"{"type":"message","room":"r","from":"bob","data":"hi"}"#
            ))
        );
        assert_eq!(apply(envelope.as_ref(), Message::binary(vec![1u8])), None);
    }

    #[test]
    fn escaping_round_trips_through_a_json_parser() {
        let mut every_control: String = (0u8..0x20).map(char::from).collect();
        every_control.push('\u{7f}');
        let texts = [
            r#"quote " backslash \ slash /"#,
            "line\nbreak\r\ttab",
            "é ü 日本 🎉 \u{2028}\u{2029}",
            r#"{"type":"presence","count":99}"#,
            "",
            every_control.as_str(),
            "\\u0000 is not a NUL",
        ];
        for text in texts {
            for from in [Some("al\"ice\\"), Some("Zoë 🎉"), None] {
                let raw = wrapped("r.1_-", from, text);
                let v: Value = serde_json::from_str(&raw)
                    .unwrap_or_else(|e| panic!("{raw:?} is not JSON: {e}"));
                assert_eq!(
                    v,
                    json!({"type": "message", "room": "r.1_-", "from": from, "data": text})
                );
            }
        }
    }

    #[test]
    fn any_text_round_trips() {
        // A fixed-seed generator over ASCII, controls, BMP and astral characters.
        let mut seed = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for _ in 0..2000 {
            let len = (next() % 40) as usize;
            let text: String = (0..len)
                .filter_map(|_| {
                    let r = next();
                    let c = match r % 4 {
                        0 => (r >> 8) % 0x20,
                        1 => 0x20 + (r >> 8) % 0x60,
                        2 => (r >> 8) % 0x1_0000,
                        _ => (r >> 8) % 0x11_0000,
                    };
                    char::from_u32(c as u32)
                })
                .collect();
            let mut ours = String::new();
            escape_into(&mut ours, &text);
            assert_eq!(serde_json::from_str::<String>(&ours).unwrap(), text);
        }
    }

    #[test]
    fn escapes_match_serde_json() {
        let text: String = (0u8..0x80).map(char::from).collect();
        let mut ours = String::new();
        escape_into(&mut ours, &text);
        assert_eq!(ours, serde_json::to_string(&text).unwrap());
    }

    #[test]
    fn the_bound_holds_for_the_worst_text() {
        let mut relay = crate::config::Relay {
            max_message_size: 100,
            ..Default::default()
        };
        assert_eq!(relay.max_relayed_bytes(), 100);
        relay.envelope = Mode::Json;
        let worst = "\u{1}".repeat(100);
        let name = "\"".repeat(64);
        let room = "r".repeat(64);
        let len = wrapped(&room, Some(&name), &worst).len() as u64;
        assert!(len <= relay.max_relayed_bytes(), "{len}");
    }
}
