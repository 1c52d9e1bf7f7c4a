//! QUIC on the shards: each shard drives its own `quinn_proto::Endpoint`
//! over its own `SO_REUSEPORT` UDP socket (quinn's tokio runtime is not an
//! option: glommio tasks are not `Send`). The driver is ours and small; the
//! protocol is quinn-proto's. A connection becomes an ordinary session
//! once its handshake completes, served by the same driver as TCP.
//!
//! * `udp` — the socket: batched receives (GRO), GSO sends, ring readiness.
//! * `cid` — connection IDs that name their shard, for cross-shard relays.
//! * `alpn` — one port for ALPN `msgtrans/1` (2.0) and no ALPN (1.0).
//! * `endpoint` — the per-shard driver, timers and connection lifecycle.
//! * `stream` — a connection's streams as one stream of prefixed packets.

mod alpn;
mod cid;
pub(crate) mod endpoint;
mod stream;
pub mod udp;

use std::sync::Arc;
use std::time::Duration;

pub use alpn::ALPN;
pub use endpoint::app_code;

use crate::error::StartError;

/// Default QUIC idle timeout: 30 s, quinn's and MsgTrans 1.0's. Negotiated
/// with the peer (the smaller wins); a connection silent for this long is
/// closed at the QUIC layer and its session ends with `IdleTimeout`.
pub const DEFAULT_QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default keep-alive interval: none. A server does not need to keep idle
/// clients; clients that must survive quiet periods set one below the
/// idle timeout.
pub const DEFAULT_QUIC_KEEP_ALIVE: Option<Duration> = None;
/// Default bidirectional streams a peer may have open at once: 16. MsgTrans
/// peers use one; a few more leave room for reconnecting clients.
pub const DEFAULT_QUIC_MAX_BIDI_STREAMS: u32 = 16;
/// Default unidirectional streams a peer may have open at once: 100, as
/// quinn's. MsgTrans 1.0.0–1.0.2 send each packet on its own stream, so this
/// bounds how many packets such a client has in flight (more are granted as
/// streams finish). quinn-proto sets aside state for every stream a peer may
/// open: at 1,024 a connection cost 75 KB of server memory, at 100 about
/// 30 KB (`examples/quic_scale.rs --uni N` measures it).
pub const DEFAULT_QUIC_MAX_UNI_STREAMS: u32 = 100;
/// Default receive window per stream: 2 MiB, enough to keep a loopback or
/// LAN path full for large packets without letting one stream pin memory.
pub const DEFAULT_QUIC_STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Default receive window per connection, all streams together: 8 MiB.
pub const DEFAULT_QUIC_RECEIVE_WINDOW: u32 = 8 * 1024 * 1024;
/// Default half-open handshakes on a shard past which a new QUIC
/// connection must answer a Retry first: 256. Far above what a steady
/// server has half open, and one extra round trip for new peers during a
/// flood of Initials, whose forged sources then hold no state.
pub const DEFAULT_QUIC_RETRY_AFTER_HANDSHAKES: usize = 256;

/// QUIC transport settings, the same on both sides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuicTransport {
    /// Close a connection silent for this long (`DEFAULT_QUIC_IDLE_TIMEOUT`).
    pub idle_timeout: Duration,
    /// Send a PING after this much quiet (`DEFAULT_QUIC_KEEP_ALIVE`).
    pub keep_alive: Option<Duration>,
    /// Bidirectional streams the peer may open at once.
    pub max_bidi_streams: u32,
    /// Unidirectional streams the peer may open at once.
    pub max_uni_streams: u32,
    /// Bytes the peer may send on one stream ahead of our reads.
    pub stream_window: u32,
    /// Bytes the peer may send on all streams ahead of our reads.
    pub receive_window: u32,
}

impl Default for QuicTransport {
    fn default() -> Self {
        Self {
            idle_timeout: DEFAULT_QUIC_IDLE_TIMEOUT,
            keep_alive: DEFAULT_QUIC_KEEP_ALIVE,
            max_bidi_streams: DEFAULT_QUIC_MAX_BIDI_STREAMS,
            max_uni_streams: DEFAULT_QUIC_MAX_UNI_STREAMS,
            stream_window: DEFAULT_QUIC_STREAM_WINDOW,
            receive_window: DEFAULT_QUIC_RECEIVE_WINDOW,
        }
    }
}

