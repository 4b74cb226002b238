//! Benchmarks run by `herald bench`, kept in the library so they can be
//! tested and reused by the CLI.

pub mod baseline;
pub mod cli;
pub mod load;
pub mod pacing;
pub mod process;
pub mod progress;
pub mod publish;
pub mod rss;
pub mod scratch;
pub mod startup;
pub mod storage;
pub mod subscribe;
pub mod summary;
#[cfg(test)]
mod test_server;
pub mod topics;
