//! The hub as the cluster sees it: `impl cluster::Rooms for Hub`, the one door through which the
//! Redis side reads this node's rooms and brings the other nodes' messages, members, history and
//! kicks into them.
//!
//! A message from another node goes through the same fan-out as a local one
//! ([`Hub::fan_out`]), never published back. This file must not know about Redis, and nothing
//! here waits: the cluster's tasks call it between their own awaits.

use std::sync::Arc;

use crate::cluster::{RoomRules, Rooms};
use crate::proto::message::Message;
use crate::relay::history::History;

use super::Hub;
use super::fanout::Delivery;
use super::room::apply_remote;

impl Rooms for Hub {
    fn room_names(&self) -> Vec<Arc<str>> {
        Hub::room_names(self)
    }

    fn local_presence(&self, room: &str) -> Option<(usize, Vec<Arc<str>>)> {
        Hub::local_presence(self, room)
    }

    fn total(&self) -> usize {
        Hub::total(self)
    }

    fn rules(&self) -> Arc<dyn RoomRules> {
        self.settings()
    }

    fn deliver_remote(&self, room: &str, msg: Message) {
        let Some(room) = self.find(room) else {
            return;
        };
        let bounds = self.shared.settings.load().history_for(&room.name);
        let delivery = Delivery {
            msg,
            skip: None,
            bounds,
            publish: None,
        };
        self.fan_out(&room, delivery);
    }

    fn set_remote(&self, room: &str, count: usize, names: Vec<Arc<str>>) {
        let Some(room) = self.find(room) else {
            return;
        };
        let mut state = room.lock();
        if state.closed {
            return;
        }
        if apply_remote(&mut state, count, names) {
            self.schedule(&room, &mut state);
        }
    }

    fn clear_remote(&self) {
        for room in self.rooms() {
            let name = room.name.clone();
            drop(room);
            self.set_remote(&name, 0, Vec::new());
        }
    }

    /// The history read from Redis becomes the room's history and, while nothing live has been
    /// relayed in the room yet, is replayed to the members who joined while it was being read.
    fn seed_history(&self, room: &str, messages: Vec<Message>) -> bool {
        let Some(room) = self.find(room) else {
            return false;
        };
        let settings = self.shared.settings.load().for_room(&room.name);
        let mut state = room.lock();
        if state.closed || state.live {
            return false;
        }
        let mut history = History::default();
        for msg in messages {
            history.push(msg, settings.history, settings.history_bytes);
        }
        for m in &state.members {
            for msg in history.iter() {
                m.outbox.push(msg.clone());
            }
        }
        state.history = history;
        // Seeded once: a reseed after a reconnect must not replay it to the same members again.
        state.live = true;
        true
    }

    fn kick_key(&self, room: &str, key: &str) -> usize {
        let Some(room) = self.find(room) else {
            return 0;
        };
        let state = room.lock();
        let mut kicked = 0;
        for m in &state.members {
            if m.name.as_ref().is_some_and(|(_, k)| &**k == key) {
                m.outbox.kick();
                kicked += 1;
            }
        }
        kicked
    }
}
