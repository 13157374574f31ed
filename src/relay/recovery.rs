//! Recovery across a reconnect (`?since=EPOCH:SEQ`): the pure rules. The hub numbers and replays.
//!
//! A room numbers its messages when it keeps history and wraps text in the JSON envelope (the
//! number needs somewhere to go): each relayed message gets `"seq":N` from a per-room counter, and
//! the room an epoch, carried by its presence state as `"epoch":"E"`. On a single node the hub
//! numbers (a room made anew, after it emptied or a restart, starts over at 1 under a new epoch);
//! in a cluster Redis does, with the same text rule (`cluster::wire::SEQ_KEY`, in the
//! `PUBLISH_KEPT` script), and the epoch lives there too: it changes when the room's numbering
//! hash expires with its history. With raw relay, messages carry no number.
//!
//! A joiner with `?since=E:N` gets exactly the messages after N, then live traffic (the hub does
//! both under the room lock, so nothing falls between). When that cannot be promised, it first
//! gets one notice, then everything history has:
//! `{"type":"gap","room":R,"epoch":E,"since":"E0:N","reason":WHY}` with `reason` `"epoch"` (the
//! room started over), `"history"` (messages after N are no longer kept) or `"off"` (the room does
//! not number its messages; `epoch` is then `null`).
//!
//! Pure functions over text and history: this file must not lock or queue.

use crate::cluster::wire::SEQ_KEY;
use crate::proto::message::{Message, Utf8Bytes};

/// An enveloped message (`{...}`) with `,"seq":N` before its closing brace.
pub fn with_seq(text: &str, seq: u64) -> Utf8Bytes {
    let body = text.strip_suffix('}').unwrap_or(text);
    Utf8Bytes::from(format!("{body}{SEQ_KEY}{seq}}}"))
}

/// A presence state (`{...}`) with `,"epoch":"E"` before its closing brace.
pub fn with_epoch(json: &str, epoch: &str) -> String {
    let body = json.strip_suffix('}').unwrap_or(json);
    format!(r#"{body},"epoch":"{epoch}"}}"#)
}

/// The number of a message made by [`with_seq`]. An escaped string in `data` cannot hold an
/// unescaped `,"seq":`, so the last one is ours.
pub fn seq_of(msg: &Message) -> Option<u64> {
    let text = msg.to_text().ok()?;
    let at = text.rfind(SEQ_KEY)?;
    text[at + SEQ_KEY.len()..].strip_suffix('}')?.parse().ok()
}

/// What a joiner with `?since=` gets: a notice first (when any), then the history messages
/// numbered after `after` (0: all of them).
#[derive(Debug, PartialEq, Eq)]
pub struct Plan {
    pub notice: Option<String>,
    pub after: u64,
}

/// The plan for `since` in `room`, whose epoch is `epoch` (`None`: not numbered), whose last
/// number is `last` and whose history is `history` (oldest first).
pub fn plan<'m>(
    room: &str,
    epoch: Option<&str>,
    last: u64,
    mut history: impl Iterator<Item = &'m Message>,
    since: (&str, u64),
) -> Plan {
    let (since_epoch, n) = since;
    let gap = |reason: &str| Plan {
        notice: Some(
            serde_json::json!({
                "type": "gap",
                "room": room,
                "epoch": epoch,
                "since": format!("{since_epoch}:{n}"),
                "reason": reason,
            })
            .to_string(),
        ),
        after: 0,
    };
    let Some(epoch) = epoch else {
        return gap("off");
    };
    if epoch != since_epoch || n > last {
        return gap("epoch");
    }
    let first = history.next().and_then(seq_of).unwrap_or(last + 1);
    if n + 1 < first {
        return gap("history");
    }
    Plan {
        notice: None,
        after: n,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn numbered(range: std::ops::RangeInclusive<u64>) -> Vec<Message> {
        range
            .map(|i| Message::Text(with_seq(&format!(r#"{{"data":"m{i} ,\"seq\":9}}"}}"#), i)))
            .collect()
    }

    #[test]
    fn numbers_go_before_the_closing_brace_and_read_back() {
        let m = Message::Text(with_seq(r#"{"type":"message","data":"x"}"#, 42));
        assert_eq!(
            m.to_text().unwrap(),
            r#"{"type":"message","data":"x","seq":42}"#
        );
        assert_eq!(seq_of(&m), Some(42));
        assert_eq!(
            seq_of(&numbered(7..=7)[0]),
            Some(7),
            "data cannot fake a number"
        );
        assert_eq!(seq_of(&Message::text("plain")), None);
        assert_eq!(
            with_epoch(r#"{"type":"presence","count":1}"#, "e-1"),
            r#"{"type":"presence","count":1,"epoch":"e-1"}"#
        );
    }

    #[test]
    fn a_since_within_history_replays_after_it_and_anything_else_is_a_gap() {
        let h = numbered(5..=10);
        let ok = |n| plan("r", Some("e"), 10, h.iter(), ("e", n));
        assert_eq!(
            ok(4),
            Plan {
                notice: None,
                after: 4
            }
        );
        assert_eq!(
            ok(10),
            Plan {
                notice: None,
                after: 10
            }
        );
        let reason = |p: Plan| {
            let v: serde_json::Value = serde_json::from_str(&p.notice.unwrap()).unwrap();
            assert_eq!(p.after, 0);
            v["reason"].as_str().unwrap().to_owned()
        };
        assert_eq!(reason(ok(3)), "history");
        assert_eq!(reason(ok(11)), "epoch", "a number from the future");
        assert_eq!(
            reason(plan("r", Some("e2"), 10, h.iter(), ("e", 6))),
            "epoch"
        );
        assert_eq!(reason(plan("r", None, 0, h.iter(), ("e", 6))), "off");
        // An empty history: nothing missed only if nothing was sent since.
        assert_eq!(plan("r", Some("e"), 10, [].iter(), ("e", 10)).notice, None);
        assert_eq!(
            reason(plan("r", Some("e"), 10, [].iter(), ("e", 9))),
            "history"
        );
    }
}
