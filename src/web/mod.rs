//! The browser side: the client module at `/client.js` that any page can import (served whenever
//! the relay runs, unless `web.client = false`), and, when `web.enabled`, the demo chat page at `/`
//! and `/ROOM` with its script at `/demo.js`.
//!
//! The files are compiled in. `client.js` gets the settings a browser must match filled in at
//! serve time (presence format, envelope, echo, app ping and pong, and each `[[rooms]]` entry's
//! overrides of them, which the client resolves for its room by the server's own first-match
//! rule), so a page needs no configuration of its own and follows a SIGHUP reload. Nothing secret
//! is in them (never the token). `/client.js` carries CORS headers for
//! `security.allowed_origins` (any origin when it is empty), also on its `404` when
//! `web.client = false` and on a preflight, so a browser reports what really happened instead of
//! a CORS error. Every response carries a strict Content-Security-Policy: scripts from this origin
//! only, sockets to this origin only.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Response, StatusCode};

use crate::config::{Config, Envelope, PresenceFormat};
use crate::proto::names::room_from_path;

const PAGE: &str = include_str!("index.html");
const DEMO_JS: &str = include_str!("demo.js");
const CLIENT_JS: &str = include_str!("client.js");
/// Where `client.js` holds its settings; replaced by the server's at serve time.
const SETTINGS_SLOT: &str = "/*wsline:settings*/ {} /*end*/";

/// The page runs only scripts from this origin and talks only to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
                   img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Where the client module is served.
pub const CLIENT_PATH: &str = "/client.js";

/// Whether `path` is one of the demo's (when `web.enabled`): `/`, its script, or `/ROOM`.
pub fn serves(path: &str) -> bool {
    match path {
        "/" | "/demo.js" => true,
        _ => path.strip_prefix('/').and_then(room_from_path).is_some(),
    }
}

/// The response for a path [`serves`] accepted.
pub fn respond(path: &str) -> Response<Full<Bytes>> {
    match path {
        "/demo.js" => file(DEMO_JS.into(), "text/javascript; charset=utf-8"),
        _ => file(PAGE.into(), "text/html; charset=utf-8"),
    }
}

/// `/client.js` for any method: the module (`GET`, `HEAD`) when `web.client`, else `404`; the
/// preflight answer (`OPTIONS`); `405` otherwise. Each with the CORS headers the request's
/// `Origin` may have, so that a browser shows the real status rather than a CORS error.
pub fn client(method: &Method, headers: &HeaderMap, config: &Config) -> Response<Full<Bytes>> {
    let mut r = match *method {
        Method::GET | Method::HEAD if config.web.client => {
            file(client_js(config), "text/javascript; charset=utf-8")
        }
        Method::GET | Method::HEAD => plain(
            StatusCode::NOT_FOUND,
            "not found: /client.js is off (web.client = false)\n",
        ),
        Method::OPTIONS => {
            let mut r = plain(StatusCode::NO_CONTENT, "");
            let h = r.headers_mut();
            h.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            if let Some(asked) = headers.get(header::ACCESS_CONTROL_REQUEST_HEADERS) {
                h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, asked.clone());
            }
            h.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static("600"),
            );
            r
        }
        _ => {
            let mut r = plain(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut().insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, OPTIONS"),
            );
            r
        }
    };
    cors(headers, config, r.headers_mut());
    r
}

/// `Access-Control-Allow-Origin` for `security.allowed_origins`: `*` when it is empty (the file is
/// public and no credentials are involved), else the request's `Origin` when it is listed (with
/// `Vary: Origin`, as the answer depends on it), else nothing: the browser then refuses the import
/// as it would refuse the socket.
fn cors(request: &HeaderMap, config: &Config, response: &mut HeaderMap) {
    let allowed = &config.security.allowed_origins;
    if allowed.is_empty() {
        response.insert(
            header::ACCESS_CONTROL_ALLOW_ORIGIN,
            HeaderValue::from_static("*"),
        );
        return;
    }
    response.insert(header::VARY, HeaderValue::from_static("Origin"));
    let origin = request.get(header::ORIGIN).filter(|o| {
        o.to_str()
            .is_ok_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
    });
    if let Some(origin) = origin {
        response.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
    }
}

