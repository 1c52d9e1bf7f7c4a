//! Layer 2, the session: one connection's state and the future that moves
//! its bytes, over any stream ([`crate::session_io::SessionIo`]) and with
//! no knowledge of sockets, protocols or other sessions.
//!
//! * `state` — the outbound queue, waiting sends, pending requests, limits.
//! * `ctx` — what a session needs of its shard ([`SessionCtx`]), and the
//!   [`Route`] handle through which it reaches its shard's other sessions.
//! * `driver` — the future: read a batch, decode, deliver, write once.
//! * `deliver` — one frame to its request, the inline handler or the
//!   application.
//! * `handler`, `session_handler` — the application's code on the shard:
//!   what it implements and what it sees of a session.

mod ctx;
pub(crate) mod deliver;
mod driver;
pub mod handler;
pub mod session_handler;
mod state;

pub(crate) use ctx::{Route, SessionCtx};
pub(crate) use driver::Driver;
pub(crate) use state::{Announce, PendingRequest, SessionState};
