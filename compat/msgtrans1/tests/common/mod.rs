//! Helpers shared by the compat tests: our `sharded_server` example as a
//! child process, and a hand-rolled std-only WebSocket peer used as the
//! reference ("what does the server really send?") when a published client
//! and the server disagree.
//!
//! std only (no msgtrans, no tokio), so the 2.0 compat package
//! (compat/msgtrans2) includes this very file with
//! `#[path = "../../msgtrans1/tests/common/mod.rs"] mod common;`.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, OnceLock};
use std::time::Duration;

/// Generous bound for anything that waits on the network (the machine is
/// shared with other builds); it only turns a hang into a failure.
pub const WAIT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------
// Our server, as a child process.
// ---------------------------------------------------------------------------

/// /work/main (both compat packages sit two levels below it).
pub fn workspace_root() -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    root.canonicalize().unwrap_or(root)
}

/// Path of the `sharded_server` example binary, built once per test process.
pub fn server_binary() -> &'static PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("MSGTRANS_SHARDED_SERVER") {
            // Relative paths are taken from the workspace root (tests run in
            // their package's directory).
            let p = workspace_root().join(p);
            assert!(p.is_file(), "MSGTRANS_SHARDED_SERVER={} is not a file", p.display());
            return p;
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let out = Command::new(cargo)
            .current_dir(workspace_root())
            .args([
                "build",
                "--example",
                "sharded_server",
                "--message-format=json-render-diagnostics",
            ])
            .stderr(Stdio::inherit())
            .output()
            .expect("run cargo build --example sharded_server");
        assert!(out.status.success(), "cargo build --example sharded_server failed");
        // Pick the artifact's "executable" out of cargo's JSON messages.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let exe = stdout
            .lines()
            .filter(|l| l.contains(r#""reason":"compiler-artifact""#) && l.contains(r#""name":"sharded_server""#))
            .find_map(|l| {
                let start = l.find(r#""executable":""#)? + r#""executable":""#.len();
                let end = start + l[start..].find('"')?;
                Some(PathBuf::from(&l[start..end]))
            })
            .expect("cargo reported no sharded_server executable");
        assert!(exe.is_file(), "{} missing after build", exe.display());
        exe
    })
}

/// How to start the server.
#[derive(Debug, Clone, Copy, Default)]
pub struct Opts {
    /// `--events`: echo from a Tokio task via the event stream.
    pub events: bool,
    /// Also listen for WebSocket (`--ws 127.0.0.1:0`, path `/ws`).
    pub ws: bool,
    /// `--self-signed`: TLS on every listener (tcp+tls, wss).
    pub tls: bool,
    /// Also listen for QUIC (`--quic 127.0.0.1:0`); otherwise `--no-quic`.
    pub quic: bool,
}

/// The running example; killed (and reaped) on drop, also when a test panics.
pub struct Server {
    child: Child,
    /// The TCP (or tcp+tls) listener.
    pub addr: SocketAddr,
    /// The WebSocket (or wss) listener, when started with `ws`.
    pub ws: Option<SocketAddr>,
    /// The self-signed certificate's PEM, when started with `tls`.
    pub cert_pem: Option<String>,
    /// The QUIC listener, when started with `quic`.
    pub quic: Option<SocketAddr>,
    /// The QUIC listener's own self-signed certificate (without `tls`).
    pub quic_cert_pem: Option<String>,
}

impl Server {
    /// TCP only (`--no-ws`), inline echo or `--events`.
    pub fn start(events: bool) -> Server {
        Server::start_with(Opts {
            events,
            ..Opts::default()
        })
    }

    /// TCP and WebSocket (`/ws`), inline echo or `--events`.
    pub fn start_tcp_ws(events: bool) -> Server {
        Server::start_with(Opts {
            events,
            ws: true,
            ..Opts::default()
        })
    }

