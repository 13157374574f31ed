//! The schema check: every key of a parsed TOML document against the sections and fields of
//! the raw configuration, each value deserialised on its own, so one run reports every unknown
//! key and every value of the wrong type instead of stopping at the first.
//!
//! The schema is not written out a second time: the key names of each section come from the field
//! list serde derives for its struct ([`fields`]), and only the section table below names the
//! structs. A unit test holds that table equal to the raw configuration's own fields.
//!
//! It checks shapes and types only: ranges and relations are `validate`'s.

use std::collections::BTreeMap;

use serde::de::{DeserializeOwned, Error as _, Visitor};
use toml::Spanned;
use toml::de::{DeString, DeTable, DeValue, ValueDeserializer};

use super::problems::line_column;
use super::{
    Api, Cluster, Heartbeat, HeartbeatOverride, Limits, Log, Metrics, Presence, PresenceOverride,
    Problem, Relay, RelayOverride, RoomRule, Security, Server, Tls, Web,
};

/// Keys whose values are secrets (a token, a URL with a password): an error about them says what
/// is wrong without showing the value, because errors reach the journal on every SIGHUP.
pub(super) const SECRET_KEYS: [&str; 4] = [
    "security.token",
    "security.jwt",
    "cluster.redis",
    "api.keys",
];

/// The names of a section's keys.
type Fields = fn() -> &'static [&'static str];
/// Deserialises one `key = value` of a section on its own; the error message on failure.
type Leaf = for<'i> fn(&Spanned<DeString<'i>>, &Spanned<DeValue<'i>>) -> Result<(), String>;

/// Every section of the file: its name, its keys and the check of one of its values.
const SECTIONS: [(&str, Fields, Leaf); 12] = [
    ("server", fields::<Server>, leaf::<Server>),
    ("tls", fields::<Tls>, leaf::<Tls>),
    ("relay", fields::<Relay>, leaf::<Relay>),
    ("presence", fields::<Presence>, leaf::<Presence>),
    ("heartbeat", fields::<Heartbeat>, leaf::<Heartbeat>),
    ("limits", fields::<Limits>, leaf::<Limits>),
    ("security", fields::<Security>, leaf::<Security>),
    ("log", fields::<Log>, leaf::<Log>),
    ("metrics", fields::<Metrics>, leaf::<Metrics>),
    ("web", fields::<Web>, leaf::<Web>),
    ("cluster", fields::<Cluster>, leaf::<Cluster>),
    ("api", fields::<Api>, leaf::<Api>),
];

/// The sections a `[[rooms]]` entry may override: their names, keys and the check of one value.
const ROOM_SECTIONS: [(&str, Fields, Leaf); 3] = [
    ("relay", fields::<RelayOverride>, leaf::<RelayOverride>),
    (
        "presence",
        fields::<PresenceOverride>,
        leaf::<PresenceOverride>,
    ),
    (
        "heartbeat",
        fields::<HeartbeatOverride>,
        leaf::<HeartbeatOverride>,
    ),
];

/// The outcome of the schema check.
pub(super) struct Checked<'i> {
    /// The document without the keys that have a problem: those take their defaults, so the
    /// rest can still be deserialised and validated.
    pub parsed: Spanned<DeTable<'i>>,
    pub problems: Vec<Problem>,
    /// `section.key` of every value that is unknown or did not deserialise.
    pub rejected: Vec<String>,
    /// `section.key` to the line and column of its value, for every key that parsed.
    pub keys: BTreeMap<String, (usize, usize)>,
}

