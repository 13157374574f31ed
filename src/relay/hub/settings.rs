//! Room settings: what every room follows (presence format and window, `max_names`,
//! uniqueness, history bounds, the envelope, `max_rooms`), taken from the configuration in force,
//! and a room's own settings with the first matching `[[rooms]]` entry written in.
//!
//! Plain data and pure lookups: this file must not lock, queue or know about members. The hub
//! keeps one [`RoomSettings`] in force and swaps it on reload ([`super::Hub::configure`]).

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::RoomRules;
use crate::config::{Config, Envelope, PresenceFormat, RoomRule};

/// The settings every room follows, taken from the configuration in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSettings {
    pub max_rooms: usize,
    pub unique_names: bool,
    pub presence: PresenceFormat,
    pub presence_interval: Duration,
    pub max_names: usize,
    pub history: usize,
    pub history_bytes: usize,
    /// `relay.envelope`: with history, messages carry a sequence number ([`crate::relay::recovery`]).
    pub envelope: Envelope,
    /// `[[rooms]]`: overrides for the rooms they match ([`RoomSettings::for_room`]).
    pub rules: Arc<[RoomRule]>,
}

impl RoomSettings {
    pub fn new(config: &Config) -> RoomSettings {
        RoomSettings {
            max_rooms: config.relay.max_rooms,
            unique_names: config.presence.unique_names,
            presence: config.presence.format,
            presence_interval: config.presence.interval,
            max_names: config.presence.max_names,
            history: config.relay.history,
            history_bytes: usize::try_from(config.relay.history_bytes).unwrap_or(usize::MAX),
            envelope: config.relay.envelope,
            rules: config.rooms.clone().into(),
        }
    }

    /// `room`'s history bounds (`history`, `history_bytes`): what the message path needs, without
    /// copying the rest.
    pub fn history_for(&self, room: &str) -> (usize, usize) {
        match self.rules.iter().find(|r| r.matches(room)) {
            None => (self.history, self.history_bytes),
            Some(_) => {
                let own = self.for_room(room);
                (own.history, own.history_bytes)
            }
        }
    }

    /// Whether `room`'s messages are numbered for recovery: history kept and the JSON envelope
    /// (which can carry the number). Without rules, no copy of the settings.
    pub fn numbered(&self, room: &str) -> bool {
        let own;
        let s = match self.rules.iter().any(|r| r.matches(room)) {
            false => self,
            true => {
                own = self.for_room(room);
                &own
            }
        };
        s.history > 0 && s.envelope == Envelope::Json
    }

    /// The settings of `room`: these with the first matching `[[rooms]]` entry's overrides.
    pub fn for_room(&self, room: &str) -> RoomSettings {
        let mut own = self.clone();
        if let Some(rule) = self.rules.iter().find(|r| r.matches(room)) {
            let (r, p) = (&rule.relay, &rule.presence);
            own.unique_names = p.unique_names.unwrap_or(own.unique_names);
            own.presence = p.format.unwrap_or(own.presence);
            own.max_names = p.max_names.unwrap_or(own.max_names);
            own.history = r.history.unwrap_or(own.history);
            own.envelope = r.envelope.unwrap_or(own.envelope);
            if let Some(bytes) = r.history_bytes {
                own.history_bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
            }
        }
        own
    }
}

/// What the cluster reads of a room's settings.
impl RoomRules for RoomSettings {
    fn history(&self, room: &str) -> usize {
        self.for_room(room).history
    }

    fn unique_names(&self, room: &str) -> bool {
        self.for_room(room).unique_names
    }

    fn numbered(&self, room: &str) -> bool {
        RoomSettings::numbered(self, room)
    }
}
