//! The vendored glommio's `TcpStream` writes every slice of a vectored
//! write at once (vendor/glommio/README.md, tenth change). rustls hands a
//! TLS session's queued records to `write_vectored`, one slice per record;
//! upstream's stream sent only the first.

use std::io::IoSlice;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};

const GUARD: Duration = Duration::from_secs(60);

#[test]
fn a_vectored_write_sends_every_slice_in_order() {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let ex = glommio::LocalExecutorBuilder::new(glommio::Placement::Unbound)
            .make()
            .expect("executor");
        ex.run(async {
            let listener = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = listener.local_addr().unwrap();
            let mut client = TcpStream::connect(addr).await.unwrap();
            let mut server = listener.accept().await.unwrap();
            // Three records' worth, the last one short, plus an empty slice
            // (rustls never sends one, a caller might).
            let slices: Vec<Vec<u8>> = vec![vec![1; 16 * 1024], vec![], vec![2; 16 * 1024], vec![3; 10]];
            let total: usize = slices.iter().map(Vec::len).sum();
            let io: Vec<IoSlice<'_>> = slices.iter().map(|s| IoSlice::new(s)).collect();
            // Far below the socket's send buffer, so one call takes it all.
            let n = client.write_vectored(&io).await.unwrap();
            assert_eq!(n, total, "one vectored write takes every slice, not just the first");
            let mut got = vec![0; total];
            server.read_exact(&mut got).await.unwrap();
            assert_eq!(got, slices.concat(), "the bytes arrive in the slices' order");

            // A vectored write of nothing writes nothing and does not block.
            assert_eq!(client.write_vectored(&[]).await.unwrap(), 0);
        });
        let _ = tx.send(());
    });
    rx.recv_timeout(GUARD).expect("the vectored write finished");
}
