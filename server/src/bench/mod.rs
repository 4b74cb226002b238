//! Benchmarks run by `herald bench`, kept in the library so they can be
//! tested and reused by the CLI.

pub mod storage;
