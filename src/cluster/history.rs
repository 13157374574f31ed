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
/// the rooms; returns per room the newest id seeded ((0, 0) if none, or not seeded). A numbered
/// room's epoch and last number are read in the same pipeline, before its stream (so the stream
/// holds every message numbered up to what was read), its epoch set first if it has none: the
/// room's numbering on this node mirrors Redis from its seed on.
pub(super) async fn replay_history<C: redis::aio::ConnectionLike + Send>(
    s: &Shared,
    rooms: &dyn Rooms,
    conn: &mut C,
    opened: &[Arc<str>],
) -> RedisResult<Vec<wire::StreamId>> {
    // Each room's own `relay.history` (a `[[rooms]]` entry may set it); rooms without history
    // are not read.
    let rules = rooms.rules();
    let reads: Vec<(usize, bool)> = opened
        .iter()
        .map(|r| (rules.history(r), rules.numbered(r)))
        .collect();
    let mut pipe = redis::pipe();
    for (room, &(keep, numbered)) in opened.iter().zip(&reads) {
        if keep == 0 {
            continue;
        }
        if numbered {
            let seq = s.keys.seq(room);
            pipe.cmd("HSETNX")
                .arg(&seq)
                .arg("e")
                .arg(s.candidate_epoch())
                .ignore();
            pipe.cmd("HMGET").arg(&seq).arg("e").arg("n");
        }
        pipe.cmd("XREVRANGE")
            .arg(s.keys.history(room))
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(keep);
    }
    let mut replies: std::vec::IntoIter<redis::Value> = if pipe.is_empty() {
        Vec::new().into_iter()
    } else {
        pipe.query_async::<Vec<redis::Value>>(conn)
            .await?
            .into_iter()
    };
    let mut next = || -> RedisResult<redis::Value> {
        let short = (redis::ErrorKind::Client, "short pipeline reply");
        replies.next().ok_or_else(|| short.into())
    };
    let mut lasts = Vec::with_capacity(opened.len());
    for (room, (keep, numbered)) in opened.iter().zip(reads) {
        if keep == 0 {
            lasts.push((0, 0));
            continue;
        }
        let numbering = match numbered {
            true => {
                let (epoch, n): (Option<String>, Option<u64>) = redis::from_redis_value(next()?)?;
                epoch.map(|e| (e, n.unwrap_or(0)))
            }
            false => None,
        };
        let entries: Vec<StreamEntry> = redis::from_redis_value(next()?)?;
        lasts.push(seed(rooms, room, entries, numbering));
    }
    Ok(lasts)
}

/// Seeds one room with its stream's entries (newest first) and, when numbered, its epoch and last
/// number; the newest id, or (0, 0).
fn seed(
    rooms: &dyn Rooms,
    room: &Arc<str>,
    entries: Vec<StreamEntry>,
    numbering: Option<(String, u64)>,
) -> wire::StreamId {
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
    let numbering = numbering.as_ref().map(|(e, n)| (e.as_str(), *n));
    if rooms.seed_history(room, messages, numbering) {
        last
    } else {
        (0, 0)
    }
}
