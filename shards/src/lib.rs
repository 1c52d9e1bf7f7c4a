//! `msgtrans-shards`: the thread-per-core engine behind `msgtrans`.
//!
//! # Layout
//!
//! Five layers, from the bottom up. A file uses only the layers below it
//! (and files of its own layer below it); where lower code must reach up,
//! it goes through a small trait the lower layer defines. A packet's path
//! reads the same way up and back: socket → driver (4) → shard (3) →
//! session (2) → handler (2) → the session's write batch.
//!
//! 1. **Leaf types**, which know nothing of sessions: [`id`], [`header`],
//!    `channel` (the batched queue with a doorbell),
//!    [`error`], [`packet`], [`codec`] (pure functions over bytes),
//!    [`compress`], [`config`], `wire` (how packets are enveloped and
//!    WebSocket frames read), [`pool`], [`mesh`], [`stats`], `turn_bell`,
//!    `session_io` (the stream a session reads and writes), [`event`]
//!    (what the shards tell the application and the commands they take)
//!    and [`uplink`] (the way out to a cluster's other nodes).
//! 2. **The session**: `session` — its state, its `SessionCtx` (what it
//!    needs of its shard), the driver future over any stream, and the
//!    application's inline code ([`handler`], [`session_handler`]) — and
//!    the lifecycle `pump`. Sending to another session of the same shard
//!    reaches up through `session::Route`.
//! 3. **The shard context**: `shard` — the table of sessions, admission
//!    under the limits, routing, listeners, the inbox loop and a stop, and
//!    a registry for what drivers keep per shard. It knows no protocol.
//! 4. **Drivers**: [`proto`] (tcp, tls, ws, quic), `epoll` (the shard's
//!    readiness table for TCP sockets) and `ring` (the shard's own
//!    io_uring for plain TCP). Each knows only its protocol, and turns
//!    connections into sessions through the shard.
//! 5. **Runtime**: [`runtime`] — [`Engine`]: N shards pinned one per
//!    core; listen and connect reach the shards as tasks for the drivers.
//!
//! `testing` and `bench_loop` are harnesses over all of them.

//! Nothing on the per-message path takes a lock or crosses a core unless the
//! application asks for it (a send to a session on another shard, or the
//! event stream).
//!
//! # Features
//!
//! `websocket`, `tls`, `quic` and `compression`, all on by default; plain
//! TCP is always built. They only add: where a plain path carries optional
//! TLS, the TLS types exist in every build and are uninhabited without
//! `tls`, so the signatures do not change with the features.

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod accept;
#[doc(hidden)]
pub mod bench_loop;
mod channel;
pub mod codec;
pub mod compress;
pub mod config;
mod epoll;
pub mod error;
pub mod event;
pub mod header;
pub mod id;
pub mod mesh;
pub mod packet;
mod peers;
pub mod pool;
pub mod proto;
mod pump;
mod ring;
pub mod runtime;
mod session;
pub use session::{handler, session_handler};
mod session_io;
mod shard;
pub mod stats;
#[doc(hidden)]
pub mod testing;
mod timeout;
mod turn_bell;
pub mod uplink;
mod wire;

pub use config::EngineConfig;
pub use error::{CloseReason, CodecError, SendError, StartError, Violation};
pub use event::EngineEvent;
pub use event::EventSink;
pub use handler::{Inline, InlineHandler, Undelivered};
pub use id::SessionId;
pub use msgtrans_sync::waitlist::WaitList;
pub use packet::{CompressionType, FixedHeader, IntoPayload, Packet, PacketType, ReservedFlags};
pub use runtime::Engine;
pub use session_handler::{Connected, Responder, SessionHandler, SessionHandlerAdapter};
