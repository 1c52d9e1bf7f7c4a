//! `msgtrans-sync`: the lock-free parts of msgtrans, small enough to model
//! check with `loom`.
//!
//! * [`doorbell`] — wakes a sleeping shard once per batch of messages.
//! * [`waitlist`] — the same for the application's event streams, where
//!   many tasks may wait.
//! * [`slots`] — the atomic per-slot words other threads read: liveness,
//!   queued bytes, and bytes reserved by sends not yet taken by the shard.
//! * [`buffer`] — the tiered buffer pool, whose buffers come home from any
//!   thread.
//!
//! Each module reaches atomics, `Arc` and queues only through `facade`,
//! which is `std` (and `crossbeam-queue`) normally and `loom` under
//! `--cfg loom`. The model tests are in `tests/loom.rs`; run them with
//! `RUSTFLAGS="--cfg loom" cargo test -p msgtrans-sync --release`.

pub mod buffer;
pub mod doorbell;
mod facade;
pub mod slots;
pub mod waitlist;
