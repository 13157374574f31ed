//! The product's rules for names: which strings are rooms and which are member names, and when
//! two member names are one. Pure functions over untrusted text (unit-tested and fuzzed); they
//! import nothing of the crate, so configuration, the relay and the cluster all share them.
//!
//! Room names are what people type into an address bar in their own language: 1-64 characters
//! (after percent-decoding and NFC) of letters, combining marks and digits of any script and
//! `. _ -`, so `我的房间` and `café` are rooms; never `.` or `..`, which a proxy or a browser would
//! resolve as path steps, and never a default-ignorable (invisible) letter or mark such as the
//! Hangul filler or a variation selector. The decoded NFC form is the room's one name everywhere:
//! in Redis channel names, `/stats`, presence messages and logs.
//!
//! Names are what people read in a presence list, so they are held to what a reader can see: a
//! name is kept in NFC, must not contain control, format or invisible separator characters
//! (Unicode Cc, Cf, Zl, Zp: `bob\u{200b}`, a right-to-left override, a byte-order mark), and no
//! whitespace but inner ASCII spaces. Two names are one when their NFKC case-folded forms
//! ([`name_key`]) are equal, so `Bob`, `bob` and `ｂｏｂ` cannot stand for different people, and
//! that form is also reduced to its UTS #39 confusable skeleton (`unicode-security`), so a
//! Cyrillic `аlice` and a Latin `alice`, which a reader cannot tell apart, are one name too.

/// The longest room name and presence name, in characters.
pub const MAX_NAME_CHARS: usize = 64;

/// Why a presence name was refused (the text after "bad name: " in the `400`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameProblem {
    #[error("empty")]
    Empty,
    #[error("longer than 64 characters")]
    TooLong,
    #[error("contains a control, format or invisible character")]
    Invisible,
    #[error("whitespace other than spaces between words")]
    Whitespace,
    #[error("given twice")]
    Repeated,
}

/// Whether `s` is a room name as it is kept: in NFC, 1–64 characters, each a letter, a combining
/// mark (not first) or a decimal digit of any script, or `. _ -`; not `.` or `..`; no
/// default-ignorable (invisible) letters or marks.
pub fn is_room_name(s: &str) -> bool {
    use unicode_normalization::is_nfc;
    let mut count = 0;
    for (i, c) in s.chars().enumerate() {
        count += 1;
        if count > MAX_NAME_CHARS || !room_char(c, i == 0) {
            return false;
        }
    }
    count > 0 && s != "." && s != ".." && is_nfc(s)
}

/// One character of a room name (see [`is_room_name`]).
fn room_char(c: char, first: bool) -> bool {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    if matches!(c, '.' | '_' | '-') {
        return true;
    }
    // Letters and marks that render as nothing (UAX #44 Default_Ignorable_Code_Point).
    let invisible = matches!(c,
        '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{180B}'..='\u{180F}'
        | '\u{3164}' | '\u{FE00}'..='\u{FE0F}' | '\u{FFA0}' | '\u{E0100}'..='\u{E01EF}');
    let allowed = match get_general_category(c) {
        G::UppercaseLetter
        | G::LowercaseLetter
        | G::TitlecaseLetter
        | G::ModifierLetter
        | G::OtherLetter
        | G::DecimalNumber => true,
        G::NonspacingMark | G::SpacingMark | G::EnclosingMark => !first,
        _ => false,
    };
    allowed && !invisible
}

/// The room named by a request path's one segment (after `/`): percent-decoded, NFC, checked.
pub fn room_from_path(segment: &str) -> Option<String> {
    use unicode_normalization::UnicodeNormalization;
    let decoded = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .ok()?;
    let room: String = decoded.nfc().collect();
    is_room_name(&room).then_some(room)
}