/// Checks every section and key of `doc` (parsed from `text`).
pub(super) fn check<'i>(text: &str, doc: &Spanned<DeTable<'i>>) -> Checked<'i> {
    let mut out = Checked {
        parsed: Spanned::new(doc.span(), DeTable::new()),
        problems: Vec::new(),
        rejected: Vec::new(),
        keys: BTreeMap::new(),
    };
    let problem = |offset: usize, message: String| Problem::at(text, offset, message);
    for (name, value) in doc.get_ref() {
        let section: &str = name.get_ref();
        if section == "rooms" {
            let rooms = check_rooms(text, value, &mut out);
            out.parsed
                .get_mut()
                .insert(name.clone(), Spanned::new(value.span(), rooms));
            continue;
        }
        let Some((_, fields, leaf)) = SECTIONS.iter().find(|(s, ..)| *s == section) else {
            let message = if value.get_ref().is_table() {
                format!(
                    "[{section}]: unknown section; the sections are {}, and [[rooms]]",
                    SECTIONS.map(|s| s.0).join(", ")
                )
            } else {
                format!(
                    "{section}: unknown key at the top level; every key belongs to a section such as [server]"
                )
            };
            out.problems.push(problem(name.span().start, message));
            continue;
        };
        let DeValue::Table(table) = value.get_ref() else {
            let message = format!("{section}: must be a table, written [{section}]");
            out.problems.push(problem(value.span().start, message));
            out.rejected
                .extend(fields().iter().map(|key| format!("{section}.{key}")));
            continue;
        };
        let mut kept = DeTable::new();
        for (key, leaf_value) in table {
            let dotted = format!("{section}.{}", key.get_ref());
            if !fields().contains(&&**key.get_ref()) {
                let message = format!(
                    "{dotted}: unknown key; [{section}] has {}",
                    fields().join(", ")
                );
                out.problems.push(problem(key.span().start, message));
                out.rejected.push(dotted);
                continue;
            }
            let offset = leaf_value.span().start;
            match leaf(key, leaf_value) {
                Ok(()) => {
                    out.keys.insert(dotted, line_column(text, offset));
                    kept.insert(key.clone(), leaf_value.clone());
                }
                Err(message) => {
                    let message = if SECRET_KEYS.contains(&dotted.as_str()) {
                        "must be a string (the value is secret and not shown)".to_owned()
                    } else {
                        message
                    };
                    out.problems
                        .push(problem(offset, format!("{dotted}: {message}")));
                    out.rejected.push(dotted);
                }
            }
        }
        out.parsed.get_mut().insert(
            name.clone(),
            Spanned::new(value.span(), DeValue::Table(kept)),
        );
    }
    out
}

/// Checks the `[[rooms]]` array: each entry a table of `match` and the overridable sections, each
/// value on its own. Returns the array without what had a problem, for deserialising.
fn check_rooms<'i>(text: &str, value: &Spanned<DeValue<'i>>, out: &mut Checked<'i>) -> DeValue<'i> {
    let problem = |offset: usize, message: String| Problem::at(text, offset, message);
    let mut kept_rooms = toml::de::DeArray::new();
    let DeValue::Array(entries) = value.get_ref() else {
        let message = "rooms: must be a list of tables, written [[rooms]]".to_owned();
        out.problems.push(problem(value.span().start, message));
        out.rejected.push("rooms".into());
        return DeValue::Array(kept_rooms);
    };
    for (i, entry) in entries.iter().enumerate() {
        let at = format!("[[rooms]] #{}", i + 1);
        let DeValue::Table(table) = entry.get_ref() else {
            out.problems.push(problem(
                entry.span().start,
                format!("{at}: must be a table"),
            ));
            // Kept (empty) so that the entries after it keep their index.
            out.rejected.push(format!("rooms.{i}.match"));
            kept_rooms.push(Spanned::new(entry.span(), DeValue::Table(DeTable::new())));
            continue;
        };
        let mut kept = DeTable::new();
        for (key, v) in table {
            let name: &str = key.get_ref();
            let dotted = format!("rooms.{i}.{name}");
            if name == "match" {
                match leaf::<RoomRule>(key, v) {
                    Ok(()) => drop(kept.insert(key.clone(), v.clone())),
                    Err(message) => {
                        out.problems
                            .push(problem(v.span().start, format!("{at}: match: {message}")));
                        out.rejected.push(dotted);
                    }
                }
                continue;
            }
            let Some((_, fields, leaf)) = ROOM_SECTIONS.iter().find(|(s, ..)| *s == name) else {
                out.problems.push(problem(
                    key.span().start,
                    format!(
                        "{at}: {name}: unknown key; an entry has match, {}",
                        ROOM_SECTIONS.map(|s| s.0).join(", ")
                    ),
                ));
                out.rejected.push(dotted);
                continue;
            };
            let DeValue::Table(section) = v.get_ref() else {
                out.problems.push(problem(
                    v.span().start,
                    format!("{at}: {name}: must be a table, e.g. {name} = {{ ... }}"),
                ));
                out.rejected.push(dotted);
                continue;
            };
            let mut kept_section = DeTable::new();
            for (leaf_key, leaf_value) in section {
                let dotted = format!("rooms.{i}.{name}.{}", leaf_key.get_ref());
                let shown = format!("{name}.{}", leaf_key.get_ref());
                if !fields().contains(&&**leaf_key.get_ref()) {
                    out.problems.push(problem(
                        leaf_key.span().start,
                        format!(
                            "{at}: {shown}: unknown key; [[rooms]] may set {name}.{{{}}}",
                            fields().join(", ")
                        ),
                    ));
                    out.rejected.push(dotted);
                    continue;
                }
                match leaf(leaf_key, leaf_value) {
                    Ok(()) => drop(kept_section.insert(leaf_key.clone(), leaf_value.clone())),
                    Err(message) => {
                        out.problems.push(problem(
                            leaf_value.span().start,
                            format!("{at}: {shown}: {message}"),
                        ));
                        out.rejected.push(dotted);
                    }
                }
            }
            kept.insert(
                key.clone(),
                Spanned::new(v.span(), DeValue::Table(kept_section)),
            );
        }
        kept_rooms.push(Spanned::new(entry.span(), DeValue::Table(kept)));
    }
    DeValue::Array(kept_rooms)
}

