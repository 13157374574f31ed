//! One room: its members, roster, history, pending presence and remote members, behind one
//! lock ([`Room::lock`], which counts the times it had to wait).
//!
//! Plain state and the one rule that edits it from the cluster's reads ([`apply_remote`]); the
//! operations that take the lock live in the hub's other rooms (registry, fan-out, ticker). This
//! file must not reach the room map, the cluster or the presence ticker.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use parking_lot::{Mutex, MutexGuard};

use crate::proto::names::name_key;
use crate::relay::history::History;
use crate::relay::outbox::Outbox;
use crate::relay::presence::{Changes, Roster};

/// One room: its members, its recent history and its pending presence.
pub struct Room {
    pub(super) name: Arc<str>,
    pub(super) state: Mutex<RoomState>,
    /// How many times a thread had to wait for `state` (see [`Room::lock`]).
    pub(super) contended: AtomicU64,
}

pub(super) struct RoomState {
    /// Set by the leave that emptied the room, before the room leaves the map; a closed room is
    /// never joined again.
    pub(super) closed: bool,
    pub(super) members: Vec<Member>,
    pub(super) roster: Roster,
    pub(super) history: History,
    /// Name changes since the last presence message.
    pub(super) changes: Changes,
    /// The count in the last presence message.
    pub(super) count_sent: usize,
    /// Everyone needs the state again (the format or `max_names` changed on reload).
    pub(super) resync: bool,
    /// The room is in the ticker's schedule (in `changed` or its pending list).
    pub(super) scheduled: bool,
    /// When the last presence message was sent: the start of the coalescing window.
    pub(super) last_sent: Option<Instant>,
    /// Members of this room on other nodes (cluster), and their names, sorted; those names are
    /// in `roster` too, so uniqueness and presence messages see the whole cluster.
    pub(super) remote_count: usize,
    pub(super) remote_names: Vec<Arc<str>>,
    /// The sequence number of the room's last numbered message (0: none yet), and the epoch that
    /// names this run of numbers: a room made anew starts over under a new epoch.
    pub(super) seq: u64,
    pub(super) epoch: Arc<str>,
    /// In a cluster, a numbered room's `epoch` and `seq` mirror Redis: set by the room's seed
    /// (or its first numbered message), until then unknown and not shown.
    pub(super) synced: bool,
    /// A message has been relayed here, or the history read from Redis, since the room was
    /// created (cluster history: a replay from Redis goes to the first members only while nothing
    /// live has reached them, and only once).
    pub(super) live: bool,
}

pub(super) struct Member {
    pub(super) id: u64,
    /// The name as given, and its uniqueness key ([`name_key`]).
    pub(super) name: Option<(Arc<str>, Box<str>)>,
    /// `?session=`: a reconnect with the same name and session takes this member's place.
    pub(super) session: Option<Box<str>>,
    pub(super) outbox: Outbox,
    /// Joined since the last presence message: gets the state, not the change.
    pub(super) fresh: bool,
    /// `?since=` of a member who joined a cluster's numbered room before this node had read the
    /// room's numbering from Redis: its plan is made when it is (the room's seed).
    pub(super) since: Option<(Box<str>, u64)>,
}

/// Sets a room's remote members; whether anything changed (names appeared or went are presence
/// changes like local joins and leaves).
pub(super) fn apply_remote(state: &mut RoomState, count: usize, names: Vec<Arc<str>>) -> bool {
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
    pub(super) fn new(name: &str, epoch: Arc<str>) -> Room {
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
                synced: false,
                live: false,
            }),
            contended: AtomicU64::new(0),
        }
    }

    /// Locks the room, counting the times it had to wait (what the lock test watches for).
    pub(super) fn lock(&self) -> MutexGuard<'_, RoomState> {
        self.state.try_lock().unwrap_or_else(|| {
            self.contended.fetch_add(1, Ordering::Relaxed);
            self.state.lock()
        })
    }
}
