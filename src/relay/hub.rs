//! Rooms and who is in them: the room registry, [`Membership`] guards, fan-out, and the one
//! presence ticker of the hub.
//!
//! The [`Hub`] maps room names to [`Room`]s. Joining returns a [`Membership`] guard whose `Drop`
//! leaves: it removes the member, records the change for presence and prunes the room once empty,
//! so counts come from live state and cannot drift. `Drop` only updates state and marks the room
//! changed; the messages are rendered and queued by [`Hub::run_presence`], one task per hub (not
//! per room) started by `Server::run` and tracked by the shutdown `TaskTracker`. The presence rules
//! themselves are pure functions in [`crate::relay::presence`]; history is [`crate::relay::history`].
//!
//! Locks are `parking_lot::Mutex`es held for a few non-blocking steps and never across `.await`.
//! The room map's lock is never held while waiting for a room: a join looks the room up (or
//! creates it) under the map lock, releases it, then locks the room; so one room busy fanning out
//! a burst or rendering presence never stalls joins and leaves in the others. The price is a race
//! with pruning, settled by the room's `closed` flag: a room emptied by its last leave is marked
//! closed before it leaves the map, and a join that finds it closed removes it and tries again.
//! Below the map, the order is a room, then an outbox's queue (which its writer takes alone, for one
//! swap), then the hub's list of changed rooms, then the cluster's set of rooms to republish (never
//! held while a room is locked). Fan-out takes only the room lock and the queues: a
//! message is put, as a refcounted clone, into each member's bounded [`Outbox`]; nothing is written
//! to a socket under a lock. A member whose outbox is full is evicted (its connection closes with
//! 1013) rather than slowing anyone else down.
//!
//! Room settings (presence format, interval, `max_names`, uniqueness, history bounds, `max_rooms`)
//! live in the hub, not in each connection's configuration snapshot: a reload changes them in one
//! place ([`Hub::configure`]), for every room at once. A room's own settings are the global ones
//! with the first matching `[[rooms]]` entry written in ([`RoomSettings::for_room`]).
//!
//! A member that reconnects with its name and its `?session=` takes the name over from its old
//! connection ([`Hub::join`]): the old member leaves the room at once, without a presence change
//! (the name never left), and its connection is closed with [`REPLACED`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::proto::message::{Message, Utf8Bytes};
use arc_swap::ArcSwap;
use parking_lot::{Mutex, MutexGuard};
use tokio::sync::Notify;

use crate::cluster::Cluster;
use crate::config::{Config, Envelope, PresenceFormat, RoomRule};
use crate::observe::stats::Stats;
use crate::proto::names::name_key;
use crate::relay::history::History;
use crate::relay::outbox::Outbox;
use crate::relay::presence::{self, Changes, Kind, Pending, Roster};

/// Why a join was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JoinError {
    #[error("too many rooms")]
    TooManyRooms,
    #[error("name taken")]
    NameTaken,
}

/// The close code and reason of a connection whose name was taken over by a reconnect of the
/// same client (same name, same `?session=`).
pub const REPLACED: (u16, &str) = (4001, "replaced by a new connection");

/// The close code and reason of a connection whose member the backend API kicked
/// (`POST /api/rooms/ROOM/kick?name=NAME`).
pub const KICKED: (u16, &str) = (4003, "kicked");

/// The settings every room follows, taken from the configuration in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    pub max_rooms: usize,
    pub unique_names: bool,
    pub presence: PresenceFormat,
    pub presence_interval: Duration,
    pub max_names: usize,
    pub history: usize,
    pub history_bytes: usize,
    /// `relay.envelope`: with history, messages carry a sequence number ([`crate::relay::recovery`]).
    pub envelope: Envelope,
    /// `[[rooms]]`: overrides for the rooms they match ([`RoomSettings::for_room`]).
    pub rules: Arc<[RoomRule]>,
}

impl RoomSettings {
    pub fn new(config: &Config) -> RoomSettings {
        RoomSettings {
            max_rooms: config.relay.max_rooms,
            unique_names: config.presence.unique_names,
            presence: config.presence.format,
            presence_interval: config.presence.interval,
            max_names: config.presence.max_names,
            history: config.relay.history,
            history_bytes: usize::try_from(config.relay.history_bytes).unwrap_or(usize::MAX),
            envelope: config.relay.envelope,
            rules: config.rooms.clone().into(),
        }
    }

    /// `room`'s history bounds (`history`, `history_bytes`): what the message path needs, without
    /// copying the rest.
    pub fn history_for(&self, room: &str) -> (usize, usize) {
        match self.rules.iter().find(|r| r.matches(room)) {
            None => (self.history, self.history_bytes),
            Some(_) => {
                let own = self.for_room(room);
                (own.history, own.history_bytes)
            }
        }
    }

    /// Whether `room`'s messages are numbered for recovery: history kept and the JSON envelope
    /// (which can carry the number). Without rules, no copy of the settings.
    pub fn numbered(&self, room: &str) -> bool {
        let own;
        let s = match self.rules.iter().any(|r| r.matches(room)) {
            false => self,
            true => {
                own = self.for_room(room);
                &own
            }
        };
        s.history > 0 && s.envelope == Envelope::Json
    }

