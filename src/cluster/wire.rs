//! The pure rules of the cluster: key and channel names, the message envelope, presence entries,
//! the diff of remote names, and the reconnect backoff. No I/O here, so all of it is unit-tested.
//!
//! Envelope (binary-safe, one per relayed message or presence notice):
//! `[1][kind][len(instance)][instance bytes][payload]`, where kind is `T` (text), `B` (binary),
//! `P` (the sender's presence entry for this room changed: re-read it), or a kick of the backend
//! API: `K` (payload: the name key) or `k` (`[len(reply)][reply][name key]`: each node that hears
//! it counts what it closed under the reply id, see [`Keys::kick`]). With `relay.history`, a
//! message is also appended to the room's Redis stream by the same script that publishes it, and
//! published as `[1][H][len(id)][stream id][envelope]`, so a node that replays the stream after
//! subscribing drops exactly the live messages the replay already held. A numbered room's message
//! (history and the JSON envelope) is numbered by the same script from the room's hash in Redis
//! ([`Keys::seq`]: `,"seq":N}` ends its text, [`SEQ_KEY`]) and published as
//! `[1][N][len(id)][stream id][len(epoch)][epoch][len(sender)][sender][envelope]`: every node, its
//! own included, delivers it as it comes back, and the sending node leaves out the member named by
//! `sender` (no echo). The instance id is the node
//! id plus a per-process epoch, so a node drops its own publications and a restarted node is a new
//! instance whose predecessor's entries are swept, never counted twice.
//!
//! Pure rules: this file must not do I/O, lock or spawn.

use std::sync::Arc;
use std::time::Duration;

use crate::proto::message::Message;
use bytes::{BufMut, Bytes, BytesMut};

const VERSION: u8 = 1;

/// Every key and channel of one deployment, under `cluster.prefix`.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(prefix: &str) -> Keys {
        Keys {
            prefix: prefix.to_owned(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The pub/sub channel of a room: messages and presence notices.
    pub fn channel(&self, room: &str) -> String {
        format!("{}:room:{room}", self.prefix)
    }

    /// The room a channel name belongs to, if it is one of ours.
    pub fn room_of<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":room:")
    }

    /// Hash: instance -> that node's presence entry for the room ([`entry`]).
    pub fn presence(&self, room: &str) -> String {
        format!("{}:presence:{room}", self.prefix)
    }

    /// Sorted set, every score 0: the rooms with a presence entry of any node, so a page of them
    /// by name (`ZRANGE .. BYLEX`, byte order) costs the page, not the number of rooms.
    pub fn rooms(&self) -> String {
        format!("{}:rooms", self.prefix)
    }

    /// Hash: name key (`request::name_key`) -> the instance whose member holds it.
    pub fn names(&self, room: &str) -> String {
        format!("{}:names:{room}", self.prefix)
    }

    /// Hash: instance -> that node's connection count.
    pub fn total(&self) -> String {
        format!("{}:total", self.prefix)
    }

    /// Set of the instances that have written anything (what the sweep walks).
    pub fn nodes(&self) -> String {
        format!("{}:nodes", self.prefix)
    }

    /// Set of the rooms an instance has a presence entry in (for the sweep).
    pub fn node_rooms(&self, instance: &str) -> String {
        format!("{}:node:{instance}:rooms", self.prefix)
    }

    /// Set of `room\nkey` for the names an instance holds (for the sweep).
    pub fn node_names(&self, instance: &str) -> String {
        format!("{}:node:{instance}:names", self.prefix)
    }

    /// Hash (`nodes`, `own`, `closed`) with a short TTL: the answers to one kick of the backend
    /// API, counted up by the nodes that heard it (`reply` names the kick).
    pub fn kick(&self, reply: &str) -> String {
        format!("{}:kick:{reply}", self.prefix)
    }

    /// Stream: the room's last messages (`relay.history`), each field `m` an envelope.
    pub fn history(&self, room: &str) -> String {
        format!("{}:history:{room}", self.prefix)
    }

    /// Hash of a numbered room (history and the JSON envelope): `e` its epoch, `n` its last
    /// number; it lives and expires with the room's history stream.
    pub fn seq(&self, room: &str) -> String {
        format!("{}:seq:{room}", self.prefix)
    }

    /// String with a TTL of `node_timeout`: the instance is alive while it exists.
    pub fn alive(&self, instance: &str) -> String {
        format!("{}:node:{instance}:alive", self.prefix)
    }
}

