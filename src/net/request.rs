//! What a WebSocket upgrade request asks for: the room from the path, the name, session and token
//! from the query (the rules for room and member names are in [`crate::proto::names`]). Pure functions over untrusted text, so they are unit-tested and fuzzed on their
//! own.
//!
//! `?session=ID` names the client behind a connection (client.js keeps a random one per tab): a
//! reconnect with the same name and session takes its name over from its old connection instead
//! of being refused (SPEC §4). It is 16-128 characters of `A-Z a-z 0-9 _ -`, so that a guessable
//! one (`?session=1`) is refused rather than letting anyone who knows a name push its holder out.
//!
//! It parses only; it must not look at the server's state (admission is `net::admit`'s).

use crate::proto::names::{NameProblem, presence_name, room_from_path};

/// The shortest and longest `?session=` accepted, in characters.
pub const SESSION_CHARS: std::ops::RangeInclusive<usize> = 16..=128;

/// A parsed upgrade target: which room to join, under which name, with which token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub room: String,
    pub name: Option<String>,
    /// `?session=`: the client's own id, which lets it take over its name from a dead connection.
    pub session: Option<String>,
    pub token: Option<String>,
    /// `?since=EPOCH:SEQ`: the last message this client saw in the room ([`parse_since`]).
    pub since: Option<(String, u64)>,
}

/// Why a target was refused; the text is sent to the client with status 400.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadTarget {
    #[error("bad room name: use 1-64 letters or digits (any script) and . _ - (not . or ..)")]
    Room,
    #[error("bad name: {0}")]
    Name(NameProblem),
    #[error("bad session: use 16-128 characters of A-Z a-z 0-9 _ -, given once")]
    Session,
    #[error("bad query string")]
    Query,
    #[error("bad since: use EPOCH:SEQ as the room's presence state and messages give them, once")]
    Since,
}

/// Whether `s` is an acceptable `?session=`.
pub fn is_session(s: &str) -> bool {
    SESSION_CHARS.contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-'))
}

/// `EPOCH:SEQ` of `?since=`: an epoch of 1-32 ASCII letters, digits and `-` (what the hub makes),
/// and a decimal sequence number.
pub fn parse_since(value: &str) -> Option<(String, u64)> {
    let (epoch, seq) = value.split_once(':')?;
    let epoch_ok = (1..=32).contains(&epoch.len())
        && epoch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let seq = (!seq.is_empty() && seq.bytes().all(|b| b.is_ascii_digit()))
        .then(|| seq.parse().ok())
        .flatten()?;
    epoch_ok.then(|| (epoch.to_owned(), seq))
}

