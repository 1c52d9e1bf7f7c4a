//! The MsgTrans 1.0.10 client workout shared by the WebSocket and QUIC
//! compat tests (the TCP test has its own, capped at 1.0's 1 MiB TCP
//! reader limit). Included by path, so it stays out of tests/common/mod.rs,
//! which the 2.0 package also includes.

use std::sync::Arc;

use bytes::Bytes;
use msgtrans::event::{ClientEvent, TransportContext, TransportStatus};
use msgtrans::transport::client::TransportClient;
use msgtrans::transport::TransportOptions;
use tokio::sync::broadcast;

use super::common::{payload, WAIT};

/// Next `MessageReceived` (skipping `MessageSent`); panics on disconnect,
/// error or silence.
pub async fn next_message(events: &mut broadcast::Receiver<ClientEvent>) -> TransportContext {
    loop {
        let ev = tokio::time::timeout(WAIT, events.recv())
            .await
            .expect("no event from the 1.0 client within the wait")
            .expect("1.0 client event channel closed or lagged");
        match ev {
            ClientEvent::MessageReceived(ctx) => return ctx,
            ClientEvent::MessageSent { .. } | ClientEvent::Connected { .. } => {}
            ClientEvent::Disconnected { reason } => panic!("1.0 client client disconnected: {reason:?}"),
            ClientEvent::Error { error } => panic!("1.0 client client error event: {error}"),
        }
    }
}

/// The 1.0 client workout over one connection: 100 one-way echoes in
/// order, one-way and request options, 20 sequential and 20 concurrent
/// requests, 1 MiB and 4 MiB both ways, then a clean disconnect. `tag`
/// names the transport in messages and payloads.
pub async fn exercise(client: TransportClient, tag: &str) {
    let mut events = client.subscribe_events();

    // 100 one-way packets -> 100 echoes, same payload and message id, in order.
    let mut sent = Vec::new();
    for i in 0..100 {
        let p = payload(&format!("{tag}-oneway"), i);
        let r = client.send(&p).await.expect("1.0 client send");
        assert_eq!(r.status, TransportStatus::Sent);
        sent.push((r.message_id, p));
    }
    for (k, (id, p)) in sent.iter().enumerate() {
        let ctx = next_message(&mut events).await;
        assert!(!ctx.is_request(), "echo #{k} arrived as a request");
        assert_eq!(ctx.message_id, *id, "echo #{k}: message id (order)");
        assert_eq!(ctx.data, *p, "echo #{k}: payload");
        assert_eq!(ctx.biz_type, 0, "echo #{k}: biz_type");
        assert_eq!(ctx.ext_header, None, "echo #{k}: ext header");
    }

    // One-way with biz_type + ext header: the echo must carry both back.
    let ext = Bytes::from(format!("ext-header:v1;trace={tag}"));
    client
        .send_with_options(
            Bytes::from(format!("{tag} one-way with options")),
            TransportOptions::new().with_biz_type(43).with_ext_header(ext.clone()),
        )
        .await
        .expect("1.0 client send_with_options");
    let ctx = next_message(&mut events).await;
    assert_eq!(ctx.data, format!("{tag} one-way with options").as_bytes());
    assert_eq!(ctx.biz_type, 43);
    assert_eq!(ctx.ext_header.as_deref(), Some(&ext[..]));

    // 20 sequential requests.
    for i in 0..20 {
        let p = payload(&format!("{tag}-request"), i);
        let r = client.request(&p).await.expect("1.0 client request");
        assert_eq!(
            r.status,
            TransportStatus::Completed,
            "request #{i} (1.0 reports timeouts as Ok(Timeout))"
        );
        assert_eq!(r.data.as_deref(), Some(&p[..]), "request #{i}: response payload");
    }

    // 20 concurrent requests.
    let client = Arc::new(client);
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let c = Arc::clone(&client);
        let p = payload(&format!("{tag}-concurrent"), i * 5);
        tasks.spawn(async move {
            let r = c.request(&p).await.expect("1.0 client request (concurrent)");
            assert_eq!(r.status, TransportStatus::Completed, "concurrent request #{i}");
            assert_eq!(r.data.as_deref(), Some(&p[..]), "concurrent request #{i}: payload");
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("concurrent request task");
    }

    // request_with_options with biz_type + ext header (1.0 returns only the payload).
    for i in 0..3u8 {
        let p = Bytes::from(payload(&format!("{tag}-req-opts"), i as usize * 11));
        let got = client
            .request_with_options(
                p.clone(),
                TransportOptions::new()
                    .with_biz_type(200 + i)
                    .with_ext_header(Bytes::from(format!("route=shard-{i}")))
                    .with_timeout(WAIT),
            )
            .await
            .expect("1.0 client request_with_options");
        assert_eq!(got, p, "request_with_options #{i}: payload");
    }

    // Large payloads: 1 MiB and 4 MiB both ways (1.0's WebSocket and QUIC
    // readers have no 1 MiB cap, unlike its TCP reader).
    for size in [1024 * 1024, 4 * 1024 * 1024] {
        let big: Vec<u8> = (0..size).map(|k| (k % 251) as u8).collect();
        let r = client.request(&big).await.expect("1.0 client big request");
        assert_eq!(r.status, TransportStatus::Completed, "{size}-byte request");
        assert!(
            r.data.as_deref() == Some(&big[..]),
            "{size}-byte request: payload differs"
        );
        let id = client.send(&big).await.expect("1.0 client big send").message_id;
        let ctx = next_message(&mut events).await;
        assert_eq!(ctx.message_id, id);
        assert!(ctx.data == big, "{size}-byte echo: payload differs");
    }

    // Still healthy, then a clean disconnect.
    let r = client
        .request(b"last")
        .await
        .expect("1.0 client request after big payloads");
    assert_eq!(r.data.as_deref(), Some(&b"last"[..]));
    client.disconnect().await.expect("1.0 client disconnect");
}

