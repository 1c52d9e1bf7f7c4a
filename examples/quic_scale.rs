//! Many concurrent QUIC connections held by one server process.
//!
//! QUIC connections share one UDP socket per shard, so this machine's cap of
//! 20,000 open files does not bind them the way it binds TCP. This opens
//! `-n` connections (default 100,000) from a few client engines in this
//! process to a server it runs as a child process (so the server's resident
//! memory is its own). Each connection answers a request as it opens and
//! again at the end of the hold; in between, a trickle of requests at a
//! fixed rate gives the latency under the held load. It reports resident
//! memory per connection (the server's, and the server's and clients'
//! together), time to open, the latencies, then closes them all and checks
//! that every close reached the server (`--rounds` repeats it, to show
//! that memory is reused rather than leaked).

#[path = "common/hold.rs"]
mod hold;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use msgtrans::event::ServerEvent;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig};
use msgtrans::transport::{RetryConfig, TransportClient, TransportClientBuilder, TransportServerBuilder};
use msgtrans::Inline;

const HELP: &str = "\
quic_scale: hold many concurrent QUIC connections on one server process

USAGE:
    quic_scale [OPTIONS]

OPTIONS:
    -n, --conns N      connections to open and hold     [default: 100000]
    --clients K        client engines (one thread each) [default: 8]
    --shards S         server shards                    [default: 2]
    --hold S           seconds to hold them all open    [default: 30]
    --rate R           requests per second during the hold, all clients
                       together                         [default: 2000]
    --rounds R         open, hold and close them R times [default: 1]
    --keep-alive S     seconds between the clients' keep-alive PINGs; under
                       the 30 s QUIC idle timeout, since opening them all
                       takes longer than that        [default: 10]
    --uni N            server's concurrent unidirectional streams per
                       connection                       [default: 1024]
    -h, --help         print this help

The server runs as a child process of this one (quic_scale --serve).
";

struct Args {
    conns: usize,
    clients: usize,
    shards: usize,
    hold: u64,
    rate: f64,
    rounds: usize,
    uni: u32,
    keep_alive: u64,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        conns: 100_000,
        clients: 8,
        shards: 2,
        hold: 30,
        rate: 2000.0,
        rounds: 1,
        uni: msgtrans::protocol::quic::DEFAULT_QUIC_MAX_UNI_STREAMS,
        keep_alive: 10,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        if arg == "--rate" {
            a.rate = value.parse().map_err(|_| format!("--rate: not a number: {value:?}"))?;
            continue;
        }
        let n: usize = value.parse().map_err(|_| format!("{arg}: not a number: {value:?}"))?;
        match arg.as_str() {
            "-n" | "--conns" if n > 0 => a.conns = n,
            "--clients" if n > 0 => a.clients = n,
            "--shards" if n > 0 => a.shards = n,
            "--hold" => a.hold = n as u64,
            "--rounds" if n > 0 => a.rounds = n,
            "--keep-alive" if (1..30).contains(&n) => a.keep_alive = n as u64,
            "--uni" => a.uni = n.try_into().map_err(|_| format!("--uni {n}: too large"))?,
            _ => return Err(format!("bad argument {arg} {value}")),
        }
    }
    hold::check_plan(a.conns, a.clients, a.rate)?;
    Ok(Some(a))
}

fn echo(ctx: &mut Inline<'_>) {
    let payload = ctx.payload();
    if ctx.is_request() {
        ctx.respond(payload);
    }
}