    /// The settings of `room`: these with the first matching `[[rooms]]` entry's overrides.
    pub fn for_room(&self, room: &str) -> RoomSettings {
        let mut own = self.clone();
        if let Some(rule) = self.rules.iter().find(|r| r.matches(room)) {
            let (r, p) = (&rule.relay, &rule.presence);
            own.unique_names = p.unique_names.unwrap_or(own.unique_names);
            own.presence = p.format.unwrap_or(own.presence);
            own.max_names = p.max_names.unwrap_or(own.max_names);
            own.history = r.history.unwrap_or(own.history);
            own.envelope = r.envelope.unwrap_or(own.envelope);
            if let Some(bytes) = r.history_bytes {
                own.history_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            }
        }
        own
    }
}

/// All rooms of this server. Cheap to clone: a handle over shared state.
#[derive(Clone)]
pub struct Hub {
    shared: Arc<HubShared>,
}

struct HubShared {
    /// Room name -> room. Locked alone and briefly: never while waiting for a room. Sorted, so
    /// the backend API pages through rooms by name with bounded work ([`Hub::rooms_after`]).
    rooms: Mutex<BTreeMap<Arc<str>, Arc<Room>>>,
    /// The room settings in force; swapped by [`Hub::configure`] on reload.
    settings: ArcSwap<RoomSettings>,
    /// Rooms whose presence changed and are not yet in the ticker's schedule. Pushed by joins and
    /// leaves (each room once, see `RoomState::scheduled`), taken by [`Hub::run_presence`].
    changed: Mutex<Vec<Arc<Room>>>,
    /// Wakes the presence ticker when `changed` gets a room.
    wake: Notify,
    /// Members in all rooms: the `total` of presence and the `connections` of /stats.
    total: AtomicUsize,
    next_id: AtomicU64,
    stats: Arc<Stats>,
    /// The other nodes, through Redis; `None` on a single node (one branch per message).
    cluster: Option<Cluster>,
    /// This hub's start, in hex: with a room's creation number, the room's epoch.
    epoch_base: String,
}

/// One room: its members, its recent history and its pending presence.
pub struct Room {
    name: Arc<str>,
    state: Mutex<RoomState>,
    /// How many times a thread had to wait for `state` (see [`Room::lock`]).
    contended: AtomicU64,
}

struct RoomState {
    /// Set by the leave that emptied the room, before the room leaves the map; a closed room is
    /// never joined again.
    closed: bool,
    members: Vec<Member>,
    roster: Roster,
    history: History,
    /// Name changes since the last presence message.
    changes: Changes,
    /// The count in the last presence message.
    count_sent: usize,
    /// Everyone needs the state again (the format or `max_names` changed on reload).
    resync: bool,
    /// The room is in the ticker's schedule (in `changed` or its pending list).
    scheduled: bool,
    /// When the last presence message was sent: the start of the coalescing window.
    last_sent: Option<Instant>,
    /// Members of this room on other nodes (cluster), and their names, sorted; those names are
    /// in `roster` too, so uniqueness and presence messages see the whole cluster.
    remote_count: usize,
    remote_names: Vec<Arc<str>>,
    /// The sequence number of the room's last numbered message (0: none yet), and the epoch that
    /// names this run of numbers: a room made anew starts over under a new epoch.
    seq: u64,
    epoch: Arc<str>,
    /// A message has been relayed here, or the history read from Redis, since the room was
    /// created (cluster history: a replay from Redis goes to the first members only while nothing
    /// live has reached them, and only once).
    live: bool,
}

struct Member {
    id: u64,
    /// The name as given, and its uniqueness key (`request::name_key`).
    name: Option<(Arc<str>, Box<str>)>,
    /// `?session=`: a reconnect with the same name and session takes this member's place.
    session: Option<Box<str>>,
    outbox: Outbox,
    /// Joined since the last presence message: gets the state, not the change.
    fresh: bool,
}

/// A connection's place in a room; dropping it leaves the room.
pub struct Membership {
    hub: Hub,
    room: Arc<Room>,
    id: u64,
    outbox: Outbox,
}

/// Sets a room's remote members; whether anything changed (names appeared or went are presence
/// changes like local joins and leaves).
fn apply_remote(state: &mut RoomState, count: usize, names: Vec<Arc<str>>) -> bool {
    let (joined, left) = crate::cluster::wire::diff(&state.remote_names, &names);
    for name in &left {
        state.roster.remove(name, &name_key(name));
        state.changes.left(name);
    }
    for name in &joined {
        state.roster.add(name, &name_key(name));
        state.changes.joined(name);
    }
    let changed = !joined.is_empty() || !left.is_empty() || count != state.remote_count;
    state.remote_names = names;
    state.remote_count = count;
    changed
}

impl Room {
    fn new(name: &str, epoch: Arc<str>) -> Room {
        Room {
            name: name.into(),
            state: Mutex::new(RoomState {
                closed: false,
                members: Vec::new(),
                roster: Roster::default(),
                history: History::default(),
                changes: Changes::default(),
                count_sent: 0,
                resync: false,
                scheduled: false,
                last_sent: None,
                remote_count: 0,
                remote_names: Vec::new(),
                seq: 0,
                epoch,
                live: false,
            }),
            contended: AtomicU64::new(0),
        }
    }

