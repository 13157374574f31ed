//! This node's side of cluster presence: its liveness key, the sweep of dead instances, the
//! connection totals, and name claims. The scripts run atomically in Redis, so two nodes sweeping
//! the same dead instance, or two members claiming one name, cannot interleave.
//!
//! Commands and their replies only: this file must not spawn, loop or hold state between calls.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use redis::RedisResult;
use redis::aio::ConnectionLike;
use tracing::info;

use super::scripts::{self, Call, Op};
use super::wire::{self, Payload};
use super::{Rooms, Shared};
use crate::proto::names::name_key;

/// The other instances' connections, from the total hash.
pub(super) async fn read_total<C: ConnectionLike + Send>(
    s: &Shared,
    conn: &mut C,
) -> RedisResult<()> {
    let totals: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(s.keys.total())
        .query_async(conn)
        .await?;
    store_remote_total(s, &totals);
    Ok(())
}

/// Stores the sum of the other instances' connections from the total hash's fields; a value that
/// is not a number (not written by wsline) counts as nothing rather than failing the heartbeat.
pub(super) fn store_remote_total(s: &Shared, totals: &[(String, String)]) {
    let remote = totals
        .iter()
        .filter(|(i, _)| *i != s.instance)
        .filter_map(|(_, n)| n.parse::<usize>().ok())
        .sum();
    s.remote_total.store(remote, Ordering::Relaxed);
}

/// Refreshes this instance's liveness key and sweeps instances whose key has expired.
///
/// Returns whether this instance's key had expired (it was late, e.g. stalled longer than
/// `node_timeout`, and may have been swept): the caller then writes all its entries again.
pub(super) async fn heartbeat<C: ConnectionLike + Send>(
    s: &Shared,
    conn: &mut C,
) -> RedisResult<bool> {
    let ttl = ttl_ms(s.node_timeout);
    let (was_alive, _, _, nodes): (bool, (), (), Vec<String>) = redis::pipe()
        .exists(s.keys.alive(&s.instance))
        .cmd("SET")
        .arg(s.keys.alive(&s.instance))
        .arg(&s.node_id)
        .arg("PX")
        .arg(ttl)
        .sadd(s.keys.nodes(), &s.instance)
        .smembers(s.keys.nodes())
        .query_async(conn)
        .await?;
    let others: Vec<&String> = nodes.iter().filter(|n| **n != s.instance).collect();
    if !others.is_empty() {
        let mut pipe = redis::pipe();
        for n in &others {
            pipe.exists(s.keys.alive(n));
        }
        let alive: Vec<bool> = pipe.query_async(conn).await?;
        for (n, alive) in others.iter().zip(alive) {
            if !alive {
                info!(instance = %n, "cluster node timed out; removing its members from every count");
                sweep(s, conn, n).await?;
            }
        }
    }
    read_total(s, conn).await?;
    Ok(!was_alive)
}

