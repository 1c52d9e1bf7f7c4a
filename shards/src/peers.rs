//! Limits per peer address, shared by every shard of an engine: how many
//! connections one IP may hold at once (handshakes included), and how
//! often it may open one. Checked once per incoming connection, before any
//! TLS or WebSocket work, so one address cannot take every slot or keep
//! the handshakes busy.
//!
//! Off by default. When neither limit is set, nothing here is touched: no
//! lock on the accept path. When one is, the table is a mutex around a map,
//! taken once when a connection arrives and once when it ends; never on the
//! per-message path.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

use crate::stats::Refusal;

/// Entries kept before idle ones (no connection, full bucket) are dropped.
const PRUNE_AT: usize = 4096;

#[derive(Debug)]
struct Peer {
    /// Connections open or handshaking.
    open: usize,
    /// Connects it may still make now (a token bucket of `rate`).
    tokens: f64,
    refilled: Instant,
}

/// The per-address limits and the counts they are checked against.
#[derive(Debug)]
pub(crate) struct PeerTable {
    max_open: Option<usize>,
    /// Connects per second, and the burst allowed: one second's worth.
    rate: Option<u32>,
    peers: Mutex<HashMap<IpAddr, Peer>>,
}

impl PeerTable {
    pub fn new(max_open: Option<usize>, rate: Option<u32>) -> Self {
        Self {
            max_open,
            rate: rate.filter(|&r| r > 0),
            peers: Mutex::new(HashMap::new()),
        }
    }

    fn enabled(&self) -> bool {
        self.max_open.is_some() || self.rate.is_some()
    }

    /// Counts a connection from `ip`, or says which limit refuses it.
    pub fn admit(&self, ip: IpAddr, now: Instant) -> Result<(), Refusal> {
        if !self.enabled() {
            return Ok(());
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if peers.len() >= PRUNE_AT && !peers.contains_key(&ip) {
            self.prune(&mut peers, now);
        }
        let burst = self.rate.map_or(0.0, f64::from);
        let p = peers.entry(ip).or_insert(Peer {
            open: 0,
            tokens: burst,
            refilled: now,
        });
        if let Some(rate) = self.rate {
            let elapsed = now.saturating_duration_since(p.refilled).as_secs_f64();
            p.tokens = (p.tokens + elapsed * f64::from(rate)).min(burst);
            p.refilled = now;
            if p.tokens < 1.0 {
                return Err(Refusal::ConnectRate);
            }
            p.tokens -= 1.0;
        }
        if self.max_open.is_some_and(|max| p.open >= max) {
            return Err(Refusal::PerAddress);
        }
        p.open += 1;
        Ok(())
    }

    /// A connection from `ip` that [`PeerTable::admit`] counted has ended.
    pub fn release(&self, ip: IpAddr) {
        if !self.enabled() {
            return;
        }
        let mut peers = self.peers.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = peers.get_mut(&ip) {
            p.open = p.open.saturating_sub(1);
            if p.open == 0 && self.rate.is_none() {
                peers.remove(&ip);
            }
        }
    }

    /// Drops the addresses that hold nothing: no connection, and a bucket
    /// that has filled up again (so forgetting it changes no decision).
    fn prune(&self, peers: &mut HashMap<IpAddr, Peer>, now: Instant) {
        let burst = self.rate.map_or(0.0, f64::from);
        let rate = self.rate.map_or(0.0, f64::from);
        peers.retain(|_, p| {
            let tokens = p.tokens + now.saturating_duration_since(p.refilled).as_secs_f64() * rate;
            p.open > 0 || tokens < burst
        });
    }

    /// Addresses tracked now (for tests and stats).
    #[cfg(test)]
    fn tracked(&self) -> usize {
        self.peers.lock().unwrap().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn an_address_holds_at_most_its_share_and_gets_it_back_as_connections_end() {
        let t = PeerTable::new(Some(2), None);
        let now = Instant::now();
        assert_eq!(t.admit(ip(2), now), Ok(()));
        assert_eq!(t.admit(ip(2), now), Ok(()));
        assert_eq!(t.admit(ip(2), now), Err(Refusal::PerAddress));
        // Another address is not affected.
        assert_eq!(t.admit(ip(3), now), Ok(()));
        t.release(ip(2));
        assert_eq!(t.admit(ip(2), now), Ok(()));
        t.release(ip(2));
        t.release(ip(2));
        t.release(ip(3));
        assert_eq!(t.tracked(), 0, "addresses with nothing open are forgotten");
    }

    #[test]
    fn connects_past_the_rate_are_refused_until_the_bucket_refills() {
        let t = PeerTable::new(None, Some(3));
        let now = Instant::now();
        for _ in 0..3 {
            assert_eq!(t.admit(ip(2), now), Ok(()));
        }
        assert_eq!(t.admit(ip(2), now), Err(Refusal::ConnectRate));
        assert_eq!(t.admit(ip(3), now), Ok(()), "per address");
        let later = now + Duration::from_millis(340);
        assert_eq!(t.admit(ip(2), later), Ok(()), "a third of a second buys one connect");
        assert_eq!(t.admit(ip(2), later), Err(Refusal::ConnectRate));
    }

    #[test]
    fn with_no_limit_nothing_is_tracked() {
        let t = PeerTable::new(None, None);
        for _ in 0..100 {
            assert_eq!(t.admit(ip(2), Instant::now()), Ok(()));
        }
        assert_eq!(t.tracked(), 0);
    }

    #[test]
    fn idle_addresses_are_pruned_so_the_table_stays_bounded() {
        let t = PeerTable::new(None, Some(1000));
        let now = Instant::now();
        for i in 0..PRUNE_AT as u32 {
            let a = IpAddr::from(((i + 1) << 8).to_be_bytes());
            t.admit(a, now).unwrap();
            t.release(a);
        }
        // A second later every bucket is full again and nothing is open.
        let later = now + Duration::from_secs(2);
        t.admit(ip(9), later).unwrap();
        assert!(t.tracked() <= 2, "{} addresses kept", t.tracked());
    }
}
