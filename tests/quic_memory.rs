//! Large QUIC writes reuse the shard's pooled buffers instead of a fresh
//! allocation per message. quinn copies what `write` gives it into a new
//! buffer of exactly that size and frees it once the peer acknowledges it;
//! under load (batches of several 64 KiB messages) the allocator handed
//! those pages back to the OS and faulted them in again for the next
//! batch: 4.5 page faults per message, a quarter of the server's kernel
//! time. Page faults depend on the allocator's heuristics, so this counts
//! what causes them: allocations of 128 KiB or more made on the server's
//! shard, through a counting global allocator (which is why this test has
//! a binary of its own).

mod common;

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

use common::quic::{client_config, quic_builder, quic_client};
use common::*;
use msgtrans::Inline;

/// Allocations this large are what the allocator serves from fresh pages.
const LARGE_ALLOC: usize = 128 * 1024;

thread_local! {
    /// Set on the server's shard thread by its handler.
    static WATCHED: Cell<bool> = const { Cell::new(false) };
}
static LARGE_ALLOCS: AtomicU64 = AtomicU64::new(0);

struct Counting;

fn count(size: usize) {
    if size >= LARGE_ALLOC && WATCHED.try_with(Cell::get).unwrap_or(false) {
        LARGE_ALLOCS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call goes straight to `System`; counting allocates nothing.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > layout.size() {
            count(new_size);
        }
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

fn watched_echo(ctx: &mut Inline<'_>) {
    WATCHED.with(|w| w.set(true));
    inline_echo(ctx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_echoes_reuse_pooled_buffers_instead_of_fresh_allocations() {
    // Under the pool's largest tier (256 KiB), so a whole frame's read and
    // write each fit a pooled buffer, and over LARGE_ALLOC, so quinn's own
    // copy of each write would be counted.
    const SIZE: usize = 192 * 1024;
    const MESSAGES: u64 = 100;
    let (b, pem) = quic_builder();
    let server = within(GUARD, "server build", b.shards(1).handler(watched_echo).build())
        .await
        .expect("server build");
    let client = quic_client(client_config(&server, &pem)).await;
    let payload = vec![7u8; SIZE];
    let echo = |m: u64| {
        let client = &client;
        let payload = &payload;
        async move {
            let got = within(GUARD, "large echo", client.request(payload)).await;
            let answer = got.expect("echo").data.expect("an answer");
            assert_eq!(answer.len(), SIZE, "message {m}");
        }
    };
    // The pool's tiers fill first.
    for m in 0..10 {
        echo(m).await;
    }
    let before = LARGE_ALLOCS.load(Ordering::Relaxed);
    for m in 0..MESSAGES {
        echo(m).await;
    }
    let large = LARGE_ALLOCS.load(Ordering::Relaxed) - before;
    assert!(
        large < MESSAGES / 10,
        "the server's shard made {large} allocations of 128 KiB or more for {MESSAGES} echoes of {SIZE} bytes"
    );
    client.stop().await;
    server.stop().await;
}
