//! Cluster mode against a real NATS cluster: three `nats-server`s routed to
//! each other, three `examples/relay` nodes, one per server, and raw
//! clients speaking the relay protocol. Every message between sessions on
//! different nodes arrives once and in order, or its sender hears why not
//! (biz 255), through a NATS server dying, a node dying, and a node that
//! stops reading.
#![cfg(feature = "cluster")]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::nats::{NatsCluster, Relay};
use common::{pump_events, read_packet_from, wire, within, RawClient, GUARD};
use msgtrans::packet::{Packet, PacketType};
use msgtrans::protocol::TcpServerConfig;
use msgtrans::transport::{TransportServer, TransportServerBuilder};
use msgtrans::{ClusterConfig, SessionId, TransportError};
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Mutex};

const WHOAMI: u8 = 1;
const DIRECT: u8 = 2;
const BROADCAST: u8 = 3;
const ASK: u8 = 4;
const UNDELIVERABLE: u8 = 255;

/// A client of a relay: its session id, a writer, and every packet it
/// receives. It answers asks itself (the payload back, prefixed "re:").
struct Member {
    id: SessionId,
    writer: Arc<Mutex<OwnedWriteHalf>>,
    rx: mpsc::UnboundedReceiver<Packet>,
}

impl Member {
    async fn join(addr: SocketAddr) -> Self {
        let stream = within(GUARD, "connect", TcpStream::connect(addr)).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (mut r, w) = stream.into_split();
        let writer = Arc::new(Mutex::new(w));
        let (tx, rx) = mpsc::unbounded_channel();
        let answer = Arc::clone(&writer);
        tokio::spawn(async move {
            let mut buf = bytes::BytesMut::new();
            while let Ok(Some(p)) = read_packet_from(&mut r, &mut buf).await {
                if p.header.packet_type == PacketType::Request && p.header.biz_type == ASK {
                    let mut resp = Packet::new(PacketType::Response, p.header.message_id);
                    resp.set_biz_type(ASK);
                    resp.set_payload([b"re:".as_slice(), &p.payload].concat());
                    let _ = answer.lock().await.write_all(&wire(&resp)).await;
                    continue;
                }
                if tx.send(p).is_err() {
                    break;
                }
            }
        });
        let mut m = Self {
            id: SessionId::new(0),
            writer,
            rx,
        };
        let mut who = Packet::new(PacketType::Request, 1);
        who.set_biz_type(WHOAMI);
        m.write(&[who]).await;
        let reply = m.next().await;
        m.id = SessionId::new(u64::from_be_bytes(reply.payload[..8].try_into().unwrap()));
        m
    }

    async fn write(&self, packets: &[Packet]) {
        let bytes: Vec<u8> = packets.iter().flat_map(wire).collect();
        self.writer.lock().await.write_all(&bytes).await.unwrap();
    }

    async fn next(&mut self) -> Packet {
        within(GUARD, "a packet", self.rx.recv())
            .await
            .expect("connection closed")
    }

    async fn next_within(&mut self, limit: Duration) -> Option<Packet> {
        tokio::time::timeout(limit, self.rx.recv()).await.ok().flatten()
    }
}

fn routed(kind: PacketType, biz: u8, message_id: u32, to: Option<SessionId>, payload: String) -> Packet {
    let mut p = Packet::new(kind, message_id);
    p.set_biz_type(biz);
    if let Some(to) = to {
        p.set_ext_header(to.as_u64().to_be_bytes().to_vec());
    }
    p.set_payload(payload.into_bytes());
    p
}

fn direct(to: SessionId, seq: u32) -> Packet {
    routed(PacketType::OneWay, DIRECT, seq, Some(to), format!("m{seq}"))
}

fn sender(p: &Packet) -> SessionId {
    SessionId::new(u64::from_be_bytes(p.ext_header[..8].try_into().unwrap()))
}

/// What a stream of directs came to: per sender, the sequence numbers
/// received, in arrival order.
#[derive(Default)]
struct Tally {
    by_sender: HashMap<SessionId, Vec<u32>>,
}

