//! The presence ticker: one task for all rooms (started by `Server::run`, tracked by the
//! shutdown `TaskTracker`) that ends each changed room's coalescing window and queues its
//! presence messages.
//!
//! A join or a leave only updates state and schedules its room ([`Hub::schedule`]); the messages
//! are rendered here, once per room and tick, and shared by every receiver. The presence rules
//! themselves are pure functions in [`crate::relay::presence`]. This file must not change who is
//! in a room.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use crate::proto::message::{Message, Utf8Bytes};
use crate::relay::presence::{self, Kind, Pending};

use super::Hub;
use super::room::{Room, RoomState};

impl Hub {
    /// Puts a changed room in the presence ticker's schedule, once.
    pub(super) fn schedule(&self, room: &Arc<Room>, state: &mut RoomState) {
        if !state.scheduled {
            state.scheduled = true;
            self.shared.changed.lock().push(room.clone());
            self.shared.wake.notify_one();
        }
    }

    /// The hub's presence ticker: sends each changed room's presence when its window allows, until
    /// `stop` resolves. One task for all rooms; `Server::run` starts it.
    pub async fn run_presence(self, stop: impl Future<Output = ()>) {
        tokio::pin!(stop);
        // Rooms waiting for their window to end, with when it ends.
        let mut pending: Vec<(Instant, Arc<Room>)> = Vec::new();
        loop {
            let next = pending.iter().map(|(due, _)| *due).min();
            let sleep = async {
                match next {
                    Some(due) => tokio::time::sleep_until(due.into()).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                _ = &mut stop => return,
                _ = self.shared.wake.notified() => {}
                _ = sleep => {}
            }
            let interval = self.shared.settings.load().presence_interval;
            let now = Instant::now();
            let changed = std::mem::take(&mut *self.shared.changed.lock());
            for room in changed {
                let last_sent = room.lock().last_sent;
                pending.push((presence::due(last_sent, now, interval), room));
            }
            let mut i = 0;
            while i < pending.len() {
                if pending[i].0 <= now {
                    let (_, room) = pending.swap_remove(i);
                    self.send_presence(&room);
                } else {
                    i += 1;
                }
            }
        }
    }

    /// Ends a room's window: fresh members get the state, the others the change (see
    /// [`presence::plan`]), all made at this moment and queued under the room lock, so no join or
    /// leave falls between what one member hears and what another does.
    pub(super) fn send_presence(&self, room: &Room) {
        let settings = self.shared.settings.load().for_room(&room.name);
        let mut state = room.lock();
        state.scheduled = false;
        if state.closed {
            return;
        }
        // A cluster's numbered room waits for its numbering from Redis (one round trip after its
        // first join here), so its first state carries the epoch a client keeps; its seed
        // schedules it again. With Redis down it goes without.
        let up = self.shared.cluster.as_ref().is_some_and(|c| c.is_up());
        if up && !state.synced && settings.numbered(&room.name) {
            return;
        }
        let count = state.members.len() + state.remote_count;
        let pending = Pending {
            names: state.changes.len(),
            count_changed: count != state.count_sent,
            resync: state.resync,
        };
        let plan = presence::plan(settings.presence, pending, settings.max_names);
        if plan.fresh.is_none() && plan.members.is_none() {
            // Nothing to send (presence off): no pass over every member. `fresh` stays set, so a
            // later switch to a format still sends each member its state.
            state.changes.clear();
            state.resync = false;
            state.count_sent = count;
            return;
        }
        let total = self.cluster_total();
        // In a cluster, the epoch is Redis's: shown once the room has read it.
        let numbered =
            (self.shared.cluster.is_none() || state.synced) && settings.numbered(&room.name);
        let (mut full, mut change, mut plain) = (None, None, None);
        let mut sent = 0u64;
        let state = &mut *state;
        for m in &mut state.members {
            let kind = if m.fresh { plan.fresh } else { plan.members };
            m.fresh = false;
            let text = match kind {
                None => continue,
                Some(Kind::State) => full.get_or_insert_with(|| {
                    Utf8Bytes::from({
                        let json = presence::state_json(
                            &room.name,
                            count,
                            total,
                            &state.roster,
                            settings.max_names,
                            state.resync || !state.changes.is_empty(),
                        );
                        match numbered {
                            true => crate::relay::recovery::with_epoch(&json, &state.epoch),
                            false => json,
                        }
                    })
                }),
                Some(Kind::Change) => change.get_or_insert_with(|| {
                    Utf8Bytes::from(presence::change_json(
                        &room.name,
                        count,
                        total,
                        &state.changes,
                        &state.roster,
                    ))
                }),
                Some(Kind::Count) => {
                    plain.get_or_insert_with(|| Utf8Bytes::from(presence::plain(count)))
                }
            };
            // Made once per tick and shared: every receiver's message is a reference to it.
            m.outbox.push(Message::Text(text.clone()));
            sent += 1;
        }
        state.changes.clear();
        state.resync = false;
        state.count_sent = count;
        if sent > 0 {
            state.last_sent = Some(Instant::now());
            self.shared
                .stats
                .presence_queued
                .fetch_add(sent, Ordering::Relaxed);
        }
    }
}
