//! The backend API under `/api/` on the relay's port: a backend publishes into rooms, reads their
//! presence, pages through them and kicks members.
//!
//! Off (every `/api/` path is `404`) while `api.keys` is empty. Each request is judged in this
//! order, each refusal a small plain-text body:
//! - the real client address (behind a trusted proxy, the forwarded one) must be in `api.allow`,
//!   else `403`: a key that leaked is still useless from elsewhere;
//! - `Authorization: Bearer KEY` must carry one of `api.keys` (compared in constant time; several
//!   keys so that one can be rotated without downtime), else `401` with `WWW-Authenticate: Bearer`;
//! - the whole API answers at most `api.requests_per_second` (a token bucket of as many), else
//!   `429` with `Retry-After: 1`;
//! - then the route: an unknown path is `404`, a known path with another method `405` (`Allow`),
//!   an invalid room name `400`, a body over `relay.max_message_size` `413`, a content type that
//!   is neither `text/plain` nor `application/octet-stream` `415`.
//!
//! A room's presence and the room list are cluster-wide: a room with no member on this node, and
//! every page of rooms, is read from Redis (through the cluster handle, bounded), and answers
//! `503` while Redis cannot be read.
//!
//! Keys are secrets: they are never logged, and no answer repeats what the client sent in its
//! `Authorization` header.

use std::net::SocketAddr;
use std::sync::Arc;

use crate::proto::message::{Message, Utf8Bytes};
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use subtle::ConstantTimeEq;
use tracing::{debug, info};

use crate::config::{Config, Envelope as Mode};
use crate::net::limits::client_ip;
use crate::net::state::State;
use crate::proto::names::{name_key, presence_name, room_from_path};
use crate::relay::envelope::Envelope;

type Body = Full<Bytes>;

/// The prefix of every API path.
pub const PREFIX: &str = "/api/";
/// `GET /api/rooms` lists this many rooms unless `?limit=` asks for fewer or more ...
const DEFAULT_PAGE: usize = 100;
/// ... and never more than this, so one call's work is bounded whatever the number of rooms.
const MAX_PAGE: usize = 1000;

/// Whether `path` is the API's. `/api` alone is not: it is the page of room `api`, and no room
/// name contains a `/`.
pub fn serves(path: &str) -> bool {
    path.starts_with(PREFIX)
}

/// Answers one request to a path under `/api/`.
pub async fn respond(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: &Arc<State>,
) -> Response<Body> {
    let config = state.config.load_full();
    let api = &config.api;
    if api.keys.is_empty() {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let client = client_ip(peer, req.headers(), &config.security.trusted_proxies);
    if !client.is_some_and(|c| api.allow.iter().any(|net| net.contains(&c))) {
        info!(status = 403, client = ?client, %peer, "api request refused: address not in api.allow");
        return text(StatusCode::FORBIDDEN, "the api is not for your address\n");
    }
    if !key_ok(&req, &api.keys) {
        info!(status = 401, client = ?client, %peer, "api request refused: no valid key");
        let mut r = text(StatusCode::UNAUTHORIZED, "api key required\n");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    if !state.api.take(api.requests_per_second) {
        debug!(status = 429, client = ?client, "api request refused: api.requests_per_second");
        let mut r = text(StatusCode::TOO_MANY_REQUESTS, "too many api requests\n");
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return r;
    }
    let path = req.uri().path().to_owned();
    let segments: Vec<&str> = path.trim_start_matches(PREFIX).split('/').collect();
    let method = req.method().clone();
    match segments.as_slice() {
        ["rooms"] => match method {
            Method::GET => list(&req, state).await,
            _ => not_allowed("GET"),
        },
        ["rooms", room] => match method {
            Method::GET => match room_from_path(room) {
                Some(room) => one(room, state, &config).await,
                None => bad_room(),
            },
            _ => not_allowed("GET"),
        },
        ["rooms", room, "messages"] => match method {
            Method::POST => match room_from_path(room) {
                Some(room) => publish(req, room, state, &config).await,
                None => bad_room(),
            },
            _ => not_allowed("POST"),
        },
        ["rooms", room, "kick"] => match method {
            Method::POST => match room_from_path(room) {
                Some(room) => kick(&req, room, state).await,
                None => bad_room(),
            },
            _ => not_allowed("POST"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    }
}

/// One of `keys` in `Authorization: Bearer`, each compared in constant time.
fn key_ok(req: &Request<Incoming>, keys: &[String]) -> bool {
    let Some(given) = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
    else {
        return false;
    };
    // Every key is compared, so the time taken does not tell which one matched.
    keys.iter().fold(false, |found, key| {
        found | bool::from(given.as_bytes().ct_eq(key.as_bytes()))
    })
}

fn bad_room() -> Response<Body> {
    text(StatusCode::BAD_REQUEST, "invalid room name\n")
}

#[derive(Serialize)]
struct Published<'a> {
    room: &'a str,
    queued: usize,
}

/// `POST /api/rooms/ROOM/messages`: the body is the message, relayed like a member's.
async fn publish(
    req: Request<Incoming>,
    room: String,
    state: &Arc<State>,
    config: &Arc<Config>,
) -> Response<Body> {
    let own = config.for_room(&room);
    let max = own.relay.max_message_size;
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let mime = content_type
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_owned();
    let charset_ok = content_type
        .split(';')
        .skip(1)
        .filter_map(|p| p.trim().strip_prefix("charset="))
        .all(|c| c.trim_matches('"').eq_ignore_ascii_case("utf-8"));
    let binary = match mime.as_str() {
        "text/plain" if charset_ok => false,
        "application/octet-stream" => true,
        _ => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "send text/plain; charset=utf-8 or application/octet-stream\n",
            );
        }
    };
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large();
    }
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e) => {
            debug!(error = %e, "api body not read");
            return text(StatusCode::BAD_REQUEST, "body not read\n");
        }
    };
    let envelope = (own.relay.envelope == Mode::Json).then(|| Envelope::api(&room));
    let msg = match (binary, envelope) {
        (true, None) => Message::Binary(body),
        (true, Some(_)) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "binary messages are not relayed with relay.envelope = \"json\"\n",
            );
        }
        (false, envelope) => {
            let Ok(text_body) = Utf8Bytes::try_from(body) else {
                return text(StatusCode::BAD_REQUEST, "the body is not valid UTF-8\n");
            };
            match envelope {
                Some(envelope) => Message::Text(envelope.wrap(&text_body)),
                None => Message::Text(text_body),
            }
        }
    };
    let queued = state.hub.publish_api(&room, msg);
    json(&Published {
        room: &room,
        queued,
    })
}