fn plain(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn file(body: Bytes, content_type: &'static str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = StatusCode::OK;
    let headers = r.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    // Settings change on reload and the files with each release: always revalidate.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `client.js` with this server's settings in its `settings` export.
fn client_js(config: &Config) -> Bytes {
    let settings = settings(config).to_string();
    Bytes::from(CLIENT_JS.replacen(SETTINGS_SLOT, &settings, 1))
}

/// What a browser client must know to speak to this server: the global settings, the default
/// room, and under `rooms` each `[[rooms]]` entry's `match` with the settings it makes for its
/// rooms (`client.js` takes the first entry that matches its room, as the server does).
fn settings(config: &Config) -> serde_json::Value {
    let mut all = browser_settings(config);
    all["defaultRoom"] = config.relay.default_room.clone().into();
    let rooms: Vec<serde_json::Value> = config
        .rooms
        .iter()
        .map(|rule| {
            let mut own = config.clone();
            rule.apply(&mut own);
            let mut entry = browser_settings(&own);
            entry["match"] = rule.pattern.clone().into();
            entry
        })
        .collect();
    all["rooms"] = rooms.into();
    all
}

/// The settings of one configuration that a browser must match.
fn browser_settings(config: &Config) -> serde_json::Value {
    serde_json::json!({
        "presence": match config.presence.format {
            PresenceFormat::Json => "json",
            PresenceFormat::Plain => "plain",
            PresenceFormat::Off => "off",
        },
        "envelope": match config.relay.envelope {
            Envelope::None => "none",
            Envelope::Json => "json",
        },
        "echo": config.relay.echo,
        "requireName": config.presence.require_name,
        "appPing": config.heartbeat.app_ping,
        "appPong": config.heartbeat.app_pong,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_scripts_and_rooms_are_served() {
        for path in ["/", "/demo.js", "/room1", "/a.b_c-D", "/%E6%88%91", "/é"] {
            assert!(serves(path), "{path}");
        }
        let long = format!("/{}", "a".repeat(65));
        for path in ["/a/b", "/.", "/..", "/%2E", "/a%2Fb", "", long.as_str()] {
            assert!(!serves(path), "{path}");
        }
    }

    #[test]
    fn the_client_carries_the_servers_settings_and_no_secret() {
        let mut config = Config::from_toml("[tls]\nenabled = false\n").unwrap();
        config.presence.format = PresenceFormat::Plain;
        config.relay.envelope = Envelope::Json;
        config.relay.echo = false;
        config.heartbeat.app_ping = r#"{"type":"ping"}"#.into();
        config.heartbeat.app_pong = r#"{"type":"pong"}"#.into();
        config.security.token = "s3cret".into();
        let js = String::from_utf8(client_js(&config).to_vec()).unwrap();
        assert!(!js.contains(SETTINGS_SLOT), "slot replaced");
        let line = js
            .lines()
            .find(|l| l.starts_with("export const settings = "))
            .unwrap();
        let json = line
            .strip_prefix("export const settings = ")
            .and_then(|l| l.strip_suffix(';'))
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"presence": "plain", "envelope": "json", "echo": false,
                "requireName": false, "appPing": "{\"type\":\"ping\"}", "appPong": "{\"type\":\"pong\"}",
                "defaultRoom": "lobby", "rooms": []})
        );
        assert!(!js.contains("s3cret"));
    }

    #[test]
    fn the_client_learns_each_room_patterns_settings() {
        let config = Config::from_toml(
            "[tls]\nenabled = false\n[presence]\nformat = \"json\"\n\
             [[rooms]]\nmatch = \"count-*\"\npresence = { format = \"plain\" }\n\
             [[rooms]]\nmatch = \"chat-*\"\nrelay = { envelope = \"json\", echo = false }\n",
        )
        .unwrap();
        let rooms = &settings(&config)["rooms"];
        assert_eq!(rooms[0]["match"], "count-*");
        assert_eq!(rooms[0]["presence"], "plain");
        assert_eq!(rooms[0]["envelope"], "none");
        assert_eq!(rooms[1]["match"], "chat-*");
        assert_eq!(rooms[1]["presence"], "json");
        assert_eq!(rooms[1]["envelope"], "json");
        assert_eq!(rooms[1]["echo"], false);
    }

    #[test]
    fn client_js_has_cors_for_the_allowed_origins_even_when_off() {
        let mut config = Config::from_toml("[tls]\nenabled = false\n").unwrap();
        let mut asked = HeaderMap::new();
        asked.insert(
            header::ORIGIN,
            HeaderValue::from_static("https://app.example"),
        );
        let acao = |r: &Response<Full<Bytes>>| {
            r.headers()
                .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let r = client(&Method::GET, &asked, &config);
        assert_eq!(
            (r.status(), acao(&r).as_deref()),
            (StatusCode::OK, Some("*"))
        );
        config.security.allowed_origins = vec!["https://app.example".into()];
        let r = client(&Method::GET, &asked, &config);
        assert_eq!(acao(&r).as_deref(), Some("https://app.example"));
        assert_eq!(r.headers()[header::VARY], "Origin");
        let other = HeaderMap::new();
        assert_eq!(acao(&client(&Method::GET, &other, &config)), None);
        config.web.client = false;
        let r = client(&Method::GET, &asked, &config);
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert_eq!(acao(&r).as_deref(), Some("https://app.example"));
        let r = client(&Method::OPTIONS, &asked, &config);
        assert_eq!(r.status(), StatusCode::NO_CONTENT);
        assert_eq!(acao(&r).as_deref(), Some("https://app.example"));
        assert_eq!(
            client(&Method::POST, &asked, &config).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }

    #[test]
    fn every_file_has_the_policy_and_its_type() {
        let config = Config::from_toml("[tls]\nenabled = false\n").unwrap();
        for (path, ty) in [
            ("/", "text/html"),
            ("/room1", "text/html"),
            ("/client.js", "text/javascript"),
            ("/demo.js", "text/javascript"),
        ] {
            let r = match path {
                CLIENT_PATH => client(&Method::GET, &HeaderMap::new(), &config),
                _ => respond(path),
            };
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty));
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe-eval"));
        }
    }
}
