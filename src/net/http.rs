//! HTTP on the relay's port: routing, the plain endpoints, and admission of WebSocket upgrades.
//!
//! Whether an upgrade is admitted is [`crate::net::admit`]'s decision; this module turns a refusal into
//! its answer (status, reason, `Retry-After` where it helps, and always `Connection: close`, so a
//! refused client does not hold a descriptor until a timeout) and its one `upgrade refused` log
//! line, and hands an admitted upgrade to the runtime's spawner as an [`Upgrade`] task. It spawns
//! nothing itself. `/stats` and `/metrics` answer only
//! `metrics.allow`, judged by the real client address (see [`crate::net::limits::client_ip`]).
//!
//! The first request head on a connection must arrive by the deadline the server set when it
//! accepted the TCP connection (TLS included); every later head on a kept-alive connection must be
//! complete within `limits.keepalive_timeout` of the response before it (hyper's header timer
//! starts when it waits for the next head, so idle time counts), and a connection carries at most
//! `limits.keepalive_requests` requests.
//!
//! It must not spawn (an upgrade is handed to the runtime's spawner) nor relay anything itself.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioTimer;
use tracing::{debug, info};

use crate::net::admit::{Admitted, Refusal, Why, admit, has_token};
use crate::net::limits::{self, Admission};
use crate::net::state::State;
use crate::net::upgrade::Upgrade;
use crate::observe::stats::{Parts, Rooms, Snapshot};
use crate::relay::envelope::Envelope;
use crate::ws::handshake::accept_key;

type Body = Full<Bytes>;

/// The most a request head (request line and headers) may take; more gets 431.
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// What `Retry-After` suggests when the server refuses for now.
const RETRY_AFTER_SECONDS: &str = "5";
const BANNER: &str = "wsline: WebSocket relay. Connect with wss:// to / or /ROOM.\n";

/// The socket's slot in the connection limits, held by its task from `accept()`: an upgrade takes
/// it into the WebSocket's task, so the socket counts until it closes whichever task holds it.
pub type SocketSlot = Arc<std::sync::Mutex<Option<Admission>>>;

/// Where an admitted upgrade goes: the runtime's spawner, which runs [`Upgrade::run`] as a task
/// the drain waits for. HTTP builds the task; it never spawns one itself.
pub trait Spawn: Fn(Upgrade) + Clone + Send + Sync + 'static {}
impl<F: Fn(Upgrade) + Clone + Send + Sync + 'static> Spawn for F {}

