//! Benchmarks run by `herald bench`, a crate of their own so that the
//! broker library (`herald-server`) holds the broker only and does not pull
//! in the load generator's histograms and progress bars. The `herald`
//! binary (`herald-cli`) parses [`BenchCommand`] and hands it to [`run`].

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

pub use cli::{BenchCommand, run};
