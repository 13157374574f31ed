//! WebSocket after the upgrade: frame headers and the connection task (read, write, heartbeat,
//! the close phase). Reads and writes frames itself over any byte stream.
//!
//! It must not import `net/` or `runtime/`: it gets halves of a stream and what the connection uses.
pub mod conn;
pub mod frame;
pub mod handshake;
pub mod rate;
