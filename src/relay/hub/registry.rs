//! The room registry and join/leave: the map of rooms, [`Membership`] guards, and the
//! read-only views of rooms (counts, pages, presence) for `/stats`, the backend API and the
//! cluster.
//!
//! A join looks the room up (or creates it) under the map lock, releases it, then locks the
//! room; a room emptied by its last leave is marked closed before it leaves the map, and a join
//! that finds it closed removes it and tries again. This file must not fan messages out or render
//! presence: a join or leave only schedules its room for the ticker ([`super::ticker`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::cluster::Rooms;
use crate::config::Envelope;
use crate::proto::message::Message;
use crate::proto::names::name_key;
use crate::relay::outbox::Outbox;

use super::room::{Member, Room, apply_remote};
use super::{Hub, JoinError};

/// A connection's place in a room; dropping it leaves the room.
pub struct Membership {
    pub(super) hub: Hub,
    pub(super) room: Arc<Room>,
    pub(super) id: u64,
    pub(super) outbox: Outbox,
}

impl Hub {
    /// The room called `name`, if it is in the map (it may be closing: its state says).
    pub(super) fn find(&self, name: &str) -> Option<Arc<Room>> {
        self.shared.rooms.lock().get(name).cloned()
    }

    /// Names of the rooms with members on this node.
    pub fn room_names(&self) -> Vec<Arc<str>> {
        self.shared.rooms.lock().keys().cloned().collect()
    }

    /// This node's members of `room`: their count and names (sorted); `None` if it has none.
    pub fn local_presence(&self, room: &str) -> Option<(usize, Vec<Arc<str>>)> {
        let room = self.find(room)?;
        let state = room.lock();
        if state.closed {
            return None;
        }
        let mut names: Vec<Arc<str>> = state
            .members
            .iter()
            .filter_map(|m| m.name.as_ref().map(|(shown, _)| shown.clone()))
            .collect();
        names.sort();
        Some((state.members.len(), names))
    }

    /// Rooms with at least one member.
    pub fn room_count(&self) -> usize {
        self.shared.rooms.lock().len()
    }

    /// Room names with their member counts.
    pub fn room_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.rooms()
            .iter()
            .map(|r| (r.name.clone(), r.lock().members.len()))
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    /// Every room, taken under the map lock, to be locked one by one after it is released.
    pub(super) fn rooms(&self) -> Vec<Arc<Room>> {
        self.shared.rooms.lock().values().cloned().collect()
    }

    /// Adds a member to `room` (created on first join). Its outbox first receives the room's
    /// history, then everything published after; its presence state follows at the end of the
    /// room's window, and the other members hear of it as a change.
    pub fn join(
        &self,
        room: &str,
        name: Option<&str>,
        outbox: Outbox,
    ) -> Result<Membership, JoinError> {
        self.join_session(room, name, None, outbox)
    }

    /// [`Hub::join`] for a client that names its session: when a member of this node holds the
    /// name (by its key) with the same session, that member is replaced at once (its connection
    /// closes with [`REPLACED`](super::REPLACED)) and the name stays in the room without a presence change.
    pub fn join_session(
        &self,
        room: &str,
        name: Option<&str>,
        session: Option<&str>,
        outbox: Outbox,
    ) -> Result<Membership, JoinError> {
        self.join_since(room, name, session, None, outbox)
    }

