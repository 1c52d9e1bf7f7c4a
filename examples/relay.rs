//! A cluster node that routes messages between sessions, wherever they
//! are: the relay protocol below, served inline on the shards, across
//! every node of a cluster joined through NATS (or alone, without
//! `--cluster`).

use std::process::ExitCode;
use std::time::Duration;

use msgtrans::packet::{Packet, PacketType};
use msgtrans::protocol::{QuicServerConfig, TcpServerConfig, WebSocketServerConfig};
use msgtrans::transport::{TransportServer, TransportServerBuilder};
use msgtrans::{ClusterConfig, Inline, Responder, SessionHandler, SessionId, Undelivered};
use tokio::sync::mpsc;

const HELP: &str = "\
relay: a msgtrans cluster node that routes messages between sessions

USAGE:
    relay [OPTIONS]

OPTIONS:
    --tcp ADDR            TCP listen address          [default: 127.0.0.1:8101]
    --ws ADDR             WebSocket listen address (path /ws) [default: off]
    --quic ADDR           QUIC listen address (UDP; self-signed certificate,
                          written to a file printed at start) [default: off]
    --shards N            number of shards (0 = one per core) [default: 0]
    --no-pin              do not pin shards to cores
    --cluster URL[,URL..] join a cluster through these NATS servers (the
                          first reachable is used, the others are failover)
                          [default: serve alone]
    --node N              this node's number in the cluster, 1-255, unique
                          [default: 1]
    --cluster-name NAME   the cluster (letters, digits, '-', '_'); nodes of
                          one cluster share it    [default: msgtrans]
    --node-timeout MS     a node silent this long is taken for down and
                          what it had not confirmed is reported [default: 3000]
    --max-message BYTES   largest NATS message this node publishes (many
                          packets share one; a larger one is split)
                          [default: 16384, capped by the server's max_payload]
    --stats-every MS      print the cluster's counters every MS milliseconds
                          as a `cluster ...` line [default: off]
    -h, --help            print this help

PROTOCOL (msgtrans packets; ids are SessionIds, 8 bytes big-endian):
    biz 1  request   \"whoami\": answered with the caller's own id.
    biz 2  one-way   \"direct\": the ext header is the target's id. The target
                     gets the payload as a one-way biz 2 packet, same message
                     id, with the sender's id as its ext header.
    biz 3  one-way   \"broadcast\": every other session of the cluster gets the
                     payload as a one-way biz 3 packet with the sender's id as
                     its ext header.
    biz 4  request   \"ask\": the ext header is the target's id. The target gets
                     the payload as a request (biz 4, the asker's id as ext
                     header); its response's payload answers the ask.
    biz 255          a direct or ask that could not be delivered (no such
                     session, its node down, its queue full): for a direct, a
                     one-way packet with the same message id and the target's
                     id as ext header; for an ask, the response. The payload
                     says why. Any other biz type is answered the same way.
";

const WHOAMI: u8 = 1;
const DIRECT: u8 = 2;
const BROADCAST: u8 = 3;
const ASK: u8 = 4;
const UNDELIVERABLE: u8 = 255;

struct Args {
    tcp: String,
    ws: Option<String>,
    quic: Option<String>,
    shards: usize,
    pin: bool,
    cluster: Option<Vec<String>>,
    node: u8,
    cluster_name: String,
    node_timeout: Duration,
    stats_every: Option<Duration>,
    max_message: usize,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        tcp: "127.0.0.1:8101".into(),
        ws: None,
        quic: None,
        shards: 0,
        pin: true,
        cluster: None,
        node: 1,
        cluster_name: "msgtrans".into(),
        node_timeout: msgtrans::cluster::DEFAULT_NODE_TIMEOUT,
        stats_every: None,
        max_message: msgtrans::cluster::DEFAULT_MAX_MESSAGE,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--tcp" => a.tcp = value("--tcp")?,
            "--ws" => a.ws = Some(value("--ws")?),
            "--quic" => a.quic = Some(value("--quic")?),
            "--shards" => a.shards = value("--shards")?.parse().map_err(|e| format!("--shards: {e}"))?,
            "--no-pin" => a.pin = false,
            "--cluster" => a.cluster = Some(value("--cluster")?.split(',').map(str::to_string).collect()),
            "--node" => {
                a.node = value("--node")?
                    .parse()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or("--node: a number from 1 to 255")?
            }
            "--cluster-name" => a.cluster_name = value("--cluster-name")?,
            "--node-timeout" => {
                let ms: u64 = value("--node-timeout")?
                    .parse()
                    .map_err(|e| format!("--node-timeout: {e}"))?;
                a.node_timeout = Duration::from_millis(ms);
            }
            "--max-message" => {
                a.max_message = value("--max-message")?
                    .parse()
                    .map_err(|e| format!("--max-message: {e}"))?
            }
            "--stats-every" => {
                let ms: u64 = value("--stats-every")?
                    .parse()
                    .map_err(|e| format!("--stats-every: {e}"))?;
                a.stats_every = Some(Duration::from_millis(ms.max(1)));
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok(Some(a))
}

fn id_bytes(id: SessionId) -> [u8; 8] {
    id.as_u64().to_be_bytes()
}

/// The target named by an ext header, if it is 8 bytes.
fn target(ext: &[u8]) -> Option<SessionId> {
    Some(SessionId::new(u64::from_be_bytes(ext.try_into().ok()?)))
}

/// A packet for whoever is routed to: `payload`, biz `biz`, `from` as ext.
fn routed(kind: PacketType, message_id: u32, biz: u8, from: SessionId, payload: &[u8]) -> Packet {
    let mut p = Packet::new(kind, message_id);
    p.set_biz_type(biz);
    p.set_ext_header(id_bytes(from).to_vec());
    p.set_payload(payload.to_vec());
    p
}

/// An ask waiting for its target's answer, off the shard.
struct Ask {
    responder: Responder,
    target: SessionId,
    request: Packet,
}

struct Relay {
    asks: mpsc::UnboundedSender<Ask>,
}

impl Relay {
    /// Tells the session being served that its message `message_id` for
    /// `target` was not delivered.
    fn undeliverable(ctx: &mut Inline<'_>, target: &[u8], why: &str) {
        let mut h = ctx.header().clone();
        h.biz_type = UNDELIVERABLE;
        ctx.write(&h, target, why.as_bytes());
    }
}

impl SessionHandler for Relay {
    fn on_message(&self, ctx: &mut Inline<'_>) {
        let me = ctx.session_id();
        let message_id = ctx.header().message_id;
        match ctx.header().biz_type {
            DIRECT => {
                let Some(to) = target(ctx.ext_header()) else {
                    let ext = ctx.ext_header();
                    return Self::undeliverable(ctx, ext, "the ext header must be the target's 8-byte id");
                };
                let p = routed(PacketType::OneWay, message_id, DIRECT, me, ctx.payload());
                if let Err(e) = ctx.send_to(to, p) {
                    Self::undeliverable(ctx, &id_bytes(to), &e.to_string());
                }
            }
            BROADCAST => {
                let p = routed(PacketType::OneWay, message_id, BROADCAST, me, ctx.payload());
                ctx.broadcast_others(p);
            }
            _ => Self::undeliverable(ctx, &[], "unknown biz type"),
        }
    }

    fn on_request(&self, ctx: &mut Inline<'_>, responder: Responder) {
        match ctx.header().biz_type {
            WHOAMI => responder.respond_inline(ctx, &id_bytes(ctx.session_id())),
            ASK => match target(ctx.ext_header()) {
                Some(to) => {
                    let request = routed(PacketType::Request, 0, ASK, ctx.session_id(), ctx.payload());
                    let ask = Ask {
                        responder,
                        target: to,
                        request,
                    };
                    if let Err(mpsc::error::SendError(ask)) = self.asks.send(ask) {
                        ask.responder
                            .with_biz_type(UNDELIVERABLE)
                            .respond_inline(ctx, b"the relay is stopping");
                    }
                }
                None => responder
                    .with_biz_type(UNDELIVERABLE)
                    .respond_inline(ctx, b"the ext header must be the target's 8-byte id"),
            },
            _ => responder
                .with_biz_type(UNDELIVERABLE)
                .respond_inline(ctx, b"unknown biz type"),
        }
    }

    /// A direct that was accepted, then not delivered (its target closed,
    /// its queue was full, its node went down): its sender hears it.
    fn on_undelivered(&self, ctx: &mut Undelivered<'_>) {
        let p = ctx.packet();
        let origin = (p.header.biz_type == DIRECT && p.header.packet_type == PacketType::OneWay)
            .then(|| target(&p.ext_header))
            .flatten();
        match origin {
            Some(origin) => {
                let mut r = Packet::new(PacketType::OneWay, p.header.message_id);
                r.set_biz_type(UNDELIVERABLE);
                r.set_ext_header(id_bytes(ctx.target()).to_vec());
                r.set_payload(ctx.error().to_string().into_bytes());
                // The sender may be gone too: then there is no one to tell.
                let _ = ctx.send_to(origin, r);
            }
            None => ctx.report(),
        }
    }
}

/// Forwards asks to their targets, anywhere in the cluster, and answers
/// each asker with its target's response (or why there is none).
async fn serve_asks(server: TransportServer, mut asks: mpsc::UnboundedReceiver<Ask>) {
    while let Some(ask) = asks.recv().await {
        let server = server.clone();
        tokio::spawn(async move {
            let answer = server.request_to_session(ask.target, ask.request).await;
            let _ = match answer {
                Ok(response) => ask.responder.respond(response.payload),
                Err(e) => ask.responder.with_biz_type(UNDELIVERABLE).respond(e.to_string()),
            };
        });
    }
}

fn fail(e: impl std::fmt::Display) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
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
    let tcp = match TcpServerConfig::new(&args.tcp) {
        Ok(c) => c,
        Err(e) => return fail(e),
    };
    let (asks_tx, asks_rx) = mpsc::unbounded_channel();
    let mut builder = TransportServerBuilder::new()
        .with_protocol(tcp)
        .shards(args.shards)
        .pin_shards(args.pin)
        .session_handler(Relay { asks: asks_tx });
    if let Some(ws) = &args.ws {
        match WebSocketServerConfig::new(ws) {
            Ok(c) => builder = builder.with_protocol(c.with_path("/ws")),
            Err(e) => return fail(e),
        }
    }
    if let Some(quic) = &args.quic {
        match QuicServerConfig::new(quic) {
            Ok(c) => builder = builder.with_protocol(c),
            Err(e) => return fail(e),
        }
    }
    if let Some(urls) = &args.cluster {
        match ClusterConfig::new(&args.cluster_name, args.node, urls) {
            Ok(c) => {
                let c = c
                    .with_node_timeout(args.node_timeout)
                    .with_max_message(args.max_message);
                builder = builder.cluster(c)
            }
            Err(e) => return fail(e),
        }
    }
    let server = match builder.build().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(pem) = server.quic_certificate_pem() {
        let path = std::env::temp_dir().join(format!("msgtrans-relay-quic-{}.pem", std::process::id()));
        if let Err(e) = std::fs::write(&path, pem) {
            return fail(format!("{}: {e}", path.display()));
        }
        println!("quic certificate (trust it in clients): {}", path.display());
    }
    for (proto, addr) in server.local_addrs() {
        println!(
            "listening {proto} {addr} shards={} node={}",
            server.shards(),
            server.node()
        );
    }
    tokio::spawn(serve_asks(server.clone(), asks_rx));
    if let (Some(every), Some(stats)) = (args.stats_every, server.cluster_stats()) {
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                println!("cluster {stats}");
            }
        });
    }
    let stopper = server.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        stopper.stop().await;
    });
    let _ = server.serve().await;
    ExitCode::SUCCESS
}
