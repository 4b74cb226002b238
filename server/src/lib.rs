//! The Herald broker as a library: `storage` (durable logs, no gRPC),
//! `broker` (topics and publishing, no tonic), `api` (thin tonic services),
//! and `server` (config, health, reflection, shutdown) that `main.rs` runs.

pub mod api;
pub mod broker;
pub mod config;
pub mod server;
pub mod storage;