impl Tally {
    fn take(&mut self, p: &Packet) {
        assert_eq!(p.header.biz_type, DIRECT, "unexpected packet {p:?}");
        self.by_sender.entry(sender(p)).or_default().push(p.header.message_id);
    }
    fn of(&self, s: SessionId) -> &[u32] {
        self.by_sender.get(&s).map_or(&[], Vec::as_slice)
    }
}

fn relays(nats: &NatsCluster, extra: &[&str]) -> Vec<Relay> {
    (0..3)
        .map(|i| {
            let urls = nats.urls_from(i);
            let mut args = vec!["--cluster", &urls, "--cluster-name", "test", "--stats-every", "100"];
            args.extend_from_slice(extra);
            Relay::start(i as u8 + 1, &args)
        })
        .collect()
}

/// Waits until `a` reaches `b` through the cluster (every node has heard
/// of the others' heartbeats by then, so broadcasts reach them).
async fn connected(a: &Member, b: &mut Member) {
    let mut p = direct(b.id, 0);
    p.set_payload(b"hello".to_vec());
    a.write(&[p]).await;
    let got = b.next().await;
    assert_eq!(got.payload.as_ref(), b"hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directs_asks_and_broadcasts_cross_nodes_once_and_in_order() {
    let nats = NatsCluster::start(3);
    let r = relays(&nats, &[]);
    let mut a = Member::join(r[0].addr).await;
    let mut b = Member::join(r[1].addr).await;
    let mut c = Member::join(r[2].addr).await;
    assert_eq!(
        (a.id.node(), b.id.node(), c.id.node()),
        (1, 2, 3),
        "ids name their node"
    );
    connected(&a, &mut b).await;
    connected(&c, &mut b).await;
    connected(&b, &mut a).await;
    connected(&b, &mut c).await;
    tokio::time::sleep(Duration::from_millis(1200)).await; // heartbeats: all Up

    // a and c each send 3,000 directs to b, b 3,000 to a, in bursts.
    const N: u32 = 3000;
    let (aid, bid, cid) = (a.id, b.id, c.id);
    let burst = |to: SessionId| -> Vec<Vec<Packet>> {
        (1..=N)
            .collect::<Vec<_>>()
            .chunks(250)
            .map(|s| s.iter().map(|&q| direct(to, q)).collect())
            .collect()
    };
    for (i, chunk) in burst(bid).into_iter().enumerate() {
        a.write(&chunk).await;
        c.write(&burst(bid)[i]).await;
        b.write(&burst(aid)[i]).await;
    }
    let mut at_b = Tally::default();
    while at_b.of(aid).len() + at_b.of(cid).len() < 2 * N as usize {
        at_b.take(&b.next().await);
    }
    let mut at_a = Tally::default();
    while at_a.of(bid).len() < N as usize {
        at_a.take(&a.next().await);
    }
    let all: Vec<u32> = (1..=N).collect();
    assert_eq!(at_b.of(aid), all, "a -> b: each once, in order");
    assert_eq!(at_b.of(cid), all, "c -> b: each once, in order");
    assert_eq!(at_a.of(bid), all, "b -> a: each once, in order");

    // A packet over NATS's 1 MiB max_payload crosses whole (split into
    // broker messages and joined again).
    let big: String = (0..3 << 20).map(|i| (b'a' + (i % 26) as u8) as char).collect();
    a.write(&[routed(PacketType::OneWay, DIRECT, 77_777, Some(bid), big.clone())])
        .await;
    let p = b.next().await;
    assert_eq!((p.header.message_id, p.payload.len()), (77_777, big.len()));
    assert!(p.payload.as_ref() == big.as_bytes(), "the 3 MiB packet arrived changed");

    // 200 asks from a to c: every answer comes back to a, to its request.
    let asks: Vec<Packet> = (1..=200)
        .map(|q| routed(PacketType::Request, ASK, 10_000 + q, Some(cid), format!("q{q}")))
        .collect();
    a.write(&asks).await;
    let mut answers = HashMap::new();
    while answers.len() < 200 {
        let p = a.next().await;
        assert_eq!(p.header.packet_type, PacketType::Response, "{p:?}");
        assert_ne!(
            p.header.biz_type,
            UNDELIVERABLE,
            "{:?}",
            String::from_utf8_lossy(&p.payload)
        );
        assert!(
            answers.insert(p.header.message_id, p.payload.clone()).is_none(),
            "answered twice"
        );
    }
    for q in 1..=200u32 {
        assert_eq!(answers[&(10_000 + q)].as_ref(), format!("re:q{q}").as_bytes());
    }

    // 200 broadcasts from a reach b and c once each, in order, and not a.
    let casts: Vec<Packet> = (1..=200)
        .map(|q| routed(PacketType::OneWay, BROADCAST, q, None, format!("b{q}")))
        .collect();
    a.write(&casts).await;
    for m in [&mut b, &mut c] {
        let mut seen = Vec::new();
        while seen.len() < 200 {
            let p = m.next().await;
            assert_eq!((p.header.biz_type, sender(&p)), (BROADCAST, aid));
            seen.push(p.header.message_id);
        }
        assert_eq!(seen, (1..=200).collect::<Vec<_>>());
    }
    assert!(
        a.next_within(Duration::from_millis(300)).await.is_none(),
        "a heard its own broadcast"
    );

    // A session on a live node that does not exist: node 3 says so, and
    // the sender hears it, for a direct (its message id, the target's id
    // as ext header) and for an ask (the response says why).
    let ghost = SessionId::new(cid.as_u64() ^ 1);
    assert_eq!(ghost.node(), 3);
    a.write(&[direct(ghost, 88_888)]).await;
    let p = a.next().await;
    assert_eq!(
        (p.header.packet_type, p.header.biz_type, p.header.message_id, sender(&p)),
        (PacketType::OneWay, UNDELIVERABLE, 88_888, ghost),
        "{:?}",
        String::from_utf8_lossy(&p.payload)
    );
    a.write(&[routed(PacketType::Request, ASK, 99_999, Some(ghost), "q".into())])
        .await;
    let p = a.next().await;
    assert_eq!(
        (p.header.packet_type, p.header.biz_type, p.header.message_id),
        (PacketType::Response, UNDELIVERABLE, 99_999),
        "{:?}",
        String::from_utf8_lossy(&p.payload)
    );
    assert!(!p.payload.is_empty(), "the answer says why");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_servers_dying_mid_stream_lose_and_repeat_nothing() {
    let mut nats = NatsCluster::start(3);
    let r = relays(&nats, &[]);
    let mut a = Member::join(r[0].addr).await;
    let mut b = Member::join(r[1].addr).await;
    connected(&a, &mut b).await;
    // a's node talks to NATS server 0, b's to server 1: the first dies a
    // fifth of the way into the stream, the second at three fifths, each
    // with messages in flight through it.
    const N: u32 = 20_000;
    let bid = b.id;
    let sent = Instant::now();
    for (i, chunk) in (1..=N).collect::<Vec<_>>().chunks(500).enumerate() {
        let burst: Vec<Packet> = chunk.iter().map(|&q| direct(bid, q)).collect();
        a.write(&burst).await;
        if i == 8 {
            nats.kill(0);
        }
        if i == 24 {
            nats.kill(1);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut got = Vec::new();
    let mut reported = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while got.len() + reported.len() < N as usize {
        assert!(
            Instant::now() < deadline,
            "{} delivered, {} reported",
            got.len(),
            reported.len()
        );
        tokio::select! {
            p = b.rx.recv() => got.push(p.expect("b closed").header.message_id),
            p = a.rx.recv() => {
                let p = p.expect("a closed");
                assert_eq!(p.header.biz_type, UNDELIVERABLE);
                reported.push(p.header.message_id);
            }
        }
    }
    // The kill happened mid-stream: a's node lost its server and came back
    // through another.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(r[0].stat("reconnects") >= 1, "a's node never lost its NATS server");
    assert!(r[1].stat("reconnects") >= 1, "b's node never lost its NATS server");
    let mut sorted = got.clone();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "a message arrived twice");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
    for q in &reported {
        assert!(!got.contains(q), "message {q} was delivered and reported");
    }
    eprintln!(
        "NATS servers killed mid-stream: {} delivered, {} reported, in {:?}; sender reconnected {} times, \
         resent {} times; receiver dropped {} duplicates, {} chunks after a gap",
        got.len(),
        reported.len(),
        sent.elapsed(),
        r[0].stat("reconnects") + r[1].stat("reconnects"),
        r[0].stat("resends"),
        r[1].stat("duplicates"),
        r[1].stat("gaps"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_dying_is_reported_within_seconds_and_the_rest_carry_on() {
    let nats = NatsCluster::start(3);
    let mut r = relays(&nats, &["--node-timeout", "1500"]);
    let mut a = Member::join(r[0].addr).await;
    let mut b = Member::join(r[1].addr).await;
    let mut c = Member::join(r[2].addr).await;
    connected(&a, &mut c).await;
    connected(&a, &mut b).await;
    let cid = c.id;
    // a streams to c; c's node is killed part way.
    const N: u32 = 4000;
    let mut killed_at = None;
    for (i, chunk) in (1..=N).collect::<Vec<_>>().chunks(200).enumerate() {
        a.write(&chunk.iter().map(|&q| direct(cid, q)).collect::<Vec<_>>())
            .await;
        if i == 5 {
            r[2].kill();
            killed_at = Some(Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let killed_at = killed_at.unwrap();
    // c saw what it saw until its connection went with its node.
    let mut at_c = Vec::new();
    while let Some(p) = c.next_within(Duration::from_secs(2)).await {
        at_c.push(p.header.message_id);
    }
    let mut reported = Vec::new();
    let mut first_report = None;
    while at_c.len() + reported.len() < N as usize {
        let p = a.next_within(Duration::from_secs(10)).await.unwrap_or_else(|| {
            panic!(
                "{} delivered, {} reported; the rest vanished",
                at_c.len(),
                reported.len()
            )
        });
        assert_eq!(p.header.biz_type, UNDELIVERABLE, "{p:?}");
        first_report.get_or_insert_with(Instant::now);
        reported.push(p.header.message_id);
    }
    let mut all: Vec<u32> = at_c.iter().chain(&reported).copied().collect();
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), N as usize, "every message delivered or reported");
    let took = first_report.unwrap().duration_since(killed_at);
    assert!(
        took < Duration::from_secs(8),
        "the first report came {took:?} after the node died"
    );
    // New sends to the dead node fail at once, with the reason.
    a.write(&[direct(cid, 99_999)]).await;
    let p = a.next().await;
    assert_eq!((p.header.biz_type, p.header.message_id), (UNDELIVERABLE, 99_999));
    assert!(String::from_utf8_lossy(&p.payload).contains("node 3 is down"), "{p:?}");
    // The other nodes carry on.
    connected(&a, &mut b).await;
    connected(&b, &mut a).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_stops_reading_costs_its_senders_bounded_memory() {
    let nats = NatsCluster::start(3);
    let r = relays(&nats, &[]);
    let mut a = Member::join(r[0].addr).await;
    let mut b = Member::join(r[1].addr).await;
    connected(&a, &mut b).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = r[0].resident_kib();
    r[1].pause();
    // 160 MB for b, whose node reads nothing: a's node holds its 8 MiB
    // window and refuses the rest at once.
    let bid = b.id;
    let payload = "x".repeat(4096);
    let mut peak = before;
    let mut refused = 0;
    let mut full = 0;
    for chunk in (1..=40_000u32).collect::<Vec<_>>().chunks(1000) {
        let burst: Vec<Packet> = chunk
            .iter()
            .map(|&q| routed(PacketType::OneWay, DIRECT, q, Some(bid), payload.clone()))
            .collect();
        a.write(&burst).await;
        while let Some(p) = a.next_within(Duration::from_millis(1)).await {
            assert_eq!(p.header.biz_type, UNDELIVERABLE);
            refused += 1;
            full += String::from_utf8_lossy(&p.payload).contains("is full") as usize;
        }
        peak = peak.max(r[0].resident_kib());
    }
    // While b's node stays stopped, every message is refused: at once for a
    // full window, or once b's node is taken for down (its window then
    // empties with a report for each).
    let deadline = Instant::now() + Duration::from_secs(60);
    while refused < 40_000 {
        assert!(
            Instant::now() < deadline,
            "only {refused} of 40,000 refused; sender: {}",
            r[0].stats_line()
        );
        if let Some(p) = a.next_within(Duration::from_millis(50)).await {
            assert_eq!(p.header.biz_type, UNDELIVERABLE);
            refused += 1;
            full += String::from_utf8_lossy(&p.payload).contains("is full") as usize;
        }
        peak = peak.max(r[0].resident_kib());
    }
    r[1].resume();
    assert!(full > 0, "none was refused for a full window");
    assert!(
        peak < before + 64 * 1024,
        "the sending node grew from {before} KiB to {peak} KiB"
    );
    eprintln!(
        "node that stopped reading: sender RSS {before} KiB -> peak {peak} KiB, {refused} refused \
         ({full} for a full window)"
    );
}

async fn node(nats: &NatsCluster, node: u8, server: usize) -> TransportServer {
    let urls = nats.urls_from(server);
    let urls: Vec<&str> = urls.split(',').collect();
    let cluster = ClusterConfig::new("api", node, &urls)
        .unwrap()
        .with_node_timeout(Duration::from_millis(1500));
    TransportServerBuilder::new()
        .with_protocol(TcpServerConfig::new("127.0.0.1:0").unwrap())
        .shards(2)
        .pin_shards(false)
        .cluster(cluster)
        .build()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tokio_api_sends_requests_and_broadcasts_to_other_nodes() {
    let nats = NatsCluster::start(3);
    let one = node(&nats, 1, 0).await;
    let two = node(&nats, 2, 1).await;
    assert_eq!((one.node(), two.node()), (1, 2));
    let mut events = pump_events(&two);
    let mut b = RawClient::connect(two.tcp_addr().unwrap()).await;
    let bid = events.established(b.local_addr()).await;
    assert_eq!(bid.node(), 2);

    // send_to_session from node 1 reaches the session on node 2.
    let mut p = Packet::new(PacketType::OneWay, 5);
    p.set_payload(b"from node 1".to_vec());
    one.send_to_session(bid, p).await.unwrap();
    assert_eq!(b.recv().await.payload.as_ref(), b"from node 1");

    // request: the session on node 2 answers, node 1's caller gets it.
    let (mut reader, mut writer) = b.into_split();
    let answering = tokio::spawn(async move {
        let req = reader.recv().await;
        assert_eq!(req.header.packet_type, PacketType::Request);
        let mut resp = Packet::new(PacketType::Response, req.header.message_id);
        resp.set_payload([b"answer to ".as_slice(), &req.payload].concat());
        writer.write_all(&wire(&resp)).await.unwrap();
        (reader, writer)
    });
    let reply = within(GUARD, "request", one.request(bid, b"q")).await.unwrap();
    assert_eq!(reply.data.as_deref(), Some(&b"answer to q"[..]));
    let (mut reader, _writer) = answering.await.unwrap();

    // broadcast from node 1 counts and reaches node 2's session.
    let mut cast = Packet::new(PacketType::OneWay, 6);
    cast.set_payload(b"everyone".to_vec());
    assert_eq!(within(GUARD, "broadcast", one.broadcast(cast)).await.unwrap(), 1);
    assert_eq!(reader.recv().await.payload.as_ref(), b"everyone");

    // Node 2 leaves: within its node timeout, node 1 says so, typed.
    two.stop().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match one.send_to_session(bid, Packet::one_way(7, b"anyone?".to_vec())).await {
            Err(TransportError::NodeDown(2)) => break,
            other => assert!(Instant::now() < deadline, "still {other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A request fails the same way, at once.
    let e = one.request(bid, b"q").await.unwrap_err();
    assert!(matches!(e, TransportError::NodeDown(2)), "{e:?}");
    one.stop().await;
}
