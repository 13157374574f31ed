//! Presence as state plus changes (the Phoenix Presence model), as pure rules the hub applies.
//!
//! Why state + changes: a message carrying every name to every member on every join costs O(n²)
//! bytes per window and, in a big room, outgrows a member's queue and gets it evicted. So a joining
//! member receives the room's state once ([`state_json`]: sorted names, at most
//! `presence.max_names`, the rest counted in `more`), and from then on every member receives only
//! what changed ([`change_json`]: `joined`/`left`). No message grows with the room: a change
//! naming more than `max_names` names is sent as a state instead ([`plan`]).
//!
//! Coalescing: a room's changes are gathered in [`Changes`] (a net count per name, so a join and
//! leave inside one window cancel out) and sent by the hub's one presence ticker at most once per
//! `presence.interval` ([`due`]): a change in a quiet room goes out at once, later ones wait for the
//! window to end, and the last message of a burst carries the final state.
//!
//! Size bound ([`crate::config::bounds::presence_bytes`]): a name is at most 64 characters with no control characters
//! ([`crate::proto::names::is_presence_name`]), so in JSON each character takes at most 4 bytes (a 4-byte UTF-8
//! character, or 2 for an escaped `"` or `\`), plus 2 quotes and a comma: 259 bytes per name. The
//! rest of a message (type, room, three numbers, keys) fits in 512 bytes. The configuration check
//! refuses settings where that bound does not fit `limits.queue_bytes`.
//!
//! Pure functions: this file must not lock, queue or keep state of its own.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::PresenceFormat;

/// The names in a room as a multiset (two members may share a name when `unique_names` is off,
/// and one leaving must not remove the other's), plus how many members hold each uniqueness key.
#[derive(Debug, Default)]
pub struct Roster {
    /// Name as given -> members holding it. Sorted, so a state lists names in order for free.
    names: BTreeMap<Arc<str>, usize>,
    /// `request::name_key(name)` -> members holding a name with that key.
    keys: HashMap<Box<str>, usize>,
    /// Members with a name (the sum of `names`' counts).
    len: usize,
}

impl Roster {
    /// Whether a member holds a name with this uniqueness key.
    pub fn key_taken(&self, key: &str) -> bool {
        self.keys.contains_key(key)
    }

    pub fn add(&mut self, name: &Arc<str>, key: &str) {
        *self.names.entry(name.clone()).or_default() += 1;
        *self.keys.entry(key.into()).or_default() += 1;
        self.len += 1;
    }

    /// Removes one holder of `name` (added with `key`); unknown names are ignored.
    pub fn remove(&mut self, name: &str, key: &str) {
        match self.names.get_mut(name) {
            None => return,
            Some(1) => {
                self.names.remove(name);
            }
            Some(n) => *n -= 1,
        }
        match self.keys.get_mut(key) {
            Some(1) | None => {
                self.keys.remove(key);
            }
            Some(n) => *n -= 1,
        }
        self.len -= 1;
    }

    /// Members with a name.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `max` names in sorted order, a shared name once per holder.
    pub fn listed(&self, max: usize) -> Vec<&str> {
        self.names
            .iter()
            .flat_map(|(name, &n)| std::iter::repeat_n(&**name, n))
            .take(max)
            .collect()
    }
}

/// What changed in a room's names since its last presence message: a net count per name, so a
/// member who joins and leaves within one window is never mentioned.
#[derive(Debug, Default)]
pub struct Changes {
    net: BTreeMap<Arc<str>, i64>,
}

impl Changes {
    pub fn joined(&mut self, name: &Arc<str>) {
        self.add(name, 1);
    }

    pub fn left(&mut self, name: &Arc<str>) {
        self.add(name, -1);
    }

    fn add(&mut self, name: &Arc<str>, by: i64) {
        let n = self.net.entry(name.clone()).or_default();
        *n += by;
        if *n == 0 {
            self.net.remove(name);
        }
    }

    /// How many names a change message would carry (`joined` plus `left`).
    pub fn len(&self) -> usize {
        self.net.values().map(|n| n.unsigned_abs() as usize).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.net.is_empty()
    }

