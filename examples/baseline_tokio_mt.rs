//! The multi-core anchor of the scaling run: what a tokio user scaling past
//! one core writes first, one multi-thread (work-stealing) runtime with
//! `--shards` workers and one listener. Each connection's loop is baseline
//! 1's (read a batch, write its complete frames back with one write), so
//! the difference from `baseline_tokio --shards N` (one current_thread
//! runtime per core) is the scheduler alone.

mod common;

fn main() {
    let (addr, workers) = common::args(
        "baseline_tokio_mt",
        "hand-batched echo on one tokio multi-thread runtime (--shards = worker threads)",
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let std_listener = common::reuseport_listener(&addr);
        std_listener.set_nonblocking(true).unwrap();
        let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
        println!("listening tcp {addr} shards={workers} path=baseline_tokio_mt");
        loop {
            let Ok((s, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(common::tokio_echo(s));
        }
    });
}
