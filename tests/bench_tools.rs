//! The benchmark tools answer for what they measure: `load --request`
//! counts only answers to requests it has outstanding, the per-protocol
//! peers (tokio-tungstenite, the same over tokio-rustls, quinn) serve the
//! load generator on both workloads, and `compare.py` sets each protocol
//! against its peer and runs the per-core scaling on any machine. The
//! example programs are the ones `scripts/test.sh` builds before the tests.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

fn example(name: &str) -> PathBuf {
    common::example_binary(name)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A server process, killed when dropped; `cert` is the certificate it
/// said to trust, if any.
struct Server {
    child: Child,
    cert: Option<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `name` with `args` and waits for its line starting with `ready`.
fn start(name: &str, args: &[&str], ready: &str) -> Server {
    let child = Command::new(example(name))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    // Owned at once, so that a failed wait below still kills it.
    let mut server = Server { child, cert: None };
    let out = server.child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{name} printed no {ready:?} line within 30 s"));
        if let Some((_, path)) = line.split_once("(trust it in clients): ") {
            server.cert = Some(path.trim().to_string());
        }
        if line.starts_with(ready) {
            // Keep draining so the server never blocks on a full pipe.
            std::thread::spawn(move || while rx.recv().is_ok() {});
            return server;
        }
    }
}

/// Runs `load` with `args` (plus a short run and `--json`).
fn load(args: &[&str]) -> (Output, Option<serde_json::Value>) {
    let out = Command::new(example("load"))
        .args(args)
        .args(["-d", "0.5", "-w", "0.2", "--json"])
        .output()
        .unwrap();
    let json = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap());
    (out, json)
}

