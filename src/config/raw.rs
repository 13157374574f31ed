//! The raw configuration: the whole file deserialised, its sections and its `[[rooms]]`, before
//! any check.
//!
//! A raw configuration is never used to run anything: only `validate` turns it into a
//! [`Config`](super::Config). This file holds the shape alone: no default of its own (each section
//! has its defaults), no rule.

use serde::Deserialize;

use super::rooms::RoomRule;
use super::sections::{
    Api, Cluster, Heartbeat, Limits, Log, Metrics, Presence, Relay, Security, Server, Tls, Web,
};

/// The whole file, deserialised and not yet checked. Field names are the contract: a user's file
/// must keep working.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RawConfig {
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
}
