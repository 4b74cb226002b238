//! The Herald broker as a library: `storage` (durable logs, no gRPC),
//! `broker` (topics and publishing, no tonic), `api` (thin tonic services),
//! `server` (config, health, reflection, shutdown) that the `herald` binary
//! (`herald-cli`) runs, `metrics` (the Prometheus endpoint) and `testing`
//! (an in-process server for tests).

// Only what the binary, the benches and the tests use is public.
#![warn(unreachable_pub)]

pub mod api;
pub mod broker;
pub mod config;
mod metrics;
pub mod server;
pub mod storage;
pub mod telemetry;
pub mod testing;
