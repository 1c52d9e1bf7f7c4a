//! Load generator: C connections × P messages in flight, each echoed by the
//! server under test. Reports messages/s, MB/s, latency percentiles from an
//! HDR histogram and, given the server's pid, server CPU time per message
//! (utime+stime from /proc), the honest per-core figure on a small machine.
//!
//! It runs on its own glommio executors (`--threads`, pinned with `--cpus`)
//! and batches like the server: one read, then one write of as many new
//! packets as came back, so it is not the bottleneck it measures.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::TcpStream;
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

const HELP: &str = "\
load: drive a msgtrans echo server and measure it

USAGE:
    load [OPTIONS]

OPTIONS:
    --addr ADDR          server address                      [default: 127.0.0.1:8001]
    --proto P            tcp (ws, wss, quic: when they land) [default: tcp]
    -c, --conns C        connections                         [default: 64]
    -p, --inflight P     messages in flight per connection   [default: 16]
    -s, --size B         payload bytes (min 8)               [default: 64]
    -d, --duration S     measured seconds                    [default: 10]
    -w, --warmup S       warm-up seconds, not measured       [default: 2]
    -t, --threads T      load generator threads (shards)     [default: 1]
    --cpus LIST          pin threads to these cpus, e.g. 1 or 1,2
    --server-pid PID     report the server's CPU time per message
    --json               print one JSON line instead of text
    -h, --help           print this help
";

const HEADER: usize = 16;
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

#[derive(Clone)]
struct Args {
    addr: SocketAddr,
    conns: usize,
    inflight: usize,
    size: usize,
    duration: f64,
    warmup: f64,
    threads: usize,
    cpus: Vec<usize>,
    server_pid: Option<u32>,
    json: bool,
}

