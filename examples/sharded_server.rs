//! The sharded echo server: every one-way packet comes back as a one-way
//! packet with the same payload, biz type, extension header and
//! compression; every request is answered with a response carrying its id
//! and payload, compressed as the request was.
//!
//! By default the echo runs inline on the shards (the fast path);
//! `--events` serves the same echo from a Tokio task through the event
//! stream and `send`, so both paths can be measured.

use std::process::ExitCode;

use msgtrans::event::ServerEvent;
use msgtrans::packet::{Packet, PacketType};
use msgtrans::protocol::{QuicServerConfig, TcpServerConfig, WebSocketServerConfig};
use msgtrans::transport::TransportServerBuilder;
use msgtrans::{Inline, TlsServerConfig};

const HELP: &str = "\
sharded_server: msgtrans echo server on a thread-per-core engine

USAGE:
    sharded_server [OPTIONS]

OPTIONS:
    --tcp ADDR       TCP listen address            [default: 127.0.0.1:8001]
    --ws ADDR        WebSocket listen address      [default: 127.0.0.1:8002]
    --ws-path PATH   WebSocket path to upgrade     [default: /ws]
    --no-ws          no WebSocket listener
    --quic ADDR      QUIC listen address (UDP)     [default: 127.0.0.1:8003]
    --no-quic        no QUIC listener
    --tls-cert PEM   serve TLS on every listener (tcp+tls, wss) with this
                     certificate chain...
    --tls-key PEM    ...and this private key
    --self-signed    serve TLS with a fresh self-signed certificate for
                     localhost/127.0.0.1 (its PEM is written to a file,
                     printed at start, for clients to trust)
                     QUIC always has TLS: with none of these it gets its
                     own self-signed certificate, written out the same way
    --shards N       number of shards (0 = one per core) [default: 0]
    --max-connections N   open sessions allowed in total  [default: 10000]
    --max-connections-per-ip N
                     connections one client address may hold at once,
                     handshakes included; more are closed at once
                     [default: no cap]
    --max-connects-per-ip-per-sec N
                     connections one client address may open per second
                     [default: no limit]
    --ws-allowed-origin ORIGIN
                     browser pages from ORIGIN (e.g. https://app.example)
                     may open WebSocket sessions; repeatable. Once given,
                     other origins get 403 [default: any origin]
    --client-ca PEM  require client certificates chained to the CA(s) in
                     this file (mutual TLS) on tcp+tls, wss and QUIC;
                     needs --self-signed or --tls-cert/--tls-key
    --auth-token TOKEN
                     every WebSocket upgrade must carry TOKEN, as
                     `Authorization: Bearer TOKEN` or `?token=TOKEN`;
                     otherwise 401 [default: none]
    --events         echo through the Tokio event stream instead of the
                     inline on-shard handler
    --no-pin         do not pin shards to cores
    --read-buffer BYTES  bytes each session reads at a time, held to
                     4096..=262144           [default: 65536]
    --shared-port    join other sharded_server processes on the same TCP
                     and WebSocket ports (SO_REUSEPORT) instead of refusing
                     a port in use: several processes serve one port, each
                     under its own open-files cap (QUIC ports stay single)
    --tcp-ring       serve plain TCP and WebSocket on each shard's own
                     io_uring instead of the shard's epoll (opt-in:
                     cheaper for small messages under load, dearer
                     at 1 KiB and up and at 1 x 1; see
                     docs/perf-notes.md)
    --no-epoll       wait for TCP and WebSocket sockets with glommio's
                     streams (a ring poll per short read) instead of the
                     shard's epoll instance, to compare
    --metrics ADDR   serve /metrics (Prometheus), /stats.json and a live
                     dashboard at / on ADDR, e.g. 127.0.0.1:9100 [default: off]
    -h, --help       print this help
";

