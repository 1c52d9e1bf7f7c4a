//! Soak: mixed load on every transport at once for `MSGTRANS_SOAK_SECS`
//! seconds (default 60): our clients over TCP, TCP+TLS, WebSocket, WSS
//! and QUIC send numbered packets in rounds that end normally, end early (a
//! disconnect with echoes still in flight) or read slowly; raw peers send
//! oversized frames, reset mid-packet, or never read at all. It asserts
//! that among the packets the server accepted none was lost, repeated or
//! reordered, on either side, and reports the close reasons seen.
//!
//! Every `MSGTRANS_SOAK_SAMPLE_SECS` (default 60, or 10 for runs under 10
//! minutes) it prints resident memory, heap in use, the server's pool
//! bytes, open files and sessions. At the end it fits a line through the
//! samples after the warm-up (the first tenth of the run, at least a
//! minute) and reports resident memory and heap growth per hour.
//!
//! `#[ignore]`d: run it with
//! `MSGTRANS_SOAK_SECS=300 cargo test --release --test soak -- --ignored --nocapture`
//! (`MSGTRANS_SOAK_SEED` repeats a run; 24 hours is `MSGTRANS_SOAK_SECS=86400`).

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::ws_raw::{client_frame, upgraded};
use common::*;
use msgtrans::event::{ClientEvent, ServerEvent};
use msgtrans::protocol::{
    QuicClientConfig, QuicServerConfig, TcpClientConfig, TcpServerConfig, WebSocketClientConfig, WebSocketServerConfig,
};
use msgtrans::transport::{TransportClient, TransportClientBuilder, TransportServer, TransportServerBuilder};
use msgtrans::{Inline, SessionId, TlsClientConfig, TlsServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Biz type of the numbered packets whose order the server checks.
const NUMBERED: u8 = 1;
/// The server's outbound limit per session: small, so slow readers meet it.
const OUTBOUND: usize = 1 << 20;
/// Close a peer whose output has not moved for this long.
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);
/// Our clients per transport.
const WORKERS: usize = 2;

/// The transports under soak.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Kind {
    Tcp,
    TcpTls,
    Ws,
    Wss,
    Quic,
}

const KINDS: [Kind; 5] = [Kind::Tcp, Kind::TcpTls, Kind::Ws, Kind::Wss, Kind::Quic];

/// xorshift64*: reproducible from the printed seed, no dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// Bytes the allocator has handed out and not had back (glibc), to tell a
/// leak (this grows) from fragmentation (RSS grows, this does not).
fn heap_in_use_kib() -> u64 {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: mallinfo2 only reads the allocator's counters.
        let m = unsafe { libc::mallinfo2() };
        ((m.uordblks + m.hblkhd) / 1024) as u64
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    0
}

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Least-squares slope of `(seconds, KiB)` samples, in KiB per hour; None
/// with fewer than three samples.
fn growth_per_hour(samples: &[(f64, f64)]) -> Option<f64> {
    if samples.len() < 3 {
        return None;
    }
    let n = samples.len() as f64;
    let (mx, my) = samples
        .iter()
        .fold((0.0, 0.0), |(x, y), &(a, b)| (x + a / n, y + b / n));
    let (sxy, sxx) = samples.iter().fold((0.0, 0.0), |(xy, xx), &(a, b)| {
        (xy + (a - mx) * (b - my), xx + (a - mx) * (a - mx))
    });
    (sxx > 0.0).then(|| sxy / sxx * 3600.0)
}

#[test]
fn growth_is_the_least_squares_slope_per_hour() {
    // 2 KiB a minute under ±5 KiB of alternating noise: 120 KiB an hour,
    // give or take the 18 KiB that noise tilts a 10-point fit.
    let samples: Vec<(f64, f64)> = (0..10)
        .map(|i| {
            (
                60.0 * i as f64,
                1000.0 + 2.0 * i as f64 + if i % 2 == 0 { 5.0 } else { -5.0 },
            )
        })
        .collect();
    let g = growth_per_hour(&samples).unwrap();
    assert!((g - 120.0).abs() < 25.0, "{g}");
    let flat: Vec<(f64, f64)> = (0..5).map(|i| (i as f64, 7.0)).collect();
    assert_eq!(growth_per_hour(&flat), Some(0.0));
    assert_eq!(growth_per_hour(&flat[..2]), None);
}

