//! The TOML configuration, as plain data: every key of the product contract, its default, its
//! checks, and the validated [`Config`] the rest of the daemon reads.
//!
//! The path of a file, one way only (`load`):
//!
//! ```text
//! text --toml--> document --schema--> RawConfig --validate--> Config
//! ```
//!
//! The text is parsed into a spanned TOML document; `schema` checks each key against the sections
//! and deserialises each value on its own (unknown keys and values of the wrong type are
//! problems; those keys keep their defaults); the rest becomes a raw configuration (`raw`), whose
//! derived values (the node id, paths relative to the file) are then filled in; `validate` checks
//! every range and relation serde cannot and is the only maker of a [`Config`]. Every problem
//! found on the way is a [`Problem`] at its line and column, told in one format (`problems`).
//! `--check-config` runs exactly [`Config::load`], the same as start-up and SIGHUP.
//!
//! Every duration and size has an upper bound, so that no arithmetic on a configured value (an
//! `Instant` plus a timeout, a buffer of a configured size) can overflow or panic at run time.
//! Errors about secret keys never contain their values.
//!
//! This folder imports nothing of the crate but `crate::proto` (the name rules and the message
//! type): the layers above read configuration, never the other way round.

use std::sync::{Arc, OnceLock};

pub mod bounds;
mod load;
pub mod nginx;
mod problems;
mod raw;
mod rooms;
mod schema;
mod sections;
mod validate;
mod values;

pub use problems::{ConfigError, Origin, Problem};
pub use rooms::{HeartbeatOverride, PresenceOverride, RelayOverride, RoomRule};
pub use sections::{
    Api, Cluster, Envelope, Heartbeat, Jwt, Limits, Log, LogFormat, Metrics, Presence,
    PresenceFormat, Relay, Security, Server, Tls, Web,
};
pub use values::SentinelUrl;

/// Where the daemon looks when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/wsline/wsline.toml";

/// The whole configuration, typed and validated: made only by [`Config::load`] and
/// [`Config::from_toml`], so holding one means every check passed. Its sections are the file's
/// (`config.relay.history`); the node id and the file paths are already resolved.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: Server,
    pub tls: Tls,
    pub relay: Relay,
    pub presence: Presence,
    pub heartbeat: Heartbeat,
    pub limits: Limits,
    pub security: Security,
    pub log: Log,
    pub metrics: Metrics,
    pub web: Web,
    pub cluster: Cluster,
    pub api: Api,
    /// `[[rooms]]`: per-room settings, the first entry whose `match` fits a room wins.
    pub rooms: Vec<RoomRule>,
    /// Where the file was and where each key sits in it; not a key of the file.
    pub origin: Origin,
    /// The configuration each `rooms` entry makes, built once on first use ([`Config::for_room`]),
    /// so connections of a room share one copy; not a key of the file. Private: no `Config` is
    /// made outside this folder.
    resolved: Resolved,
}

/// [`Config::for_room`]'s copies, one per `[[rooms]]` entry. A clone of the configuration starts
/// without them, so a clone whose entries are then changed never serves stale copies.
#[derive(Debug, Default)]
struct Resolved(OnceLock<Vec<Arc<Config>>>);

impl Clone for Resolved {
    fn clone(&self) -> Self {
        Resolved::default()
    }
}

impl Config {
    /// The configuration as it applies to `room`: this one with the first matching `[[rooms]]`
    /// entry's overrides written in (the same `Arc` when no entry matches, so rooms without one
    /// cost nothing). Its own `rooms` list is empty: it is already resolved.
    pub fn for_room(self: &Arc<Config>, room: &str) -> Arc<Config> {
        let Some(i) = self.rooms.iter().position(|rule| rule.matches(room)) else {
            return self.clone();
        };
        let resolved = self.resolved.0.get_or_init(|| {
            self.rooms
                .iter()
                .map(|rule| {
                    let mut config = Config {
                        rooms: Vec::new(),
                        ..(**self).clone()
                    };
                    rule.apply(&mut config);
                    Arc::new(config)
                })
                .collect()
        });
        resolved[i].clone()
    }
}

#[cfg(test)]
mod tests;
