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

use crate::relay::recovery;

use super::Hub;
use super::fanout::Delivery;
use super::room::{Room, RoomState, apply_remote};

impl Hub {
    /// The members of a numbered room who joined with `since` before the room's numbering was
    /// known get their plan ([`recovery::plan`]) against `history`: a notice when one is due, then
    /// the messages after their number. Returns their ids: the caller's replay of `history` to
    /// the others skips them.
    fn plan_waiting(&self, name: &str, state: &mut RoomState, history: &History) -> Vec<u64> {
        let mut planned = Vec::new();
        let RoomState {
            members,
            epoch,
            seq,
            ..
        } = state;
        for m in members.iter_mut() {
            let Some((since_epoch, n)) = m.since.take() else {
                continue;
            };
            let plan = recovery::plan(name, Some(epoch), *seq, history.iter(), (&since_epoch, n));
            if let Some(notice) = plan.notice {
                m.outbox.push(Message::text(notice));
            }
            for msg in history.iter() {
                if recovery::seq_of(msg).is_none_or(|s| s > plan.after) {
                    m.outbox.push(msg.clone());
                }
            }
            planned.push(m.id);
        }
        planned
    }

    /// The room's numbers go on under `epoch` after `last`, as Redis has them now. A room that
    /// had another epoch started over: its history (another run of numbers) is dropped. Members
    /// still waiting for their `since` plan get it against what is left.
    fn renumber(&self, room: &Arc<Room>, state: &mut RoomState, epoch: &str, last: u64) {
        if state.synced {
            state.history = History::default();
        }
        state.epoch = Arc::from(epoch);
        state.seq = last;
        state.synced = true;
        let history = std::mem::take(&mut state.history);
        self.plan_waiting(&room.name, state, &history);
        state.history = history;
        self.show_epoch(room, state);
    }

    /// The room's numbering is known now: its presence, held back for it, goes out; a state
    /// already sent went without this epoch (Redis was down, or the room started over), so every
    /// member gets the state again.
    fn show_epoch(&self, room: &Arc<Room>, state: &mut RoomState) {
        if state.last_sent.is_some() {
            state.resync = true;
        }
        self.schedule(room, state);
    }
}

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
            // Another node's message: it was numbered (or not) before it left.
            numbered: false,
            publish: None,
        };
        self.fan_out(&room, delivery);
    }

    fn deliver_numbered(&self, room: &str, msg: Message, epoch: &str, sender: Option<u64>) {
        let Some(room) = self.find(room) else {
            return;
        };
        let bounds = self.shared.settings.load().history_for(&room.name);
        let seq = recovery::seq_of(&msg).unwrap_or(0);
        let mut state = room.lock();
        if state.closed {
            return;
        }
        if !state.synced || *state.epoch != *epoch {
            // Numbered before any seed (the room was not read from Redis: a reload gave it
            // history), or the room started over in Redis (its hash expired or Redis lost it):
            // the numbers go on from this message, under its epoch.
            self.renumber(&room, &mut state, epoch, seq.saturating_sub(1));
        }
        state.seq = state.seq.max(seq);
        let delivery = Delivery {
            msg,
            skip: sender,
            bounds,
            // Numbered by Redis already.
            numbered: false,
            publish: None,
        };
        let mut cork = super::fanout::Cork::default();
        self.fan_out_locked(&room, &mut state, delivery, &mut cork);
        drop(state);
        cork.write();
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
    /// A numbered room takes its epoch and last number from Redis with it (once: until then
    /// nothing live reached it, since the receive path holds a room's messages until its seed),
    /// and its members who joined with `since` get their plan now.
    fn seed_history(
        &self,
        room: &str,
        messages: Vec<Message>,
        numbering: Option<(&str, u64)>,
    ) -> bool {
        let Some(room) = self.find(room) else {
            return false;
        };
        let settings = self.shared.settings.load().for_room(&room.name);
        let mut state = room.lock();
        if state.synced
            && let Some((epoch, last)) = numbering
            && *state.epoch != *epoch
        {
            // Read again after a reconnect, and Redis has another epoch (it lost the room).
            self.renumber(&room, &mut state, epoch, last);
        }
        if state.closed || (state.live && numbering.is_none()) || state.synced {
            return false;
        }
        let mut history = History::default();
        for msg in messages {
            history.push(msg, settings.history, settings.history_bytes);
        }
        let mut planned = Vec::new();
        if let Some((epoch, last)) = numbering {
            let newest = history.iter().filter_map(recovery::seq_of).max();
            state.epoch = Arc::from(epoch);
            state.seq = last.max(newest.unwrap_or(0));
            state.synced = true;
            planned = self.plan_waiting(&room.name, &mut state, &history);
            self.show_epoch(&room, &mut state);
        }
        for m in state.members.iter().filter(|m| !planned.contains(&m.id)) {
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
