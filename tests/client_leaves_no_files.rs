//! A client that is started, used and stopped leaves no open file behind:
//! an application may make and drop clients for as long as it runs. Each
//! one used to leave its shard's eventfd open (glommio kept it alive from
//! every task header, upstream #448; the fork now keeps the executor's id
//! there instead). Alone in its test binary, since it counts the whole
//! process's open files.

mod common;

use common::*;
use msgtrans::protocol::TcpClientConfig;
use msgtrans::transport::TransportClientBuilder;

fn open_files() -> usize {
    std::fs::read_dir("/proc/self/fd").expect("/proc/self/fd").count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_started_and_stopped_leave_no_open_files() {
    let server = start_inline_echo(builder()).await;
    let target = addr(&server).to_string();
    let mut after = Vec::new();
    for round in 0..6u8 {
        let mut c = within(
            GUARD,
            "client build",
            TransportClientBuilder::new()
                .with_protocol(TcpClientConfig::new(&target).unwrap())
                .shards(2)
                .build(),
        )
        .await
        .expect("client build");
        within(GUARD, "connect", c.connect()).await.expect("connect");
        let r = within(GUARD, "request", c.request(&[round])).await.expect("request");
        assert_eq!(r.data.as_deref(), Some(&[round][..]));
        c.stop().await;
        drop(c);
        // The server closes its side of the session as the client goes.
        within(GUARD, "server session gone", async {
            while server.session_count().await > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
        .await;
        after.push(open_files());
    }
    // The first round may start things that stay (tokio's blocking pool);
    // after it, every round must end where the one before it did.
    assert!(
        after[1..].iter().all(|&n| n == after[1]),
        "open files after each client: {after:?}"
    );
    server.stop().await;
}
