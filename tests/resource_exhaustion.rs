//! The server survives running out of file descriptors and running short
//! of buffers: it keeps serving the sessions it has, delays new ones with a
//! counted reason, and recovers once the resource is back.
//!
//! * Out of fds: the server runs in a child process (this test binary
//!   again, told by an environment variable to play the server) whose
//!   `RLIMIT_NOFILE` leaves room for a few sessions only. Connections past
//!   that wait in the listen backlog, counted as `fd_limit` accept
//!   failures, and are served once sessions close.
//! * Short of buffers: a pool that keeps one buffer per tier, the smallest
//!   io_uring memory glommio allows, a 64 KiB outbound limit, and (on the
//!   shard ring) more sessions with input at once than the ring has
//!   provided buffers. Every message still comes back, in order, and the
//!   counters show the shortage.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use common::*;
use msgtrans::packet::Packet;
use msgtrans::AcceptFailure;
use msgtrans_shards::pool::buffer::{PoolConfig, LARGE, MEDIUM, SMALL};
use msgtrans_shards::{Engine, EngineConfig, EventSink, Inline, InlineHandler};
use tokio::io::AsyncWriteExt;

// ---------------------------------------------------------------------------
// Out of file descriptors
// ---------------------------------------------------------------------------

/// Set in the child to "ring" or "streams": how it serves plain TCP.
const FD_CHILD: &str = "MSGTRANS_FD_LIMIT_CHILD";
/// Descriptors the child leaves free under its limit once its server runs:
/// about that many sessions fit.
const HEADROOM: usize = 8;
/// How long an accepted session usually takes at most to answer; a
/// connection unanswered for this long sits in the backlog if the server
/// has counted an fd failure by then.
const ANSWERED_WITHIN: Duration = Duration::from_millis(2000);
/// How long a session may go unanswered while the server counts no fd
/// failure before the test calls it lost.
const NEVER_ANSWERED: Duration = Duration::from_secs(30);

/// Open descriptors of this process.
fn open_fds() -> Vec<i32> {
    let listed: Vec<i32> = std::fs::read_dir("/proc/self/fd")
        .expect("procfs")
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    // The listing's own descriptor is closed by now.
    // SAFETY: F_GETFD only asks whether the descriptor is open.
    listed
        .into_iter()
        .filter(|&fd| unsafe { libc::fcntl(fd, libc::F_GETFD) } != -1)
        .collect()
}

/// The `RLIMIT_NOFILE` under which exactly `free` more descriptors can be
/// opened (the kernel hands out the lowest free number below the limit).
fn limit_leaving(free: usize) -> u64 {
    let open = open_fds();
    (0u64..)
        .find(|&l| l as usize - open.iter().filter(|&&fd| (fd as u64) < l).count() == free)
        .expect("a limit")
}

fn set_nofile(soft: u64) {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain syscalls on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut r), 0);
        r.rlim_cur = soft;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &r), 0);
    }
}

/// The child: an inline echo server under a tight fd limit, answering
/// `stats` lines on stdin until stdin ends.
fn fd_child(ring: bool) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let server = rt.block_on(start_inline_echo(builder().tcp_ring(ring)));
    let mut before = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: as in `set_nofile`.
    unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut before) };
    // The shards finish starting on their own threads (the shard ring's
    // eventfd, say) after `build` returns: wait until nothing new opens.
    let mut seen = open_fds();
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = open_fds();
        if now == seen {
            break;
        }
        seen = now;
    }
    let limit = limit_leaving(HEADROOM);
    set_nofile(limit);
    println!("child: port {} limit {limit}", addr(&server).port());
    for line in std::io::stdin().lines() {
        if line.unwrap().trim() != "stats" {
            break;
        }
        let t = server.stats().total;
        println!(
            "child: stats {} {} {} {} {}",
            t.accept_failures_of(AcceptFailure::FdLimit),
            t.accept_failures_of(AcceptFailure::Memory) + t.accept_failures_of(AcceptFailure::Other),
            t.sessions_open,
            t.sessions_total,
            t.socket_fallbacks,
        );
    }
    set_nofile(before.rlim_cur);
    rt.block_on(server.stop());
    println!("child: stopped");
}

/// What the child reports.
#[derive(Debug, Clone, Copy)]
struct ChildStats {
    fd_limit: u64,
    other: u64,
    open: u64,
    total: u64,
    /// Sessions left on glommio's stream (no fd for the table's or the
    /// ring's duplicate).
    fallbacks: u64,
}

