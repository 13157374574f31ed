//! The rules of `[[rooms]]` entries: a `match` that is a room name or a prefix, no entry hidden
//! behind an earlier one, and the configuration each entry makes for its rooms held to the global
//! rules.
//!
//! Rules only: it must not apply an entry to a room (that is `config::rooms`).

use crate::proto::names::is_room_name;

use crate::config::problems::mentions;
use crate::config::raw::RawConfig;

/// Checks each `[[rooms]]` entry: its `match`, and the configuration it makes for its rooms
/// by exactly the checks of the global settings (a replay must fit the queue, app ping and
/// pong together, ...). A problem the global settings already have is not repeated for each
/// entry. Each problem: the entry's index, the key it is about (one the entry sets, else
/// `match`), the message.
pub(super) fn check(
    raw: &RawConfig,
    global: &[(&'static str, String)],
) -> Vec<(usize, &'static str, String)> {
    let mut problems = Vec::new();
    for (i, rule) in raw.rooms.iter().enumerate() {
        if rule.pattern.is_empty() {
            problems.push((
                i,
                "match",
                "is required: a room name, or a prefix followed by \"*\"".into(),
            ));
            continue;
        }
        if !pattern_ok(&rule.pattern) {
            problems.push((
                i,
                "match",
                format!(
                    "{:?} is neither a room name nor a prefix of one followed by \"*\" \
                     (1-64 letters or digits of any script and . _ -)",
                    rule.pattern
                ),
            ));
            continue;
        }
        let mut own = RawConfig {
            rooms: Vec::new(),
            ..raw.clone()
        };
        rule.apply_to(&mut own.relay, &mut own.presence, &mut own.heartbeat);
        let keys = rule.keys();
        for (key, message) in super::check(&own) {
            if global.iter().any(|(k, m)| *k == key && *m == message) {
                continue;
            }
            let key = keys
                .iter()
                .copied()
                .find(|k| *k == key)
                .or_else(|| keys.iter().copied().find(|k| mentions(&message, k)))
                .unwrap_or("match");
            problems.push((i, key, message));
        }
        for earlier in &raw.rooms[..i] {
            let shadowed = match rule.pattern.strip_suffix('*') {
                Some(prefix) => earlier
                    .pattern
                    .strip_suffix('*')
                    .is_some_and(|e| prefix.starts_with(e)),
                None => earlier.matches(&rule.pattern),
            };
            if shadowed {
                problems.push((
                    i,
                    "match",
                    format!(
                        "every room it matches is matched by the earlier entry {:?} first, \
                         so this one never applies",
                        earlier.pattern
                    ),
                ));
                break;
            }
        }
    }
    problems
}

/// Whether `match` is a room name, or a prefix of room names followed by `*`.
fn pattern_ok(pattern: &str) -> bool {
    match pattern.strip_suffix('*') {
        // A prefix is a room name cut short: check it with a letter standing for the rest.
        Some("") => true,
        Some(prefix) => is_room_name(&format!("{prefix}a")) && !prefix.contains('*'),
        None => is_room_name(pattern),
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::problems;
    use crate::config::{Config, Envelope, PresenceFormat};

    const ROOMS: &str = "[tls]\nenabled = false\n\
        [[rooms]]\nmatch = \"count-*\"\npresence = { format = \"plain\" }\n\
        [[rooms]]\nmatch = \"chat-*\"\nrelay = { envelope = \"json\", history = 50 }\n\
        presence = { require_name = true }\n\
        [[rooms]]\nmatch = \"我的房间\"\nheartbeat = { app_ping = \"p\", app_pong = \"q\" }\n";

    #[test]
    fn rooms_by_pattern_first_match_wins_and_the_rest_use_the_globals() {
        let config = std::sync::Arc::new(Config::from_toml(ROOMS).unwrap());
        let count = config.for_room("count-1");
        assert_eq!(count.presence.format, PresenceFormat::Plain);
        assert_eq!(count.relay.envelope, Envelope::None);
        let chat = config.for_room("chat-general");
        assert_eq!(chat.relay.envelope, Envelope::Json);
        assert_eq!(chat.relay.history, 50);
        assert!(chat.presence.require_name);
        assert_eq!(chat.presence.format, PresenceFormat::Json, "not overridden");
        assert_eq!(config.for_room("我的房间").heartbeat.app_ping, "p");
        assert_eq!(
            config.for_room("我的房间2").heartbeat.app_ping,
            "",
            "exact match only"
        );
        assert!(
            std::sync::Arc::ptr_eq(&count, &config.for_room("count-2")),
            "one copy per entry, shared by its rooms"
        );
        let other = config.for_room("lobby");
        assert!(
            std::sync::Arc::ptr_eq(&other, &config),
            "no entry: the same configuration"
        );
        // "chat" alone is not "chat-*".
        assert_eq!(config.for_room("chat").relay.envelope, Envelope::None);
    }

    #[test]
    fn room_entries_are_checked_like_the_globals_at_their_line() {
        let p = problems(concat!(
            "[tls]\nenabled = false\n",
            "[limits]\nqueue_messages = 10\n",
            "[[rooms]]\n",
            "match = \"a-*\"\n",
            "relay = { history = 20, colour = 1 }\n",
            "[[rooms]]\n",
            "match = \"b b\"\n",
            "[[rooms]]\n",
            "match = \"c\"\n",
            "heartbeat = { app_ping = \"x\" }\n",
            "presence = { format = \"loud\" }\n",
            "volume = 11\n",
            "[[rooms]]\n",
            "relay = { echo = false }\n",
            "[[rooms]]\n",
            "match = \"a-b*\"\n",
        ));
        let got: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.message.as_str())).collect();
        let has = |line: usize, needle: &str| {
            assert!(
                got.iter().any(|(l, m)| *l == line && m.contains(needle)),
                "line {line}: {needle:?} in {got:#?}"
            )
        };
        has(
            7,
            "[[rooms]] #1: relay.colour: unknown key; [[rooms]] may set relay.{echo, envelope",
        );
        has(
            7,
            "[[rooms]] #1 (match = \"a-*\"): relay.history: must be below limits.queue_messages",
        );
        has(
            9,
            "[[rooms]] #2 (match = \"b b\"): match: \"b b\" is neither a room name",
        );
        has(
            12,
            "heartbeat.app_ping: heartbeat.app_ping and heartbeat.app_pong must be set together",
        );
        has(13, "[[rooms]] #3: presence.format: unknown variant `loud`");
        has(
            14,
            "[[rooms]] #3: volume: unknown key; an entry has match, relay, presence, heartbeat",
        );
        has(15, "[[rooms]] #4 (match = \"\"): match: is required");
        has(
            18,
            "[[rooms]] #5 (match = \"a-b*\"): match: every room it matches is matched by the earlier entry \"a-*\"",
        );
        assert_eq!(p.len(), 8, "{got:#?}");
        // The globals' own problems are not repeated for each entry.
        let p =
            problems("[tls]\nenabled = false\n[server]\nbacklog = 0\n[[rooms]]\nmatch = \"x\"\n");
        assert_eq!(p.len(), 1, "{p:?}");
        // A replay must fit the queue in a room that turns history on.
        let p = problems(concat!(
            "[tls]\nenabled = false\n[limits]\nqueue_bytes = \"1MiB\"\n",
            "[[rooms]]\nmatch = \"h-*\"\nrelay = { history = 10, history_bytes = \"900KiB\" }\n",
        ));
        assert!(
            p[0].message.contains("relay.history_bytes: a replay of"),
            "{p:?}"
        );
        assert!(
            problems("rooms = 3\n[tls]\nenabled = false\n")[0]
                .message
                .contains("written [[rooms]]")
        );
    }
}