/// Parses `path` and `query` of an upgrade request. `/` is `default_room`, `/abc` is room `abc`,
/// `/%E6%88%91` is room `我`. `?username=` is taken as `?name=` (what the classic tutorials send),
/// so such a client is never silently anonymous; giving both is a `400` like giving one twice.
pub fn parse_target(
    path: &str,
    query: Option<&str>,
    default_room: &str,
) -> Result<Target, BadTarget> {
    let room = match path.strip_prefix('/') {
        Some("") => default_room.to_owned(),
        Some(segment) => room_from_path(segment).ok_or(BadTarget::Room)?,
        None => return Err(BadTarget::Room),
    };
    let mut target = Target {
        room,
        name: None,
        session: None,
        token: None,
        since: None,
    };
    let query = query.unwrap_or("");
    // form_urlencoded never fails; a lone '%' passes through, which the name check then judges.
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        match &*key {
            "name" | "username" => {
                if target.name.is_some() {
                    return Err(BadTarget::Name(NameProblem::Repeated));
                }
                target.name = Some(presence_name(&value).map_err(BadTarget::Name)?);
            }
            "session" => {
                if target.session.is_some() || !is_session(&value) {
                    return Err(BadTarget::Session);
                }
                target.session = Some(value.into_owned());
            }
            "token" => {
                if target.token.is_some() {
                    return Err(BadTarget::Query);
                }
                target.token = Some(value.into_owned());
            }
            "since" => {
                if target.since.is_some() {
                    return Err(BadTarget::Since);
                }
                target.since = Some(parse_since(&value).ok_or(BadTarget::Since)?);
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
    use crate::proto::names::NameProblem;

    #[test]
    fn since_is_an_epoch_and_a_number_given_once() {
        assert_eq!(parse_since("a1-b2:17"), Some(("a1-b2".into(), 17)));
        for bad in [
            "",
            ":1",
            "e:",
            "e:-1",
            "e:1x",
            "e\":1",
            &format!("{}:1", "e".repeat(33)),
        ] {
            assert_eq!(parse_since(bad), None, "{bad}");
        }
        let t = parse_target("/r", Some("since=e1:5"), "lobby").unwrap();
        assert_eq!(t.since, Some(("e1".into(), 5)));
        assert_eq!(
            parse_target("/r", Some("since=e1:5&since=e1:6"), "lobby").err(),
            Some(BadTarget::Since)
        );
    }

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
        for path in [
            "/a/b",
            "/a b",
            "/a%2Fb",
            "/%2E",
            "/%2e%2E",
            "/%FF",
            "/a%20b",
            "/\u{301}a",
            "/a\u{200b}",
            "/\u{3164}",
            "/a\u{fe0f}",
            "",
            "//",
            long.as_str(),
            "/a?",
            "/.",
            "/..",
        ] {
            assert_eq!(
                parse_target(path, None, "lobby"),
                Err(BadTarget::Room),
                "{path}"
            );
        }
        assert!(parse_target(&format!("/{}", "a".repeat(64)), None, "lobby").is_ok());
        assert!(parse_target(&format!("/{}", "房".repeat(64)), None, "lobby").is_ok());
        assert!(parse_target(&format!("/{}", "房".repeat(65)), None, "lobby").is_err());
    }

    #[test]
    fn rooms_of_any_script_are_percent_decoded_and_kept_in_nfc() {
        let room = |path: &str| parse_target(path, None, "lobby").map(|t| t.room);
        assert_eq!(
            room("/%E6%88%91%E7%9A%84%E6%88%BF%E9%97%B4").as_deref(),
            Ok("我的房间")
        );
        assert_eq!(room("/我的房间").as_deref(), Ok("我的房间"), "as sent raw");
        assert_eq!(room("/%41").as_deref(), Ok("A"));
        assert_eq!(room("/caf%C3%A9").as_deref(), Ok("café"));
        // e + combining acute is the one precomposed character.
        assert_eq!(room("/cafe%CC%81").as_deref(), Ok("caf\u{e9}"));
        assert_eq!(room("/Ελληνικά-1").as_deref(), Ok("Ελληνικά-1"));
        assert_eq!(
            room("/हिन्दी").as_deref(),
            Ok("हिन्दी"),
            "marks after a letter"
        );
        assert_eq!(room("/٣٤").as_deref(), Ok("٣٤"), "Arabic-Indic digits");
    }

    #[test]
    fn a_session_is_long_enough_not_to_be_guessed() {
        let t = parse_target("/r", Some("name=a&session=0123456789abcdef"), "lobby").unwrap();
        assert_eq!(t.session.as_deref(), Some("0123456789abcdef"));
        for q in [
            "session=short",
            "session=0123456789abcdef&session=0123456789abcdef",
            "session=0123456789abcde%20",
            &format!("session={}", "a".repeat(129)),
        ] {
            assert_eq!(
                parse_target("/", Some(q), "lobby"),
                Err(BadTarget::Session),
                "{q}"
            );
        }
    }

    #[test]
    fn username_is_taken_as_the_name() {
        let t = parse_target("/r", Some("username=amy"), "lobby").unwrap();
        assert_eq!(t.name.as_deref(), Some("amy"));
        assert_eq!(
            parse_target("/r", Some("username=amy&name=amy"), "lobby"),
            Err(BadTarget::Name(NameProblem::Repeated))
        );
    }

    #[test]
    fn name_and_token_come_from_the_query() {
        let t = parse_target("/r", Some("name=al%20ice&token=s3cret&v=2"), "lobby").unwrap();
        assert_eq!(t.name.as_deref(), Some("al ice"));
        assert_eq!(t.token.as_deref(), Some("s3cret"));
    }

    #[test]
    fn bad_names_are_refused_with_the_reason() {
        use NameProblem::*;
        for (q, why) in [
            ("name=", Empty),
            ("name=a%0Ab", Invisible),
            ("name=a&name=b", Repeated),
            (&format!("name={}", "x".repeat(65)), TooLong),
            ("name=bob%E2%80%8B", Invisible), // U+200B zero width space (Cf)
            ("name=%E2%80%AEbob", Invisible), // U+202E right-to-left override (Cf)
            ("name=%EF%BB%BFbob", Invisible), // U+FEFF byte-order mark (Cf)
            ("name=bob%E2%80%A8x", Invisible), // U+2028 line separator (Zl)
            ("name=bob%E2%80%A9x", Invisible), // U+2029 paragraph separator (Zp)
            ("name=bob%C2%85", Invisible),    // U+0085 next line (Cc)
            ("name=a%09b", Invisible),        // tab (Cc)
            ("name=a%C2%A0b", Whitespace),    // no-break space
            ("name=a%E3%80%80b", Whitespace), // ideographic space
            ("name=%20bob", Whitespace),
            ("name=bob%20", Whitespace),
        ] {
            assert_eq!(
                parse_target("/", Some(q), "lobby"),
                Err(BadTarget::Name(why)),
                "{q}"
            );
        }
        let message = parse_target("/", Some("name=bob%E2%80%8B"), "lobby")
            .unwrap_err()
            .to_string();
        assert!(message.contains("invisible"), "{message}");
        assert_eq!(
            parse_target("/", Some("token=a&token=b"), "lobby"),
            Err(BadTarget::Query)
        );
    }
}