/// The child process, killed if the test fails first.
struct Server {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    /// This binary again, running only `test`, as the server.
    fn spawn(test: &str, ring: bool) -> Self {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(FD_CHILD, if ring { "ring" } else { "streams" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, lines) = mpsc::channel();
        let out = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines().map_while(Result::ok) {
                // libtest may print the test's name on the same line.
                if let Some(at) = l.find("child: ") {
                    let _ = tx.send(l[at + "child: ".len()..].to_owned());
                }
            }
        });
        let stderr = Arc::new(Mutex::new(String::new()));
        let (mut err, sink) = (child.stderr.take().unwrap(), Arc::clone(&stderr));
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = err.read(&mut buf) {
                sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Self {
            stdin: child.stdin.take(),
            child,
            lines,
            stderr,
        }
    }

    fn line(&self, what: &str) -> String {
        self.lines.recv_timeout(GUARD).unwrap_or_else(|_| {
            panic!(
                "the child never said {what}; its stderr:\n{}",
                self.stderr.lock().unwrap()
            )
        })
    }

    fn stats(&mut self) -> ChildStats {
        writeln!(self.stdin.as_mut().unwrap(), "stats").unwrap();
        let l = self.line("its stats");
        let v: Vec<u64> = l
            .strip_prefix("stats ")
            .expect("a stats line")
            .split(' ')
            .map(|n| n.parse().unwrap())
            .collect();
        ChildStats {
            fd_limit: v[0],
            other: v[1],
            open: v[2],
            total: v[3],
            fallbacks: v[4],
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// Whether `c` gets no answer within `d` (its connection is not accepted).
async fn unanswered(c: &mut RawClient, d: Duration) -> bool {
    tokio::time::timeout(d, c.recv()).await.is_err()
}

#[test]
fn out_of_file_descriptors_new_connections_wait_in_the_backlog_and_old_sessions_are_served() {
    out_of_file_descriptors(
        "out_of_file_descriptors_new_connections_wait_in_the_backlog_and_old_sessions_are_served",
        false,
    );
}

/// The same on the shard ring, which duplicates each session's fd (and
/// keeps a session on glommio's stream if it cannot).
#[test]
fn out_of_file_descriptors_on_the_shard_ring_new_connections_wait_and_old_sessions_are_served() {
    out_of_file_descriptors(
        "out_of_file_descriptors_on_the_shard_ring_new_connections_wait_and_old_sessions_are_served",
        true,
    );
}

fn out_of_file_descriptors(test: &str, ring: bool) {
    if let Some(how) = std::env::var_os(FD_CHILD) {
        fd_child(how == "ring");
        return;
    }
    let mut server = Server::spawn(test, ring);
    let hello = server.line("its port");
    let port: u16 = hello.split(' ').nth(1).unwrap().parse().unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        // Sessions until one is not answered: the server is out of fds.
        let mut served: Vec<(RawClient, u32)> = Vec::new();
        let mut waiting: Vec<(RawClient, Packet)> = Vec::new();
        for i in 0..64u32 {
            let mut c = RawClient::connect(addr).await;
            let p = one_way(i, 0, b"", format!("hello {i}"));
            c.send(&p).await;
            // Silence alone does not mean out of fds (a loaded machine can
            // be slow to answer): only once the server has counted an
            // EMFILE. Until then keep waiting for the answer.
            let answer = {
                let recv = c.recv();
                tokio::pin!(recv);
                let since = std::time::Instant::now();
                loop {
                    tokio::select! {
                        got = &mut recv => break Some(got),
                        _ = tokio::time::sleep(ANSWERED_WITHIN) => {
                            if server.stats().fd_limit > 0 {
                                break None;
                            }
                            assert!(since.elapsed() < NEVER_ANSWERED, "{i}: no answer and no fd failure");
                        }
                    }
                }
            };
            match answer {
                Some(got) => {
                    assert_eq!(got, p);
                    served.push((c, i));
                }
                None => {
                    waiting.push((c, p));
                    break;
                }
            }
        }
        assert!(
            !waiting.is_empty(),
            "64 sessions and the server never ran out of fds ({hello})"
        );
        assert!(
            (6..=HEADROOM).contains(&served.len()),
            "{} sessions fit under a limit leaving {HEADROOM} fds ({hello})",
            served.len()
        );
        // Two more connect (the kernel completes them into the backlog)
        // and wait as well.
        for i in 100..102u32 {
            let mut c = RawClient::connect(addr).await;
            let p = one_way(i, 0, b"", format!("waiting {i}"));
            c.send(&p).await;
            assert!(unanswered(&mut c, Duration::from_millis(300)).await, "{i} was served");
            waiting.push((c, p));
        }
        let s = server.stats();
        eprintln!("{} sessions fit, {} wait: {s:?}", served.len(), waiting.len());
        assert!(s.fd_limit > 0, "fd exhaustion is counted: {s:?}");
        assert_eq!(s.other, 0, "every accept failure was EMFILE: {s:?}");
        assert_eq!(s.open, served.len() as u64, "{s:?}");
        // The process ran out of fds when an accept took the last one; that
        // session's socket could not be duplicated onto the epoll table (or
        // the ring), so it runs on glommio's stream (it was answered
        // above, and is again below) and is counted.
        assert!(s.fallbacks >= 1, "the session on the last fd is counted: {s:?}");

        // The sessions the server has are served as before.
        for (c, i) in &mut served {
            let p = one_way(1000 + *i, 0, b"", format!("still here {i}"));
            c.send(&p).await;
            assert_eq!(c.recv().await, p, "session {i} while the server is out of fds");
        }
        // Still nothing for the waiting ones, and the counter keeps counting.
        assert!(unanswered(&mut waiting[0].0, Duration::from_millis(200)).await);
        assert!(server.stats().fd_limit > s.fd_limit, "each retry is counted");

        // One more session closes than there are connections waiting: all
        // of them are accepted and answered, and one fd is left over.
        let closing = waiting.len() + 1;
        drop(served.drain(..closing));
        for (c, p) in &mut waiting {
            assert_eq!(&c.recv().await, p, "a connection that waited in the backlog");
        }
        for (k, (c, _)) in waiting.iter_mut().enumerate() {
            let p = one_way(2000 + k as u32, 0, b"", vec![k as u8; 3000]);
            c.send(&p).await;
            assert_eq!(c.recv().await, p);
        }
        for (c, i) in &mut served {
            let p = one_way(3000 + *i, 0, b"", format!("after {i}"));
            c.send(&p).await;
            assert_eq!(c.recv().await, p);
        }
        // Recovered: a free fd, so accept no longer fails.
        let mut s = server.stats();
        for _ in 0..50 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let again = server.stats();
            if again.fd_limit == s.fd_limit {
                break;
            }
            s = again;
        }
        let later = {
            tokio::time::sleep(Duration::from_millis(300)).await;
            server.stats()
        };
        eprintln!("recovered: {later:?}");
        assert_eq!(later.fd_limit, s.fd_limit, "accepts still fail after fds came back");
        assert_eq!(later.open, (served.len() + waiting.len()) as u64, "{later:?}");
        let ever = (served.len() + closing + waiting.len()) as u64;
        assert_eq!(later.total, ever, "{later:?}");
        let mut c = RawClient::connect(addr).await;
        let p = one_way(9999, 0, b"", "a new one");
        c.send(&p).await;
        assert_eq!(c.recv().await, p, "a new connection once fds are back");
    });
    drop(server.stdin.take());
    assert_eq!(server.line("it stopped"), "stopped");
    let status = server.child.wait().unwrap();
    assert!(status.success(), "{status:?}\n{}", server.stderr.lock().unwrap());
}