struct Args {
    max_connections: usize,
    max_connections_per_ip: Option<usize>,
    max_connects_per_ip_per_sec: Option<u32>,
    ws_allowed_origins: Vec<String>,
    auth_token: Option<String>,
    client_ca: Option<String>,
    tcp: String,
    tls_cert: Option<String>,
    tls_key: Option<String>,
    self_signed: bool,
    ws: Option<String>,
    ws_path: String,
    quic: Option<String>,
    shards: usize,
    events: bool,
    pin: bool,
    tcp_ring: bool,
    no_epoll: bool,
    shared_port: bool,
    read_buffer: Option<usize>,
    metrics: Option<std::net::SocketAddr>,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        max_connections: 10_000,
        max_connections_per_ip: None,
        max_connects_per_ip_per_sec: None,
        ws_allowed_origins: Vec::new(),
        auth_token: None,
        client_ca: None,
        tcp: "127.0.0.1:8001".into(),
        tls_cert: None,
        tls_key: None,
        self_signed: false,
        ws: Some("127.0.0.1:8002".into()),
        ws_path: "/ws".into(),
        quic: Some("127.0.0.1:8003".into()),
        shards: 0,
        events: false,
        pin: true,
        tcp_ring: false,
        no_epoll: false,
        shared_port: false,
        read_buffer: None,
        metrics: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--tcp" => a.tcp = value("--tcp")?,
            "--ws" => a.ws = Some(value("--ws")?),
            "--ws-path" => a.ws_path = value("--ws-path")?,
            "--no-ws" => a.ws = None,
            "--quic" => a.quic = Some(value("--quic")?),
            "--no-quic" => a.quic = None,
            "--tls-cert" => a.tls_cert = Some(value("--tls-cert")?),
            "--tls-key" => a.tls_key = Some(value("--tls-key")?),
            "--self-signed" => a.self_signed = true,
            "--shards" => a.shards = value("--shards")?.parse().map_err(|e| format!("--shards: {e}"))?,
            "--events" => a.events = true,
            "--max-connections" => {
                a.max_connections = value("--max-connections")?
                    .parse()
                    .map_err(|e| format!("--max-connections: {e}"))?
            }
            "--max-connections-per-ip" => {
                let v = value("--max-connections-per-ip")?;
                a.max_connections_per_ip = Some(v.parse().map_err(|e| format!("--max-connections-per-ip: {e}"))?)
            }
            "--max-connects-per-ip-per-sec" => {
                let v = value("--max-connects-per-ip-per-sec")?;
                let n = v.parse().map_err(|e| format!("--max-connects-per-ip-per-sec: {e}"))?;
                a.max_connects_per_ip_per_sec = Some(n)
            }
            "--ws-allowed-origin" => a.ws_allowed_origins.push(value("--ws-allowed-origin")?),
            "--auth-token" => a.auth_token = Some(value("--auth-token")?),
            "--client-ca" => a.client_ca = Some(value("--client-ca")?),
            "--no-pin" => a.pin = false,
            "--tcp-ring" => a.tcp_ring = true,
            "--no-epoll" => a.no_epoll = true,
            "--shared-port" => a.shared_port = true,
            "--read-buffer" => {
                let v = value("--read-buffer")?;
                a.read_buffer = Some(v.parse().map_err(|e| format!("--read-buffer: {e}"))?)
            }
            "--metrics" => a.metrics = Some(value("--metrics")?.parse().map_err(|e| format!("--metrics: {e}"))?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(a))
}

/// The inline echo: runs on the shard, writes into the session's batch.
fn echo(ctx: &mut Inline<'_>) {
    let payload = ctx.payload();
    if ctx.is_request() {
        ctx.respond(payload);
    } else {
        let (header, ext) = (ctx.header(), ctx.ext_header());
        ctx.write(header, ext, payload);
    }
}

/// The TLS setting the flags ask for, if any.
fn tls_config(args: &Args) -> Result<Option<TlsServerConfig>, String> {
    let tls = server_certificate(args)?;
    match (tls, &args.client_ca) {
        (tls, None) => Ok(tls),
        (Some(tls), Some(ca)) => tls.with_client_ca_file(ca).map(Some).map_err(|e| e.to_string()),
        (None, Some(_)) => Err("--client-ca needs a server certificate: --self-signed or --tls-cert/--tls-key".into()),
    }
}

