//! `[[rooms]]`: an entry's shape (which rooms it matches, the settings it overrides for them) and
//! how it writes those overrides into a configuration.
//!
//! Whether an entry is well-formed (its `match`, the configuration it makes) is `validate`'s job,
//! not this file's.

use serde::Deserialize;

use super::Config;
use super::sections::{Envelope, Heartbeat, Presence, PresenceFormat, Relay};
use super::values::some_size;

/// One `[[rooms]]` entry: which rooms it is for, and the settings it overrides for them (any key
/// it leaves out keeps the value of its section). Only settings that belong to a room, rather
/// than to the server or a socket's limits, can be overridden.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoomRule {
    /// A room name (exact), or a prefix ending in `*` (`"chat-*"`; `"*"` is every room).
    #[serde(rename = "match")]
    pub pattern: String,
    pub relay: RelayOverride,
    pub presence: PresenceOverride,
    pub heartbeat: HeartbeatOverride,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayOverride {
    pub echo: Option<bool>,
    pub envelope: Option<Envelope>,
    pub history: Option<usize>,
    #[serde(deserialize_with = "some_size")]
    pub history_bytes: Option<u64>,
    #[serde(deserialize_with = "some_size")]
    pub max_message_size: Option<u64>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PresenceOverride {
    pub format: Option<PresenceFormat>,
    pub unique_names: Option<bool>,
    pub require_name: Option<bool>,
    pub max_names: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeartbeatOverride {
    pub app_ping: Option<String>,
    pub app_pong: Option<String>,
}

impl RoomRule {
    /// Whether this entry is for `room`: equal to `match`, or starting with its prefix before `*`.
    pub fn matches(&self, room: &str) -> bool {
        match self.pattern.strip_suffix('*') {
            Some(prefix) => room.starts_with(prefix),
            None => room == self.pattern,
        }
    }

    /// Writes this entry's overrides into `config`: the configuration of the rooms it matches.
    pub fn apply(&self, config: &mut Config) {
        self.apply_to(
            &mut config.relay,
            &mut config.presence,
            &mut config.heartbeat,
        );
    }

    /// Writes this entry's overrides into the three sections an entry may change (of a
    /// [`Config`], or of a raw configuration being validated).
    pub(super) fn apply_to(
        &self,
        relay: &mut Relay,
        presence: &mut Presence,
        heartbeat: &mut Heartbeat,
    ) {
        fn set<T: Clone>(to: &mut T, from: &Option<T>) {
            if let Some(v) = from {
                *to = v.clone();
            }
        }
        let (r, p, h) = (&self.relay, &self.presence, &self.heartbeat);
        set(&mut relay.echo, &r.echo);
        set(&mut relay.envelope, &r.envelope);
        set(&mut relay.history, &r.history);
        set(&mut relay.history_bytes, &r.history_bytes);
        set(&mut relay.max_message_size, &r.max_message_size);
        set(&mut presence.format, &p.format);
        set(&mut presence.unique_names, &p.unique_names);
        set(&mut presence.require_name, &p.require_name);
        set(&mut presence.max_names, &p.max_names);
        set(&mut heartbeat.app_ping, &h.app_ping);
        set(&mut heartbeat.app_pong, &h.app_pong);
    }

    /// The dotted keys (`relay.history`, ...) this entry sets.
    pub(super) fn keys(&self) -> Vec<&'static str> {
        let (r, p, h) = (&self.relay, &self.presence, &self.heartbeat);
        [
            ("relay.echo", r.echo.is_some()),
            ("relay.envelope", r.envelope.is_some()),
            ("relay.history", r.history.is_some()),
            ("relay.history_bytes", r.history_bytes.is_some()),
            ("relay.max_message_size", r.max_message_size.is_some()),
            ("presence.format", p.format.is_some()),
            ("presence.unique_names", p.unique_names.is_some()),
            ("presence.require_name", p.require_name.is_some()),
            ("presence.max_names", p.max_names.is_some()),
            ("heartbeat.app_ping", h.app_ping.is_some()),
            ("heartbeat.app_pong", h.app_pong.is_some()),
        ]
        .into_iter()
        .filter_map(|(key, set)| set.then_some(key))
        .collect()
    }
}