/// Removes an instance's entries, names and count, and tells its rooms.
pub(super) async fn sweep<C: ConnectionLike + Send>(
    s: &Shared,
    conn: &mut C,
    instance: &str,
) -> RedisResult<()> {
    let ttl = ttl_ms(s.history_ttl);
    let swept = Call::new(
        &scripts::SWEEP,
        Vec::<String>::new(),
        (s.keys.prefix(), instance, ttl),
    )
    .run(conn)
    .await?;
    let rooms: Vec<String> = redis::from_redis_value(swept)?;
    if !rooms.is_empty() {
        let notice = wire::encode(instance, &Payload::Presence);
        let mut pipe = redis::pipe();
        for room in &rooms {
            pipe.publish(s.keys.channel(room), &notice[..]).ignore();
        }
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}

/// Milliseconds for `PEXPIRE`/`PX` (at least 1).
pub(super) fn ttl_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

fn claim_call(s: &Shared, room: &str, key: &str) -> Call {
    Call::new(
        &scripts::CLAIM,
        (
            s.keys.names(room),
            s.keys.node_names(&s.instance),
            s.keys.nodes(),
        ),
        (key, &s.instance, format!("{room}\n{key}")),
    )
}

/// Claims a name for this instance (see [`scripts::CLAIM`]).
pub(crate) async fn claim<C: ConnectionLike + Send>(
    s: &Shared,
    mut conn: C,
    room: &str,
    key: &str,
) -> RedisResult<bool> {
    let won: i64 = redis::from_redis_value(claim_call(s, room, key).run(&mut conn).await?)?;
    Ok(won == 1)
}

/// A hash as HGETALL gives it.
type Fields = Vec<(String, String)>;

/// The other instances' members of `room` (count, sorted names), read once, with the totals
/// (stored), so a presence state made from them carries a `total` as fresh as its `count`.
pub(crate) async fn read_room<C: ConnectionLike + Send>(
    s: &Shared,
    mut conn: C,
    room: &str,
) -> RedisResult<(usize, Vec<Arc<str>>)> {
    let (entries, totals): (Fields, Fields) = redis::pipe()
        .hgetall(s.keys.presence(room))
        .hgetall(s.keys.total())
        .query_async(&mut conn)
        .await?;
    store_remote_total(s, &totals);
    Ok(wire::remote(
        &s.instance,
        entries.iter().map(|(k, v)| (k.as_str(), v.as_str())),
    ))
}

/// A page of the cluster's rooms: up to `limit` rooms named after `after` (byte order) from the
/// index of rooms, each with its members on every node, and whether more follow. Two round trips
/// whatever the number of rooms: one `ZRANGE` of `limit + 1` names, one pipeline of `limit`
/// `HVALS`. A room whose hash is empty (its last entry went between the two) is left out, so a
/// page may hold fewer than `limit` rooms; the last name read is returned to page on from.
pub(crate) async fn read_rooms<C: ConnectionLike + Send>(
    s: &Shared,
    mut conn: C,
    after: Option<&str>,
    limit: usize,
) -> RedisResult<RoomPage> {
    let mut names: Vec<String> = redis::cmd("ZRANGE")
        .arg(s.keys.rooms())
        .arg(wire::lex_after(after))
        .arg("+")
        .arg("BYLEX")
        .arg("LIMIT")
        .arg(0)
        .arg(limit.saturating_add(1))
        .query_async(&mut conn)
        .await?;
    let more = names.len() > limit;
    names.truncate(limit);
    let mut pipe = redis::pipe();
    for room in &names {
        pipe.cmd("HVALS").arg(s.keys.presence(room));
    }
    let entries: Vec<Vec<String>> = if names.is_empty() {
        Vec::new()
    } else {
        pipe.query_async(&mut conn).await?
    };
    let last = names.last().cloned();
    let rooms = names
        .into_iter()
        .zip(entries)
        .filter(|(_, entries)| !entries.is_empty())
        .map(|(room, entries)| (room, wire::members(&entries)))
        .collect();
    Ok(RoomPage { rooms, last, more })
}

/// A page of the cluster's rooms ([`Cluster::rooms_after`](super::Cluster::rooms_after)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomPage {
    /// Rooms and their members on every node, sorted by name.
    pub rooms: Vec<(String, usize)>,
    /// The last room name the page read (listed or not): the next page starts after it.
    pub last: Option<String>,
    /// Whether rooms follow `last`.
    pub more: bool,
}

/// After a reconnect (Redis may have restarted empty): claims again the names local members hold.
pub(super) async fn reclaim_names<C: ConnectionLike + Send>(
    s: &Shared,
    rooms: &dyn Rooms,
    conn: &mut C,
) -> RedisResult<()> {
    let rules = rooms.rules();
    let mut ops = Vec::new();
    for room in rooms.room_names() {
        if !rules.unique_names(&room) {
            continue;
        }
        let Some((_, names)) = rooms.local_presence(&room) else {
            continue;
        };
        for name in names {
            ops.push(Op::Call(claim_call(s, &room, &name_key(&name))));
        }
    }
    scripts::run_all(conn, ops).await.map(drop)
}
