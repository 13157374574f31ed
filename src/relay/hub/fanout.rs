//! Fan-out: one message into every member's outbox, in ONE loop ([`Hub::fan_out`]) that a
//! member's message, a backend API message and a message from another node all go through.
//!
//! Under the room lock a message is numbered (when the room numbers its messages), pushed as a
//! refcounted clone into each member's bounded [`Outbox`](crate::relay::outbox::Outbox), handed
//! to the cluster (so the other nodes see the room's messages in the local order) and kept in the
//! room's history. Nothing here waits or takes another room's lock.
//!
//! A member whose writer is idle is not only queued to but *claimed* ([`Outbox::offer`]): once the
//! room lock is let go, the sender's thread writes that member's queue to its socket itself
//! ([`Cork::write`]), so a delivery costs no wake-up of the receiver's task. A sender that has
//! more messages already read keeps its claims in its [`Cork`] until it has none (or
//! [`Cork::FULL`]), so each receiver gets them as one record; and a sender whose last write held
//! several messages is streaming, and claims no one until its messages come one at a time again:
//! its receivers' writers batch a stream as well and cheaper (measured: `docs/performance.md`).
//! On a runtime of one thread the sender claims every idle member; on more, its share (members /
//! threads), and the other members' own tasks write in parallel on the other threads.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::proto::message::Message;
use crate::relay::outbox::{Claim, Offer};

use super::Hub;
use super::registry::Membership;
use super::room::{Room, RoomState};

/// One message on its way into a room, prepared before the room lock is taken.
pub(super) struct Delivery {
    pub(super) msg: Message,
    /// The member who sent it and does not hear it (no echo); `None`: every member.
    pub(super) skip: Option<u64>,
    /// The room's history bounds in force (`history`, `history_bytes`).
    pub(super) bounds: (usize, usize),
    /// The room numbers its messages (history and the JSON envelope); on a single node the
    /// fan-out numbers it, in a cluster Redis did.
    pub(super) numbered: bool,
    /// The envelope for the other nodes and how many messages the room's stream keeps with it;
    /// `None`: not for the other nodes (a single node, Redis down, or it came from them).
    pub(super) publish: Option<(Bytes, usize)>,
}

impl Hub {
    /// The one fan-out, under `room`'s lock: numbers the message, queues it to every member but
    /// `skip`, marks the room live, publishes it to the other nodes and keeps it in history.
    /// Returns how many members it was queued to (what `messages_queued` counts).
    pub(super) fn fan_out(&self, room: &Room, delivery: Delivery) -> u64 {
        let mut cork = Cork::default();
        let queued = self.fan_out_locked(room, &mut room.lock(), delivery, &mut cork);
        cork.write();
        queued
    }

    /// [`Hub::fan_out`] with `room`'s lock already held (`state`); the members claimed go into
    /// `cork`, which the caller writes once it has let go of the lock.
    pub(super) fn fan_out_locked(
        &self,
        room: &Room,
        state: &mut RoomState,
        delivery: Delivery,
        cork: &mut Cork,
    ) -> u64 {
        let Delivery {
            msg,
            skip,
            bounds: (history, history_bytes),
            numbered,
            publish,
        } = delivery;
        let msg = self.number(numbered, state, msg);
        let (mut queued, mut claimed) = (0u64, 0);
        let budget = match cork.streaming {
            true => 0,
            false => direct_budget(state.members.len()),
        };
        for m in &state.members {
            if skip == Some(m.id) {
                continue;
            }
            match m.outbox.offer(&msg, claimed < budget) {
                Offer::Queued => queued += 1,
                Offer::Claimed(claim) => {
                    queued += 1;
                    claimed += 1;
                    cork.claims.push(claim);
                }
                Offer::Refused => {}
            }
        }
        cork.messages += 1;
        state.live = true;
        // Under the room lock, so the other nodes see this room's messages in the local order.
        if let (Some(cluster), Some((data, kept))) = (&self.shared.cluster, publish) {
            cluster.publish(&room.name, data, kept);
        }
        if history > 0 || !state.history.is_empty() {
            state.history.push(msg, history, history_bytes);
        }
        let stats = &self.shared.stats;
        stats.messages_queued.fetch_add(queued, Ordering::Relaxed);
        queued
    }

    /// `msg` in the envelope the other nodes read, when there are any and Redis is up, with how
    /// many messages the room's stream keeps along with it: none when `msg` is too large for the
    /// history, where it would take one of the `history` places from the messages before it.
    fn encode(
        &self,
        msg: &Message,
        (history, history_bytes): (usize, usize),
    ) -> Option<(Bytes, usize)> {
        let data = self.shared.cluster.as_ref()?.encode(msg)?;
        let fits = crate::relay::history::fits(msg, history_bytes);
        Some((data, if fits { history } else { 0 }))
    }