/// The child: a QUIC echo server. It prints its address and certificate,
/// answers `count` on stdin with its session count, and stops at EOF.
async fn serve(shards: usize, conns: usize, uni: u32) -> Result<(), String> {
    let quic = QuicServerConfig::new("127.0.0.1:0")
        .map_err(|e| e.to_string())?
        .with_max_concurrent_uni_streams(uni);
    let server = TransportServerBuilder::new()
        .with_protocol(quic)
        .shards(shards)
        .pin_shards(false)
        .max_connections(conns + 1000)
        .max_connections_per_shard(conns + 1000)
        .handler(echo)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    let pem = server.quic_certificate_pem().ok_or("no certificate")?;
    let cert = std::env::temp_dir().join(format!("msgtrans-quic-scale-{}.pem", std::process::id()));
    std::fs::write(&cert, pem).map_err(|e| e.to_string())?;
    println!(
        "addr {} cert {}",
        server.quic_addr().ok_or("no quic address")?,
        cert.display()
    );
    // Why sessions closed, reported with the count.
    let closes = std::sync::Arc::new(std::sync::Mutex::new(std::collections::BTreeMap::<String, u64>::new()));
    let mut events = server.subscribe_events();
    let seen = std::sync::Arc::clone(&closes);
    tokio::spawn(async move {
        while let Ok(ev) = events.recv().await {
            if let ServerEvent::ConnectionClosed { reason, .. } = ev {
                *seen.lock().unwrap().entry(format!("{reason:?}")).or_default() += 1;
            }
        }
    });
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    while let Some(line) = rx.recv().await {
        if line.trim() == "count" {
            let closes = format!("{:?}", closes.lock().unwrap());
            let t = server.stats().total;
            println!(
                "sessions {} closes {closes} handshake failures {} refused {} retries {}",
                server.session_count().await,
                t.handshake_failures,
                t.refused,
                t.quic_retries
            );
        }
    }
    server.stop().await;
    std::fs::remove_file(&cert).ok();
    Ok(())
}

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn spawn(shards: usize, conns: usize, uni: u32) -> Result<(Server, String, String), String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["--serve", &shards.to_string(), &conns.to_string(), &uni.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning the server: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let mut line = String::new();
        stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_whitespace().collect();
        let [_, addr, _, cert] = words[..] else {
            return Err(format!("server said {line:?}"));
        };
        let (addr, cert) = (addr.to_string(), cert.to_string());
        Ok((Server { child, stdin, stdout }, addr, cert))
    }

    /// The server's session count, and why sessions closed so far.
    fn sessions(&mut self) -> Result<(usize, String), String> {
        writeln!(self.stdin, "count").map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.stdout.read_line(&mut line).map_err(|e| e.to_string())?;
        let rest = line.trim().strip_prefix("sessions ").unwrap_or("");
        let (n, closes) = rest.split_once(" closes ").unwrap_or((rest, ""));
        let n = n.parse().map_err(|_| format!("server said {line:?}"))?;
        Ok((n, closes.to_string()))
    }

    /// Resident memory, from /proc.
    fn rss(&self) -> Result<u64, String> {
        hold::rss(self.child.id())
    }

    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// One client engine holding `n` connections, each of which has answered
/// one request (their latencies in the histogram).
async fn open(
    addr: String,
    pem: String,
    n: usize,
    keep_alive: u64,
) -> Result<(TransportClient, Histogram<u64>), String> {
    let cfg = QuicClientConfig::new(&addr)
        .map_err(|e| e.to_string())?
        .with_ca_cert_pem(&pem)
        .map_err(|e| e.to_string())?
        .with_connect_timeout(Duration::from_secs(20))
        // Opening them all takes longer than the 30 s idle timeout.
        .with_keep_alive_interval(Some(Duration::from_secs(keep_alive)));
    let mut c = TransportClientBuilder::new()
        .with_protocol(cfg)
        .connection_pool(n)
        .retry_strategy(RetryConfig::exponential_backoff(3, Duration::from_millis(200)))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    c.connect().await.map_err(|e| e.to_string())?;
    let mut h = hold::histogram();
    hold::every_connection(&c, n, &mut h).await?;
    Ok((c, h))
}

/// The hold for one client: requests at `rate` for `secs`, then one on
/// each of its `n` connections; their latencies.
async fn hold_one(c: Arc<TransportClient>, n: usize, rate: f64, secs: u64) -> Result<[Histogram<u64>; 2], String> {
    let (mut held, mut end) = (hold::histogram(), hold::histogram());
    hold::trickle(&c, rate, Duration::from_secs(secs), &mut held).await?;
    hold::every_connection(&c, n, &mut end).await?;
    Ok([held, end])
}

