//! Any request path and query: the parser accepts only valid room names and presence names.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wsline::net::request::parse_target;
use wsline::proto::names::{is_presence_name, is_room_name};

fuzz_target!(|input: (&str, Option<&str>)| {
    let (path, query) = input;
    if let Ok(target) = parse_target(path, query, "lobby") {
        assert!(is_room_name(&target.room), "room {:?} from {path:?}", target.room);
        if let Some(name) = &target.name {
            assert!(is_presence_name(name), "name {name:?} from {query:?}");
        }
    }
});