    /// [`Hub::join_session`] for a client that names the last message it saw (`?since=`): it
    /// gets exactly the messages after it, or, when history no longer reaches back that far or
    /// the room's epoch changed, a gap notice first and then what history has
    /// ([`crate::relay::recovery`]).
    pub fn join_since(
        &self,
        room: &str,
        name: Option<&str>,
        session: Option<&str>,
        since: Option<(&str, u64)>,
        outbox: Outbox,
    ) -> Result<Membership, JoinError> {
        let settings = self.shared.settings.load().for_room(room);
        let name = name.map(|n| (Arc::<str>::from(n), name_key(n).into_boxed_str()));
        // Each retry needs another member to have joined the fresh room and left it meanwhile.
        loop {
            let room = self.find_or_create(room, settings.max_rooms)?;
            let mut state = room.lock();
            if state.closed {
                drop(state);
                self.forget(&room);
                continue;
            }
            // The first member here: the other nodes' members as read before the join
            // (`Cluster::first_read`), so its first presence state is already cluster-wide.
            if state.members.is_empty()
                && let Some(cluster) = &self.shared.cluster
                && let Some((count, names)) = cluster.take_first_read(&room.name)
            {
                apply_remote(&mut state, count, names);
            }
            let ghost = match (&name, session) {
                (Some((_, key)), Some(session)) => state.members.iter().position(|m| {
                    m.session.as_deref() == Some(session)
                        && m.name.as_ref().is_some_and(|(_, k)| k == key)
                }),
                _ => None,
            };
            if let Some(i) = ghost {
                // Its name passes to the newcomer: no roster or presence change, one count less
                // here and one more below. Its guard's leave later finds it gone.
                let old = state.members.swap_remove(i);
                old.outbox.replace();
                self.shared.total.fetch_sub(1, Ordering::Relaxed);
            } else if let Some((shown, key)) = &name {
                // A taken name means a member holds it: here (the room stays), or only on
                // another node as read before the join, when this room was just created empty
                // and must go again (its remote members would otherwise stay, unread).
                if settings.unique_names && state.roster.key_taken(key) {
                    if state.members.is_empty() {
                        state.closed = true;
                        drop(state);
                        self.forget(&room);
                    }
                    return Err(JoinError::NameTaken);
                }
                state.roster.add(shown, key);
                state.changes.joined(shown);
            }
            // The bounds in force, even if a reload's trim has not reached this room yet.
            state.history.trim(settings.history, settings.history_bytes);
            let numbered = settings.history > 0 && settings.envelope == Envelope::Json;
            // A cluster's numbered room this node has not read from Redis yet: the plan waits for
            // the room's epoch, last number and history (its seed, `remote.rs`).
            let wait = numbered && self.shared.cluster.is_some() && !state.synced;
            let mut pending = None;
            let from = match since {
                None => 0,
                Some((epoch, n)) if wait => {
                    pending = Some((Box::from(epoch), n));
                    u64::MAX
                }
                Some(since) => {
                    let plan = crate::relay::recovery::plan(
                        &room.name,
                        (numbered && !wait).then_some(&*state.epoch),
                        state.seq,
                        state.history.iter(),
                        since,
                    );
                    if let Some(notice) = plan.notice {
                        outbox.push(Message::text(notice));
                    }
                    plan.after
                }
            };
            for msg in state.history.iter() {
                if from == 0 || crate::relay::recovery::seq_of(msg).is_none_or(|seq| seq > from) {
                    outbox.push(msg.clone());
                }
            }
            let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
            state.members.push(Member {
                id,
                name,
                session: session.map(Box::from),
                outbox: outbox.clone(),
                fresh: true,
                since: pending,
            });
            self.shared.total.fetch_add(1, Ordering::Relaxed);
            self.schedule(&room, &mut state);
            drop(state);
            if let Some(cluster) = &self.shared.cluster {
                cluster.room_changed(&room.name);
            }
            return Ok(Membership {
                hub: self.clone(),
                room,
                id,
                outbox,
            });
        }
    }

    /// The room called `name`, created if absent and `max_rooms` allows; the map lock is held
    /// only here.
    fn find_or_create(&self, name: &str, max_rooms: usize) -> Result<Arc<Room>, JoinError> {
        let mut rooms = self.shared.rooms.lock();
        if let Some(room) = rooms.get(name) {
            return Ok(room.clone());
        }
        if rooms.len() >= max_rooms {
            return Err(JoinError::TooManyRooms);
        }
        let number = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let epoch = format!("{}-{number:x}", self.shared.epoch_base);
        let room = Arc::new(Room::new(name, epoch.into()));
        rooms.insert(room.name.clone(), room.clone());
        Ok(room)
    }

    /// Removes a closed room from the map, unless a new room of that name has replaced it.
    fn forget(&self, room: &Arc<Room>) {
        let mut rooms = self.shared.rooms.lock();
        if rooms.get(&room.name).is_some_and(|r| Arc::ptr_eq(r, room)) {
            rooms.remove(&room.name);
        }
    }

