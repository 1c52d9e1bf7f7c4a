//! Load through our own engine, for the protocols the raw io_uring loop does
//! not speak (TLS, WSS, QUIC), or for any protocol with `--engine`.
//!
//! The engine runs on its own shards (`--threads` of them, pinned to
//! `--cpus`), the same batched pipeline as the server under test. An inline
//! handler does the work on the shard: for each echo it records the latency
//! and writes the next packet into the same batch, so P stay in flight per
//! connection with no task, channel or lock shared between cores. Each
//! shard keeps its histogram, count and outgoing payload in a thread-local,
//! with no lock per message; when the engine stops, each shard's sessions
//! close on it (`on_close`), and the first close hands its state over.
//!
//! With `--request` it writes requests with ids of its own instead of
//! one-way packets (not the engine's `request` API, which would add its
//! own pending table and reply channel to the load's cost): the server's
//! responses match no request of the engine's, so they reach `on_message`
//! like echoes, and each is checked against the connection's outstanding
//! ids.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hdrhistogram::Histogram;
use msgtrans_shards::proto::quic::{QuicConnectConfig, QuicTransport, ALPN};
use msgtrans_shards::proto::tls::ClientTls;
use msgtrans_shards::proto::ws::handshake::WsTarget;
use msgtrans_shards::session_handler::Connected;
use msgtrans_shards::{
    CloseReason, Engine, EngineConfig, EventSink, Inline, InlineHandler, Packet, PacketType, SessionId,
};

use crate::{Args, Expect, Proto, Shared, DONE, MEASURE};

/// One shard's share of the run.
struct State {
    hist: Histogram<u64>,
    msgs: u64,
    /// The payload we send: the timestamp, then filler.
    payload: Vec<u8>,
    /// What each of this shard's connections expects back.
    expect: HashMap<SessionId, Expect>,
}

impl State {
    fn new(size: usize) -> Self {
        Self {
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
            msgs: 0,
            payload: vec![0xAB; size],
            expect: HashMap::new(),
        }
    }

    fn expect(&mut self, id: SessionId, request: bool) -> &mut Expect {
        self.expect.entry(id).or_insert_with(|| Expect {
            request,
            ..Expect::default()
        })
    }
}

thread_local! {
    /// This shard's state; made at its first echo.
    static STATE: RefCell<Option<State>> = const { RefCell::new(None) };
}

struct Driver {
    shared: Arc<Shared>,
    size: usize,
    inflight: usize,
    request: bool,
    /// Every shard's state, handed over as the engine stops.
    done: Mutex<Vec<State>>,
}

impl Driver {
    fn now(&self) -> u64 {
        self.shared.epoch.elapsed().as_nanos() as u64
    }

    fn payload(&self, stamp: u64) -> Vec<u8> {
        let mut p = vec![0xAB; self.size];
        p[..8].copy_from_slice(&stamp.to_le_bytes());
        p
    }
}

