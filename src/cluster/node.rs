//! A node's view of the cluster: its peers and their links, the requests
//! and broadcasts it waits on, and what it does with each thing that
//! happens (a batch from the shards, a broker message, a heartbeat, a
//! tick). No I/O: the loop in `run.rs` feeds it and publishes what
//! [`Node::outgoing`] gives.
//!
//! "Delivered or reported" lives here. A record for another node is kept
//! until that node acknowledges it; if the node goes down (silent past the
//! node timeout, or restarted) or the broker stays out of reach, every
//! record not acknowledged is reported to whoever sent it, with the reason.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use msgtrans_shards::uplink::{NodeState, Outbound};
use msgtrans_shards::{Engine, EngineEvent, Packet, SendError, SessionId};
use tokio::sync::mpsc::UnboundedSender;

use super::config::ClusterConfig;
use super::envelope::{Data, Heartbeat, DATA_HEADER};
use super::link::Accepted;
use super::peer::Peer;
use super::record::Record;
use super::stats::ClusterStats;

/// An answer this node owes another, produced off the loop (a request's
/// response, a broadcast's count) and handed back to it.
#[derive(Debug)]
pub(crate) enum Done {
    Response {
        node: u8,
        corr: u64,
        result: Result<Packet, SendError>,
    },
    BroadcastDone {
        node: u8,
        corr: u64,
        reached: usize,
    },
}

/// A request of ours waiting for another node's answer.
pub(super) struct Waiting {
    pub node: u8,
    pub reply: msgtrans_shards::event::ReplyTx,
    pub deadline: Instant,
}

/// A broadcast of ours waiting for every node's count.
pub(super) struct Gathering {
    pub nodes: Vec<u8>,
    pub reached: usize,
    pub reply: flume::Sender<Result<usize, SendError>>,
}

pub(crate) struct Node {
    pub(super) cfg: ClusterConfig,
    pub(super) engine: Arc<Engine>,
    pub(super) incarnation: u64,
    pub(super) peers: HashMap<u8, Peer>,
    pub(super) next_stream: u64,
    pub(super) next_corr: u64,
    pub(super) requests: HashMap<u64, Waiting>,
    pub(super) broadcasts: HashMap<u64, Gathering>,
    pub(super) connected: bool,
    pub(super) disconnected_since: Option<Instant>,
    pub(super) max_chunk: usize,
    pub(super) done: UnboundedSender<Done>,
    /// Packets from other nodes for this node's shards, handed over once
    /// per wake-up of the loop.
    pub(super) deliveries: msgtrans_shards::runtime::DeliveryBatch,
    pub stats: Arc<ClusterStats>,
}

/// A random 64-bit value, never 0, from the standard library's per-process
/// random keys (incarnations and stream ids need to be unlikely to repeat,
/// not secret).
fn random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish().max(1)
}

impl Node {
    pub fn new(
        cfg: ClusterConfig,
        engine: Arc<Engine>,
        max_payload: usize,
        done: UnboundedSender<Done>,
        stats: Arc<ClusterStats>,
    ) -> Self {
        let max_chunk = cfg.max_message.min(max_payload).saturating_sub(DATA_HEADER).max(1);
        let incarnation = random();
        Self {
            cfg,
            engine,
            incarnation,
            peers: HashMap::new(),
            next_stream: incarnation,
            next_corr: 1,
            requests: HashMap::new(),
            broadcasts: HashMap::new(),
            connected: true,
            disconnected_since: None,
            max_chunk,
            done,
            deliveries: Default::default(),
            stats,
        }
    }

    pub(super) fn me(&self) -> u8 {
        self.cfg.node
    }

    fn new_stream(&mut self) -> u64 {
        // Distinct for each link and reset of this incarnation; the odd
        // step never returns to 0 within 2^64 steps.
        self.next_stream = self.next_stream.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.next_stream.max(1)
    }

    fn peer(&mut self, node: u8, now: Instant) -> &mut Peer {
        if !self.peers.contains_key(&node) {
            let stream = self.new_stream();
            self.peers.insert(node, Peer::new(now, stream));
        }
        self.peers.get_mut(&node).expect("inserted above")
    }

    fn uplink(&self) -> &msgtrans_shards::uplink::Uplink {
        self.engine
            .uplink()
            .expect("the cluster attached the uplink before it started")
    }

