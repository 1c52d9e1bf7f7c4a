//! Per-shard pools that sit on the I/O path: the connection slab and the
//! tiered buffer pool.

pub mod buffer;
pub(crate) mod hot;
pub mod slab;
