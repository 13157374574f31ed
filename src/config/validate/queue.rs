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
