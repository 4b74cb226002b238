pub mod bench;
pub mod storage;
