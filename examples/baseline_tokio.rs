//! Baseline 1: the best a careful tokio user writes. A `current_thread`
//! runtime per thread; each connection reads a batch, finds the complete
//! MsgTrans frames in it and writes them back with one write (a request
//! goes back as its response).

mod common;

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
                        let Ok((s, _)) = listener.accept().await else {
                            continue;
                        };
                        tokio::spawn(common::tokio_echo(s));
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
