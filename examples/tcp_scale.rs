//! Many concurrent TCP connections on one port, served by several server
//! processes: this machine caps a process at 20,000 open files, so one
//! service that holds 100,000 connections runs as several
//! `sharded_server --shared-port` processes on the same port (the kernel
//! spreads connections over them, `SO_REUSEPORT`), and the clients run in
//! several processes too.
//!
//! Each connection answers a request when it opens and again at the end
//! of the hold; in between, a trickle of requests at a fixed rate gives the
//! latency under the held load. It reports resident memory per connection
//! (servers, and servers plus clients), time to open, the latencies, and
//! that every server saw every close.

#[path = "common/hold.rs"]
mod hold;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::{RetryConfig, TransportClient, TransportClientBuilder};

const HELP: &str = "\
tcp_scale: hold many concurrent TCP connections on one port served by
several server processes

USAGE:
    tcp_scale [OPTIONS]

OPTIONS:
    -n, --conns N      connections in total             [default: 100000]
    --servers P        sharded_server processes sharing the port
                       (--shared-port, SO_REUSEPORT)    [default: 6]
    --shards S         shards per server process        [default: 1]
    --clients C        client processes; client k connects to 127.0.0.(k+1),
                       so each has a loopback address's ephemeral ports
                       to itself                        [default: 6]
    --hold S           seconds to hold them all open    [default: 30]
    --rate R           requests per second during the hold, all clients
                       together                         [default: 2000]
    -h, --help         print this help

Every process stays under this machine's cap of 20,000 open files, so
connections per process (n / servers, n / clients) must stay below about
19,000. The servers are examples/sharded_server from this program's own
directory (cargo build --release --examples); they listen on 0.0.0.0 so
that clients can reach them at distinct loopback addresses.
";

/// The most sessions one server process takes: under the open-files cap
/// with room for the engine's own descriptors.
const PER_PROCESS: usize = 19_000;

struct Args {
    conns: usize,
    servers: usize,
    shards: usize,
    clients: usize,
    hold: u64,
    rate: f64,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        conns: 100_000,
        servers: 6,
        shards: 1,
        clients: 6,
        hold: 30,
        rate: 2000.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        let value = it.next().ok_or_else(|| format!("{arg} needs a value"))?;
        let n: f64 = value.parse().map_err(|_| format!("{arg}: not a number: {value:?}"))?;
        let whole = n.max(0.0) as usize;
        match arg.as_str() {
            "-n" | "--conns" if whole > 0 => a.conns = whole,
            "--servers" if whole > 0 => a.servers = whole,
            "--shards" if whole > 0 => a.shards = whole,
            "--clients" if (1..=250).contains(&whole) => a.clients = whole,
            "--hold" => a.hold = whole as u64,
            "--rate" if n >= 0.0 => a.rate = n,
            _ => return Err(format!("bad argument {arg} {value}")),
        }
    }
    hold::check_plan(a.conns, a.clients, a.rate)?;
    for (what, k) in [("server", a.servers), ("client", a.clients)] {
        if a.conns.div_ceil(k) > PER_PROCESS {
            return Err(format!(
                "{} connections over {k} {what} processes is more than {PER_PROCESS} per process; add processes",
                a.conns
            ));
        }
    }
    Ok(Some(a))
}

