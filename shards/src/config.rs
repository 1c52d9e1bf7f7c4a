//! Engine configuration: every limit is a field with a named default and the
//! reason for it.

use std::time::Duration;

use crate::codec::FrameLimits;
use crate::pool::buffer::PoolConfig;

/// Default total connection limit: 10,000, MsgTrans 1.0's own default; well
/// under the 20,000 open files a process may have on small hosts.
pub const DEFAULT_MAX_CONNECTIONS: usize = 10_000;
/// Default bytes queued for one session before further sends are refused:
/// 32 MiB, room for a few maximum-size packets so bulk echo never stalls,
/// while a consumer that stops reading cannot pin unbounded memory.
pub const DEFAULT_MAX_OUTBOUND_BYTES: usize = 32 * 1024 * 1024;
/// Default request timeout: 30 s, long enough for a slow handler on a busy
/// peer, short enough that a lost reply does not wait forever.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Default event queue length between the shards and the application:
/// 65,536 events. When it is full the shards stop reading (backpressure);
/// no event is ever dropped.
pub const DEFAULT_EVENT_CAPACITY: usize = 65_536;
/// Default io_uring registered memory per shard: 1 MiB. msgtrans does no
/// DMA file I/O, and glommio's 10 MiB default exceeds the 8 MiB memlock limit
/// many hosts give unprivileged users.
pub const DEFAULT_IO_MEMORY: usize = 1 << 20;
/// Default idle timeout: 300 s without a byte in either direction, MsgTrans
/// 1.0's TCP default; long enough for chatty-but-slow clients, short enough
/// that vanished peers do not hold slots for long.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default TCP keepalive: first probe after 60 s idle (MsgTrans 1.0's), so
/// the kernel notices a peer that vanished without a FIN.
pub const DEFAULT_TCP_KEEPALIVE: Duration = Duration::from_secs(60);
/// Default requests one session may have waiting for responses: 4,096 —
/// far above what a pipelining client needs, low enough that a peer that
/// never answers cannot grow the pending table without bound.
pub const DEFAULT_MAX_INFLIGHT_REQUESTS: usize = 4096;
/// Default handshake timeout (WebSocket upgrade, TLS): 10 s; a peer that
/// connects and says nothing is dropped, never held.
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time `send` waits for room in a full outbound queue: 5 s, long
/// enough to ride out a hiccup, short enough to surface a stuck consumer.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default write deadline: a session whose queued output has not moved for
/// 30 s is closed as a slow consumer, so it cannot pin its queue forever.
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Default empty packets (no payload, no extension header) one session may
/// send per second: 1,000. A keepalive or an empty request now and then is
/// normal; thousands a second only burn the shard's time, so the session is
/// closed as a policy violation.
pub const DEFAULT_MAX_EMPTY_PACKETS_PER_SEC: usize = 1_000;
/// Default requests from one peer that the application may leave unanswered
/// before the session is closed as a policy violation: 8,192, twice the
/// requests we allow ourselves in flight, so a pipelining peer is never
/// caught, while a peer whose requests are never answered cannot pin
/// unbounded application state.
pub const DEFAULT_MAX_UNANSWERED_REQUESTS: usize = 8_192;
/// Default smallest payload that is compressed when a packet asks for it:
/// 256 bytes. Below that zstd and zlib save a few bytes at best (their own
/// framing costs 6-20) while the CPU cost per packet stays, so such
/// packets go out as they are, with the compression byte cleared.
pub const DEFAULT_COMPRESSION_THRESHOLD: usize = 256;
/// Bytes read from a socket per read call: 64 KiB amortises the syscall
/// over many small packets while keeping an active session's buffer small.
pub const DEFAULT_READ_BUFFER: usize = 64 * 1024;

