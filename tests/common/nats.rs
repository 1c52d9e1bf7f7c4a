//! A real NATS cluster (Debian's `nats-server`, three processes routed to
//! each other on 127.0.0.1) and `examples/relay` nodes joined through it,
//! as child processes the tests can kill, stop and resume.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port free now on 127.0.0.1 (the kernel's pick; closed again at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `nats-server`, or a panic that says how to get it.
fn nats_server() -> PathBuf {
    for p in [
        "/usr/bin/nats-server",
        "/usr/sbin/nats-server",
        "/usr/local/bin/nats-server",
    ] {
        if std::path::Path::new(p).exists() {
            return p.into();
        }
    }
    panic!("nats-server is not installed: run ./scripts/setup-peers.sh (apt-get install nats-server)");
}

struct Server {
    port: u16,
    child: Option<Child>,
}

/// Three (or `n`) NATS servers routed to each other.
pub struct NatsCluster {
    servers: Vec<Server>,
    pub dir: PathBuf,
}

impl NatsCluster {
    pub fn start(n: usize) -> Self {
        let dir = std::env::temp_dir().join(format!("msgtrans-nats-{}-{}", std::process::id(), free_port()));
        std::fs::create_dir_all(&dir).unwrap();
        // Every port picked while the others are still held, so that no two
        // are the same.
        let held: Vec<TcpListener> = (0..3 * n).map(|_| TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let port = |i: usize| held[i].local_addr().unwrap().port();
        let ports: Vec<(u16, u16, u16)> = (0..n)
            .map(|i| (port(3 * i), port(3 * i + 1), port(3 * i + 2)))
            .collect();
        drop(held);
        let mut servers = Vec::new();
        for (i, (port, route, monitor)) in ports.iter().enumerate() {
            let routes: Vec<String> = ports
                .iter()
                .enumerate()
                .filter(|(j, _)| *j != i)
                .map(|(_, (_, r, _))| format!("nats://127.0.0.1:{r}"))
                .collect();
            let child = Command::new(nats_server())
                .args(["-a", "127.0.0.1", "-n", &format!("n{i}")])
                .args(["-p", &port.to_string(), "-m", &monitor.to_string()])
                .args(["--cluster", &format!("nats://127.0.0.1:{route}")])
                .args(["--routes", &routes.join(",")])
                .args(["--cluster_name", "msgtrans-test"])
                .args(["-l", dir.join(format!("n{i}.log")).to_str().unwrap()])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("start nats-server");
            servers.push(Server {
                port: *port,
                child: Some(child),
            });
        }
        let cluster = Self { servers, dir };
        // Routed to every other server before any client relies on it.
        let deadline = Instant::now() + Duration::from_secs(20);
        for (_, _, monitor) in &ports {
            let want = format!("\"num_routes\": {}", n - 1);
            loop {
                if http_get(*monitor, "/routez").is_some_and(|b| b.contains(&want)) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "NATS routes never formed; logs in {:?}",
                    cluster.dir
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        cluster
    }

    /// Server `i`'s client URL.
    pub fn url(&self, i: usize) -> String {
        format!("nats://127.0.0.1:{}", self.servers[i].port)
    }

    /// Every server's URL, server `first`'s first (a node's own server).
    pub fn urls_from(&self, first: usize) -> String {
        let n = self.servers.len();
        (0..n).map(|k| self.url((first + k) % n)).collect::<Vec<_>>().join(",")
    }

    /// Kills server `i` (SIGKILL): its clients fail over.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        for i in 0..self.servers.len() {
            self.kill(i);
        }
        // Kept when a test failed: the servers' logs say why.
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

fn http_get(port: u16, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The relay example, built beside this test (`cargo test --all-targets
/// --features cluster` builds examples too).
/// One `examples/relay` process.
pub struct Relay {
    child: Option<Child>,
    pub addr: SocketAddr,
    pub node: u8,
    stats: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Relay {
    /// Node `node` with these extra flags; returns once it listens (it has
    /// joined the cluster by then).
    pub fn start(node: u8, extra: &[&str]) -> Self {
        let mut child = Command::new(super::example_binary("relay"))
            .args([
                "--tcp",
                "127.0.0.1:0",
                "--shards",
                "2",
                "--no-pin",
                "--node",
                &node.to_string(),
            ])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start relay");
        let out = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let stats = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let last = std::sync::Arc::clone(&stats);
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Some(rest) = line.strip_prefix("listening tcp ") {
                    let addr = rest.split_whitespace().next().unwrap_or_default().to_string();
                    let _ = tx.send(addr);
                } else if let Some(rest) = line.strip_prefix("cluster ") {
                    *last.lock().unwrap() = rest.to_string();
                }
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("relay node {node} did not start"));
        Self {
            child: Some(child),
            addr: addr.parse().unwrap(),
            node,
            stats,
        }
    }

    /// Its latest `cluster ...` line.
    pub fn stats_line(&self) -> String {
        self.stats.lock().unwrap().clone()
    }

    /// A counter from its latest `cluster ...` line (with `--stats-every`).
    pub fn stat(&self, name: &str) -> u64 {
        let line = self.stats.lock().unwrap().clone();
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn signal(&self, sig: i32) {
        // Never kill(0, ..): that signals this whole process group, every
        // other test's relays included.
        if let Some(c) = &self.child {
            // SAFETY: kill(2) on our own, not yet reaped, child.
            unsafe {
                libc::kill(c.id() as i32, sig);
            }
        }
    }

    /// SIGKILL, no goodbye: its peers find out by its silence.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGSTOP: alive, reading nothing.
    pub fn pause(&self) {
        self.signal(libc::SIGSTOP);
    }

    /// SIGCONT.
    pub fn resume(&self) {
        self.signal(libc::SIGCONT);
    }

    /// Its resident memory, in KiB (0 once killed).
    pub fn resident_kib(&self) -> u64 {
        if self.child.is_none() {
            return 0;
        }
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find(|l| l.starts_with("VmRSS:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.resume();
        self.kill();
    }
}
