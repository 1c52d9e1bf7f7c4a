//! Many concurrent QUIC connections held by one server process.
//!
//! QUIC connections share one UDP socket per shard, so this machine's cap of
//! 20,000 open files does not bind them the way it binds TCP. This opens
//! `-n` connections (default 50,000) from a few client engines in this
//! process to a server it runs as a child process (so the server's resident
//! memory is its own), has each connection answer one request, reports the
//! server's resident memory per connection, then closes them all and checks
//! that the server is back to zero sessions (`--rounds` repeats it, to show
//! that memory is reused rather than leaked).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use msgtrans::event::ServerEvent;
use msgtrans::protocol::{QuicClientConfig, QuicServerConfig};
use msgtrans::transport::{RetryConfig, TransportClient, TransportClientBuilder, TransportServerBuilder};
use msgtrans::Inline;

const HELP: &str = "\
quic_scale: hold many concurrent QUIC connections on one server process

USAGE:
    quic_scale [OPTIONS]

OPTIONS:
    -n, --conns N      connections to open and hold     [default: 50000]
    --clients K        client engines (one thread each) [default: 8]
    --shards S         server shards                    [default: 2]
    --hold S           seconds to hold them all open    [default: 5]
    --rounds R         open, hold and close them R times [default: 1]
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
    rounds: usize,
    uni: u32,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        conns: 50_000,
        clients: 8,
        shards: 2,
        hold: 5,
        rounds: 1,
        uni: msgtrans::protocol::quic::DEFAULT_QUIC_MAX_UNI_STREAMS,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let n: usize = value.parse().map_err(|_| format!("{arg}: not a number: {value:?}"))?;
        match arg.as_str() {
            "-n" | "--conns" if n > 0 => a.conns = n,
            "--clients" if n > 0 => a.clients = n,
            "--shards" if n > 0 => a.shards = n,
            "--hold" => a.hold = n as u64,
            "--rounds" if n > 0 => a.rounds = n,
            "--uni" => a.uni = n.try_into().map_err(|_| format!("--uni {n}: too large"))?,
            _ => return Err(format!("bad argument {arg} {value}")),
        }
    }
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
            println!("sessions {} closes {closes}", server.session_count().await);
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
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).map_err(|e| e.to_string())?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
            .ok_or_else(|| "no VmRSS".to_string())
    }

    fn stop(mut self) {
        drop(self.stdin);
        let _ = self.child.wait();
    }
}

/// One client engine holding `n` connections, each of which answers one
/// request.
async fn open(addr: String, pem: String, n: usize) -> Result<TransportClient, String> {
    let cfg = QuicClientConfig::new(&addr)
        .map_err(|e| e.to_string())?
        .with_ca_cert_pem(&pem)
        .map_err(|e| e.to_string())?
        .with_connect_timeout(Duration::from_secs(20))
        // Opening them all takes longer than the 30 s idle timeout.
        .with_keep_alive_interval(Some(Duration::from_secs(10)));
    let mut c = TransportClientBuilder::new()
        .with_protocol(cfg)
        .connection_pool(n)
        .retry_strategy(RetryConfig::exponential_backoff(3, Duration::from_millis(200)))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    c.connect().await.map_err(|e| e.to_string())?;
    // The pool takes connections in turn: n requests touch each once.
    for i in 0..n {
        let r = c.request(&(i as u64).to_be_bytes()).await.map_err(|e| e.to_string())?;
        if r.data.as_deref() != Some(&(i as u64).to_be_bytes()[..]) {
            return Err(format!("request {i} answered wrongly"));
        }
    }
    Ok(c)
}

async fn run(a: &Args) -> Result<(), String> {
    let (mut server, addr, cert) = Server::spawn(a.shards, a.conns, a.uni)?;
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

/// Opens, holds, checks and closes `a.conns` connections once.
async fn one_round(a: &Args, server: &mut Server, addr: &str, pem: &str, before: u64) -> Result<(), String> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..a.clients {
        let n = a.conns / a.clients + usize::from(k < a.conns % a.clients);
        tasks.push(tokio::spawn(open(addr.to_string(), pem.to_string(), n)));
    }
    let mut clients = Vec::new();
    for t in tasks {
        match t.await.map_err(|e| e.to_string())? {
            Ok(c) => clients.push(c),
            Err(e) => {
                let (n, closes) = server.sessions()?;
                return Err(format!("{e} (server: {n} sessions, closes {closes})"));
            }
        }
    }
    let opened = started.elapsed();
    let held: usize = clients.iter().map(|c| c.session_ids().len()).sum();
    let (sessions, _) = server.sessions()?;
    let during = server.rss()?;
    println!(
        "  opened {held} connections in {:.1}s, each answered a request; server holds {sessions} sessions",
        opened.as_secs_f64()
    );
    println!(
        "  server resident memory {:.1} MB at start, {:.1} MB now: {} bytes per connection",
        before as f64 / 1e6,
        during as f64 / 1e6,
        (during.saturating_sub(before)) / held.max(1) as u64
    );
    tokio::time::sleep(Duration::from_secs(a.hold)).await;
    let (still, closes) = server.sessions()?;
    println!("  after holding {}s: {still} sessions; closes so far {closes}", a.hold);
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
        "  after closing: {left} sessions, resident {:.1} MB; closes since start {closes}",
        server.rss()? as f64 / 1e6
    );
    if held != a.conns || sessions != a.conns || still != a.conns || left != 0 {
        return Err(format!(
            "wanted {} held throughout and 0 after: held {held}, server {sessions}, after hold {still}, after close {left}",
            a.conns
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
