//! Baseline 3: a raw glommio echo with the same batching as msgtrans and
//! nothing else: no sessions, no pools, no API. The floor that shows what
//! the msgtrans stack costs on top of the runtime.

mod common;

use std::os::fd::{FromRawFd, IntoRawFd};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::{LocalExecutorBuilder, Placement};

fn main() {
    let (addr, shards) = common::args("baseline_glommio", "raw glommio batched echo (baseline 3)");
    let cores = common::allowed_cpus();
    let handles: Vec<_> = (0..shards)
        .map(|i| {
            let fd = common::reuseport_listener(&addr).into_raw_fd();
            let placement = cores.get(i).map_or(Placement::Unbound, |c| Placement::Fixed(*c));
            LocalExecutorBuilder::new(placement)
                .io_memory(1 << 20)
                .spawn(move || async move {
                    // SAFETY: a bound, listening socket we own.
                    let listener = unsafe { glommio::net::TcpListener::from_raw_fd(fd) };
                    loop {
                        let Ok(mut s) = listener.accept().await else { continue };
                        let _ = s.set_nodelay(true);
                        glommio::spawn_local(async move {
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
                        })
                        .detach();
                    }
                })
                .expect("executor")
        })
        .collect();
    println!("listening tcp {addr} shards={shards} path=baseline_glommio");
    for h in handles {
        let _ = h.join();
    }
}
