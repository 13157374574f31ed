//! The cluster's Lua scripts, sent by their SHA1 (`EVALSHA`), so a script's text crosses the
//! network once per Redis rather than once per message; a Redis that does not know a script
//! (it restarted, or its script cache was flushed) answers `NOSCRIPT`, and exactly those calls are
//! sent again with the script's text (`EVAL`, which also caches it), in their order. A pipeline
//! that mixes calls with other commands loads its scripts at its head, so a resend never puts a
//! call behind the commands that followed it (one room's messages stay in order).
//!
//! Calls go in pipelines with other commands ([`run`]): `redis::Script` does the same fallback for
//! one call at a time, but not inside a pipeline.

use std::sync::LazyLock;

use redis::aio::ConnectionLike;
use redis::{Cmd, ErrorKind, RedisResult, ServerErrorKind, ToRedisArgs, Value};

/// A script's text and SHA1.
pub struct Lua {
    source: &'static str,
    sha: String,
}

impl Lua {
    fn new(source: &'static str) -> Lua {
        Lua {
            source,
            sha: redis::Script::new(source).get_hash().to_owned(),
        }
    }
}

/// Declares a script kept in a static, hashed once.
macro_rules! scripts {
    ($($(#[$doc:meta])* $name:ident = $source:expr;)*) => {
        $($(#[$doc])* pub static $name: LazyLock<Lua> = LazyLock::new(|| Lua::new($source));)*
    };
}

scripts! {
    /// History: appends to the room's stream, publishes stamped ([`super::history`]).
    PUBLISH_KEPT = super::history::PUBLISH_KEPT;
    /// Names: claims a name ([`super::presence`]).
    CLAIM = super::presence::CLAIM;
    /// Names: frees a name this instance holds.
    RELEASE = super::presence::RELEASE;
    /// Liveness: removes every trace of a dead instance.
    SWEEP = super::presence::SWEEP;
    /// Presence: removes this node's entry of a room it left; the history ages out if it was the last.
    CLOSE = super::presence::CLOSE;
}

/// One call of a script: its number of keys, keys and arguments, as sent.
pub struct Call {
    lua: &'static Lua,
    args: Vec<Vec<u8>>,
}

impl Call {
    /// `keys` are `KEYS[1..]`, `args` `ARGV[1..]` (tuples of anything Redis takes).
    pub fn new(lua: &'static Lua, keys: impl ToRedisArgs, args: impl ToRedisArgs) -> Call {
        let keys = keys.to_redis_args();
        let mut all = Vec::with_capacity(1 + keys.len());
        all.push(keys.len().to_string().into_bytes());
        all.extend(keys);
        args.write_redis_args(&mut all);
        Call { lua, args: all }
    }

    fn cmd(&self, by_sha: bool) -> Cmd {
        let mut cmd = if by_sha {
            redis::cmd("EVALSHA")
        } else {
            redis::cmd("EVAL")
        };
        if by_sha {
            cmd.arg(&self.lua.sha);
        } else {
            cmd.arg(self.lua.source);
        }
        cmd.arg(&self.args);
        cmd
    }

    /// Runs this call alone; its reply, or the error.
    pub async fn run<C: ConnectionLike + Send>(self, conn: &mut C) -> RedisResult<Value> {
        run(conn, vec![Op::Call(self)]).await?.remove(0)
    }
}

/// One command of a pipeline.
pub enum Op {
    Cmd(Cmd),
    Call(Call),
}

fn no_script(r: &RedisResult<Value>) -> bool {
    matches!(r, Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript))
}

/// Runs `ops` as one pipeline (scripts by SHA1), then the calls refused with `NOSCRIPT` again
/// by their text, in order: one result per op. `Err` only when the connection failed.
pub async fn run<C: ConnectionLike + Send>(
    conn: &mut C,
    ops: Vec<Op>,
) -> RedisResult<Vec<RedisResult<Value>>> {
    if ops.is_empty() {
        return Ok(Vec::new());
    }
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    // A call resent after `NOSCRIPT` would run after the commands behind it in the pipeline, and
    // those may be the same room's next messages. So a pipeline that mixes a call with anything
    // else loads its scripts first (idempotent, once per pipeline, not once per call): every op
    // then runs in order, and a resend can only follow a cache flush in the middle of it.
    let scripts = loaded_first(&ops);
    for lua in &scripts {
        pipe.cmd("SCRIPT").arg("LOAD").arg(lua.source);
    }
    for op in &ops {
        match op {
            Op::Cmd(cmd) => pipe.add_command(cmd.clone()),
            Op::Call(call) => pipe.add_command(call.cmd(true)),
        };
    }
    let mut results: Vec<RedisResult<Value>> = pipe.query_async(conn).await?;
    results.drain(..scripts.len());
    let missing: Vec<usize> = (0..results.len())
        .filter(|&i| no_script(&results[i]))
        .collect();
    if !missing.is_empty() {
        let mut again = redis::pipe();
        again.ignore_errors();
        for &i in &missing {
            if let Op::Call(call) = &ops[i] {
                again.add_command(call.cmd(false));
            }
        }
        let retried: Vec<RedisResult<Value>> = again.query_async(conn).await?;
        for (i, r) in missing.into_iter().zip(retried) {
            results[i] = r;
        }
    }
    Ok(results)
}

/// The scripts to load at the head of a pipeline of `ops`: none when its calls are all of one
/// script and nothing else (a resend of all of them keeps their order), else every script called.
fn loaded_first(ops: &[Op]) -> Vec<&'static Lua> {
    let mut scripts: Vec<&'static Lua> = Vec::new();
    let mut commands = false;
    for op in ops {
        match op {
            Op::Cmd(_) => commands = true,
            Op::Call(call) => {
                if !scripts.iter().any(|l| std::ptr::eq(*l, call.lua)) {
                    scripts.push(call.lua);
                }
            }
        }
    }
    match (commands, scripts.len()) {
        (false, 0 | 1) | (true, 0) => Vec::new(),
        _ => scripts,
    }
}

/// Like [`run`], failing with the first command's error.
pub async fn run_all<C: ConnectionLike + Send>(
    conn: &mut C,
    ops: Vec<Op>,
) -> RedisResult<Vec<Value>> {
    run(conn, ops).await?.into_iter().collect()
}
