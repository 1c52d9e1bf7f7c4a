//! The session handler (`TransportServerBuilder::session_handler`), run
//! inline on the shards: connect and disconnect callbacks fire once per
//! session and bracket its packets; requests are answered at once on the
//! shard or later from another thread; a handler that sends to its own
//! session (from any callback, by any path) does not deadlock.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::*;
use msgtrans::error::CloseReason;
use msgtrans::packet::{CompressionType, Packet, PacketType};
use msgtrans::{Connected, Inline, Responder, SessionHandler, SessionId};
use tokio::sync::mpsc;

/// What the handler saw, in order.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Connected(SessionId),
    Message(SessionId, Vec<u8>),
    Request(SessionId, u32),
    Disconnected(SessionId, CloseReason),
}

/// Biz types that pick what the handler does with a packet.
const ANSWER_INLINE: u8 = 1;
const ANSWER_LATER: u8 = 2;
const SEND_TO_SELF: u8 = 3;
const RESPOND_FROM_SHARD: u8 = 4;

struct Handler {
    seen: mpsc::UnboundedSender<Seen>,
    later: mpsc::UnboundedSender<Responder>,
}

impl SessionHandler for Handler {
    fn on_connected(&self, session: &mut Connected<'_>) {
        let _ = self.seen.send(Seen::Connected(session.session_id()));
        // A greeting to the new session, before it has sent anything.
        session.send(Packet::one_way(1, b"welcome".to_vec())).unwrap();
    }

    fn on_message(&self, ctx: &mut Inline<'_>) {
        let id = ctx.session_id();
        let _ = self.seen.send(Seen::Message(id, ctx.payload().to_vec()));
        if ctx.header().biz_type == SEND_TO_SELF {
            // Both ways of sending to the session being served.
            let mut h = ctx.header().clone();
            h.biz_type = 0;
            let payload = ctx.payload().to_vec();
            ctx.write(&h, &[], &payload);
            ctx.send_to(id, Packet::one_way(2, b"again".to_vec())).unwrap();
        }
    }

    fn on_request(&self, ctx: &mut Inline<'_>, responder: Responder) {
        let _ = self.seen.send(Seen::Request(ctx.session_id(), ctx.header().message_id));
        match ctx.header().biz_type {
            ANSWER_INLINE => {
                let upper = ctx.payload().to_ascii_uppercase();
                responder.respond_inline(ctx, &upper);
            }
            ANSWER_LATER => {
                let _ = self.later.send(responder);
            }
            // The cross-thread path, taken on the shard itself.
            RESPOND_FROM_SHARD => responder.respond(b"from the shard".to_vec()).unwrap(),
            _ => drop(responder),
        }
    }

    fn on_disconnected(&self, session_id: SessionId, reason: &CloseReason) {
        let _ = self.seen.send(Seen::Disconnected(session_id, reason.clone()));
    }
}

struct Fixture {
    server: msgtrans::TransportServer,
    seen: mpsc::UnboundedReceiver<Seen>,
    later: mpsc::UnboundedReceiver<Responder>,
}

async fn start() -> Fixture {
    let (seen_tx, seen) = mpsc::unbounded_channel();
    let (later_tx, later) = mpsc::unbounded_channel();
    let handler = Handler {
        seen: seen_tx,
        later: later_tx,
    };
    let server = within(GUARD, "build", builder().session_handler(handler).build())
        .await
        .unwrap();
    Fixture { server, seen, later }
}

async fn next_seen(rx: &mut mpsc::UnboundedReceiver<Seen>) -> Seen {
    within(GUARD, "handler callback", rx.recv())
        .await
        .expect("handler gone")
}

/// Connects and reads the greeting that `on_connected` sends.
async fn connect(f: &Fixture) -> RawClient {
    let mut c = RawClient::connect(addr(&f.server)).await;
    assert_eq!(&c.recv().await.payload[..], b"welcome");
    c
}