impl InlineHandler for Driver {
    fn on_open(&self, session: &mut Connected<'_>) {
        let sid = session.session_id();
        for _ in 0..self.inflight {
            let id = STATE.with_borrow_mut(|st| {
                st.get_or_insert_with(|| State::new(self.size))
                    .expect(sid, self.request)
                    .issue()
            });
            let packet = match id {
                Some(id) => Packet::request(id, self.payload(self.now())),
                None => Packet::one_way(0, self.payload(self.now())),
            };
            if let Err(e) = session.send(packet) {
                eprintln!("load: first send on {}: {e}", session.session_id());
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn on_message(&self, ctx: &mut Inline<'_>) {
        let t = self.now();
        let p = ctx.payload();
        if p.len() != self.size {
            eprintln!("load: echo of {} bytes, sent {}", p.len(), self.size);
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let sent = u64::from_le_bytes(p[..8].try_into().unwrap());
        let phase = self.shared.phase.load(Ordering::Relaxed);
        if phase == DONE {
            return;
        }
        STATE.with_borrow_mut(|st| {
            let st = st.get_or_insert_with(|| State::new(self.size));
            let mut header = ctx.header().clone();
            let expect = st.expect(ctx.session_id(), self.request);
            let mut raw = [0u8; 8];
            raw[2] = header.packet_type as u8;
            raw[4..8].copy_from_slice(&header.message_id.to_be_bytes());
            if let Err(e) = expect.answer(&raw) {
                eprintln!("load: {e}");
                self.shared.errors.fetch_add(1, Ordering::Relaxed);
                return;
            }
            // The next packet: the echo's header (same length), as a new
            // request when requests are what we send.
            if let Some(id) = expect.issue() {
                header.packet_type = PacketType::Request;
                header.message_id = id;
            }
            if phase == MEASURE {
                let _ = st.hist.record(t.saturating_sub(sent).max(1));
                st.msgs += 1;
            }
            st.payload[..8].copy_from_slice(&t.to_le_bytes());
            ctx.write(&header, &[], &st.payload);
        });
    }

    fn on_close(&self, id: SessionId, reason: &CloseReason) {
        if self.shared.phase.load(Ordering::Relaxed) != DONE {
            eprintln!("load: connection {id} closed during the run: {reason}");
            self.shared.errors.fetch_add(1, Ordering::Relaxed);
        } else if let Some(st) = STATE.with_borrow_mut(Option::take) {
            self.done.lock().unwrap_or_else(|e| e.into_inner()).push(st);
        }
    }
}

/// A running engine load: its connections are open and sending.
pub struct Run {
    engine: Engine,
    driver: Arc<Driver>,
}

/// The client TLS: trust the PEM CA in `--ca`, check `--server-name`.
fn client_tls(args: &Args) -> Result<ClientTls, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};
    let path = args
        .ca
        .as_deref()
        .ok_or("--proto tls, wss and quic need --ca PEM (the server prints where its certificate is)")?;
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(path).map_err(|e| format!("--ca {path}: {e}"))? {
        roots
            .add(c.map_err(|e| format!("--ca {path}: {e}"))?)
            .map_err(|e| format!("--ca {path}: {e}"))?;
    }
    let name = args.server_name.clone().unwrap_or_else(|| args.addr.ip().to_string());
    let server_name = ServerName::try_from(name.clone()).map_err(|e| format!("--server-name {name}: {e}"))?;
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(ClientTls {
        config: Arc::new(config),
        server_name,
    })
}

/// Starts the engine's shards and opens every connection; each starts
/// sending as soon as it is open. Blocks until all are open.
pub fn start(args: &Args, shared: Arc<Shared>) -> Result<Run, String> {
    let pinned = !args.cpus.is_empty();
    if pinned {
        // The shards take their cores from this process's affinity, one
        // each in order: restricting it first puts them on --cpus.
        crate::pin_to(&args.cpus);
    }
    let cfg = EngineConfig {
        shards: args.threads,
        pin: pinned,
        name: "load".into(),
        max_connections: args.conns.max(1),
        idle_timeout: None,
        write_timeout: None,
        event_capacity: 1024,
        ..EngineConfig::default()
    };
    let driver = Arc::new(Driver {
        shared,
        size: args.size,
        inflight: args.inflight,
        request: args.request,
        done: Mutex::new(Vec::new()),
    });
    let (tx, _rx) = flume::bounded(1024);
    let sink = EventSink {
        tx,
        lifecycle: Arc::new(false.into()),
        bell: Arc::default(),
    };
    let handler: Arc<dyn InlineHandler> = driver.clone();
    futures_lite::future::block_on(async {
        let engine = Engine::start(cfg, Some(handler), sink)
            .await
            .map_err(|e| format!("cannot start the load engine: {e}"))?;
        let opened = connect_all(&engine, args).await;
        if let Err(e) = opened {
            engine.stop().await;
            return Err(e);
        }
        Ok(Run { engine, driver })
    })
}

async fn connect_all(engine: &Engine, args: &Args) -> Result<(), String> {
    let timeout = Duration::from_secs(10);
    let addr: SocketAddr = args.addr;
    let tls = match args.proto {
        Proto::Tcp | Proto::Ws => None,
        _ => Some(client_tls(args)?),
    };
    let target = WsTarget {
        host: args.addr.to_string(),
        path: args.ws_path.clone(),
    };
    let quic = tls.clone().map(|tls| QuicConnectConfig {
        tls: tls.config,
        server_name: tls.server_name,
        alpn: Some(ALPN.to_vec()),
        transport: QuicTransport::default(),
    });
    for k in 0..args.conns {
        let r = match args.proto {
            Proto::Tcp | Proto::Tls => engine.connect_tcp(addr, timeout, tls.clone(), k).await,
            Proto::Ws | Proto::Wss => engine.connect_ws(addr, timeout, target.clone(), tls.clone(), k).await,
            Proto::Quic => engine.connect_quic(addr, timeout, quic.as_ref().unwrap(), k).await,
        };
        r.map_err(|e| format!("connection {k} to {addr}: {e}"))?;
    }
    Ok(())
}

impl Run {
    /// Stops the engine (the phase must be DONE: nothing is counted after
    /// that) and returns the messages measured and their latencies.
    pub fn finish(self) -> (u64, Histogram<u64>) {
        futures_lite::future::block_on(self.engine.stop());
        let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
        let mut msgs = 0;
        for s in self.driver.done.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let _ = hist.add(&s.hist);
            msgs += s.msgs;
        }
        (msgs, hist)
    }
}