impl QuicTransport {
    fn quinn(&self) -> Result<quinn_proto::TransportConfig, StartError> {
        use quinn_proto::{IdleTimeout, VarInt};
        let mut t = quinn_proto::TransportConfig::default();
        let idle = IdleTimeout::try_from(self.idle_timeout).map_err(|e| tls_error(format!("idle timeout: {e}")))?;
        t.max_idle_timeout(Some(idle))
            .keep_alive_interval(self.keep_alive)
            .max_concurrent_bidi_streams(VarInt::from_u32(self.max_bidi_streams))
            .max_concurrent_uni_streams(VarInt::from_u32(self.max_uni_streams))
            .stream_receive_window(VarInt::from_u32(self.stream_window))
            .receive_window(VarInt::from_u32(self.receive_window))
            .send_window(u64::from(self.receive_window));
        Ok(t)
    }
}

fn tls_error(reason: String) -> StartError {
    StartError::Tls { reason }
}

/// A QUIC listener: its certificate (a rustls server config; ALPN is set
/// here) and transport settings.
#[derive(Clone, Debug)]
pub struct QuicListenConfig {
    /// Certificate and key, as for TLS over TCP.
    pub tls: Arc<rustls::ServerConfig>,
    /// Transport settings.
    pub transport: QuicTransport,
    /// The key stateless resets are made with (`None`: a random one per
    /// endpoint). Set it, and keep it secret, so that after a restart the
    /// server's resets still end the connections its previous run held,
    /// at once rather than at their idle timeout.
    pub stateless_reset_key: Option<[u8; 32]>,
    /// Half-open handshakes on a shard past which new connections must
    /// first prove their address with a Retry (`None`: never; 0: always).
    pub retry_after_handshakes: Option<usize>,
}

/// What a shard's endpoint of a QUIC listener is made with.
#[derive(Clone)]
pub(crate) struct ServerSide {
    pub quinn: Arc<quinn_proto::ServerConfig>,
    pub reset_key: Option<[u8; 32]>,
    pub retry_after: Option<usize>,
}

impl QuicListenConfig {
    /// What each shard's endpoint of this listener is made with.
    pub(crate) fn server_side(&self) -> Result<ServerSide, StartError> {
        Ok(ServerSide {
            quinn: self.quinn()?,
            reset_key: self.stateless_reset_key,
            retry_after: self.retry_after_handshakes,
        })
    }

    /// The quinn server config: one port for clients with and without ALPN.
    fn quinn(&self) -> Result<Arc<quinn_proto::ServerConfig>, StartError> {
        use quinn_proto::crypto::rustls::QuicServerConfig;
        let make = |alpn: bool| {
            let mut c = (*self.tls).clone();
            c.alpn_protocols = if alpn { vec![ALPN.to_vec()] } else { Vec::new() };
            c.max_early_data_size = 0;
            QuicServerConfig::try_from(c)
                .map(Arc::new)
                .map_err(|e| tls_error(format!("QUIC needs TLS 1.3: {e}")))
        };
        let crypto = alpn::AlpnSwitch {
            with_alpn: make(true)?,
            without: make(false)?,
        };
        let mut sc = quinn_proto::ServerConfig::with_crypto(Arc::new(crypto));
        sc.transport_config(Arc::new(self.transport.quinn()?));
        sc.migration(true);
        Ok(Arc::new(sc))
    }
}

/// An outgoing QUIC connection's settings.
#[derive(Clone, Debug)]
pub struct QuicConnectConfig {
    /// Verification of the server (roots, verifier).
    pub tls: Arc<rustls::ClientConfig>,
    /// The name the server's certificate must carry.
    pub server_name: rustls::pki_types::ServerName<'static>,
    /// The ALPN to offer: `Some(ALPN)` as MsgTrans 2.0 does (the default),
    /// `None` as 1.0 does.
    pub alpn: Option<Vec<u8>>,
    /// Transport settings.
    pub transport: QuicTransport,
}

impl QuicConnectConfig {
    pub(crate) fn quinn(&self) -> Result<(quinn_proto::ClientConfig, String), StartError> {
        use quinn_proto::crypto::rustls::QuicClientConfig;
        let mut c = (*self.tls).clone();
        c.alpn_protocols = self.alpn.iter().cloned().collect();
        c.enable_early_data = false;
        let crypto = QuicClientConfig::try_from(c).map_err(|e| tls_error(format!("QUIC needs TLS 1.3: {e}")))?;
        let mut cc = quinn_proto::ClientConfig::new(Arc::new(crypto));
        cc.transport_config(Arc::new(self.transport.quinn()?));
        Ok((cc, self.server_name.to_str().into_owned()))
    }
}
