//! The client's event stream. Engine events (connections, messages, send
//! failures) and the client's own notices (reconnect give-ups) arrive on
//! two bounded queues; neither drops anything. Events a stop had to give up
//! on are counted, and the stream reports the count as
//! [`TransportError::EventsLost`] before it ends.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::SystemTime;

use msgtrans_shards::EngineEvent;

use super::shared::Shared;
use crate::error::TransportError;
use crate::event::{ClientEvent, ConnectionInfo, EventStreamClosed, TransportContext};

/// The client's event stream. Clones share one queue: each event goes to
/// exactly one of them.
#[derive(Clone)]
pub struct ClientEventStream {
    pub(crate) shared: Arc<Shared>,
}

enum Next {
    Engine(EngineEvent),
    Notice(TransportError),
    /// A queue closed or the stop finished: look again.
    Stopped,
}

impl ClientEventStream {
    fn convert(&self, ev: EngineEvent) -> Option<ClientEvent> {
        Some(match ev {
            EngineEvent::Opened {
                id,
                peer,
                local,
                protocol,
                peer_certificates,
            } => ClientEvent::Connected {
                info: ConnectionInfo {
                    session_id: id,
                    local_addr: local,
                    peer_addr: peer,
                    protocol: protocol.into(),
                    established_at: SystemTime::now(),
                    peer_certificates,
                },
            },
            EngineEvent::Closed { reason, .. } => ClientEvent::Disconnected { reason },
            EngineEvent::Message { id, packet, received } => {
                ClientEvent::MessageReceived(TransportContext::new(id, packet, received, &self.shared.engine))
            }
            EngineEvent::SendFailed { error, .. } => ClientEvent::Error { error: error.into() },
            EngineEvent::BroadcastIncomplete { error, .. } => ClientEvent::Error { error: error.into() },
            EngineEvent::Listening { .. } => return None,
        })
    }

    /// Once the engine has stopped and its queue is empty: what is left
    /// (notices, then the count of events given up), or `None` at the end.
    fn tail(&self) -> Option<ClientEvent> {
        let s = &self.shared;
        if let Ok(error) = s.notices.try_recv() {
            return Some(ClientEvent::Error { error });
        }
        let engine_lost: u64 = s.engine.stats().iter().map(|x| x.events_abandoned).sum();
        let count = engine_lost + s.notices_lost.load(Ordering::Relaxed);
        if count > 0 && !s.lost_reported.swap(true, Ordering::AcqRel) {
            return Some(ClientEvent::Error {
                error: TransportError::EventsLost { count },
            });
        }
        None
    }

    /// The next event; `Err` once the client has stopped and every event
    /// has been taken.
    pub async fn recv(&mut self) -> std::result::Result<ClientEvent, EventStreamClosed> {
        let s = Arc::clone(&self.shared);
        loop {
            // Engine events first: a drop's `Disconnected` is queued before
            // the supervisor can give up on it.
            let next = if let Ok(ev) = s.events.try_recv() {
                Next::Engine(ev)
            } else if let Ok(n) = s.notices.try_recv() {
                Next::Notice(n)
            } else if s.stopped.is_disconnected() {
                // The stop has finished and both queues are empty.
                return self.tail().ok_or(EventStreamClosed);
            } else if s.events.is_disconnected() {
                // The shards are gone; the stop is finishing.
                let _ = s.stopped.recv_async().await;
                Next::Stopped
            } else {
                let engine = async { s.events.recv_async().await.map_or(Next::Stopped, Next::Engine) };
                let notice = async { s.notices.recv_async().await.map_or(Next::Stopped, Next::Notice) };
                let stop = async {
                    let _ = s.stopped.recv_async().await;
                    Next::Stopped
                };
                futures_lite::future::or(engine, futures_lite::future::or(notice, stop)).await
            };
            match next {
                Next::Engine(ev) => {
                    if let EngineEvent::Opened { id, .. } = &ev {
                        s.slots.settle(*id).await;
                    }
                    if let Some(e) = self.convert(ev) {
                        return Ok(e);
                    }
                }
                Next::Stopped => {}
                Next::Notice(error) => return Ok(ClientEvent::Error { error }),
            }
        }
    }

    /// The next event, or `None` once the stream has ended.
    pub async fn next(&mut self) -> Option<ClientEvent> {
        self.recv().await.ok()
    }
}
