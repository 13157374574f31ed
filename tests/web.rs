//! The browser side over HTTP: `/client.js` whenever the relay runs (`web.client`, with CORS for
//! `security.allowed_origins`), and with `web.enabled` the page at `/` and `/ROOM` and `/demo.js`,
//! with their types and Content-Security-Policy; `404` for the demo's paths when it is off. The
//! pages themselves run in a real browser in `tests/browser.rs`.

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
        ("/%E6%88%91%E7%9A%84%E6%88%BF%E9%97%B4", "text/html"),
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
    for path in ["/a/b", "/..", "/%2E%2E", "/a%2Fb", "/no%20spaces", "/%FF"] {
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
async fn without_web_the_banner_and_the_client_remain() {
    let server = start(|_| {}).await;
    let (status, head, body) = server.get("/").await;
    assert_eq!(status, 200);
    assert!(
        header(&head, "content-type")
            .unwrap()
            .starts_with("text/plain")
    );
    assert!(body.starts_with("wsline:"), "{body}");
    for path in ["/room1", "/demo.js"] {
        assert_eq!(server.get(path).await.0, 404, "{path}");
    }
    // web.client is on by default: a page elsewhere imports the client without the demo.
    let (status, head, js) = server.get("/client.js").await;
    assert_eq!(status, 200);
    assert!(js.contains("export function connect"));
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_js_answers_cors_for_the_allowed_origins_its_preflight_and_its_404() {
    let server = start(|c| {
        c.security.allowed_origins = vec!["https://app.example".into()];
    })
    .await;
    let get = |origin: &str| {
        format!(
            "GET /client.js HTTP/1.1\r\nHost: localhost\r\nOrigin: {origin}\r\nConnection: close\r\n\r\n"
        )
    };
    let (status, head, _) = server.http(&get("https://app.example")).await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_eq!(header(&head, "vary"), Some("Origin"));
    let (status, head, _) = server.http(&get("https://evil.example")).await;
    assert_eq!(status, 200, "the file is public; the browser enforces CORS");
    assert_eq!(header(&head, "access-control-allow-origin"), None);
    let (status, head, _) = server
        .http(
            "OPTIONS /client.js HTTP/1.1\r\nHost: localhost\r\nOrigin: https://app.example\r\n\
             Access-Control-Request-Method: GET\r\nConnection: close\r\n\r\n",
        )
        .await;
    assert_eq!(status, 204);
    assert_eq!(
        header(&head, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert!(
        header(&head, "access-control-allow-methods")
            .unwrap()
            .contains("GET")
    );

    let off = start(|c| c.web.client = false).await;
    let (status, head, body) = off
        .http("GET /client.js HTTP/1.1\r\nHost: localhost\r\nOrigin: https://x.example\r\nConnection: close\r\n\r\n")
        .await;
    assert_eq!(status, 404);
    assert!(body.contains("web.client = false"), "{body}");
    // With CORS, so a browser reports the 404 rather than a CORS error.
    assert_eq!(header(&head, "access-control-allow-origin"), Some("*"));
}
