//! Per-core micro benchmarks of the parts on the per-message path: codec,
//! buffer pool, connection slab, a cross-shard mesh hop, and one session's
//! whole path with the kernel taken out.

use std::hint::black_box;
use std::sync::Arc;

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use msgtrans::packet::{FrameLimits, Packet};
use msgtrans_shards::codec;
use msgtrans_shards::mesh;
use msgtrans_shards::pool::buffer::{set_thread_home, BufferPool, PoolConfig};
use msgtrans_shards::pool::slab::{Slab, SlotTable};

const SIZES: [usize; 4] = [0, 64, 1024, 64 * 1024];

fn codec_benches(c: &mut Criterion) {
    let limits = FrameLimits::default();
    for size in SIZES {
        let p = Packet::one_way(7, vec![0xAB; size]);
        let mut g = c.benchmark_group(format!("codec/{size}B"));
        g.throughput(Throughput::Elements(1));
        let mut out = BytesMut::with_capacity(p.wire_len() * 2);
        g.bench_function("encode", |b| {
            b.iter(|| {
                out.clear();
                codec::encode(black_box(&p), &mut out).unwrap();
            })
        });
        let wire = p.to_bytes().unwrap();
        g.bench_function("decode_ref", |b| {
            b.iter(|| {
                let (f, n) = codec::decode_ref(black_box(&wire), &limits).unwrap().unwrap();
                black_box((f.payload.len(), n))
            })
        });
        g.bench_function("decode_owned", |b| {
            b.iter_batched(
                || BytesMut::from(&wire[..]),
                |mut buf| codec::decode(&mut buf, &limits).unwrap().unwrap(),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }
}

fn pool_benches(c: &mut Criterion) {
    set_thread_home(0);
    let pool = BufferPool::new(0, PoolConfig::default());
    let mut g = c.benchmark_group("pool");
    g.throughput(Throughput::Elements(1));
    g.bench_function("get_put_same_thread", |b| {
        b.iter(|| {
            let v = pool.get(black_box(64));
            pool.put(v);
        })
    });
    g.bench_function("copy_to_bytes_drop", |b| {
        b.iter(|| drop(pool.copy_to_bytes(black_box(&[1u8; 64]))))
    });
    // Buffers returned from another thread: a batch of 1024 is shared out,
    // dropped on a helper thread, and comes home through the queue.
    g.throughput(Throughput::Elements(1024));
    g.bench_function("return_from_other_thread_x1024", |b| {
        b.iter_batched(
            || (0..1024).map(|_| pool.copy_to_bytes(&[1u8; 64])).collect::<Vec<_>>(),
            |batch| std::thread::scope(|s| s.spawn(move || drop(batch)).join().unwrap()),
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

fn slab_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("slab");
    g.throughput(Throughput::Elements(1));
    let mut slab = Slab::new(0, 0, SlotTable::new(1 << 16));
    let ids: Vec<_> = (0..1000).map(|i| slab.insert_with(|_| i).unwrap()).collect();
    g.bench_function("lookup", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ids.len();
            black_box(slab.get(ids[i]))
        })
    });
    g.bench_function("insert_remove", |b| {
        b.iter(|| {
            let id = slab.insert_with(|_| 0).unwrap();
            slab.remove(black_box(id))
        })
    });
    let table = Arc::clone(slab.table());
    g.bench_function("is_live_from_any_thread", |b| {
        b.iter(|| table.is_live(black_box(ids[3])))
    });
    g.finish();
}

fn mesh_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("mesh");
    const BATCH: usize = 256;
    g.throughput(Throughput::Elements(BATCH as u64));
    // One batch crossing to another thread and back: the cost per message of
    // a cross-shard hop when traffic is batched.
    let (to_b, inbox_b) = mesh::inbox::<u64>();
    let (to_a, inbox_a) = mesh::inbox::<u64>();
    let worker = std::thread::spawn(move || {
        let mut batch = Vec::with_capacity(BATCH);
        while futures_lite::future::block_on(inbox_b.recv_batch(&mut batch, BATCH)) {
            if to_a.send_batch(batch.drain(..)).is_err() {
                return;
            }
        }
    });
    let mut back = Vec::with_capacity(BATCH);
    g.bench_function("round_trip_batch_256", |b| {
        b.iter(|| {
            to_b.send_batch(0..BATCH as u64).unwrap();
            let mut got = 0;
            while got < BATCH {
                back.clear();
                futures_lite::future::block_on(inbox_a.recv_batch(&mut back, BATCH));
                got += back.len();
            }
        })
    });
    g.finish();
    drop(to_b);
    let _ = worker.join();
}

/// One session's per-message path without the kernel: decode, dispatch to
/// the inline echo, encode into the outbound batch, hand the batch to the
/// stream. What a loopback run adds on top is the kernel's TCP work and the
/// executor's task switches.
fn session_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("session");
    for (frames, size) in [(16, 64), (16, 1024)] {
        let mut l = msgtrans_shards::bench_loop::EchoLoop::new(frames, size);
        let per_turn = l.turn();
        g.throughput(Throughput::Elements(per_turn));
        g.bench_function(format!("inline_echo_{frames}x{size}B"), |b| {
            b.iter(|| black_box(l.turn()))
        });
    }
    g.finish();
}

criterion_group!(
    benches,
    codec_benches,
    pool_benches,
    slab_benches,
    mesh_benches,
    session_benches
);
criterion_main!(benches);