/// `load` succeeded, counted messages and saw no error.
fn served(what: &str, args: &[&str]) -> serde_json::Value {
    let (out, json) = load(args);
    let json = json.unwrap_or_else(|| panic!("{what}: no JSON; stderr: {}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        out.status.success() && json["errors"] == 0 && json["msgs"].as_u64() > Some(0),
        "{what}: {json}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    json
}

#[test]
fn load_requests_are_answered_by_msgtrans_inline_and_event_path_and_by_baseline_1() {
    for (name, extra) in [("sharded_server", &[][..]), ("sharded_server", &["--events"][..])] {
        let port = free_port().to_string();
        let addr = format!("127.0.0.1:{port}");
        let mut args = vec!["--tcp", &addr, "--no-ws", "--no-quic", "--shards", "1", "--no-pin"];
        args.extend_from_slice(extra);
        let _s = start(name, &args, "listening tcp ");
        let json = served(
            &format!("{name} {extra:?}"),
            &["--addr", &addr, "-c", "4", "-p", "8", "--request"],
        );
        assert_eq!(json["request"], true);
    }
    let addr = format!("127.0.0.1:{}", free_port());
    let _s = start("baseline_tokio", &["--addr", &addr], "listening tcp ");
    served("baseline_tokio", &["--addr", &addr, "-c", "4", "-p", "8", "--request"]);
    served("baseline_tokio", &["--addr", &addr, "-c", "4", "-p", "8"]);
}

/// A server that answers each request with a response, but with `skew`
/// added to its id.
fn skewed_server(skew: u32) -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut p = [0u8; 16 + 64];
                while s.read_exact(&mut p).is_ok() {
                    p[2] = 2;
                    let id = u32::from_be_bytes(p[4..8].try_into().unwrap()).wrapping_add(skew);
                    p[4..8].copy_from_slice(&id.to_be_bytes());
                    if s.write_all(&p).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

#[test]
fn load_refuses_an_answer_to_a_request_it_never_sent() {
    let addr = skewed_server(0);
    served(
        "a correct answerer",
        &["--addr", &addr, "-c", "1", "-p", "4", "--request"],
    );
    let addr = skewed_server(1000);
    let (out, json) = load(&["--addr", &addr, "-c", "1", "-p", "4", "--request"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "load accepted wrong ids: {json:?}");
    assert!(err.contains("not outstanding"), "{err}");
    // One-way packets answered with responses are not echoes either.
    let (out, _) = load(&["--addr", &addr, "-c", "1", "-p", "4"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("sent one-way"));
    let _ = TcpStream::connect(&addr);
}

#[test]
fn the_protocol_peers_serve_the_load_one_way_and_request_response() {
    let cases: [(&str, &[&str], &str, &str); 4] = [
        ("baseline_tungstenite", &[], "listening websocket ", "ws"),
        (
            "baseline_tungstenite",
            &["--read-buffer", "16384"],
            "listening websocket ",
            "ws",
        ),
        (
            "baseline_tungstenite",
            &["--read-buffer", "16384", "--tls"],
            "listening wss ",
            "wss",
        ),
        ("baseline_quinn", &[], "listening quic ", "quic"),
    ];
    for (name, extra, ready, proto) in cases {
        let addr = format!("127.0.0.1:{}", free_port());
        let mut args = vec!["--addr", &addr];
        args.extend_from_slice(extra);
        let s = start(name, &args, ready);
        let mut common = vec!["--proto", proto, "--addr", &addr, "-c", "4", "-p", "4"];
        if let Some(cert) = &s.cert {
            common.extend_from_slice(&["--ca", cert]);
        }
        let what = format!("{name} {extra:?}");
        served(&what, &common);
        let mut req = common.clone();
        req.push("--request");
        served(&format!("{what} requests"), &req);
        let mut big = common.clone();
        big.extend_from_slice(&["-s", "65536", "-c", "2", "-p", "2"]);
        served(&format!("{what} 64 KiB"), &big);
    }
}

fn compare(args: &[&str]) -> (bool, String, PathBuf) {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out_dir = std::env::temp_dir().join(format!("msgtrans-compare-{}-{}", std::process::id(), free_port()));
    let bins = example("load").parent().unwrap().to_path_buf();
    let out = Command::new("python3")
        .arg(root.join("scripts/compare.py"))
        .args(["--bin-dir", bins.to_str().unwrap(), "--out", out_dir.to_str().unwrap()])
        .args([
            "--no-history",
            "--no-pin",
            "--rounds",
            "1",
            "--duration",
            "0.5",
            "--warmup",
            "0.2",
        ])
        .args(args)
        .output()
        .unwrap();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text, out_dir)
}

#[test]
fn compare_sets_each_protocol_against_its_peer_and_requests_against_echoes() {
    let (ok, text, dir) = compare(&[
        "--servers",
        "baseline_tokio,msgtrans_inline,msgtrans_ws,baseline_tungstenite_16k,msgtrans_quic,baseline_quinn",
        "--workloads",
        "64B-4x4,64B-4x4-req",
        "--sweep",
        "",
    ]);
    assert!(ok, "{text}");
    let table = std::fs::read_to_string(dir.join("table.md")).unwrap();
    for row in [
        "| **msgtrans_ws** | 1 | 64B-4x4 | baseline_tungstenite_16k |",
        "| **msgtrans_quic** | 1 | 64B-4x4 | baseline_quinn |",
        "| **msgtrans_inline** | 1 | 64B-4x4-req | baseline_tokio |",
        "| msgtrans_inline | 1 | 64B-4x4-req ÷ 64B-4x4 |",
    ] {
        assert!(table.contains(row), "no row {row:?} in\n{table}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn compare_scaling_runs_the_points_this_machine_has_and_says_why_it_stops() {
    let nproc = std::thread::available_parallelism().map_or(1, |n| n.get());
    let (ok, text, dir) = compare(&["--scaling"]);
    if nproc < 2 {
        assert!(!ok && text.contains("needs 2"), "{text}");
        return;
    }
    assert!(ok, "{text}");
    let table = std::fs::read_to_string(dir.join("scaling.md")).unwrap();
    for name in ["msgtrans_inline", "baseline_tokio", "baseline_tokio_mt"] {
        assert!(
            table.contains(&format!("| {name} | 1 |")),
            "no 1-core row for {name}:\n{table}"
        );
    }
    assert!(table.contains(&format!("This machine has {nproc} cores")), "{table}");
    assert!(dir.join("scaling.svg").exists());
    let _ = std::fs::remove_dir_all(dir);
}

/// Runs `cmd` to its end like `Command::output`, but kills it and fails
/// the test if it takes longer than `limit`: a scale run that hangs (a
/// connection that never answers, a close that never arrives) must fail
/// here, not stall the suite.
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still ran after {limit:?}; it printed: {}\nstderr: {}",
                String::from_utf8_lossy(&out.join().unwrap()),
                String::from_utf8_lossy(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

/// The connection-scale runs at a small scale: every connection answers at
/// open and after the hold, every close reaches the server, and TCP is
/// served by two `sharded_server --shared-port` processes on one port.
#[test]
fn the_scale_runs_hold_connections_and_count_every_close() {
    let runs: [(&str, &[&str]); 2] = [
        (
            "tcp_scale",
            &[
                "-n",
                "60",
                "--servers",
                "2",
                "--clients",
                "2",
                "--hold",
                "1",
                "--rate",
                "40",
            ],
        ),
        (
            "quic_scale",
            &["-n", "40", "--clients", "2", "--hold", "1", "--rate", "40"],
        ),
    ];
    for (name, args) in runs {
        let out = output_within(Command::new(example(name)).args(args), Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{name}: {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        for want in ["opened", "a request on each at the end of the hold", "closed"] {
            assert!(stdout.contains(want), "{name} did not report {want:?}: {stdout}");
        }
        // The rate it reports is the one it made, not the one asked for.
        let made: f64 = stdout
            .split_once("requests per second and made ")
            .and_then(|(_, rest)| rest.split(':').next())
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{name} reported no rate made: {stdout}"));
        assert!(
            made > 0.0 && made <= 40.0 * 1.5,
            "{name} made {made} requests per second of 40"
        );
    }
    // A wrong argument is a usage error, not a run: a tool that cannot do
    // what it is asked says so before it opens anything.
    let bad: [(&str, &[&str]); 5] = [
        ("tcp_scale", &["--servers", "0"]),
        ("tcp_scale", &["-n", "3", "--clients", "4"]),
        ("tcp_scale", &["--rate", "1e12"]),
        ("quic_scale", &["-n", "3", "--clients", "4"]),
        ("quic_scale", &["--rate", "NaN"]),
    ];
    for (name, args) in bad {
        let out = output_within(Command::new(example(name)).args(args), Duration::from_secs(30));
        assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {out:?}");
    }
}