    pub fn start_with(opts: Opts) -> Server {
        let mut cmd = Command::new(server_binary());
        // Two shards whatever the machine, so the kernel's SO_REUSEPORT spread
        // is in play; no pinning, the CI box is shared.
        cmd.args(["--tcp", "127.0.0.1:0", "--shards", "2", "--no-pin"]);
        if opts.ws {
            cmd.args(["--ws", "127.0.0.1:0", "--ws-path", "/ws"]);
        } else {
            cmd.arg("--no-ws");
        }
        if opts.quic {
            cmd.args(["--quic", "127.0.0.1:0"]);
        } else {
            cmd.arg("--no-quic");
        }
        if opts.events {
            cmd.arg("--events");
        }
        if opts.tls {
            cmd.arg("--self-signed");
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn sharded_server");
        // Read stdout on a thread (and keep draining it), so a quiet or chatty
        // server can neither hang the test nor block on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel::<String>();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut server = Server {
            child,
            addr: ([0, 0, 0, 0], 0).into(),
            ws: None,
            cert_pem: None,
            quic: None,
            quic_cert_pem: None,
        };
        let want_path = if opts.events { "events" } else { "inline" };
        let (tcp_name, ws_name) = if opts.tls {
            ("tcp+tls", "wss")
        } else {
            ("tcp", "websocket")
        };
        let mut have_tcp = false;
        while !(have_tcp && (server.ws.is_some() || !opts.ws) && (server.quic.is_some() || !opts.quic)) {
            let line = match rx.recv_timeout(WAIT) {
                Ok(l) => l,
                Err(e) => panic!(
                    "sharded_server printed no `listening` line ({e:?}); exit: {:?}",
                    server.child.try_wait()
                ),
            };
            // self-signed certificate (trust it in clients): /tmp/....pem
            if let Some(path) = line.strip_prefix("self-signed certificate (trust it in clients): ") {
                let pem = std::fs::read_to_string(path.trim()).expect("read the self-signed PEM");
                let _ = std::fs::remove_file(path.trim());
                server.cert_pem = Some(pem);
                continue;
            }
            if let Some(path) = line.strip_prefix("quic certificate (trust it in clients): ") {
                let pem = std::fs::read_to_string(path.trim()).expect("read the QUIC certificate");
                let _ = std::fs::remove_file(path.trim());
                server.quic_cert_pem = Some(pem);
                continue;
            }
            // listening tcp 127.0.0.1:PORT shards=2 path=inline
            // listening websocket 127.0.0.1:PORT shards=2 path=inline
            let mut words = line.split_whitespace();
            if words.next() != Some("listening") {
                continue;
            }
            let proto = words.next().unwrap_or_default();
            let addr: SocketAddr = words
                .next()
                .and_then(|a| a.parse().ok())
                .unwrap_or_else(|| panic!("bad address in {line:?}"));
            assert!(line.contains(&format!("path={want_path}")), "unexpected mode: {line:?}");
            assert_ne!(addr.port(), 0, "{line:?}");
            if proto == tcp_name {
                server.addr = addr;
                have_tcp = true;
            } else if proto == ws_name && opts.ws {
                server.ws = Some(addr);
            } else if proto == "quic" && opts.quic {
                server.quic = Some(addr);
            } else {
                panic!("unexpected listener {line:?} for {opts:?}");
            }
        }
        assert!(
            !opts.tls || server.cert_pem.is_some(),
            "no self-signed certificate line"
        );
        server
    }

    /// The QUIC listener's address (panics if started without one).
    pub fn quic_addr(&self) -> SocketAddr {
        self.quic.expect("server started without --quic")
    }

