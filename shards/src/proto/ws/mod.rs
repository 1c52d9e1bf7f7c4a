//! The WebSocket driver: the upgrade on both sides (`handshake`), then a
//! session whose frames `crate::wire::ws` reads and writes.

pub mod handshake;
mod upgrade;

pub use crate::wire::ws::close_code;
