//! The WebSocket peer: what a user who does not take msgtrans writes for a
//! WebSocket echo, tokio-tungstenite on a tokio `current_thread` runtime per
//! thread (optionally under tokio-rustls), written as a competent user
//! would: every message that is already readable is fed to the sink, and
//! the sink is flushed once when nothing more is ready, so a batch of
//! messages leaves in one write.
//!
//! `--read-buffer` exists because tungstenite's default 128 KiB read buffer
//! is zero-filled before every read; a tuned user sets it to 16 KiB. The
//! benchmark runs both. Requests (packet type 1) go back as responses (2),
//! as msgtrans answers them.

mod common;

use std::sync::Arc;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

const HELP: &str = "\
baseline_tungstenite: tokio-tungstenite echo, the WebSocket peer of msgtrans

USAGE:
    baseline_tungstenite [--addr ADDR] [--shards N] [--read-buffer BYTES] [--tls]

OPTIONS:
    --addr ADDR           listen address            [default: 127.0.0.1:8002]
    --shards N            threads, each a current_thread runtime with its own
                          SO_REUSEPORT listener     [default: 1]
    --read-buffer BYTES   tungstenite's read buffer [default: its own, 128 KiB]
    --tls                 serve WSS (tokio-rustls) with a fresh self-signed
                          certificate; prints the file clients must trust
    -h, --help            print this help
";

struct Args {
    addr: String,
    shards: usize,
    read_buffer: Option<usize>,
    tls: bool,
}

fn parse() -> Result<Args, String> {
    let mut a = Args {
        addr: "127.0.0.1:8002".into(),
        shards: 1,
        read_buffer: None,
        tls: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--tls" => a.tls = true,
            "--addr" => a.addr = value("--addr")?,
            "--shards" => a.shards = value("--shards")?.parse().map_err(|e| format!("--shards: {e}"))?,
            "--read-buffer" => {
                let n = value("--read-buffer")?
                    .parse()
                    .map_err(|e| format!("--read-buffer: {e}"))?;
                a.read_buffer = Some(n);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    a.shards = a.shards.max(1);
    Ok(a)
}

/// A self-signed certificate for localhost and 127.0.0.1, written where
/// clients can read it.
fn tls_acceptor() -> Result<tokio_rustls::TlsAcceptor, String> {
    let config = common::self_signed_server_config("baseline-tungstenite", false)?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// The answer to one message: the packet back, a request as its response.
fn answer(m: Message) -> Option<Message> {
    match m {
        Message::Binary(b) if b.len() > 2 && b[2] == common::REQUEST => {
            let mut v = b.to_vec();
            v[2] = common::RESPONSE;
            Some(Message::Binary(v.into()))
        }
        Message::Binary(_) | Message::Text(_) => Some(m),
        // tungstenite answers pings itself (on the next write or flush).
        _ => None,
    }
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(stream: S, config: WebSocketConfig) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(stream, Some(config)).await else {
        return;
    };
    // `next` ends (None) once the peer's close has been answered: tungstenite
    // queues the reply itself and writes it on the read after the Close, so
    // a Close needs no case of its own here.
    while let Some(Ok(mut m)) = ws.next().await {
        loop {
            if let Some(reply) = answer(m) {
                if ws.feed(reply).await.is_err() {
                    return;
                }
            }
            // Whatever else is already decoded or readable joins the batch.
            match ws.next().now_or_never() {
                Some(Some(Ok(next))) => m = next,
                // Closed or broken: what was fed still goes out if it can.
                Some(Some(Err(_)) | None) => {
                    let _ = ws.flush().await;
                    return;
                }
                None => break,
            }
        }
        // One flush for the whole batch, which leaves in one write.
        if ws.flush().await.is_err() {
            return;
        }
    }
}

fn main() {
    let args = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let acceptor = if args.tls {
        match tls_acceptor() {
            Ok(a) => Some(a),
            Err(e) => {
                eprintln!("error: {e}");
                std::process::exit(1);
            }
        }
    } else {
        None
    };
    // Only the read buffer is worth tuning: tungstenite zero-fills up to
    // read_buffer_size before each read. write_buffer_size stays at its
    // 128 KiB default: nothing fills it, it is only how much `feed` gathers
    // before writing early, and a larger batch is what we want.
    let mut config = WebSocketConfig::default();
    if let Some(n) = args.read_buffer {
        config = config.read_buffer_size(n);
    }
    let threads: Vec<_> = (0..args.shards)
        .map(|_| {
            let std_listener = common::reuseport_listener(&args.addr);
            let acceptor = acceptor.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    std_listener.set_nonblocking(true).unwrap();
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    loop {
                        let Ok((s, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        match acceptor.clone() {
                            Some(tls) => {
                                tokio::spawn(async move {
                                    if let Ok(s) = tls.accept(s).await {
                                        echo(s, config).await;
                                    }
                                });
                            }
                            None => {
                                tokio::spawn(echo(s, config));
                            }
                        }
                    }
                })
            })
        })
        .collect();
    let (what, path) = if args.tls {
        ("wss", "baseline_tungstenite_tls")
    } else {
        ("websocket", "baseline_tungstenite")
    };
    println!("listening {what} {} shards={} path={path}", args.addr, args.shards);
    for t in threads {
        let _ = t.join();
    }
}