    /// The WebSocket listener's address (panics if started without one).
    pub fn ws_addr(&self) -> SocketAddr {
        self.ws.expect("server started without --ws")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Distinct, size-varied payloads (0..~2.5 KiB) so frames of many lengths
/// are coalesced and split on both sides.
pub fn payload(tag: &str, i: usize) -> Vec<u8> {
    let mut p = format!("{tag}-{i:04}|").into_bytes();
    p.extend((0..(i * 97) % 2500).map(|k| (k * 31 + i) as u8));
    p
}

// ---------------------------------------------------------------------------
// MsgTrans frames, built by hand.
// ---------------------------------------------------------------------------

/// One MsgTrans frame: 16-byte big-endian header, ext header, payload.
pub fn frame(kind: u8, biz: u8, id: u32, ext: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut f = vec![1, 0, kind, biz];
    f.extend(id.to_be_bytes());
    f.extend((ext.len() as u16).to_be_bytes());
    f.extend((payload.len() as u32).to_be_bytes());
    f.extend(0u16.to_be_bytes());
    f.extend(ext);
    f.extend(payload);
    f
}

/// (header, ext header, payload) of one whole frame held in `buf`;
/// panics if `buf` is not exactly one frame.
pub fn split_frame(buf: &[u8]) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    assert!(buf.len() >= 16, "short frame: {} bytes", buf.len());
    let ext_len = u16::from_be_bytes([buf[8], buf[9]]) as usize;
    let len = u32::from_be_bytes([buf[10], buf[11], buf[12], buf[13]]) as usize;
    assert_eq!(buf.len(), 16 + ext_len + len, "frame length vs header");
    (
        buf[..16].to_vec(),
        buf[16..16 + ext_len].to_vec(),
        buf[16 + ext_len..].to_vec(),
    )
}

// ---------------------------------------------------------------------------
// A std-only WebSocket client (RFC 6455), no library code involved.
// ---------------------------------------------------------------------------

/// The RFC 6455 sample key and its accept value (RFC 6455 §1.3).
const WS_KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const WS_ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

pub struct RawWs {
    s: TcpStream,
    /// The 101 response's header lines, lower-cased names: ("name", "value").
    pub headers: Vec<(String, String)>,
}

impl RawWs {
    /// Plain `ws://` upgrade of `path`, offering `subprotocol` if given;
    /// panics unless the answer is `101` with the right accept key.
    pub fn connect(addr: SocketAddr, path: &str, subprotocol: Option<&str>) -> RawWs {
        let mut s = TcpStream::connect(addr).expect("raw ws connect");
        s.set_read_timeout(Some(WAIT)).unwrap();
        s.set_nodelay(true).unwrap();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: {WS_KEY}\r\nSec-WebSocket-Version: 13\r\n"
        );
        if let Some(p) = subprotocol {
            req.push_str(&format!("Sec-WebSocket-Protocol: {p}\r\n"));
        }
        req.push_str("\r\n");
        s.write_all(req.as_bytes()).unwrap();
        // Read the response head byte by byte, so no frame byte is consumed.
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut b = [0u8; 1];
            s.read_exact(&mut b).expect("read the upgrade response");
            head.push(b[0]);
            assert!(head.len() < 8192, "upgrade response too long");
        }
        let head = String::from_utf8(head).expect("upgrade response is not UTF-8");
        let mut lines = head.split("\r\n");
        let status = lines.next().unwrap_or_default();
        assert!(status.starts_with("HTTP/1.1 101"), "upgrade refused: {head:?}");
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
            .collect();
        let ws = RawWs { s, headers };
        assert_eq!(ws.header("sec-websocket-accept"), Some(WS_ACCEPT), "{head:?}");
        ws
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// One masked, final frame.
    pub fn send(&mut self, opcode: u8, data: &[u8]) {
        let mask = [0x37u8, 0xfa, 0x21, 0x3d];
        let mut f = vec![0x80 | opcode];
        match data.len() {
            n if n < 126 => f.push(0x80 | n as u8),
            n if n <= 0xffff => {
                f.push(0x80 | 126);
                f.extend((n as u16).to_be_bytes());
            }
            n => {
                f.push(0x80 | 127);
                f.extend((n as u64).to_be_bytes());
            }
        }
        f.extend(mask);
        f.extend(data.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.s.write_all(&f).unwrap();
    }

    /// The next whole message (opcode, payload), reassembling fragments and
    /// answering pings; the server must not mask.
    pub fn recv(&mut self) -> (u8, Vec<u8>) {
        let mut opcode = None;
        let mut msg = Vec::new();
        loop {
            let mut h = [0u8; 2];
            self.s.read_exact(&mut h).expect("read ws frame header");
            let fin = h[0] & 0x80 != 0;
            let op = h[0] & 0x0f;
            assert_eq!(h[0] & 0x70, 0, "RSV bits set (no extension was negotiated)");
            assert_eq!(h[1] & 0x80, 0, "server frames must not be masked");
            let len = match h[1] & 0x7f {
                126 => {
                    let mut b = [0u8; 2];
                    self.s.read_exact(&mut b).unwrap();
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.s.read_exact(&mut b).unwrap();
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut data = vec![0u8; len];
            self.s.read_exact(&mut data).expect("read ws frame payload");
            match op {
                OP_PING => self.send(OP_PONG, &data),
                OP_PONG => {}
                OP_CLOSE => return (OP_CLOSE, data),
                0 => {
                    assert!(opcode.is_some(), "continuation without a start");
                    msg.extend(data);
                    if fin {
                        return (opcode.unwrap(), msg);
                    }
                }
                _ => {
                    assert!(opcode.is_none(), "new message inside a fragmented one");
                    if fin {
                        return (op, data);
                    }
                    opcode = Some(op);
                    msg = data;
                }
            }
        }
    }

    /// The next message, which must be binary and hold exactly one frame.
    pub fn recv_frame(&mut self) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
        let (op, data) = self.recv();
        assert_eq!(op, OP_BINARY, "expected a binary message, got opcode {op}");
        split_frame(&data)
    }
}