    pub fn clear(&mut self) {
        self.net.clear();
    }

    /// Names that joined (`sign` 1) or left (`sign` -1), sorted, a name once per holder.
    fn names(&self, sign: i64) -> Vec<&str> {
        self.net
            .iter()
            .filter(|(_, n)| n.signum() == sign)
            .flat_map(|(name, n)| std::iter::repeat_n(&**name, n.unsigned_abs() as usize))
            .collect()
    }
}

#[derive(Serialize)]
struct StateJson<'a> {
    r#type: &'static str,
    room: &'a str,
    count: usize,
    total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    names: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "is_zero")]
    more: usize,
}

#[derive(Serialize)]
struct ChangeJson<'a> {
    r#type: &'static str,
    room: &'a str,
    count: usize,
    total: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    joined: Option<Vec<&'a str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    left: Option<Vec<&'a str>>,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// The full state of a room: `names` (sorted, at most `max_names`, possibly empty) when names are
/// in use: the room has named members, or the state replaces a change that names some or resends
/// the state after a reload (`renames`), so a client always tells it from a count-only change and
/// drops the names that left. `more` only when further names exist.
pub fn state_json(
    room: &str,
    count: usize,
    total: usize,
    roster: &Roster,
    max_names: usize,
    renames: bool,
) -> String {
    let names = (!roster.is_empty() || renames).then(|| roster.listed(max_names));
    let listed = names.as_ref().map_or(0, Vec::len);
    let json = StateJson {
        r#type: "presence",
        room,
        count,
        total,
        names,
        more: roster.len() - listed,
    };
    serde_json::to_string(&json).expect("presence state serializes")
}

/// The changes since a member's last presence message. `joined` and `left` (both, possibly
/// empty) when names are in use: the room has named members or this change names some. So a
/// client tells a change (`joined`/`left`) from a state (`names`/`more`) in a room with names;
/// in a room without names the two carry the same counts and mean the same.
pub fn change_json(
    room: &str,
    count: usize,
    total: usize,
    changes: &Changes,
    roster: &Roster,
) -> String {
    let in_use = !roster.is_empty() || !changes.is_empty();
    let json = ChangeJson {
        r#type: "presence",
        room,
        count,
        total,
        joined: in_use.then(|| changes.names(1)),
        left: in_use.then(|| changes.names(-1)),
    };
    serde_json::to_string(&json).expect("presence change serializes")
}

/// The `plain` message: the room count as decimal text.
pub fn plain(count: usize) -> String {
    count.to_string()
}

/// What a presence message to one member is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `state_json`: who is in the room.
    State,
    /// `change_json`: who joined and left since the member's last message.
    Change,
    /// `plain`: the count.
    Count,
}

/// What a room has gathered since its last presence message.
#[derive(Debug, Clone, Copy, Default)]
pub struct Pending {
    /// Names in the change (`Changes::len`).
    pub names: usize,
    /// The count differs from the last message's.
    pub count_changed: bool,
    /// Everyone needs the state again (the format or `max_names` changed on reload).
    pub resync: bool,
}

/// Who gets what at the end of a window: members that already have the state, and fresh members
/// (joined since the last message), who must get the state first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub members: Option<Kind>,
    pub fresh: Option<Kind>,
}

/// The presence rule: fresh members get the state; the others get the change, or the state when
/// the change would name more than `max_names` names (so no message outgrows the state's bound),
/// or nothing when nothing they can see changed.
pub fn plan(format: PresenceFormat, pending: Pending, max_names: usize) -> Plan {
    let changed = pending.names > 0 || pending.count_changed || pending.resync;
    match format {
        PresenceFormat::Off => Plan {
            members: None,
            fresh: None,
        },
        PresenceFormat::Plain => Plan {
            members: changed.then_some(Kind::Count),
            fresh: Some(Kind::Count),
        },
        PresenceFormat::Json if pending.resync || pending.names > max_names => Plan {
            members: Some(Kind::State),
            fresh: Some(Kind::State),
        },
        PresenceFormat::Json => Plan {
            members: changed.then_some(Kind::Change),
            fresh: Some(Kind::State),
        },
    }
}

