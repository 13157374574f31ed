//! HTTP on the relay's port: routing, the plain endpoints, and admission of WebSocket upgrades.
//!
//! Everything a request can be refused for is decided here, before the `101`: a bad upgrade (400,
//! 405, 426), a bad room or name (400), a foreign Origin (403), a missing token (401), a full server
//! (503) or client address (429), too many rooms or a draining server (503).
//! An admitted request joins its room at once and hands the upgraded stream to [`conn`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioTimer;
use subtle::ConstantTimeEq;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tracing::debug;

use crate::conn::{self, Conn};
use crate::hub::{JoinError, JoinOptions};
use crate::limits::{self, Refusal};
use crate::request::parse_target;
use crate::stats::{Certificate, Drops, Report, Stats};
use crate::{State, config::Config};

type Body = Full<Bytes>;

/// The most a request head (request line and headers) may take; more gets 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// What `Retry-After` suggests when the server refuses for now.
const RETRY_AFTER_SECONDS: &str = "5";
const BANNER: &str = "wsline: WebSocket relay. Connect with wss:// to / or /ROOM.\n";
/// The demo chat page (`web.enabled`); it builds its socket URL relative to its own location.
const DEMO_PAGE: &str = include_str!("web/index.html");

/// Serves HTTP/1.1 on one accepted (and decrypted) connection until it closes or the server stops.
pub async fn serve<I>(io: I, peer: SocketAddr, state: Arc<State>, head_timeout: Duration)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service_state = state.clone();
    let service = service_fn(move |req| {
        let state = service_state.clone();
        async move { Ok::<_, Infallible>(route(req, peer, &state)) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    tokio::select! {
        result = conn => if let Err(e) = result {
            debug!(%peer, error = %e, "http connection ended with an error");
        },
        _ = state.shutdown.stopped() => {}
    }
}

fn route(req: Request<Incoming>, peer: SocketAddr, state: &Arc<State>) -> Response<Body> {
    if is_upgrade(req.headers()) {
        return upgrade(req, peer, state);
    }
    let draining = state.shutdown.is_draining();
    let mut response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") if draining => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET | &Method::HEAD, "/healthz") => text(StatusCode::OK, "ok\n"),
        (&Method::GET | &Method::HEAD, "/stats") => stats(state),
        (&Method::GET | &Method::HEAD, "/metrics") => metrics(&req, peer, state),
        (&Method::GET | &Method::HEAD, "/") if state.config.load().web.enabled => demo_page(),
        (&Method::GET | &Method::HEAD, "/") => text(StatusCode::OK, BANNER),
        (_, "/healthz" | "/stats" | "/metrics" | "/") => {
            let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            r
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
    };
    if draining {
        // Let load balancers' keep-alive probes reconnect and find the next node.
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
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

fn demo_page() -> Response<Body> {
    let mut r = Response::new(Full::new(Bytes::from_static(DEMO_PAGE.as_bytes())));
    let headers = r.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page runs only its own inline script and talks only to this origin.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'",
        ),
    );
    r
}

fn retry_later(status: StatusCode, body: &'static str) -> Response<Body> {
    let mut r = text(status, body);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECONDS),
    );
    r
}

