//! # msgtrans
//!
//! A message transport for Rust: TCP, WebSocket and QUIC (and TLS under
//! TCP and WebSocket) behind one API, served by a thread-per-core sharded
//! engine (`msgtrans-shards`). The API is MsgTrans 1.0's: builders, events,
//! `send`, `request`, `broadcast`.
//!
//! ## Layout
//!
//! A thin shim over the engine (`msgtrans-shards`), in three layers; a
//! file uses only the layers below it:
//!
//! 1. **Values**: [`error`] ([`TransportError`], [`CloseReason`]),
//!    [`packet`], [`event`] ([`ServerEvent`], [`ClientEvent`],
//!    [`TransportContext`]), and the configs: [`protocol`]
//!    ([`TcpServerConfig`], [`TcpClientConfig`], …) and `tls`.
//! 2. **Services**: `metrics` (the `/metrics` endpoint and dashboard).
//! 3. **The API**: [`transport`] — [`TransportServer`] and
//!    [`TransportClient`], their builders and event streams; a client's
//!    connection slots, retries and reconnect supervisor.
//!
//! The API is a thin shim: its futures only touch channels, so they run in
//! `#[tokio::main]` or any other executor. The sessions live on the shards;
//! an inline handler ([`TransportServerBuilder::handler`]) serves messages on
//! the shard itself, the fast path.
//!
//! ## Cargo features
//!
//! Plain TCP is always built. Everything else is a feature, all of them on
//! by default; `default-features = false` leaves a TCP-only build whose
//! dependency tree holds no TLS, QUIC, WebSocket or compression crate. A
//! disabled feature's types and builder methods are absent, so asking for
//! one is a compile error.
//!
//! | feature | adds | pulls in |
//! |---|---|---|
//! | `websocket` | `WebSocketServerConfig`, `WebSocketClientConfig` (`ws://`) | tungstenite (handshake only), httparse |
//! | `tls` | `with_tls` on TCP and WebSocket (`tcp+tls`, `wss://`); `TlsServerConfig`, `TlsClientConfig` | rustls (ring), futures-rustls, rcgen |
//! | `quic` | `QuicServerConfig`, `QuicClientConfig`; the certificate types | quinn-proto, quinn-udp, rustls (ring), rcgen |
//! | `compression` | zstd and zlib payloads, byte-compatible with MsgTrans 1.0 | zstd, flate2 |
//! | `metrics` | `TransportServerBuilder::metrics`: Prometheus `/metrics`, `/stats.json`, a live dashboard | httparse |
//!
//! Without `compression`, a send that asks for compression goes out
//! uncompressed (its header says so, so the peer reads it right), and a
//! compressed packet received closes its session with
//! [`PacketError::CompressionNotBuilt`](packet::PacketError::CompressionNotBuilt).
//!
//! ## What it needs from the machine
//!
//! Linux with io_uring: kernel 5.8 or newer (5.19 or newer for the
//! COOP_TASKRUN rings; older kernels fall back to plain rings), with
//! io_uring allowed (`kernel.io_uring_disabled`, seccomp profiles). The
//! shards run on `msgtrans-glommio`, msgtrans's fork of glommio, which
//! refuses to start with a locked-memory limit (`ulimit -l`) under
//! 512 KiB; some container runtimes set 64 KiB. Where either is missing,
//! `build()` fails with [`TransportError::Start`] saying what to change
//! (io_uring unavailable, or "raise `ulimit -l`"), never a panic.
//!
//! ## Example
//!
//! ```no_run
//! use msgtrans::{event::ServerEvent, protocol::TcpServerConfig, transport::TransportServerBuilder};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = TransportServerBuilder::new()
//!     .with_protocol(TcpServerConfig::new("127.0.0.1:8001")?)
//!     .build()
//!     .await?;
//! let mut events = server.subscribe_events();
//! while let Ok(event) = events.recv().await {
//!     if let ServerEvent::MessageReceived { session_id, context } = event {
//!         if context.is_request() {
//!             let reply = context.data.clone();
//!             context.respond(reply)?;
//!         } else {
//!             server.send(session_id, &context.data).await?;
//!         }
//!     }
//! }
//! # Ok(()) }
//! ```
#![warn(missing_docs)]
#![cfg_attr(docsrs, feature(doc_cfg))]

#[cfg(feature = "cluster")]
#[cfg_attr(docsrs, doc(cfg(feature = "cluster")))]
pub mod cluster;
pub mod error;
pub mod event;
#[cfg(feature = "metrics")]
#[cfg_attr(docsrs, doc(cfg(feature = "metrics")))]
pub mod metrics;
pub mod protocol;
#[cfg(any(feature = "tls", feature = "quic"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "tls", feature = "quic"))))]
pub mod tls;
pub mod transport;

/// The MsgTrans packet and its header types.
pub mod packet {
    pub use msgtrans_shards::codec::{FrameLimits, FrameRef};
    pub use msgtrans_shards::{
        CodecError as PacketError, CompressionType, FixedHeader, IntoPayload, Packet, PacketType, ReservedFlags,
    };
}

#[cfg(feature = "cluster")]
pub use cluster::{ClusterConfig, ClusterStats};
pub use error::{CloseReason, Result, TransportError};
pub use event::{ClientEvent, ServerEvent, TransportContext};
#[cfg(feature = "metrics")]
pub use metrics::MetricsConfig;
pub use msgtrans_shards::accept::{AcceptHook, ConnectRequest, Decision, TlsInfo, Verdict, WsRequest};
pub use msgtrans_shards::stats::{
    AcceptFailure, CloseKind, Protocol, Refusal, SessionStats, ShardSnapshot, StatsSnapshot,
};
pub use msgtrans_shards::{Connected, Inline, InlineHandler, Responder, SessionHandler, SessionId, Undelivered};
pub use packet::{CompressionType, Packet, PacketType};
#[cfg(feature = "quic")]
pub use protocol::{QuicClientConfig, QuicServerConfig};
pub use protocol::{TcpClientConfig, TcpServerConfig};
#[cfg(feature = "websocket")]
pub use protocol::{WebSocketClientConfig, WebSocketServerConfig};
#[cfg(any(feature = "tls", feature = "quic"))]
pub use tls::{TlsClientConfig, TlsServerConfig};
pub use transport::{RetryConfig, TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder};

/// Every message id is a u32 (MsgTrans 1.0's alias).
pub type PacketId = u32;

// The README's program is a doctest, so the front door's example is known
// to compile and run.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