/// What an envelope carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Payload {
    Message(Message),
    /// The sender's presence entry for the channel's room changed.
    Presence,
    /// The backend API kicked the members whose name has `key` (`request::name_key`); with
    /// `reply`, the asking node waits for each node's count under [`Keys::kick`]`(reply)`.
    Kick {
        key: Box<str>,
        reply: Option<Box<str>>,
    },
}

/// Wraps a relayed message (or a presence notice) with the sending instance.
pub fn encode(instance: &str, payload: &Payload) -> Bytes {
    let (kind, data): (u8, &[u8]) = match payload {
        Payload::Message(Message::Binary(b)) => (b'B', b),
        Payload::Message(Message::Text(t)) => (b'T', t.as_bytes()),
        // Pings, pongs, closes and raw frames are never relayed.
        Payload::Message(_) | Payload::Presence => (b'P', &[]),
        Payload::Kick { key, reply: None } => (b'K', key.as_bytes()),
        // `[len(reply)][reply][key]`, the reply id cut like the instance (ours are far shorter).
        Payload::Kick {
            key,
            reply: Some(_),
        } => (b'k', key.as_bytes()),
    };
    let reply = match payload {
        Payload::Kick {
            reply: Some(reply), ..
        } => Some(&reply.as_bytes()[..reply.len().min(255)]),
        _ => None,
    };
    let id = &instance.as_bytes()[..instance.len().min(255)];
    let extra = reply.map_or(0, |r| 1 + r.len());
    let mut out = BytesMut::with_capacity(3 + id.len() + extra + data.len());
    out.put_u8(VERSION);
    out.put_u8(kind);
    out.put_u8(id.len() as u8);
    out.put_slice(id);
    if let Some(reply) = reply {
        out.put_u8(reply.len() as u8);
        out.put_slice(reply);
    }
    out.put_slice(data);
    out.freeze()
}

/// A Redis stream entry id (`ms-seq`), ordered as Redis orders them.
pub type StreamId = (u64, u64);

/// Parses `1700000000000-3`.
pub fn parse_stream_id(s: &str) -> Option<StreamId> {
    let (ms, seq) = s.split_once('-')?;
    Some((ms.parse().ok()?, seq.parse().ok()?))
}

/// Why an envelope was not understood (a foreign publisher on our channel, or a newer version).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadEnvelope {
    #[error("envelope too short")]
    Short,
    #[error("unknown envelope version or kind")]
    Unknown,
    #[error("text payload is not UTF-8")]
    NotUtf8,
}

/// What the `PUBLISH_KEPT` script says of a message of a numbered room (`N`): the room's epoch
/// in Redis (its number is in the text, [`SEQ_KEY`]) and the local member who sent it, meaningful
/// to the sending instance only (`None`: every member hears it, the API or echo on).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numbered {
    pub epoch: Box<str>,
    pub sender: Option<u64>,
}

/// A message as it came off a room's channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamped {
    /// Its stream entry id (`H`, `N`), when it was kept in the room's history.
    pub id: Option<StreamId>,
    /// Set for a numbered room's message (`N`).
    pub numbered: Option<Numbered>,
    /// The sending instance.
    pub from: Bytes,
    pub payload: Payload,
}

/// What the `PUBLISH_KEPT` script puts before `,"seq":N}` at the end of a numbered message's
/// JSON text, and what `relay::recovery` reads the number back by.
pub const SEQ_KEY: &str = r#","seq":"#;