/// When a room that changed at `now` sends: at once if its last message is older than `interval`
/// (or it never sent one), else when that window ends.
pub fn due(last_sent: Option<Instant>, now: Instant, interval: Duration) -> Instant {
    last_sent
        .and_then(|t| t.checked_add(interval))
        .map_or(now, |end| end.max(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::bounds::presence_bytes;

    fn roster(names: &[&str]) -> Roster {
        let mut r = Roster::default();
        for n in names {
            r.add(&Arc::from(*n), &n.to_lowercase());
        }
        r
    }

    #[test]
    fn state_lists_sorted_names_and_counts_the_rest() {
        let r = roster(&["carol", "alice", "bob"]);
        assert_eq!(
            state_json("1234", 3, 57, &r, 10, false),
            r#"{"type":"presence","room":"1234","count":3,"total":57,"names":["alice","bob","carol"]}"#
        );
        assert_eq!(
            state_json("1234", 4, 57, &r, 2, false),
            r#"{"type":"presence","room":"1234","count":4,"total":57,"names":["alice","bob"],"more":1}"#
        );
        assert_eq!(
            state_json("1234", 3, 57, &r, 0, false),
            r#"{"type":"presence","room":"1234","count":3,"total":57,"names":[],"more":3}"#
        );
    }

    #[test]
    fn a_state_replacing_a_change_has_names_even_when_nobody_is_left() {
        assert_eq!(
            state_json("r", 1, 1, &Roster::default(), 2, true),
            r#"{"type":"presence","room":"r","count":1,"total":1,"names":[]}"#
        );
    }

    #[test]
    fn state_without_names_has_no_names_key() {
        assert_eq!(
            state_json("lobby", 1, 1, &Roster::default(), 1000, false),
            r#"{"type":"presence","room":"lobby","count":1,"total":1}"#
        );
    }

    #[test]
    fn roster_is_a_multiset() {
        let mut r = roster(&["sam", "sam", "ann"]);
        assert_eq!(r.listed(10), ["ann", "sam", "sam"]);
        r.remove("sam", "sam");
        assert_eq!(
            r.listed(10),
            ["ann", "sam"],
            "one sam left, the other stays"
        );
        assert!(r.key_taken("sam"));
        r.remove("sam", "sam");
        assert!(!r.key_taken("sam"));
        r.remove("nobody", "nobody");
        assert_eq!(r.len(), 1);
    }

    #[test]
    fn uniqueness_is_by_key_and_display_is_as_given() {
        let mut r = Roster::default();
        r.add(&Arc::from("Bob"), "bob");
        assert!(r.key_taken("bob"));
        assert_eq!(r.listed(10), ["Bob"]);
    }

    #[test]
    fn change_lists_joined_and_left_when_names_are_in_use() {
        let mut c = Changes::default();
        c.joined(&Arc::from("dave"));
        c.left(&Arc::from("bob"));
        let nobody = Roster::default();
        assert_eq!(
            change_json("1234", 4, 58, &c, &roster(&["alice", "dave"])),
            r#"{"type":"presence","room":"1234","count":4,"total":58,"joined":["dave"],"left":["bob"]}"#
        );
        // The last named member left: the change still says who.
        let mut last = Changes::default();
        last.left(&Arc::from("bob"));
        assert_eq!(
            change_json("1234", 1, 9, &last, &nobody),
            r#"{"type":"presence","room":"1234","count":1,"total":9,"joined":[],"left":["bob"]}"#
        );
        // A nameless member joined a room with names: empty lists, so it is not read as a state.
        assert_eq!(
            change_json("1234", 5, 59, &Changes::default(), &roster(&["alice"])),
            r#"{"type":"presence","room":"1234","count":5,"total":59,"joined":[],"left":[]}"#
        );
        assert_eq!(
            change_json("1234", 4, 58, &Changes::default(), &nobody),
            r#"{"type":"presence","room":"1234","count":4,"total":58}"#
        );
    }

    #[test]
    fn changes_coalesce_to_the_net_difference() {
        let mut c = Changes::default();
        let (a, b) = (Arc::from("a"), Arc::from("b"));
        c.joined(&a);
        c.left(&a);
        assert!(c.is_empty(), "join then leave in one window is no change");
        c.joined(&b);
        c.joined(&b);
        c.left(&a);
        assert_eq!(c.len(), 3);
        assert_eq!(c.names(1), ["b", "b"]);
        assert_eq!(c.names(-1), ["a"]);
        c.clear();
        assert_eq!(c.len(), 0);
    }

    #[test]
    fn fresh_members_get_the_state_and_the_others_the_change() {
        let p = plan(
            PresenceFormat::Json,
            Pending {
                names: 2,
                ..Default::default()
            },
            10,
        );
        assert_eq!(p.members, Some(Kind::Change));
        assert_eq!(p.fresh, Some(Kind::State));
    }

    #[test]
    fn a_change_larger_than_max_names_is_sent_as_the_state() {
        let pending = Pending {
            names: 11,
            ..Default::default()
        };
        let p = plan(PresenceFormat::Json, pending, 10);
        assert_eq!(p.members, Some(Kind::State));
        let p = plan(
            PresenceFormat::Json,
            Pending {
                names: 10,
                ..pending
            },
            10,
        );
        assert_eq!(p.members, Some(Kind::Change));
    }

    #[test]
    fn nothing_visible_changed_sends_nothing_to_members() {
        let p = plan(PresenceFormat::Json, Pending::default(), 10);
        assert_eq!(p.members, None);
        let count_only = Pending {
            count_changed: true,
            ..Default::default()
        };
        assert_eq!(
            plan(PresenceFormat::Json, count_only, 10).members,
            Some(Kind::Change)
        );
        let resync = Pending {
            resync: true,
            ..Default::default()
        };
        assert_eq!(
            plan(PresenceFormat::Json, resync, 10).members,
            Some(Kind::State)
        );
    }

    #[test]
    fn plain_sends_counts_and_off_sends_nothing() {
        let changed = Pending {
            count_changed: true,
            ..Default::default()
        };
        let p = plan(PresenceFormat::Plain, changed, 10);
        assert_eq!((p.members, p.fresh), (Some(Kind::Count), Some(Kind::Count)));
        let p = plan(PresenceFormat::Off, changed, 10);
        assert_eq!((p.members, p.fresh), (None, None));
        assert_eq!(plain(12), "12");
    }

    #[test]
    fn a_quiet_room_sends_at_once_and_a_busy_one_when_its_window_ends() {
        let now = Instant::now();
        let window = Duration::from_millis(100);
        assert_eq!(due(None, now, window), now);
        assert_eq!(due(Some(now - window * 2), now, window), now);
        let recent = now - Duration::from_millis(30);
        assert_eq!(due(Some(recent), now, window), recent + window);
    }

    #[test]
    fn the_size_bound_holds_for_the_worst_names() {
        // 4-byte characters and escaped quotes, 64 characters each, in a 64-character room.
        let worst = ["\u{1D11E}".repeat(64), "\"".repeat(64), "\\".repeat(64)];
        let mut r = Roster::default();
        let mut c = Changes::default();
        for i in 0..30 {
            let mut name = worst[i % 3].clone();
            if i >= 3 {
                // Distinct names of the same size: swap the first character for a 4-byte one.
                name = format!(
                    "{}{}",
                    char::from_u32(0x1F600 + i as u32).unwrap(),
                    &name[4..]
                );
            }
            let name: Arc<str> = name.into();
            r.add(&name, &name);
            if i % 2 == 0 {
                c.joined(&name);
            } else {
                c.left(&name);
            }
        }
        let room = "r".repeat(64);
        let big = usize::MAX;
        let bound = presence_bytes(PresenceFormat::Json, 30) as usize;
        assert!(state_json(&room, big, big, &r, 30, true).len() <= bound);
        assert!(change_json(&room, big, big, &c, &r).len() <= bound);
        let more = state_json(&room, big, big, &r, 29, true);
        assert!(more.len() <= presence_bytes(PresenceFormat::Json, 29) as usize);
        assert_eq!(presence_bytes(PresenceFormat::Off, 30), 0);
        assert!(plain(big).len() as u64 <= presence_bytes(PresenceFormat::Plain, 0));
    }
}
