//! Plain TCP sessions run on each shard's own io_uring, which owns their
//! sockets and buffers while operations are in flight. These tests check
//! what that ownership must not break: a session closed with a write stuck
//! in the kernel still lets its socket go, and a stopped server leaves no
//! ring, eventfd or socket open behind it.

mod common;

use std::time::Duration;

use common::*;
use msgtrans::CloseReason;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How many fds are open, by kind ("anon_inode:[io_uring]", "socket", ...).
fn fd_kinds() -> std::collections::BTreeMap<String, usize> {
    let mut kinds = std::collections::BTreeMap::new();
    for e in std::fs::read_dir("/proc/self/fd").expect("procfs").flatten() {
        let target = std::fs::read_link(e.path())
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        let kind = target.split(':').next().unwrap_or("").to_string();
        let kind = if kind == "anon_inode" { target } else { kind };
        *kinds.entry(kind).or_insert(0) += 1;
    }
    kinds
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_closed_while_its_write_is_stuck_in_the_kernel_still_closes_its_socket() {
    let server = start_inline_echo(builder().tcp_ring(true).write_timeout(None)).await;
    let mut events = pump_events(&server);
    let mut c = RawClient::connect(addr(&server)).await;
    let id = events.established(c.local_addr()).await;
    // The client writes 8 MiB of echo requests and reads nothing, so the
    // server's send fills both sockets' buffers and waits in the kernel.
    let chunk = wire(&one_way(1, 0, b"", vec![7u8; 60_000]));
    let (mut r, mut w) = c.stream.split();
    let mut wrote = 0;
    while wrote < 8 << 20 {
        match tokio::time::timeout(Duration::from_millis(500), w.write_all(&chunk)).await {
            Ok(Ok(())) => wrote += chunk.len(),
            Ok(Err(e)) => panic!("write: {e}"),
            // Our side is full too: the server's send is surely stuck.
            Err(_) => break,
        }
    }
    within(GUARD, "close_session", server.close_session(id))
        .await
        .expect("close");
    assert_eq!(events.closed(id).await, CloseReason::LocalClose);
    // The socket must really close: reading drains what the server sent
    // before the close and then ends (EOF or reset), instead of hanging.
    let mut buf = vec![0u8; 1 << 16];
    within(GUARD, "the end of the closed session", async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopped_servers_leave_no_file_descriptor_open() {
    // One round first, so whatever the process opens once (runtime fds,
    // the pools' first pages) is already counted.
    let round = || async {
        let server = start_inline_echo(builder().tcp_ring(true)).await;
        let mut c = RawClient::connect(addr(&server)).await;
        let p = one_way(1, 0, b"", b"ring".to_vec());
        c.send(&p).await;
        assert_eq!(c.recv().await, p);
        server.stop().await;
    };
    round().await;
    let before = fd_kinds();
    const SERVERS: usize = 20;
    for _ in 0..SERVERS {
        round().await;
    }
    let after = fd_kinds();
    // Nothing may stay: not a shard ring's eventfd, ring fd or sockets, and
    // not glommio's own eventfd per executor either (the fork no longer
    // keeps it alive from task headers; `client_leaves_no_files.rs`).
    for (kind, n) in &after {
        let was = before.get(kind).copied().unwrap_or(0);
        assert!(
            *n <= was,
            "{kind}: {was} open before {SERVERS} servers, {n} after ({before:?} then {after:?})"
        );
    }
}

/// A frame larger than the buffer its first bytes were read into (always
/// so on the ring, whose reads land in 16 KiB buffers) continues in a
/// pooled buffer that goes back to the pool afterwards. It used to be
/// grown in place to the frame's odd size, which no pool tier keeps, so
/// every such frame was freed after use and the next took fresh heap
/// pages: 1.8 page faults per 64 KiB message, 1.7× the streams' CPU.
async fn large_frames_reuse_pooled_buffers(ring: bool) {
    const MESSAGES: usize = 200;
    let server = start_inline_echo(builder().shards(1).tcp_ring(ring)).await;
    let mut c = RawClient::connect(addr(&server)).await;
    let before = server.stats().total.pool;
    for m in 0..MESSAGES {
        let p = one_way(m as u32, 0, b"", vec![m as u8; 64 * 1024]);
        c.send(&p).await;
        assert_eq!(c.recv().await, p, "message {m}");
    }
    let after = server.stats().total.pool;
    let dropped = after.dropped - before.dropped;
    // A handful while the tiers fill (write batches too); not one per
    // message.
    assert!(
        dropped < (MESSAGES / 10) as u64,
        "ring {ring}: {dropped} buffers freed for {MESSAGES} large frames: {after:?}"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_on_the_ring_reuse_pooled_buffers() {
    large_frames_reuse_pooled_buffers(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_frames_on_glommio_streams_reuse_pooled_buffers() {
    large_frames_reuse_pooled_buffers(false).await;
}
