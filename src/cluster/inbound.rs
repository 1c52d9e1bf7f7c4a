//! What a node does with each record another node sends it: deliver a
//! message, run a request and send back its answer, broadcast, and hand
//! answers and reports to whoever here is waiting for them.

use std::time::{Duration, Instant};

use msgtrans_shards::uplink::NodeState;
use msgtrans_shards::SendError;

use super::node::{Done, Node};
use super::record::Record;

impl Node {
    pub(super) fn on_record(&mut self, from: u8, record: Record, now: Instant) {
        self.stats.records_in.add(1);
        match record {
            Record::Send { target, packet } => {
                let copy = packet.clone();
                let result = if target.node() == self.me() {
                    self.engine.deliver_batched(&mut self.deliveries, target, packet, from)
                } else {
                    Err(SendError::SessionNotFound(target))
                };
                if let Err(error) = result {
                    let record = Record::Undelivered {
                        target,
                        error,
                        packet: copy,
                    };
                    self.push(from, &record, 0, now);
                }
            }
            Record::Request {
                corr,
                target,
                timeout_ms,
                packet,
            } => {
                let timeout = Duration::from_millis(timeout_ms as u64);
                // In order with the packets before it.
                self.engine.flush_deliveries(&mut self.deliveries);
                match self.engine.request_start(target, packet, timeout) {
                    Ok(rx) => {
                        let done = self.done.clone();
                        tokio::spawn(async move {
                            let result = rx.recv_async().await.unwrap_or(Err(SendError::Stopped));
                            let _ = done.send(Done::Response {
                                node: from,
                                corr,
                                result,
                            });
                        });
                    }
                    Err(e) => self.push(from, &Record::Response { corr, result: Err(e) }, 0, now),
                }
            }
            Record::Response { corr, result } => {
                if let Some(w) = self.requests.remove(&corr) {
                    let _ = w.reply.send(result.map_err(|e| from_remote(e, from)));
                }
            }
            Record::Broadcast { corr, except, packet } => {
                // Posted to the shards now, in order with what came before.
                self.engine.flush_deliveries(&mut self.deliveries);
                // A failure here is this engine stopping: the sender hears
                // of it as this node going.
                if let Ok(count) = self.engine.broadcast_local(packet, except) {
                    if let Some(corr) = corr {
                        let done = self.done.clone();
                        tokio::spawn(async move {
                            let reached = count.await.unwrap_or(0);
                            let _ = done.send(Done::BroadcastDone {
                                node: from,
                                corr,
                                reached,
                            });
                        });
                    }
                }
            }
            Record::BroadcastDone { corr, reached } => {
                if let Some(g) = self.broadcasts.get_mut(&corr) {
                    g.nodes.retain(|n| *n != from);
                    g.reached += reached as usize;
                    if g.nodes.is_empty() {
                        if let Some(g) = self.broadcasts.remove(&corr) {
                            let _ = g.reply.send(Ok(g.reached));
                        }
                    }
                }
            }
            Record::Undelivered { target, error, packet } => {
                self.stats.undelivered.add(1);
                self.engine.report_undelivered(target, packet, from_remote(error, from));
            }
        }
    }

    pub fn on_done(&mut self, done: Done, now: Instant) {
        let (node, record) = match done {
            Done::Response { node, corr, result } => (node, Record::Response { corr, result }),
            Done::BroadcastDone { node, corr, reached } => (
                node,
                Record::BroadcastDone {
                    corr,
                    reached: reached as u64,
                },
            ),
        };
        if self.peers.get(&node).is_some_and(|p| p.state != NodeState::Down) {
            self.push(node, &record, 0, now);
        }
    }
}

/// An error another node reports, as the sender should read it: that node
/// stopping is that node going down.
fn from_remote(e: SendError, node: u8) -> SendError {
    match e {
        SendError::Stopped => SendError::NodeDown(node),
        e => e,
    }
}
