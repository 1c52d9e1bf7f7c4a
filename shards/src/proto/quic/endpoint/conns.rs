//! The endpoint's connections: their timers, draining each one quinn-proto
//! touched (events, transmits, its next timeout), a finished handshake
//! becoming a session, and a connection's end.

use std::cmp::Reverse;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::Instant;

use bytes::BytesMut;
use quinn_proto::{ConnectionError, ConnectionHandle, DatagramEvent, EcnCodepoint, Event, Side, StreamEvent, VarInt};

use super::{
    app_code, Conn, ConnectReply, Endpoint, Inner, Phase, QuicEndpoints, QuicStream, Relayed, Starting, CLOSE_GRACE,
};
use crate::error::{CloseReason, StartError};
use crate::id::SessionId;
use crate::proto::quic::cid;
use crate::proto::quic::stream::StreamIo;
use crate::shard::{Opening, Shard};
use crate::wire::Wire;

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_datagram(
        self: &Rc<Self>,
        shard: &Rc<Shard>,
        now: Instant,
        from: SocketAddr,
        local_ip: Option<IpAddr>,
        ecn: Option<EcnCodepoint>,
        data: BytesMut,
        may_relay: bool,
    ) {
        if let (true, Some(listener)) = (may_relay, self.listener) {
            let shards = shard.mesh.outboxes.len();
            if let Some(owner) = cid::owner(&data, shards, &shard.mesh.secret).filter(|&o| o != shard.index) {
                // Another shard's connection (the peer's address changed,
                // so the kernel hashed it to this socket): hand it over.
                shard.stats.quic_forwarded.add(1);
                let datagram = Relayed {
                    from,
                    local_ip,
                    ecn: ecn.map(|e| e as u8),
                    data,
                };
                shard.relay(
                    owner,
                    Shard::task(move |owner| QuicEndpoints::relayed(owner, listener, datagram)),
                );
                return;
            }
        }
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        inner.scratch.clear();
        let event = inner.ep.handle(now, from, local_ip, ecn, data, &mut inner.scratch);
        match event {
            Some(DatagramEvent::ConnectionEvent(ch, ev)) => {
                if let Some(c) = inner.conns.get_mut(&ch.0) {
                    c.q.handle_event(ev);
                    mark(&mut inner.dirty, c, ch.0);
                }
            }
            Some(DatagramEvent::NewConnection(incoming)) => {
                // Past the threshold of half-open handshakes, a new peer
                // first proves it can receive at its address: the Retry
                // costs us no state, so a flood of Initials from addresses
                // that never answer cannot hold the slots.
                if self.retry_after.is_some_and(|n| shard.handshakes() >= n) && incoming.may_retry() {
                    match inner.ep.retry(incoming, &mut inner.scratch) {
                        Ok(t) => {
                            shard.stats.quic_retries.add(1);
                            self.send(&t, &inner.scratch[..t.size]);
                        }
                        Err(e) => inner.ep.ignore(e.into_incoming()),
                    }
                    return;
                }
                if shard.reserve(Some(from.ip())).is_err() {
                    // Refused before any handshake work: CONNECTION_REFUSED.
                    let t = inner.ep.refuse(incoming, &mut inner.scratch);
                    self.send(&t, &inner.scratch[..t.size]);
                    return;
                }
                match inner.ep.accept(incoming, now, &mut inner.scratch, None) {
                    Ok((ch, q)) => {
                        let deadline = now + shard.cfg.handshake_timeout;
                        inner.insert(ch, q, Side::Server, None, deadline, Some(from.ip()));
                        self.live.set(self.live.get() + 1);
                    }
                    Err(e) => {
                        shard.unreserve(Some(from.ip()));
                        shard.stats.handshake_failures.add(1);
                        if let Some(t) = e.response {
                            self.send(&t, &inner.scratch[..t.size]);
                        }
                    }
                }
            }
            Some(DatagramEvent::Response(t)) => {
                self.send(&t, &inner.scratch[..t.size]);
            }
            None => {}
        }
    }

    pub(super) fn fire_timers(self: &Rc<Self>, shard: &Rc<Shard>, now: Instant) {
        let mut inner = self.inner.borrow_mut();
        let inner = &mut *inner;
        while let Some(&Reverse((t, ch, gen))) = inner.timers.peek() {
            if t > now {
                break;
            }
            inner.timers.pop();
            let Some(c) = inner.conns.get_mut(&ch) else { continue };
            if c.gen != gen || c.armed != Some(t) {
                continue;
            }
            c.armed = None;
            if c.timeout.is_some_and(|t| t <= now) {
                c.timeout = None;
                c.q.handle_timeout(now);
            }
            if c.deadline.is_some_and(|d| d <= now) {
                c.deadline = None;
                match c.phase {
                    Phase::Handshake { .. } => {
                        // The handshake did not finish in time.
                        c.q.close(now, VarInt::from_u32(app_code::NORMAL), "handshake timeout".into());
                        self.fail_handshake(shard, c, "handshake timed out".into());
                    }
                    Phase::Closing { code } => {
                        c.q.close(now, VarInt::from_u32(code), bytes::Bytes::new());
                        c.phase = Phase::Closed;
                        self.live.set(self.live.get() - 1);
                    }
                    Phase::Open | Phase::Closed => {}
                }
            }
            mark(&mut inner.dirty, c, ch);
        }
    }

    pub(super) fn drive_dirty(self: &Rc<Self>, shard: &Rc<Shard>, now: Instant) {
        loop {
            if self.held.borrow().is_some() {
                // The socket is full: the rest wait, still marked dirty.
                return;
            }
            let next = self.inner.borrow_mut().dirty.pop();
            let Some(ch) = next else { return };
            self.drive(shard, ch, now);
            self.start_sessions(shard);
            self.ask_hook(shard);
        }
    }

    /// Drains one connection: its events, transmits and next timeout.
    pub(super) fn drive(self: &Rc<Self>, shard: &Rc<Shard>, ch: usize, now: Instant) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(c) = inner.conns.get_mut(&ch) else { return };
        c.dirty = false;
        while let Some(ev) = c.q.poll() {
            self.on_event(shard, c, ch, ev, now);
        }
        while let Some(ev) = c.q.poll_endpoint_events() {
            if let Some(back) = inner.ep.handle_event(ConnectionHandle(ch), ev) {
                c.q.handle_event(back);
            }
        }
        loop {
            if self.held.borrow().is_some() {
                // Driven again once the socket drains.
                mark(&mut inner.dirty, c, ch);
                break;
            }
            inner.scratch.clear();
            let Some(t) = c.q.poll_transmit(now, self.max_datagrams, &mut inner.scratch) else {
                break;
            };
            let size = t.size;
            self.send_or_hold(t, &inner.scratch[..size]);
        }
        c.timeout = c.q.poll_timeout();
        if c.q.is_drained() {
            let c = inner.conns.remove(&ch).expect("present");
            drop(guard);
            self.lost(shard, *c);
            return;
        }
        let next = [c.timeout, c.deadline].into_iter().flatten().min();
        if let Some(t) = next {
            if c.armed.is_none_or(|a| t < a) {
                c.armed = Some(t);
                inner.timers.push(Reverse((t, ch, c.gen)));
            }
        }
    }

    pub(super) fn on_event(self: &Rc<Self>, shard: &Rc<Shard>, c: &mut Conn, ch: usize, ev: Event, now: Instant) {
        match ev {
            Event::Connected => self.connected(shard, c, ch),
            Event::ConnectionLost { reason } => {
                c.io.on_lost();
                if let Some(st) = &c.st {
                    st.request_close(lost_reason(&reason));
                }
                match c.phase {
                    Phase::Handshake { .. } => self.fail_handshake(shard, c, reason.to_string()),
                    Phase::Open | Phase::Closing { .. } => {
                        c.phase = Phase::Closed;
                        self.live.set(self.live.get() - 1);
                    }
                    Phase::Closed => {}
                }
            }
            Event::Stream(StreamEvent::Opened { dir }) => c.io.on_opened(&mut c.q, dir),
            Event::Stream(StreamEvent::Readable { id }) => c.io.on_readable(id),
            Event::Stream(StreamEvent::Writable { .. }) | Event::Stream(StreamEvent::Available { .. }) => {
                c.io.on_writable()
            }
            Event::Stream(StreamEvent::Finished { .. }) => {
                // Our output was all acknowledged: a closing session may go.
                if let Phase::Closing { code } = c.phase {
                    c.q.close(now, VarInt::from_u32(code), bytes::Bytes::new());
                    c.phase = Phase::Closed;
                    c.deadline = None;
                    self.live.set(self.live.get() - 1);
                }
            }
            Event::Stream(StreamEvent::Stopped { .. }) => c.io.on_lost(),
            Event::HandshakeDataReady | Event::DatagramReceived | Event::DatagramsUnblocked => {}
        }
    }

    /// The handshake finished: the connection becomes a session.
    pub(super) fn connected(self: &Rc<Self>, shard: &Rc<Shard>, c: &mut Conn, ch: usize) {
        if matches!(c.phase, Phase::Handshake { .. }) && self.must_ask(shard, c, ch) {
            return;
        }
        let reply = match &mut c.phase {
            Phase::Handshake { reply } => reply.take(),
            _ => return,
        };
        c.deadline = None;
        let Some(st) = shard.admit_reserved(Wire::Quic, true, c.peer_ip) else {
            c.q.close(
                Instant::now(),
                VarInt::from_u32(app_code::NORMAL),
                "connection limit".into(),
            );
            c.phase = Phase::Closed;
            self.live.set(self.live.get() - 1);
            if let Some((reply, addr)) = reply {
                let _ = reply.send(Err(StartError::connection_limit(addr)));
            }
            return;
        };
        c.phase = Phase::Open;
        if c.q.side() == Side::Client {
            c.io.announce_push(&mut c.q);
        }
        c.st = Some(Rc::clone(&st));
        let opening = Opening {
            peer: c.q.remote_address(),
            local: self.local,
            peer_certificates: super::tls_info(&c.q).peer_certificates,
        };
        let stream = QuicStream {
            ep: Rc::clone(self),
            ch,
            gen: c.gen,
        };
        self.starting.borrow_mut().push(Starting {
            st,
            stream,
            opening,
            reply: reply.map(|(r, _)| r),
        });
    }

    /// Runs the sessions `connected` prepared.
    pub(super) fn start_sessions(self: &Rc<Self>, shard: &Rc<Shard>) {
        let starting = std::mem::take(&mut *self.starting.borrow_mut());
        for s in starting {
            let (ep, ch, id) = (Rc::clone(self), s.stream.ch, s.st.id);
            let stream = crate::session_io::Stream(s.stream);
            shard.start_session(s.st, stream, &[], s.opening, move |reason| {
                ep.session_ended(ch, id, reason)
            });
            if let Some(reply) = s.reply {
                let _ = reply.send(Ok(id));
            }
        }
    }

    /// Our handshakes to these addresses met "port unreachable": nobody
    /// serves there, so they fail now rather than at their timeout.
    pub(super) fn refused(&self, shard: &Shard, now: Instant, from: &[SocketAddr]) {
        if from.is_empty() {
            return;
        }
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        for (ch, c) in inner.conns.iter_mut() {
            let handshaking = matches!(c.phase, Phase::Handshake { .. });
            if handshaking && c.q.side() == Side::Client && from.contains(&c.q.remote_address()) {
                c.deadline = None;
                c.q.close(now, VarInt::from_u32(app_code::NORMAL), "refused".into());
                self.fail_with(shard, c, std::io::ErrorKind::ConnectionRefused.into());
                mark(&mut inner.dirty, c, *ch);
            }
        }
    }

    /// A handshake that will not finish: its reservation is released and
    /// a waiting `connect` is told why.
    pub(super) fn fail_handshake(&self, shard: &Shard, c: &mut Conn, why: String) {
        self.fail_with(shard, c, std::io::Error::other(why));
    }

    /// Ends a server connection still in its handshake without counting a
    /// handshake failure (the accept hook refused it); `false` if it had
    /// ended already.
    pub(super) fn fail_quietly(&self, shard: &Shard, c: &mut Conn) -> bool {
        if !matches!(c.phase, Phase::Handshake { .. }) {
            return false;
        }
        shard.unreserve(c.peer_ip);
        c.phase = Phase::Closed;
        self.live.set(self.live.get() - 1);
        true
    }

    pub(super) fn fail_with(&self, shard: &Shard, c: &mut Conn, source: std::io::Error) {
        let Phase::Handshake { reply } = &mut c.phase else {
            return;
        };
        shard.unreserve(c.peer_ip);
        if c.q.side() == Side::Server {
            shard.stats.handshake_failures.add(1);
        }
        if let Some((reply, addr)) = reply.take() {
            let _ = reply.send(Err(StartError::Connect { addr, source }));
        }
        c.phase = Phase::Closed;
        self.live.set(self.live.get() - 1);
    }

    /// A connection quinn has finished with.
    pub(super) fn lost(&self, shard: &Shard, mut c: Conn) {
        c.io.on_lost();
        self.fail_handshake(shard, &mut c, "connection closed during the handshake".into());
        if matches!(c.phase, Phase::Open | Phase::Closing { .. }) {
            self.live.set(self.live.get() - 1);
        }
        if let Some(st) = &c.st {
            st.request_close(CloseReason::Io(std::io::ErrorKind::ConnectionAborted));
        }
    }

    /// The session on `ch` ended with `reason`: close the connection,
    /// after its last bytes are acknowledged when it ended cleanly.
    pub(super) fn session_ended(self: &Rc<Self>, ch: usize, _id: SessionId, reason: &CloseReason) {
        let now = Instant::now();
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(c) = inner.conns.get_mut(&ch) else { return };
        c.st = None;
        if !matches!(c.phase, Phase::Open) {
            return;
        }
        let code = match reason {
            CloseReason::ProtocolError(_) | CloseReason::WebSocket(_) => app_code::PROTOCOL,
            CloseReason::PolicyViolation(_) => app_code::POLICY,
            _ => app_code::NORMAL,
        };
        let graceful = code == app_code::NORMAL && c.io.has_output();
        if graceful {
            c.io.finish(&mut c.q);
            c.phase = Phase::Closing { code };
            c.deadline = Some(now + CLOSE_GRACE);
        } else {
            c.q.close(now, VarInt::from_u32(code), reason.to_string().into_bytes().into());
            c.phase = Phase::Closed;
            self.live.set(self.live.get() - 1);
        }
        mark(&mut inner.dirty, c, ch);
        drop(guard);
        self.wake();
    }
}