async fn run(a: &Args) -> Result<(), String> {
    let (mut server, addr, cert) = Server::spawn(a.shards, a.conns, a.uni)?;
    // The client engines start after this, on threads that inherit it.
    hold::yield_to_the_server();
    let pem = std::fs::read_to_string(&cert).map_err(|e| e.to_string())?;
    let before = server.rss()?;
    let mut result = Ok(());
    for round in 1..=a.rounds {
        println!("round {round}:");
        result = one_round(a, &mut server, &addr, &pem, before).await;
        if result.is_err() {
            break;
        }
    }
    server.stop();
    result
}

/// How many closes in a `sessions` answer's list were the peer's own.
fn peer_closed(closes: &str) -> u64 {
    closes
        .split_once("\"PeerClosed\": ")
        .and_then(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Opens, holds, checks and closes `a.conns` connections once.
async fn one_round(a: &Args, server: &mut Server, addr: &str, pem: &str, before: u64) -> Result<(), String> {
    let me = std::process::id();
    let client_before = hold::rss(me)?;
    let started = Instant::now();
    let share = |k: usize| a.conns / a.clients + usize::from(k < a.conns % a.clients);
    let mut tasks = Vec::new();
    for k in 0..a.clients {
        tasks.push(tokio::spawn(open(
            addr.to_string(),
            pem.to_string(),
            share(k),
            a.keep_alive,
        )));
    }
    let mut clients = Vec::new();
    let mut start = hold::histogram();
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok((c, h)) => {
                clients.push(Arc::new(c));
                start.add(h).map_err(|e| e.to_string())?;
            }
            Err(e) => {
                let (n, closes) = server.sessions()?;
                return Err(format!("{e} (server: {n} sessions, closes {closes})"));
            }
        }
    }
    let opened = started.elapsed();
    let n = a.conns as u64;
    let (sessions, _) = server.sessions()?;
    let during = server.rss()?;
    let client_rss = hold::rss(me)?.saturating_sub(client_before);
    hold::Opened {
        conns: a.conns,
        took: opened,
        held: sessions,
        start: &start,
        server_before: before,
        server_now: during,
        client_growth: client_rss,
    }
    .print();
    let rate = a.rate / a.clients as f64;
    let holds: Vec<_> = (0..a.clients)
        .map(|k| tokio::spawn(hold_one(Arc::clone(&clients[k]), share(k), rate, a.hold)))
        .collect();
    let (mut held, mut end) = (hold::histogram(), hold::histogram());
    for t in holds {
        let [h, e] = t.await.map_err(|e| e.to_string())??;
        held.add(h).map_err(|e| e.to_string())?;
        end.add(e).map_err(|e| e.to_string())?;
    }
    let (still, closes) = server.sessions()?;
    let closed_before = peer_closed(&closes);
    println!("  {}", hold::held_line(a.hold, a.rate, &held));
    println!("  a request on each at the end of the hold: {}", hold::summary(&end));
    println!("  the server holds {still} sessions; closes so far {closes}");
    for c in &clients {
        c.stop().await;
    }
    // A close lost in a burst of datagrams ends at the idle timeout (30 s).
    let deadline = Instant::now() + Duration::from_secs(45);
    let (mut left, mut closes) = server.sessions()?;
    while left > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        (left, closes) = server.sessions()?;
    }
    println!(
        "  closed: the server holds {left} sessions, resident {:.1} MB; closes since start {closes}",
        hold::mb(server.rss()?)
    );
    let peer_closes = peer_closed(&closes) - closed_before;
    if sessions != a.conns || still != a.conns || left != 0 || peer_closes != n {
        return Err(format!(
            "wanted {n} held throughout, then {n} closes from the clients: server {sessions}, \
             after the hold {still}, after close {left}, closed by the clients {peer_closes}"
        ));
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--serve") {
        let num = |i: usize| argv.get(i).and_then(|v| v.parse().ok()).unwrap_or(1);
        return match serve(num(2), num(3), num(4) as u32).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("server error: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    match run(&args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
