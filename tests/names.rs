//! Names and rooms as people use them: taking one's own name over after a network drop
//! (`?session=`), confusable names, a room that requires a name, `?username=`, room names in any
//! script, and rooms by pattern (`[[rooms]]`) with their own settings, over real TLS.

mod common;

use common::start;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use wsline::config::Config;

const SESSION: &str = "0123456789abcdef0123456789abcdef";
const OTHER_SESSION: &str = "fedcba9876543210fedcba9876543210";

/// `[[rooms]]` entries parsed from TOML, as a file would give them.
fn rooms(toml: &str) -> Vec<wsline::config::RoomRule> {
    Config::from_toml(&format!("[tls]\nenabled = false\n{toml}"))
        .unwrap()
        .rooms
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reconnect_with_its_session_takes_its_name_over_and_others_still_get_name_taken() {
    let server = start(|_| {}).await;
    let mut watcher = server.connect("/t?name=watcher").await;
    let mut ghost = server
        .connect(&format!("/t?name=sam&session={SESSION}"))
        .await;
    server
        .wait_stats("two members", |s| s["rooms"]["t"] == 2)
        .await;
    // Someone else, without the session or with another, is refused as before.
    for query in [
        "name=sam".to_owned(),
        format!("name=Sam&session={OTHER_SESSION}"),
    ] {
        let mut other = server.connect(&format!("/t?{query}")).await;
        let close = other.closed().await;
        assert_eq!(
            (close.code, close.reason.as_str()),
            (CloseCode::Policy, "name taken")
        );
    }
    // The same client again (its old socket is a ghost that nobody closed): it takes over at once.
    let mut back = server
        .connect(&format!("/t?name=sam&session={SESSION}"))
        .await;
    let close = ghost.closed().await;
    assert_eq!(u16::from(close.code), 4001);
    assert_eq!(close.reason.as_str(), "replaced by a new connection");
    let state = back.recv_presence().await;
    assert_eq!(
        state["names"],
        serde_json::json!(["sam", "watcher"]),
        "{state}"
    );
    assert_eq!(state["count"], 2);
    // The watcher never saw sam leave: the name did not leave the room.
    back.send_text("I am back").await;
    loop {
        let m = watcher.recv().await;
        if let Ok(text) = m.to_text()
            && text.starts_with("{\"type\":\"presence\"")
        {
            assert!(!text.contains("\"left\":[\"sam\"]"), "{text}");
            continue;
        }
        assert_eq!(m, Message::text("I am back"));
        break;
    }
    assert_eq!(server.stats().await["rooms"]["t"], 2);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_session_is_a_400() {
    let server = start(|_| {}).await;
    for query in ["session=short", "name=a&session=has%20space%20in%20it%20ok"] {
        let (status, _, body) = server
            .http(&common::upgrade_request(&format!("/r?{query}"), ""))
            .await;
        assert_eq!(status, 400, "{query}");
        assert!(body.starts_with("bad session"), "{body}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_confusable_name_is_taken() {
    let server = start(|_| {}).await;
    let _alice = server.connect("/c?name=alice").await;
    // Cyrillic а (U+0430) then Latin "lice": looks exactly like "alice".
    let mut spoof = server.connect("/c?name=%D0%B0lice").await;
    let close = spoof.closed().await;
    assert_eq!(close.reason.as_str(), "name taken");
    let _alicia = server.connect("/c?name=alicia").await;
    server
        .wait_stats("alice and alicia", |s| s["rooms"]["c"] == 2)
        .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_name_refuses_a_nameless_member_with_400_globally_and_per_room() {
    let server = start(|c| c.presence.require_name = true).await;
    let (status, _, body) = server.http(&common::upgrade_request("/r", "")).await;
    assert_eq!(status, 400);
    assert!(body.starts_with("name required"), "{body}");
    let _named = server.connect("/r?name=amy").await;
    server.stop().await;

    let server = start(|c| {
        c.rooms = rooms("[[rooms]]\nmatch = \"chat-*\"\npresence = { require_name = true }\n")
    })
    .await;
    assert_eq!(server.try_connect("/chat-1").await.err(), Some(400));
    let _anyone = server.connect("/count-1").await;
    let _named = server.connect("/chat-1?name=amy").await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tutorials_username_parameter_is_the_name() {
    let server = start(|_| {}).await;
    let mut amy = server.connect("/u?username=amy").await;
    let state = amy.recv_presence().await;
    assert_eq!(state["names"], serde_json::json!(["amy"]), "{state}");
    let mut again = server.connect("/u?name=amy").await;
    assert_eq!(again.closed().await.reason.as_str(), "name taken");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chinese_room_name_works_end_to_end() {
    let server = start(|c| c.relay.history = 5).await;
    let path = "/%E6%88%91%E7%9A%84%E6%88%BF%E9%97%B4"; // 我的房间
    let mut a = server
        .connect(&format!("{path}?name=%E5%B0%8F%E6%98%8E"))
        .await; // 小明
    let state = a.recv_presence().await;
    assert_eq!(state["room"], "我的房间", "{state}");
    assert_eq!(state["names"], serde_json::json!(["小明"]));
    a.send_text("你好").await;
    assert_eq!(a.recv_relayed().await, Message::text("你好"));
    // A second member gets the room's history.
    let mut b = server.connect(path).await;
    assert_eq!(b.recv_relayed().await, Message::text("你好"));
    let s = server
        .wait_stats("two in the room", |s| s["rooms"]["我的房间"] == 2)
        .await;
    assert_eq!(s["room_count"], 1, "{s}");
    // Not a room: a slash, a lone mark, an invisible filler.
    for bad in ["/a%2Fb", "/%CC%81a", "/%E3%85%A4"] {
        assert_eq!(server.try_connect(bad).await.err(), Some(400), "{bad}");
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rooms_by_pattern_carry_their_own_envelope_presence_and_echo() {
    let server = start(|c| {
        c.rooms = rooms(concat!(
            "[[rooms]]\nmatch = \"count-*\"\npresence = { format = \"plain\" }\n",
            "[[rooms]]\nmatch = \"chat-*\"\nrelay = { envelope = \"json\", echo = false }\n",
        ))
    })
    .await;
    let mut counted = server.connect("/count-1").await;
    assert_eq!(counted.recv().await, Message::text("1"));
    counted.send_text("42").await;
    assert_eq!(counted.recv().await, Message::text("42"), "raw, echoed");

    let mut amy = server.connect("/chat-1?name=amy").await;
    let mut bo = server.connect("/chat-1?name=bo").await;
    amy.recv_presence().await;
    bo.recv_presence().await;
    bo.send_text("hi").await;
    assert_eq!(
        amy.recv_relayed().await,
        Message::text(r#"{"type":"message","room":"chat-1","from":"bo","data":"hi"}"#)
    );
    // No echo in chat-*: bo's next message is amy's, not its own.
    amy.send_text("yo").await;
    let got = bo.recv_relayed().await;
    assert!(
        got.to_text().unwrap().contains(r#""from":"amy""#),
        "{got:?}"
    );

    // Rooms matching no entry keep the global settings: raw relay, JSON presence.
    let mut plain = server.connect("/lobby2").await;
    assert!(common::is_presence(&plain.recv().await));
    plain.send_text("raw").await;
    assert_eq!(plain.recv_relayed().await, Message::text("raw"));
    server.stop().await;
}
