//! The engine's cluster side: sessions of other nodes are reached through
//! the uplink, and what other nodes send is delivered here. The broker and
//! the links are the cluster layer's (in `msgtrans`); this file is what
//! that layer asks of the engine, and how the engine's own API goes out.

use std::time::Duration;

use super::Engine;
use crate::error::{SendError, StartError};
use crate::event::{Command, EngineEvent};
use crate::id::SessionId;
use crate::mesh::Inbox;
use crate::packet::Packet;
use crate::uplink::{self, Outbound, Uplink};

/// Packets from other nodes on their way to this node's shards, gathered
/// per shard ([`Engine::deliver_batched`]).
#[derive(Default)]
pub struct DeliveryBatch {
    per_shard: Vec<Vec<Command>>,
}

impl std::fmt::Debug for DeliveryBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n: usize = self.per_shard.iter().map(Vec::len).sum();
        f.debug_struct("DeliveryBatch").field("packets", &n).finish()
    }
}

impl Engine {
    /// This process's cluster node (0 outside a cluster).
    pub fn node(&self) -> u8 {
        self.mesh.node
    }

    /// Opens the way to other nodes, with `window` bytes of unacknowledged
    /// messages allowed per node, and returns what the cluster layer
    /// drains. Once per engine, before listeners open.
    pub fn attach_uplink(&self, window: usize) -> Result<Inbox<Outbound>, StartError> {
        let (up, rx) = Uplink::new(window);
        self.mesh.uplink.set(up).map_err(|_| StartError::Cluster {
            reason: "this engine already has a cluster uplink".into(),
        })?;
        Ok(rx)
    }

    /// The way to other nodes, once attached.
    pub fn uplink(&self) -> Option<&Uplink> {
        self.mesh.uplink.get()
    }

    fn uplink_for(&self, id: SessionId) -> Result<&Uplink, SendError> {
        // Without a cluster, an id of another node names no session here.
        self.uplink().ok_or(SendError::SessionNotFound(id))
    }

    pub(super) fn send_remote(&self, id: SessionId, packet: Packet) -> Result<(), SendError> {
        self.uplink_for(id)?.send(id, packet)
    }

    pub(super) fn request_remote(
        &self,
        id: SessionId,
        packet: Packet,
        timeout: Duration,
    ) -> Result<flume::Receiver<Result<Packet, SendError>>, SendError> {
        let up = self.uplink_for(id)?;
        let reserved = uplink::cost(&packet);
        up.reserve(id, reserved)?;
        let (reply, rx) = flume::bounded(1);
        up.submit(Outbound::Request {
            target: id,
            packet,
            timeout,
            reply,
            reserved,
        })
        .inspect_err(|_| up.release(id.node(), reserved))?;
        Ok(rx)
    }

    /// The remote half of a broadcast: `None` outside a cluster.
    pub(super) fn broadcast_remote(
        &self,
        packet: Packet,
        except: Option<SessionId>,
    ) -> Result<Option<flume::Receiver<Result<usize, SendError>>>, SendError> {
        let Some(up) = self.uplink() else {
            return Ok(None);
        };
        let (reply, rx) = flume::bounded(1);
        up.submit(Outbound::Broadcast {
            packet,
            except,
            reply: Some(reply),
        })?;
        Ok(Some(rx))
    }

    /// Delivers a packet that node `from` sent to `target`, a session of
    /// this process. A failure found now is returned; one found later by
    /// the shard (the session closed before it took the packet) goes back
    /// to `from` through the uplink as [`Outbound::Undelivered`].
    ///
    /// Packets gather in `batch` and go at [`Engine::flush_deliveries`]:
    /// one inbox message per shard, so a broker message of many packets
    /// costs each shard one wake-up, not one per packet. Order is kept per
    /// shard; flush before anything that goes to the shards directly (a
    /// request, a broadcast) to keep it across them.
    pub fn deliver_batched(
        &self,
        batch: &mut DeliveryBatch,
        target: SessionId,
        packet: Packet,
        from: u8,
    ) -> Result<(), SendError> {
        self.check_size(&packet)?;
        if !self.is_live(target) {
            return Err(SendError::SessionNotFound(target));
        }
        let reserved = packet.wire_len();
        if !self.reserve(target, reserved) {
            return Err(SendError::Backpressure(target));
        }
        if batch.per_shard.len() < self.shards() {
            batch.per_shard.resize_with(self.shards(), Vec::new);
        }
        batch.per_shard[target.shard()].push(Command::Send {
            id: target,
            packet,
            wait: None,
            reserved,
            report: Some(from),
        });
        Ok(())
    }

    /// Hands what `batch` gathered to the shards.
    pub fn flush_deliveries(&self, batch: &mut DeliveryBatch) {
        for (shard, cmds) in batch.per_shard.iter_mut().enumerate() {
            if !cmds.is_empty() {
                // Fails only once the engine has stopped: the packets' node
                // then hears of this one going.
                let _ = self.mesh.outboxes[shard].send_batch(cmds.drain(..));
            }
        }
    }

    /// Tells this node's handler (or the application, as a `SendFailed`
    /// event) that a packet it sent to `target` was not delivered.
    pub fn report_undelivered(&self, target: SessionId, packet: Packet, error: SendError) {
        // Any shard will do: the handler runs there and may send anywhere.
        let shard = target.shard() % self.shards();
        let _ = self.command(
            shard,
            Command::Report {
                id: target,
                packet,
                error,
            },
        );
    }

    /// Hands `event` to the application, in order with shard 0's events.
    pub fn emit(&self, event: EngineEvent) {
        let _ = self.command(0, Command::Event(event));
    }
}
