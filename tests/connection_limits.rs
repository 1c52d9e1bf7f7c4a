//! Connection limits hold in total and per shard: an extra connection is
//! closed at once, and a later one is admitted when a slot frees.

mod common;

use std::time::Duration;

use common::*;

/// Whether the server keeps `c` (echoes a packet) or closes it at once.
async fn admitted(c: &mut RawClient) -> bool {
    let p = one_way(5, 0, b"", b"am I in?".to_vec());
    c.send(&p).await;
    let mut back = Vec::new();
    // A refused connection is closed without a byte; an admitted one echoes.
    match within(GUARD, "echo or close", c.recv_or_eof()).await {
        Some(got) => {
            back.push(got);
            assert_eq!(back[0], p);
            true
        }
        None => false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_refuses_the_extra_one_and_admits_after_a_close() {
    let server = start_inline_echo(builder().max_connections(3)).await;
    let mut inside = Vec::new();
    for _ in 0..3 {
        let mut c = RawClient::connect(addr(&server)).await;
        assert!(admitted(&mut c).await);
        inside.push(c);
    }
    let mut extra = RawClient::connect(addr(&server)).await;
    assert!(!admitted(&mut extra).await, "a 4th connection got in");
    assert_eq!(server.session_count().await, 3);
    assert!(server.stats().iter().map(|s| s.refused).sum::<u64>() >= 1);

    drop(inside.pop());
    // The slot frees once the server has seen the close.
    within(GUARD, "slot frees", async {
        while server.session_count().await != 2 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    let mut later = RawClient::connect(addr(&server)).await;
    assert!(admitted(&mut later).await, "a connection after a close was refused");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_per_shard_holds_on_every_shard() {
    let server = start_inline_echo(builder().max_connections(100).max_connections_per_shard(1)).await;
    let mut inside = Vec::new();
    let mut refused = 0;
    // Connections land on shards by the kernel's hash; keep connecting until
    // both shards are full and a few more have been refused.
    for _ in 0..64 {
        let mut c = RawClient::connect(addr(&server)).await;
        if admitted(&mut c).await {
            inside.push(c);
        } else {
            refused += 1;
        }
        if inside.len() == SHARDS && refused >= 4 {
            break;
        }
    }
    assert_eq!(inside.len(), SHARDS, "exactly one session per shard");
    assert_eq!(server.sessions_per_shard(), vec![1; SHARDS]);
    assert!(refused >= 4);
    server.stop().await;
}