    /// Locks the room, counting the times it had to wait (what the lock test watches for).
    fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.try_lock().unwrap_or_else(|| {
            self.contended.fetch_add(1, Ordering::Relaxed);
            self.state.lock()
        })
    }
}

impl Hub {
    pub fn new(stats: Arc<Stats>, settings: RoomSettings) -> Hub {
        Hub::with_cluster(stats, settings, None)
    }

    /// A hub whose rooms span the nodes of `cluster` (when `Some`).
    pub fn with_cluster(
        stats: Arc<Stats>,
        settings: RoomSettings,
        cluster: Option<Cluster>,
    ) -> Hub {
        Hub {
            shared: Arc::new(HubShared {
                rooms: Mutex::new(BTreeMap::new()),
                settings: ArcSwap::from_pointee(settings),
                changed: Mutex::new(Vec::new()),
                wake: Notify::new(),
                total: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
                stats,
                cluster,
                epoch_base: format!(
                    "{:x}",
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0, |d| d.as_millis())
                ),
            }),
        }
    }

    /// Connections in all rooms of this node.
    pub fn total(&self) -> usize {
        self.shared.total.load(Ordering::Relaxed)
    }

    /// Connections on every node: presence's `total`.
    fn cluster_total(&self) -> usize {
        let remote = self
            .shared
            .cluster
            .as_ref()
            .map_or(0, Cluster::remote_total);
        self.total() + remote
    }

    /// The cluster this hub is part of, if any.
    pub fn cluster(&self) -> Option<&Cluster> {
        self.shared.cluster.as_ref()
    }

    /// Names of the rooms with members on this node.
    pub fn room_names(&self) -> Vec<Arc<str>> {
        self.shared.rooms.lock().keys().cloned().collect()
    }

    /// This node's members of `room`: their count and names (sorted); `None` if it has none.
    pub fn local_presence(&self, room: &str) -> Option<(usize, Vec<Arc<str>>)> {
        let room = self.shared.rooms.lock().get(room)?.clone();
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

    /// A message another node relayed to `room`: to every local member (the sender is never
    /// here) and into the room's history. Nothing if the room has no member on this node.
    pub fn deliver_remote(&self, room: &str, msg: Message) {
        let Some(room) = self.shared.rooms.lock().get(room).cloned() else {
            return;
        };
        let (history, history_bytes) = self.shared.settings.load().history_for(&room.name);
        let mut state = room.lock();
        let mut delivered = 0u64;
        for m in &state.members {
            if m.outbox.push(msg.clone()) {
                delivered += 1;
            }
        }
        state.live = true;
        if history > 0 || !state.history.is_empty() {
            state.history.push(msg, history, history_bytes);
        }
        drop(state);
        let stats = &self.shared.stats;
        stats.messages_out.fetch_add(delivered, Ordering::Relaxed);
    }

    /// The other nodes' members of `room`, as read from Redis: names that appeared or went are
    /// presence changes like local joins and leaves.
    pub fn set_remote(&self, room: &str, count: usize, names: Vec<Arc<str>>) {
        let Some(room) = self.shared.rooms.lock().get(room).cloned() else {
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

    /// The room's history as kept in Redis (oldest first), read just after this node subscribed
    /// to the room: it becomes the room's history and, while nothing live has been relayed in the
    /// room yet, is replayed to the members who joined while it was being read.
    /// `false` when it was not seeded (the room is gone or already live).
    pub fn seed_history(&self, room: &str, messages: Vec<Message>) -> bool {
        let Some(room) = self.shared.rooms.lock().get(room).cloned() else {
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

    /// Forgets every other node's members (Redis is unreachable: their counts cannot be kept).
    pub fn clear_remote(&self) {
        for room in self.rooms() {
            let name = room.name.clone();
            drop(room);
            self.set_remote(&name, 0, Vec::new());
        }
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
    fn rooms(&self) -> Vec<Arc<Room>> {
        self.shared.rooms.lock().values().cloned().collect()
    }

    /// The room settings in force.
    pub fn settings(&self) -> Arc<RoomSettings> {
        self.shared.settings.load_full()
    }

    /// Applies reloaded settings to every room at once: history is trimmed to the new bounds,
    /// and a new presence format or `max_names` sends every member the state again.
    pub fn configure(&self, settings: RoomSettings) {
        let new = Arc::new(settings);
        let old = self.shared.settings.swap(new.clone());
        for room in self.rooms() {
            let (old, new) = (old.for_room(&room.name), new.for_room(&room.name));
            let resync = old.presence != new.presence || old.max_names != new.max_names;
            let mut state = room.lock();
            if state.closed {
                continue;
            }
            state.history.trim(new.history, new.history_bytes);
            if resync {
                state.resync = true;
                self.schedule(&room, &mut state);
            }
        }
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
    /// closes with [`REPLACED`]) and the name stays in the room without a presence change.
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
            let numbered = self.shared.cluster.is_none()
                && settings.history > 0
                && settings.envelope == Envelope::Json;
            let from = match since {
                None => 0,
                Some(since) => {
                    let plan = crate::relay::recovery::plan(
                        &room.name,
                        numbered.then_some(&*state.epoch),
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
            });
            self.shared.total.fetch_add(1, Ordering::Relaxed);
            self.schedule(&room, &mut state);
            drop(state);
            if let Some(cluster) = &self.shared.cluster {
                cluster.touch(&room.name);
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
        let Some(room) = self.shared.rooms.lock().get(room).cloned() else {
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
            cluster.touch(&room.name);
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

    /// `msg` numbered for recovery when `room` numbers its messages (single node only: a
    /// cluster-wide counter would live in Redis), else unchanged. Under the room lock.
    fn number(&self, room: &str, state: &mut RoomState, msg: Message) -> Message {
        if self.shared.cluster.is_some() || !self.shared.settings.load().numbered(room) {
            return msg;
        }
        match msg {
            Message::Text(text) => {
                state.seq += 1;
                Message::Text(crate::relay::recovery::with_seq(&text, state.seq))
            }
            other => other,
        }
    }

    /// Puts a changed room in the presence ticker's schedule, once.
    fn schedule(&self, room: &Arc<Room>, state: &mut RoomState) {
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
    fn send_presence(&self, room: &Room) {
        let settings = self.shared.settings.load().for_room(&room.name);
        let mut state = room.lock();
        state.scheduled = false;
        if state.closed {
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
        let numbered = self.shared.cluster.is_none() && settings.numbered(&room.name);
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
                .presence_out
                .fetch_add(sent, Ordering::Relaxed);
        }
    }

    /// A message from the backend API into `room`: to every local member, into the room's
    /// history and to the other nodes, under the room lock like a member's message (so members see
    /// it in order with the others' messages). A room with no member here is still published to
    /// the other nodes. Returns how many local members it was queued to.
    pub fn publish_api(&self, room: &str, msg: Message) -> usize {
        let (history, history_bytes) = self.shared.settings.load().history_for(room);
        let cluster = self.shared.cluster.as_ref();
        let encoded = cluster.and_then(|c| c.encode(&msg));
        let local = self.shared.rooms.lock().get(room).cloned();
        let Some(local) = local else {
            if let (Some(cluster), Some(data)) = (cluster, encoded) {
                cluster.publish(&Arc::from(room), data, history);
            }
            return 0;
        };
        let mut state = local.lock();
        let msg = self.number(&local.name, &mut state, msg);
        let mut delivered = 0;
        for m in &state.members {
            if m.outbox.push(msg.clone()) {
                delivered += 1;
            }
        }
        state.live = true;
        if let (Some(cluster), Some(data)) = (cluster, encoded) {
            cluster.publish(&local.name, data, history);
        }
        if history > 0 || !state.history.is_empty() {
            state.history.push(msg, history, history_bytes);
        }
        drop(state);
        let stats = &self.shared.stats;
        stats
            .messages_out
            .fetch_add(delivered as u64, Ordering::Relaxed);
        delivered
    }

    /// The presence of `room` as this node knows it: the count on every node, and up to
    /// `max_names` names (sorted) with how many more there are. `None` without a local member.
    pub fn room_presence(&self, room: &str) -> Option<(usize, Vec<String>, usize)> {
        let max_names = self.shared.settings.load().for_room(room).max_names;
        let room = self.shared.rooms.lock().get(room)?.clone();
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

    /// Closes the connections of the members of `room` named `name` (by its uniqueness key) with
    /// [`KICKED`], on this node and (through the cluster) on the others; they leave the room as
    /// their connections end. Returns how many were closed on this node.
    pub fn kick(&self, room: &str, name: &str) -> usize {
        let key = name_key(name);
        if let Some(cluster) = &self.shared.cluster {
            cluster.kick(room, &key);
        }
        self.kick_key(room, &key)
    }

    /// [`Hub::kick`] on this node only, by the name's key (what another node asks for).
    pub fn kick_key(&self, room: &str, key: &str) -> usize {
        let Some(room) = self.shared.rooms.lock().get(room).cloned() else {
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

    /// Test hook: holds `room`'s lock from another thread until the returned guard drops, so a
    /// test can prove that joins and leaves elsewhere do not wait for a busy room. `None` if the
    /// room does not exist.
    #[doc(hidden)]
    pub fn hold_room(&self, room: &str) -> Option<RoomHold> {
        let room = self.shared.rooms.lock().get(room)?.clone();
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let holder = room.clone();
        let thread = std::thread::spawn(move || {
            let _guard = holder.lock();
            let _ = held_tx.send(());
            // Until the hold is dropped (the sender goes away).
            let _ = release_rx.recv();
        });
        held_rx.recv().ok()?;
        Some(RoomHold {
            room,
            release: Some(release_tx),
            thread: Some(thread),
        })
    }
}

/// A room lock held by [`Hub::hold_room`]; dropping it releases the lock.
#[doc(hidden)]
pub struct RoomHold {
    room: Arc<Room>,
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RoomHold {
    /// How many times anyone has had to wait for this room's lock.
    pub fn waiters(&self) -> u64 {
        self.room.contended.load(Ordering::Relaxed)
    }
}

impl Drop for RoomHold {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Membership {
    pub fn room(&self) -> &str {
        &self.room.name
    }

    /// Relays `msg` to every member of the room (the sender too when `echo`), in one pass under
    /// the room lock, so every receiver sees one sender's messages in the order they were sent.
    /// The room's history keeps it within the bounds in force (the hub's settings).
    pub fn publish(&self, msg: Message, echo: bool) {
        let (history, history_bytes) = self.hub.shared.settings.load().history_for(&self.room.name);
        let cluster = self.hub.shared.cluster.as_ref();
        let encoded = cluster.and_then(|c| c.encode(&msg));
        let mut state = self.room.lock();
        let msg = self.hub.number(&self.room.name, &mut state, msg);
        let mut delivered = 0u64;
        for m in &state.members {
            if (echo || m.id != self.id) && m.outbox.push(msg.clone()) {
                delivered += 1;
            }
        }
        state.live = true;
        // Under the room lock, so the other nodes see this room's messages in the local order.
        if let (Some(cluster), Some(data)) = (cluster, encoded) {
            // A message too large for the history is not appended to the room's stream either,
            // where it would take one of the `history` places from the messages before it.
            let kept = match crate::relay::history::fits(&msg, history_bytes) {
                true => history,
                false => 0,
            };
            cluster.publish(&self.room.name, data, kept);
        }
        if history > 0 || !state.history.is_empty() {
            state.history.push(msg, history, history_bytes);
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

/// The lines `--check-config` adds about rooms: the worst-case history memory (every room with
/// the largest `history_bytes` of the global settings and the `[[rooms]]` entries that keep one).
pub fn check_notes(config: &Config) -> Vec<String> {
    let relay = &config.relay;
    let per_room = std::iter::once(RoomSettings::new(config))
        .chain(config.rooms.iter().map(|rule| {
            let mut own = config.clone();
            rule.apply(&mut own);
            RoomSettings::new(&own)
        }))
        .filter(|s| s.history > 0)
        .map(|s| s.history_bytes as u64)
        .max();
    let Some(per_room) = per_room else {
        return vec!["history: off (relay.history = 0)".into()];
    };
    let worst = (relay.max_rooms as u64).saturating_mul(per_room);
    vec![format!(
        "history: at most {} ({} rooms x {} per room: relay.max_rooms x relay.history_bytes)",
        bytesize::ByteSize(worst).display().iec(),
        relay.max_rooms,
        bytesize::ByteSize(per_room).display().iec(),
    )]
}

/// Room checks for `Config::validate`: a presence state and a full history replay must fit a
/// joiner's outbound queue, so neither ever evicts a member by its size alone.
pub fn check_config(config: &Config) -> Vec<(&'static str, String)> {
    let (relay, presence, limits) = (&config.relay, &config.presence, &config.limits);
    let mut problems = Vec::new();
    // The queue counts each message as its payload plus its slot (`outbox::cost`).
    let slot = crate::relay::outbox::SLOT_BYTES as u64;
    let state = presence::max_message_bytes(presence.format, presence.max_names);
    let replay = (relay.history_bytes)
        .saturating_add((relay.history as u64).saturating_mul(slot))
        .saturating_add(state + slot);
    if state + slot > limits.queue_bytes {
        problems.push((
            "presence.max_names",
            format!(
                "a presence state of {} names may take {state} bytes ({} per 64-character name + {}), \
                 more than limits.queue_bytes ({}): lower presence.max_names or raise limits.queue_bytes",
                presence.max_names,
                presence::MAX_NAME_JSON_BYTES,
                presence::MESSAGE_OVERHEAD_BYTES,
                limits.queue_bytes
            ),
        ));
    } else if relay.history > 0 && replay > limits.queue_bytes {
        problems.push((
            "relay.history_bytes",
            format!(
                "a replay of {} bytes in up to {} messages ({slot} bytes of queue each) plus a presence \
                 state of up to {state} bytes must fit limits.queue_bytes ({}): lower \
                 relay.history_bytes, relay.history or presence.max_names",
                relay.history_bytes, relay.history, limits.queue_bytes
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<String> {
        match Config::from_toml(&format!("[tls]\nenabled = false\n{text}")) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.message).collect(),
        }
    }

    #[test]
    fn a_presence_state_must_fit_the_queue() {
        // 200 names: 200 x 259 + 512 = 52 312 bytes, within 64 KiB; 300 are not.
        assert!(
            problems("[limits]\nqueue_bytes = \"64KiB\"\n[presence]\nmax_names = 200\n").is_empty()
        );
        let p = problems("[limits]\nqueue_bytes = \"64KiB\"\n[presence]\nmax_names = 300\n");
        assert!(p[0].starts_with("presence.max_names: "), "{p:?}");
        // Plain and off carry no names.
        assert!(
            problems("[limits]\nqueue_bytes = \"64KiB\"\n[presence]\nmax_names = 300\nformat = \"plain\"\n")
                .is_empty()
        );
    }

    #[test]
    fn a_full_replay_and_a_state_must_fit_the_queue() {
        let base = "[limits]\nqueue_bytes = \"1MiB\"\n[presence]\nmax_names = 1000\n";
        // 1000 names take 259 256 bytes; 800 KiB of history on top is more than 1 MiB.
        let p = problems(&format!(
            "{base}[relay]\nhistory = 10\nhistory_bytes = \"800KiB\"\n"
        ));
        assert!(p[0].starts_with("relay.history_bytes: "), "{p:?}");
        assert!(
            problems(&format!(
                "{base}[relay]\nhistory = 10\nhistory_bytes = \"512KiB\"\n"
            ))
            .is_empty()
        );
        // No history: its bytes do not matter.
        assert!(problems(&format!("{base}[relay]\nhistory_bytes = \"800KiB\"\n")).is_empty());
    }

    #[test]
    fn check_config_names_the_worst_case_history_memory() {
        let c = Config::from_toml("[tls]\nenabled = false\n[relay]\nhistory = 5\nmax_rooms = 100\nhistory_bytes = \"1MiB\"\n").unwrap();
        let notes = check_notes(&c);
        assert!(notes[0].contains("100 rooms x 1.0 MiB"), "{notes:?}");
        assert!(notes[0].contains("at most 100.0 MiB"), "{notes:?}");
        let off = check_notes(&Config::from_toml("[tls]\nenabled = false\n").unwrap());
        assert!(off[0].contains("off"), "{off:?}");
    }

    fn hub() -> Hub {
        let config = Config::from_toml("[tls]\nenabled = false\n[relay]\nhistory = 3\n").unwrap();
        Hub::new(Arc::default(), RoomSettings::new(&config))
    }

    fn outbox() -> Outbox {
        crate::relay::outbox::outbox(100, 1 << 20, tokio_util::sync::CancellationToken::new()).0
    }

    #[test]
    fn a_room_lives_while_someone_is_in_it_and_a_new_one_replaces_it() {
        let hub = hub();
        let a = hub.join("r", Some("ann"), outbox()).unwrap();
        let first = a.room.clone();
        drop(a);
        assert_eq!(hub.room_count(), 0);
        assert!(first.state.lock().closed);
        let b = hub.join("r", None, outbox()).unwrap();
        assert!(
            !Arc::ptr_eq(&first, &b.room),
            "a closed room is never joined again"
        );
        assert_eq!(hub.room_counts(), vec![(Arc::from("r"), 1)]);
    }

    #[test]
    fn a_join_that_finds_a_closed_room_in_the_map_replaces_it() {
        let hub = hub();
        let a = hub.join("r", None, outbox()).unwrap();
        let old = a.room.clone();
        // The leave's state change without its removal from the map: the race a join can meet.
        old.state.lock().closed = true;
        let b = hub.join("r", None, outbox()).unwrap();
        assert!(!Arc::ptr_eq(&old, &b.room));
        assert_eq!(hub.room_count(), 1);
        // The old room's last member leaving does not prune its successor.
        drop(a);
        assert_eq!(hub.room_counts(), vec![(Arc::from("r"), 1)]);
    }

    /// Everything queued for one member so far, as text.
    async fn drained(rx: &crate::relay::outbox::OutboxRx) -> Vec<String> {
        let mut batch = std::collections::VecDeque::new();
        tokio::time::timeout(Duration::from_secs(5), rx.recv_all(&mut batch))
            .await
            .expect("something queued");
        batch
            .iter()
            .map(|m| m.to_text().unwrap().to_owned())
            .collect()
    }

    fn pair() -> (Outbox, crate::relay::outbox::OutboxRx) {
        crate::relay::outbox::outbox(100, 1 << 20, tokio_util::sync::CancellationToken::new())
    }

    #[tokio::test]
    async fn one_presence_message_is_made_once_and_shared_by_its_receivers() {
        let hub = hub();
        let (ann_tx, ann) = pair();
        let (bob_tx, bob) = pair();
        let a = hub.join("r", Some("ann"), ann_tx).unwrap();
        let _b = hub.join("r", Some("bob"), bob_tx).unwrap();
        hub.send_presence(&a.room);
        let first = |rx: &crate::relay::outbox::OutboxRx| {
            let mut batch = std::collections::VecDeque::new();
            assert!(rx.try_recv_all(&mut batch));
            match batch.pop_front() {
                Some(Message::Text(t)) => t,
                other => panic!("{other:?}"),
            }
        };
        let (to_ann, to_bob) = (first(&ann), first(&bob));
        assert_eq!(to_ann, to_bob);
        assert_eq!(
            to_ann.as_str().as_ptr(),
            to_bob.as_str().as_ptr(),
            "one buffer, not a copy per receiver"
        );
    }

    #[tokio::test]
    async fn a_window_sends_the_state_to_joiners_and_the_change_to_the_others() {
        let hub = hub();
        let (ann_tx, ann) = pair();
        let a = hub.join("r", Some("ann"), ann_tx).unwrap();
        hub.send_presence(&a.room);
        assert_eq!(
            drained(&ann).await,
            [r#"{"type":"presence","room":"r","count":1,"total":1,"names":["ann"]}"#]
        );
        let (bob_tx, bob) = pair();
        let b = hub.join("r", Some("bob"), bob_tx).unwrap();
        let (cid_tx, cid) = pair();
        let c = hub.join("r", Some("cid"), cid_tx).unwrap();
        drop(c);
        hub.send_presence(&a.room);
        // Cid came and went within the window: nobody hears of it.
        assert_eq!(
            drained(&ann).await,
            [r#"{"type":"presence","room":"r","count":2,"total":2,"joined":["bob"],"left":[]}"#]
        );
        assert_eq!(
            drained(&bob).await,
            [r#"{"type":"presence","room":"r","count":2,"total":2,"names":["ann","bob"]}"#]
        );
        drop(b);
        hub.send_presence(&a.room);
        assert_eq!(
            drained(&ann).await,
            [r#"{"type":"presence","room":"r","count":1,"total":1,"joined":[],"left":["bob"]}"#]
        );
        drop(cid);
    }

    #[tokio::test]
    async fn other_nodes_members_join_the_count_the_names_and_uniqueness() {
        let hub = hub();
        let (ann_tx, ann) = pair();
        let a = hub.join("r", Some("ann"), ann_tx).unwrap();
        hub.send_presence(&a.room);
        drained(&ann).await;
        let names = |v: &[&str]| v.iter().map(|n| Arc::from(*n)).collect::<Vec<_>>();
        // Two members elsewhere, one named.
        hub.set_remote("r", 2, names(&["bob"]));
        hub.send_presence(&a.room);
        assert_eq!(
            drained(&ann).await,
            [r#"{"type":"presence","room":"r","count":3,"total":1,"joined":["bob"],"left":[]}"#]
        );
        // A name held on another node is taken here (by its key).
        assert_eq!(
            hub.join("r", Some("BOB"), outbox()).err(),
            Some(JoinError::NameTaken)
        );
        // This node's own presence leaves the others out.
        assert_eq!(hub.local_presence("r"), Some((1, names(&["ann"]))));
        // Bob leaves, cid arrives elsewhere; then Redis is lost: the others vanish.
        hub.set_remote("r", 2, names(&["cid"]));
        hub.send_presence(&a.room);
        assert_eq!(
            drained(&ann).await,
            [
                r#"{"type":"presence","room":"r","count":3,"total":1,"joined":["cid"],"left":["bob"]}"#
            ]
        );
        hub.clear_remote();
        hub.send_presence(&a.room);
        assert_eq!(
            drained(&ann).await,
            [r#"{"type":"presence","room":"r","count":1,"total":1,"joined":[],"left":["cid"]}"#]
        );
        // Nothing for a room with no member here.
        hub.set_remote("nowhere", 5, names(&["x"]));
        assert_eq!(hub.room_count(), 1);
    }

    #[tokio::test]
    async fn a_message_from_another_node_reaches_every_local_member_and_the_history() {
        let hub = hub();
        let (ann_tx, ann) = pair();
        let a = hub.join("r", None, ann_tx).unwrap();
        hub.deliver_remote("r", Message::text("m1"));
        hub.deliver_remote("absent", Message::text("lost"));
        assert_eq!(drained(&ann).await, ["m1"]);
        let (bob_tx, bob) = pair();
        let _b = hub.join("r", None, bob_tx).unwrap();
        assert_eq!(
            drained(&bob).await,
            ["m1"],
            "replayed from the room's history"
        );
        // Once something live has been relayed, a late history read from Redis is not replayed.
        hub.seed_history("r", vec![Message::text("old")]);
        a.publish(Message::text("m2"), true);
        assert_eq!(drained(&ann).await, ["m2"]);
    }

    #[tokio::test]
    async fn a_history_read_from_redis_is_replayed_once_to_the_first_members() {
        let hub = hub();
        let (ann_tx, ann) = pair();
        let _a = hub.join("r", None, ann_tx).unwrap();
        hub.seed_history("r", ["h1", "h2", "h3", "h4"].map(Message::text).to_vec());
        assert_eq!(drained(&ann).await, ["h2", "h3", "h4"], "history = 3");
        hub.seed_history("r", vec![Message::text("again")]);
        hub.deliver_remote("r", Message::text("live"));
        assert_eq!(drained(&ann).await, ["live"]);
    }

    /// A member's idea of the room, rebuilt from its presence messages as a client would.
    #[derive(Debug, Default)]
    struct View {
        known: Vec<String>,
        unnamed: usize,
        count: u64,
    }

    impl View {
        fn apply(&mut self, text: &str) {
            let p: serde_json::Value = serde_json::from_str(text).unwrap();
            let list = |key: &str| -> Vec<String> {
                p.get(key)
                    .and_then(|v| v.as_array())
                    .map_or(Vec::new(), |a| {
                        a.iter().map(|n| n.as_str().unwrap().to_owned()).collect()
                    })
            };
            self.count = p["count"].as_u64().unwrap();
            if p.get("names").is_some() || p.get("more").is_some() {
                self.known = list("names");
                self.unnamed = p.get("more").map_or(0, |m| m.as_u64().unwrap() as usize);
                return;
            }
            self.known.extend(list("joined"));
            for gone in list("left") {
                match self.known.iter().position(|n| *n == gone) {
                    Some(i) => drop(self.known.swap_remove(i)),
                    None => self.unnamed -= 1,
                }
            }
        }
    }

    #[tokio::test]
    async fn views_rebuilt_from_states_and_changes_match_the_room_through_random_churn() {
        use futures_util::FutureExt;
        const POOL: [&str; 6] = ["ann", "bob", "cid", "dee", "eve", "fay"];
        for (unique_names, max_names) in [(true, 1000), (false, 1000), (false, 3), (true, 0)] {
            let config = Config::from_toml("[tls]\nenabled = false\n").unwrap();
            let mut settings = RoomSettings::new(&config);
            (settings.unique_names, settings.max_names) = (unique_names, max_names);
            let hub = Hub::new(Arc::default(), settings);
            // xorshift64: the same churn on every run.
            let mut seed = 0x9E37_79B9_7F4A_7C15_u64;
            let mut random = move |n: u64| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed % n) as usize
            };
            let mut members: Vec<(
                Membership,
                Option<&str>,
                crate::relay::outbox::OutboxRx,
                View,
            )> = Vec::new();
            for step in 0..1500 {
                match random(10) {
                    0..=4 => {
                        let name = (random(5) > 0).then(|| POOL[random(POOL.len() as u64)]);
                        let (tx, rx) = pair();
                        if let Ok(m) = hub.join("r", name, tx) {
                            members.push((m, name, rx, View::default()));
                        }
                    }
                    5..=7 if !members.is_empty() => {
                        drop(members.swap_remove(random(members.len() as u64)));
                    }
                    _ => {
                        let room = hub.shared.rooms.lock().get("r").cloned();
                        if let Some(room) = room {
                            hub.send_presence(&room);
                        }
                        for (_, _, rx, view) in &mut members {
                            let mut batch = std::collections::VecDeque::new();
                            if rx.recv_all(&mut batch).now_or_never().is_some() {
                                for m in &batch {
                                    view.apply(m.to_text().unwrap());
                                }
                                // As the writer does once a batch is on the wire.
                                let bytes = batch.iter().map(Message::len).sum();
                                rx.written(batch.len(), bytes);
                            }
                        }
                        let mut names: Vec<String> = members
                            .iter()
                            .filter_map(|(_, n, _, _)| n.map(str::to_owned))
                            .collect();
                        names.sort();
                        for (_, _, _, view) in &members {
                            assert_eq!(view.count, members.len() as u64, "step {step}");
                            let mut known = view.known.clone();
                            known.sort();
                            assert_eq!(known.len() + view.unnamed, names.len(), "step {step}");
                            if view.unnamed == 0 {
                                assert_eq!(known, names, "step {step}");
                            } else {
                                assert!(known.iter().all(|n| names.contains(n)), "step {step}");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn a_reconnect_with_the_same_session_takes_its_name_over_at_once() {
        let hub = hub();
        let (old_tx, old_rx) = pair();
        let old = hub
            .join_session("r", Some("sam"), Some("tab-0123456789abcdef"), old_tx)
            .unwrap();
        // Someone else, or the same name without the session, is refused as before.
        for session in [None, Some("tab-fedcba9876543210")] {
            assert_eq!(
                hub.join_session("r", Some("SAM"), session, outbox()).err(),
                Some(JoinError::NameTaken)
            );
        }
        assert!(!old_rx.replaced());
        let new = hub
            .join_session("r", Some("sam"), Some("tab-0123456789abcdef"), outbox())
            .unwrap();
        assert!(old_rx.replaced(), "the old connection is told to close");
        assert_eq!(hub.total(), 1);
        assert_eq!(hub.local_presence("r"), Some((1, vec![Arc::from("sam")])));
        // The old guard's leave finds nothing: the name stays with the new member.
        drop(old);
        assert_eq!(hub.local_presence("r"), Some((1, vec![Arc::from("sam")])));
        assert_eq!(
            new.room.state.lock().changes.len(),
            1,
            "one join in all, no leave"
        );
        drop(new);
        assert_eq!(hub.room_count(), 0);
    }

    #[tokio::test]
    async fn a_room_pattern_gives_its_rooms_their_own_presence_and_history() {
        let config = Config::from_toml(
            "[tls]\nenabled = false\n[[rooms]]\nmatch = \"count-*\"\n\
             presence = { format = \"plain\" }\nrelay = { history = 2 }\n",
        )
        .unwrap();
        let settings = RoomSettings::new(&config);
        let count = settings.for_room("count-1");
        assert_eq!((count.presence, count.history), (PresenceFormat::Plain, 2));
        let other = settings.for_room("chat-1");
        assert_eq!((other.presence, other.history), (PresenceFormat::Json, 0));
        let hub = Hub::new(Arc::default(), settings);
        let a = hub.join("count-1", None, outbox()).unwrap();
        for m in ["1", "2", "3"] {
            a.publish(Message::text(m), false);
        }
        let (tx, rx) = pair();
        let b = hub.join("count-1", None, tx).unwrap();
        hub.send_presence(&b.room);
        let got = drained(&rx).await;
        assert_eq!(
            got,
            ["2", "3", "2"],
            "two messages of history, then the plain count"
        );
        let c = hub.join("chat-1", None, outbox()).unwrap();
        c.publish(Message::text("x"), false);
        let (tx, rx) = pair();
        let d = hub.join("chat-1", None, tx).unwrap();
        hub.send_presence(&d.room);
        let got = drained(&rx).await;
        assert_eq!(got.len(), 1, "no history here: {got:?}");
        assert!(got[0].starts_with(r#"{"type":"presence""#), "{got:?}");
    }

    #[test]
    fn names_are_unique_by_key_unless_unique_names_is_off() {
        let hub = hub();
        let _a = hub.join("r", Some("sam"), outbox()).unwrap();
        assert_eq!(
            hub.join("r", Some("sam"), outbox()).err(),
            Some(JoinError::NameTaken)
        );
        let mut settings = (*hub.settings()).clone();
        settings.unique_names = false;
        hub.configure(settings);
        let b = hub.join("r", Some("sam"), outbox()).unwrap();
        drop(b);
        assert_eq!(_a.room.state.lock().roster.listed(10), ["sam"]);
    }
}