fn too_large() -> Response<Body> {
    text(
        StatusCode::PAYLOAD_TOO_LARGE,
        "message larger than relay.max_message_size\n",
    )
}

#[derive(Serialize)]
struct Presence<'a> {
    room: &'a str,
    count: usize,
    names: Vec<String>,
    #[serde(skip_serializing_if = "is_zero")]
    more: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// `GET /api/rooms/ROOM`: the room's presence (count and names), cluster-wide. A room with
/// members on this node answers from the hub, which merges the other nodes' members into it; a
/// room without, from Redis with a cluster (`503` while Redis is down or slow: never a wrong
/// zero), else it is empty (count 0).
async fn one(room: String, state: &State, config: &Arc<Config>) -> Response<Body> {
    let (count, names, more) = match (state.hub.room_presence(&room), state.hub.cluster()) {
        (Some(here), _) => here,
        (None, None) => Default::default(),
        (None, Some(cluster)) => match cluster.read_presence(&room).await {
            Ok((count, mut names)) => {
                let max = config.for_room(&room).presence.max_names;
                let more = names.len().saturating_sub(max);
                names.truncate(max);
                (count, names.iter().map(|n| n.to_string()).collect(), more)
            }
            Err(_) => {
                debug!(%room, status = 503, "api presence not read: cluster unavailable");
                return text(StatusCode::SERVICE_UNAVAILABLE, "cluster unavailable\n");
            }
        },
    };
    json(&Presence {
        room: &room,
        count,
        names,
        more,
    })
}

#[derive(Serialize)]
struct Page {
    rooms: Vec<RoomCount>,
    next: Option<String>,
}

#[derive(Serialize)]
struct RoomCount {
    room: String,
    count: usize,
}

