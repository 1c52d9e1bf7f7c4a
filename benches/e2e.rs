//! End-to-end loopback echo through one shard, beside a hand-batched tokio
//! echo measured in the same run: a blocking client writes a batch of 64
//! packets of 64 bytes and reads the 64 echoes back.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use msgtrans::packet::Packet;
use msgtrans::protocol::TcpServerConfig;
use msgtrans::transport::{TransportServer, TransportServerBuilder};
use msgtrans::Inline;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BATCH: usize = 64;
const PAYLOAD: usize = 64;

fn echo(ctx: &mut Inline<'_>) {
    let (h, ext, p) = (ctx.header(), ctx.ext_header(), ctx.payload());
    ctx.write(h, ext, p);
}

fn batch() -> Vec<u8> {
    let one = Packet::one_way(1, vec![7u8; PAYLOAD]).to_bytes().unwrap();
    one.iter().copied().cycle().take(one.len() * BATCH).collect()
}

/// A client that writes one batch and reads it back.
fn round_trip(c: &mut TcpStream, out: &[u8], back: &mut [u8]) {
    c.write_all(out).unwrap();
    c.read_exact(back).unwrap();
}

fn client(addr: SocketAddr) -> TcpStream {
    let c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    c
}

/// The hand-batched tokio echo (baseline 1) on its own current_thread runtime.
fn tokio_echo() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            listener.set_nonblocking(true).unwrap();
            let l = tokio::net::TcpListener::from_std(listener).unwrap();
            while let Ok((mut s, _)) = l.accept().await {
                let _ = s.set_nodelay(true);
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    let mut have = 0;
                    loop {
                        let n = match s.read(&mut buf[have..]).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => n,
                        };
                        have += n;
                        let mut done = 0;
                        while have - done >= 16 {
                            let h = &buf[done..];
                            let len = 16
                                + u16::from_be_bytes([h[8], h[9]]) as usize
                                + u32::from_be_bytes([h[10], h[11], h[12], h[13]]) as usize;
                            if have - done < len {
                                break;
                            }
                            done += len;
                        }
                        if s.write_all(&buf[..done]).await.is_err() {
                            return;
                        }
                        buf.copy_within(done..have, 0);
                        have -= done;
                    }
                });
            }
        });
    });
    addr
}

fn msgtrans_server(rt: &tokio::runtime::Runtime, inline: bool) -> TransportServer {
    rt.block_on(async {
        let mut b = TransportServerBuilder::new()
            .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap())
            .shards(1)
            .pin_shards(false);
        if inline {
            b = b.handler(echo);
        }
        let server = b.build().await.unwrap();
        if !inline {
            let s = server.clone();
            let mut events = server.subscribe_events();
            rt.spawn(async move {
                while let Ok(ev) = events.recv().await {
                    if let msgtrans::ServerEvent::MessageReceived { session_id, context } = ev {
                        let mut p = Packet::one_way(context.message_id, context.data);
                        p.set_biz_type(context.biz_type);
                        let _ = s.send_to_session(session_id, p).await;
                    }
                }
            });
        }
        server
    })
}

fn e2e(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let out = batch();
    let mut back = vec![0u8; out.len()];
    let mut g = c.benchmark_group("e2e_echo_64x64B");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.measurement_time(Duration::from_secs(3));

    let mut base = client(tokio_echo());
    g.bench_function("baseline_tokio", |b| b.iter(|| round_trip(&mut base, &out, &mut back)));

    let inline = msgtrans_server(&rt, true);
    let mut c1 = client(inline.tcp_addr().unwrap());
    g.bench_function("msgtrans_inline_1_shard", |b| {
        b.iter(|| round_trip(&mut c1, &out, &mut back))
    });

    let events = msgtrans_server(&rt, false);
    let mut c2 = client(events.tcp_addr().unwrap());
    g.bench_function("msgtrans_events_1_shard", |b| {
        b.iter(|| round_trip(&mut c2, &out, &mut back))
    });
    g.finish();
    rt.block_on(async {
        inline.stop().await;
        events.stop().await;
    });
}

criterion_group!(benches, e2e);
criterion_main!(benches);
