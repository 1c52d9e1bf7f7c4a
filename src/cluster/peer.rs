//! What a node knows of one other node: its incarnation, when it was last
//! heard, and the two streams between them.

use std::time::Instant;

use msgtrans_shards::uplink::NodeState;

use super::link::{InStream, OutStream};

/// Another node of the cluster.
#[derive(Debug)]
pub(crate) struct Peer {
    /// Its incarnation (random per start; 0 until heard).
    pub incarnation: u64,
    pub state: NodeState,
    pub last_heard: Instant,
    /// When it was first owed bytes while still unknown: a node never heard
    /// from is reported down one node timeout later.
    pub unknown_since: Option<Instant>,
    /// Our stream to it.
    pub out: OutStream,
    /// Its stream to us.
    pub inn: InStream,
    /// Last time its acknowledgements moved our stream on (or we sent
    /// afresh): bytes older than the resend delay are sent again.
    pub last_progress: Instant,
    /// An acknowledgement should go out even with no data.
    pub ack_due: bool,
}

impl Peer {
    pub fn new(now: Instant, stream: u64) -> Self {
        Self {
            incarnation: 0,
            state: NodeState::Unknown,
            last_heard: now,
            unknown_since: None,
            out: OutStream::new(stream),
            inn: InStream::default(),
            last_progress: now,
            ack_due: false,
        }
    }
}
