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
