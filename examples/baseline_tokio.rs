//! Baseline 1: the best a careful tokio user writes. A `current_thread`
//! runtime per thread; each connection reads a batch, finds the complete
//! MsgTrans frames in it and writes them back with one write.

mod common;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn main() {
    let (addr, shards) = common::args("baseline_tokio", "hand-batched tokio current_thread echo (baseline 1)");
    let threads: Vec<_> = (0..shards)
        .map(|_| {
            let std_listener = common::reuseport_listener(&addr);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    std_listener.set_nonblocking(true).unwrap();
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    loop {
                        let Ok((mut s, _)) = listener.accept().await else {
                            continue;
                        };
                        let _ = s.set_nodelay(true);
                        tokio::spawn(async move {
                            let mut buf = vec![0u8; 64 * 1024];
                            let mut have = 0;
                            loop {
                                if have == buf.len() {
                                    buf.resize(buf.len() * 2, 0);
                                }
                                let n = match s.read(&mut buf[have..]).await {
                                    Ok(0) | Err(_) => return,
                                    Ok(n) => n,
                                };
                                have += n;
                                let done = common::complete_frames(&buf[..have]);
                                if done > 0 {
                                    if s.write_all(&buf[..done]).await.is_err() {
                                        return;
                                    }
                                    buf.copy_within(done..have, 0);
                                    have -= done;
                                }
                            }
                        });
                    }
                })
            })
        })
        .collect();
    println!("listening tcp {addr} shards={shards} path=baseline_tokio");
    for t in threads {
        let _ = t.join();
    }
}