/// `GET /api/rooms?after=NAME&limit=N`: rooms sorted by name (byte order), a page at a time.
/// With a cluster, every room with members on any node, from Redis's index of rooms (`503` while
/// Redis cannot be read); on a single node, this node's rooms. The work is bounded by `limit`
/// either way.
async fn list(req: &Request<Incoming>, state: &State) -> Response<Body> {
    let (mut after, mut limit) = (None, DEFAULT_PAGE);
    for (key, value) in form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes()) {
        match &*key {
            "after" if !value.is_empty() => after = Some(value.into_owned()),
            "limit" => match value.parse::<usize>() {
                Ok(n) if (1..=MAX_PAGE).contains(&n) => limit = n,
                _ => {
                    return text(
                        StatusCode::BAD_REQUEST,
                        format!("limit must be between 1 and {MAX_PAGE}\n"),
                    );
                }
            },
            _ => {}
        }
    }
    let page = match state.hub.cluster() {
        Some(cluster) => match cluster.rooms_after(after.as_deref(), limit).await {
            Ok(page) => Page {
                next: page.last.filter(|_| page.more),
                rooms: page
                    .rooms
                    .into_iter()
                    .map(|(room, count)| RoomCount { room, count })
                    .collect(),
            },
            Err(_) => {
                debug!(status = 503, "api room list not read: cluster unavailable");
                return text(StatusCode::SERVICE_UNAVAILABLE, "cluster unavailable\n");
            }
        },
        None => {
            let (rooms, more) = state.hub.rooms_after(after.as_deref(), limit);
            Page {
                next: more
                    .then(|| rooms.last().map(|(r, _)| r.to_string()))
                    .flatten(),
                rooms: rooms
                    .into_iter()
                    .map(|(room, count)| RoomCount {
                        room: room.to_string(),
                        count,
                    })
                    .collect(),
            }
        }
    };
    json(&page)
}

#[derive(Serialize)]
struct Kicked {
    /// Connections closed: on this node and on the other nodes that answered.
    closed: usize,
    /// In a cluster: the other nodes the kick reached (those with members in the room) ...
    #[serde(skip_serializing_if = "Option::is_none")]
    nodes: Option<usize>,
    /// ... and how many of them did not answer within a second (their closes are not counted).
    #[serde(skip_serializing_if = "Option::is_none")]
    unanswered: Option<usize>,
}

/// `POST /api/rooms/ROOM/kick?name=NAME`: closes that member's connections with `hub::KICKED`,
/// here and, with a cluster, on every other node (whose counts it waits for, at most
/// `cluster::kick::KICK_WAIT`). While Redis is down the kick reaches this node only: `503`.
async fn kick(req: &Request<Incoming>, room: String, state: &State) -> Response<Body> {
    let name = form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
        .find(|(k, _)| k == "name")
        .map(|(_, v)| v.into_owned());
    let Some(Ok(name)) = name.as_deref().map(presence_name) else {
        return text(StatusCode::BAD_REQUEST, "?name= must be a valid name\n");
    };
    let here = state.hub.kick(&room, &name);
    let Some(cluster) = state.hub.cluster() else {
        info!(%room, closed = here, "api kick");
        return json(&Kicked {
            closed: here,
            nodes: None,
            unanswered: None,
        });
    };
    match cluster.kick(&room, &name_key(&name)).await {
        Ok(there) => {
            let closed = here + there.closed;
            info!(%room, closed, nodes = there.nodes, unanswered = there.unanswered, "api kick");
            json(&Kicked {
                closed,
                nodes: Some(there.nodes),
                unanswered: Some(there.unanswered),
            })
        }
        Err(_) => {
            info!(%room, closed = here, status = 503, "api kick reached this node only");
            text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!(
                    "cluster unavailable: {here} closed on this node, the other nodes not reached\n"
                ),
            )
        }
    }
}

fn not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
    r.headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static(allow));
    r
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn json(value: &impl Serialize) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(body) => {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            r
        }
        Err(e) => {
            debug!(error = %e, "api answer did not serialize");
            text(StatusCode::INTERNAL_SERVER_ERROR, "answer unavailable\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_keys_are_checked_without_showing_them() {
        let problems =
            |text: &str| match Config::from_toml(&format!("[tls]\nenabled = false\n{text}")) {
                Ok(_) => Vec::new(),
                Err(p) => p.into_iter().map(|p| p.message).collect::<Vec<_>>(),
            };
        let short = problems("[api]\nkeys = [\"hunter2\"]\n");
        assert!(short[0].starts_with("api.keys: "), "{short:?}");
        let typed = problems("[api]\nkeys = \"hunter2-but-not-a-list\"\n");
        assert!(typed[0].contains("api.keys"), "{typed:?}");
        for p in short.iter().chain(&typed) {
            assert!(!p.contains("hunter2"), "{p}");
        }
        assert!(
            problems("[api]\nrequests_per_second = 0\n")[0].starts_with("api.requests_per_second")
        );
        let ok =
            Config::from_toml("[tls]\nenabled = false\n[api]\nkeys = [\"0123456789abcdef\"]\n")
                .unwrap();
        assert!(
            !format!("{ok:?}").contains("0123456789abcdef"),
            "Debug shows no key"
        );
    }

    #[test]
    fn only_paths_under_the_prefix_are_the_apis() {
        assert!(serves("/api/rooms") && serves("/api/"));
        assert!(!serves("/api") && !serves("/apiary") && !serves("/"));
    }
}
