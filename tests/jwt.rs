//! Signed per-user tokens (`[security.jwt]`, SPEC §4): verified before the upgrade, the name claim
//! as the checked name, the rooms claim, the close at `exp`, the shared token beside them, and the
//! key file reloaded on SIGHUP, against the real server over TLS.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::daemon::{BIN, Daemon};
use common::{start, upgrade_request, within};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const SECRET: &str = "a-test-secret-of-at-least-32-bytes-0123456789";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// base64url without padding (RFC 7515), for a token no library would sign.
fn b64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// An Ed25519 pair: (private PKCS#8 PEM, public PEM).
fn ed25519() -> (String, String) {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    (pair.serialize_pem(), pair.public_key_pem())
}

fn eddsa(claims: &Value, private_pem: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        claims,
        &EncodingKey::from_ed_pem(private_pem.as_bytes()).unwrap(),
    )
    .unwrap()
}

/// The first presence state's names.
async fn names(c: &mut common::Client) -> Value {
    c.recv_presence().await["names"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_hs256_token_joins_with_its_name_and_name_cannot_override_it() {
    let server = start(|c| c.security.jwt.secret = SECRET.into()).await;
    let token = hs256(&json!({"sub": "alice", "exp": now() + 600}), SECRET);
    let mut alice = server
        .connect(&format!("/chat?token={token}&name=mallory"))
        .await;
    assert_eq!(names(&mut alice).await, json!(["alice"]));
    // A second connection with the same token takes the name over (its session is the token's).
    let mut again = server.connect(&format!("/chat?token={token}")).await;
    let frame = alice.closed().await;
    assert_eq!(u16::from(frame.code), 4001);
    assert_eq!(names(&mut again).await, json!(["alice"]));
    // Also as Authorization: Bearer.
    let bob = hs256(&json!({"sub": "bob", "exp": now() + 600}), SECRET);
    let (status, _, _) = server
        .http(&upgrade_request(
            "/chat",
            &format!("Authorization: Bearer {bob}\r\n"),
        ))
        .await;
    assert_eq!(status, 101);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_eddsa_token_joins_with_its_name_and_rooms_are_limited() {
    let (private, public) = ed25519();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("jwt.pub");
    std::fs::write(&path, public).unwrap();
    let server = start(|c| {
        c.security.jwt.public_key = path.clone();
        c.security.jwt.issuer = "https://auth.example".into();
        c.security.jwt.audience = "wsline".into();
    })
    .await;
    let claims = json!({
        "sub": "carol", "exp": now() + 600, "iss": "https://auth.example", "aud": "wsline",
        "rooms": ["lobby", "team-*"]
    });
    let token = eddsa(&claims, &private);
    let mut carol = server.connect(&format!("/team-red?token={token}")).await;
    assert_eq!(names(&mut carol).await, json!(["carol"]));
    assert!(
        server
            .try_connect(&format!("/lobby?token={token}"))
            .await
            .is_ok()
    );
    // A room outside the claim: 403 before the upgrade.
    assert_eq!(
        server
            .try_connect(&format!("/other?token={token}"))
            .await
            .err(),
        Some(403)
    );
    // Wrong issuer or audience, or none: 401.
    for (key, value) in [
        ("iss", json!("https://evil.example")),
        ("aud", json!("other")),
    ] {
        let mut wrong = claims.clone();
        wrong[key] = value;
        let t = eddsa(&wrong, &private);
        assert_eq!(
            server.try_connect(&format!("/lobby?token={t}")).await.err(),
            Some(401),
            "{key}"
        );
        wrong.as_object_mut().unwrap().remove(key);
        let t = eddsa(&wrong, &private);
        assert_eq!(
            server.try_connect(&format!("/lobby?token={t}")).await.err(),
            Some(401),
            "no {key}"
        );
    }
    // The same claims HS256-signed with the public key as the secret: refused (alg is pinned).
    let public = std::fs::read_to_string(&path).unwrap();
    let confused = hs256(&claims, &public);
    assert_eq!(
        server
            .try_connect(&format!("/lobby?token={confused}"))
            .await
            .err(),
        Some(401)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_tokens_are_refused_before_the_upgrade_with_401() {
    let server = start(|c| {
        c.security.jwt.secret = SECRET.into();
        c.security.jwt.leeway = std::time::Duration::from_secs(5);
    })
    .await;
    let b64 = |v: &Value| b64url(v.to_string().as_bytes());
    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&json!({"sub": "eve", "exp": now() + 600}))
    );
    let bad = [
        (
            "expired",
            hs256(&json!({"sub": "eve", "exp": now() - 60}), SECRET),
        ),
        (
            "not yet valid",
            hs256(
                &json!({"sub": "eve", "exp": now() + 600, "nbf": now() + 60}),
                SECRET,
            ),
        ),
        ("no exp", hs256(&json!({"sub": "eve"}), SECRET)),
        (
            "wrong signature",
            hs256(
                &json!({"sub": "eve", "exp": now() + 600}),
                "another-secret-of-at-least-32-bytes-xxxxx",
            ),
        ),
        ("alg none", none),
        ("garbage", "not.a.token".into()),
        (
            "a name that is no name",
            hs256(&json!({"sub": "\u{202e}eve", "exp": now() + 600}), SECRET),
        ),
    ];
    for (what, token) in &bad {
        let (status, head, body) = server
            .http(&upgrade_request(&format!("/r?token={token}"), ""))
            .await;
        assert_eq!(status, 401, "{what}: {head}");
        assert_eq!(body, "token required\n", "{what}");
    }
    assert_eq!(server.try_connect("/r").await.err(), Some(401), "no token");
    // The server goes on serving valid tokens.
    let (a, b) = (
        hs256(&json!({"sub": "ok1", "exp": now() + 600}), SECRET),
        hs256(&json!({"sub": "ok2", "exp": now() + 600}), SECRET),
    );
    let mut one = server.connect(&format!("/fine?token={a}")).await;
    let mut two = server.connect(&format!("/fine?token={b}")).await;
    within("both joined", async {
        while two.recv_presence().await["count"] != 2 {}
    })
    .await;
    one.send_text("still relaying").await;
    assert_eq!(
        two.recv_relayed().await,
        tokio_tungstenite::tungstenite::Message::text("still relaying")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_is_closed_with_4002_at_exp() {
    let server = start(|c| c.security.jwt.secret = SECRET.into()).await;
    let token = hs256(&json!({"sub": "dave", "exp": now() + 2}), SECRET);
    let started = std::time::Instant::now();
    let mut dave = server.connect(&format!("/r?token={token}")).await;
    let frame = dave.closed().await;
    assert_eq!(
        (u16::from(frame.code), frame.reason.as_str()),
        (4002, "token expired")
    );
    assert!(
        started.elapsed() <= std::time::Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shared_token_keeps_working_beside_signed_tokens() {
    let server = start(|c| {
        c.security.jwt.secret = SECRET.into();
        c.security.token = "shared-token-123".into();
    })
    .await;
    let mut shared = server.connect("/r?token=shared-token-123&name=sam").await;
    assert_eq!(
        names(&mut shared).await,
        json!(["sam"]),
        "the shared token keeps ?name="
    );
    let token = hs256(&json!({"sub": "tom", "exp": now() + 600}), SECRET);
    assert!(
        server
            .try_connect(&format!("/r?token={token}"))
            .await
            .is_ok()
    );
    assert_eq!(server.try_connect("/r?token=wrong").await.err(), Some(401));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_key_file_is_read_again_on_sighup_and_tokens_are_never_logged() {
    let (old_private, old_public) = ed25519();
    let (new_private, new_public) = ed25519();
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("jwt.pub");
    std::fs::write(&key, &old_public).unwrap();
    let extra = format!("[log]\nlevel = \"debug\"\n[security.jwt]\npublic_key = {key:?}\n");
    let daemon = Daemon::start(&extra, &[]).await;
    let claims = json!({"sub": "erin", "exp": now() + 600});
    let (old, new) = (eddsa(&claims, &old_private), eddsa(&claims, &new_private));
    let status = |token: String| {
        let daemon = &daemon;
        async move {
            daemon
                .http(&upgrade_request(&format!("/r?token={token}"), ""))
                .await
                .0
        }
    };
    assert_eq!(status(old.clone()).await, 101);
    assert_eq!(status(new.clone()).await, 401);
    std::fs::write(&key, &new_public).unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("configuration reloaded").await;
    assert_eq!(status(new.clone()).await, 101);
    assert_eq!(status(old.clone()).await, 401);
    // A broken key file on the next SIGHUP keeps the key in force.
    std::fs::write(&key, "not a key").unwrap();
    daemon.signal("-HUP");
    daemon.wait_log("reload failed").await;
    assert_eq!(status(new.clone()).await, 101);
    let log = daemon.log();
    assert!(log.contains("security.jwt.public_key"), "{log}");
    for token in [&old, &new] {
        assert!(!log.contains(token.as_str()), "a token in the log:\n{log}");
        let signature = token.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a signature in the log:\n{log}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_validates_the_key_file_and_keeps_the_secret_out() {
    let cert = common::TestCert::new();
    let dir = cert.dir.path();
    let base = format!(
        "[tls]\ncert = {:?}\nkey = {:?}\n",
        cert.cert_path, cert.key_path
    );
    let run = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        async move {
            let out = tokio::process::Command::new(BIN)
                .args(["--check-config", "--config"])
                .arg(&path)
                .output();
            let out = within("wsline --check-config", out).await.unwrap();
            let all = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            (out.status.code(), all)
        }
    };
    let (code, out) = run(
        "missing.toml",
        format!("{base}[security.jwt]\npublic_key = \"nowhere.pem\"\n"),
    )
    .await;
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("security.jwt.public_key") && out.contains("cannot read"),
        "{out}"
    );
    std::fs::write(
        dir.join("junk.pem"),
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    let (code, out) = run(
        "junk.toml",
        format!("{base}[security.jwt]\npublic_key = \"junk.pem\"\n"),
    )
    .await;
    assert_eq!(code, Some(78), "{out}");
    assert!(
        out.contains("not a PEM public key of a known type"),
        "{out}"
    );
    let (code, out) = run(
        "both.toml",
        format!("{base}[security.jwt]\nsecret = \"s3cr3t-value\"\npublic_key = \"junk.pem\"\n"),
    )
    .await;
    assert_eq!(code, Some(78), "{out}");
    assert!(out.contains("not both"), "{out}");
    assert!(!out.contains("s3cr3t-value"), "{out}");
    let (code, out) = run(
        "typed.toml",
        format!("{base}[security.jwt]\nsecret = 12345678987654321\n"),
    )
    .await;
    assert_eq!(code, Some(78), "{out}");
    assert!(!out.contains("12345678987654321"), "{out}");
    let (_, public) = ed25519();
    std::fs::write(dir.join("good.pem"), public).unwrap();
    let (code, out) = run(
        "good.toml",
        format!("{base}[security.jwt]\npublic_key = \"good.pem\"\n"),
    )
    .await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("EdDSA"), "{out}");
}
