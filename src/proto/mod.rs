//! The product's vocabulary, shared by every layer and importing nothing of the crate: the
//! WebSocket message as wsline relays it, its own close codes, and the rules for room and member
//! names.
//!
//! It must not import anything of the crate.
pub mod close;
pub mod message;
pub mod names;
