//! What a WebSocket upgrade request asks for: the room from the path, the name and token from the
//! query. Pure functions over untrusted text, so they are unit-tested and fuzzed on their own.

/// The longest room name and presence name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// A parsed upgrade target: which room to join, under which name, with which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub room: String,
    pub name: Option<String>,
    pub token: Option<String>,
}

/// Why a target was refused; the text is sent to the client with status 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    #[error("bad room name: use 1-64 characters of A-Z a-z 0-9 . _ -")]
    Room,
    #[error("bad name: use 1-64 printable characters")]
    Name,
    #[error("bad query string")]
    Query,
}

/// A room name is 1–64 characters of `A-Z a-z 0-9 . _ -`.
pub fn is_room_name(s: &str) -> bool {
    (1..=MAX_NAME_CHARS).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// A presence name is 1–64 printable characters (no control characters).
pub fn is_presence_name(s: &str) -> bool {
    let count = s.chars().count();
    (1..=MAX_NAME_CHARS).contains(&count) && !s.chars().any(char::is_control)
}

/// The form of a presence name that uniqueness is judged on: two names with the same key are one
/// name in a room (SPEC §4: the NFKC case-folded form).
pub fn name_key(name: &str) -> String {
    name.to_owned()
}

/// Parses `path` and `query` of an upgrade request. `/` is `default_room`, `/abc` is room `abc`.
pub fn parse_target(
    path: &str,
    query: Option<&str>,
    default_room: &str,
) -> Result<Target, BadTarget> {
    let room = match path.strip_prefix('/') {
        Some("") => default_room,
        Some(name) if is_room_name(name) => name,
        _ => return Err(BadTarget::Room),
    };
    let mut target = Target {
        room: room.to_owned(),
        name: None,
        token: None,
    };
    let query = query.unwrap_or("");
    // form_urlencoded never fails; a lone '%' passes through, which the name check then judges.
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "name" => {
                if target.name.is_some() || !is_presence_name(&value) {
                    return Err(BadTarget::Name);
                }
                target.name = Some(value.into_owned());
            }
            "token" => {
                if target.token.is_some() {
                    return Err(BadTarget::Query);
                }
                target.token = Some(value.into_owned());
            }
            // Other parameters are the client's business (cache busters, app state).
            _ => {}
        }
    }
    Ok(target)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_is_the_default_room() {
        let t = parse_target("/", None, "lobby").unwrap();
        assert_eq!(t.room, "lobby");
        assert_eq!(t.name, None);
    }

    #[test]
    fn path_names_the_room() {
        assert_eq!(parse_target("/1234", None, "lobby").unwrap().room, "1234");
        assert_eq!(
            parse_target("/a.b_c-D", None, "lobby").unwrap().room,
            "a.b_c-D"
        );
    }

    #[test]
    fn bad_rooms_are_refused() {
        let long = format!("/{}", "a".repeat(65));
        for path in ["/a/b", "/a b", "/%41", "/é", "", "//", long.as_str(), "/a?"] {
            assert_eq!(
                parse_target(path, None, "lobby"),
                Err(BadTarget::Room),
                "{path}"
            );
        }
        assert!(parse_target(&format!("/{}", "a".repeat(64)), None, "lobby").is_ok());
    }

    #[test]
    fn name_and_token_come_from_the_query() {
        let t = parse_target("/r", Some("name=al%20ice&token=s3cret&v=2"), "lobby").unwrap();
        assert_eq!(t.name.as_deref(), Some("al ice"));
        assert_eq!(t.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_names_are_refused() {
        for q in [
            "name=",
            "name=a%0Ab",
            "name=a&name=b",
            &format!("name={}", "x".repeat(65)),
        ] {
            assert_eq!(
                parse_target("/", Some(q), "lobby"),
                Err(BadTarget::Name),
                "{q}"
            );
        }
        assert_eq!(
            parse_target("/", Some("token=a&token=b"), "lobby"),
            Err(BadTarget::Query)
        );
    }
}