    /// The heartbeat to publish on the control subject.
    pub fn heartbeat(&self) -> Bytes {
        Heartbeat {
            node: self.me(),
            incarnation: self.incarnation,
        }
        .encode()
    }

    // ---- from the shards and the API ----

    pub fn on_outbound(&mut self, msg: Outbound, now: Instant) {
        match msg {
            Outbound::Send {
                target,
                packet,
                reserved,
            } => {
                let node = target.node();
                if let Some(e) = self.refusal(node) {
                    self.uplink().release(node, reserved);
                    self.engine.report_undelivered(target, packet, e);
                    return;
                }
                self.push(node, &Record::Send { target, packet }, reserved, now);
            }
            Outbound::Request {
                target,
                packet,
                timeout,
                reply,
                reserved,
            } => {
                let node = target.node();
                if let Some(e) = self.refusal(node) {
                    self.uplink().release(node, reserved);
                    let _ = reply.send(Err(e));
                    return;
                }
                let corr = self.next_corr;
                self.next_corr += 1;
                self.requests.insert(
                    corr,
                    Waiting {
                        node,
                        reply,
                        deadline: now + timeout,
                    },
                );
                let timeout_ms = u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX);
                let record = Record::Request {
                    corr,
                    target,
                    timeout_ms,
                    packet,
                };
                self.push(node, &record, reserved, now);
            }
            Outbound::Broadcast { packet, except, reply } => self.broadcast(packet, except, reply, now),
            Outbound::Undelivered {
                node,
                target,
                packet,
                error,
            } => {
                // Owed to a node that has gone: it would not be read.
                if self.peers.get(&node).is_some_and(|p| p.state != NodeState::Down) {
                    self.push(node, &Record::Undelivered { target, error, packet }, 0, now);
                }
            }
        }
    }

    /// Why a message for `node` cannot be taken now, if it cannot.
    fn refusal(&self, node: u8) -> Option<SendError> {
        if node == self.me() {
            // The engine routes its own sessions itself; an id of this node
            // that reached the uplink names no session.
            return Some(SendError::NodeDown(node));
        }
        if !self.connected && self.disconnected_since.is_none() {
            return Some(SendError::ClusterUnreachable);
        }
        match self.peers.get(&node).map(|p| p.state) {
            Some(NodeState::Down) => Some(SendError::NodeDown(node)),
            _ => None,
        }
    }

    pub(super) fn push(&mut self, node: u8, record: &Record, cost: usize, now: Instant) {
        let p = self.peer(node, now);
        if p.state == NodeState::Unknown && p.unknown_since.is_none() {
            p.unknown_since = Some(now);
        }
        if !p.out.has_unacked() {
            // Nothing was waiting: the resend clock starts now.
            p.last_progress = now;
        }
        p.out.push(record, cost);
        self.stats.records_out.add(1);
    }

    fn broadcast(
        &mut self,
        packet: Packet,
        except: Option<SessionId>,
        reply: Option<flume::Sender<Result<usize, SendError>>>,
        now: Instant,
    ) {
        if !self.connected && self.disconnected_since.is_none() {
            match reply {
                Some(reply) => {
                    let _ = reply.send(Err(SendError::ClusterUnreachable));
                }
                None => self.engine.emit(EngineEvent::BroadcastIncomplete {
                    node: 0,
                    error: SendError::ClusterUnreachable,
                }),
            }
            return;
        }
        let mut nodes: Vec<u8> = self
            .peers
            .iter()
            .filter(|(_, p)| p.state == NodeState::Up)
            .map(|(n, _)| *n)
            .collect();
        nodes.sort_unstable();
        let corr = match reply {
            Some(reply) if nodes.is_empty() => {
                let _ = reply.send(Ok(0));
                return;
            }
            Some(reply) => {
                let corr = self.next_corr;
                self.next_corr += 1;
                self.broadcasts.insert(
                    corr,
                    Gathering {
                        nodes: nodes.clone(),
                        reached: 0,
                        reply,
                    },
                );
                Some(corr)
            }
            None => None,
        };
        let record = Record::Broadcast { corr, except, packet };
        for node in nodes {
            self.push(node, &record, 0, now);
        }
    }

    // ---- from the broker ----

    pub fn on_heartbeat(&mut self, msg: &[u8], now: Instant) {
        let Ok(hb) = Heartbeat::decode(msg) else {
            self.stats.foreign.add(1);
            return;
        };
        if hb.node == self.me() {
            if hb.incarnation != self.incarnation {
                self.stats.node_id_clashes.add(1);
                tracing::error!(
                    node = hb.node,
                    "another process runs as this cluster node: node ids must be unique"
                );
            }
            return;
        }
        self.heard(hb.node, hb.incarnation, now);
    }

    /// `node` (incarnation `incarnation`) is alive.
    fn heard(&mut self, node: u8, incarnation: u64, now: Instant) {
        let known = self.peer(node, now).incarnation;
        if known != 0 && known != incarnation {
            // Restarted: the old process, and all it had not confirmed, is
            // gone; its sessions with it.
            self.fail_peer(node, SendError::NodeDown(node), true);
        }
        let p = self.peer(node, now);
        p.incarnation = incarnation;
        p.last_heard = now;
        p.unknown_since = None;
        if p.state != NodeState::Up {
            p.state = NodeState::Up;
            self.uplink().set_state(node, NodeState::Up);
            tracing::info!(node, "cluster node up");
        }
    }

    pub fn on_data(&mut self, msg: &Bytes, now: Instant) {
        let Ok(d) = Data::decode(msg) else {
            self.stats.foreign.add(1);
            return;
        };
        if d.from == self.me() || (d.to_incarnation != 0 && d.to_incarnation != self.incarnation) {
            // Meant for an earlier process with this node id.
            self.stats.stale.add(1);
            return;
        }
        self.heard(d.from, d.from_incarnation, now);
        let node = d.from;
        let p = self.peer(node, now);
        if let Some(freed) = p.out.ack(d.ack_stream, d.ack) {
            p.last_progress = now;
            self.uplink().release(node, freed);
        }
        if d.chunk.is_empty() {
            return;
        }
        self.stats.messages_in.add(1);
        let p = self.peer(node, now);
        p.ack_due = true;
        match p.inn.accept(d.stream, d.offset, &d.chunk) {
            Accepted::Records(records) => {
                for r in records {
                    self.on_record(node, r, now);
                }
            }
            Accepted::Duplicate => self.stats.duplicates.add(1),
            Accepted::Gap => self.stats.gaps.add(1),
            Accepted::Corrupt(e) => {
                // Only a peer running other code gets here: treat it as a
                // restart, so nothing is half-done silently.
                tracing::error!(node, error = %e, "corrupt cluster stream; resetting the link");
                self.stats.foreign.add(1);
                self.fail_peer(node, SendError::NodeDown(node), true);
            }
        }
    }

    pub fn on_health(&mut self, connected: bool, now: Instant) {
        if connected == self.connected {
            return;
        }
        self.connected = connected;
        if connected {
            tracing::info!("cluster broker connected");
            self.stats.reconnects.add(1);
            self.disconnected_since = None;
            self.uplink().set_reachable(true);
            for p in self.peers.values_mut() {
                // Heartbeats could not arrive meanwhile: count afresh. What
                // was published while the connection was going may be lost:
                // send it all again now.
                p.last_heard = now;
                p.out.rewind();
                p.last_progress = now;
            }
        } else {
            tracing::warn!("cluster broker disconnected; trying the other servers");
            self.disconnected_since = Some(now);
        }
    }

    // ---- time ----

    pub fn on_tick(&mut self, now: Instant) {
        let timeout = self.cfg.node_timeout;
        if let Some(since) = self.disconnected_since {
            if now.duration_since(since) >= timeout {
                // Out of reach for a whole node timeout: report everything.
                self.disconnected_since = None;
                self.uplink().set_reachable(false);
                tracing::error!("cluster broker unreachable for {timeout:?}; reporting undelivered messages");
                let nodes: Vec<u8> = self.peers.keys().copied().collect();
                for node in nodes {
                    self.fail_peer(node, SendError::ClusterUnreachable, false);
                }
            }
        }
        let mut down = Vec::new();
        for (node, p) in self.peers.iter_mut() {
            if self.connected {
                let silent = match p.state {
                    NodeState::Up => now.duration_since(p.last_heard) >= timeout,
                    NodeState::Unknown => p.unknown_since.is_some_and(|t| now.duration_since(t) >= timeout),
                    NodeState::Down => false,
                };
                if silent {
                    down.push(*node);
                    continue;
                }
            }
            if p.out.has_unacked() && now.duration_since(p.last_progress) >= self.cfg.resend_after {
                p.out.rewind();
                p.last_progress = now;
                self.stats.resends.add(1);
            }
        }
        for node in down {
            tracing::warn!(node, "cluster node down: no heartbeat within {timeout:?}");
            self.stats.nodes_down.add(1);
            self.fail_peer(node, SendError::NodeDown(node), true);
        }
        let expired: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, w)| w.deadline <= now)
            .map(|(c, _)| *c)
            .collect();
        for corr in expired {
            if let Some(w) = self.requests.remove(&corr) {
                let _ = w.reply.send(Err(SendError::Timeout));
            }
        }
    }

    /// Reports everything `node` had not confirmed with `error`, and starts
    /// its stream afresh; `down` also marks it down for the shards.
    pub(super) fn fail_peer(&mut self, node: u8, error: SendError, down: bool) {
        let stream = self.new_stream();
        let Some(p) = self.peers.get_mut(&node) else {
            return;
        };
        if down {
            p.state = NodeState::Down;
            p.unknown_since = None;
            if let Some(u) = self.engine.uplink() {
                u.set_state(node, NodeState::Down);
            }
        }
        let left = p.out.reset(stream);
        let uplink = self.engine.uplink();
        for (record, cost) in left {
            if let Some(u) = uplink {
                u.release(node, cost);
            }
            match record {
                Record::Send { target, packet } => {
                    self.stats.undelivered.add(1);
                    self.engine.report_undelivered(target, packet, error.clone());
                }
                Record::Broadcast { corr: None, .. } => self.engine.emit(EngineEvent::BroadcastIncomplete {
                    node,
                    error: error.clone(),
                }),
                // Requests and waited-on broadcasts are answered below,
                // acknowledged or not; answers owed to the node are moot.
                _ => {}
            }
        }
        self.requests.retain(|_, w| {
            if w.node != node {
                return true;
            }
            let _ = w.reply.send(Err(error.clone()));
            false
        });
        self.broadcasts.retain(|_, g| {
            if !g.nodes.contains(&node) {
                return true;
            }
            let _ = g.reply.send(Err(error.clone()));
            false
        });
    }

    // ---- to the broker ----

    /// Hands the packets gathered for the shards over, then gives the
    /// broker messages to publish now, as (node, bytes): each peer's new
    /// (or resent) bytes in chunks, or a bare acknowledgement.
    pub fn outgoing(&mut self) -> Vec<(u8, Bytes)> {
        self.engine.flush_deliveries(&mut self.deliveries);
        let mut msgs = Vec::new();
        if !self.connected {
            // Kept until the connection is back (then all sent again).
            return msgs;
        }
        let me = self.me();
        let incarnation = self.incarnation;
        for (node, p) in self.peers.iter_mut() {
            if p.state == NodeState::Down && !p.ack_due {
                continue;
            }
            let (ack_stream, ack) = p.inn.position();
            let to_incarnation = p.incarnation;
            let header = |stream, offset| Data {
                from: me,
                from_incarnation: incarnation,
                to_incarnation,
                stream,
                offset,
                ack_stream,
                ack,
                chunk: Bytes::new(),
            };
            let stream = p.out.id();
            let mut sent_any = false;
            while let Some((offset, chunk)) = p.out.next_chunk(self.max_chunk) {
                msgs.push((*node, header(stream, offset).encode_with(chunk)));
                sent_any = true;
            }
            if !sent_any && p.ack_due {
                msgs.push((*node, header(stream, 0).encode()));
                self.stats.acks_out.add(1);
            }
            p.ack_due = false;
        }
        self.stats.messages_out.add(msgs.len() as u64);
        msgs
    }

    /// Fails everything outstanding: the cluster layer is stopping.
    pub fn shut(&mut self) {
        let nodes: Vec<u8> = self.peers.keys().copied().collect();
        for node in nodes {
            self.fail_peer(node, SendError::Stopped, false);
        }
    }
}
