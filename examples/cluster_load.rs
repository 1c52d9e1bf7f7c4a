//! Load for a cluster: C pairs of sessions, each sender keeping P direct
//! messages in flight to its receiver through `examples/relay` nodes (the
//! same node, or two nodes joined through NATS), or, for the broker's own
//! ceiling, the same traffic as raw NATS publish/subscribe. Reports
//! messages/s, one-way latency percentiles (sender and receiver share this
//! process's clock) and, given the relays' pids, their CPU time per
//! message (utime+stime from /proc).

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use futures_lite::StreamExt;
use hdrhistogram::Histogram;
use msgtrans::packet::{FrameLimits, Packet, PacketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;

const HELP: &str = "\
cluster_load: drive relay nodes (or raw NATS) and measure them

USAGE:
    cluster_load --from ADDR --to ADDR [OPTIONS]
    cluster_load --nats-from URL --nats-to URL [OPTIONS]

OPTIONS:
    --from ADDR       relay (TCP) the senders connect to
    --to ADDR         relay the receivers connect to (the same address
                      measures traffic inside one node)
    --nats-from URL   raw NATS: publish through this server...
    --nats-to URL     ...and subscribe through this one
    -c, --pairs C     sender/receiver pairs               [default: 8]
    -p, --inflight P  messages in flight per pair         [default: 256]
    -s, --size B      payload bytes (min 8)               [default: 64]
    -d, --duration S  measured seconds                    [default: 5]
    -w, --warmup S    warm-up seconds, not measured       [default: 1]
    --pids P[,P..]    processes whose CPU time per message to report
    --broker-pids P[,P..]
                      the brokers' processes, reported apart
    --label NAME      name printed on the result line     [default: the mode]
    -h, --help        print this help

OUTPUT: one line, `label=... msgs_per_sec=... p50_us=... p99_us=...
cpu_ns_per_msg=... broker_cpu_ns_per_msg=...` (cpu only with the pids).
";

struct Args {
    from: Option<SocketAddr>,
    to: Option<SocketAddr>,
    nats_from: Option<String>,
    nats_to: Option<String>,
    pairs: usize,
    inflight: u64,
    size: usize,
    duration: Duration,
    warmup: Duration,
    pids: Vec<u32>,
    broker_pids: Vec<u32>,
    label: Option<String>,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        from: None,
        to: None,
        nats_from: None,
        nats_to: None,
        pairs: 8,
        inflight: 256,
        size: 64,
        duration: Duration::from_secs(5),
        warmup: Duration::from_secs(1),
        pids: Vec::new(),
        broker_pids: Vec::new(),
        label: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        let num = |name: &str, v: String| v.parse::<u64>().map_err(|e| format!("{name}: {e}"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--from" => a.from = Some(value("--from")?.parse().map_err(|e| format!("--from: {e}"))?),
            "--to" => a.to = Some(value("--to")?.parse().map_err(|e| format!("--to: {e}"))?),
            "--nats-from" => a.nats_from = Some(value("--nats-from")?),
            "--nats-to" => a.nats_to = Some(value("--nats-to")?),
            "-c" | "--pairs" => a.pairs = num("--pairs", value("--pairs")?)?.max(1) as usize,
            "-p" | "--inflight" => a.inflight = num("--inflight", value("--inflight")?)?.max(1),
            "-s" | "--size" => a.size = num("--size", value("--size")?)?.max(8) as usize,
            "-d" | "--duration" => a.duration = Duration::from_secs(num("--duration", value("--duration")?)?),
            "-w" | "--warmup" => a.warmup = Duration::from_secs(num("--warmup", value("--warmup")?)?),
            "--pids" => {
                for p in value("--pids")?.split(',') {
                    a.pids.push(p.parse().map_err(|e| format!("--pids: {e}"))?);
                }
            }
            "--broker-pids" => {
                for p in value("--broker-pids")?.split(',') {
                    a.broker_pids
                        .push(p.parse().map_err(|e| format!("--broker-pids: {e}"))?);
                }
            }
            "--label" => a.label = Some(value("--label")?),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let relay = a.from.is_some() && a.to.is_some();
    let nats = a.nats_from.is_some() && a.nats_to.is_some();
    if relay == nats {
        return Err("give --from and --to (relays), or --nats-from and --nats-to (raw NATS)".into());
    }
    Ok(Some(a))
}

/// What every pair shares: the clock, the phase, and the results.
struct Run {
    base: Instant,
    measuring: AtomicBool,
    done: AtomicBool,
    received: AtomicU64,
    hist: Mutex<Histogram<u64>>,
}

impl Run {
    fn stamp(&self) -> u64 {
        self.base.elapsed().as_nanos() as u64
    }
    fn arrived(&self, payload: &[u8]) {
        if self.measuring.load(Ordering::Relaxed) {
            let sent = u64::from_be_bytes(payload[..8].try_into().unwrap_or_default());
            if let Ok(mut h) = self.hist.lock() {
                let _ = h.record(self.stamp().saturating_sub(sent) / 1000);
            }
            self.received.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// One pair's flow control: the sender waits while P are in flight.
struct Flow {
    sent: AtomicU64,
    received: AtomicU64,
    room: Notify,
}

fn frame(p: &Packet) -> Vec<u8> {
    p.to_bytes().map(|b| b.to_vec()).unwrap_or_default()
}

async fn read_packet(s: &mut tokio::net::tcp::OwnedReadHalf, buf: &mut BytesMut) -> Option<Packet> {
    let limits = FrameLimits {
        max_payload: u32::MAX,
        max_ext_header: u16::MAX,
    };
    loop {
        if let Ok(Some(p)) = msgtrans_shards::codec::decode(buf, &limits) {
            return Some(p);
        }
        if s.read_buf(buf).await.ok()? == 0 {
            return None;
        }
    }
}

async fn whoami(addr: SocketAddr) -> Result<(u64, TcpStream), String> {
    let mut s = TcpStream::connect(addr).await.map_err(|e| format!("{addr}: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    let mut who = Packet::new(PacketType::Request, 1);
    who.set_biz_type(1);
    s.write_all(&frame(&who)).await.map_err(|e| e.to_string())?;
    let (mut r, w) = s.into_split();
    let mut buf = BytesMut::new();
    let p = read_packet(&mut r, &mut buf).await.ok_or("the relay closed")?;
    let id = u64::from_be_bytes(p.payload[..8].try_into().map_err(|_| "not a relay")?);
    Ok((id, r.reunite(w).map_err(|e| e.to_string())?))
}

async fn relay_pair(run: Arc<Run>, from: SocketAddr, to: SocketAddr, size: usize, inflight: u64) -> Result<(), String> {
    let (_, sender) = whoami(from).await?;
    let (target, receiver) = whoami(to).await?;
    let flow = Arc::new(Flow {
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        room: Notify::new(),
    });
    let (mut rr, _rw) = receiver.into_split();
    let (run2, flow2) = (Arc::clone(&run), Arc::clone(&flow));
    let reader = tokio::spawn(async move {
        let mut buf = BytesMut::with_capacity(1 << 16);
        while let Some(p) = read_packet(&mut rr, &mut buf).await {
            if p.header.biz_type == 2 {
                run2.arrived(&p.payload);
                flow2.received.fetch_add(1, Ordering::Relaxed);
                flow2.room.notify_one();
            }
        }
    });
    let (mut sr, mut sw) = sender.into_split();
    let run3 = Arc::clone(&run);
    // The sender's own replies (biz 255) would say a message was refused.
    tokio::spawn(async move {
        let mut buf = BytesMut::new();
        while let Some(p) = read_packet(&mut sr, &mut buf).await {
            // At the end a receiver may leave before its last messages.
            if !run3.done.load(Ordering::Relaxed) {
                eprintln!("refused: {}", String::from_utf8_lossy(&p.payload));
            }
        }
    });
    let mut batch = Vec::new();
    while !run.done.load(Ordering::Relaxed) {
        let in_flight = flow.sent.load(Ordering::Relaxed) - flow.received.load(Ordering::Relaxed);
        if in_flight >= inflight {
            let _ = tokio::time::timeout(Duration::from_millis(100), flow.room.notified()).await;
            continue;
        }
        batch.clear();
        for _ in 0..(inflight - in_flight) {
            let mut payload = vec![0u8; size];
            payload[..8].copy_from_slice(&run.stamp().to_be_bytes());
            let mut p = Packet::new(PacketType::OneWay, 0);
            p.set_biz_type(2);
            p.set_ext_header(target.to_be_bytes().to_vec());
            p.set_payload(payload);
            batch.extend_from_slice(&frame(&p));
            flow.sent.fetch_add(1, Ordering::Relaxed);
        }
        sw.write_all(&batch).await.map_err(|e| e.to_string())?;
    }
    reader.abort();
    Ok(())
}

async fn nats_pair(
    run: Arc<Run>,
    from: String,
    to: String,
    subject: String,
    size: usize,
    inflight: u64,
) -> Result<(), String> {
    let publisher = async_nats::connect(from.as_str()).await.map_err(|e| e.to_string())?;
    let subscriber = async_nats::connect(to.as_str()).await.map_err(|e| e.to_string())?;
    let mut sub = subscriber.subscribe(subject.clone()).await.map_err(|e| e.to_string())?;
    subscriber.flush().await.map_err(|e| e.to_string())?;
    // Interest crosses the NATS route before the first message counts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let flow = Arc::new(Flow {
        sent: AtomicU64::new(0),
        received: AtomicU64::new(0),
        room: Notify::new(),
    });
    let (run2, flow2) = (Arc::clone(&run), Arc::clone(&flow));
    let reader = tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            run2.arrived(&m.payload);
            flow2.received.fetch_add(1, Ordering::Relaxed);
            flow2.room.notify_one();
        }
    });
    while !run.done.load(Ordering::Relaxed) {
        let in_flight = flow.sent.load(Ordering::Relaxed) - flow.received.load(Ordering::Relaxed);
        if in_flight >= inflight {
            // Core NATS may drop: a lost message must not stall the pair.
            if tokio::time::timeout(Duration::from_millis(100), flow.room.notified())
                .await
                .is_err()
            {
                flow.received
                    .store(flow.sent.load(Ordering::Relaxed), Ordering::Relaxed);
            }
            continue;
        }
        for _ in 0..(inflight - in_flight) {
            let mut payload = vec![0u8; size];
            payload[..8].copy_from_slice(&run.stamp().to_be_bytes());
            publisher
                .publish(subject.clone(), payload.into())
                .await
                .map_err(|e| e.to_string())?;
            flow.sent.fetch_add(1, Ordering::Relaxed);
        }
    }
    reader.abort();
    Ok(())
}

/// utime+stime of `pid` in nanoseconds.
fn cpu_ns(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = rest.split_whitespace().filter_map(|x| x.parse().ok()).collect();
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12
    // of the numeric ones after the state letter.
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    ticks * 1_000_000_000 / hz
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = match parse() {
        Ok(Some(a)) => a,
        Ok(None) => {
            print!("{HELP}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            return ExitCode::from(2);
        }
    };
    let run = Arc::new(Run {
        base: Instant::now(),
        measuring: AtomicBool::new(false),
        done: AtomicBool::new(false),
        received: AtomicU64::new(0),
        hist: Mutex::new(Histogram::new(3).expect("histogram")),
    });
    let mut tasks = Vec::new();
    for i in 0..args.pairs {
        let run = Arc::clone(&run);
        let (size, inflight) = (args.size, args.inflight);
        tasks.push(match (args.from, args.to, &args.nats_from, &args.nats_to) {
            (Some(from), Some(to), _, _) => tokio::spawn(relay_pair(run, from, to, size, inflight)),
            (_, _, Some(from), Some(to)) => {
                let subject = format!("cluster_load.{}.{i}", std::process::id());
                tokio::spawn(nats_pair(run, from.clone(), to.clone(), subject, size, inflight))
            }
            _ => unreachable!("checked by parse"),
        });
    }
    tokio::time::sleep(args.warmup).await;
    let cpu0: u64 = args.pids.iter().map(|p| cpu_ns(*p)).sum();
    let broker0: u64 = args.broker_pids.iter().map(|p| cpu_ns(*p)).sum();
    let t0 = Instant::now();
    run.measuring.store(true, Ordering::Relaxed);
    tokio::time::sleep(args.duration).await;
    run.measuring.store(false, Ordering::Relaxed);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = args.pids.iter().map(|p| cpu_ns(*p)).sum::<u64>() - cpu0;
    let broker = args.broker_pids.iter().map(|p| cpu_ns(*p)).sum::<u64>() - broker0;
    run.done.store(true, Ordering::Relaxed);
    for t in tasks {
        if let Ok(Ok(Err(e))) = tokio::time::timeout(Duration::from_secs(5), t).await {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let n = run.received.load(Ordering::Relaxed);
    let h = run
        .hist
        .lock()
        .map(|h| h.clone())
        .unwrap_or_else(|_| Histogram::new(3).unwrap());
    let label = args.label.clone().unwrap_or_else(|| {
        if args.from.is_some() {
            if args.from == args.to { "one_node" } else { "cross_node" }.into()
        } else {
            "raw_nats".into()
        }
    });
    let mut line = format!(
        "label={label} size={} pairs={} inflight={} msgs={n} msgs_per_sec={:.0} p50_us={} p99_us={}",
        args.size,
        args.pairs,
        args.inflight,
        n as f64 / secs,
        h.value_at_quantile(0.5),
        h.value_at_quantile(0.99)
    );
    if !args.pids.is_empty() && n > 0 {
        line.push_str(&format!(" cpu_ns_per_msg={:.0}", cpu as f64 / n as f64));
    }
    if !args.broker_pids.is_empty() && n > 0 {
        line.push_str(&format!(" broker_cpu_ns_per_msg={:.0}", broker as f64 / n as f64));
    }
    println!("{line}");
    ExitCode::SUCCESS
}