impl Inner {
    pub(super) fn insert(
        &mut self,
        ch: ConnectionHandle,
        q: quinn_proto::Connection,
        side: Side,
        reply: Option<(ConnectReply, SocketAddr)>,
        deadline: Instant,
        peer_ip: Option<IpAddr>,
    ) {
        self.next_gen += 1;
        let mut c = Conn {
            q,
            io: StreamIo::new(side),
            phase: Phase::Handshake { reply },
            st: None,
            timeout: None,
            deadline: Some(deadline),
            armed: None,
            gen: self.next_gen,
            dirty: false,
            peer_ip,
            asked: false,
        };
        mark(&mut self.dirty, &mut c, ch.0);
        self.conns.insert(ch.0, Box::new(c));
    }
}

pub(super) fn mark(dirty: &mut Vec<usize>, c: &mut Conn, ch: usize) {
    if !c.dirty {
        c.dirty = true;
        dirty.push(ch);
    }
}

/// Why a session ends when its connection is lost.
fn lost_reason(e: &ConnectionError) -> CloseReason {
    use std::io::ErrorKind;
    match e {
        ConnectionError::TimedOut => CloseReason::IdleTimeout,
        ConnectionError::ApplicationClosed(_) | ConnectionError::ConnectionClosed(_) => CloseReason::PeerClosed,
        ConnectionError::Reset => CloseReason::Io(ErrorKind::ConnectionReset),
        ConnectionError::LocallyClosed => CloseReason::LocalClose,
        ConnectionError::TransportError(_) | ConnectionError::VersionMismatch | ConnectionError::CidsExhausted => {
            CloseReason::Io(ErrorKind::InvalidData)
        }
    }
}
