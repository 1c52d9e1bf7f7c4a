//! Abuse closes the abusive session alone with `PolicyViolation` (WebSocket
//! close code 1008), over TCP and WebSocket, spoken in raw bytes: a flood of
//! empty packets past `max_empty_packets_per_sec`, and requests the
//! application leaves unanswered past `max_unanswered_requests`. Another
//! session on the same server carries on, and traffic up to each limit is
//! served.

mod common;

use common::ws_raw::{client_frame, read_frame, upgraded};
use common::*;
use msgtrans::error::{CloseReason, Violation};
use msgtrans::event::{ServerEvent, TransportContext};
use msgtrans::packet::Packet;
use msgtrans::SessionId;
use msgtrans_shards::config::{DEFAULT_MAX_EMPTY_PACKETS_PER_SEC, DEFAULT_MAX_UNANSWERED_REQUESTS};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;

/// Far more empty packets than one second allows, sent in one write so the
/// server reads them within milliseconds of each other.
const FLOOD: usize = 20 * DEFAULT_MAX_EMPTY_PACKETS_PER_SEC;

fn empty(id: u32) -> Vec<u8> {
    wire(&Packet::one_way(id, Vec::new()))
}

fn flood_bytes(n: usize) -> Vec<u8> {
    (0..n as u32).flat_map(empty).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn defaults_are_1000_empty_packets_per_second_and_8192_unanswered_requests() {
    let d = msgtrans::transport::Limits::default();
    assert_eq!(d.max_empty_packets_per_sec, 1_000);
    assert_eq!(d.max_unanswered_requests, 8_192);
    assert_eq!(DEFAULT_MAX_UNANSWERED_REQUESTS, 8_192);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_empty_packet_flood_closes_that_session_alone() {
    let server = start_inline_echo(builder()).await;
    let mut events = pump_events(&server);
    let mut good = RawClient::connect(addr(&server)).await;
    let good_id = events.established(good.local_addr()).await;
    let mut evil = RawClient::connect(addr(&server)).await;
    let evil_id = events.established(evil.local_addr()).await;

    evil.write(&flood_bytes(FLOOD)).await;
    let echoed = evil.expect_closed().await;
    assert!(
        echoed.len() <= DEFAULT_MAX_EMPTY_PACKETS_PER_SEC * 16,
        "{} bytes echoed: more empty packets were served than the limit allows",
        echoed.len()
    );
    assert_eq!(
        events.closed(evil_id).await,
        CloseReason::PolicyViolation(Violation::EmptyPacketFlood {
            max: DEFAULT_MAX_EMPTY_PACKETS_PER_SEC
        })
    );

    let p = one_way(7, 1, b"", b"still served".to_vec());
    good.send(&p).await;
    assert_eq!(good.recv().await, p);
    assert_eq!(server.active_sessions().await, vec![good_id]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_empty_packets_up_to_the_limit_are_all_served() {
    let server = start_inline_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    c.write(&flood_bytes(DEFAULT_MAX_EMPTY_PACKETS_PER_SEC)).await;
    for i in 0..DEFAULT_MAX_EMPTY_PACKETS_PER_SEC as u32 {
        assert_eq!(c.recv().await.header.message_id, i);
    }
    let p = one_way(99, 0, b"", b"after".to_vec());
    c.send(&p).await;
    assert_eq!(c.recv().await, p);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_empty_packet_flood_closes_with_1008() {
    let server = start_inline_echo(ws_builder()).await;
    let mut events = pump_events(&server);
    let ws = server.ws_addr().unwrap();
    let mut good = upgraded(ws).await;
    let mut evil = upgraded(ws).await;
    let evil_id = events.established(evil.local_addr().unwrap()).await;

    let flood: Vec<u8> = (0..FLOOD as u32).flat_map(|i| client_frame(2, &empty(i))).collect();
    evil.write_all(&flood).await.unwrap();
    let mut echoes = 0;
    let close = loop {
        match read_frame(&mut evil).await {
            Some((0x82, _)) => echoes += 1,
            Some((0x88, body)) => break body,
            other => panic!("expected echoes then a close frame, got {other:?}"),
        }
    };
    assert_eq!(&close[..2], &1008u16.to_be_bytes(), "close code 1008");
    assert!(
        echoes <= DEFAULT_MAX_EMPTY_PACKETS_PER_SEC,
        "{echoes} empty packets served"
    );
    assert_eq!(
        events.closed(evil_id).await,
        CloseReason::PolicyViolation(Violation::EmptyPacketFlood {
            max: DEFAULT_MAX_EMPTY_PACKETS_PER_SEC
        })
    );

    let p = wire(&one_way(3, 1, b"", b"neighbour".to_vec()));
    good.write_all(&client_frame(2, &p)).await.unwrap();
    assert_eq!(read_frame(&mut good).await, Some((0x82, p)));
    server.stop().await;
}

/// A server whose application answers requests from every session except
/// the one the test names on `evil`; it keeps the others' contexts, so
/// they stay unanswered. Returns its lifecycle events.
async fn selective_server(
    b: msgtrans::transport::TransportServerBuilder,
) -> (
    msgtrans::transport::TransportServer,
    mpsc::UnboundedSender<SessionId>,
    Events,
) {
    let server = within(GUARD, "server build", b.build()).await.unwrap();
    let mut stream = server.subscribe_events();
    let (evil_tx, mut evil_rx) = mpsc::unbounded_channel::<SessionId>();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut evil = None;
        let mut kept: Vec<TransportContext> = Vec::new();
        while let Ok(ev) = stream.recv().await {
            while let Ok(id) = evil_rx.try_recv() {
                evil = Some(id);
            }
            match ev {
                ServerEvent::MessageReceived { session_id, context } if context.is_request() => {
                    if Some(session_id) == evil {
                        kept.push(context);
                    } else {
                        let data = context.data.clone();
                        let _ = context.respond(data);
                    }
                }
                other => {
                    let _ = tx.send(other);
                }
            }
        }
        drop(kept);
    });
    let events = Events::from_receiver(rx);
    (server, evil_tx, events)
}

const UNANSWERED: usize = 16;

fn requests(from: u32, n: usize) -> Vec<u8> {
    (from..from + n as u32)
        .flat_map(|i| wire(&Packet::request(i, format!("q{i}").into_bytes())))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_requests_left_unanswered_close_that_session_alone() {
    let (server, evil_tx, mut events) = selective_server(builder().max_unanswered_requests(UNANSWERED)).await;
    let mut good = RawClient::connect(addr(&server)).await;
    let good_id = events.established(good.local_addr()).await;
    let mut evil = RawClient::connect(addr(&server)).await;
    let evil_id = events.established(evil.local_addr()).await;
    evil_tx.send(evil_id).unwrap();

    // Answered requests stop counting: many more than the limit, each
    // answered before the next, never trip it.
    for i in 1..=4 * UNANSWERED as u32 {
        good.write(&requests(i, 1)).await;
        assert_eq!(good.recv().await.header.message_id, i);
    }
    // Up to the limit the session stays open...
    evil.write(&requests(1, UNANSWERED)).await;
    let ping = one_way(500, 0, b"", b"ping".to_vec());
    evil.send(&ping).await;
    events
        .wait_for("the one-way packet after the requests", |e| match e {
            ServerEvent::MessageReceived { session_id, context } if *session_id == evil_id => {
                (context.message_id == 500).then_some(())
            }
            _ => None,
        })
        .await;
    // ...and one more closes it.
    evil.write(&requests(100, 1)).await;
    evil.expect_closed().await;
    assert_eq!(
        events.closed(evil_id).await,
        CloseReason::PolicyViolation(Violation::UnansweredRequests { max: UNANSWERED })
    );

    good.write(&requests(1000, 1)).await;
    assert_eq!(good.recv().await.header.message_id, 1000);
    assert_eq!(server.active_sessions().await, vec![good_id]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_requests_left_unanswered_close_with_1008() {
    let (server, evil_tx, mut events) = selective_server(ws_builder().max_unanswered_requests(UNANSWERED)).await;
    let ws = server.ws_addr().unwrap();
    let mut good = upgraded(ws).await;
    let mut evil: TcpStream = upgraded(ws).await;
    let evil_id = events.established(evil.local_addr().unwrap()).await;
    evil_tx.send(evil_id).unwrap();

    let frames: Vec<u8> = (1..=UNANSWERED as u32 + 1)
        .flat_map(|i| client_frame(2, &wire(&Packet::request(i, b"q".to_vec()))))
        .collect();
    evil.write_all(&frames).await.unwrap();
    match read_frame(&mut evil).await {
        Some((0x88, body)) => assert_eq!(&body[..2], &1008u16.to_be_bytes(), "close code 1008"),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert_eq!(
        events.closed(evil_id).await,
        CloseReason::PolicyViolation(Violation::UnansweredRequests { max: UNANSWERED })
    );

    let req = wire(&Packet::request(9, b"answered".to_vec()));
    good.write_all(&client_frame(2, &req)).await.unwrap();
    let (op, body) = read_frame(&mut good).await.expect("a response");
    assert_eq!(op, 0x82);
    let mut buf = bytes::BytesMut::from(&body[..]);
    let resp = msgtrans_shards::codec::decode(&mut buf, &raw_limits())
        .expect("a packet")
        .expect("a whole packet");
    assert_eq!((resp.header.message_id, &resp.payload[..]), (9, &b"answered"[..]));
    server.stop().await;
}