/// The byte offset of `key` (`match`, `relay.history`, ...) in the `index`-th `[[rooms]]` entry:
/// its value, else its section, else the entry.
pub(super) fn locate_room(doc: &Spanned<DeTable<'_>>, index: usize, key: &str) -> usize {
    let Some(rooms) = doc.get_ref().get("rooms") else {
        return 0;
    };
    let DeValue::Array(entries) = rooms.get_ref() else {
        return rooms.span().start;
    };
    let Some(entry) = entries.get(index) else {
        return rooms.span().start;
    };
    let DeValue::Table(table) = entry.get_ref() else {
        return entry.span().start;
    };
    let (section, leaf) = key.split_once('.').unwrap_or((key, ""));
    let Some(value) = table.get(section) else {
        return entry.span().start;
    };
    match value.get_ref() {
        DeValue::Table(t) if !leaf.is_empty() => {
            t.get(leaf).map_or(value.span().start, |v| v.span().start)
        }
        _ => value.span().start,
    }
}

/// The byte offset of a dotted key's value in the document, else of its section, else 0.
pub(super) fn locate(doc: &Spanned<DeTable<'_>>, key: &str) -> usize {
    let (section, leaf) = key.split_once('.').unwrap_or((key, ""));
    let Some(table) = doc.get_ref().get(section) else {
        return 0;
    };
    match table.get_ref() {
        DeValue::Table(t) => t
            .get(leaf)
            .map_or(table.span().start, |value| value.span().start),
        _ => table.span().start,
    }
}

/// Deserialises the section struct `T` from a table holding only `key = value`: every other
/// field takes its default, so the result says whether this one value fits.
fn leaf<'i, T: DeserializeOwned>(
    key: &Spanned<DeString<'i>>,
    value: &Spanned<DeValue<'i>>,
) -> Result<(), String> {
    let mut one = DeTable::new();
    one.insert(key.clone(), value.clone());
    let table = Spanned::new(value.span(), DeValue::Table(one));
    T::deserialize(ValueDeserializer::from(table))
        .map(drop)
        .map_err(|e| plain_types(e.message().trim_end()))
}

/// serde names Rust types (`expected u32`); a user wrote TOML, so say what TOML to write.
fn plain_types(message: &str) -> String {
    const PLAIN: [(&str, &str); 4] = [
        ("expected usize", "expected a whole number, 0 or more"),
        ("expected u64", "expected a whole number, 0 or more"),
        (
            "expected u32",
            "expected a whole number from 0 to 4294967295",
        ),
        ("expected a boolean", "expected true or false"),
    ];
    PLAIN
        .iter()
        .find(|(rust, _)| message.ends_with(rust))
        .map_or_else(
            || message.to_owned(),
            |(rust, plain)| format!("{}{plain}", &message[..message.len() - rust.len()]),
        )
}

/// The field names serde derived for the struct `T`, as `deserialize_struct` is handed them.
fn fields<T: DeserializeOwned>() -> &'static [&'static str] {
    let mut found: &'static [&'static str] = &[];
    // The probe always fails: it only records what the derived code asked for.
    let _ = T::deserialize(FieldProbe(&mut found));
    found
}

/// A deserializer that records the field list of the struct asked of it, then fails.
struct FieldProbe<'a>(&'a mut &'static [&'static str]);

impl<'de> serde::Deserializer<'de> for FieldProbe<'_> {
    type Error = serde::de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(Self::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(Self::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
        option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier
        ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::raw::RawConfig;

    #[test]
    fn the_section_table_is_config_itself() {
        let mut sections: Vec<&str> = SECTIONS.iter().map(|s| s.0).collect();
        sections.push("rooms");
        assert_eq!(sections, fields::<RawConfig>());
    }

    #[test]
    fn field_names_come_from_serde() {
        assert_eq!(fields::<Web>(), ["enabled", "client"]);
        assert!(fields::<Limits>().contains(&"handshake_timeout"));
    }
}
