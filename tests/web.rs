//! The browser side over HTTP (`web.enabled`): the page at `/` and `/ROOM`, `/client.js` and
//! `/demo.js` with their types and Content-Security-Policy, and `404` for all but `/` when off.
//! The pages themselves run in a real browser in `tests/browser.rs`.

mod common;

use common::start;

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_the_client_and_rooms_are_served_with_a_strict_policy() {
    let server = start(|c| c.web.enabled = true).await;
    for (path, ty) in [
        ("/", "text/html"),
        ("/room1", "text/html"),
        ("/a.b_c-D", "text/html"),
        ("/client.js", "text/javascript"),
        ("/demo.js", "text/javascript"),
    ] {
        let (status, head, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            header(&head, "content-type").unwrap().starts_with(ty),
            "{path}: {head}"
        );
        let csp = header(&head, "content-security-policy").unwrap();
        assert!(csp.contains("script-src 'self';"), "{csp}");
        assert!(!csp.contains("unsafe-eval") && !csp.contains("script-src 'unsafe-inline'"));
        assert!(!body.is_empty());
    }
    let (_, _, page) = server.get("/room1").await;
    assert!(
        page.contains(r#"<script type="module" src="demo.js">"#),
        "relative script"
    );
    // Fixed routes win over rooms of the same name; bad room names are not pages.
    assert_eq!(server.get("/healthz").await.2, "ok\n");
    for path in ["/a/b", "/..", "/%41", "/no%20spaces"] {
        assert_eq!(server.get(path).await.0, 404, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_carries_this_servers_settings() {
    let server = start(|c| {
        c.web.enabled = true;
        c.relay.envelope = wsline::config::Envelope::Json;
        c.heartbeat.app_ping = "{\"type\":\"ping\"}".into();
        c.heartbeat.app_pong = "{\"type\":\"pong\"}".into();
        c.security.token = "never-shown".into();
    })
    .await;
    let (_, _, js) = server.get("/client.js").await;
    let line = js
        .lines()
        .find(|l| l.starts_with("export const settings = "))
        .expect("settings line");
    assert!(line.contains(r#""envelope":"json""#), "{line}");
    assert!(
        line.contains(r#""appPing":"{\"type\":\"ping\"}""#),
        "{line}"
    );
    assert!(!js.contains("never-shown"), "no token in the client");
    // Importable as a module from pages on other origins.
    let (_, head, _) = server.get("/client.js").await;
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_web_only_the_banner_remains() {
    let server = start(|_| {}).await;
    let (status, head, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(body.starts_with("wsline:"), "{body}");
    for path in ["/room1", "/client.js", "/demo.js"] {
        assert_eq!(server.get(path).await.0, 404, "{path}");
    }
}
