//! Admission of a WebSocket upgrade: every reason a request can be refused, decided in one place
//! and in one order, before the `101`.
//!
//! [`admit`] checks the handshake (405, 400, 426), the drain (503), the room, name and session
//! (400), a missing name where the room requires one (400), the client's address (400 when a
//! trusted proxy's headers leave it unknown), the Origin (403), the token (401), the real client's
//! per-address limit behind a trusted proxy (429; a direct client's socket was counted at
//! `accept()`) and the room limit (503), and joins the room. It returns what the connection needs
//! ([`Admitted`]) or a [`Refusal`] that says its status and reason; `http` turns that into the
//! response, with
//! `Connection: close`, and the one log line. A name already taken is not a refusal here: the
//! contract answers it after the upgrade with close `1008`, so [`Admitted::membership`] is `None`.
//! A name held by this client's own earlier connection (same `?session=`) is not taken: the join
//! replaces that connection ([`crate::relay::hub::Hub::join_session`]).
//!
//! It decides and joins; it must not answer HTTP or log the refusal (that is `net::http`'s).

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, StatusCode};
use subtle::ConstantTimeEq;

use crate::cluster::Claim;
use crate::config::Config;
use crate::net::limits::{self, Admission};
use crate::net::request::{BadTarget, parse_target};
use crate::net::state::State;
use crate::relay::hub::{JoinError, Membership};
use crate::relay::outbox::OutboxRx;

/// Why an upgrade was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Why {
    NotGet,
    NoConnectionUpgrade,
    Version,
    BadKey,
    Draining,
    Target(BadTarget),
    /// The room requires a name (`presence.require_name`) and none was given.
    NameRequired,
    UnknownClient,
    Origin,
    Token,
    /// A valid signed token whose `rooms` claim does not include the room.
    TokenRoom,
    ServerFull,
    AddressFull,
    TooManyRooms,
}

/// A refused upgrade: why, and what is known of who asked (for the log line).
#[derive(Debug)]
pub struct Refusal {
    pub why: Why,
    /// The client's address, when it could be told.
    pub client: Option<IpAddr>,
    /// The room asked for, when its name was valid.
    pub room: Option<String>,
}

