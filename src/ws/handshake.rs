//! The opening handshake's one computation: the `Sec-WebSocket-Accept` value that answers a
//! client's `Sec-WebSocket-Key` (RFC 6455 §4.2.2). Whether a request may upgrade at all is
//! `net::admit`'s decision; this module only derives the key and must not look at anything else.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

/// The GUID RFC 6455 appends to every key.
const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// `base64(SHA-1(key + GUID))`: the `Sec-WebSocket-Accept` for the client's `Sec-WebSocket-Key`.
pub fn accept_key(key: &[u8]) -> String {
    let mut sha1 = Sha1::new();
    sha1.update(key);
    sha1.update(GUID);
    STANDARD.encode(sha1.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_6455_example() {
        // RFC 6455 §1.3 and §4.2.2, as printed there.
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn agrees_with_the_client_the_tests_use() {
        for key in ["dGhlIHNhbXBsZSBub25jZQ==", "x3JJHMbDL1EzLkh9GBhXDw==", ""] {
            assert_eq!(
                accept_key(key.as_bytes()),
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
                "{key}"
            );
        }
    }
}
