//! The WebSocket message as wsline relays it: text (checked UTF-8) or binary, plus the control
//! frames a connection answers. Cheap to clone (the payload is shared), so one message can sit in
//! many outboxes at once.
pub use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
