//! The cluster's Lua scripts, sent by their SHA1 (`EVALSHA`), so a script's text crosses the
//! network once per Redis rather than once per message; a Redis that does not know a script
//! (it restarted, or its script cache was flushed) answers `NOSCRIPT`, and exactly those calls are
//! sent again with the script's text (`EVAL`, which also caches it), in their order. A pipeline
//! that mixes calls with other commands loads its scripts at its head, so a resend never puts a
//! call behind the commands that followed it (one room's messages stay in order).
//!
//! Calls go in pipelines with other commands ([`run`]): `redis::Script` does the same fallback for
//! one call at a time, but not inside a pipeline.
//!
//! Every script's text lives here, with the key scheme each expects in its doc; the files that
//! call them (presence, names, history, the worker) import this one, never the other way round.
//!
//! This file must not know what the scripts are used for beyond their keys and arguments.

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
    /// Appends a message to the room's stream (KEYS[1], unless ARGV[1] is 0: too large to keep)
    /// and publishes it on KEYS[2] stamped with its id (`H`). For a numbered room (ARGV[4], a
    /// candidate epoch, not empty) it first numbers it from the room's hash KEYS[4] (epoch `e` set
    /// if absent, `n` incremented): `,"seq":N}` replaces the final `}` of the JSON text (as
    /// `relay::recovery::with_seq` does), and it goes out as `N` with the epoch and ARGV[5], the
    /// sending member. A room with no members on any node (no presence hash, KEYS[3]) has its stream
    /// and hash expire after ARGV[3] ms.
    PUBLISH_KEPT = r#"
local m, id, e = ARGV[2], '', ''
if ARGV[4] ~= '' then
  redis.call('HSETNX', KEYS[4], 'e', ARGV[4])
  e = redis.call('HGET', KEYS[4], 'e')
  local n = redis.call('HINCRBY', KEYS[4], 'n', 1)
  if string.sub(m, -1) == '}' then m = string.sub(m, 1, -2) end
  m = m .. ',"seq":' .. n .. '}'
end
if ARGV[1] ~= '0' then
  id = redis.call('XADD', KEYS[1], 'MAXLEN', '~', ARGV[1], '*', 'm', m)
end
if ARGV[4] ~= '' then
  redis.call('PUBLISH', KEYS[2], string.char(1) .. 'N' .. string.char(#id) .. id .. string.char(#e) .. e .. string.char(#ARGV[5]) .. ARGV[5] .. m)
else
  redis.call('PUBLISH', KEYS[2], string.char(1) .. 'H' .. string.char(#id) .. id .. m)
end
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  redis.call('PEXPIRE', KEYS[4], ARGV[3])
end
return id"#;
    /// Sets a name if free, or keeps it if this instance (ARGV[2]) holds it already (a release of it
    /// was pending: `names`); records it under the instance for the sweep. 1 = won.
    CLAIM = r"
local holder = redis.call('HGET', KEYS[1], ARGV[1])
if holder == false then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
elseif holder ~= ARGV[2] then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[2])
return 1";
    /// Counts one node's answer to a kick in its reply hash (KEYS[1]): field ARGV[1] (`nodes`, or
    /// `own` for the asking node itself) up by one, `closed` up by ARGV[2], the hash expiring after
    /// ARGV[3] ms (so a late answer leaves nothing behind).
    KICK_REPLY = r"
redis.call('HINCRBY', KEYS[1], ARGV[1], 1)
redis.call('HINCRBY', KEYS[1], 'closed', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1";
    /// Frees a name if this instance holds it.
    RELEASE = r"
if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
redis.call('SREM', KEYS[2], ARGV[3])
return 1";
    /// Removes every trace of instance ARGV[2] under prefix ARGV[1]; returns its rooms. A room left
    /// without members on any node has its history and numbering hash expire after ARGV[3] ms and
    /// leaves the index of rooms.
    SWEEP = r"
local p, d = ARGV[1], ARGV[2]
local rooms = redis.call('SMEMBERS', p .. ':node:' .. d .. ':rooms')
for _, r in ipairs(rooms) do
  redis.call('HDEL', p .. ':presence:' .. r, d)
  if redis.call('HLEN', p .. ':presence:' .. r) == 0 then
    redis.call('PEXPIRE', p .. ':history:' .. r, ARGV[3])
    redis.call('ZREM', p .. ':rooms', r)
    redis.call('PEXPIRE', p .. ':seq:' .. r, ARGV[3])
  end
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
    /// Removes this instance's (ARGV[1]) presence entry of a room it left; when no node has members
    /// there any more, the room's history stream (KEYS[3]) and numbering hash (KEYS[5]) expire
    /// after ARGV[3] ms and the room (ARGV[2]) leaves the index of rooms (KEYS[4]).
    CLOSE = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
if redis.call('HLEN', KEYS[1]) == 0 then
  redis.call('PEXPIRE', KEYS[3], ARGV[3])
  redis.call('ZREM', KEYS[4], ARGV[2])
  redis.call('PEXPIRE', KEYS[5], ARGV[3])
end
return 1";
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

#[cfg(test)]
mod tests {
    /// The script numbers a message exactly as `relay::recovery` reads a number back.
    #[test]
    fn the_script_appends_the_number_under_the_shared_key() {
        assert!(
            super::PUBLISH_KEPT
                .source
                .contains(&format!("'{}'", super::super::wire::SEQ_KEY))
        );
    }
}
