//! `shared_port(true)`: several server processes serve one port, each
//! under its own open-files cap, and the kernel spreads connections over
//! all of them. Played here by two servers in one process; each answers
//! with its own tag, so the test sees which one served a connection.

mod common;

use common::*;
use msgtrans::error::StartError;
use msgtrans::packet::Packet;
use msgtrans::protocol::TcpServerConfig;
use msgtrans::transport::{TransportServer, TransportServerBuilder};
use msgtrans::{Inline, TransportError};

fn tagged(addr: &str, tag: u8, shared: bool) -> TransportServerBuilder {
    TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new(addr).unwrap())
        .shards(SHARDS)
        .pin_shards(false)
        .shared_port(shared)
        .handler(move |ctx: &mut Inline<'_>| {
            if ctx.is_request() {
                ctx.respond(&[tag]);
            }
        })
}

async fn start(addr: &str, tag: u8) -> TransportServer {
    within(GUARD, "server build", tagged(addr, tag, true).build())
        .await
        .expect("a shared port is joined")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_one_port_and_both_serve_it() {
    let first = start("127.0.0.1:0", 1).await;
    let port = addr(&first);
    let second = start(&port.to_string(), 2).await;
    assert_eq!(second.tcp_addr(), Some(port));

    let mut served = [0usize; 3];
    for i in 0..64u32 {
        let mut c = RawClient::connect(port).await;
        c.send(&Packet::request(i, b"who".to_vec())).await;
        let answer = c.recv().await;
        assert_eq!(answer.header.message_id, i);
        served[usize::from(answer.payload[0])] += 1;
    }
    // The kernel hashes each connection's addresses onto one of the four
    // sockets; 64 connections all landing on one server's two would be a
    // 1 in 2^63 event, not a fluke of scheduling.
    assert!(
        served[1] > 0 && served[2] > 0,
        "served by first, second: {:?}",
        &served[1..]
    );

    // One server leaving does not take the port from the other.
    first.stop().await;
    for i in 0..8u32 {
        let mut c = RawClient::connect(port).await;
        c.send(&Packet::request(i, b"who".to_vec())).await;
        assert_eq!(c.recv().await.payload.as_ref(), [2]);
    }
    second.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_port_is_still_refused_where_a_socket_holds_it_alone() {
    // Without SO_REUSEPORT the holder owns the port outright.
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = plain.local_addr().unwrap().to_string();
    match tagged(&taken, 1, true).build().await {
        Err(TransportError::Start(e)) => assert!(
            matches!(*e, StartError::AddrInUse { addr } if addr.to_string() == taken),
            "{e:?}"
        ),
        Err(e) => panic!("expected a start error, got {e:?}"),
        Ok(_) => panic!("joined a port a plain listener holds alone"),
    }
    // And a server that does not ask to share refuses a shared group.
    let first = start("127.0.0.1:0", 1).await;
    let port = addr(&first).to_string();
    assert!(
        tagged(&port, 2, false).build().await.is_err(),
        "an unshared server joined a shared port"
    );
    first.stop().await;
}
