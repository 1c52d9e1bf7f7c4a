//! An inline handler that panics stops the process at once and loudly
//! (abort, with the reason on stderr), instead of leaving a shard dead
//! behind a server that still accepts, holds sessions nobody serves and
//! never finishes `stop()` (what happened before). The server runs in a
//! child process: this test binary again, told by an environment variable
//! to play the server.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::{one_way, read_packet_from, wire, within, GUARD};
use msgtrans::protocol::TcpServerConfig;
use msgtrans::transport::TransportServerBuilder;
use msgtrans::Inline;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

const CHILD: &str = "MSGTRANS_PANIC_CHILD";
const NAME: &str = "an_inline_handler_that_panics_stops_the_process_loudly";

/// The child: a server whose handler echoes, and panics on "boom"; one
/// client is served, another sends "boom". Reaching the end means the
/// panic did not stop the process.
async fn child() {
    let server = TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap())
        .shards(2)
        .pin_shards(false)
        .handler(|ctx: &mut Inline<'_>| {
            if ctx.payload() == b"boom" {
                panic!("the handler's own bug");
            }
            let (h, p) = (ctx.header().clone(), ctx.payload().to_vec());
            ctx.write(&h, &[], &p);
        })
        .build()
        .await
        .unwrap();
    let addr = server.tcp_addr().unwrap();
    let mut a = TcpStream::connect(addr).await.unwrap();
    let mut buf = BytesMut::new();
    a.write_all(&wire(&one_way(1, 0, &[], "hi"))).await.unwrap();
    let p = within(GUARD, "an echo", read_packet_from(&mut a, &mut buf))
        .await
        .unwrap();
    assert_eq!(p.unwrap().payload.as_ref(), b"hi");
    eprintln!("child: served");
    let mut b = TcpStream::connect(addr).await.unwrap();
    b.write_all(&wire(&one_way(2, 0, &[], "boom"))).await.unwrap();
    tokio::time::sleep(Duration::from_secs(10)).await;
    eprintln!("child: still running");
}

#[test]
fn an_inline_handler_that_panics_stops_the_process_loudly() {
    if std::env::var_os(CHILD).is_some() {
        tokio::runtime::Runtime::new().unwrap().block_on(child());
        return;
    }
    let started = Instant::now();
    let out = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", NAME, "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("child: served"), "the child never served:\n{err}");
    assert!(
        !err.contains("child: still running"),
        "the panic did not stop the process:\n{err}"
    );
    assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{:?}\n{err}", out.status);
    assert!(
        err.contains("the handler's own bug"),
        "the panic itself is printed:\n{err}"
    );
    assert!(err.contains("msgtrans: shard") && err.contains("panicked"), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(9),
        "it stopped at once, not at the end"
    );
}
