//! Names this node gives back, so none is left claimed cluster-wide after its member left.
//!
//! A release never goes through the bounded publish queue: it waits in [`Releases`] (a set, so a
//! name given back twice is one entry) until the worker has run it in Redis, whatever happened to
//! the connection meanwhile. A claim for a name in the set takes it back out (this instance
//! still holds it in Redis, and the claim script accepts its own holds); a claim for a name whose
//! release is on its way to Redis waits for it to land. A name a member of this node holds is
//! never released (two local members may race for one name: the loser's release must not free
//! the winner's name).
//!
//! After every reconnect (and when the set overflowed, and after a reload, which may turn
//! `presence.unique_names` off for some rooms or all), the worker reconciles: every claim this
//! instance has in Redis for a name no member here holds (or in a room without `unique_names`)
//! goes into the set, and the names members hold in rooms with `unique_names` are claimed again.
//!
//! Bound: [`PENDING_RELEASES`] entries; past it the set is emptied and a reconciliation (which
//! reads the claims from Redis) takes its place, so memory stays bounded while Redis is down.
//!
//! This file must not drop a release, and must not touch the publish queue.

use std::collections::HashSet;
use std::sync::Arc;

use redis::RedisResult;
use redis::aio::ConnectionLike;

use super::scripts::{self, Call, Op};
use super::{Rooms, Shared};
use crate::proto::names::name_key;

/// Pending releases kept at most (about 100 bytes each).
pub const PENDING_RELEASES: usize = 65_536;
/// Releases sent in one pipeline.
const RELEASE_BATCH: usize = 1024;

type Pair = (Arc<str>, Box<str>);

/// The releases not yet done in Redis.
#[derive(Default)]
pub struct Releases {
    pending: HashSet<Pair>,
    /// Sent to Redis, answer not yet back: claims for these names wait.
    releasing: HashSet<Pair>,
    /// The set overflowed: a reconciliation is due.
    pub(super) overflowed: bool,
}

impl Releases {
    pub(super) fn is_idle(&self) -> bool {
        self.pending.is_empty() && !self.overflowed
    }
}

/// Adds a release to the set and wakes the worker.
pub(super) fn give_back(s: &Shared, room: &Arc<str>, key: &str) {
    {
        let mut r = s.releases.lock();
        if r.pending.len() >= PENDING_RELEASES {
            r.pending.clear();
            r.overflowed = true;
        } else {
            r.pending.insert((room.clone(), key.into()));
        }
    }
    s.wake.notify_one();
}

/// Waits until no release of `key` is on its way to Redis, then takes a pending one back out.
pub(super) async fn settled(s: &Shared, room: &Arc<str>, key: &str) {
    let pair: Pair = (room.clone(), key.into());
    loop {
        let notified = s.released.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut r = s.releases.lock();
            if !r.releasing.contains(&pair) {
                r.pending.remove(&pair);
                return;
            }
        }
        notified.await;
    }
}

/// A claim in flight: dropped before [`InFlight::settle`] (its caller went away), it gives the
/// name back, since the claim may have reached Redis.
pub(super) struct InFlight<'a> {
    s: &'a Shared,
    room: Arc<str>,
    key: Box<str>,
    armed: bool,
}

impl<'a> InFlight<'a> {
    pub(super) fn new(s: &'a Shared, room: &Arc<str>, key: &str) -> InFlight<'a> {
        InFlight {
            s,
            room: room.clone(),
            key: key.into(),
            armed: true,
        }
    }

    /// The claim ended; `give_back` when its outcome is unknown.
    pub(super) fn settle(mut self, give_back_name: bool) {
        self.armed = give_back_name;
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if self.armed {
            give_back(self.s, &self.room, &self.key);
        }
    }
}

/// Whether a member of this node holds `key` in `room`.
fn held_here(rooms: &dyn Rooms, room: &str, key: &str) -> bool {
    rooms
        .local_presence(room)
        .is_some_and(|(_, names)| names.iter().any(|n| name_key(n) == key))
}

/// Runs the pending releases in Redis, in pipelines of [`RELEASE_BATCH`]; on a failure the
/// unfinished ones go back to the set (for the next turn).
pub(super) async fn release_pending<C: ConnectionLike + Send>(
    s: &Shared,
    rooms: &dyn Rooms,
    conn: &mut C,
) -> RedisResult<()> {
    loop {
        let batch: Vec<Pair> = {
            let mut r = s.releases.lock();
            let batch: Vec<Pair> = r.pending.iter().take(RELEASE_BATCH).cloned().collect();
            for pair in &batch {
                r.pending.remove(pair);
                r.releasing.insert(pair.clone());
            }
            batch
        };
        if batch.is_empty() {
            return Ok(());
        }
        let rules = rooms.rules();
        let ops: Vec<Op> = batch
            .iter()
            .filter(|(room, key)| !(rules.unique_names(room) && held_here(rooms, room, key)))
            .map(|(room, key)| {
                Op::Call(Call::new(
                    &scripts::RELEASE,
                    (s.keys.names(room), s.keys.node_names(&s.instance)),
                    (&**key, &s.instance, format!("{room}\n{key}")),
                ))
            })
            .collect();
        let done = scripts::run_all(conn, ops).await;
        {
            let mut r = s.releases.lock();
            for pair in batch {
                r.releasing.remove(&pair);
                if done.is_err() {
                    r.pending.insert(pair);
                }
            }
        }
        s.released.notify_waiters();
        done?;
    }
}

/// After a reconnect (or an overflow, or a reload): every claim of this instance
/// in Redis goes to the pending releases (those a member here holds are skipped when they are
/// run), then the names members hold are claimed again (Redis may have restarted empty).
pub(super) async fn reconcile<C: ConnectionLike + Send>(
    s: &Shared,
    rooms: &dyn Rooms,
    conn: &mut C,
) -> RedisResult<()> {
    s.releases.lock().overflowed = false;
    let claims: Vec<String> = redis::cmd("SMEMBERS")
        .arg(s.keys.node_names(&s.instance))
        .query_async(conn)
        .await?;
    for entry in claims {
        if let Some((room, key)) = entry.split_once('\n') {
            give_back(s, &Arc::from(room), key);
        }
    }
    super::presence::reclaim_names(s, rooms, conn).await
}