fn server_certificate(args: &Args) -> Result<Option<TlsServerConfig>, String> {
    match (&args.tls_cert, &args.tls_key, args.self_signed) {
        (None, None, false) => Ok(None),
        (Some(cert), Some(key), false) => TlsServerConfig::from_pem_files(cert, key)
            .map(Some)
            .map_err(|e| e.to_string()),
        (None, None, true) => {
            let (tls, pem) = TlsServerConfig::self_signed(&["localhost", "127.0.0.1"]).map_err(|e| e.to_string())?;
            write_certificate("self-signed", &pem)?;
            Ok(Some(tls))
        }
        (_, _, true) => Err("--self-signed cannot be combined with --tls-cert/--tls-key".into()),
        _ => Err("--tls-cert and --tls-key go together".into()),
    }
}

/// Writes a certificate clients must trust to a file and says where.
fn write_certificate(what: &str, pem: &str) -> Result<(), String> {
    let path = std::env::temp_dir().join(format!("msgtrans-{what}-{}.pem", std::process::id()));
    std::fs::write(&path, pem).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("{what} certificate (trust it in clients): {}", path.display());
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
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
    let tls = match tls_config(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let tcp = match TcpServerConfig::new(&args.tcp) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let tcp = match &tls {
        Some(t) => tcp.with_tls(t.clone()),
        None => tcp,
    };
    let mut builder = TransportServerBuilder::new().with_protocol(tcp);
    if let Some(ws) = &args.ws {
        match WebSocketServerConfig::new(ws) {
            Ok(c) => {
                let mut c = c.with_path(args.ws_path.clone());
                for origin in &args.ws_allowed_origins {
                    c = c.with_allowed_origin(origin.clone());
                }
                if let Some(token) = &args.auth_token {
                    c = c.with_auth_token(token.clone());
                }
                builder = builder.with_protocol(match &tls {
                    Some(t) => c.with_tls(t.clone()),
                    None => c,
                })
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(quic) = &args.quic {
        match QuicServerConfig::new(quic) {
            Ok(c) => {
                builder = builder.with_protocol(match &tls {
                    Some(t) => c.with_tls(t.clone()),
                    None => c,
                })
            }
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    if let Some(n) = args.max_connections_per_ip {
        builder = builder.max_connections_per_ip(n);
    }
    if let Some(n) = args.max_connects_per_ip_per_sec {
        builder = builder.max_connects_per_ip_per_sec(n);
    }
    let mut builder = builder
        .max_connections(args.max_connections)
        .shards(args.shards)
        .pin_shards(args.pin)
        .tcp_ring(args.tcp_ring)
        .tcp_epoll(!args.no_epoll)
        .shared_port(args.shared_port);
    if let Some(n) = args.read_buffer {
        builder = builder.read_buffer(n);
    }
    if !args.events {
        builder = builder.handler(echo);
    }
    if let Some(addr) = args.metrics {
        builder = builder.metrics(addr);
    }
    let server = match builder.build().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(pem) = server.quic_certificate_pem() {
        if let Err(e) = write_certificate("quic", pem) {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    for (proto, addr) in server.local_addrs() {
        println!(
            "listening {proto} {addr} shards={} path={}",
            server.shards(),
            if args.events { "events" } else { "inline" }
        );
    }
    if let Some(addr) = server.metrics_addr() {
        println!("metrics http://{addr}/metrics dashboard http://{addr}/");
    }
    let stopper = server.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.stop().await;
    });
    if args.events {
        let mut events = server.subscribe_events();
        while let Ok(ev) = events.recv().await {
            if let ServerEvent::MessageReceived { session_id, context } = ev {
                if context.is_request() {
                    let data = context.data.clone();
                    let _ = context.respond(data);
                } else {
                    let mut p = Packet::new(PacketType::OneWay, context.message_id);
                    p.set_biz_type(context.biz_type);
                    p.set_compression(context.compression());
                    if let Some(ext) = context.ext_header {
                        p.set_ext_header(ext);
                    }
                    p.set_payload(context.data);
                    let _ = server.send_to_session(session_id, p).await;
                }
            }
        }
    } else {
        let _ = server.serve().await;
    }
    ExitCode::SUCCESS
}
