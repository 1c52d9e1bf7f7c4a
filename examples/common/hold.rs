//! What the connection-scale runs (`quic_scale`, `tcp_scale`) do with a
//! pool of held connections: a request on every one of them, a trickle of
//! requests at a fixed rate while they are held, latencies in a histogram,
//! and resident memory from /proc.

// Each scale run uses its own part of this.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use msgtrans::transport::TransportClient;

/// A latency histogram in microseconds, up to a minute.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds")
}

/// One request, answered with its own payload; records how long it took.
async fn ask(c: &TransportClient, i: u64, h: &mut Histogram<u64>) -> Result<(), String> {
    let body = i.to_be_bytes();
    let sent = Instant::now();
    let r = c.request(&body).await.map_err(|e| format!("request {i}: {e}"))?;
    if r.data.as_deref() != Some(&body[..]) {
        return Err(format!("request {i} answered wrongly"));
    }
    h.saturating_record(sent.elapsed().as_micros() as u64);
    Ok(())
}

/// One request on each of the client's `n` pooled connections: the pool
/// hands connections out in turn, so `n` requests in a row touch each
/// once. Fails if a connection is gone first.
pub async fn every_connection(c: &TransportClient, n: usize, h: &mut Histogram<u64>) -> Result<(), String> {
    let live = c.session_ids().len();
    if live != n {
        return Err(format!("{live} of {n} connections open; {}", why_closed(c).await));
    }
    for i in 0..n {
        ask(c, i as u64, h).await?;
    }
    Ok(())
}

/// The reasons the client's events give for closed connections (the
/// events queued so far, which this consumes).
async fn why_closed(c: &TransportClient) -> String {
    let mut events = c.subscribe_events();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(100), events.next()).await {
        if let msgtrans::event::ClientEvent::Disconnected { reason } = ev {
            *reasons.entry(format!("{reason:?}")).or_default() += 1;
        }
    }
    format!("the client saw them close with {reasons:?}")
}

/// The most requests per second a run may ask for, all clients together:
/// each client asks one at a time, so a rate above what its latency
/// allows is only approached, and far above it the tick would round to
/// nothing.
pub const MAX_RATE: f64 = 1_000_000.0;

/// Rejects what a scale run cannot do as asked: a rate outside
/// 0..=[`MAX_RATE`], or fewer connections than clients (a client with
/// none would have nothing to hold or ask on).
pub fn check_plan(conns: usize, clients: usize, rate: f64) -> Result<(), String> {
    if !(0.0..=MAX_RATE).contains(&rate) {
        return Err(format!("--rate {rate}: from 0 to {MAX_RATE}"));
    }
    if conns < clients {
        return Err(format!(
            "{conns} connections cannot be shared by {clients} clients; use fewer clients"
        ));
    }
    Ok(())
}

/// The report of the hold: the rate asked for, the rate made (the
/// requests are sequential per client, so a slow server lowers it), and
/// their latencies.
pub fn held_line(secs: u64, asked: f64, h: &Histogram<u64>) -> String {
    let made = h.len() as f64 / secs.max(1) as f64;
    format!(
        "held {secs} s, asked for {asked} requests per second and made {made:.0}: {}",
        summary(h)
    )
}

/// Requests at `per_sec` for `length`, one at a time, spread over the pool
/// in turn; their latencies go into `h`. Returns how many were answered.
pub async fn trickle(
    c: &TransportClient,
    per_sec: f64,
    length: Duration,
    h: &mut Histogram<u64>,
) -> Result<u64, String> {
    if per_sec <= 0.0 {
        tokio::time::sleep(length).await;
        return Ok(0);
    }
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / per_sec));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let end = Instant::now() + length;
    let mut done = 0;
    while Instant::now() < end {
        tick.tick().await;
        ask(c, done, h).await?;
        done += 1;
    }
    Ok(done)
}

/// `p50 / p99 / max` of `h`, in milliseconds.
pub fn summary(h: &Histogram<u64>) -> String {
    format!(
        "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} requests)",
        h.value_at_quantile(0.5) as f64 / 1000.0,
        h.value_at_quantile(0.99) as f64 / 1000.0,
        h.max() as f64 / 1000.0,
        h.len()
    )
}

/// Lowers this thread's priority (nice 10), and with it that of every
/// thread it starts from now on. The load generator shares this machine's
/// two cores with the server, which a deployment gives cores of its own:
/// at equal priority eight busy client threads starved the server's
/// shards until their sockets overflowed, measuring the generator rather
/// than the server.
pub fn yield_to_the_server() {
    // SAFETY: plain syscall; on Linux it applies to the calling thread.
    unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, 10) };
}

/// Megabytes, for the reports.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// What a scale run reports once every connection is open: how fast they
/// opened, the requests made as each opened, and resident memory per
/// connection (the servers' growth, and with the clients' added).
pub struct Opened<'a> {
    pub conns: usize,
    pub took: Duration,
    /// Sessions the server side says it holds.
    pub held: usize,
    pub start: &'a Histogram<u64>,
    pub server_before: u64,
    pub server_now: u64,
    /// What the clients' processes grew by.
    pub client_growth: u64,
}

impl Opened<'_> {
    pub fn print(&self) {
        let n = self.conns.max(1) as u64;
        let server_growth = self.server_now.saturating_sub(self.server_before);
        println!(
            "opened {} connections in {:.1} s ({:.0} per second); the server side holds {} sessions",
            self.conns,
            self.took.as_secs_f64(),
            self.conns as f64 / self.took.as_secs_f64(),
            self.held
        );
        println!("  a request on each as it opened: {}", summary(self.start));
        println!(
            "  resident memory: servers {:.1} -> {:.1} MB ({} bytes per connection); clients {:.1} MB \
             more; in total {} bytes per connection",
            mb(self.server_before),
            mb(self.server_now),
            server_growth / n,
            mb(self.client_growth),
            (server_growth + self.client_growth) / n
        );
    }
}

/// Resident memory of process `pid`, in bytes, from /proc.
pub fn rss(pid: u32) -> Result<u64, String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).map_err(|e| format!("/proc/{pid}: {e}"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map(|kb| kb * 1024)
        .ok_or_else(|| format!("/proc/{pid}/status has no VmRSS"))
}

/// `h` on one line (`value:count` pairs), for a client process to hand
/// its latencies to the driver, which merges them with [`merge_line`].
pub fn to_line(h: &Histogram<u64>) -> String {
    let pairs: Vec<String> = h
        .iter_recorded()
        .map(|v| format!("{}:{}", v.value_iterated_to(), v.count_at_value()))
        .collect();
    pairs.join(" ")
}

/// Adds the latencies of a [`to_line`] line to `h`.
pub fn merge_line(h: &mut Histogram<u64>, line: &str) -> Result<(), String> {
    for pair in line.split_whitespace() {
        let (v, n) = pair.split_once(':').ok_or_else(|| format!("bad pair {pair:?}"))?;
        let v: u64 = v.parse().map_err(|_| format!("bad value {v:?}"))?;
        let n: u64 = n.parse().map_err(|_| format!("bad count {n:?}"))?;
        h.record_n(v, n).map_err(|e| e.to_string())?;
    }
    Ok(())
}
