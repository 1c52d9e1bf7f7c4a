//! `msgtrans-shards`: the thread-per-core engine behind `msgtrans`.
//!
//! # Layout
//!
//! * [`codec`] and [`packet`] — the MsgTrans wire format, pure functions over bytes.
//! * [`compress`] — payload compression (zstd, zlib), bounded when decoding.
//! * [`runtime`] — [`Engine`]: N glommio shards pinned one per core, and the
//!   handle the public API drives them with.
//! * `shard` — one core's state: sessions, buffers, listeners, inbox loop.
//! * `session` — one connection's state and the future that moves its bytes.
//! * [`pool`] — the connection slab and the tiered buffer pool.
//! * [`mesh`] — cross-shard inboxes with a once-per-batch doorbell.
//! * [`proto`] — transport pipelines: TCP always; TLS, WebSocket and QUIC
//!   with the features of those names.
//! * [`handler`] — the inline, on-shard message handler.
//! * [`session_handler`] — [`SessionHandler`]: connected / message /
//!   request with a [`Responder`] / disconnected, inline on the shard.
//! * [`stats`] — counters readable without stopping a shard.
//!
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

#[doc(hidden)]
pub mod bench_loop;
pub mod codec;
pub mod compress;
pub mod config;
pub mod error;
pub mod event;
pub mod handler;
pub mod id;
pub mod mesh;
pub mod packet;
pub mod pool;
pub mod proto;
mod pump;
mod ring;
pub mod runtime;
mod session;
pub mod session_handler;
mod session_io;
mod shard;
pub mod stats;
#[doc(hidden)]
pub mod testing;
mod turn_bell;
mod wire;

pub use config::EngineConfig;
pub use error::{CloseReason, CodecError, SendError, StartError, Violation};
pub use event::EngineEvent;
pub use handler::{Inline, InlineHandler};
pub use id::SessionId;
pub use msgtrans_sync::waitlist::WaitList;
pub use packet::{CompressionType, FixedHeader, IntoPayload, Packet, PacketType, ReservedFlags};
pub use runtime::Engine;
pub use session_handler::{Connected, Responder, SessionHandler, SessionHandlerAdapter};
pub use shard::EventSink;