/// One `sharded_server --shared-port` process and its metrics address.
struct Server {
    child: Child,
    metrics: SocketAddr,
    // Held so the server never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// Starts a server on `port` (0: a free one); returns it and its port.
    fn spawn(port: u16, shards: usize) -> Result<(Server, u16), String> {
        let dir = std::env::current_exe().map_err(|e| e.to_string())?;
        let bin = dir.with_file_name("sharded_server");
        let mut child = Command::new(&bin)
            .args([
                "--tcp",
                &format!("0.0.0.0:{port}"),
                "--shared-port",
                "--no-ws",
                "--no-quic",
            ])
            .args(["--shards", &shards.to_string(), "--no-pin"])
            .args(["--max-connections", &PER_PROCESS.to_string()])
            .args(["--metrics", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("{}: {e} (cargo build --release --examples)", bin.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        let (mut port, mut metrics) = (None, None);
        while port.is_none() || metrics.is_none() {
            let mut line = String::new();
            if stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
                return Err("a server exited at start".into());
            }
            let words: Vec<&str> = line.split_whitespace().collect();
            match words[..] {
                ["listening", "tcp", addr, ..] => port = addr.parse::<SocketAddr>().ok().map(|a| a.port()),
                ["metrics", url, ..] => {
                    let addr = url.trim_start_matches("http://").trim_end_matches("/metrics");
                    metrics = addr.parse().ok();
                }
                _ => {}
            }
        }
        let (port, metrics) = (port.expect("set"), metrics.expect("set"));
        Ok((
            Server {
                child,
                metrics,
                _stdout: stdout,
            },
            port,
        ))
    }

    /// Open sessions and closes by reason, from the server's /stats.json.
    fn stats(&self) -> Result<(u64, serde_json::Map<String, serde_json::Value>), String> {
        let mut s = TcpStream::connect(self.metrics).map_err(|e| format!("metrics: {e}"))?;
        write!(s, "GET /stats.json HTTP/1.0\r\nHost: x\r\n\r\n").map_err(|e| e.to_string())?;
        let mut reply = String::new();
        s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
        let body = reply.split_once("\r\n\r\n").map(|(_, b)| b).ok_or("metrics: no body")?;
        let v: serde_json::Value = serde_json::from_str(body).map_err(|e| format!("metrics: {e}"))?;
        let total = &v["total"];
        let open = total["sessions_open"].as_u64().ok_or("metrics: no sessions_open")?;
        let closes = total["closes"].as_object().cloned().unwrap_or_default();
        Ok((open, closes))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // SAFETY: signals our own child; it stops on SIGINT like on Ctrl-C.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

/// Open sessions over every server, and closes by reason summed.
fn all_stats(servers: &[Server]) -> Result<(u64, std::collections::BTreeMap<String, u64>), String> {
    let mut open = 0;
    let mut closes = std::collections::BTreeMap::new();
    for s in servers {
        let (o, c) = s.stats()?;
        open += o;
        for (k, v) in c {
            let n = v.as_u64().unwrap_or(0);
            if n > 0 {
                *closes.entry(k).or_insert(0) += n;
            }
        }
    }
    Ok((open, closes))
}

/// One client process, spoken to over its stdin and stdout.
struct Client {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Client {
    fn spawn(target: SocketAddr, n: usize) -> Result<Client, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let mut child = Command::new(exe)
            .args(["--client", &target.to_string(), &n.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .map_err(|e| format!("spawning a client: {e}"))?;
        let stdin = child.stdin.take().ok_or("no stdin")?;
        let stdout = BufReader::new(child.stdout.take().ok_or("no stdout")?);
        Ok(Client { child, stdin, stdout })
    }

    /// The client's next line that starts with `word`, without it.
    fn expect(&mut self, word: &str) -> Result<String, String> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line).map_err(|e| e.to_string())? == 0 {
            return Err(format!("a client exited while we waited for {word:?}"));
        }
        match line.trim_end().strip_prefix(word) {
            Some(rest) => Ok(rest.trim_start().to_string()),
            None => Err(format!("a client said {:?}, not {word:?}", line.trim_end())),
        }
    }

    fn tell(&mut self, what: &str) -> Result<(), String> {
        writeln!(self.stdin, "{what}").map_err(|e| format!("a client is gone: {e}"))
    }
}

impl Drop for Client {
    /// On the error path the driver leaves without a `close`; a client
    /// still opening would otherwise hold its connections until done.
    /// std's `kill` signals nothing once the child has been waited for.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn run(a: &Args) -> Result<(), String> {
    let (first, port) = Server::spawn(0, a.shards)?;
    let mut servers = vec![first];
    for _ in 1..a.servers {
        servers.push(Server::spawn(port, a.shards)?.0);
    }
    let server_rss =
        |servers: &[Server]| -> Result<u64, String> { servers.iter().map(|s| hold::rss(s.child.id())).sum() };
    let before = server_rss(&servers)?;
    println!(
        "{} server processes x {} shard(s) on port {port}; {} client processes",
        a.servers, a.shards, a.clients
    );

    let started = Instant::now();
    let mut clients = Vec::new();
    for k in 0..a.clients {
        let n = a.conns / a.clients + usize::from(k < a.conns % a.clients);
        let target = SocketAddr::from(([127, 0, 0, (k + 1) as u8], port));
        clients.push(Client::spawn(target, n)?);
    }
    let mut start = hold::histogram();
    let mut client_base = 0;
    for c in &mut clients {
        client_base += c
            .expect("opened")?
            .parse::<u64>()
            .map_err(|_| "a client's resident memory")?;
        hold::merge_line(&mut start, &c.expect("latency")?)?;
    }
    let opened = started.elapsed();
    let (open, _) = all_stats(&servers)?;
    let during = server_rss(&servers)?;
    let client_rss: u64 = clients
        .iter()
        .map(|c| hold::rss(c.child.id()))
        .sum::<Result<u64, _>>()?;
    let client_rss = client_rss.saturating_sub(client_base);
    let n = a.conns as u64;
    hold::Opened {
        conns: a.conns,
        took: opened,
        held: open as usize,
        start: &start,
        server_before: before,
        server_now: during,
        client_growth: client_rss,
    }
    .print();

    let share = a.rate / a.clients as f64;
    for c in &mut clients {
        c.tell(&format!("hold {} {share}", a.hold))?;
    }
    let (mut held, mut end) = (hold::histogram(), hold::histogram());
    for c in &mut clients {
        hold::merge_line(&mut held, &c.expect("held")?)?;
        hold::merge_line(&mut end, &c.expect("ended")?)?;
    }
    let (still, _) = all_stats(&servers)?;
    println!("{}", hold::held_line(a.hold, a.rate, &held));
    println!("  a request on each at the end of the hold: {}", hold::summary(&end));

    for c in &mut clients {
        c.tell("close")?;
    }
    for c in &mut clients {
        c.expect("closed")?;
        let _ = c.child.wait();
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let (mut left, mut closes) = all_stats(&servers)?;
    while (left > 0 || closes.values().sum::<u64>() < n) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        (left, closes) = all_stats(&servers)?;
    }
    println!(
        "closed: servers hold {left} sessions, resident {:.1} MB; closes {closes:?}",
        hold::mb(server_rss(&servers)?)
    );
    let peer_closed = closes.get("peer_closed").copied().unwrap_or(0);
    if open != n || still != n || left != 0 || peer_closed != n || closes.values().sum::<u64>() != n {
        return Err(format!(
            "wanted {n} held throughout, then {n} peer closes and none else: \
             opened {open}, after the hold {still}, left {left}, closes {closes:?}"
        ));
    }
    Ok(())
}

/// A client process: opens `n` connections to `target`, a request on each,
/// then follows the driver's `hold` and `close`.
async fn client(target: &str, n: usize) -> Result<(), String> {
    // What the process holds before its engine starts, so the driver
    // counts only what the connections add.
    let base = hold::rss(std::process::id())?;
    hold::yield_to_the_server();
    let cfg = TcpClientConfig::new(target)
        .map_err(|e| e.to_string())?
        .with_connect_timeout(Duration::from_secs(20));
    let mut c: TransportClient = TransportClientBuilder::new()
        .with_protocol(cfg)
        .connection_pool(n)
        .retry_strategy(RetryConfig::exponential_backoff(3, Duration::from_millis(200)))
        .build()
        .await
        .map_err(|e| e.to_string())?;
    c.connect().await.map_err(|e| e.to_string())?;
    let mut h = hold::histogram();
    hold::every_connection(&c, n, &mut h).await?;
    println!("opened {base}");
    println!("latency {}", hold::to_line(&h));
    let mut lines = BufReader::new(std::io::stdin()).lines();
    let mut next = move || lines.next().and_then(Result::ok).unwrap_or_default();
    let order = next();
    let mut words = order.split_whitespace().skip(1);
    let secs: u64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or(format!("bad order {order:?}"))?;
    let rate: f64 = words
        .next()
        .and_then(|w| w.parse().ok())
        .ok_or(format!("bad order {order:?}"))?;
    let mut held = hold::histogram();
    hold::trickle(&c, rate, Duration::from_secs(secs), &mut held).await?;
    println!("held {}", hold::to_line(&held));
    let mut end = hold::histogram();
    hold::every_connection(&c, n, &mut end).await?;
    println!("ended {}", hold::to_line(&end));
    if next().trim() != "close" {
        return Err("the driver went away".into());
    }
    c.stop().await;
    println!("closed");
    Ok(())
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some("--client") {
        let (target, n) = (
            argv.get(2).cloned().unwrap_or_default(),
            argv.get(3).and_then(|v| v.parse().ok()),
        );
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build();
        let r = match (rt, n) {
            (Ok(rt), Some(n)) => rt.block_on(client(&target, n)),
            (Err(e), _) => Err(e.to_string()),
            (_, None) => Err("--client TARGET N".into()),
        };
        return match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("client {target}: {e}");
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
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
