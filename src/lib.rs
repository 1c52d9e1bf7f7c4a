//! # msgtrans
//!
//! A message transport for Rust — TCP today, WebSocket and QUIC next —
//! served by a thread-per-core sharded engine (`msgtrans-shards`), with the
//! API MsgTrans 1.0 users already write.
//!
//! ## Layout
//!
//! * [`transport`] — [`TransportServer`] / [`TransportClient`] and their builders.
//! * [`protocol`] — per-protocol configs ([`TcpServerConfig`], [`TcpClientConfig`]).
//! * [`event`] — [`ServerEvent`], [`ClientEvent`], [`TransportContext`].
//! * [`packet`] — the MsgTrans wire packet.
//! * [`error`] — [`TransportError`] and [`CloseReason`].
//!
//! The API is a thin shim: its futures only touch channels, so they run in
//! `#[tokio::main]` or any other executor. The sessions live on the shards;
//! an inline handler ([`TransportServerBuilder::handler`]) serves messages on
//! the shard itself, the fast path.
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

pub mod error;
pub mod event;
pub mod metrics;
pub mod protocol;
pub mod tls;
pub mod transport;

/// The MsgTrans packet and its header types.
pub mod packet {
    pub use msgtrans_shards::codec::{FrameLimits, FrameRef};
    pub use msgtrans_shards::{
        CodecError as PacketError, CompressionType, FixedHeader, IntoPayload, Packet, PacketType, ReservedFlags,
    };
}

pub use error::{CloseReason, Result, TransportError};
pub use event::{ClientEvent, ServerEvent, TransportContext};
pub use metrics::MetricsConfig;
pub use msgtrans_shards::stats::{CloseKind, Protocol, SessionStats, ShardSnapshot, StatsSnapshot};
pub use msgtrans_shards::{Connected, Inline, InlineHandler, Responder, SessionHandler, SessionId};
pub use packet::{CompressionType, Packet, PacketType};
pub use protocol::{
    QuicClientConfig, QuicServerConfig, TcpClientConfig, TcpServerConfig, WebSocketClientConfig, WebSocketServerConfig,
};
pub use tls::{TlsClientConfig, TlsServerConfig};
pub use transport::{RetryConfig, TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder};

/// Every message id is a u32 (MsgTrans 1.0's alias).
pub type PacketId = u32;
