//! Cluster-wide history: a room's messages kept in a capped Redis stream, appended by the same
//! script that publishes them (so the stream id stamped on the live message is the entry's id),
//! and read back by a node that opens the room, after it has subscribed: the rooms a sync opens are
//! read in one pipeline (`replay_history`), not one round trip each.
//!
//! A stream outlives its room by `cluster.history_ttl`: the last node to leave a room (or the
//! sweep of a dead one) sets the stream to expire, a node opening the room clears that, and a
//! message kept in a room no node has members in (the API) sets it too.
//!
//! This file must not deliver to members itself: it seeds rooms through [`super::Rooms`].

use std::sync::Arc;

use redis::RedisResult;

use super::wire::{self, Payload};
use super::{Rooms, Shared};

/// One stream entry as XREVRANGE gives it: id, then field/value pairs.
type StreamEntry = (String, Vec<(String, Vec<u8>)>);

/// Reads the last `relay.history` messages of each room from its stream, in one pipeline, into
/// the rooms; returns per room the newest id seeded ((0, 0) if none, or not seeded).
pub(super) async fn replay_history<C: redis::aio::ConnectionLike + Send>(
    s: &Shared,
    rooms: &dyn Rooms,
    conn: &mut C,
    opened: &[Arc<str>],
) -> RedisResult<Vec<wire::StreamId>> {
    // Each room's own `relay.history` (a `[[rooms]]` entry may set it); rooms without history
    // are not read.
    let rules = rooms.rules();
    let keeps: Vec<usize> = opened.iter().map(|r| rules.history(r)).collect();
    let mut pipe = redis::pipe();
    for (room, &keep) in opened.iter().zip(&keeps) {
        if keep > 0 {
            pipe.cmd("XREVRANGE")
                .arg(s.keys.history(room))
                .arg("+")
                .arg("-")
                .arg("COUNT")
                .arg(keep);
        }
    }
    let mut streams: std::vec::IntoIter<Vec<StreamEntry>> = if pipe.is_empty() {
        Vec::new().into_iter()
    } else {
        pipe.query_async::<Vec<Vec<StreamEntry>>>(conn)
            .await?
            .into_iter()
    };
    Ok(opened
        .iter()
        .zip(keeps)
        .map(|(room, keep)| match keep {
            0 => (0, 0),
            _ => seed(rooms, room, streams.next().unwrap_or_default()),
        })
        .collect())
}

/// Seeds one room with its stream's entries (newest first); the newest id, or (0, 0).
fn seed(rooms: &dyn Rooms, room: &Arc<str>, entries: Vec<StreamEntry>) -> wire::StreamId {
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
    if rooms.seed_history(room, messages) {
        last
    } else {
        (0, 0)
    }
}
