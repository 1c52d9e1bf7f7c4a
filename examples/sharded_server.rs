//! The sharded echo server: every one-way packet comes back as a one-way
//! packet with the same payload, biz type and extension header; every
//! request is answered with a response carrying its id and payload.
//!
//! By default the echo runs inline on the shards (the fast path);
//! `--events` serves the same echo from a Tokio task through the event
//! stream and `send`, so both paths can be measured.

use std::process::ExitCode;

use msgtrans::event::ServerEvent;
use msgtrans::packet::{Packet, PacketType};
use msgtrans::protocol::{TcpServerConfig, WebSocketServerConfig};
use msgtrans::transport::TransportServerBuilder;
use msgtrans::Inline;

const HELP: &str = "\
sharded_server: msgtrans echo server on a thread-per-core engine

USAGE:
    sharded_server [OPTIONS]

OPTIONS:
    --tcp ADDR       TCP listen address            [default: 127.0.0.1:8001]
    --ws ADDR        WebSocket listen address      [default: 127.0.0.1:8002]
    --ws-path PATH   WebSocket path to upgrade     [default: /ws]
    --no-ws          no WebSocket listener
    --shards N       number of shards (0 = one per core) [default: 0]
    --events         echo through the Tokio event stream instead of the
                     inline on-shard handler
    --no-pin         do not pin shards to cores
    -h, --help       print this help
";

struct Args {
    tcp: String,
    ws: Option<String>,
    ws_path: String,
    shards: usize,
    events: bool,
    pin: bool,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        tcp: "127.0.0.1:8001".into(),
        ws: Some("127.0.0.1:8002".into()),
        ws_path: "/ws".into(),
        shards: 0,
        events: false,
        pin: true,
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
            "--shards" => a.shards = value("--shards")?.parse().map_err(|e| format!("--shards: {e}"))?,
            "--events" => a.events = true,
            "--no-pin" => a.pin = false,
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
        let header = ctx.header().clone();
        let ext = ctx.ext_header();
        ctx.write(&header, ext, payload);
    }
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
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let mut builder = TransportServerBuilder::new().with_protocol(tcp);
    if let Some(ws) = &args.ws {
        match WebSocketServerConfig::new(ws) {
            Ok(c) => builder = builder.with_protocol(c.with_path(args.ws_path.clone())),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let mut builder = builder.shards(args.shards).pin_shards(args.pin);
    if !args.events {
        builder = builder.handler(echo);
    }
    let server = match builder.build().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for (proto, addr) in server.local_addrs() {
        println!(
            "listening {proto} {addr} shards={} path={}",
            server.shards(),
            if args.events { "events" } else { "inline" }
        );
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
