//! Rooms and who is in them: join, leave, fan-out, history and presence.
//!
//! The [`Hub`] maps room names to [`Room`]s. Joining returns a [`Membership`] guard whose `Drop`
//! leaves: it removes the member, announces presence and prunes the room once empty, so counts come
//! from live state and cannot drift.
//!
//! Locks are `std::sync::Mutex`es held for a few non-blocking steps and never across `.await`. The
//! order is always hub map, then room, then an outbox's queue (which its writer takes alone, for
//! one swap). Fan-out takes only the room lock and the queues: a message is put, as a
//! refcounted clone, into each member's bounded [`Outbox`]; nothing is written to a socket under a lock.
//! A member whose outbox is full is evicted (its connection closes with 1013) rather than slowing
//! anyone else down.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio_tungstenite::tungstenite::Message;

use crate::config::PresenceFormat;
use crate::outbox::Outbox;
use crate::presence::{self, Coalescer};
use crate::stats::Stats;

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("too many rooms")]
    TooManyRooms,
    #[error("name taken")]
    NameTaken,
}

/// Room settings that apply at join time.
#[derive(Debug, Clone)]
pub struct JoinOptions {
    pub max_rooms: usize,
    pub unique_names: bool,
    pub presence: PresenceFormat,
    pub presence_interval: Duration,
}

/// All rooms of this server. Cheap to clone: a handle over shared state.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

struct HubShared {
    /// Room name -> room. Locked first (before any room), briefly, on join and leave only.
    rooms: Mutex<HashMap<Arc<str>, Arc<Room>>>,
    /// Members in all rooms: the `total` of presence and the `connections` of /stats.
    total: AtomicUsize,
    next_id: AtomicU64,
    stats: Arc<Stats>,
}

/// One room: its members, its recent history and its presence window.
pub struct Room {
    name: Arc<str>,
    state: Mutex<RoomState>,
}

struct RoomState {
    members: Vec<Member>,
    /// Names in use, for `unique_names`.
    names: HashSet<Arc<str>>,
    /// The last messages, oldest first, replayed to a new member (`relay.history`).
    history: VecDeque<Message>,
    presence: Coalescer,
    presence_format: PresenceFormat,
    presence_interval: Duration,
}

struct Member {
    id: u64,
    name: Option<Arc<str>>,
    outbox: Outbox,
}

/// A connection's place in a room; dropping it leaves the room.
pub struct Membership {
    hub: Hub,
    room: Arc<Room>,
    id: u64,
    outbox: Outbox,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding a room lock leaves consistent data (every step is a push or remove),
    // so a poisoned lock is still usable.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hub {
    pub fn new(stats: Arc<Stats>) -> Hub {
        Hub {
            shared: Arc::new(HubShared {
                rooms: Mutex::new(HashMap::new()),
                total: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                stats,
            }),
        }
    }