fn parse() -> Result<Option<Args>, String> {
    let mut a = Args {
        addr: "127.0.0.1:8001".parse().unwrap(),
        conns: 64,
        inflight: 16,
        size: 64,
        duration: 10.0,
        warmup: 2.0,
        threads: 1,
        cpus: Vec::new(),
        server_pid: None,
        json: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if arg == "--json" {
            a.json = true;
            continue;
        }
        let v = it.next().ok_or(format!("{arg} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            "--addr" => a.addr = v.parse().map_err(|e| format!("--addr: {e}"))?,
            "--proto" if v == "tcp" => {}
            "--proto" => return Err(format!("--proto {v}: only tcp is available in this build")),
            "-c" | "--conns" => a.conns = num(&v)? as usize,
            "-p" | "--inflight" => a.inflight = num(&v)? as usize,
            "-s" | "--size" => a.size = num(&v)? as usize,
            "-d" | "--duration" => a.duration = num(&v)?,
            "-w" | "--warmup" => a.warmup = num(&v)?,
            "-t" | "--threads" => a.threads = num(&v)? as usize,
            "--cpus" => {
                a.cpus = v
                    .split(',')
                    .map(|c| c.trim().parse().map_err(|e| format!("--cpus: {e}")))
                    .collect::<Result<_, _>>()?
            }
            "--server-pid" => a.server_pid = Some(num(&v)? as u32),
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if a.size < 8 || a.conns == 0 || a.inflight == 0 || a.threads == 0 {
        return Err("need --size >= 8 and positive --conns, --inflight, --threads".into());
    }
    Ok(Some(a))
}

/// utime + stime of a process, in seconds.
fn cpu_seconds(pid: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks / hz)
}

struct Shared {
    phase: AtomicU8,
    msgs: AtomicU64,
    errors: AtomicU64,
    epoch: Instant,
}

fn frame(buf: &mut Vec<u8>, size: usize, stamp_ns: u64) {
    buf.extend_from_slice(&[1, 0, 0, 0]);
    buf.extend_from_slice(&0u32.to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&(size as u32).to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&stamp_ns.to_le_bytes());
    buf.resize(buf.len() + size - 8, 0xAB);
}

async fn connection(args: Args, shared: Arc<Shared>, hist: Rc<RefCell<Histogram<u64>>>) -> std::io::Result<()> {
    let mut s = TcpStream::connect(args.addr).await?;
    s.set_nodelay(true)?;
    let frame_len = HEADER + args.size;
    let mut wbuf = Vec::with_capacity(frame_len * args.inflight);
    let now = |shared: &Shared| shared.epoch.elapsed().as_nanos() as u64;
    for _ in 0..args.inflight {
        frame(&mut wbuf, args.size, now(&shared));
    }
    s.write_all(&wbuf).await?;
    let mut rbuf = vec![0u8; (frame_len * args.inflight).max(64 * 1024)];
    let mut have = 0;
    loop {
        let phase = shared.phase.load(Ordering::Relaxed);
        if phase == DONE {
            return Ok(());
        }
        let n = s.read(&mut rbuf[have..]).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        have += n;
        let t = now(&shared);
        let mut off = 0;
        let mut done = 0u64;
        {
            let mut h = hist.borrow_mut();
            while have - off >= frame_len {
                let p = &rbuf[off + HEADER..off + HEADER + 8];
                let sent = u64::from_le_bytes(p.try_into().unwrap());
                if phase == MEASURE {
                    let _ = h.record(t.saturating_sub(sent).max(1));
                }
                off += frame_len;
                done += 1;
            }
        }
        rbuf.copy_within(off..have, 0);
        have -= off;
        if phase == MEASURE {
            shared.msgs.fetch_add(done, Ordering::Relaxed);
        }
        wbuf.clear();
        for _ in 0..done {
            frame(&mut wbuf, args.size, t);
        }
        s.write_all(&wbuf).await?;
    }
}

fn main() -> ExitCode {
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
    let shared = Arc::new(Shared {
        phase: AtomicU8::new(WARMUP),
        msgs: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        epoch: Instant::now(),
    });
    let mut threads = Vec::new();
    for t in 0..args.threads {
        let conns = args.conns / args.threads + usize::from(t < args.conns % args.threads);
        let placement = match args.cpus.get(t % args.cpus.len().max(1)) {
            Some(c) => Placement::Fixed(*c),
            None => Placement::Unbound,
        };
        let (a, sh) = (args.clone(), Arc::clone(&shared));
        let h = LocalExecutorBuilder::new(placement)
            .name("load")
            .io_memory(1 << 20)
            .spawn(move || async move {
                let hist = Rc::new(RefCell::new(
                    Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap(),
                ));
                let tasks: Vec<_> = (0..conns)
                    .map(|_| {
                        let (a, sh, h) = (a.clone(), Arc::clone(&sh), Rc::clone(&hist));
                        glommio::spawn_local(async move {
                            if let Err(e) = connection(a, Arc::clone(&sh), h).await {
                                if sh.phase.load(Ordering::Relaxed) != DONE {
                                    sh.errors.fetch_add(1, Ordering::Relaxed);
                                    eprintln!("connection error: {e}");
                                }
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await;
                }
                Rc::try_unwrap(hist)
                    .map(RefCell::into_inner)
                    .unwrap_or_else(|h| h.borrow().clone())
            });
        match h {
            Ok(h) => threads.push(h),
            Err(e) => {
                eprintln!("error: cannot start load thread: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let pid = args.server_pid.map(|p| p.to_string());
    std::thread::sleep(Duration::from_secs_f64(args.warmup));
    let cpu0 = pid.as_deref().and_then(cpu_seconds);
    let self0 = cpu_seconds("self");
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    shared.phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let msgs = shared.msgs.load(Ordering::Relaxed);
    let cpu1 = pid.as_deref().and_then(cpu_seconds);
    let self1 = cpu_seconds("self");
    // Connections end at their next read; closing the sockets is enough.
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    for h in threads {
        // A connection still blocked in read stops when the server echoes
        // its last batch; detach after a grace period rather than hang.
        match h.join() {
            Ok(part) => {
                let _ = hist.add(part);
            }
            Err(e) => eprintln!("load thread failed: {e}"),
        }
    }
    let rate = msgs as f64 / elapsed;
    let mbps = rate * (HEADER + args.size) as f64 / 1e6;
    let server_ns = match (cpu0, cpu1) {
        (Some(a), Some(b)) if msgs > 0 => Some((b - a) * 1e9 / msgs as f64),
        _ => None,
    };
    let load_ns = match (self0, self1) {
        (Some(a), Some(b)) if msgs > 0 => Some((b - a) * 1e9 / msgs as f64),
        _ => None,
    };
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let errors = shared.errors.load(Ordering::Relaxed);
    if args.json {
        let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
        println!(
            "{{\"conns\":{},\"inflight\":{},\"size\":{},\"seconds\":{:.3},\"msgs\":{},\"msgs_per_s\":{:.0},\"mb_per_s\":{:.2},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"server_cpu_ns_per_msg\":{},\"load_cpu_ns_per_msg\":{},\"errors\":{}}}",
            args.conns, args.inflight, args.size, elapsed, msgs, rate, mbps, q(0.5), q(0.99), q(0.999), opt(server_ns), opt(load_ns), errors
        );
    } else {
        println!(
            "{} conns x {} in flight, {} B payload, {:.1} s",
            args.conns, args.inflight, args.size, elapsed
        );
        println!("  {:.0} msg/s, {:.1} MB/s, {} errors", rate, mbps, errors);
        println!(
            "  latency p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
            q(0.5),
            q(0.99),
            q(0.999)
        );
        if let Some(ns) = server_ns {
            println!(
                "  server CPU {ns:.0} ns/msg (capacity per core ~{:.2}M msg/s)",
                1e3 / ns
            );
        }
        if let Some(ns) = load_ns {
            println!("  load generator CPU {ns:.0} ns/msg");
        }
    }
    if errors > 0 || msgs == 0 {
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