    /// Whether a member of this node holds `key` in `room` under `session`: a join with them
    /// would take the name over (so a cluster claim, which this node already holds, is not asked).
    pub fn holds_session(&self, room: &str, key: &str, session: &str) -> bool {
        let Some(room) = self.find(room) else {
            return false;
        };
        let state = room.lock();
        state.members.iter().any(|m| {
            m.session.as_deref() == Some(session)
                && m.name.as_ref().is_some_and(|(_, k)| &**k == key)
        })
    }

    fn leave(&self, room: &Arc<Room>, id: u64) {
        let mut state = room.lock();
        let Some(i) = state.members.iter().position(|m| m.id == id) else {
            return;
        };
        let member = state.members.swap_remove(i);
        if let Some((shown, key)) = &member.name {
            state.roster.remove(shown, key);
            // For a member that joined in this window, this cancels its join.
            state.changes.left(shown);
        }
        self.shared.total.fetch_sub(1, Ordering::Relaxed);
        if let Some(cluster) = &self.shared.cluster {
            cluster.room_changed(&room.name);
            if let Some((_, key)) = &member.name
                && self
                    .shared
                    .settings
                    .load()
                    .for_room(&room.name)
                    .unique_names
            {
                cluster.release(&room.name, key);
            }
        }
        if state.members.is_empty() {
            state.closed = true;
            drop(state);
            self.forget(room);
            return;
        }
        self.schedule(room, &mut state);
    }

    /// The presence of `room` as this node knows it: the count on every node, and up to
    /// `max_names` names (sorted) with how many more there are. `None` without a local member.
    pub fn room_presence(&self, room: &str) -> Option<(usize, Vec<String>, usize)> {
        let max_names = self.shared.settings.load().for_room(room).max_names;
        let room = self.find(room)?;
        let state = room.lock();
        if state.closed {
            return None;
        }
        let names: Vec<String> = state
            .roster
            .listed(max_names)
            .into_iter()
            .map(str::to_owned)
            .collect();
        let more = state.roster.len().saturating_sub(names.len());
        Some((state.members.len() + state.remote_count, names, more))
    }

    /// Up to `limit` rooms named after `after` (all from the first when `None`), sorted, with
    /// their counts on every node, and whether more follow. The work is bounded by `limit`,
    /// whatever the number of rooms.
    pub fn rooms_after(&self, after: Option<&str>, limit: usize) -> (Vec<(Arc<str>, usize)>, bool) {
        use std::ops::Bound;
        let page: Vec<Arc<Room>> = {
            let rooms = self.shared.rooms.lock();
            let from = match after {
                Some(name) => Bound::Excluded(name),
                None => Bound::Unbounded,
            };
            rooms
                .range::<str, _>((from, Bound::Unbounded))
                .take(limit.saturating_add(1))
                .map(|(_, room)| room.clone())
                .collect()
        };
        let more = page.len() > limit;
        let listed = page
            .iter()
            .take(limit)
            .filter_map(|room| {
                let state = room.lock();
                (!state.closed)
                    .then(|| (room.name.clone(), state.members.len() + state.remote_count))
            })
            .collect();
        (listed, more)
    }

    /// Closes the connections of this node's members of `room` named `name` (by its uniqueness
    /// key) with [`KICKED`](super::KICKED); they leave the room as their connections end. Returns
    /// how many were closed. The other nodes are asked through the cluster handle
    /// ([`Cluster::kick`](crate::cluster::Cluster::kick)), by the caller, which waits for them.
    pub fn kick(&self, room: &str, name: &str) -> usize {
        self.kick_key(room, &name_key(name))
    }
}

impl Membership {
    pub fn room(&self) -> &str {
        &self.room.name
    }

    /// The room's name, shared (for a connection's log lines after it left).
    pub fn room_name(&self) -> Arc<str> {
        self.room.name.clone()
    }

    /// Queues a message for this member alone (the app-level pong).
    pub fn reply(&self, msg: Message) {
        self.outbox.push(msg);
    }
}

impl Drop for Membership {
    fn drop(&mut self) {
        self.hub.leave(&self.room, self.id);
    }
}