    /// Connections in all rooms.
    pub fn total(&self) -> usize {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Rooms with at least one member.
    pub fn room_count(&self) -> usize {
        lock(&self.shared.rooms).len()
    }

    /// Room names with their member counts.
    pub fn room_counts(&self) -> Vec<(Arc<str>, usize)> {
        let rooms: Vec<Arc<Room>> = lock(&self.shared.rooms).values().cloned().collect();
        rooms
            .iter()
            .map(|r| (r.name.clone(), lock(&r.state).members.len()))
            .collect()
    }

    /// Adds a member to `room` (created on first join). Its outbox first receives the room's
    /// history, then everything published after; presence is announced to the room.
    pub fn join(
        &self,
        room: &str,
        name: Option<&str>,
        outbox: Outbox,
        opts: &JoinOptions,
    ) -> Result<Membership, JoinError> {
        let mut rooms = lock(&self.shared.rooms);
        let room = match rooms.get(room) {
            Some(r) => r.clone(),
            None if rooms.len() >= opts.max_rooms => return Err(JoinError::TooManyRooms),
            None => {
                let name: Arc<str> = room.into();
                let r = Arc::new(Room {
                    name: name.clone(),
                    state: Mutex::new(RoomState {
                        members: Vec::new(),
                        names: HashSet::new(),
                        history: VecDeque::new(),
                        presence: Coalescer::default(),
                        presence_format: opts.presence,
                        presence_interval: opts.presence_interval,
                    }),
                });
                rooms.insert(name, r.clone());
                r
            }
        };
        let mut state = lock(&room.state);
        let name: Option<Arc<str>> = name.map(Into::into);
        if let Some(n) = &name {
            // A taken name means a member holds it, so the room is not empty and stays.
            if opts.unique_names && state.names.contains(n) {
                return Err(JoinError::NameTaken);
            }
            state.names.insert(n.clone());
        }
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        for msg in &state.history {
            outbox.push(msg.clone());
        }
        state.members.push(Member {
            id,
            name,
            outbox: outbox.clone(),
        });
        state.presence_format = opts.presence;
        state.presence_interval = opts.presence_interval;
        self.shared.total.fetch_add(1, Ordering::Relaxed);
        let start_presence = state.presence.touch();
        drop(state);
        drop(rooms);
        if start_presence {
            self.spawn_presence(room.clone());
        }
        Ok(Membership {
            hub: self.clone(),
            room,
            id,
            outbox,
        })
    }

    fn leave(&self, room: &Arc<Room>, id: u64) {
        let mut rooms = lock(&self.shared.rooms);
        let mut state = lock(&room.state);
        let Some(i) = state.members.iter().position(|m| m.id == id) else {
            return;
        };
        let member = state.members.swap_remove(i);
        if let Some(n) = &member.name {
            state.names.remove(n);
        }
        self.shared.total.fetch_sub(1, Ordering::Relaxed);
        if state.members.is_empty() {
            rooms.remove(&room.name);
            return;
        }
        let start_presence = state.presence.touch();
        drop(state);
        drop(rooms);
        if start_presence {
            self.spawn_presence(room.clone());
        }
    }

    /// Runs one room's presence window: send now, then once per interval while changes come.
    fn spawn_presence(&self, room: Arc<Room>) {
        let hub = self.clone();
        tokio::spawn(async move {
            loop {
                let interval = hub.send_presence(&room);
                tokio::time::sleep(interval).await;
                if !lock(&room.state).presence.window_closed() {
                    break;
                }
            }
        });
    }

    /// Sends the room's current presence to every member; returns the window to wait.
    fn send_presence(&self, room: &Room) -> Duration {
        let state = lock(&room.state);
        let mut names: Vec<&str> = state
            .members
            .iter()
            .filter_map(|m| m.name.as_deref())
            .collect();
        names.sort_unstable();
        let msg = presence::render(
            state.presence_format,
            &room.name,
            state.members.len(),
            self.total(),
            &names,
        );
        if let Some(msg) = msg {
            for m in &state.members {
                m.outbox.push(msg.clone());
            }
            self.shared
                .stats
                .presence_out
                .fetch_add(state.members.len() as u64, Ordering::Relaxed);
        }
        state.presence_interval
    }
}

impl Membership {
    pub fn room(&self) -> &str {
        &self.room.name
    }

    /// Relays `msg` to every member of the room (the sender too when `echo`), in one pass under
    /// the room lock, so every receiver sees one sender's messages in the order they were sent.
    pub fn publish(&self, msg: Message, echo: bool, history: usize) {
        let mut state = lock(&self.room.state);
        let mut delivered = 0u64;
        for m in &state.members {
            if (echo || m.id != self.id) && m.outbox.push(msg.clone()) {
                delivered += 1;
            }
        }
        if history > 0 {
            state.history.push_back(msg);
            while state.history.len() > history {
                state.history.pop_front();
            }
        }
        drop(state);
        let stats = &self.hub.shared.stats;
        stats.messages_out.fetch_add(delivered, Ordering::Relaxed);
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