/// Serves HTTP/1.1 on one accepted (and decrypted) connection until it closes or the server stops.
/// The first request head must be complete by `first_head_by`; each later one within
/// `limits.keepalive_timeout` of the response before it, and after `limits.keepalive_requests`
/// requests the connection is closed (the last response says `Connection: close`).
pub async fn serve<I, S>(
    io: I,
    peer: SocketAddr,
    state: Arc<State>,
    first_head_by: Instant,
    slot: SocketSlot,
    spawn: S,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    S: Spawn,
{
    let limits = state.config.load().limits.clone();
    let service_state = state.clone();
    let (first_head, mut first_head_seen) = tokio::sync::watch::channel(false);
    let served = AtomicU32::new(0);
    let service = service_fn(move |req| {
        first_head.send_replace(true);
        let state = service_state.clone();
        let last = served.fetch_add(1, Ordering::Relaxed) + 1 >= limits.keepalive_requests;
        let (slot, spawn) = (slot.clone(), spawn.clone());
        async move {
            let mut response = route(req, peer, &state, slot, spawn).await;
            if last && response.status() != StatusCode::SWITCHING_PROTOCOLS {
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            Ok::<_, Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.keepalive_timeout)
        .max_buf_size(MAX_HEAD_BYTES)
        .serve_connection(io, service)
        .with_upgrades();
    // Resolves only if the first head is not in by its deadline.
    let first_head_late = async {
        let seen = tokio::time::timeout_at(first_head_by, first_head_seen.wait_for(|seen| *seen));
        if seen.await.is_ok() {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        result = conn => if let Err(e) = result {
            debug!(%peer, error = %e, "http connection ended with an error");
        },
        _ = first_head_late => debug!(%peer, "handshake timed out: no request head in time"),
        _ = state.shutdown.stopped() => {}
    }
}

async fn route(
    req: Request<Incoming>,
    peer: SocketAddr,
    state: &Arc<State>,
    slot: SocketSlot,
    spawn: impl Spawn,
) -> Response<Body> {
    if is_upgrade(req.headers()) {
        return upgrade(req, peer, state, slot, spawn).await;
    }
    if crate::net::api::serves(req.uri().path()) {
        return crate::net::api::respond(req, peer, state).await;
    }
    let draining = state.shutdown.is_draining();
    let mut response = match (req.method(), req.uri().path()) {
        (&Method::GET | &Method::HEAD, "/healthz") if draining => {
            text(StatusCode::SERVICE_UNAVAILABLE, "draining\n")
        }
        (&Method::GET | &Method::HEAD, "/healthz") => match state.hub.cluster() {
            // Still serving local members: healthy for a load balancer, degraded for a human.
            Some(cluster) if !cluster.is_up() => {
                text(StatusCode::OK, "ok (cluster degraded: redis unreachable)\n")
            }
            _ => text(StatusCode::OK, "ok\n"),
        },
        (&Method::GET | &Method::HEAD, "/stats") => stats(&req, peer, state),
        (&Method::GET | &Method::HEAD, "/metrics") => metrics(&req, peer, state),
        (method, crate::web::CLIENT_PATH) => {
            crate::web::client(method, req.headers(), &state.config.load())
        }
        (&Method::GET | &Method::HEAD, path)
            if crate::web::serves(path) && state.config.load().web.enabled =>
        {
            crate::web::respond(path)
        }
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

/// Whether `/stats` and `/metrics` may answer this request: the real client address (behind a
/// trusted proxy, the forwarded one) must be in `metrics.allow`. An unknown client is refused.
fn may_see_metrics(req: &Request<Incoming>, peer: SocketAddr, state: &State) -> bool {
    let config = state.config.load();
    limits::client_ip(peer, req.headers(), &config.security.trusted_proxies)
        .is_some_and(|client| config.metrics.allow.iter().any(|net| net.contains(&client)))
}

/// `/metrics` for `metrics.allow` only, so that a public nginx location in front does not expose
/// it (nginx itself connects from 127.0.0.1).
fn metrics(req: &Request<Incoming>, peer: SocketAddr, state: &State) -> Response<Body> {
    if !state.config.load().metrics.enabled {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if !may_see_metrics(req, peer, state) {
        return text(StatusCode::FORBIDDEN, "metrics are not for your address\n");
    }
    let snapshot = snapshot(state, Rooms::Counted(state.hub.room_count()));
    let mut r = Response::new(Full::new(Bytes::from(crate::observe::metrics::render(
        &snapshot,
    ))));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(crate::observe::metrics::CONTENT_TYPE),
    );
    r
}

/// The counters with their parts, gathered from the layers that own them.
fn snapshot(state: &State, rooms: Rooms) -> Snapshot {
    let parts = Parts {
        node_id: state.config.load().cluster.node_id.clone(),
        draining: state.shutdown.is_draining(),
        connections: state.hub.total(),
        sockets: state.gate.sockets(),
        rooms,
        not_after_unix: state.tls.as_ref().map(|tls| tls.not_after()),
        cluster: state.hub.cluster().map(crate::cluster::Cluster::status),
    };
    Snapshot::take(&state.stats, parts)
}

/// `/stats` for `metrics.allow` only: room names can be secret links.
fn stats(req: &Request<Incoming>, peer: SocketAddr, state: &State) -> Response<Body> {
    if !may_see_metrics(req, peer, state) {
        return text(StatusCode::FORBIDDEN, "stats are not for your address\n");
    }
    let snapshot = snapshot(state, Rooms::Listed(state.hub.room_counts()));
    let body = match serde_json::to_vec(&snapshot) {
        Ok(body) => body,
        Err(e) => {
            debug!(error = %e, "stats did not serialize");
            return text(StatusCode::INTERNAL_SERVER_ERROR, "stats unavailable\n");
        }
    };
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

fn is_upgrade(headers: &HeaderMap) -> bool {
    has_token(headers, header::UPGRADE, "websocket")
}

async fn upgrade(
    mut req: Request<Incoming>,
    peer: SocketAddr,
    state: &Arc<State>,
    slot: SocketSlot,
    spawn: impl Spawn,
) -> Response<Body> {
    let config = state.config.load_full();
    let admitted = match admit(&req, peer, state, &config).await {
        Ok(admitted) => admitted,
        Err(refusal) => return refused(&refusal, peer),
    };
    let Admitted {
        key,
        room,
        name,
        config,
        client,
        admission,
        membership,
        outbox,
        expires,
    } = admitted;
    if membership.is_none() {
        // Upgraded only to be closed, as the contract answers a taken name.
        log_refusal(
            101,
            Some(1008),
            "name taken",
            &client.to_string(),
            peer,
            &room,
        );
    }

    let envelope = Envelope::new(config.relay.envelope, &room, name.as_deref());
    // The socket's slot moves with its stream into the WebSocket's task.
    let socket = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    spawn(Upgrade {
        on_upgrade: hyper::upgrade::on(&mut req),
        state: state.clone(),
        socket,
        admission,
        config,
        peer,
        client,
        membership,
        outbox,
        envelope,
        expires,
    });

    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(accept) = HeaderValue::from_str(&accept_key(key.as_bytes())) {
        headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    response
}

/// The `upgrade refused` line, for refusals before the `101` and for a taken name after it.
fn log_refusal(
    status: u16,
    code: Option<u16>,
    reason: &str,
    client: &str,
    peer: SocketAddr,
    room: &str,
) {
    info!(status, code, reason, %client, %peer, %room, "upgrade refused");
}

/// The one place a refused upgrade becomes its answer and its log line. The answer closes the
/// connection: a refused client has nothing more to say, and its descriptor is better spent on
/// the next one.
fn refused(refusal: &Refusal, peer: SocketAddr) -> Response<Body> {
    let why = &refusal.why;
    let status = why.status();
    let reason = why.reason();
    let client = refusal
        .client
        .map_or_else(|| "unknown".to_owned(), |c| c.to_string());
    // The path's room only (when valid): the query may hold the token, which is never logged.
    let room = refusal.room.as_deref().unwrap_or("");
    log_refusal(status.as_u16(), None, &reason, &client, peer, room);
    let mut r = text(status, format!("{reason}\n"));
    let headers = r.headers_mut();
    headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    if why.retry_later() {
        headers.insert(
            header::RETRY_AFTER,
            HeaderValue::from_static(RETRY_AFTER_SECONDS),
        );
    }
    match why {
        Why::Token => {
            headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        Why::Version => {
            headers.insert(
                header::SEC_WEBSOCKET_VERSION,
                HeaderValue::from_static("13"),
            );
        }
        Why::NotGet => {
            headers.insert(header::ALLOW, HeaderValue::from_static("GET"));
        }
        _ => {}
    }
    r
}
