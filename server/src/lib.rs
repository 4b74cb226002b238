//! The Herald broker as a library: `storage` (durable logs, no gRPC),
//! `broker` (topics and publishing, no tonic), `api` (thin tonic services),
//! `server` (config, health, reflection, shutdown) that `main.rs` runs,
//! `metrics` (the Prometheus endpoint), `stats` (`herald stats`), and
//! `bench` (the load generators behind `herald bench`) and `testing` (an
//! in-process server for tests).

pub mod api;
pub mod bench;
pub mod broker;
pub mod config;
pub mod error_report;
pub mod metrics;
pub mod server;
pub mod stats;
pub mod storage;
pub mod telemetry;
pub mod testing;
