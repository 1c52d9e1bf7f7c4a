//! A port that is already in use is refused with `StartError::AddrInUse`,
//! never silently shared: `SO_REUSEPORT` would otherwise let a second
//! server join the first one's group and take part of its connections.

mod common;

use common::*;
use msgtrans::protocol::{TcpServerConfig, WebSocketServerConfig};
use msgtrans::transport::TransportServerBuilder;
use msgtrans::TransportError;
use msgtrans_shards::EventSink;
use msgtrans_shards::{Engine, EngineConfig, StartError};

fn tcp_on(addr: std::net::SocketAddr) -> TransportServerBuilder {
    TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new(&addr.to_string()).unwrap())
        .shards(SHARDS)
        .pin_shards(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_engine_on_the_same_port_gets_addr_in_use() {
    let server = start_inline_echo(builder()).await;
    let taken = addr(&server);
    let (tx, _rx) = flume::bounded(16);
    let sink = EventSink {
        tx,
        lifecycle: Default::default(),
        bell: Default::default(),
    };
    let cfg = EngineConfig {
        shards: SHARDS,
        pin: false,
        ..EngineConfig::default()
    };
    let engine = Engine::start(cfg, None, sink).await.unwrap();
    match engine.listen_tcp(taken, None) {
        Err(StartError::AddrInUse { addr }) => assert_eq!(addr, taken),
        other => panic!("expected AddrInUse, got {other:?}"),
    }
    engine.stop().await;

    // The first server still has every connection to itself.
    for i in 0..8u32 {
        let mut c = RawClient::connect(taken).await;
        let p = one_way(i, 0, b"", b"mine".to_vec());
        c.send(&p).await;
        assert_eq!(c.recv().await, p);
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_server_on_the_same_port_fails_to_build() {
    let server = start_inline_echo(builder()).await;
    let taken = addr(&server);
    match tcp_on(taken).build().await {
        Err(TransportError::Start(e)) => {
            assert!(matches!(*e, StartError::AddrInUse { addr } if addr == taken), "{e:?}")
        }
        Err(e) => panic!("expected a start error, got {e:?}"),
        Ok(_) => panic!("a second server was built on {taken}"),
    }
    let ws = TransportServerBuilder::new()
        .with_protocol(WebSocketServerConfig::new(&taken.to_string()).unwrap())
        .shards(SHARDS)
        .pin_shards(false);
    assert!(
        ws.build().await.is_err(),
        "a WebSocket server was built on a busy TCP port"
    );
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_held_by_a_plain_listener_is_refused_and_free_once_it_goes() {
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = plain.local_addr().unwrap();
    assert!(
        tcp_on(taken).build().await.is_err(),
        "built on a port a plain listener holds"
    );
    drop(plain);
    let server = within(GUARD, "server build", tcp_on(taken).handler(inline_echo).build())
        .await
        .expect("the port is free again");
    assert_eq!(server.tcp_addr(), Some(taken));
    server.stop().await;
}
