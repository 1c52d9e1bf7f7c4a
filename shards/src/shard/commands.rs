//! What the inbox asks of a shard: sends, requests, closes, stats, a
//! stop, and tasks from the layers above.

use std::rc::Rc;
use std::time::{Duration, Instant};

use super::Shard;
use crate::error::{CloseReason, SendError};
use crate::event::{Command, ReplyTx};
use crate::id::SessionId;
use crate::packet::{Packet, PacketType};
use crate::session::handler::Undelivered;
use crate::session::PendingRequest;
use crate::uplink::Outbound;

/// How long a stop waits for the application to take the close events
/// before it gives up on the ones that do not fit its queue.
const STOP_EVENT_GRACE: Duration = Duration::from_secs(5);

impl Shard {
    pub(super) fn handle(self: &Rc<Self>, cmd: Command) {
        self.stats.mesh_in.add(1);
        match cmd {
            Command::Send {
                id,
                packet,
                wait,
                reserved,
                report,
            } => match self.session(id) {
                Some(s) => {
                    if let Err((packet, e)) = s.offer(&self.ctx, packet, wait, reserved) {
                        self.undelivered(id, packet, e, report);
                    }
                }
                None => {
                    // The session is gone, but the reservation was made in
                    // its slot and must come back to it.
                    self.release(id, reserved);
                    match wait {
                        Some((_, reply)) => {
                            let _ = reply.send(Err(SendError::SessionNotFound(id)));
                        }
                        None => self.undelivered(id, packet, SendError::SessionNotFound(id), report),
                    }
                }
            },
            Command::Report { id, packet, error } => self.undelivered(id, packet, error, None),
            Command::Event(ev) => {
                self.pump.emit(ev, None);
            }
            Command::Request {
                id,
                mut packet,
                timeout,
                reply,
            } => self.start_request(id, &mut packet, timeout, reply),
            Command::Abandon { id } => {
                if let Some(s) = self.session(id) {
                    s.note_abandoned();
                }
            }
            Command::Broadcast { packet, except, reply } => {
                let sessions: Vec<_> = self.slab.borrow().iter().cloned().collect();
                let mut reached = 0;
                for s in sessions.into_iter().filter(|s| Some(s.id) != except) {
                    match s.offer(self, packet.clone(), None, 0) {
                        Ok(()) => reached += 1,
                        Err((packet, e)) => self.undelivered(s.id, packet, e, None),
                    }
                }
                if let Some(reply) = reply {
                    let _ = reply.send(reached);
                }
            }
            Command::Close { id, reason, reply } => match self.session(id) {
                // Answered by `finish`, once the session is really gone.
                Some(s) => {
                    s.close_waiters.borrow_mut().push(reply);
                    s.request_close(reason);
                }
                None => {
                    let _ = reply.send(false);
                }
            },
            Command::WatchClose { id, reply } => match self.session(id) {
                Some(s) => s.close_waiters.borrow_mut().push(reply),
                None => {
                    let _ = reply.send(false);
                }
            },
            // Work of the layers above (listen, connect, relayed datagrams).
            Command::Task(task) => (task.0)(self as &dyn std::any::Any),
            Command::Sessions { reply } => {
                let _ = reply.send(self.slab.borrow().iter().map(|s| s.id).collect());
            }
            Command::Unlisten { reply } => {
                self.unlisten();
                let _ = reply.send(());
            }
            Command::SessionStats { id, reply } => {
                let stats = self
                    .session(id)
                    .map(|s| s.counters.snapshot(id, s.queued(), s.pending.borrow().len()));
                let _ = reply.send(stats);
            }
            Command::Stop { drain_until, reply } => {
                // Already done by `Unlisten` when the engine stops in two
                // phases; a stop from `Drop` comes alone.
                self.unlisten();
                for s in self.slab.borrow().iter() {
                    match drain_until {
                        Some(_) => s.start_draining(),
                        None => s.request_close(CloseReason::Shutdown),
                    }
                }
                let shard = Rc::clone(self);
                glommio::spawn_local(async move {
                    if let Some(deadline) = drain_until {
                        // Sessions close themselves as they go quiet; the
                        // deadline closes the rest.
                        while !shard.slab.borrow().is_empty() && Instant::now() < deadline {
                            glommio::timer::sleep(Duration::from_millis(1)).await;
                        }
                        for s in shard.slab.borrow().iter() {
                            s.request_close(CloseReason::Shutdown);
                        }
                    }
                    // Sessions end at their next poll; their close events get
                    // a bounded time to be taken by the application.
                    let deadline = Instant::now() + STOP_EVENT_GRACE;
                    loop {
                        let late = Instant::now() >= deadline;
                        // An accept loop ends once its shut-down listener's
                        // pending accept completes; a ring that never
                        // completes it must not hold the stop forever.
                        let accepting = shard.accept_loops.get() > 0 && !late;
                        if shard.slab.borrow().is_empty() && shard.pump.is_idle() && !shard.drivers.busy() && !accepting
                        {
                            break;
                        }
                        if late {
                            shard.pump.abandon.set(true);
                        }
                        glommio::timer::sleep(Duration::from_millis(1)).await;
                    }
                    let _ = reply.send(());
                })
                .detach();
            }
        }
    }

    /// A packet for `id` that was accepted and cannot be queued: the node
    /// it came from is told (`report`), or this node's handler hears it.
    fn undelivered(&self, id: SessionId, packet: Packet, error: SendError, report: Option<u8>) {
        if let Some(node) = report {
            if let Some(uplink) = self.mesh.uplink.get() {
                let _ = uplink.submit(Outbound::Undelivered {
                    node,
                    target: id,
                    packet,
                    error,
                });
            }
            return;
        }
        match &self.handler {
            Some(handler) => handler.on_undelivered(&mut Undelivered {
                target: id,
                packet: &packet,
                error: &error,
                ctx: &self.ctx,
            }),
            None => self.send_failed(id, &packet, error),
        }
    }

    fn start_request(&self, id: SessionId, packet: &mut Packet, timeout: Duration, reply: ReplyTx) {
        let Some(s) = self.session(id) else {
            let _ = reply.send(Err(SendError::SessionNotFound(id)));
            return;
        };
        if s.pending.borrow().len() >= self.cfg.max_inflight_requests {
            let _ = reply.send(Err(SendError::TooManyRequests(id)));
            return;
        }
        packet.header.packet_type = PacketType::Request;
        let mid = s.next_request_id();
        packet.header.message_id = mid;
        if let Err(e) = s.enqueue(&self.ctx, packet) {
            let _ = reply.send(Err(e));
            return;
        }
        s.pending.borrow_mut().insert(
            mid,
            PendingRequest {
                reply,
                deadline: Instant::now() + timeout,
            },
        );
        s.watch_deadlines(&self.ctx);
        self.pending_requests.set(self.pending_requests.get() + 1);
        self.stats.requests_in_flight.add(1);
        self.wake_sweeper();
    }
}
