//! The tiered buffer pool lives in `msgtrans-sync`, where loom checks it;
//! re-exported here under its old path.

pub use msgtrans_sync::buffer::*;