/// An epoch as the nodes make them (`Shared::candidate_epoch`) and `?since=` takes them: 1-32
/// ASCII letters, digits and `-`.
pub fn is_epoch(e: &str) -> bool {
    (1..=32).contains(&e.len()) && e.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// One length-prefixed field (`[len][bytes]`) at the head of `raw`, and the rest.
fn field(raw: &Bytes) -> Result<(Bytes, Bytes), BadEnvelope> {
    let len = *raw.first().ok_or(BadEnvelope::Short)? as usize;
    if raw.len() < 1 + len {
        return Err(BadEnvelope::Short);
    }
    Ok((raw.slice(1..1 + len), raw.slice(1 + len..)))
}

/// Like [`decode`], also reading the stream id of a message kept in history (`H`:
/// `[1][H][len][id][envelope]`, an empty id when it was not kept) and, for a numbered room's
/// message, its epoch and sender (`N`: `[1][N][len][id][len][epoch][len][sender][envelope]`).
pub fn decode_stamped(raw: Bytes) -> Result<Stamped, BadEnvelope> {
    if raw.len() >= 3 && raw[0] == VERSION && matches!(raw[1], b'H' | b'N') {
        let (id, rest) = field(&raw.slice(2..))?;
        let id = match id.is_empty() {
            true => None,
            false => Some(
                std::str::from_utf8(&id)
                    .ok()
                    .and_then(parse_stream_id)
                    .ok_or(BadEnvelope::Unknown)?,
            ),
        };
        let (numbered, rest) = match raw[1] {
            b'N' => {
                let (epoch, rest) = field(&rest)?;
                let (sender, rest) = field(&rest)?;
                // What `?since=` accepts (and what goes unescaped into presence JSON).
                let epoch = std::str::from_utf8(&epoch)
                    .ok()
                    .filter(|e| is_epoch(e))
                    .ok_or(BadEnvelope::Unknown)?;
                let sender = std::str::from_utf8(&sender)
                    .ok()
                    .and_then(|s| s.parse().ok());
                let numbered = Numbered {
                    epoch: epoch.into(),
                    sender,
                };
                (Some(numbered), rest)
            }
            _ => (None, rest),
        };
        let (from, payload) = decode(rest)?;
        return Ok(Stamped {
            id,
            numbered,
            from,
            payload,
        });
    }
    let (from, payload) = decode(raw)?;
    Ok(Stamped {
        id: None,
        numbered: None,
        from,
        payload,
    })
}

/// The sending instance and the payload of an envelope. The payload shares `raw`'s buffer.
pub fn decode(raw: Bytes) -> Result<(Bytes, Payload), BadEnvelope> {
    if raw.len() < 3 {
        return Err(BadEnvelope::Short);
    }
    let (version, kind, id_len) = (raw[0], raw[1], raw[2] as usize);
    if version != VERSION {
        return Err(BadEnvelope::Unknown);
    }
    if raw.len() < 3 + id_len {
        return Err(BadEnvelope::Short);
    }
    let instance = raw.slice(3..3 + id_len);
    let data = raw.slice(3 + id_len..);
    let payload = match kind {
        b'B' => Payload::Message(Message::Binary(data)),
        b'T' => {
            let text = crate::proto::message::Utf8Bytes::try_from(data)
                .map_err(|_| BadEnvelope::NotUtf8)?;
            Payload::Message(Message::Text(text))
        }
        b'P' => Payload::Presence,
        b'K' => Payload::Kick {
            key: utf8(&data)?.into(),
            reply: None,
        },
        b'k' => {
            let len = *data.first().ok_or(BadEnvelope::Short)? as usize;
            let reply = data.get(1..1 + len).ok_or(BadEnvelope::Short)?;
            Payload::Kick {
                key: utf8(&data[1 + len..])?.into(),
                reply: Some(utf8(reply)?.into()),
            }
        }
        _ => return Err(BadEnvelope::Unknown),
    };
    Ok((instance, payload))
}

fn utf8(data: &[u8]) -> Result<&str, BadEnvelope> {
    std::str::from_utf8(data).map_err(|_| BadEnvelope::NotUtf8)
}

/// One node's presence entry for a room: its member count, then one name per line (names cannot
/// hold line breaks: `request::is_presence_name`).
pub fn entry(count: usize, names: &[Arc<str>]) -> String {
    let mut s = count.to_string();
    for name in names {
        s.push('\n');
        s.push_str(name);
    }
    s
}

/// Reads an entry written by [`entry`]; a malformed one counts as empty.
pub fn parse_entry(s: &str) -> (usize, Vec<Arc<str>>) {
    let mut lines = s.split('\n');
    let count = lines.next().and_then(|c| c.parse().ok()).unwrap_or(0);
    // Only names this node would accept itself: presence's size bound relies on them.
    let names = lines
        .filter(|n| crate::proto::names::is_presence_name(n))
        .map(Arc::from)
        .collect();
    (count, names)
}

/// Sums the entries of every instance but `own`: the rest of the cluster's members of a room, names
/// sorted (a multiset: two nodes may list the same name when `unique_names` is off).
pub fn remote<'a>(
    own: &str,
    entries: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> (usize, Vec<Arc<str>>) {
    let (mut count, mut names) = (0usize, Vec::new());
    for (instance, value) in entries {
        if instance == own {
            continue;
        }
        let (c, n) = parse_entry(value);
        count = count.saturating_add(c);
        names.extend(n);
    }
    names.sort();
    (count, names)
}

/// The members of a room on every node: the sum of the counts of its presence entries (the
/// hash's values, as `HVALS` gives them); a malformed entry counts as none.
pub fn members(entries: impl IntoIterator<Item = impl AsRef<str>>) -> usize {
    entries.into_iter().fold(0, |sum, e| {
        let count = e.as_ref().split('\n').next().and_then(|c| c.parse().ok());
        sum.saturating_add(count.unwrap_or(0))
    })
}

/// The `min` of a `ZRANGE .. BYLEX` that starts after `after` (exclusive), or at the first.
pub fn lex_after(after: Option<&str>) -> String {
    after.map_or_else(|| "-".to_owned(), |a| format!("({a}"))
}

/// What changed between two sorted multisets of names: `(joined, left)`.
pub fn diff(old: &[Arc<str>], new: &[Arc<str>]) -> (Vec<Arc<str>>, Vec<Arc<str>>) {
    let (mut joined, mut left) = (Vec::new(), Vec::new());
    let (mut i, mut j) = (0, 0);
    while i < old.len() || j < new.len() {
        match (old.get(i), new.get(j)) {
            (Some(a), Some(b)) if a == b => {
                i += 1;
                j += 1;
            }
            (Some(a), Some(b)) if a < b => {
                left.push(a.clone());
                i += 1;
            }
            (Some(_), Some(b)) | (None, Some(b)) => {
                joined.push(b.clone());
                j += 1;
            }
            (Some(a), None) => {
                left.push(a.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    (joined, left)
}

/// First wait before reconnecting, and the cap.
pub const BACKOFF_BASE: Duration = Duration::from_millis(100);
pub const BACKOFF_CAP: Duration = Duration::from_secs(2);

/// A cheap random number in [0, 1) for the backoff jitter (no need for a crypto source): one
/// xorshift64 step of `state`.
pub fn jitter(state: &mut u64) -> f64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    (*state >> 11) as f64 / (1u64 << 53) as f64
}

/// The wait before reconnect attempt `attempt` (0-based): doubling from [`BACKOFF_BASE`] up to
/// [`BACKOFF_CAP`], then scaled by `jitter` in [0, 1) to between half and all of it, so nodes that
/// lost Redis together do not come back in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let full = BACKOFF_BASE
        .saturating_mul(1u32 << attempt.min(16))
        .min(BACKOFF_CAP);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

/// Removes the password from a Redis URL for logs: `redis://user:secret@h` -> `redis://user:***@h`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "***".into();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((auth, host)) => (Some(auth), host),
        None => (None, rest),
    };
    match auth {
        None => format!("{scheme}://{host}"),
        Some(auth) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => format!("{scheme}://***@{host}"),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(v: &[&str]) -> Vec<Arc<str>> {
        v.iter().map(|s| Arc::from(*s)).collect()
    }

    #[test]
    fn envelopes_keep_opcode_and_bytes() {
        let bin = Message::Binary(Bytes::from_static(&[0, 255, 10, 13, 0]));
        for msg in [bin, Message::text("héllo\n"), Message::text("")] {
            let raw = encode("n1:42", &Payload::Message(msg.clone()));
            let (from, payload) = decode(raw).unwrap();
            assert_eq!(&from[..], b"n1:42");
            assert_eq!(payload, Payload::Message(msg));
        }
        for reply in [None, Some("n1:42-7:3".into())] {
            let kick = Payload::Kick {
                key: "bob".into(),
                reply,
            };
            assert_eq!(decode(encode("x", &kick)).unwrap().1, kick);
        }
        assert_eq!(
            decode(Bytes::from_static(b"\x01k\x00\x09ab")),
            Err(BadEnvelope::Short),
            "a reply id longer than the envelope"
        );
        let (from, p) = decode(encode("x", &Payload::Presence)).unwrap();
        assert_eq!((&from[..], p), (&b"x"[..], Payload::Presence));
    }

    #[test]
    fn stamped_envelopes_carry_their_stream_id() {
        let inner = encode("n2", &Payload::Message(Message::text("hi")));
        let mut raw = vec![1, b'H', 5];
        raw.extend_from_slice(b"17-42");
        raw.extend_from_slice(&inner);
        let s = decode_stamped(Bytes::from(raw)).unwrap();
        assert_eq!((s.id, &s.from[..]), (Some((17, 42)), &b"n2"[..]));
        assert_eq!(s.payload, Payload::Message(Message::text("hi")));
        assert_eq!(s.numbered, None);
        assert_eq!(decode_stamped(inner.clone()).unwrap().id, None);
        assert!(decode_stamped(Bytes::from_static(b"Hx-y")).is_err());
        // A numbered room's message: id (here none: too large to keep), epoch, sender.
        let mut raw = vec![1, b'N', 0, 4];
        raw.extend_from_slice(b"e1-2");
        raw.push(2);
        raw.extend_from_slice(b"17");
        raw.extend_from_slice(&inner);
        let s = decode_stamped(Bytes::from(raw.clone())).unwrap();
        let numbered = Numbered {
            epoch: "e1-2".into(),
            sender: Some(17),
        };
        assert_eq!((s.id, s.numbered), (None, Some(numbered)));
        assert_eq!(s.payload, Payload::Message(Message::text("hi")));
        // No sender (the API, or echo on); and cut short anywhere: refused, not panicked on.
        let mut api = vec![1, b'N', 0, 1, b'e', 0];
        api.extend_from_slice(&inner);
        let s = decode_stamped(Bytes::from(api)).unwrap();
        assert_eq!(s.numbered.unwrap().sender, None);
        let mut forged = vec![1, b'N', 0, 3];
        forged.extend_from_slice(b"a\"b\x00");
        forged.extend_from_slice(&inner);
        assert_eq!(
            decode_stamped(Bytes::from(forged)),
            Err(BadEnvelope::Unknown)
        );
        for cut in 3..12 {
            assert!(
                decode_stamped(Bytes::from(raw[..cut].to_vec())).is_err(),
                "{cut}"
            );
        }
        assert!(parse_stream_id("5-1") < parse_stream_id("5-10"));
    }

    #[test]
    fn bad_envelopes_are_refused_not_panicked_on() {
        assert_eq!(decode(Bytes::from_static(b"")), Err(BadEnvelope::Short));
        assert_eq!(
            decode(Bytes::from_static(b"\x01T\x09ab")),
            Err(BadEnvelope::Short)
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x02T\x00")),
            Err(BadEnvelope::Unknown)
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x01Z\x00")),
            Err(BadEnvelope::Unknown)
        );
        assert_eq!(
            decode(Bytes::from_static(b"\x01T\x00\xff")),
            Err(BadEnvelope::NotUtf8)
        );
    }

    #[test]
    fn keys_live_under_the_prefix() {
        let k = Keys::new("blue");
        assert_eq!(k.channel("lobby"), "blue:room:lobby");
        assert_eq!(k.room_of("blue:room:lobby"), Some("lobby"));
        assert_eq!(k.room_of("green:room:lobby"), None);
        assert_eq!(k.presence("a"), "blue:presence:a");
        assert_eq!(k.rooms(), "blue:rooms");
        assert_eq!(k.alive("n:1"), "blue:node:n:1:alive");
    }

    #[test]
    fn remote_presence_sums_other_instances() {
        let own = entry(5, &names(&["me"]));
        let a = entry(2, &names(&["bob", "alice"]));
        let b = entry(1, &[]);
        let (count, n) = remote(
            "self",
            [("self", own.as_str()), ("a", &a), ("b", &b), ("c", "junk")],
        );
        assert_eq!(count, 3);
        assert_eq!(n, names(&["alice", "bob"]));
    }

    #[test]
    fn a_rooms_members_are_the_sum_of_every_entry() {
        let entries = [
            entry(2, &names(&["bob", "ann"])),
            entry(3, &[]),
            "junk".into(),
        ];
        assert_eq!(members(&entries), 5);
        assert_eq!(members(Vec::<String>::new()), 0);
        assert_eq!(lex_after(None), "-");
        assert_eq!(lex_after(Some("lobby")), "(lobby");
    }

    #[test]
    fn diff_of_name_multisets() {
        let (j, l) = diff(&names(&["a", "b", "b", "d"]), &names(&["b", "c", "d", "e"]));
        assert_eq!(j, names(&["c", "e"]));
        assert_eq!(l, names(&["a", "b"]));
        let (j, l) = diff(&[], &names(&["x"]));
        assert_eq!((j, l), (names(&["x"]), vec![]));
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        assert_eq!(backoff(0, 1.0), BACKOFF_BASE);
        assert_eq!(backoff(0, 0.0), BACKOFF_BASE / 2);
        assert_eq!(backoff(2, 1.0), BACKOFF_BASE * 4);
        assert_eq!(backoff(30, 1.0), BACKOFF_CAP);
        assert!(backoff(30, 0.3) < BACKOFF_CAP);
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(redact("redis://:hunter2@h:6379/0"), "redis://:***@h:6379/0");
        assert_eq!(redact("rediss://u:p@ss@h"), "rediss://u:***@h");
        assert_eq!(redact("redis://h:6379"), "redis://h:6379");
        assert!(!redact("nonsense:hunter2").contains("hunter2"));
    }
}
