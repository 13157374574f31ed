//! The browser side, served when `web.enabled`: the demo chat page at `/` and `/ROOM`, its script
//! at `/demo.js`, and the client module at `/client.js` that any page can import.
//!
//! The files are compiled in. `client.js` gets the settings a browser must match filled in at
//! serve time (presence format, envelope, echo, app ping and pong), so a page needs no
//! configuration of its own and follows a SIGHUP reload. Nothing secret is in them (never the
//! token). Every response carries a strict Content-Security-Policy: scripts from this origin only,
//! sockets to this origin only.

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{self, HeaderValue};
use hyper::{Response, StatusCode};

use crate::config::{Config, Envelope, PresenceFormat};
use crate::request::is_room_name;

const PAGE: &str = include_str!("index.html");
const DEMO_JS: &str = include_str!("demo.js");
const CLIENT_JS: &str = include_str!("client.js");
/// Where `client.js` holds its settings; replaced by the server's at serve time.
const SETTINGS_SLOT: &str = "/*wsline:settings*/ {} /*end*/";

/// The page runs only scripts from this origin and talks only to this origin.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; \
                   img-src data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Whether `path` is one of ours (when `web.enabled`): `/`, the two scripts, or `/ROOM`.
pub fn serves(path: &str) -> bool {
    match path {
        "/" | "/client.js" | "/demo.js" => true,
        _ => path.strip_prefix('/').is_some_and(is_room_name),
    }
}

/// The response for a path [`serves`] accepted.
pub fn respond(path: &str, config: &Config) -> Response<Full<Bytes>> {
    match path {
        "/client.js" => {
            let mut r = file(client_js(config), "text/javascript; charset=utf-8");
            // A module import from another origin needs CORS; the file is public and no
            // credentials are involved (the socket itself is still judged by allowed_origins).
            r.headers_mut().insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            );
            r
        }
        "/demo.js" => file(DEMO_JS.into(), "text/javascript; charset=utf-8"),
        _ => file(PAGE.into(), "text/html; charset=utf-8"),
    }
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

/// What a browser client must know to speak to this server.
fn settings(config: &Config) -> serde_json::Value {
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
        "appPing": config.heartbeat.app_ping,
        "appPong": config.heartbeat.app_pong,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_scripts_and_rooms_are_served() {
        for path in ["/", "/client.js", "/demo.js", "/room1", "/a.b_c-D"] {
            assert!(serves(path), "{path}");
        }
        let long = format!("/{}", "a".repeat(65));
        for path in ["/a/b", "/.", "/..", "/%41", "/é", "", long.as_str()] {
            assert!(!serves(path), "{path}");
        }
    }

    #[test]
    fn the_client_carries_the_servers_settings_and_no_secret() {
        let mut config = Config::default();
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
                "appPing": "{\"type\":\"ping\"}", "appPong": "{\"type\":\"pong\"}"})
        );
        assert!(!js.contains("s3cret"));
    }

    #[test]
    fn every_file_has_the_policy_and_its_type() {
        let config = Config::default();
        for (path, ty) in [
            ("/", "text/html"),
            ("/room1", "text/html"),
            ("/client.js", "text/javascript"),
            ("/demo.js", "text/javascript"),
        ] {
            let r = respond(path, &config);
            let h = r.headers();
            assert!(h[header::CONTENT_TYPE].to_str().unwrap().starts_with(ty));
            let csp = h[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
            assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe-eval"));
        }
    }
}
