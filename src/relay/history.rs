//! A room's recent messages, replayed to a new member (`relay.history`, `relay.history_bytes`).
//!
//! Bounded twice, by count and by bytes, because either alone lets one room pin
//! `history × max_message_size`. The bounds are passed in on every push rather than stored, so a
//! room always obeys the configuration in force (the hub's live settings after a reload), never
//! the snapshot a sender was admitted with. The configuration check makes sure a full replay plus
//! a presence state fits a joiner's outbound queue.
//!
//! A plain bounded list: this file must not lock, queue to members or reach the cluster.

use std::collections::VecDeque;

use crate::proto::message::Message;

/// Whether `msg` can be kept in a history of at most `max_bytes` bytes at all.
pub fn fits(msg: &Message, max_bytes: usize) -> bool {
    msg.len() <= max_bytes
}

/// The last messages of a room, oldest first, within a count and a byte bound.
#[derive(Debug, Default)]
pub struct History {
    messages: VecDeque<Message>,
    /// Payload bytes of `messages`.
    bytes: usize,
}

impl History {
    /// Appends `msg`, then drops the oldest messages until at most `max` messages of at most
    /// `max_bytes` bytes remain. A message larger than `max_bytes` is not kept and evicts nothing:
    /// one member must not be able to erase a room's history with one large message.
    pub fn push(&mut self, msg: Message, max: usize, max_bytes: usize) {
        if max == 0 {
            return self.clear();
        }
        if !fits(&msg, max_bytes) {
            return;
        }
        self.bytes += msg.len();
        self.messages.push_back(msg);
        self.trim(max, max_bytes);
    }

    /// Drops the oldest messages until the bounds hold.
    pub fn trim(&mut self, max: usize, max_bytes: usize) {
        while self.messages.len() > max || self.bytes > max_bytes {
            let Some(old) = self.messages.pop_front() else {
                break;
            };
            self.bytes -= old.len();
        }
        if self.messages.is_empty() && self.messages.capacity() > 0 {
            // An emptied history gives its buffer back.
            self.messages = VecDeque::new();
        }
    }

    pub fn clear(&mut self) {
        self.messages = VecDeque::new();
        self.bytes = 0;
    }

    /// Oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Message> {
        self.messages.iter()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(h: &History) -> Vec<String> {
        h.iter().map(|m| m.to_text().unwrap().to_owned()).collect()
    }

    #[test]
    fn keeps_the_last_n_in_order() {
        let mut h = History::default();
        for i in 1..=5 {
            h.push(Message::text(format!("m{i}")), 3, 1000);
        }
        assert_eq!(texts(&h), ["m3", "m4", "m5"]);
        assert_eq!(h.bytes(), 6);
    }

    #[test]
    fn keeps_at_most_max_bytes() {
        let mut h = History::default();
        for i in 0..10 {
            h.push(Message::text(format!("{i}").repeat(10)), 100, 25);
        }
        assert_eq!(
            h.len(),
            2,
            "two 10-byte messages fit 25 bytes, three do not"
        );
        assert_eq!(h.bytes(), 20);
        h.push(Message::text("x".repeat(26)), 100, 25);
        assert_eq!(
            texts(&h),
            ["8".repeat(10), "9".repeat(10)],
            "a message over the byte bound is not kept and evicts nothing"
        );
        assert_eq!(h.bytes(), 20);
    }

    #[test]
    fn lower_bounds_apply_at_once() {
        let mut h = History::default();
        for i in 1..=5 {
            h.push(Message::text(format!("m{i}")), 10, 1000);
        }
        h.trim(2, 1000);
        assert_eq!(texts(&h), ["m4", "m5"]);
        h.push(Message::text("m6"), 0, 1000);
        assert!(h.is_empty(), "history = 0 keeps nothing");
    }
}