// ---------------------------------------------------------------------------
// Short of buffers
// ---------------------------------------------------------------------------

/// More sessions than the shard ring's 128 provided read buffers.
const SESSIONS: usize = 160;
/// Messages each session pipelines under load (sizes cycle through `SIZES`).
const MESSAGES: usize = 14;
const SIZES: [usize; 7] = [64, 200, 1024, 4096, 16 * 1024, 40_000, 64 * 1024];
const STALL: &[u8] = b"stall the shard";

/// Echoes; the packet `STALL` first blocks the shard for 300 ms, so that
/// every other session's input arrives while it cannot read.
fn stalling_echo(ctx: &mut Inline<'_>) {
    if ctx.payload() == STALL {
        std::thread::sleep(Duration::from_millis(300));
    }
    inline_echo(ctx);
}

/// A payload that says which session and message it is.
fn payload(session: usize, seq: usize, len: usize) -> Vec<u8> {
    (0..len).map(|i| ((session * 31 + seq * 7 + i) % 251) as u8).collect()
}

/// Whether this kernel has what the shard ring needs (6.1).
fn kernel_has_ring() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let mut v = release.trim().split(['.', '-']).map(|n| n.parse::<u32>().unwrap_or(0));
    (v.next().unwrap_or(0), v.next().unwrap_or(0)) >= (6, 1)
}

