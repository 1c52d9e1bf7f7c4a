//! Limits shared by the server and client builders.

use std::time::Duration;

use msgtrans_shards::codec::FrameLimits;
use msgtrans_shards::config::EngineConfig;

/// Every limit a server or client enforces, with its default. See each
/// `DEFAULT_*` constant in `msgtrans_shards::config` for the reason behind it.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Largest payload accepted or sent (default 16 MiB).
    pub max_payload: u32,
    /// Largest extension header accepted or sent (default 65,535 bytes).
    pub max_ext_header: u16,
    /// Open sessions allowed in total (default 10,000).
    pub max_connections: usize,
    /// Open sessions allowed per shard (default: `max_connections`).
    pub max_connections_per_shard: Option<usize>,
    /// Connections (handshakes included) one peer IP may hold at once,
    /// across every shard (default `None`: no cap). Over it, a connection
    /// is closed at once, before any TLS or WebSocket work.
    pub max_connections_per_ip: Option<usize>,
    /// Connections one peer IP may open per second, with a burst of one
    /// second's worth (default `None`: no limit). Over it, closed at once.
    pub max_connects_per_ip_per_sec: Option<u32>,
    /// Bytes queued per session before sends are refused (default 32 MiB).
    pub max_outbound_bytes: usize,
    /// Request timeout (default 30 s).
    pub request_timeout: Duration,
    /// Requests one session may have waiting for responses (default 4,096);
    /// more fail at once with `TooManyRequests`.
    pub max_inflight_requests: usize,
    /// Close a session after this long without a byte in either direction
    /// (default 300 s; `None`: never).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time (default 60 s; `None`: off).
    pub tcp_keepalive: Option<Duration>,
    /// How long a WebSocket upgrade (or TLS handshake) may take (default 10 s).
    pub handshake_timeout: Duration,
    /// How long `send` waits for room in a full outbound queue (default 5 s).
    pub send_timeout: Duration,
    /// Largest WebSocket frame accepted (default `None`: up to the largest
    /// message, which is the largest packet `max_payload` and
    /// `max_ext_header` allow). Bigger frames or messages close with 1009.
    pub max_ws_frame: Option<usize>,
    /// Close a session whose queued output has not moved for this long
    /// (default 30 s; `None`: never).
    pub write_timeout: Option<Duration>,
    /// Events queued for the application before reading pauses (default 65,536).
    pub event_capacity: usize,
    /// Empty packets (no payload, no extension header) one session may send
    /// per second before it is closed with `PolicyViolation` (default 1,000;
    /// `usize::MAX`: no limit).
    pub max_empty_packets_per_sec: usize,
    /// Requests from one peer the application may leave unanswered before
    /// the session is closed with `PolicyViolation` (default 8,192).
    pub max_unanswered_requests: usize,
    /// Payloads shorter than this are sent uncompressed even when a send
    /// asks for compression (default 256 bytes).
    pub compression_threshold: usize,
}

impl Default for Limits {
    fn default() -> Self {
        let d = EngineConfig::default();
        Self {
            max_payload: d.frame.max_payload,
            max_ext_header: d.frame.max_ext_header,
            max_connections: d.max_connections,
            max_connections_per_shard: d.max_connections_per_shard,
            max_connections_per_ip: d.max_connections_per_ip,
            max_connects_per_ip_per_sec: d.max_connects_per_ip_per_sec,
            max_outbound_bytes: d.max_outbound_bytes,
            request_timeout: d.request_timeout,
            max_inflight_requests: d.max_inflight_requests,
            idle_timeout: d.idle_timeout,
            tcp_keepalive: d.tcp_keepalive,
            handshake_timeout: d.handshake_timeout,
            send_timeout: d.send_timeout,
            max_ws_frame: d.ws_max_frame,
            write_timeout: d.write_timeout,
            event_capacity: d.event_capacity,
            max_empty_packets_per_sec: d.max_empty_packets_per_sec,
            max_unanswered_requests: d.max_unanswered_requests,
            compression_threshold: d.compression_threshold,
        }
    }
}

impl Limits {
    pub(crate) fn engine_config(&self, shards: usize, pin: bool, name: &str) -> EngineConfig {
        EngineConfig {
            shards,
            pin,
            name: name.into(),
            frame: FrameLimits {
                max_payload: self.max_payload,
                max_ext_header: self.max_ext_header,
            },
            max_connections: self.max_connections,
            max_connections_per_shard: self.max_connections_per_shard,
            max_connections_per_ip: self.max_connections_per_ip,
            max_connects_per_ip_per_sec: self.max_connects_per_ip_per_sec,
            max_outbound_bytes: self.max_outbound_bytes,
            request_timeout: self.request_timeout,
            max_inflight_requests: self.max_inflight_requests.max(1),
            idle_timeout: self.idle_timeout,
            tcp_keepalive: self.tcp_keepalive,
            handshake_timeout: self.handshake_timeout,
            send_timeout: self.send_timeout,
            ws_max_frame: self.max_ws_frame,
            write_timeout: self.write_timeout,
            event_capacity: self.event_capacity.max(1),
            max_empty_packets_per_sec: self.max_empty_packets_per_sec,
            max_unanswered_requests: self.max_unanswered_requests,
            compression_threshold: self.compression_threshold,
            ..EngineConfig::default()
        }
    }
}
