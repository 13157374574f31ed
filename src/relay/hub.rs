//! Rooms and who is in them. The [`Hub`] is a cheap handle over the room map and what every room
//! shares (settings, the presence schedule, the counters, the cluster handle); each of its jobs has
//! its own file under `hub/`:
//! - `settings.rs`: [`RoomSettings`], the global ones and a room's own (`[[rooms]]`);
//! - `room.rs`: one room's state behind its lock;
//! - `registry.rs`: the map, join and leave with their [`Membership`] guard, and the read-only
//!   views (counts, pages, presence);
//! - `fanout.rs`: the one fan-out loop, for members', API and other nodes' messages;
//! - `ticker.rs`: the presence ticker, one task for all rooms;
//! - `remote.rs`: `impl cluster::Rooms for Hub`, the only door the cluster uses;
//! - `hold.rs`: the test hook that holds a room's lock.
//!
//! Joining returns a [`Membership`] guard whose `Drop` leaves: it removes the member, records the
//! change for presence and prunes the room once empty, so counts come from live state and cannot
//! drift. `Drop` only updates state and schedules the room; the presence messages are rendered
//! and queued by [`Hub::run_presence`], started by `Server::run` and tracked by the shutdown
//! `TaskTracker`. The presence rules are pure functions in [`crate::relay::presence`]; history is
//! [`crate::relay::history`]. A member whose outbox is full is evicted (its connection closes with
//! 1013) rather than slowing anyone else down; nothing is written to a socket under a room's
//! lock (a member claimed for a direct write is written after it: `hub/fanout.rs`).
//!
//! Locks are `parking_lot::Mutex`es held for a few non-blocking steps and never across `.await`.
//! The order, as the code takes them (a lock is taken only while holding locks above it):
//! 1. the cluster's receipts (its delivery task brings other nodes' messages in with them held);
//! 2. the room map, for a lookup or an insert only: it is released before any room is locked,
//!    and never taken while a room is locked, so a room busy fanning out a burst or rendering
//!    presence never stalls joins and leaves in the others;
//! 3. one room (never two at once);
//! 4. under a room: a member's outbox queue, the hub's presence schedule (`changed`), and the
//!    cluster's changed rooms, pending releases and first reads. These are leaves: nothing else is
//!    locked while one is held, and whoever takes one alone (an outbox's writer, the ticker, the
//!    cluster's worker) releases it before it locks a room;
//! 5. a connection's TLS stream, taken by a direct write with no other lock held, and only tried.
//!
//! Not locking the map while waiting for a room costs a race with pruning, settled by the room's
//! `closed` flag: a room emptied by its last leave is marked closed before it leaves the map, and
//! a join that finds it closed removes it and tries again.
//!
//! Room settings live in the hub, not in each connection's configuration snapshot: a reload
//! changes them in one place ([`Hub::configure`]), for every room at once.
//!
//! A member that reconnects with its name and its `?session=` takes the name over from its old
//! connection ([`Hub::join_session`]): the old member leaves the room at once, without a presence
//! change (the name never left), and its connection is closed with [`REPLACED`].
//!
//! This file must not grow the jobs above back into itself; it keeps the handle, the reload and
//! the `--check-config` checks about rooms.

mod fanout;
mod hold;
mod registry;
mod remote;
mod room;
mod settings;
mod ticker;

pub use fanout::Cork;
pub use hold::RoomHold;
pub use registry::Membership;
pub use settings::RoomSettings;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::cluster::Cluster;
use crate::config::Config;
use crate::observe::stats::Stats;

use room::Room;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn check_config_names_the_worst_case_history_memory() {
        let c = Config::from_toml("[tls]\nenabled = false\n[relay]\nhistory = 5\nmax_rooms = 100\nhistory_bytes = \"1MiB\"\n").unwrap();
        let notes = check_notes(&c);
        assert!(notes[0].contains("100 rooms x 1.0 MiB"), "{notes:?}");
        assert!(notes[0].contains("at most 100.0 MiB"), "{notes:?}");
        let off = check_notes(&Config::from_toml("[tls]\nenabled = false\n").unwrap());
        assert!(off[0].contains("off"), "{off:?}");
    }
}

#[cfg(test)]
mod room_tests;
