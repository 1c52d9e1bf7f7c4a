//! Every shard runs on its own thread named `msgtrans-shard-K`, the inline
//! handler of a session runs on the thread of the shard that owns it, and
//! stopping the server ends those threads.

use std::io::{Read, Write};
use std::sync::{Arc, Mutex};

use msgtrans::protocol::TcpServerConfig;
use msgtrans::transport::TransportServerBuilder;
use msgtrans::Inline;

/// Threads of this process whose OS name starts with `msgtrans-shard`
/// (Linux keeps 15 bytes of a thread name, so the index is cut off there;
/// Rust's own name, checked below, is whole).
fn os_shard_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with("msgtrans-shard")))
        .count()
}

fn one_way(payload: &[u8]) -> Vec<u8> {
    let mut v = vec![1, 0, 0, 0, 0, 0, 0, 1, 0, 0];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

#[tokio::test(flavor = "multi_thread")]
async fn handlers_run_on_their_shards_named_thread_and_threads_end_on_stop() {
    let seen: Arc<Mutex<Vec<(usize, String)>>> = Arc::default();
    let log = Arc::clone(&seen);
    let server = TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap())
        .shards(2)
        .pin_shards(false)
        .handler(move |ctx: &mut Inline<'_>| {
            let name = std::thread::current().name().unwrap_or("").to_string();
            log.lock().unwrap().push((ctx.session_id().shard(), name));
            let p = ctx.payload();
            let h = ctx.header().clone();
            ctx.write(&h, &[], p);
        })
        .build()
        .await
        .unwrap();
    assert_eq!(server.shards(), 2);
    assert!(os_shard_threads() >= 2);
    let addr = server.tcp_addr().unwrap();
    // Connect until both shards have served a message (the kernel spreads
    // SO_REUSEPORT connections by hash).
    let mut clients = Vec::new();
    for _ in 0..64 {
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        c.write_all(&one_way(b"ping")).unwrap();
        let mut back = [0u8; 20];
        c.read_exact(&mut back).unwrap();
        clients.push(c);
        let shards: std::collections::HashSet<_> = seen.lock().unwrap().iter().map(|(s, _)| *s).collect();
        if shards.len() == 2 {
            break;
        }
    }
    for (shard, name) in seen.lock().unwrap().iter() {
        assert_eq!(name, &format!("msgtrans-shard-{shard}"));
    }
    assert_eq!(
        seen.lock()
            .unwrap()
            .iter()
            .map(|(s, _)| *s)
            .collect::<std::collections::HashSet<_>>()
            .len(),
        2
    );

    server.stop().await;
    // stop() returns once each shard has finished; the OS thread exits a
    // moment later, so look a few times before concluding. One empty
    // listing is not proof: /proc/self/task lists by position, and a
    // thread exiting during the listing can hide the one after it.
    let mut empty = 0;
    for _ in 0..300 {
        empty = if os_shard_threads() == 0 { empty + 1 } else { 0 };
        if empty == 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    assert_eq!(os_shard_threads(), 0, "a shard's thread outlived stop()");

    // Zero shards means one per usable core.
    let server = TransportServerBuilder::new()
        .shards(0)
        .pin_shards(false)
        .build()
        .await
        .unwrap();
    assert_eq!(server.shards(), msgtrans_shards::runtime::usable_cores());
    server.stop().await;
}
