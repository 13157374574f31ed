//! TLS: PEM files (or an ephemeral self-signed certificate) to a rustls `ServerConfig`.
//!
//! The certificate sits behind an [`ArcSwap`] inside a [`ResolvesServerCert`], so a reload swaps it
//! for new handshakes while every open session keeps its own state: nobody is dropped. PEM parsing
//! uses `rustls-pki-types` (`PemObject`); `rustls-pemfile` is unmaintained (RUSTSEC-2025-0134).
//!
//! It must not know HTTP or WebSocket; the stream's bytes are `tls/stream.rs`'s, its sharing
//! between reader, writer and direct writes `tls/shared.rs`'s.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use arc_swap::ArcSwap;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config;

mod shared;
mod stream;

pub use shared::{Half, SharedTls, share};
pub use stream::{MAX_FRAGMENT, MAX_INCOMING, TlsStream, accept};

/// Why a certificate or key could not be used. Each names the file and what to do about it.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("tls.cert {path}: cannot read: {source}")]
    ReadCert {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.key {path}: cannot read: {source}")]
    ReadKey {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("tls.cert {path}: no PEM certificate in the file ({detail})")]
    NoCert { path: PathBuf, detail: String },
    #[error("tls.key {path}: no PEM private key (PKCS#8, PKCS#1 or SEC1) in the file ({detail})")]
    NoKey { path: PathBuf, detail: String },
    #[error("tls.key {key} does not belong to tls.cert {cert}: {detail}")]
    Mismatch {
        cert: PathBuf,
        key: PathBuf,
        detail: String,
    },
    #[error("cannot make a self-signed certificate: {0}")]
    SelfSigned(String),
    /// Not TLS, but loaded with the certificate (at start and on SIGHUP): the token key file.
    #[error(transparent)]
    Jwt(#[from] crate::net::jwt::KeyError),
}

impl TlsError {
    /// The configuration key the problem is about, so the error can point at its line.
    pub fn key(&self) -> &'static str {
        match self {
            TlsError::ReadCert { .. } | TlsError::NoCert { .. } => "tls.cert",
            TlsError::ReadKey { .. } | TlsError::NoKey { .. } | TlsError::Mismatch { .. } => {
                "tls.key"
            }
            TlsError::SelfSigned(_) => "tls.self_signed",
            TlsError::Jwt(_) => "security.jwt",
        }
    }
}

/// The TLS side of the server: an acceptor whose certificate can be swapped while running.
#[derive(Clone)]
pub struct Tls {
    /// What every handshake starts from (see [`accept`]).
    server: Arc<ServerConfig>,
    /// Shared with `server`, which asks it on every handshake.
    cert: Arc<SwappableCert>,
    /// The current certificate's notAfter, in Unix seconds, for /stats and /metrics.
    not_after: Arc<AtomicI64>,
}

impl Tls {
    /// Builds the acceptor from `[tls]`, or `None` when `tls.enabled = false`.
    pub fn from_config(tls: &config::Tls) -> Result<Option<Tls>, TlsError> {
        if !tls.enabled {
            return Ok(None);
        }
        let key = if tls.self_signed {
            tracing::warn!(
                "tls.self_signed = true: serving an ephemeral certificate for localhost; \
                 browsers and clients will not trust it. Development only."
            );
            self_signed()?
        } else {
            load_pair(&tls.cert, &tls.key)?
        };
        let not_after = Arc::new(AtomicI64::new(not_after(&key)));
        let cert = Arc::new(SwappableCert(ArcSwap::from_pointee(key)));
        let mut server = ServerConfig::builder_with_protocol_versions(&[
            &rustls::version::TLS13,
            &rustls::version::TLS12,
        ])
        .with_no_client_auth()
        .with_cert_resolver(cert.clone());
        // WebSocket over HTTP/2 (RFC 8441) is not served, so only offer HTTP/1.1.
        server.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Tls {
            server: Arc::new(server),
            cert,
            not_after,
        }))
    }

    /// The rustls configuration new connections are accepted with.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// Loads the pair again and uses it for new handshakes; on error the old pair stays. A
    /// self-signed certificate is kept as it is.
    pub fn reload(&self, tls: &config::Tls) -> Result<(), TlsError> {
        if tls.self_signed {
            return Ok(());
        }
        let key = load_pair(&tls.cert, &tls.key)?;
        self.not_after.store(not_after(&key), Ordering::Relaxed);
        self.cert.0.store(Arc::new(key));
        Ok(())
    }

    /// When the certificate in use expires, in Unix seconds.
    pub fn not_after(&self) -> i64 {
        self.not_after.load(Ordering::Relaxed)
    }
}

/// A certificate resolver that always answers with the current pair.
#[derive(Debug)]
struct SwappableCert(ArcSwap<CertifiedKey>);

impl ResolvesServerCert for SwappableCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.load_full())
    }
}

/// The end-entity certificate's notAfter in Unix seconds (0 if it cannot be read, which rustls
/// would have refused before this point).
fn not_after(key: &CertifiedKey) -> i64 {
    key.cert
        .first()
        .and_then(|der| x509_parser::parse_x509_certificate(der).ok())
        .map_or(0, |(_, cert)| cert.validity().not_after.timestamp())
}

fn provider() -> Arc<CryptoProvider> {
    CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()))
}

/// Reads a PEM chain and key and checks that the key belongs to the first certificate.
pub fn load_pair(cert_path: &Path, key_path: &Path) -> Result<CertifiedKey, TlsError> {
    let cert_pem = std::fs::read(cert_path).map_err(|source| TlsError::ReadCert {
        path: cert_path.to_owned(),
        source,
    })?;
    let key_pem = std::fs::read(key_path).map_err(|source| TlsError::ReadKey {
        path: key_path.to_owned(),
        source,
    })?;
    let no_cert = |detail: String| TlsError::NoCert {
        path: cert_path.to_owned(),
        detail,
    };
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| no_cert(e.to_string()))?;
    if chain.is_empty() {
        return Err(no_cert("found no BEGIN CERTIFICATE section".into()));
    }
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::NoKey {
        path: key_path.to_owned(),
        detail: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, &provider()).map_err(|e| TlsError::Mismatch {
        cert: cert_path.to_owned(),
        key: key_path.to_owned(),
        detail: e.to_string(),
    })
}

fn self_signed() -> Result<CertifiedKey, TlsError> {
    let names = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    let key = PrivateKeyDer::try_from(generated.signing_key.serialize_der())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))?;
    CertifiedKey::from_der(vec![generated.cert.der().clone()], key, &provider())
        .map_err(|e| TlsError::SelfSigned(e.to_string()))
}
