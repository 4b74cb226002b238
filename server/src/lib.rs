//! The Herald broker as a library: `storage` (durable logs, no gRPC),
//! `broker` (topics and publishing, no tonic), `api` (thin tonic services),
//! `server` (config, health, reflection, shutdown) that the `herald` binary
//! (`herald-cli`) runs, `metrics` (the Prometheus endpoint) and `testing`
//! (an in-process server for tests).

pub mod api;
pub mod broker;
pub mod config;
pub mod metrics;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod testing;
