//! The server's event stream: what the shards report, as MsgTrans 1.0's
//! `ServerEvent`s.

use std::sync::atomic::Ordering;
use std::task::Poll;
use std::time::SystemTime;

use msgtrans_shards::EngineEvent;

use super::handle::TransportServer;
use crate::event::{ConnectionInfo, EventStreamClosed, ServerEvent, TransportContext};

impl TransportServer {
    /// The server's events. Every event goes to exactly one receiver: clones
    /// of the stream share it, so nothing is duplicated and nothing is
    /// dropped. Events that arrive before anyone subscribes wait in the
    /// queue (up to the event capacity, after which reading pauses).
    pub fn subscribe_events(&self) -> ServerEventStream {
        if !self.inner.lifecycle.swap(true, Ordering::Relaxed) {
            for (_, a) in &self.inner.addrs {
                let _ = self.inner.events_tx.try_send(EngineEvent::Listening { addr: *a });
            }
            self.inner.bell.ring();
        }
        ServerEventStream { server: self.clone() }
    }

    /// Same as [`TransportServer::subscribe_events`].
    pub fn events(&self) -> ServerEventStream {
        self.subscribe_events()
    }
}

/// The server's event stream.
pub struct ServerEventStream {
    server: TransportServer,
}

impl ServerEventStream {
    fn convert(&self, ev: EngineEvent) -> ServerEvent {
        let engine = &self.server.inner.engine;
        match ev {
            EngineEvent::Opened {
                id,
                peer,
                local,
                protocol,
                peer_certificates,
            } => ServerEvent::ConnectionEstablished {
                session_id: id,
                info: ConnectionInfo {
                    session_id: id,
                    local_addr: local,
                    peer_addr: peer,
                    protocol: protocol.into(),
                    established_at: SystemTime::now(),
                    peer_certificates,
                },
            },
            EngineEvent::Closed { id, reason } => ServerEvent::ConnectionClosed { session_id: id, reason },
            EngineEvent::Message { id, packet, received } => ServerEvent::MessageReceived {
                session_id: id,
                context: TransportContext::new(id, packet, received, engine),
            },
            EngineEvent::SendFailed { id, error, .. } => ServerEvent::TransportError {
                session_id: Some(id),
                error: error.into(),
            },
            EngineEvent::BroadcastIncomplete { error, .. } => ServerEvent::TransportError {
                session_id: None,
                error: error.into(),
            },
            EngineEvent::Listening { addr } => ServerEvent::ServerStarted { address: addr },
        }
    }

    /// The next event; `Err` once the server has stopped and every event
    /// has been taken.
    pub async fn recv(&mut self) -> std::result::Result<ServerEvent, EventStreamClosed> {
        loop {
            if let Some(ev) = self.server.inner.events.try_recv() {
                return Ok(self.convert(ev));
            }
            if self.server.inner.stopped_rx.is_disconnected() {
                // Every event is out; `ServerStopped` is the last one, made
                // here so a full queue at stop time cannot crowd it out.
                let inner = &self.server.inner;
                if inner.lifecycle.load(Ordering::Relaxed) && !inner.stopped_reported.swap(true, Ordering::AcqRel) {
                    return Ok(ServerEvent::ServerStopped);
                }
                return Err(EventStreamClosed);
            }
            // Sleep until an event or the stop: look, arm, look again
            // (the protocol in `msgtrans_sync::waitlist`).
            let inner = &self.server.inner;
            std::future::poll_fn(|cx| {
                inner.bell.arm(cx.waker());
                if inner.events.is_empty() && !inner.stopped_rx.is_disconnected() {
                    Poll::Pending
                } else {
                    Poll::Ready(())
                }
            })
            .await;
        }
    }

    /// The next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<ServerEvent> {
        self.recv().await.ok()
    }

    /// An event if one is ready now.
    pub fn try_recv(&mut self) -> Option<ServerEvent> {
        self.server.inner.events.try_recv().map(|ev| self.convert(ev))
    }
}
