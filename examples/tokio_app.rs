//! msgtrans inside an ordinary Tokio application: the server's events are
//! handled by a Tokio task, requests are made from many Tokio tasks at
//! once, Tokio timers bound them, and the server shuts down gracefully.
//! The shards run on their own threads; nothing here blocks the runtime.

use std::process::ExitCode;
use std::time::Duration;

use msgtrans::event::ServerEvent;
use msgtrans::protocol::{TcpClientConfig, TcpServerConfig};
use msgtrans::transport::{TransportClientBuilder, TransportServerBuilder};

const HELP: &str = "\
tokio_app: a msgtrans server and client inside one Tokio application

USAGE:
    tokio_app [OPTIONS]

OPTIONS:
    --addr ADDR      TCP address for the server [default: 127.0.0.1:0, any free port]
    --tasks N        Tokio tasks making requests at once [default: 8]
    -h, --help       print this help

Each task asks the server to shout a word; the server answers from a Tokio
task that reads its event stream.
";

#[tokio::main]
async fn main() -> ExitCode {
    let mut addr = "127.0.0.1:0".to_string();
    let mut tasks = 8usize;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        match (a.as_str(), it.next()) {
            ("-h" | "--help", _) => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            ("--addr", Some(v)) => addr = v,
            ("--tasks", Some(v)) if v.parse::<usize>().is_ok_and(|n| n > 0) => tasks = v.parse().unwrap_or(8),
            (other, _) => {
                eprintln!("error: bad argument {other:?}\n\n{HELP}");
                return ExitCode::from(2);
            }
        }
    }
    match run(&addr, tasks).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(addr: &str, tasks: usize) -> Result<(), Box<dyn std::error::Error>> {
    let server = TransportServerBuilder::new()
        .shards(1)
        .with_protocol(TcpServerConfig::new(addr)?)
        .build()
        .await?;
    let addr = server.tcp_addr().ok_or("no TCP address")?;
    println!("server on {addr}");

    // The application's handler: a Tokio task reading the event stream.
    let mut events = server.subscribe_events();
    let handler = tokio::spawn(async move {
        let mut answered = 0u64;
        while let Ok(ev) = events.recv().await {
            if let ServerEvent::MessageReceived { context, .. } = ev {
                if context.is_request() {
                    let shout = context.as_text_lossy().to_uppercase();
                    if context.respond(shout.into_bytes()).is_ok() {
                        answered += 1;
                    }
                }
            }
        }
        answered
    });

    let mut client = TransportClientBuilder::new()
        .with_protocol(TcpClientConfig::new(&addr.to_string())?)
        .build()
        .await?;
    client.connect().await?;
    let client = std::sync::Arc::new(client);

    // Many Tokio tasks share one client; each request is bounded by a Tokio
    // timer as well as by the client's own request timeout.
    let words = [
        "tokio", "shards", "batches", "rings", "frames", "queues", "timers", "tasks",
    ];
    let mut asks = Vec::new();
    for i in 0..tasks {
        let client = std::sync::Arc::clone(&client);
        let word = words[i % words.len()].to_string();
        asks.push(tokio::spawn(async move {
            let r = tokio::time::timeout(Duration::from_secs(5), client.request(word.as_bytes())).await;
            (word, r)
        }));
    }
    for ask in asks {
        let (word, r) = ask.await?;
        let r = r.map_err(|_| format!("{word}: no answer within 5 s"))??;
        let text = String::from_utf8_lossy(r.data.as_deref().unwrap_or_default()).into_owned();
        println!("{word} -> {text}");
        if text != word.to_uppercase() {
            return Err(format!("{word} came back as {text:?}").into());
        }
    }

    client.stop().await;
    // Graceful: stop accepting, let anything in flight finish, then close.
    server.shutdown(Duration::from_secs(2)).await;
    let answered = handler.await?;
    println!("answered {answered} requests; server stopped");
    Ok(())
}
