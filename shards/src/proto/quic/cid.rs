//! Connection IDs that name their shard. Every CID a shard's endpoint
//! issues starts with the shard's index, so a datagram that the kernel's
//! `SO_REUSEPORT` hash delivers to another shard (after the peer's address
//! changed, say) is forwarded by its destination CID alone, without a
//! shared table.

use std::time::Duration;

use quinn_proto::{ConnectionId, ConnectionIdGenerator};

/// Length of every CID we issue: one byte of shard, seven of randomness.
pub(crate) const CID_LEN: usize = 8;

/// Issues `[shard, 7 random bytes]`.
pub(crate) struct ShardCids {
    shard: u8,
    state: u64,
}

impl ShardCids {
    pub(crate) fn new(shard: usize) -> Self {
        let mut seed = [0u8; 8];
        // getrandom is not a dependency; the kernel's RNG is one syscall.
        // SAFETY: the buffer is valid for its length.
        let got = unsafe { libc::getrandom(seed.as_mut_ptr().cast(), seed.len(), 0) };
        let mut state = u64::from_ne_bytes(seed);
        if got != seed.len() as isize || state == 0 {
            state = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0x9E37_79B9_7F4A_7C15, |d| d.as_nanos() as u64)
                | 1;
        }
        Self {
            shard: shard as u8,
            state,
        }
    }
}

impl ConnectionIdGenerator for ShardCids {
    fn generate_cid(&mut self) -> ConnectionId {
        // splitmix64: CIDs need to be unique and unlinkable by observers,
        // not secret (stateless reset tokens are keyed separately).
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let mut bytes = [0u8; CID_LEN];
        bytes[0] = self.shard;
        bytes[1..].copy_from_slice(&z.to_be_bytes()[1..]);
        ConnectionId::new(&bytes)
    }

    fn cid_len(&self) -> usize {
        CID_LEN
    }

    fn cid_lifetime(&self) -> Option<Duration> {
        None
    }
}

/// The shard a datagram's destination CID names, if it names one of
/// `shards` (a client's first Initial carries a CID of its own choosing;
/// its first byte is as good as any, since retransmissions carry the same).
pub(crate) fn owner(datagram: &[u8], shards: usize) -> Option<usize> {
    let first = *datagram.first()?;
    let cid_first = if first & 0x80 == 0 {
        // Short header: the DCID follows the first byte, at our length.
        *datagram.get(1)?
    } else {
        // Long header: version (4 bytes), then the DCID's length and bytes.
        let len = *datagram.get(5)?;
        if len == 0 {
            return None;
        }
        *datagram.get(6)?
    };
    let shard = cid_first as usize;
    (shard < shards).then_some(shard)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn issued_cids_start_with_the_shard_and_differ() {
        let mut g = ShardCids::new(3);
        let a = g.generate_cid();
        let b = g.generate_cid();
        assert_eq!(a.len(), CID_LEN);
        assert_eq!(a[0], 3);
        assert_eq!(b[0], 3);
        assert_ne!(a, b);
    }

    #[test]
    fn owner_reads_short_and_long_headers() {
        let mut short = vec![0x40u8];
        short.extend_from_slice(&[1, 9, 9, 9, 9, 9, 9, 9]);
        short.extend_from_slice(&[0; 20]);
        assert_eq!(owner(&short, 2), Some(1));
        assert_eq!(owner(&short, 1), None, "no such shard");
        let mut long = vec![0xC0u8, 0, 0, 0, 1, 8, 0];
        long.extend_from_slice(&[7; 30]);
        assert_eq!(owner(&long, 2), Some(0));
        assert_eq!(owner(&[0xC0, 0, 0, 0, 1, 0], 2), None, "empty DCID");
        assert_eq!(owner(&[], 2), None);
        assert_eq!(owner(&[0x40], 2), None, "truncated");
    }
}
