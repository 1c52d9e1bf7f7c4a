//! Load generator: C connections × P messages in flight, each echoed by the
//! server under test. Reports messages/s, MB/s, latency percentiles from an
//! HDR histogram and, given the server's pid, server CPU time per message
//! (utime+stime from /proc), the honest per-core figure on a small machine.
//!
//! Each load thread (`--threads`, pinned with `--cpus`) drives its
//! connections on one io_uring set up with DEFER_TASKRUN: the server's
//! wake-ups never interrupt it, and one `io_uring_enter` per loop turn
//! submits every connection's sends and receives. For each batch of echoes
//! that comes back it sends as many new packets, so P stay in flight. It has
//! to cost less per message than the servers it measures.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    -t, --threads T      load generator threads, one ring each [default: 1]
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

/// One connection of a load thread.
struct Conn {
    sock: std::net::TcpStream,
    rbuf: Vec<u8>,
    have: usize,
    /// Bytes being sent (a SEND is in flight while non-empty).
    wbuf: Vec<u8>,
    wpos: usize,
    /// New frames waiting for the SEND in flight to finish.
    next: Vec<u8>,
}

const RECV: u64 = 0;
const SEND: u64 = 1;

fn recv_sqe(c: &mut Conn, key: usize) -> io_uring::squeue::Entry {
    use std::os::fd::AsRawFd;
    let spare = &mut c.rbuf[c.have..];
    io_uring::opcode::Recv::new(
        io_uring::types::Fd(c.sock.as_raw_fd()),
        spare.as_mut_ptr(),
        spare.len() as u32,
    )
    .build()
    .user_data((key as u64) << 1 | RECV)
}

fn send_sqe(c: &Conn, key: usize) -> io_uring::squeue::Entry {
    use std::os::fd::AsRawFd;
    let rest = &c.wbuf[c.wpos..];
    io_uring::opcode::Send::new(
        io_uring::types::Fd(c.sock.as_raw_fd()),
        rest.as_ptr(),
        rest.len() as u32,
    )
    .build()
    .user_data((key as u64) << 1 | SEND)
}

/// Drives `conns` connections from this thread on one io_uring with
/// DEFER_TASKRUN: completions are processed only when this thread asks, so
/// the server's wake-ups never interrupt it, and every turn of the loop
/// submits all connections' sends and receives with one `io_uring_enter`.
fn drive(args: &Args, conns: usize, shared: &Shared) -> std::io::Result<Histogram<u64>> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let frame_len = HEADER + args.size;
    let now = || shared.epoch.elapsed().as_nanos() as u64;
    let mut ring: io_uring::IoUring = io_uring::IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build((conns * 2).next_power_of_two().max(64) as u32)?;
    let mut cs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let sock = std::net::TcpStream::connect(args.addr)?;
        sock.set_nodelay(true)?;
        let mut wbuf = Vec::with_capacity(frame_len * args.inflight);
        for _ in 0..args.inflight {
            frame(&mut wbuf, args.size, now());
        }
        cs.push(Conn {
            sock,
            rbuf: vec![0; (frame_len * args.inflight).max(64 * 1024)],
            have: 0,
            wbuf,
            wpos: 0,
            next: Vec::new(),
        });
    }
    let mut sqes: Vec<io_uring::squeue::Entry> = Vec::with_capacity(conns * 2);
    for (k, c) in cs.iter_mut().enumerate() {
        sqes.push(recv_sqe(c, k));
        sqes.push(send_sqe(c, k));
    }
    let wait = io_uring::types::Timespec::new().nsec(50_000_000);
    let mut cqes = Vec::with_capacity(conns * 2);
    loop {
        {
            let mut sq = ring.submission();
            for e in sqes.drain(..) {
                // SAFETY: every buffer an entry points to lives in `cs`,
                // which outlives the ring's use of it.
                unsafe { sq.push(&e).expect("ring sized for two entries per connection") };
            }
        }
        let args_ = io_uring::types::SubmitArgs::new().timespec(&wait);
        match ring.submitter().submit_with_args(1, &args_) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ETIME) || e.raw_os_error() == Some(libc::EINTR) => {}
            Err(e) => return Err(e),
        }
        let phase = shared.phase.load(Ordering::Relaxed);
        if phase == DONE {
            return Ok(hist);
        }
        cqes.clear();
        cqes.extend(ring.completion().map(|c| (c.user_data(), c.result())));
        let t = now();
        for &(ud, res) in &cqes {
            let key = (ud >> 1) as usize;
            let c = &mut cs[key];
            if res < 0 {
                return Err(std::io::Error::from_raw_os_error(-res));
            }
            if ud & 1 == RECV {
                if res == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
                c.have += res as usize;
                let mut off = 0;
                let mut done = 0u64;
                while c.have - off >= frame_len {
                    let p = &c.rbuf[off + HEADER..off + HEADER + 8];
                    let sent = u64::from_le_bytes(p.try_into().unwrap());
                    if phase == MEASURE {
                        let _ = hist.record(t.saturating_sub(sent).max(1));
                    }
                    off += frame_len;
                    done += 1;
                }
                c.rbuf.copy_within(off..c.have, 0);
                c.have -= off;
                if phase == MEASURE {
                    shared.msgs.fetch_add(done, Ordering::Relaxed);
                }
                for _ in 0..done {
                    frame(&mut c.next, args.size, t);
                }
                sqes.push(recv_sqe(c, key));
                if c.wpos == c.wbuf.len() && !c.next.is_empty() {
                    c.wbuf.clear();
                    c.wpos = 0;
                    std::mem::swap(&mut c.wbuf, &mut c.next);
                    sqes.push(send_sqe(c, key));
                }
            } else {
                c.wpos += res as usize;
                if c.wpos < c.wbuf.len() {
                    sqes.push(send_sqe(c, key));
                } else if !c.next.is_empty() {
                    c.wbuf.clear();
                    c.wpos = 0;
                    std::mem::swap(&mut c.wbuf, &mut c.next);
                    sqes.push(send_sqe(c, key));
                }
            }
        }
    }
}

fn pin(cpu: Option<usize>) {
    if let Some(cpu) = cpu {
        // SAFETY: a zeroed cpu_set_t with one bit set, passed with its size.
        unsafe {
            let mut set = std::mem::zeroed::<libc::cpu_set_t>();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
        }
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
        let cpu = args.cpus.get(t % args.cpus.len().max(1)).copied();
        let (a, sh) = (args.clone(), Arc::clone(&shared));
        let h = std::thread::Builder::new().name(format!("load-{t}")).spawn(move || {
            pin(cpu);
            drive(&a, conns, &sh).inspect_err(|e| {
                if sh.phase.load(Ordering::Relaxed) != DONE {
                    sh.errors.fetch_add(1, Ordering::Relaxed);
                    eprintln!("load thread {t}: {e}");
                }
            })
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
        // Each thread notices DONE within one ring wait (50 ms).
        if let Ok(Ok(part)) = h.join() {
            let _ = hist.add(part);
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
