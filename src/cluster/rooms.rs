//! What the cluster needs from this node's rooms: the [`Rooms`] trait, which the hub implements
//! (in `relay/`), so the Redis side reaches rooms without naming the hub.
//!
//! Every method is synchronous and short (a room lock at most, never across an `.await`). This
//! file must not import `relay/` or anything above it: the dependency points from the rooms to the
//! cluster, never back.

use std::sync::Arc;

use crate::proto::message::Message;

/// This node's rooms as the cluster's worker, receive path and name releases see them.
pub trait Rooms: Send + Sync + 'static {
    /// Names of the rooms with members on this node.
    fn room_names(&self) -> Vec<Arc<str>>;

    /// This node's members of `room`: their count and names (sorted); `None` if it has none.
    fn local_presence(&self, room: &str) -> Option<(usize, Vec<Arc<str>>)>;

    /// Connections in all rooms of this node (its field of the cluster's total hash).
    fn total(&self) -> usize;

    /// The room rules in force. A reload puts new rules in force: [`Arc::ptr_eq`] with an older
    /// answer tells whether one happened.
    fn rules(&self) -> Arc<dyn RoomRules>;

    /// A message another node relayed to `room`: to every local member (the sender is never here)
    /// and into the room's history. Nothing if the room has no member on this node.
    fn deliver_remote(&self, room: &str, msg: Message);

    /// A numbered room's message as Redis numbered it (the number is in its text), from any node,
    /// this one included: to every local member but `sender` (this node's member who sent it with
    /// echo off) and into the room's history; the room's epoch and last number follow it (a new
    /// `epoch`: the room started over in Redis). Nothing if the room has no member here.
    fn deliver_numbered(&self, room: &str, msg: Message, epoch: &str, sender: Option<u64>);

    /// The other nodes' members of `room`, as read from Redis: names that appeared or went are
    /// presence changes like local joins and leaves.
    fn set_remote(&self, room: &str, count: usize, names: Vec<Arc<str>>);

    /// Forgets every other node's members (Redis is unreachable: their counts cannot be kept).
    fn clear_remote(&self);

    /// The room's history as kept in Redis (oldest first), read just after this node subscribed
    /// to the room, with a numbered room's epoch and last number as Redis has them; `false` when
    /// it was not seeded (the room is gone or already live).
    fn seed_history(
        &self,
        room: &str,
        messages: Vec<Message>,
        numbering: Option<(&str, u64)>,
    ) -> bool;

    /// Closes the connections of `room`'s members on this node whose name has uniqueness key
    /// `key` (another node's backend API asked); how many were closed.
    fn kick_key(&self, room: &str, key: &str) -> usize;
}

/// The per-room settings the cluster acts on (the global ones with a matching `[[rooms]]`
/// entry's overrides).
pub trait RoomRules: Send + Sync {
    /// How many messages `room` keeps in its history (0: none, its stream is not read).
    fn history(&self, room: &str) -> usize;

    /// Whether `room` numbers its messages (history and the JSON envelope): Redis keeps its
    /// counter and epoch.
    fn numbered(&self, room: &str) -> bool;

    /// Whether names are unique in `room` (claimed cluster-wide).
    fn unique_names(&self, room: &str) -> bool;
}