async fn buffers_run_short(ring: bool) {
    let (tx, _rx) = flume::bounded(1024);
    let sink = EventSink {
        tx,
        lifecycle: Default::default(),
        bell: Default::default(),
    };
    let cfg = EngineConfig {
        shards: 1,
        pin: false,
        // Glommio rounds this up to its floor, 64 KiB.
        io_memory: 0,
        // A tier keeps at least one buffer, so this is one per tier.
        pool: PoolConfig {
            small: 0,
            medium: 0,
            large: 0,
        },
        // Room for one largest message: the echo stops reading whenever it
        // has that much to write.
        max_outbound_bytes: 64 * 1024,
        tcp_ring: ring,
        ..EngineConfig::default()
    };
    let handler: Arc<dyn InlineHandler> = Arc::new(stalling_echo);
    let engine = Engine::start(cfg, Some(handler), sink).await.expect("engine start");
    let addr = engine.listen_tcp("127.0.0.1:0".parse().unwrap(), None).expect("listen");

    // One session blocks the shard for 300 ms; meanwhile every other one
    // connects and sends. Once free, the shard accepts them all in one go
    // and their first reads go to the kernel together, each with input
    // waiting: more than the ring's provided buffers.
    let mut first = RawClient::connect(addr).await;
    let hi = one_way(0, 0, b"", payload(0, 0, 64));
    first.send(&hi).await;
    assert_eq!(first.recv().await, hi);
    let stall = one_way(1, 0, b"", STALL);
    first.send(&stall).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut clients = vec![first];
    let mut burst = Vec::new();
    for s in 1..SESSIONS {
        let mut c = RawClient::connect(addr).await;
        let p = one_way(1, 0, b"", payload(s, 1, 64));
        c.send(&p).await;
        clients.push(c);
        burst.push(p);
    }
    assert_eq!(clients[0].recv().await, stall);
    for (c, p) in clients[1..].iter_mut().zip(&burst) {
        assert_eq!(&c.recv().await, p, "a message sent while the shard was stalled");
        let p = one_way(0, 0, b"", vec![0u8; 100]);
        c.send(&p).await;
        assert_eq!(c.recv().await, p);
    }

    // Load: every session pipelines 64 B to 64 KiB messages and checks
    // each echo, in order.
    let mut tasks = Vec::new();
    for (s, c) in clients.into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            let (mut r, mut w) = c.into_split();
            let writer = tokio::spawn(async move {
                for m in 0..MESSAGES {
                    let p = one_way(2 + m as u32, 0, b"", payload(s, 2 + m, SIZES[(s + m) % SIZES.len()]));
                    w.write_all(&wire(&p)).await.expect("write");
                }
                w
            });
            for m in 0..MESSAGES {
                let want = one_way(2 + m as u32, 0, b"", payload(s, 2 + m, SIZES[(s + m) % SIZES.len()]));
                let got = r.recv().await;
                assert!(got == want, "session {s}: message {m} differs or is out of order");
            }
            (r, writer.await.unwrap())
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.expect("a session's load"));
    }

    let t = engine.stats().total;
    let sent = (SESSIONS * (2 + MESSAGES)) as u64;
    assert_eq!(t.msgs_in, sent, "every message arrived once: {t:?}");
    assert_eq!(t.msgs_out, sent, "every message was echoed once: {t:?}");
    assert_eq!(t.closes_total(), 0, "no session was closed: {t:?}");
    assert_eq!(t.sessions_open, SESSIONS);
    assert!(t.pool.misses > 0, "the pool ran short: {:?}", t.pool);
    assert!(t.pool.dropped > 0, "a full tier freed buffers: {:?}", t.pool);
    let most = (2 * SMALL + 2 * MEDIUM + 4 * LARGE) as u64;
    assert!(
        t.pool.kept_bytes <= most,
        "the pool keeps one buffer per tier: {:?}",
        t.pool
    );
    if !ring {
        assert_eq!(t.ring_reads_without_buffer, 0);
    } else if kernel_has_ring() {
        assert!(
            t.ring_reads_without_buffer > 0,
            "{SESSIONS} sessions read at once from 128 provided buffers: {t:?}"
        );
    } else {
        eprintln!("no shard ring on this kernel: its ENOBUFS path is not exercised");
    }

    drop(open);
    within(GUARD, "every session closing", async {
        while engine.stats().total.sessions_open > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    engine.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_of_buffers_every_message_is_delivered_in_order() {
    within(Duration::from_secs(180), "the load", buffers_run_short(false)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_of_ring_buffers_reads_wait_a_turn_and_every_message_is_delivered_in_order() {
    within(Duration::from_secs(180), "the load", buffers_run_short(true)).await;
}