/// Checks a presence name and returns it in NFC, the form it is shown and listed in.
pub fn presence_name(raw: &str) -> Result<String, NameProblem> {
    use unicode_general_category::{GeneralCategory as G, get_general_category};
    use unicode_normalization::UnicodeNormalization;

    let name: String = raw.nfc().collect();
    let count = name.chars().count();
    if count == 0 {
        return Err(NameProblem::Empty);
    }
    if count > MAX_NAME_CHARS {
        return Err(NameProblem::TooLong);
    }
    let invisible = |c: char| {
        matches!(
            get_general_category(c),
            G::Control | G::Format | G::LineSeparator | G::ParagraphSeparator
        )
    };
    if name.chars().any(invisible) {
        return Err(NameProblem::Invisible);
    }
    let bad_space = |c: char| c.is_whitespace() && c != ' ';
    if name.chars().any(bad_space) || name.starts_with(' ') || name.ends_with(' ') {
        return Err(NameProblem::Whitespace);
    }
    Ok(name)
}

/// Whether `s` is an acceptable presence name as given (see [`presence_name`]).
pub fn is_presence_name(s: &str) -> bool {
    presence_name(s).is_ok()
}

/// The form of a presence name that uniqueness is judged on: two names with the same key are one
/// name in a room (SPEC §4: the NFKC case-folded form, so `Bob`, `bob` and `ｂｏｂ` are one, then
/// its UTS #39 confusable skeleton, folded again, so `аlice` (Cyrillic а) and `alice` are one).
pub fn name_key(name: &str) -> String {
    let folded = fold(name);
    fold(&unicode_security::skeleton(&folded).collect::<String>())
}

/// NFKC, case fold, NFKC: folding can undo a composition (e.g. U+0130), so normalise once more.
fn fold(s: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    let folded = caseless::default_case_fold_str(&s.nfkc().collect::<String>());
    folded.nfkc().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_kept_in_nfc_and_counted_in_characters() {
        // "e" + combining acute is stored as the one precomposed character.
        assert_eq!(presence_name("Rene\u{301}").as_deref(), Ok("Ren\u{e9}"));
        let sixty_four = "é".repeat(64);
        assert_eq!(
            presence_name(&sixty_four).as_deref(),
            Ok(sixty_four.as_str())
        );
        // 64 decomposed characters become 64 after NFC though they are 128 code points.
        assert!(presence_name(&"e\u{301}".repeat(64)).is_ok());
        assert!(presence_name("alice smith").is_ok());
        assert!(presence_name("a  b").is_ok(), "inner spaces, however many");
        assert!(presence_name("日本語").is_ok());
    }

    #[test]
    fn uniqueness_is_judged_on_the_nfkc_case_folded_form() {
        let bob = name_key("bob");
        assert_eq!(name_key("Bob"), bob);
        assert_eq!(name_key("BOB"), bob);
        assert_eq!(name_key("ｂｏｂ"), bob, "fullwidth");
        assert_eq!(name_key("Ｂｏｂ"), bob, "fullwidth capital");
        assert_eq!(name_key("Straße"), name_key("STRASSE"));
        assert_ne!(name_key("bob"), name_key("rob"));
        // UTS #39 confusables: Cyrillic а (U+0430) and Latin a look the same.
        assert_eq!(name_key("\u{430}lice"), name_key("alice"));
        assert_eq!(name_key("\u{410}LICE"), name_key("alice"));
        assert_eq!(name_key("раураl"), name_key("paypal"), "Cyrillic р, а, у");
        assert_ne!(name_key("alice"), name_key("alicia"));
        assert_ne!(name_key("我"), name_key("你"));
        // The invisible variants never get this far: they are refused as names.
        for spoof in ["bob\u{200b}", "\u{202e}bob", "\u{feff}bob"] {
            assert_eq!(
                presence_name(spoof),
                Err(NameProblem::Invisible),
                "{spoof:?}"
            );
        }
    }

    #[test]
    fn dots_are_rooms_only_with_something_else() {
        assert!(is_room_name("..."));
        assert!(is_room_name("房."));
        assert!(is_room_name(".a"));
        assert!(!is_room_name("."));
        assert!(!is_room_name(".."));
    }

    #[test]
    fn room_names_are_kept_in_nfc() {
        assert!(
            is_room_name("我的房间") && !is_room_name("cafe\u{301}"),
            "NFC only"
        );
    }
}
