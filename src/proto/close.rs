//! Close codes of wsline's own (4000-4999, RFC 6455 §7.4.2) that more than one layer names: the
//! one who decides to close and the connection that sends the frame. Constants only.

/// The close code and reason of a connection whose signed token expired: the client fetches a
/// new one.
pub const EXPIRED: (u16, &str) = (4002, "token expired");
