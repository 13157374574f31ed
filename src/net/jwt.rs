//! Signed per-user tokens (`[security.jwt]`): a JSON Web Token in `?token=` (browsers cannot set
//! headers on a WebSocket) or `Authorization: Bearer`, verified before the upgrade.
//!
//! The algorithm is never taken from the token: HS256 with `secret`, or the one the public key
//! file's type fixes (Ed25519 → EdDSA, P-256 → ES256, RSA → RS256), so `alg: none` or an HMAC
//! signed with a public key is refused like any wrong signature. `exp` is required; `nbf` is
//! checked when present; `iss` and `aud` are required and checked when configured; all with
//! `leeway`. The verifier is built when the server starts and again on every SIGHUP (the key
//! file is read again), and `--check-config` builds it too, so an unreadable file or a key of
//! another type is a configuration problem, not a surprise at the first join.
//!
//! Tokens are secrets: neither they nor the claims' values are logged.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config::Jwt as Settings;

/// Why the verifier could not be built from the configuration.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("security.jwt.public_key {path}: cannot read: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "security.jwt.public_key {path}: not a PEM public key of a known type (Ed25519 for EdDSA, P-256 for ES256, RSA for RS256)"
    )]
    Unknown { path: PathBuf },
    #[error("security.jwt.secret: not usable as an HS256 key")]
    Secret,
}

/// What a verified token says about its member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The name claim (`name_claim`, default `sub`): the member's checked name.
    pub name: Option<String>,
    /// The rooms claim: names and `prefix*` patterns it may join; `None`: any room.
    pub rooms: Option<Vec<String>>,
    /// When the token expires: the connection is closed then with [`EXPIRED`].
    pub expires: SystemTime,
}

impl Claims {
    /// Whether the token lets its holder join `room`.
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms.as_ref().is_none_or(|rooms| {
            rooms.iter().any(|r| match r.strip_suffix('*') {
                Some(prefix) => room.starts_with(prefix),
                None => r == room,
            })
        })
    }
}

/// The close code and reason of a connection whose token expired: the client fetches a new one.
pub use crate::proto::close::EXPIRED;

/// Verifies tokens with the configured key and rules.
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    name_claim: String,
    rooms_claim: String,
}

impl Verifier {
    /// The verifier of `settings`; `None` when `[security.jwt]` is off (no secret, no key file).
    pub fn new(settings: &Settings) -> Result<Option<Verifier>, KeyError> {
        let (key, algorithm) = if !settings.secret.is_empty() {
            let key = DecodingKey::from_secret(settings.secret.as_bytes())
                .map_err(|_| KeyError::Secret)?;
            (key, Algorithm::HS256)
        } else if !settings.public_key.as_os_str().is_empty() {
            let path = &settings.public_key;
            let pem = std::fs::read(path).map_err(|source| KeyError::Read {
                path: path.clone(),
                source,
            })?;
            public_key(&pem).ok_or_else(|| KeyError::Unknown { path: path.clone() })?
        } else {
            return Ok(None);
        };
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway.as_secs();
        validation.validate_nbf = true;
        if !settings.issuer.is_empty() {
            validation.set_issuer(&[&settings.issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        if settings.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&[&settings.audience]);
            validation.required_spec_claims.insert("aud".into());
        }
        Ok(Some(Verifier {
            key,
            validation,
            name_claim: settings.name_claim.clone(),
            rooms_claim: settings.rooms_claim.clone(),
        }))
    }

    /// The claims of `token` if it is valid now; `None` otherwise (why is not told: a client
    /// that guesses learns nothing, and the log line says only `invalid token`).
    pub fn verify(&self, token: &str) -> Option<Claims> {
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation).ok()?;
        let claims = data.claims;
        let exp = claims.get("exp")?.as_u64()?;
        let name = match claims.get(&self.name_claim) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => return None,
        };
        let rooms = match claims.get(&self.rooms_claim) {
            None | Some(Value::Null) => None,
            Some(Value::Array(list)) => Some(
                list.iter()
                    .map(|r| r.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()?,
            ),
            Some(_) => return None,
        };
        Some(Claims {
            name,
            rooms,
            // An `exp` beyond what the clock can hold is no expiry we can keep.
            expires: UNIX_EPOCH.checked_add(Duration::from_secs(exp))?,
        })
    }
}

/// A PEM public key and the one algorithm its type allows.
fn public_key(pem: &[u8]) -> Option<(DecodingKey, Algorithm)> {
    if let Ok(key) = DecodingKey::from_ed_pem(pem) {
        return Some((key, Algorithm::EdDSA));
    }
    if let Ok(key) = DecodingKey::from_ec_pem(pem) {
        return Some((key, Algorithm::ES256));
    }
    DecodingKey::from_rsa_pem(pem)
        .ok()
        .map(|key| (key, Algorithm::RS256))
}

/// What `--check-config` says about tokens.
pub fn check_note(settings: &Settings) -> Option<String> {
    if !settings.secret.is_empty() {
        return Some("tokens: signed tokens (HS256 with security.jwt.secret)".into());
    }
    let path = &settings.public_key;
    let pem = std::fs::read(path).ok()?;
    let (_, algorithm) = public_key(&pem)?;
    Some(format!(
        "tokens: signed tokens ({algorithm:?} with {})",
        path.display()
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_are_exact_names_or_prefix_patterns() {
        let claims = |rooms: Option<&[&str]>| Claims {
            name: None,
            rooms: rooms.map(|r| r.iter().map(|s| s.to_string()).collect()),
            expires: UNIX_EPOCH,
        };
        let some = claims(Some(&["lobby", "team-*"]));
        assert!(some.may_join("lobby") && some.may_join("team-a") && some.may_join("team-"));
        assert!(!some.may_join("lobby2") && !some.may_join("team"));
        assert!(claims(None).may_join("anything"));
        assert!(!claims(Some(&[])).may_join("lobby"));
    }
}