/// Configuration of an engine (the shards behind one server or client).
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Number of shards; 0 means one per usable core.
    pub shards: usize,
    /// Pin each shard to its own core (default true).
    pub pin: bool,
    /// Thread name prefix; threads are named `{name}-{K}`.
    pub name: String,
    /// This process's node in a cluster (1-255), written into every session
    /// id it makes so that any node can route to it; 0 (the default) for a
    /// process outside any cluster.
    pub node: u8,
    /// Frame size limits.
    pub frame: FrameLimits,
    /// Open sessions allowed across all shards.
    pub max_connections: usize,
    /// Open sessions allowed on each shard (default: `max_connections`).
    pub max_connections_per_shard: Option<usize>,
    /// Bytes queued for one session before sends to it are refused.
    pub max_outbound_bytes: usize,
    /// Default timeout of a request.
    pub request_timeout: Duration,
    /// Requests one session may have waiting for a response; more fail at
    /// once with `SendError::TooManyRequests`.
    pub max_inflight_requests: usize,
    /// Close a session that has sent and received nothing for this long
    /// (`None`: never).
    pub idle_timeout: Option<Duration>,
    /// TCP keepalive idle time (`None`: off).
    pub tcp_keepalive: Option<Duration>,
    /// Connections (handshakes included) one peer IP may hold at once,
    /// across every shard; one more is closed at once, before any TLS or
    /// WebSocket work (`None`, the default: no per-address cap). Without it
    /// one address can take every slot `max_connections` allows.
    pub max_connections_per_ip: Option<usize>,
    /// Connections one peer IP may open per second, with a burst of one
    /// second's worth; one more is closed at once (`None`, the default: no
    /// rate limit). It bounds the handshake work one address can cause.
    pub max_connects_per_ip_per_sec: Option<u32>,
    /// How long a WebSocket (or TLS) handshake may take.
    pub handshake_timeout: Duration,
    /// How long `send` waits for room in a full outbound queue.
    pub send_timeout: Duration,
    /// Largest WebSocket frame accepted (`None`: as large as the largest
    /// message, i.e. the largest packet). A bigger one closes with 1009.
    pub ws_max_frame: Option<usize>,
    /// Empty packets one session may send per second; one more closes it
    /// with `PolicyViolation` (`usize::MAX`: no limit).
    pub max_empty_packets_per_sec: usize,
    /// Requests from the peer the application may leave unanswered; one
    /// more closes the session with `PolicyViolation` (`usize::MAX`: no limit).
    pub max_unanswered_requests: usize,
    /// Close a session (`SlowConsumer`) whose queued output has not moved
    /// for this long (`None`: never).
    pub write_timeout: Option<Duration>,
    /// Events queued for the application before the shards stop reading.
    pub event_capacity: usize,
    /// io_uring registered memory per shard.
    pub io_memory: usize,
    /// Read size per socket read.
    pub read_buffer: usize,
    /// Serve plain TCP and plain WebSocket sessions (not TLS) on each
    /// shard's own io_uring, where one `io_uring_enter` per executor loop
    /// submits every session's reads and writes (default false: cheaper
    /// for small messages under load, dearer at 1 KiB and up and at 1 x 1,
    /// see docs/perf-notes.md). Off, or on a kernel older than 5.19, they
    /// wait on the shard's epoll instance (`tcp_epoll`), then make a
    /// syscall per read and per write.
    pub tcp_ring: bool,
    /// TCP and WebSocket sessions, plain or under TLS, wait for their
    /// sockets on one edge-triggered epoll instance per shard, which the
    /// shard's ring watches as a whole (default true). Off, each session
    /// uses glommio's stream, which arms a poll request on the ring after
    /// every short read: at 64 B x (64 x 16) that cost 1.45x baseline 1's
    /// CPU per message against 1.22x (docs/perf-notes.md). Plain sessions
    /// under `tcp_ring` use the ring instead.
    pub tcp_epoll: bool,
    /// TCP and WebSocket listeners join other sockets already on their
    /// port (`SO_REUSEPORT`, the same user's) instead of refusing it as in
    /// use (default false). For several server processes on one port, each
    /// under its own open-files cap; the kernel spreads connections over
    /// every socket of the group. QUIC keeps its port to itself: its
    /// connection IDs route datagrams between one process's shards only.
    pub shared_port: bool,
    /// Payloads shorter than this are sent uncompressed even when their
    /// packet asks for compression.
    pub compression_threshold: usize,
    /// Buffer pool tier sizes.
    pub pool: PoolConfig,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            shards: 0,
            pin: true,
            name: "msgtrans-shard".into(),
            node: 0,
            frame: FrameLimits::default(),
            max_connections: DEFAULT_MAX_CONNECTIONS,
            max_connections_per_shard: None,
            max_outbound_bytes: DEFAULT_MAX_OUTBOUND_BYTES,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_inflight_requests: DEFAULT_MAX_INFLIGHT_REQUESTS,
            idle_timeout: Some(DEFAULT_IDLE_TIMEOUT),
            tcp_keepalive: Some(DEFAULT_TCP_KEEPALIVE),
            handshake_timeout: DEFAULT_HANDSHAKE_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            ws_max_frame: None,
            max_empty_packets_per_sec: DEFAULT_MAX_EMPTY_PACKETS_PER_SEC,
            max_connections_per_ip: None,
            max_connects_per_ip_per_sec: None,
            max_unanswered_requests: DEFAULT_MAX_UNANSWERED_REQUESTS,
            write_timeout: Some(DEFAULT_WRITE_TIMEOUT),
            event_capacity: DEFAULT_EVENT_CAPACITY,
            io_memory: DEFAULT_IO_MEMORY,
            read_buffer: DEFAULT_READ_BUFFER,
            tcp_ring: false,
            tcp_epoll: true,
            shared_port: false,
            compression_threshold: DEFAULT_COMPRESSION_THRESHOLD,
            pool: PoolConfig::default(),
        }
    }
}
