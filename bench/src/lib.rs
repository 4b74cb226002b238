//! Benchmarks run by `herald bench`, a crate of their own so that the
//! broker library (`herald-server`) holds the broker only and does not pull
//! in the load generator's histograms and progress bars. The `herald`
//! binary (`herald-cli`) parses [`BenchCommand`] and hands it to [`run`].

// Only what the binary, the benches and the tests use is public.
#![warn(unreachable_pub)]

mod baseline;
mod cli;
mod load;
mod pacing;
mod process;
mod progress;
mod publish;
mod rss;
mod scratch;
mod startup;
mod storage;
mod subscribe;
mod summary;
#[cfg(test)]
mod test_server;
mod topics;

pub use cli::{BenchCommand, run};