/// What the soak counts, from every task.
#[derive(Default)]
struct Tally {
    /// Numbered packets the server's handler took, and those it found out
    /// of sequence (lost, repeated or reordered before it).
    accepted: AtomicU64,
    server_violations: AtomicU64,
    /// Echoes our clients took, and those out of sequence.
    echoed: AtomicU64,
    client_violations: AtomicU64,
    rounds: Mutex<BTreeMap<(Kind, &'static str), u64>>,
    send_errors: AtomicU64,
    violations: Mutex<Vec<String>>,
}

impl Tally {
    fn violation(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut v = self.violations.lock().unwrap();
        if v.len() < 20 {
            v.push(what);
        }
    }
    fn round(&self, kind: Kind, how: &'static str) {
        *self.rounds.lock().unwrap().entry((kind, how)).or_default() += 1;
    }
}

fn seq_of(payload: &[u8]) -> u64 {
    u64::from_be_bytes(payload[..8].try_into().expect("8-byte sequence number"))
}

/// The server: an inline echo on every transport that checks, per session,
/// that numbered packets arrive 0, 1, 2, ... with none missing or repeated.
async fn start_server(tally: &Arc<Tally>) -> (TransportServer, String) {
    let (tls, pem) = TlsServerConfig::self_signed(&["localhost"]).unwrap();
    let next: Arc<Mutex<HashMap<SessionId, u64>>> = Arc::default();
    let t = Arc::clone(tally);
    let handler = move |ctx: &mut Inline<'_>| {
        if ctx.header().biz_type == NUMBERED {
            let seq = seq_of(ctx.payload());
            let mut next = next.lock().unwrap();
            let want = next.entry(ctx.session_id()).or_insert(0);
            if seq != *want {
                t.violation(
                    &t.server_violations,
                    format!("server: {} got #{seq}, expected #{want}", ctx.session_id()),
                );
            }
            *want = seq + 1;
            t.accepted.fetch_add(1, Ordering::Relaxed);
        }
        inline_echo(ctx);
    };
    let ws = |addr: &str| WebSocketServerConfig::new(addr).unwrap().with_path("/ws");
    let server = TransportServerBuilder::new()
        .shards(SHARDS)
        .pin_shards(false)
        .max_outbound_bytes(OUTBOUND)
        .write_timeout(Some(WRITE_TIMEOUT))
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap())
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls.clone()))
        .with_protocol(ws("127.0.0.1:0"))
        .with_protocol(ws("127.0.0.1:0").with_tls(tls.clone()))
        .with_protocol(QuicServerConfig::new("127.0.0.1:0").unwrap().with_tls(tls))
        .handler(handler)
        .build()
        .await
        .expect("soak server");
    (server, pem)
}

async fn connect(kind: Kind, server: &TransportServer, pem: &str) -> TransportClient {
    let ca = || TlsClientConfig::new().with_ca_pem(pem.as_bytes()).unwrap();
    let port = |p| server.addr_of(p).unwrap().port();
    let b = TransportClientBuilder::new().shards(1);
    let b = match kind {
        Kind::Tcp => b.with_protocol(TcpClientConfig::new(&addr(server).to_string()).unwrap()),
        Kind::TcpTls => b.with_protocol(
            TcpClientConfig::new(&format!("localhost:{}", port("tcp+tls")))
                .unwrap()
                .with_tls(ca()),
        ),
        Kind::Ws => {
            b.with_protocol(WebSocketClientConfig::new(&format!("ws://{}/ws", server.ws_addr().unwrap())).unwrap())
        }
        Kind::Wss => b.with_protocol(
            WebSocketClientConfig::new(&format!("wss://localhost:{}/ws", port("wss")))
                .unwrap()
                .with_tls(ca()),
        ),
        Kind::Quic => b.with_protocol(
            QuicClientConfig::new(&format!("localhost:{}", server.quic_addr().unwrap().port()))
                .unwrap()
                .with_ca_cert_pem(pem)
                .unwrap(),
        ),
    };
    b.build().await.expect("soak client")
}

