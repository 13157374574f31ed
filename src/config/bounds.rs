//! The largest messages the relay can make out of a configuration, and what each costs in a
//! member's outbound queue: the numbers the queue checks in `validate` hold against
//! `limits.queue_bytes`, and that the relay's encoders are tested against.
//!
//! Arithmetic on configured values only: this file neither checks a configuration nor encodes a
//! message.

use crate::proto::message::Message;
use crate::proto::names::MAX_NAME_CHARS;

use super::sections::{Envelope, PresenceFormat, Relay};

/// What one queued message costs beyond its payload: its slot in the queue and in the writer's
/// batch.
pub const SLOT_BYTES: usize = std::mem::size_of::<Message>();

/// The most the fixed part of a wrapped message can take: the keys and a message number of up to
/// 20 digits (`"seq"`, see `crate::relay::recovery`), a room of at most 64 characters of at most 4
/// bytes each (letters need no escaping), and a name of at most 64 characters of at most 6 bytes
/// each once escaped.
pub const MAX_ENVELOPE_OVERHEAD_BYTES: u64 = 96 + 64 * 4 + 64 * 6;
/// JSON escaping turns one byte into at most six (`\u001f`).
pub const MAX_ESCAPE_GROWTH: u64 = 6;

/// The most a listed name takes in a JSON presence message: 4 bytes per character, 2 quotes and
/// a comma.
pub const MAX_NAME_JSON_BYTES: u64 = MAX_NAME_CHARS as u64 * 4 + 3;
/// Everything of a JSON presence message but its names: keys, a room of 64 characters of up to 4
/// bytes each, three numbers.
pub const PRESENCE_OVERHEAD_BYTES: u64 = 512;
/// The longest `plain` presence message: a decimal count.
const PLAIN_PRESENCE_MAX_BYTES: u64 = 20;

impl Relay {
    /// The largest message the relay may send for a client message of at most `max_message_size`
    /// bytes: the message itself, or its wrapped form under `relay.envelope = "json"`. Queues and
    /// write buffers must hold one of these.
    pub fn max_relayed_bytes(&self) -> u64 {
        let max = self.max_message_size;
        match self.envelope {
            Envelope::None => max,
            Envelope::Json => max
                .saturating_mul(MAX_ESCAPE_GROWTH)
                .saturating_add(MAX_ENVELOPE_OVERHEAD_BYTES),
        }
    }
}

/// The largest presence message `format` can produce with `max_names` listed names.
pub fn presence_bytes(format: PresenceFormat, max_names: usize) -> u64 {
    match format {
        PresenceFormat::Off => 0,
        PresenceFormat::Plain => PLAIN_PRESENCE_MAX_BYTES,
        PresenceFormat::Json => (max_names as u64)
            .saturating_mul(MAX_NAME_JSON_BYTES)
            .saturating_add(PRESENCE_OVERHEAD_BYTES),
    }
}
