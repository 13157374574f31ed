//! Cluster-wide history: a room's messages kept in a capped Redis stream, appended by the same
//! script that publishes them (so the stream id stamped on the live message is the entry's id),
//! and read back by a node that opens the room, after it has subscribed.

use std::sync::Arc;

use redis::RedisResult;
use redis::aio::ConnectionManager;

use super::Shared;
use super::wire::{self, Payload};
use crate::hub::Hub;

/// Appends a message to the room's stream and publishes it stamped with its id (`H`).
pub(super) const PUBLISH_KEPT: &str = r"
local id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', ARGV[2])
redis.call('PUBLISH', KEYS[2], string.char(1) .. 'H' .. string.char(#id) .. id .. ARGV[2])
return id";

/// One stream entry as XREVRANGE gives it: id, then field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Reads the room's last `relay.history` messages from its stream into the room; returns the
/// newest id read ((0, 0) if none).
pub(super) async fn replay_history(
    s: &Shared,
    hub: &Hub,
    conn: &mut ConnectionManager,
    room: &Arc<str>,
) -> RedisResult<wire::StreamId> {
    let keep = hub.settings().history;
    if keep == 0 {
        return Ok((0, 0));
    }
    let entries: Vec<StreamEntry> = redis::cmd("XREVRANGE")
        .arg(s.keys.history(room))
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(keep)
        .query_async(conn)
        .await?;
    let last = entries
        .first()
        .and_then(|(id, _)| wire::parse_stream_id(id))
        .unwrap_or((0, 0));
    let messages = entries
        .into_iter()
        .rev()
        .filter_map(|(_, fields)| {
            let (_, raw) = fields.into_iter().find(|(f, _)| f == "m")?;
            match wire::decode(bytes::Bytes::from(raw)).ok()? {
                (_, Payload::Message(m)) => Some(m),
                _ => None,
            }
        })
        .collect();
    // Not seeded (the room went live first): nothing of the stream was delivered, so no live
    // message may be dropped as already replayed.
    Ok(if hub.seed_history(room, messages) {
        last
    } else {
        (0, 0)
    })
}
