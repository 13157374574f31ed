//! WebSocket after the upgrade: frame headers and the connection task (read, write, heartbeat,
//! the close phase). Reads and writes frames itself over any byte stream.
pub mod conn;
pub mod frame;
pub mod handshake;
pub mod rate;