fn request(id: u32, biz: u8, payload: &[u8]) -> Packet {
    let mut p = Packet::request(id, payload.to_vec());
    p.set_biz_type(biz);
    p.set_ext_header(b"ctx".to_vec());
    p
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_disconnect_fire_once_each_around_the_sessions_packets() {
    let mut f = start().await;
    let mut clients = Vec::new();
    for i in 0..6u8 {
        let mut c = connect(&f).await;
        c.send(&Packet::one_way(10, vec![i])).await;
        clients.push(c);
    }
    // Half close themselves; the rest are closed by stop().
    for c in clients.drain(..3) {
        drop(c);
    }
    let mut per_session: HashMap<SessionId, Vec<Seen>> = HashMap::new();
    let mut closed = 0;
    while closed < 3 {
        let s = next_seen(&mut f.seen).await;
        let id = match &s {
            Seen::Connected(id) | Seen::Message(id, _) | Seen::Request(id, _) | Seen::Disconnected(id, _) => *id,
        };
        closed += matches!(s, Seen::Disconnected(..)) as usize;
        per_session.entry(id).or_default().push(s);
    }
    f.server.stop().await;
    while let Ok(s) = f.seen.try_recv() {
        let id = match &s {
            Seen::Connected(id) | Seen::Message(id, _) | Seen::Request(id, _) | Seen::Disconnected(id, _) => *id,
        };
        per_session.entry(id).or_default().push(s);
    }
    assert_eq!(per_session.len(), 6, "{per_session:?}");
    let mut reasons = Vec::new();
    for (id, seen) in &per_session {
        assert_eq!(seen.len(), 3, "{id}: {seen:?}");
        assert_eq!(seen[0], Seen::Connected(*id));
        assert!(
            matches!(&seen[1], Seen::Message(s, p) if s == id && p.len() == 1),
            "{seen:?}"
        );
        match &seen[2] {
            Seen::Disconnected(s, reason) if s == id => reasons.push(reason.clone()),
            other => panic!("{id}: last callback {other:?}"),
        }
    }
    reasons.sort_by_key(|r| format!("{r:?}"));
    assert_eq!(
        reasons,
        [
            CloseReason::PeerClosed,
            CloseReason::PeerClosed,
            CloseReason::PeerClosed,
            CloseReason::Shutdown,
            CloseReason::Shutdown,
            CloseReason::Shutdown
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_inline_keeping_its_header() {
    let f = start().await;
    let mut c = connect(&f).await;
    c.send(&request(77, ANSWER_INLINE, b"shout")).await;
    let r = c.recv().await;
    assert_eq!(
        (r.packet_type(), r.message_id(), r.biz_type()),
        (PacketType::Response, 77, ANSWER_INLINE)
    );
    assert_eq!((&r.ext_header[..], &r.payload[..]), (&b"ctx"[..], &b"SHOUT"[..]));

    // A compressed request: the handler reads plain text, and the answer
    // goes back compressed the same way.
    let body = "make this louder ".repeat(40);
    let mut p = request(78, ANSWER_INLINE, b"");
    p.set_compression(CompressionType::Zstd);
    p.set_payload(zstd::bulk::compress(body.as_bytes(), 3).unwrap());
    c.send(&p).await;
    let r = c.recv().await;
    assert_eq!((r.message_id(), r.compression()), (78, CompressionType::Zstd));
    let plain = zstd::bulk::decompress(&r.payload, 1 << 20).unwrap();
    assert_eq!(plain, body.to_ascii_uppercase().as_bytes());
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_is_answered_later_from_another_thread_while_the_session_goes_on() {
    let mut f = start().await;
    let mut c = connect(&f).await;
    c.send(&request(5, ANSWER_LATER, b"slow")).await;
    let responder = within(GUARD, "deferred responder", f.later.recv()).await.unwrap();
    assert_eq!(responder.message_id(), 5);

    // The session is not held up by the open request.
    c.send(&request(6, ANSWER_INLINE, b"quick")).await;
    let r = c.recv().await;
    assert_eq!((r.message_id(), &r.payload[..]), (6, &b"QUICK"[..]));

    // Answered from a plain OS thread, off every shard.
    std::thread::spawn(move || responder.respond(b"done at last".to_vec()))
        .join()
        .unwrap()
        .unwrap();
    let r = c.recv().await;
    assert_eq!(
        (r.packet_type(), r.message_id(), r.biz_type()),
        (PacketType::Response, 5, ANSWER_LATER)
    );
    assert_eq!((&r.ext_header[..], &r.payload[..]), (&b"ctx"[..], &b"done at last"[..]));
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_whose_session_has_gone_says_so() {
    let mut f = start().await;
    let mut c = connect(&f).await;
    c.send(&request(9, ANSWER_LATER, b"never mind")).await;
    let responder = within(GUARD, "deferred responder", f.later.recv()).await.unwrap();
    let id = responder.session_id();
    drop(c);
    loop {
        if let Seen::Disconnected(s, _) = next_seen(&mut f.seen).await {
            assert_eq!(s, id);
            break;
        }
    }
    assert_eq!(
        responder.respond(b"too late".to_vec()),
        Err(msgtrans::error::SendError::SessionNotFound(id))
    );
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_sending_to_its_own_session_does_not_deadlock() {
    let f = start().await;
    // Several sessions, so both shards serve some.
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(connect(&f).await);
    }
    for round in 0..20u32 {
        for c in &mut clients {
            let mut p = Packet::one_way(round, format!("echo {round}").into_bytes());
            p.set_biz_type(SEND_TO_SELF);
            c.send(&p).await;
            c.send(&request(1000 + round, RESPOND_FROM_SHARD, b"?")).await;
            let echo = c.recv().await;
            assert_eq!(echo.payload_as_string().unwrap(), format!("echo {round}"));
            assert_eq!(&c.recv().await.payload[..], b"again");
            let r = c.recv().await;
            assert_eq!((r.message_id(), &r.payload[..]), (1000 + round, &b"from the shard"[..]));
        }
    }
    f.server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_responder_does_not_hold_up_a_graceful_shutdown() {
    let mut f = start().await;
    let mut c = connect(&f).await;
    // Biz type 0: the handler drops the responder without answering.
    c.send(&request(3, 0, b"ignored")).await;
    loop {
        if let Seen::Request(_, 3) = next_seen(&mut f.seen).await {
            break;
        }
    }
    // Nothing is in flight any more, so the session closes as soon as the
    // drain starts; an hour's deadline would trip the hang guard.
    within(GUARD, "graceful shutdown", f.server.shutdown(Duration::from_secs(3600))).await;
    assert!(c.recv_or_eof().await.is_none(), "no answer, then the close");
}
