//! The rules that keep a member's outbound queue able to hold what the relay sends it: one
//! message at its largest (wrapped, under the JSON envelope), a presence state, and a full history
//! replay on top of one, so that none of them ever evicts a member by its size alone.
//!
//! The sizes come from `config::bounds`; this file only holds them against `limits.queue_bytes`.

use crate::config::bounds::{
    MAX_NAME_JSON_BYTES, PRESENCE_OVERHEAD_BYTES, SLOT_BYTES, presence_bytes,
};
use crate::config::raw::RawConfig;
use crate::config::sections::Envelope;

/// Each problem: the key it is about, the message.
pub(super) fn check(raw: &RawConfig) -> Vec<(&'static str, String)> {
    let (relay, presence, limits) = (&raw.relay, &raw.presence, &raw.limits);
    let mut problems = Vec::new();
    // The JSON envelope makes a message larger than what was sent (escaping, at most 6x).
    let wrapped = relay.max_relayed_bytes();
    if relay.envelope != Envelope::None && limits.queue_bytes < wrapped {
        problems.push((
            "limits.queue_bytes",
            format!(
                "must hold one wrapped message with relay.envelope = \"json\" ({wrapped} bytes: \
                 6 x relay.max_message_size + 736 for the envelope)"
            ),
        ));
    }
    // The queue counts each message as its payload plus its slot.
    let slot = SLOT_BYTES as u64;
    let state = presence_bytes(presence.format, presence.max_names);
    let replay = (relay.history_bytes)
        .saturating_add((relay.history as u64).saturating_mul(slot))
        .saturating_add(state.saturating_add(slot));
    if state.saturating_add(slot) > limits.queue_bytes {
        problems.push((
            "presence.max_names",
            format!(
                "a presence state of {} names may take {state} bytes ({} per 64-character name + {}), \
                 more than limits.queue_bytes ({}): lower presence.max_names or raise limits.queue_bytes",
                presence.max_names,
                MAX_NAME_JSON_BYTES,
                PRESENCE_OVERHEAD_BYTES,
                limits.queue_bytes
            ),
        ));
    } else if relay.history > 0 && replay > limits.queue_bytes {
        problems.push((
            "relay.history_bytes",
            format!(
                "a replay of {} bytes in up to {} messages ({slot} bytes of queue each) plus a presence \
                 state of up to {state} bytes must fit limits.queue_bytes ({}): lower \
                 relay.history_bytes, relay.history or presence.max_names",
                relay.history_bytes, relay.history, limits.queue_bytes
            ),
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    /// The messages of the problems of `text` after a plain-TCP `[tls]`; none when it is valid.
    fn messages(text: &str) -> Vec<String> {
        match Config::from_toml(&format!("[tls]\nenabled = false\n{text}")) {
            Ok(_) => Vec::new(),
            Err(p) => p.into_iter().map(|p| p.message).collect(),
        }
    }

    #[test]
    fn a_presence_state_must_fit_the_queue() {
        // 200 names: 200 x 259 + 512 = 52 312 bytes, within 64 KiB; 300 are not.
        assert!(
            messages("[limits]\nqueue_bytes = \"64KiB\"\n[presence]\nmax_names = 200\n").is_empty()
        );
        let p = messages("[limits]\nqueue_bytes = \"64KiB\"\n[presence]\nmax_names = 300\n");
        assert!(p[0].starts_with("presence.max_names: "), "{p:?}");
        // Plain and off carry no names.
        assert!(
            messages(
                "[limits]\nqueue_bytes = \"64KiB\"\n[presence]\nmax_names = 300\nformat = \"plain\"\n"
            )
            .is_empty()
        );
    }

    #[test]
    fn a_full_replay_and_a_state_must_fit_the_queue() {
        let base = "[limits]\nqueue_bytes = \"1MiB\"\n[presence]\nmax_names = 1000\n";
        // 1000 names take 259 256 bytes; 800 KiB of history on top is more than 1 MiB.
        let p = messages(&format!(
            "{base}[relay]\nhistory = 10\nhistory_bytes = \"800KiB\"\n"
        ));
        assert!(p[0].starts_with("relay.history_bytes: "), "{p:?}");
        assert!(
            messages(&format!(
                "{base}[relay]\nhistory = 10\nhistory_bytes = \"512KiB\"\n"
            ))
            .is_empty()
        );
        // No history: its bytes do not matter.
        assert!(messages(&format!("{base}[relay]\nhistory_bytes = \"800KiB\"\n")).is_empty());
    }

    #[test]
    fn the_config_check_makes_a_queue_hold_one_wrapped_message() {
        let base =
            "[tls]\nenabled = false\n[relay]\nenvelope = \"json\"\nmax_message_size = \"1MiB\"\n";
        let problems = Config::from_toml(base).unwrap_err();
        assert!(
            problems
                .iter()
                .any(|p| p.message.contains("limits.queue_bytes")),
            "{:?}",
            problems.iter().map(|p| &p.message).collect::<Vec<_>>()
        );
        assert!(Config::from_toml(&format!("{base}[limits]\nqueue_bytes = \"7MiB\"\n")).is_ok());
        assert!(
            Config::from_toml("[tls]\nenabled = false\n[relay]\nenvelope = \"json\"\n").is_ok()
        );
    }
}
