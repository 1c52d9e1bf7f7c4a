//! What one broker message carries: a fixed header naming the sending
//! node, both ends' incarnations, a chunk of the sender's stream and an
//! acknowledgement of the reverse stream; or, on the control subject, a
//! heartbeat. Fixed-size big-endian fields, no allocation to read.

use bytes::{BufMut, Bytes, BytesMut};

/// The first byte of every message: the protocol's version.
pub const VERSION: u8 = 1;

const DATA: u8 = 1;
const HEARTBEAT: u8 = 2;

/// Bytes of a data message before its chunk.
pub const DATA_HEADER: usize = 3 + 8 * 6;

/// A chunk of one node's stream to another, with an acknowledgement of the
/// reverse stream. With an empty chunk it is an acknowledgement alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Data {
    /// The sending node.
    pub from: u8,
    /// The sender's incarnation (random per start).
    pub from_incarnation: u64,
    /// The receiver's incarnation as the sender knows it (0: not yet).
    pub to_incarnation: u64,
    /// The sender's stream to the receiver.
    pub stream: u64,
    /// Where `chunk` starts in that stream.
    pub offset: u64,
    /// The receiver's stream to the sender that `ack` counts bytes of.
    pub ack_stream: u64,
    /// Bytes of `ack_stream` the sender has taken, in order.
    pub ack: u64,
    /// The bytes.
    pub chunk: Bytes,
}

/// A node saying it is alive, on the control subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// The node.
    pub node: u8,
    /// Its incarnation.
    pub incarnation: u64,
}

/// A message that is not one of ours (another version, or garbage on our
/// subjects): dropped and counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a msgtrans cluster message")]
pub struct Foreign;

impl Data {
    /// The message's bytes.
    pub fn encode(&self) -> Bytes {
        self.encode_with(&self.chunk)
    }

    /// The message's bytes with `chunk` in place of `self.chunk`: a chunk
    /// borrowed from a link's buffer is copied once, into the message.
    pub fn encode_with(&self, chunk: &[u8]) -> Bytes {
        let mut out = BytesMut::with_capacity(DATA_HEADER + chunk.len());
        out.put_u8(VERSION);
        out.put_u8(DATA);
        out.put_u8(self.from);
        for v in [
            self.from_incarnation,
            self.to_incarnation,
            self.stream,
            self.offset,
            self.ack_stream,
            self.ack,
        ] {
            out.put_u64(v);
        }
        out.put_slice(chunk);
        out.freeze()
    }

    /// Reads a data message, sharing `msg`'s memory for the chunk.
    pub fn decode(msg: &Bytes) -> Result<Self, Foreign> {
        if msg.len() < DATA_HEADER || msg[0] != VERSION || msg[1] != DATA {
            return Err(Foreign);
        }
        let u = |i: usize| {
            let at = 3 + 8 * i;
            u64::from_be_bytes(msg[at..at + 8].try_into().unwrap_or_default())
        };
        Ok(Self {
            from: msg[2],
            from_incarnation: u(0),
            to_incarnation: u(1),
            stream: u(2),
            offset: u(3),
            ack_stream: u(4),
            ack: u(5),
            chunk: msg.slice(DATA_HEADER..),
        })
    }
}

impl Heartbeat {
    /// The message's bytes.
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(11);
        out.put_u8(VERSION);
        out.put_u8(HEARTBEAT);
        out.put_u8(self.node);
        out.put_u64(self.incarnation);
        out.freeze()
    }

    /// Reads a heartbeat.
    pub fn decode(msg: &[u8]) -> Result<Self, Foreign> {
        if msg.len() != 11 || msg[0] != VERSION || msg[1] != HEARTBEAT {
            return Err(Foreign);
        }
        Ok(Self {
            node: msg[2],
            incarnation: u64::from_be_bytes(msg[3..11].try_into().map_err(|_| Foreign)?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_read_back_and_garbage_is_foreign() {
        let d = Data {
            from: 3,
            from_incarnation: 1,
            to_incarnation: 2,
            stream: 3,
            offset: 4,
            ack_stream: 5,
            ack: 6,
            chunk: Bytes::from_static(b"chunk"),
        };
        let bytes = d.encode();
        assert_eq!(Data::decode(&bytes), Ok(d));
        assert_eq!(Heartbeat::decode(&bytes), Err(Foreign));
        let h = Heartbeat {
            node: 9,
            incarnation: u64::MAX,
        };
        assert_eq!(Heartbeat::decode(&h.encode()), Ok(h));
        assert_eq!(Data::decode(&Bytes::from_static(b"hello")), Err(Foreign));
        assert_eq!(Data::decode(&h.encode()), Err(Foreign));
        let mut old = h.encode().to_vec();
        old[0] = 2;
        assert_eq!(Heartbeat::decode(&old), Err(Foreign));
    }
}
