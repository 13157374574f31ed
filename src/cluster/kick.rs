//! The backend API's kick across the nodes, and an honest count of what it closed.
//!
//! The asking node publishes the kick itself (a `k` envelope with a reply id, see [`wire`]) on the
//! room's channel, so `PUBLISH`'s reply says how many subscriber connections heard it: one per
//! node with members in the room, this node's own among them when it has some. Each of them
//! closes its members of that name and counts its answer in the kick's reply hash
//! ([`Keys::kick`], by `scripts::KICK_REPLY` through its publisher queue): `nodes` and `closed`
//! up, or only `own` for the asking node hearing its own kick (it counted its closes before
//! asking). The asking node reads the hash until every subscriber that heard the kick answered or
//! [`KICK_WAIT`] passed, then answers with what it has, saying how many nodes did not answer in
//! time (their closes still happen; only the count misses them).
//!
//! Each answer sets the hash to expire `REPLY_TTL` (10 s) later, so a late answer leaves nothing
//! behind. The reads back off from `POLL_FIRST` to `POLL_CAP`: at most a few dozen small
//! reads per kick, and kicks are bounded by `api.requests_per_second`.

use std::sync::atomic::Ordering;
use std::time::Duration;

use redis::RedisResult;
use redis::aio::ConnectionLike;
use tokio::time::Instant;

use super::Shared;
use super::presence::ttl_ms;
use super::scripts::{self, Call};
use super::wire::{self, Keys, Payload};

/// How long the asking node waits for the other nodes' answers, at most.
pub const KICK_WAIT: Duration = Duration::from_secs(1);
/// A reply hash expires this long after its last answer.
const REPLY_TTL: Duration = Duration::from_secs(10);
/// The first wait between two reads of the reply hash, doubled up to `POLL_CAP`.
const POLL_FIRST: Duration = Duration::from_millis(2);
const POLL_CAP: Duration = Duration::from_millis(50);

/// What a kick did on the other nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kicked {
    /// Connections the other nodes that answered closed.
    pub closed: usize,
    /// Other nodes the kick reached: those with members in the room (subscribed to its channel).
    pub nodes: usize,
    /// Of those, how many did not answer within [`KICK_WAIT`]: their closes are not in `closed`.
    pub unanswered: usize,
}

/// The answers counted in a reply hash so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Answers {
    /// The asking node's own subscriber (0 or 1).
    own: usize,
    nodes: usize,
    closed: usize,
}

impl Answers {
    /// The kick's outcome when `heard` subscriber connections got it.
    fn kicked(self, heard: usize) -> Kicked {
        let others = heard.saturating_sub(self.own);
        Kicked {
            closed: self.closed,
            nodes: others,
            unanswered: others.saturating_sub(self.nodes),
        }
    }
}

/// One node's answer to a kick, waiting in the publisher's queue.
pub struct Reply {
    id: Box<str>,
    closed: usize,
    /// The asking node hearing its own kick.
    own: bool,
}

impl Reply {
    /// What it weighs in the publisher queue's byte bound.
    pub(crate) fn size(&self) -> usize {
        self.id.len() + 16
    }

    /// The script call that counts it in the kick's reply hash.
    pub(crate) fn call(&self, keys: &Keys) -> Call {
        let field = if self.own { "own" } else { "nodes" };
        Call::new(
            &scripts::KICK_REPLY,
            keys.kick(&self.id),
            (field, self.closed, ttl_ms(REPLY_TTL)),
        )
    }
}

/// Answers a kick this node heard on a room's channel (after closing `closed` connections):
/// queued for the publisher; a full queue drops it, and the asking node reports this node as
/// unanswered.
pub(crate) fn answer(s: &Shared, id: Box<str>, closed: usize, own: bool) {
    s.queue(Reply { id, closed, own });
}

/// Publishes the kick of `key`'s members in `room` and waits (at most [`KICK_WAIT`]) for the
/// answers of the nodes that heard it. `Err` only when the kick itself could not be published.
pub(crate) async fn ask<C: ConnectionLike + Send>(
    s: &Shared,
    mut conn: C,
    room: &str,
    key: &str,
) -> RedisResult<Kicked> {
    let id = format!("{}:{}", s.instance, s.kicks.fetch_add(1, Ordering::Relaxed));
    let kick = Payload::Kick {
        key: key.into(),
        reply: Some(id.as_str().into()),
    };
    let data = wire::encode(&s.instance, &kick);
    let heard: usize = redis::cmd("PUBLISH")
        .arg(s.keys.channel(room))
        .arg(&data[..])
        .query_async(&mut conn)
        .await?;
    if heard == 0 {
        return Ok(Kicked::default());
    }
    let hash = s.keys.kick(&id);
    let deadline = Instant::now() + KICK_WAIT;
    let mut answers = Answers::default();
    let mut wait = POLL_FIRST;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut hmget = redis::cmd("HMGET");
        hmget.arg(&hash).arg("own").arg("nodes").arg("closed");
        let read = hmget.query_async::<(Option<usize>, Option<usize>, Option<usize>)>(&mut conn);
        // A read that fails or is late ends the wait: the kick went out, what is missing is
        // reported as unanswered.
        match tokio::time::timeout(left.max(POLL_FIRST), read).await {
            Ok(Ok((own, nodes, closed))) => {
                answers = Answers {
                    own: own.unwrap_or(0),
                    nodes: nodes.unwrap_or(0),
                    closed: closed.unwrap_or(0),
                };
            }
            _ => break,
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if answers.own + answers.nodes >= heard || left.is_zero() {
            break;
        }
        tokio::time::sleep(wait.min(left)).await;
        wait = (wait * 2).min(POLL_CAP);
    }
    Ok(answers.kicked(heard))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kick_counts_the_other_nodes_that_heard_it_and_those_that_did_not_answer() {
        let all = Answers {
            own: 1,
            nodes: 2,
            closed: 3,
        };
        let kicked = |closed, nodes, unanswered| Kicked {
            closed,
            nodes,
            unanswered,
        };
        assert_eq!(all.kicked(3), kicked(3, 2, 0), "this node and two others");
        let slow = Answers {
            own: 0,
            nodes: 1,
            closed: 1,
        };
        assert_eq!(
            slow.kicked(2),
            kicked(1, 2, 1),
            "one other node did not answer"
        );
        assert_eq!(
            Answers::default().kicked(0),
            Kicked::default(),
            "nobody heard it"
        );
    }
}
