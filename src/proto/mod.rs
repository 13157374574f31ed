//! The product's vocabulary, shared by every layer and importing nothing of the crate: the
//! WebSocket message as wsline relays it, and the rules for room and member names.
pub mod message;
pub mod names;
