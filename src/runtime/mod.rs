//! The process: binding and accept loops, the drain, signals, systemd notifications and logging.
//! Long-lived tasks are spawned here.
pub mod logging;
pub mod server;
pub mod shutdown;
pub mod signals;
pub mod systemd;