    /// `msg` numbered for recovery when `room` numbers its messages on a single node, else
    /// unchanged (a cluster's numbered room is numbered by Redis: [`Hub::send_numbered`]). Under
    /// the room lock.
    fn number(&self, numbered: bool, state: &mut RoomState, msg: Message) -> Message {
        if self.shared.cluster.is_some() || !numbered {
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

    /// Whether `room` numbers its messages, and its history bounds, from one look at the settings
    /// in force (a sender's path reads them once).
    fn rules_for(&self, room: &str) -> (bool, (usize, usize)) {
        let settings = self.shared.settings.load();
        (settings.numbered(room), settings.history_for(room))
    }

    /// In a cluster, a message of a numbered room goes to Redis, which numbers it, and every node
    /// (this one too) delivers it as it comes back ([`crate::cluster::Rooms::deliver_numbered`]),
    /// to every member but `skip`: one order, one number for everyone, for one Redis round trip
    /// of latency. `Err((msg, false))` when the message takes the ordinary path: a single node or
    /// a room that is not numbered. `Err((msg, true))` when Redis is down or the publish queue
    /// full: counted, and then delivered to this node's members only, unnumbered (no `since`
    /// recovers it).
    fn send_numbered(
        &self,
        room: &Arc<str>,
        msg: Message,
        (numbered, bounds): (bool, (usize, usize)),
        skip: Option<u64>,
    ) -> Result<(), (Message, bool)> {
        let Some(cluster) = &self.shared.cluster else {
            return Err((msg, false));
        };
        if !numbered || !matches!(msg, Message::Text(_)) {
            return Err((msg, false));
        }
        let sent = self
            .encode(&msg, bounds)
            .is_some_and(|(data, kept)| cluster.publish_numbered(room, data, kept, skip));
        if !sent {
            cluster.unnumbered();
            return Err((msg, true));
        }
        Ok(())
    }

    /// A message from the backend API into `room`: to every local member, into the room's
    /// history and to the other nodes, under the room lock like a member's message (so members see
    /// it in order with the others' messages). A room with no member here is still published to
    /// the other nodes. Returns how many local members it was queued to.
    pub fn publish_api(&self, room: &str, msg: Message) -> usize {
        let (numbered, bounds) = self.rules_for(room);
        let (msg, publish) =
            match self.send_numbered(&Arc::from(room), msg, (numbered, bounds), None) {
                // Numbered by Redis, then delivered to the members here as it comes back.
                Ok(()) => return self.find(room).map_or(0, |r| r.lock().members.len()),
                Err((msg, true)) => (msg, None),
                Err((msg, false)) => {
                    let publish = self.encode(&msg, bounds);
                    (msg, publish)
                }
            };
        let Some(local) = self.find(room) else {
            if let (Some(cluster), Some((data, kept))) = (&self.shared.cluster, publish) {
                cluster.publish(&Arc::from(room), data, kept);
            }
            return 0;
        };
        let delivery = Delivery {
            msg,
            skip: None,
            bounds,
            numbered,
            publish,
        };
        self.fan_out(&local, delivery) as usize
    }
}

/// Members claimed for direct writes, to be written once the room lock is let go: by the fan-out
/// itself, or by a sender that has more messages already read (see the module doc).
#[derive(Default)]
#[must_use = "claimed members take nothing from their queue until the cork is written"]
pub struct Cork {
    claims: Vec<Claim>,
    /// Messages fanned out since the last write.
    messages: usize,
    /// The sender's last write held several messages: it is streaming, and its receivers'
    /// writers batch its messages at least as well, so it claims no one until a write holds one
    /// message again.
    streaming: bool,
}

impl Cork {
    /// Messages a sender may fan out before it writes its cork, however many more it has read:
    /// as many as a writer gathers into one write (32 frames).
    pub const FULL: usize = 32;

    /// Whether the sender should write the cork now even with more messages to read.
    pub fn full(&self) -> bool {
        self.messages >= Self::FULL
    }

    /// Writes each claimed member's queue to its socket (what a socket does not take goes to
    /// that member's writer).
    pub fn write(&mut self) {
        self.streaming = self.messages > 1;
        self.messages = 0;
        for claim in self.claims.drain(..) {
            claim.write();
        }
        // A fan-out to a large room leaves a large buffer: an idle sender should not keep it.
        if self.claims.capacity() > 64 {
            self.claims = Vec::new();
        }
    }
}

/// How many of a room's `members` one message's sender may claim: all on a runtime of
/// one thread (where a wake-up would only queue the same work behind the sender), else its share
/// of the threads, so a large room's fan-out still spreads over every core.
fn direct_budget(members: usize) -> usize {
    static WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let workers = *WORKERS.get_or_init(|| {
        tokio::runtime::Handle::try_current().map_or(1, |h| h.metrics().num_workers())
    });
    members.div_ceil(workers.max(1))
}

impl Membership {
    /// Relays `msg` to every member of the room (the sender too when `echo`), in one pass under
    /// the room lock, so every receiver sees one sender's messages in the order they were sent.
    /// The room's history keeps it within the bounds in force (the hub's settings). Members
    /// claimed for a direct write go into `cork`, which the caller writes before it waits for
    /// anything (see the module doc).
    pub fn publish(&self, msg: Message, echo: bool, cork: &mut Cork) {
        let (numbered, bounds) = self.hub.rules_for(&self.room.name);
        let skip = (!echo).then_some(self.id);
        let rules = (numbered, bounds);
        let (msg, publish) = match self.hub.send_numbered(&self.room.name, msg, rules, skip) {
            Ok(()) => return,
            Err((msg, true)) => (msg, None),
            Err((msg, false)) => {
                let publish = self.hub.encode(&msg, bounds);
                (msg, publish)
            }
        };
        let delivery = Delivery {
            msg,
            skip,
            bounds,
            numbered,
            publish,
        };
        let mut state = self.room.lock();
        self.hub
            .fan_out_locked(&self.room, &mut state, delivery, cork);
    }
}
