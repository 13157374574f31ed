//! This node's side of cluster presence: its liveness key, the sweep of dead instances, the
//! connection totals, and name claims. The scripts run atomically in Redis, so two nodes sweeping
//! the same dead instance, or two members claiming one name, cannot interleave.

use std::sync::atomic::Ordering;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, RedisResult};
use tracing::info;

use super::Shared;
use super::wire::{self, Payload};
use crate::hub::Hub;
use crate::request::name_key;

/// Sets a name if free; records it under the instance for the sweep. 1 = won.
pub(super) const CLAIM: &str = r"
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('SADD', KEYS[2], ARGV[3])
  redis.call('SADD', KEYS[3], ARGV[2])
  return 1
end
return 0";

/// Frees a name if this instance holds it.
pub(super) const RELEASE: &str = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('SREM', KEYS[2], ARGV[3])
return 1";

/// Removes every trace of instance ARGV[2] under prefix ARGV[1]; returns its rooms.
const SWEEP: &str = r"
local p, d = ARGV[1], ARGV[2]
local rooms = redis.call('SMEMBERS', p .. ':node:' .. d .. ':rooms')
for _, r in ipairs(rooms) do
  redis.call('HDEL', p .. ':presence:' .. r, d)
end
local names = redis.call('SMEMBERS', p .. ':node:' .. d .. ':names')
for _, e in ipairs(names) do
  local i = string.find(e, '\n', 1, true)
  if i then
    local h = p .. ':names:' .. string.sub(e, 1, i - 1)
    local k = string.sub(e, i + 1)
    if redis.call('HGET', h, k) == d then
      redis.call('HDEL', h, k)
    end
  end
end
redis.call('HDEL', p .. ':total', d)
redis.call('DEL', p .. ':node:' .. d .. ':rooms', p .. ':node:' .. d .. ':names', p .. ':node:' .. d .. ':alive')
redis.call('SREM', p .. ':nodes', d)
return rooms";

/// The other instances' connections, from the total hash.
pub(super) async fn read_total(s: &Shared, conn: &mut ConnectionManager) -> RedisResult<()> {
    let totals: Vec<(String, String)> = conn.hgetall(s.keys.total()).await?;
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
pub(super) async fn heartbeat(s: &Shared, conn: &mut ConnectionManager) -> RedisResult<bool> {
    let ttl = u64::try_from(s.node_timeout.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
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
pub(super) async fn sweep(
    s: &Shared,
    conn: &mut ConnectionManager,
    instance: &str,
) -> RedisResult<()> {
    let rooms: Vec<String> = redis::cmd("EVAL")
        .arg(SWEEP)
        .arg(0)
        .arg(s.keys.prefix())
        .arg(instance)
        .query_async(conn)
        .await?;
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

/// Claims a name for this instance (see [`CLAIM`]).
pub(crate) async fn claim(
    s: &Shared,
    mut conn: ConnectionManager,
    room: &str,
    key: &str,
) -> RedisResult<bool> {
    let won: i64 = redis::cmd("EVAL")
        .arg(CLAIM)
        .arg(3)
        .arg(s.keys.names(room))
        .arg(s.keys.node_names(&s.instance))
        .arg(s.keys.nodes())
        .arg(key)
        .arg(&s.instance)
        .arg(format!("{room}\n{key}"))
        .query_async(&mut conn)
        .await?;
    Ok(won == 1)
}

/// After a reconnect (Redis may have restarted empty): claims again the names local members hold.
pub(super) async fn reclaim_names(
    s: &Shared,
    hub: &Hub,
    conn: &mut ConnectionManager,
) -> RedisResult<()> {
    if !hub.settings().unique_names {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    let mut any = false;
    for room in hub.room_names() {
        let Some((_, names)) = hub.local_presence(&room) else {
            continue;
        };
        for name in names {
            let key = name_key(&name);
            pipe.cmd("EVAL")
                .arg(CLAIM)
                .arg(3)
                .arg(s.keys.names(&room))
                .arg(s.keys.node_names(&s.instance))
                .arg(s.keys.nodes())
                .arg(&key)
                .arg(&s.instance)
                .arg(format!("{room}\n{key}"))
                .ignore();
            any = true;
        }
    }
    if any {
        pipe.query_async::<()>(conn).await?;
    }
    Ok(())
}
