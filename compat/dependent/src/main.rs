//! A Tokio application that embeds msgtrans as any user's would: server and
//! client in one process, written against the MsgTrans 1.0 API, every reply
//! checked. Built by `run.sh` twice, with msgtrans's default features
//! (`full`) and with plain TCP only; it exits non-zero on any mismatch.

use std::process::ExitCode;
use std::time::Duration;

use msgtrans::event::{ClientEvent, ServerEvent};
use msgtrans::protocol::{TcpClientConfig, TcpServerConfig};
use msgtrans::transport::{TransportClientBuilder, TransportServer, TransportServerBuilder};

const HELP: &str = "\
msgtrans-dependent: msgtrans embedded in a Tokio application, checked

USAGE:
    msgtrans-dependent [OPTIONS]

OPTIONS:
    --requests N     requests per client [default: 100]
    -h, --help       print this help

Starts a server on loopback (any free port), connects a TCP client, makes
N requests and checks every reply, then has the server push a message and
checks the client receives it. Built with the `full` feature it repeats the
requests over WebSocket and sends a compressed request. Exits 1 on any
mismatch.
";

const WAIT: Duration = Duration::from_secs(10);

type Error = Box<dyn std::error::Error>;

#[tokio::main]
async fn main() -> ExitCode {
    let mut requests = 100usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("-h" | "--help", _) => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            ("--requests", Some(v)) if v.parse::<usize>().is_ok() => requests = v.parse().unwrap_or(100),
            (other, _) => {
                eprintln!("error: bad argument {other:?}\n\n{HELP}");
                return ExitCode::from(2);
            }
        }
    }
    match tokio::time::timeout(Duration::from_secs(60), run(requests)).await {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(_) => {
            eprintln!("error: not done within 60 s");
            ExitCode::FAILURE
        }
    }
}

async fn run(requests: usize) -> Result<(), Error> {
    let builder = TransportServerBuilder::new()
        .shards(1)
        .with_protocol(TcpServerConfig::new("127.0.0.1:0")?);
    #[cfg(feature = "full")]
    let builder = builder.with_protocol(msgtrans::WebSocketServerConfig::new("127.0.0.1:0")?.with_path("/ws"));
    let server = builder.build().await?;
    let tcp = server.tcp_addr().ok_or("the server has no TCP address")?;

    // The application's handler, a Tokio task on the event stream:
    // requests are answered in upper case, one-way messages echoed back.
    let mut events = server.subscribe_events();
    let handler = {
        let server = server.clone();
        tokio::spawn(async move {
            let mut answered = 0usize;
            while let Ok(ev) = events.recv().await {
                if let ServerEvent::MessageReceived { session_id, context } = ev {
                    if context.is_request() {
                        let shout = context.as_text_lossy().to_uppercase();
                        if context.respond(shout.into_bytes()).is_ok() {
                            answered += 1;
                        }
                    } else {
                        let _ = server.send(session_id, &context.data).await;
                    }
                }
            }
            answered
        })
    };

    let asked = tcp_round(tcp, requests).await?;
    println!("tcp: {requests} requests answered, push received");
    let asked = asked + more_rounds(&server, requests).await?;

    server.shutdown(Duration::from_secs(2)).await;
    let answered = handler.await?;
    if answered != asked {
        return Err(format!("the server answered {answered} requests, the clients asked {asked}").into());
    }
    println!("ok: {answered} requests, msgtrans features: {}", features());
    Ok(())
}

/// `n` requests over TCP, then a one-way message the server echoes back
/// as a push. Returns the requests made.
async fn tcp_round(addr: std::net::SocketAddr, n: usize) -> Result<usize, Error> {
    let mut client = TransportClientBuilder::new()
        .with_protocol(TcpClientConfig::new(&addr.to_string())?)
        .build()
        .await?;
    client.connect().await?;
    let mut events = client.subscribe_events();
    for i in 0..n {
        let word = format!("word-{i}");
        let reply = client.request(word.as_bytes()).await?;
        expect(&reply.data, &word.to_uppercase())?;
    }
    client.send(b"pushed back").await?;
    let push = tokio::time::timeout(WAIT, async {
        while let Some(ev) = events.next().await {
            if let ClientEvent::MessageReceived(ctx) = ev {
                return Some(ctx.data.clone());
            }
        }
        None
    })
    .await
    .map_err(|_| "no push within 10 s")?
    .ok_or("the client's events ended before the push")?;
    if &push[..] != b"pushed back" {
        return Err(format!("push came back as {push:?}").into());
    }
    client.disconnect().await?;
    client.shutdown(Duration::from_secs(1)).await;
    Ok(n)
}

/// What the default features add: `n` requests over WebSocket and one
/// compressed request. Returns the requests made.
#[cfg(feature = "full")]
async fn more_rounds(server: &TransportServer, n: usize) -> Result<usize, Error> {
    let tcp = server.tcp_addr().ok_or("the server has no TCP address")?;
    let asked = full::websocket_round(server, n).await?;
    println!("websocket: {n} requests answered");
    let asked = asked + full::compressed_request(tcp).await?;
    println!("compression: a zstd request answered");
    Ok(asked)
}

/// Plain TCP only: the transports and compression are not built, so
/// there is nothing more to ask.
#[cfg(not(feature = "full"))]
async fn more_rounds(_server: &TransportServer, _n: usize) -> Result<usize, Error> {
    Ok(0)
}

fn expect(data: &Option<impl AsRef<[u8]>>, want: &str) -> Result<(), Error> {
    let got = data.as_ref().map(|d| String::from_utf8_lossy(d.as_ref()).into_owned());
    if got.as_deref() != Some(want) {
        return Err(format!("expected {want:?}, got {got:?}").into());
    }
    Ok(())
}

fn features() -> &'static str {
    if cfg!(feature = "full") {
        "default"
    } else {
        "none (plain TCP)"
    }
}

#[cfg(feature = "full")]
mod full {
    //! What the default features add: WebSocket and compression.

    use super::{expect, Error, TransportServer};
    use msgtrans::transport::{TransportClientBuilder, TransportOptions};
    use msgtrans::{CompressionType, WebSocketClientConfig};

    pub async fn websocket_round(server: &TransportServer, n: usize) -> Result<usize, Error> {
        let addr = server.ws_addr().ok_or("the server has no WebSocket address")?;
        let mut client = TransportClientBuilder::new()
            .with_protocol(WebSocketClientConfig::new(&format!("ws://{addr}/ws"))?)
            .build()
            .await?;
        client.connect().await?;
        for i in 0..n {
            let word = format!("ws-{i}");
            let reply = client.request(word.as_bytes()).await?;
            expect(&reply.data, &word.to_uppercase())?;
        }
        client.disconnect().await?;
        client.shutdown(std::time::Duration::from_secs(1)).await;
        Ok(n)
    }

    /// A request big enough to be compressed (over the 256-byte threshold).
    pub async fn compressed_request(addr: std::net::SocketAddr) -> Result<usize, Error> {
        let mut client = TransportClientBuilder::new()
            .with_protocol(msgtrans::TcpClientConfig::new(&addr.to_string())?)
            .build()
            .await?;
        client.connect().await?;
        let text = "compress me ".repeat(64);
        let options = TransportOptions::new().with_compression(CompressionType::Zstd);
        let reply = client.request_with_options(text.clone().into(), options).await?;
        expect(&Some(reply), &text.to_uppercase())?;
        client.disconnect().await?;
        client.shutdown(std::time::Duration::from_secs(1)).await;
        Ok(1)
    }
}
