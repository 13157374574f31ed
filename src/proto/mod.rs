//! The product's vocabulary, shared by every layer and importing nothing of the crate: the
//! WebSocket message as wsline relays it, its own close codes, and the rules for room and member
//! names.
pub mod close;
pub mod message;
pub mod names;