impl Why {
    pub fn status(&self) -> StatusCode {
        match self {
            Why::NotGet => StatusCode::METHOD_NOT_ALLOWED,
            Why::NoConnectionUpgrade
            | Why::BadKey
            | Why::Target(_)
            | Why::NameRequired
            | Why::UnknownClient => StatusCode::BAD_REQUEST,
            Why::Version => StatusCode::UPGRADE_REQUIRED,
            Why::Origin | Why::TokenRoom => StatusCode::FORBIDDEN,
            Why::Token => StatusCode::UNAUTHORIZED,
            Why::Draining | Why::ServerFull | Why::TooManyRooms => StatusCode::SERVICE_UNAVAILABLE,
            Why::AddressFull => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    /// The reason, as the response body (plus a newline) and the log line's `reason`.
    pub fn reason(&self) -> Cow<'static, str> {
        Cow::Borrowed(match self {
            Why::NotGet => "websocket upgrade needs GET",
            Why::NoConnectionUpgrade => "websocket upgrade needs Connection: upgrade",
            Why::Version => "websocket version 13 required",
            Why::BadKey => "bad Sec-WebSocket-Key",
            Why::Draining => "server shutting down",
            Why::Target(bad) => return Cow::Owned(bad.to_string()),
            Why::NameRequired => "name required: this room lists its members, join with ?name=",
            Why::UnknownClient => "client address unknown: unparsable X-Forwarded-For or X-Real-IP",
            Why::Origin => "origin not allowed",
            Why::Token => "token required",
            Why::TokenRoom => "token does not allow this room",
            Why::ServerFull => "server full",
            Why::AddressFull => "too many connections from your address",
            Why::TooManyRooms => "too many rooms",
        })
    }

    /// Whether the refusal is for now only, so the answer carries `Retry-After`.
    pub fn retry_later(&self) -> bool {
        matches!(
            self,
            Why::Draining | Why::ServerFull | Why::AddressFull | Why::TooManyRooms
        )
    }
}

/// What an admitted upgrade carries into its connection task.
pub struct Admitted {
    /// `Sec-WebSocket-Key`, for the `101`'s `Sec-WebSocket-Accept`.
    pub key: HeaderValue,
    pub room: String,
    /// The checked `?name=`, in NFC.
    pub name: Option<String>,
    /// The configuration as it applies to the room (its `[[rooms]]` entry written in).
    pub config: Arc<Config>,
    pub client: IpAddr,
    /// The real client's slot under its address when the socket came through a trusted proxy
    /// (the socket's own slot is held by its task since `accept()`), freed when the task ends.
    pub admission: Option<Admission>,
    /// The room membership; `None` when the name is taken (closed with `1008` after the upgrade).
    pub membership: Option<Membership>,
    pub outbox: OutboxRx,
    /// When the signed token expires (the connection closes then with `jwt::EXPIRED`).
    pub expires: Option<std::time::SystemTime>,
}

/// Decides an upgrade request (its `Upgrade: websocket` already seen) and joins its room.
///
/// With a cluster and `presence.unique_names`, the name is claimed in Redis after every other check
/// passed and just before the join ([`crate::cluster::Cluster::claim`], the one wait here, bounded):
/// a name another node's member holds ends the upgrade with `1008 name taken` like a name taken
/// on this node, and a claim that did not end in a membership is given back.
pub async fn admit<B>(
    req: &Request<B>,
    peer: SocketAddr,
    state: &State,
    config: &Arc<Config>,
) -> Result<Admitted, Refusal> {
    let refuse = |why, client, room: Option<&str>| Refusal {
        why,
        client,
        room: room.map(str::to_owned),
    };
    let headers = req.headers();
    let claimed = limits::client_ip(peer, headers, &config.security.trusted_proxies);
    let handshake = check_handshake(req);
    let key = handshake.map_err(|why| refuse(why, claimed, None))?;
    if state.shutdown.is_draining() {
        return Err(refuse(Why::Draining, claimed, None));
    }
    let target = parse_target(
        req.uri().path(),
        req.uri().query(),
        &config.relay.default_room,
    )
    .map_err(|bad| refuse(Why::Target(bad), claimed, None))?;
    let mut target = target;
    let signed = authenticate(headers, target.token.as_deref(), config, state);
    if let Ok(Some(claims)) = &signed
        && let Some(name) = &claims.name
    {
        // The token's name is the checked name, whatever ?name= says, and its session: a
        // reconnect with a token for the same name takes that name over.
        target.session = Some(format!("jwt:{}", crate::proto::names::name_key(name)));
        target.name = Some(name.clone());
    }
    let target = target;
    let room = Some(target.room.as_str());
    let room_config = config.for_room(&target.room);
    // With a bad token, the 401 below comes first.
    if signed.is_ok() && room_config.presence.require_name && target.name.is_none() {
        return Err(refuse(Why::NameRequired, claimed, room));
    }
    let client = claimed.ok_or_else(|| refuse(Why::UnknownClient, None, room))?;
    if !origin_allowed(headers, config) {
        return Err(refuse(Why::Origin, Some(client), room));
    }
    let expires = match signed {
        Err(()) => return Err(refuse(Why::Token, Some(client), room)),
        Ok(Some(claims)) if !claims.may_join(&target.room) => {
            return Err(refuse(Why::TokenRoom, Some(client), room));
        }
        Ok(claims) => claims.map(|c| c.expires),
    };
    // The socket holds its slot since accept(); one that came through a trusted proxy was counted
    // in the total only, and its upgrade now counts under the real client's address.
    let behind_proxy = limits::is_trusted(peer, &config.security.trusted_proxies);
    let admission = match behind_proxy {
        false => None,
        true => Some(
            state
                .gate
                .admit_client(client, config.limits.max_connections_per_ip)
                .map_err(|full| {
                    let why = match full {
                        limits::Refusal::ServerFull => Why::ServerFull,
                        limits::Refusal::AddressFull => Why::AddressFull,
                    };
                    refuse(why, Some(client), room)
                })?,
        ),
    };

    let (outbox, outbox_rx) = crate::relay::outbox::outbox(
        config.limits.queue_messages,
        config.limits.queue_bytes as usize,
        state.shutdown.connection_token(),
    );
    let session = target.session.as_deref();
    // The name claim and, for a room not open here yet, the first read of its remote members
    // (so the first presence state is cluster-wide), in parallel: each bounded.
    let first_read = async {
        if let Some(cluster) = state.hub.cluster() {
            let open = state.hub.local_presence(&target.room).is_some();
            cluster.first_read(&target.room, open).await;
        }
    };
    let claim = async {
        match (state.hub.cluster(), &target.name) {
            (Some(cluster), Some(name)) if room_config.presence.unique_names => {
                let key = crate::proto::names::name_key(name);
                // Taking over its own name: this node already holds the claim.
                let own = session.is_some_and(|s| state.hub.holds_session(&target.room, &key, s));
                if own {
                    None
                } else {
                    let claim = cluster.claim(&target.room, &key).await;
                    Some((cluster, key, claim))
                }
            }
            _ => None,
        }
    };
    let ((), claim) = tokio::join!(first_read, claim);
    let joined = match &claim {
        Some((_, _, Claim::Taken)) => Err(JoinError::NameTaken),
        _ => state.hub.join_since(
            &target.room,
            target.name.as_deref(),
            session,
            target.since.as_ref().map(|(e, n)| (e.as_str(), *n)),
            outbox,
        ),
    };
    if let Some((cluster, key, Claim::Won)) = &claim
        && joined.is_err()
    {
        cluster.release(&Arc::from(target.room.as_str()), key);
    }
    let membership = match joined {
        Ok(m) => Some(m),
        Err(JoinError::TooManyRooms) => return Err(refuse(Why::TooManyRooms, Some(client), room)),
        Err(JoinError::NameTaken) => None,
    };
    Ok(Admitted {
        key,
        room: target.room,
        name: target.name,
        config: room_config,
        client,
        admission,
        membership,
        outbox: outbox_rx,
        expires,
    })
}

/// Who the request says it is: `Ok(None)` when no token is needed or the shared
/// `security.token` was given, `Ok(Some(claims))` for a valid signed token, `Err` otherwise. With
/// both configured either passes; a signed token's name is then the checked name.
fn authenticate(
    headers: &HeaderMap,
    from_query: Option<&str>,
    config: &Config,
    state: &State,
) -> Result<Option<crate::net::jwt::Claims>, ()> {
    let verifier = state.jwt.load();
    let Some(verifier) = verifier.as_ref() else {
        return token_ok(headers, from_query, &config.security.token)
            .then_some(None)
            .ok_or(());
    };
    if !config.security.token.is_empty() && token_ok(headers, from_query, &config.security.token) {
        return Ok(None);
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let claims = from_query
        .or(bearer)
        .and_then(|t| verifier.verify(t))
        .ok_or(())?;
    // A name the relay could not show is no name to join with.
    match &claims.name {
        Some(name) if crate::proto::names::presence_name(name).as_deref() != Ok(name) => Err(()),
        _ => Ok(Some(claims)),
    }
}

/// RFC 6455's request checks; the key when they pass.
fn check_handshake<B>(req: &Request<B>) -> Result<HeaderValue, Why> {
    let headers = req.headers();
    if req.method() != Method::GET {
        return Err(Why::NotGet);
    }
    if !has_token(headers, header::CONNECTION, "upgrade") {
        return Err(Why::NoConnectionUpgrade);
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(|v| v.as_bytes())
        != Some(b"13")
    {
        return Err(Why::Version);
    }
    // The key is 16 random bytes in base64, which is always 24 characters.
    headers
        .get(header::SEC_WEBSOCKET_KEY)
        .filter(|k| k.len() == 24)
        .cloned()
        .ok_or(Why::BadKey)
}

/// Whether a header holds `token` in its comma-separated list (case-insensitive).
pub fn has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers.get_all(name).iter().any(|v| {
        v.to_str()
            .is_ok_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_refusal_has_its_status_and_a_reason() {
        use crate::proto::names::NameProblem;
        let all = [
            (Why::NotGet, 405),
            (Why::NoConnectionUpgrade, 400),
            (Why::Version, 426),
            (Why::BadKey, 400),
            (Why::Draining, 503),
            (Why::Target(BadTarget::Room), 400),
            (Why::Target(BadTarget::Name(NameProblem::Invisible)), 400),
            (Why::Target(BadTarget::Session), 400),
            (Why::NameRequired, 400),
            (Why::UnknownClient, 400),
            (Why::Origin, 403),
            (Why::Token, 401),
            (Why::ServerFull, 503),
            (Why::AddressFull, 429),
            (Why::TooManyRooms, 503),
        ];
        for (why, status) in all {
            assert_eq!(why.status().as_u16(), status, "{why:?}");
            assert!(!why.reason().is_empty());
            assert_eq!(
                why.retry_after_expected(),
                why.retry_later(),
                "{why:?}: Retry-After exactly for 503 and 429"
            );
        }
    }

    impl Why {
        fn retry_after_expected(&self) -> bool {
            matches!(self.status().as_u16(), 503 | 429)
        }
    }
}
