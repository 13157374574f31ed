//! Counters and the views of them: `/stats` (JSON) and `/metrics` (Prometheus text).
pub mod metrics;
pub mod stats;
