//! A minimal client: connects, sends a one-way packet, makes a request and
//! prints the reply and the echo it gets back.

use std::process::ExitCode;
use std::time::Duration;

use msgtrans::event::ClientEvent;
use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::TransportClientBuilder;

const HELP: &str = "\
client: connect to a msgtrans server, send, request, print the replies

USAGE:
    client [OPTIONS]

OPTIONS:
    --tcp ADDR         server address                 [default: 127.0.0.1:8001]
    --message TEXT     payload to send and request    [default: hello]
    --pool N           connections to open, used in turn [default: 1]
    --shards N         client shards the pool spreads over [default: 1]
    --reconnect        reopen a dropped connection (jittered backoff)
    -h, --help         print this help
";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let mut addr = "127.0.0.1:8001".to_string();
    let mut message = "hello".to_string();
    let mut opts = Opts {
        pool: 1,
        shards: 1,
        reconnect: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        if a == "--reconnect" {
            opts.reconnect = true;
            continue;
        }
        match (a.as_str(), it.next()) {
            ("-h" | "--help", _) => {
                print!("{HELP}");
                return ExitCode::SUCCESS;
            }
            ("--tcp", Some(v)) => addr = v,
            ("--message", Some(v)) => message = v,
            ("--pool", Some(v)) if v.parse::<usize>().is_ok() => opts.pool = v.parse().unwrap_or(1),
            ("--shards", Some(v)) if v.parse::<usize>().is_ok() => opts.shards = v.parse().unwrap_or(1),
            (other, _) => {
                eprintln!("error: bad argument {other:?}\n\n{HELP}");
                return ExitCode::from(2);
            }
        }
    }
    match run(&addr, &message, &opts).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

struct Opts {
    pool: usize,
    shards: usize,
    reconnect: bool,
}

async fn run(addr: &str, message: &str, opts: &Opts) -> Result<(), Box<dyn std::error::Error>> {
    let mut client = TransportClientBuilder::new()
        .with_protocol(TcpClientConfig::new(addr)?.with_connect_timeout(Duration::from_secs(5)))
        .connection_pool(opts.pool)
        .shards(opts.shards)
        .auto_reconnect(opts.reconnect)
        .build()
        .await?;
    client.connect().await?;
    let mut events = client.subscribe_events();
    let sent = client.send(message.as_bytes()).await?;
    println!("sent one-way message id={}", sent.message_id);
    let reply = client.request(message.as_bytes()).await?;
    let data = reply.data.unwrap_or_default();
    println!(
        "request id={} reply={:?}",
        reply.message_id,
        String::from_utf8_lossy(&data)
    );
    let echo = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(ev) = events.next().await {
            if let ClientEvent::MessageReceived(ctx) = ev {
                return Some(ctx);
            }
        }
        None
    })
    .await;
    match echo {
        Ok(Some(ctx)) => println!("echo id={} payload={:?}", ctx.message_id, ctx.as_text_lossy()),
        _ => println!("no echo within 5 s"),
    }
    client.disconnect().await?;
    client.shutdown(Duration::from_secs(1)).await;
    Ok(())
}
