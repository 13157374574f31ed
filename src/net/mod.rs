//! What happens on a socket before it is a WebSocket: TLS, HTTP routing, the backend API,
//! request parsing, signed tokens, admission and the limits that count every socket; and the
//! [`state::State`] and [`shutdown::Shutdown`] every connection shares with the runtime.
//!
//! It must not import `runtime/`: tasks are spawned through the spawner the runtime passes in.
pub mod admit;
pub mod api;
pub mod http;
pub mod jwt;
pub mod limits;
pub mod request;
pub mod shutdown;
pub mod state;
pub mod tls;
pub mod upgrade;
