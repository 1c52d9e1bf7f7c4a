//! Shared bits of the baseline servers: argument parsing, frame scanning
//! and the CPUs to pin to.
#![allow(dead_code)]

/// Parses `--addr ADDR` and `--shards N` (and `--help`) for a baseline.
pub fn args(name: &str, about: &str) -> (String, usize) {
    let help = format!(
        "{name}: {about}\n\nUSAGE:\n    {name} [--addr ADDR] [--shards N]\n\nOPTIONS:\n    --addr ADDR   listen address  [default: 127.0.0.1:8001]\n    --shards N    threads, each with its own SO_REUSEPORT listener [default: 1]\n    -h, --help    print this help\n"
    );
    let mut addr = "127.0.0.1:8001".to_string();
    let mut shards = 1;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("-h" | "--help", _) => {
                print!("{help}");
                std::process::exit(0);
            }
            ("--addr", Some(v)) => addr = v,
            ("--shards", Some(v)) => shards = v.parse().unwrap_or(1),
            (other, _) => {
                eprintln!("error: bad argument {other:?}\n\n{help}");
                std::process::exit(2);
            }
        }
    }
    (addr, shards.max(1))
}

/// Length of the complete frames at the start of `buf` (MsgTrans header:
/// ext_header_len at 8..10, payload_len at 10..14).
pub fn complete_frames(buf: &[u8]) -> usize {
    let mut off = 0;
    while buf.len() - off >= 16 {
        let h = &buf[off..];
        let ext = u16::from_be_bytes([h[8], h[9]]) as usize;
        let payload = u32::from_be_bytes([h[10], h[11], h[12], h[13]]) as usize;
        let len = 16 + ext + payload;
        if buf.len() - off < len {
            break;
        }
        off += len;
    }
    off
}

/// Like [`complete_frames`], and answers each request among them in place:
/// its packet type (header byte 2) becomes Response, its id and payload
/// stay, which is all a request echo server owes its client.
pub fn answer_complete_frames(buf: &mut [u8]) -> usize {
    let mut off = 0;
    while buf.len() - off >= 16 {
        let h = &mut buf[off..];
        let ext = u16::from_be_bytes([h[8], h[9]]) as usize;
        let payload = u32::from_be_bytes([h[10], h[11], h[12], h[13]]) as usize;
        let len = 16 + ext + payload;
        if h.len() < len {
            break;
        }
        if h[2] == REQUEST {
            h[2] = RESPONSE;
        }
        off += len;
    }
    off
}

/// Packet types (header byte 2).
pub const REQUEST: u8 = 1;
pub const RESPONSE: u8 = 2;

/// Baseline 1's connection loop: read a batch, write its complete frames
/// back with one write (requests answered), keep the partial rest.
pub async fn tokio_echo(mut s: tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let _ = s.set_nodelay(true);
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    loop {
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match s.read(&mut buf[have..]).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        have += n;
        let done = answer_complete_frames(&mut buf[..have]);
        if done > 0 {
            if s.write_all(&buf[..done]).await.is_err() {
                return;
            }
            buf.copy_within(done..have, 0);
            have -= done;
        }
    }
}

/// A rustls server config with a fresh self-signed certificate for
/// localhost and 127.0.0.1, whose PEM is written to a file named after
/// `name` and the pid, and announced with the line `compare.py` and the
/// tests look for. `tls13_only` for QUIC, which runs nothing older.
pub fn self_signed_server_config(name: &str, tls13_only: bool) -> Result<rustls::ServerConfig, String> {
    use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".into(), "127.0.0.1".into()])
        .map_err(|e| format!("certificate: {e}"))?;
    let path = std::env::temp_dir().join(format!("msgtrans-{name}-{}.pem", std::process::id()));
    std::fs::write(&path, cert.cert.pem()).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("certificate (trust it in clients): {}", path.display());
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(cert.signing_key.serialize_der()));
    let builder =
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()));
    let builder = if tls13_only {
        builder.with_protocol_versions(&[&rustls::version::TLS13])
    } else {
        builder.with_safe_default_protocol_versions()
    };
    builder
        .map_err(|e| e.to_string())?
        .with_no_client_auth()
        .with_single_cert(vec![cert.cert.der().clone()], key)
        .map_err(|e| format!("certificate: {e}"))
}

/// A std listener with SO_REUSEPORT, for one shard of a baseline.
pub fn reuseport_listener(addr: &str) -> std::net::TcpListener {
    use socket2::{Domain, Socket, Type};
    let addr: std::net::SocketAddr = addr.parse().expect("address");
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, None).expect("socket");
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&addr.into()).expect("bind");
    s.listen(1024).unwrap();
    s.into()
}

/// The CPUs this process may run on, so `taskset -c 0` confines shard 0
/// to cpu0.
pub fn allowed_cpus() -> Vec<usize> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set, of the size passed.
    let mut set = unsafe { std::mem::zeroed::<libc::cpu_set_t>() };
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0 {
        return Vec::new();
    }
    (0..libc::CPU_SETSIZE as usize)
        .filter(|c| unsafe { libc::CPU_ISSET(*c, &set) })
        .collect()
}