/// `/metrics` for `metrics.allow` only, judged by the real client address, so that a public
/// nginx location in front does not expose it (nginx itself connects from 127.0.0.1).
fn metrics(req: &Request<Incoming>, peer: SocketAddr, state: &State) -> Response<Body> {
    let config = state.config.load();
    if !config.metrics.enabled {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    let client = limits::client_ip(peer, req.headers(), &config.security.trusted_proxies);
    if !config.metrics.allow.iter().any(|net| net.contains(&client)) {
        return text(StatusCode::FORBIDDEN, "metrics are not for your address\n");
    }
    let mut r = Response::new(Full::new(Bytes::from(crate::metrics::render(state))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
    );
    r
}

fn stats(state: &State) -> Response<Body> {
    let s: &Stats = &state.stats;
    let report = Report {
        node_id: state.config.load().cluster.node_id.clone(),
        uptime_seconds: s.started.elapsed().as_secs(),
        draining: state.shutdown.is_draining(),
        connections: state.hub.total(),
        connections_total: Stats::get(&s.connections_total),
        rooms: state
            .hub
            .room_counts()
            .into_iter()
            .map(|(name, n)| (name.to_string(), n))
            .collect(),
        messages_in: Stats::get(&s.messages_in),
        messages_out: Stats::get(&s.messages_out),
        presence_out: Stats::get(&s.presence_out),
        drops: Drops {
            slow_consumers: Stats::get(&s.slow_consumers),
        },
        certificate: state
            .tls
            .as_ref()
            .map(|tls| Certificate::new(tls.not_after())),
    };
    let body = serde_json::to_vec(&report).expect("stats serialize");
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// Whether a header holds `token` in its comma-separated list (case-insensitive).
fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

fn upgrade(mut req: Request<Incoming>, peer: SocketAddr, state: &Arc<State>) -> Response<Body> {
    let config = state.config.load_full();
    let headers = req.headers();
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "websocket upgrade needs GET\n",
        );
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return text(
            StatusCode::BAD_REQUEST,
            "websocket upgrade needs Connection: upgrade\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        let mut r = text(
            StatusCode::UPGRADE_REQUIRED,
            "websocket version 13 required\n",
        );
        r.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return r;
    }
    // RFC 6455: the key is 16 random bytes in base64, which is always 24 characters.
    let Some(key) = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .cloned()
    else {
        return text(StatusCode::BAD_REQUEST, "bad Sec-WebSocket-Key\n");
    };
    if state.shutdown.is_draining() {
        return retry_later(StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n");
    }
    let target = match parse_target(
        req.uri().path(),
        req.uri().query(),
        &config.relay.default_room,
    ) {
        Ok(t) => t,
        Err(e) => {
            // The path only: the query may hold the token, which is never logged.
            debug!(%peer, path = req.uri().path(), "bad upgrade target");
            return text(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
    };
    if !origin_allowed(headers, &config) {
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    if !token_ok(headers, target.token.as_deref(), &config.security.token) {
        let mut r = text(StatusCode::UNAUTHORIZED, "token required\n");
        r.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return r;
    }
    let client = limits::client_ip(peer, headers, &config.security.trusted_proxies);
    let admission = match state.gate.admit(
        client,
        config.limits.max_connections,
        config.limits.max_connections_per_ip,
    ) {
        Ok(a) => a,
        Err(Refusal::ServerFull) => {
            return retry_later(StatusCode::SERVICE_UNAVAILABLE, "server full\n");
        }
        Err(Refusal::AddressFull) => {
            return retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "too many connections from your address\n",
            );
        }
    };

    let (outbox, outbox_rx) = crate::outbox::outbox(
        config.limits.queue_messages,
        config.limits.queue_bytes as usize,
        state.shutdown.connection_token(),
    );
    let joined = state.hub.join(
        &target.room,
        target.name.as_deref(),
        outbox,
        &JoinOptions {
            max_rooms: config.relay.max_rooms,
            unique_names: config.presence.unique_names,
            presence: config.presence.format,
            presence_interval: config.presence.interval,
        },
    );
    let membership = match joined {
        Ok(m) => Some(m),
        Err(JoinError::TooManyRooms) => {
            return retry_later(StatusCode::SERVICE_UNAVAILABLE, "too many rooms\n");
        }
        // The contract answers a taken name with close 1008 after the upgrade.
        Err(JoinError::NameTaken) => None,
    };

    let on_upgrade = hyper::upgrade::on(&mut req);
    let state = state.clone();
    state.shutdown.tracker().clone().spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => return debug!(%peer, error = %e, "upgrade failed"),
        };
        let next = match membership {
            Some(membership) => conn::Next::Run(Conn {
                state,
                config: config.clone(),
                peer,
                client,
                membership,
                outbox: outbox_rx,
                admission,
            }),
            None => conn::Next::Refuse(1008, "name taken", outbox_rx),
        };
        conn::serve(upgraded, config.relay.max_message_size, next).await
    });

    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(
            header::SEC_WEBSOCKET_ACCEPT,
            derive_accept_key(key.as_bytes()),
        )
        .body(Full::new(Bytes::new()))
        .expect("valid response")
}

/// `security.token` empty: no token needed. Otherwise `?token=` or `Authorization: Bearer` must
/// carry it, compared in constant time.
fn token_ok(headers: &HeaderMap, from_query: Option<&str>, expected: &str) -> bool {
    if expected.is_empty() {
        return true;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    [from_query, bearer]
        .into_iter()
        .flatten()
        .any(|given| bool::from(given.as_bytes().ct_eq(expected.as_bytes())))
}

/// `security.allowed_origins` empty: any. Otherwise the Origin header must match one exactly.
fn origin_allowed(headers: &HeaderMap, config: &Config) -> bool {
    let allowed = &config.security.allowed_origins;
    allowed.is_empty()
        || headers
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .is_some_and(|o| allowed.iter().any(|a| a.eq_ignore_ascii_case(o)))
}
