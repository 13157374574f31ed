//! Any text as a configuration file: parsing and validation return problems, never panic, and
//! every problem has a location inside the text.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsline::Config;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(problems) = Config::from_toml(text) {
        assert!(!problems.is_empty());
        let lines = text.lines().count().max(1) + 1;
        for p in problems {
            assert!(p.line >= 1 && p.line <= lines, "line {} of {lines}: {}", p.line, p.message);
            assert!(p.column >= 1);
        }
    }
});
