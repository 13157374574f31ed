//! Rooms: who is in each, what they say, and who hears it.
//!
//! The hub keeps the registry and fans each message out into the members' outboxes; the pure
//! rules (presence, history, recovery, envelope) sit beside it. Knows nothing of sockets or Redis:
//! it reaches other nodes only through the cluster handle.
//!
//! Layer: imports `proto`, `config`, `cluster` (the handle and the [`crate::cluster::Rooms`] trait
//! the hub implements) and `observe` (the counters); never `ws`, `net` or `runtime`.
pub mod envelope;
pub mod history;
pub mod hub;
pub mod outbox;
pub mod presence;
pub mod recovery;
