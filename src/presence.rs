//! Presence: the message each member of a room receives when someone joins or leaves, and the
//! coalescing rule that keeps a burst of joins from costing a message per join per member.
//!
//! The rule, per room: a change with nothing pending sends at once and opens a window of
//! `presence.interval`; changes inside the window only mark the room dirty; at the end of the window a
//! dirty room sends the state of that moment and opens another window, a clean one goes quiet. So a
//! room sends at most one presence message per interval, and the last one always carries the final
//! state. The timer itself lives in the hub, which owns the rooms.

use serde::Serialize;
use tokio_tungstenite::tungstenite::Message;

use crate::config::PresenceFormat;

/// The coalescing state of one room, kept under the room's lock.
#[derive(Debug, Default)]
pub struct Coalescer {
    /// A sender task is running for this room (it owns the open window).
    scheduled: bool,
    /// Something changed since that task last sent.
    dirty: bool,
}

impl Coalescer {
    /// Records a change; `true` means no window is open and the caller must start the sender.
    pub fn touch(&mut self) -> bool {
        if self.scheduled {
            self.dirty = true;
            false
        } else {
            self.scheduled = true;
            true
        }
    }

    /// Called by the sender at the end of a window: `true` means send again and keep the window.
    pub fn window_closed(&mut self) -> bool {
        if self.dirty {
            self.dirty = false;
            true
        } else {
            self.scheduled = false;
            false
        }
    }
}

#[derive(Serialize)]
struct Json<'a> {
    r#type: &'static str,
    room: &'a str,
    count: usize,
    total: usize,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    names: &'a [&'a str],
}

/// The presence message for a room in the configured format; `None` when presence is off.
pub fn render(
    format: PresenceFormat,
    room: &str,
    count: usize,
    total: usize,
    names: &[&str],
) -> Option<Message> {
    let text = match format {
        PresenceFormat::Off => return None,
        PresenceFormat::Plain => count.to_string(),
        PresenceFormat::Json => serde_json::to_string(&Json {
            r#type: "presence",
            room,
            count,
            total,
            names,
        })
        .expect("presence serializes"),
    };
    Some(Message::text(text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_names_only_when_in_use() {
        let m = render(PresenceFormat::Json, "1234", 3, 57, &["alice", "bob"]).unwrap();
        assert_eq!(
            m.to_text().unwrap(),
            r#"{"type":"presence","room":"1234","count":3,"total":57,"names":["alice","bob"]}"#
        );
        let m = render(PresenceFormat::Json, "lobby", 1, 1, &[]).unwrap();
        assert_eq!(
            m.to_text().unwrap(),
            r#"{"type":"presence","room":"lobby","count":1,"total":1}"#
        );
    }

    #[test]
    fn plain_is_the_count_and_off_is_nothing() {
        let m = render(PresenceFormat::Plain, "r", 12, 40, &[]).unwrap();
        assert_eq!(m.to_text().unwrap(), "12");
        assert!(render(PresenceFormat::Off, "r", 1, 1, &[]).is_none());
    }

    #[test]
    fn a_burst_opens_one_window_and_ends_with_one_more_send() {
        let mut c = Coalescer::default();
        assert!(c.touch(), "first change starts the sender");
        assert!(!c.touch());
        assert!(!c.touch());
        assert!(
            c.window_closed(),
            "changes in the window: send the final state"
        );
        assert!(!c.window_closed(), "quiet window: stop");
        assert!(c.touch(), "a later change starts again");
    }
}