/// Checks the echoes one client receives: per session, 0, 1, 2, ... and
/// counts them for the round in progress.
fn check_echoes(
    client: &TransportClient,
    tally: Arc<Tally>,
    kind: Kind,
    slow: Arc<AtomicBool>,
) -> Arc<Mutex<HashMap<SessionId, u64>>> {
    let got: Arc<Mutex<HashMap<SessionId, u64>>> = Arc::default();
    let mut events = client.subscribe_events();
    let g = Arc::clone(&got);
    tokio::spawn(async move {
        let mut n = 0u64;
        while let Ok(ev) = events.recv().await {
            let ClientEvent::MessageReceived(ctx) = ev else {
                continue;
            };
            let sid = ctx.peer.expect("a session");
            let seq = seq_of(&ctx.data);
            {
                let mut g = g.lock().unwrap();
                let want = g.entry(sid).or_insert(0);
                if seq != *want {
                    tally.violation(
                        &tally.client_violations,
                        format!("{kind:?} client: {sid} echo #{seq}, expected #{want}"),
                    );
                }
                *want = seq + 1;
            }
            tally.echoed.fetch_add(1, Ordering::Relaxed);
            n += 1;
            // A slow consumer: the client's queue fills, then its socket,
            // then the server's outbound queue for this session.
            if slow.load(Ordering::Relaxed) && n.is_multiple_of(64) {
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }
    });
    got
}

fn payload(rng: &mut Rng, seq: u64) -> Vec<u8> {
    let len = match rng.below(100) {
        0 => 256 * 1024,
        1..=5 => 16 * 1024,
        _ => rng.below(512) as usize,
    };
    let mut p = seq.to_be_bytes().to_vec();
    p.resize(8 + len, (seq % 251) as u8);
    p
}

/// One of our clients: rounds of numbered packets until `end`.
async fn worker(kind: Kind, server: TransportServer, pem: String, tally: Arc<Tally>, seed: u64, end: Instant) {
    let mut rng = Rng(seed);
    let mut client = connect(kind, &server, &pem).await;
    let slow = Arc::new(AtomicBool::new(false));
    let got = check_echoes(&client, Arc::clone(&tally), kind, Arc::clone(&slow));
    while Instant::now() < end {
        if let Err(e) = within(GUARD, "connect", client.connect()).await {
            panic!("{kind:?}: connect failed: {e}");
        }
        let sid = client.current_session_id().await.expect("connected");
        let how = match rng.below(10) {
            0..=5 => "whole",
            6 | 7 => "slow",
            _ => "cut short",
        };
        slow.store(how == "slow", Ordering::Relaxed);
        let n = 50 + rng.below(1500);
        let cut = if how == "cut short" { rng.below(n) } else { n };
        let mut sent = 0;
        for seq in 0..cut {
            let mut p = msgtrans::packet::Packet::one_way(0, payload(&mut rng, seq));
            p.set_biz_type(NUMBERED);
            match within(GUARD, "send", client.send_packet(p)).await {
                Ok(()) => sent += 1,
                Err(e) => {
                    // Refused, not lost: the packet never left. The round
                    // ends here, since a gap would read as a loss.
                    tally.send_errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("{kind:?}: send #{seq} refused: {e}");
                    break;
                }
            }
        }
        if how != "cut short" && sent == cut {
            // Every echo of the round arrives before the disconnect.
            within(GUARD, "every echo of a round", async {
                while got.lock().unwrap().get(&sid).copied().unwrap_or(0) < sent {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            })
            .await;
        }
        // The session's entry stays: echoes already queued for it may still
        // be taken after the disconnect, and session ids are never reused.
        let _ = client.disconnect().await;
        tally.round(kind, how);
    }
    client.stop().await;
}

/// Raw abuse on the plain listeners until `end`: oversized frames (closed
/// with a protocol error or 1009), resets mid-packet, and peers that never
/// read (closed as slow consumers).
async fn abuser(server: TransportServer, seed: u64, end: Instant) -> BTreeMap<&'static str, u64> {
    let mut rng = Rng(seed);
    let mut done = BTreeMap::new();
    while Instant::now() < end {
        let what = match rng.below(3) {
            0 => {
                // A TCP header announcing 64 MiB, over the 16 MiB limit.
                let mut c = RawClient::connect(addr(&server)).await;
                let mut h = wire(&one_way(1, 0, b"", Vec::new()));
                h[10..14].copy_from_slice(&(64u32 << 20).to_be_bytes());
                c.write(&h).await;
                assert!(c.expect_closed().await.is_empty(), "oversized TCP frame answered");
                "oversized tcp frame"
            }
            1 => {
                let mut s = upgraded(server.ws_addr().unwrap()).await;
                let mut f = client_frame(2, &[0u8; 8]);
                // 127: a 64-bit length follows; 64 MiB.
                f.truncate(2);
                f[1] = 0x80 | 127;
                f.extend_from_slice(&(64u64 << 20).to_be_bytes());
                f.extend_from_slice(&[1, 2, 3, 4]);
                s.write_all(&f).await.unwrap();
                let mut head = [0u8; 4];
                within(GUARD, "ws close", s.read_exact(&mut head))
                    .await
                    .expect("a close frame");
                assert_eq!((head[0], &head[2..]), (0x88, &1009u16.to_be_bytes()[..]));
                "oversized ws frame"
            }
            _ => {
                // Half a packet, then a reset (SO_LINGER 0).
                let c = RawClient::connect(addr(&server)).await;
                let b = wire(&one_way(2, 0, b"", vec![7u8; 1000]));
                let mut s = c.stream;
                s.write_all(&b[..500]).await.unwrap();
                socket2::SockRef::from(&s).set_linger(Some(Duration::ZERO)).unwrap();
                drop(s);
                "reset mid-packet"
            }
        };
        *done.entry(what).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    done
}

/// Peers that send and never read, until `end`: each is closed once its
/// output has not moved for the write timeout.
async fn never_reader(server: TransportServer, end: Instant) -> u64 {
    let mut closed = 0;
    while Instant::now() < end {
        let mut c = RawClient::connect(addr(&server)).await;
        let p = wire(&one_way(3, 0, b"", vec![9u8; 64 * 1024]));
        let (_r, mut w) = c.stream.split();
        // Keep writing until the server stops reading; then wait for the
        // close that the write timeout brings.
        let r = tokio::time::timeout(GUARD, async {
            loop {
                if w.write_all(&p).await.is_err() {
                    return;
                }
            }
        })
        .await;
        assert!(r.is_ok(), "a peer that never reads was not closed");
        closed += 1;
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: minutes of load; set MSGTRANS_SOAK_SECS and run with --ignored"]
async fn soak_loses_repeats_and_reorders_nothing_the_server_accepted() {
    let secs: u64 = std::env::var("MSGTRANS_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let seed: u64 = std::env::var("MSGTRANS_SOAK_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("soak: {secs} s, seed {seed}");
    let tally = Arc::new(Tally::default());
    let (server, pem) = start_server(&tally).await;
    let closes: Arc<Mutex<BTreeMap<String, u64>>> = Arc::default();
    {
        let mut events = server.subscribe_events();
        let closes = Arc::clone(&closes);
        tokio::spawn(async move {
            while let Ok(ev) = events.recv().await {
                if let ServerEvent::ConnectionClosed { reason, .. } = ev {
                    *closes.lock().unwrap().entry(format!("{reason:?}")).or_default() += 1;
                }
            }
        });
    }
    let rss_start = rss_kib();
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);

    let mut workers = Vec::new();
    for (k, kind) in KINDS.into_iter().enumerate() {
        for w in 0..WORKERS {
            let s = seed.wrapping_add((k * WORKERS + w) as u64 * 0x9E37_79B9);
            workers.push(tokio::spawn(worker(
                kind,
                server.clone(),
                pem.clone(),
                Arc::clone(&tally),
                s | 1,
                end,
            )));
        }
    }
    let abuse = tokio::spawn(abuser(server.clone(), seed ^ 0xABCD, end));
    let never = tokio::spawn(never_reader(server.clone(), end));
    let every = Duration::from_secs(
        std::env::var("MSGTRANS_SOAK_SAMPLE_SECS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(if secs < 600 { 10 } else { 60 }),
    );
    let sampler = {
        let tally = Arc::clone(&tally);
        let server = server.clone();
        tokio::spawn(async move {
            let mut peak = 0;
            let mut samples = Vec::new();
            while Instant::now() < end {
                tokio::time::sleep(every.min(end.saturating_duration_since(Instant::now()))).await;
                let rss = rss_kib();
                let heap = heap_in_use_kib();
                peak = peak.max(rss);
                let pooled: u64 = server.stats().iter().map(|s| s.pool.kept_bytes).sum();
                let t = start.elapsed().as_secs_f64();
                samples.push((t, rss as f64, heap as f64));
                println!(
                    "soak: {:>6.0} s  rss {rss} KiB  heap in use {heap} KiB  server pools {} KiB  open files {}  sessions {}  accepted {}  echoed {}",
                    t,
                    pooled / 1024,
                    open_files(),
                    server.sessions_per_shard().iter().sum::<usize>(),
                    tally.accepted.load(Ordering::Relaxed),
                    tally.echoed.load(Ordering::Relaxed)
                );
            }
            (peak, samples)
        })
    };
    for w in workers {
        w.await.expect("worker");
    }
    let abused = abuse.await.expect("abuser");
    let never_read = never.await.expect("never-reader");
    let (rss_peak, samples) = sampler.await.unwrap();
    let warm = (secs as f64 / 10.0).max(60.0);
    let after: Vec<_> = samples.iter().filter(|s| s.0 >= warm).collect();
    let rss_line: Vec<(f64, f64)> = after.iter().map(|s| (s.0, s.1)).collect();
    let heap_line: Vec<(f64, f64)> = after.iter().map(|s| (s.0, s.2)).collect();
    match (growth_per_hour(&rss_line), growth_per_hour(&heap_line)) {
        (Some(r), Some(h)) => println!(
            "soak: growth after {warm:.0} s of warm-up, fitted over {} samples: rss {r:+.0} KiB/hour, heap in use {h:+.0} KiB/hour",
            after.len()
        ),
        _ => println!("soak: too short for a growth figure (needs 3 samples after {warm:.0} s of warm-up)"),
    }
    let rss_end = rss_kib();
    // Every session of the soak ended, none is left behind.
    within(GUARD, "sessions back to 0", async {
        while server.sessions_per_shard().iter().sum::<usize>() > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let pooled: u64 = server.stats().iter().map(|s| s.pool.kept_bytes).sum();
    println!("soak: server pools hold {} KiB at the end", pooled / 1024);
    server.stop().await;

    println!(
        "soak: rss start {rss_start} KiB, peak {rss_peak} KiB, end {rss_end} KiB (server and clients in one process)"
    );
    println!(
        "soak: packets accepted by the server {}, echoes received {}, sends refused {}",
        tally.accepted.load(Ordering::Relaxed),
        tally.echoed.load(Ordering::Relaxed),
        tally.send_errors.load(Ordering::Relaxed)
    );
    println!("soak: rounds {:?}", tally.rounds.lock().unwrap());
    println!("soak: raw abuse {abused:?}, never-readers closed {never_read}");
    println!("soak: close reasons {:?}", closes.lock().unwrap());
    let violations = tally.violations.lock().unwrap();
    assert!(violations.is_empty(), "out of sequence: {violations:#?}");
    assert_eq!(tally.server_violations.load(Ordering::Relaxed), 0);
    assert_eq!(tally.client_violations.load(Ordering::Relaxed), 0);
    let rounds = tally.rounds.lock().unwrap();
    for kind in KINDS {
        assert!(rounds.keys().any(|(k, _)| *k == kind), "{kind:?} completed no round");
    }
}
