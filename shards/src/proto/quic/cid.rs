//! Connection IDs that name their shard, to us alone. Every CID a shard's
//! endpoint issues is eight bytes: seven from the kernel's CSPRNG, and one
//! that is the shard's index masked by a keyed hash of the seven, under a
//! key every shard of the engine shares (`Mesh::secret`). A datagram that
//! the kernel's `SO_REUSEPORT` hash delivers to another shard (after the
//! peer's address changed, say) is forwarded by its destination CID alone,
//! without a shared table, while to an observer every byte of every CID is
//! random: CIDs cannot be linked to each other or to a shard (RFC 9000
//! §5.1).

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};

/// Length of every CID we issue: one byte naming the shard, seven random.
pub(crate) const CID_LEN: usize = 8;

/// Issues CIDs for one shard.
pub(crate) struct ShardCids {
    shard: u8,
    key: RandomState,
}

impl ShardCids {
    pub(crate) fn new(shard: usize, key: RandomState) -> Self {
        Self {
            shard: shard as u8,
            key,
        }
    }
}

/// The byte that hides the shard in a CID whose other bytes are `rest`.
fn mask(key: &RandomState, rest: &[u8]) -> u8 {
    key.hash_one(rest) as u8
}

/// Seven bytes from the kernel's CSPRNG (getrandom(2); it does not fail
/// once the pool is initialised, which it is long before a server runs).
fn random7() -> [u8; CID_LEN - 1] {
    let mut b = [0u8; CID_LEN - 1];
    let mut filled = 0;
    while filled < b.len() {
        // SAFETY: writes at most the remaining length into the buffer.
        let n = unsafe { libc::getrandom(b[filled..].as_mut_ptr().cast(), b.len() - filled, 0) };
        if n > 0 {
            filled += n as usize;
        }
    }
    b
}

impl ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> ConnectionId {
        let rest = random7();
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.shard ^ mask(&self.key, &rest);
        bytes[1..].copy_from_slice(&rest);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The shard a datagram's destination CID names, if it is one of ours and
/// names one of `shards`. A client's first Initial carries a CID of its
/// own choosing, usually of another length: that stays where it landed.
pub(crate) fn owner(datagram: &[u8], shards: usize, key: &RandomState) -> Option<usize> {
    let first = *datagram.first()?;
    let cid = if first & 0x80 == 0 {
        // Short header: the DCID follows the first byte, at our length.
        datagram.get(1..1 + CID_LEN)?
    } else {
        // Long header: version (4 bytes), then the DCID's length and bytes.
        if *datagram.get(5)? as usize != CID_LEN {
            return None;
        }
        datagram.get(6..6 + CID_LEN)?
    };
    let shard = (cid[0] ^ mask(key, &cid[1..])) as usize;
    (shard < shards).then_some(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn short_header(cid: &[u8]) -> Vec<u8> {
        let mut d = vec![0x40u8];
        d.extend_from_slice(cid);
        d.extend_from_slice(&[0; 20]);
        d
    }

    #[test]
    fn issued_cids_route_to_their_shard_yet_look_random() {
        let key = RandomState::new();
        let mut g = ShardCids::new(1, key.clone());
        let cids: Vec<_> = (0..64).map(|_| g.generate_cid()).collect();
        for c in &cids {
            assert_eq!(c.len(), CID_LEN);
            assert_eq!(owner(&short_header(c), 2, &key), Some(1));
        }
        // The shard is not in the clear: the first bytes of one shard's
        // CIDs vary, and all CIDs differ.
        let firsts: std::collections::HashSet<u8> = cids.iter().map(|c| c[0]).collect();
        assert!(firsts.len() > 16, "only {} distinct first bytes", firsts.len());
        let all: std::collections::HashSet<Vec<u8>> = cids.iter().map(|c| c.to_vec()).collect();
        assert_eq!(all.len(), cids.len());
        // Another engine's key does not find the shard.
        let other = RandomState::new();
        let misrouted = cids
            .iter()
            .filter(|c| owner(&short_header(c), 2, &other) == Some(1))
            .count();
        assert!(misrouted < 60, "{misrouted} of 64 routed without the key");
    }

    #[test]
    fn owner_reads_short_and_long_headers() {
        let key = RandomState::new();
        let mut g = ShardCids::new(0, key.clone());
        let cid = g.generate_cid();
        let mut long = vec![0xC0u8, 0, 0, 0, 1, CID_LEN as u8];
        long.extend_from_slice(&cid);
        long.extend_from_slice(&[7; 30]);
        assert_eq!(owner(&long, 2, &key), Some(0));
        // A client-chosen Initial DCID of another length stays put.
        let mut initial = vec![0xC0u8, 0, 0, 0, 1, 16];
        initial.extend_from_slice(&[9; 40]);
        assert_eq!(owner(&initial, 2, &key), None);
        assert_eq!(owner(&[0xC0, 0, 0, 0, 1, 0], 2, &key), None, "empty DCID");
        assert_eq!(owner(&[], 2, &key), None);
        assert_eq!(owner(&[0x40, 1, 2], 2, &key), None, "truncated");
    }
}
