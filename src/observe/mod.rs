//! Counters and the views of them: `/stats` (JSON) and `/metrics` (Prometheus text).
//!
//! Layer: just above `cluster/` (it shows the cluster's [`crate::cluster::Status`]) and below
//! `relay/`, `ws/` and `net/`, which increment its counters; it must not import any of those.
//! The HTTP routes that serve these views live in `net/http.rs`.
pub mod metrics;
pub mod stats;
