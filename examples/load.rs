//! Load generator: C connections × P messages in flight, each echoed by the
//! server under test. Reports messages/s, MB/s, latency percentiles from an
//! HDR histogram and, given the server's pid, server CPU time per message
//! (utime+stime from /proc), the honest per-core figure on a small machine.
//!
//! TCP and WebSocket run on a raw io_uring loop: each load thread
//! (`--threads`, pinned with `--cpus`) drives its connections on one ring
//! set up with DEFER_TASKRUN, so the server's wake-ups never interrupt it,
//! and one `io_uring_enter` per loop turn submits every connection's sends
//! and receives. For each batch of echoes that comes back it sends as many
//! new packets, so P stay in flight. WebSocket differs only in the framing
//! (`load/ws.rs`): the upgrade is done blocking before the measured loop,
//! then each packet goes out as one masked binary frame.
//!
//! With `--request` every packet is a request with an id of its own (per
//! connection, counting up), and the server must answer each with a
//! response carrying that id: the pattern MsgTrans users write most, which
//! on the server side goes through its request bookkeeping rather than a
//! plain echo. The load checks every answer against its table of
//! outstanding ids (an unknown, repeated or non-response answer is an
//! error) and measures each request's round trip.
//!
//! TLS, WSS and QUIC (and any protocol with `--engine`) run through our own
//! engine on its own shards (`load/engine.rs`), with an inline handler that
//! answers each echo with the next packet: the same pipeline as the server,
//! so the load costs about what the server does per message and needs a
//! core of its own. It reports its own CPU per message beside the server's.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

// Crate roots look for modules beside them: these live in examples/load/,
// where cargo does not take them for examples of their own.
#[path = "load/engine.rs"]
mod engine;
#[path = "load/ws.rs"]
mod ws;

const HELP: &str = "\
load: drive a msgtrans echo server and measure it

USAGE:
    load [OPTIONS]

OPTIONS:
    --proto P            tcp or ws: raw io_uring loop; tls (TCP+TLS), wss or
                         quic: our engine on its own shards  [default: tcp]
    --addr ADDR          server address [default: sharded_server's for the
                         protocol: 127.0.0.1:8001 tcp and tls, :8002 ws and
                         wss, :8003 quic]
    --ws-path PATH       WebSocket path to upgrade           [default: /ws]
    --ca PEM             trust this CA certificate (tls, wss, quic); the
                         server prints the file of its self-signed one
    --server-name NAME   name the server's certificate must carry
                                                   [default: the address's IP]
    --engine             drive tcp or ws through the engine as well, to
                         compare its cost with the raw loop's
    --request            send requests (ids counting up per connection)
                         and expect a response to each, instead of one-way
                         packets echoed back
    -c, --conns C        connections                         [default: 64]
    -p, --inflight P     messages in flight per connection   [default: 16]
    -s, --size B         payload bytes (min 8)               [default: 64]
    -d, --duration S     measured seconds                    [default: 10]
    -w, --warmup S       warm-up seconds, not measured       [default: 2]
    -t, --threads T      load threads (one ring each) or engine shards
                                                             [default: 1]
    --cpus LIST          pin threads to these cpus, e.g. 1 or 1,2
    --server-pid PID     report the server's CPU time per message
    --json               print one JSON line instead of text
    -h, --help           print this help
";

const HEADER: usize = 16;
const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const DONE: u8 = 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Proto {
    Tcp,
    Ws,
    Tls,
    Wss,
    Quic,
}

impl Proto {
    fn name(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Ws => "ws",
            Proto::Tls => "tls",
            Proto::Wss => "wss",
            Proto::Quic => "quic",
        }
    }
    fn default_port(self) -> u16 {
        match self {
            Proto::Tcp | Proto::Tls => 8001,
            Proto::Ws | Proto::Wss => 8002,
            Proto::Quic => 8003,
        }
    }
}

#[derive(Clone)]
struct Args {
    addr: SocketAddr,
    proto: Proto,
    ws_path: String,
    ca: Option<String>,
    server_name: Option<String>,
    engine: bool,
    request: bool,
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
        proto: Proto::Tcp,
        ws_path: "/ws".into(),
        ca: None,
        server_name: None,
        engine: false,
        request: false,
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
    let mut addr = None;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        if arg == "-h" || arg == "--help" {
            return Ok(None);
        }
        if arg == "--json" {
            a.json = true;
            continue;
        }
        if arg == "--engine" {
            a.engine = true;
            continue;
        }
        if arg == "--request" {
            a.request = true;
            continue;
        }
        let v = it.next().ok_or(format!("{arg} needs a value"))?;
        let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{arg}: {e}"));
        match arg.as_str() {
            "--addr" => addr = Some(v.parse().map_err(|e| format!("--addr: {e}"))?),
            "--proto" => {
                a.proto = match v.as_str() {
                    "tcp" => Proto::Tcp,
                    "ws" => Proto::Ws,
                    "tls" => Proto::Tls,
                    "wss" => Proto::Wss,
                    "quic" => Proto::Quic,
                    _ => return Err(format!("--proto {v}: expected tcp, ws, tls, wss or quic")),
                }
            }
            "--ws-path" => a.ws_path = v,
            "--ca" => a.ca = Some(v),
            "--server-name" => a.server_name = Some(v),
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
    a.addr = addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], a.proto.default_port())));
    Ok(Some(a))
}

/// Seconds a process has spent in user space and in the kernel (utime,
/// stime). The kernel share is reported apart because it is what no
/// server can cut by being cleverer in user space: for a small-message TCP
/// echo it is most of the cost, on loopback including the peer's receive
/// path, which the kernel runs in the sender's context.
#[derive(Clone, Copy)]
struct CpuTimes {
    user: f64,
    sys: f64,
}

fn cpu_times(pid: &str) -> Option<CpuTimes> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the
    // 14th and 15th fields of the line.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(CpuTimes {
        user: f.get(11)?.parse::<f64>().ok()? / hz,
        sys: f.get(12)?.parse::<f64>().ok()? / hz,
    })
}

/// Nanoseconds per message of `part` (user, kernel or both) between two
/// readings.
fn per_msg(a: Option<CpuTimes>, b: Option<CpuTimes>, msgs: u64, part: fn(CpuTimes) -> f64) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if msgs > 0 => Some((part(b) - part(a)) * 1e9 / msgs as f64),
        _ => None,
    }
}

struct Shared {
    phase: AtomicU8,
    msgs: AtomicU64,
    errors: AtomicU64,
    epoch: Instant,
}

/// Packet types on the wire (header byte 2).
const ONE_WAY: u8 = 0;
const REQUEST: u8 = 1;
const RESPONSE: u8 = 2;

/// Appends one packet: a one-way packet (`id` None) or a request with that
/// id, carrying `stamp_ns` in its first 8 payload bytes.
fn frame(buf: &mut Vec<u8>, size: usize, stamp_ns: u64, id: Option<u32>) {
    let kind = if id.is_some() { REQUEST } else { ONE_WAY };
    buf.extend_from_slice(&[1, 0, kind, 0]);
    buf.extend_from_slice(&id.unwrap_or(0).to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&(size as u32).to_be_bytes());
    buf.extend_from_slice(&0u16.to_be_bytes());
    buf.extend_from_slice(&stamp_ns.to_le_bytes());
    buf.resize(buf.len() + size - 8, 0xAB);
}

/// How packets travel on the raw loop: back to back (TCP), or one masked
/// binary WebSocket frame each, copied from this pre-masked template.
enum Framing {
    Tcp,
    Ws(Vec<u8>),
}

impl Framing {
    fn push(&self, buf: &mut Vec<u8>, size: usize, stamp_ns: u64, id: Option<u32>) {
        match self {
            Framing::Tcp => frame(buf, size, stamp_ns, id),
            Framing::Ws(template) => ws::push_frame(buf, template, stamp_ns, id.unwrap_or(0)),
        }
    }
}

/// What one connection expects back: echoes of one-way packets, or
/// responses to the requests it has outstanding.
#[derive(Default)]
struct Expect {
    request: bool,
    next_id: u32,
    /// Ids of the requests sent and not yet answered, oldest first.
    pending: std::collections::VecDeque<u32>,
}

impl Expect {
    /// The id for a new packet (None: one-way).
    fn issue(&mut self) -> Option<u32> {
        if !self.request {
            return None;
        }
        self.next_id = self.next_id.wrapping_add(1);
        self.pending.push_back(self.next_id);
        Some(self.next_id)
    }

    /// Checks an answer (`packet` is its header and payload).
    fn answer(&mut self, packet: &[u8]) -> std::io::Result<()> {
        let bad = |why: String| Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
        let kind = packet[2];
        if !self.request {
            return if kind == ONE_WAY {
                Ok(())
            } else {
                bad(format!("echo of packet type {kind}, sent one-way"))
            };
        }
        let id = u32::from_be_bytes(packet[4..8].try_into().unwrap());
        if kind != RESPONSE {
            return bad(format!("answer to request {id} has packet type {kind}, not a response"));
        }
        // Answers come in order on one connection, so the oldest matches
        // at once; out of order is allowed, an unknown id is not.
        if self.pending.front() == Some(&id) {
            self.pending.pop_front();
            return Ok(());
        }
        match self.pending.iter().position(|&p| p == id) {
            Some(at) => {
                self.pending.remove(at);
                Ok(())
            }
            None => bad(format!("response to request {id}, which is not outstanding")),
        }
    }
}

/// Parses the echoes at the start of `buf` (a whole number of them), checks
/// each against `expect`, calls `each` with every one's timestamp, and
/// returns the bytes they took.
fn parse_echoes(
    framing: &Framing,
    buf: &[u8],
    frame_len: usize,
    expect: &mut Expect,
    mut each: impl FnMut(u64),
) -> std::io::Result<usize> {
    let stamp = |p: &[u8]| u64::from_le_bytes(p[HEADER..HEADER + 8].try_into().unwrap());
    let mut off = 0;
    match framing {
        Framing::Tcp => {
            while buf.len() - off >= frame_len {
                expect.answer(&buf[off..])?;
                each(stamp(&buf[off..]));
                off += frame_len;
            }
        }
        Framing::Ws(_) => {
            while let ws::Parsed::Packet { total, payload_at, len } = ws::parse(&buf[off..])? {
                if len != frame_len {
                    let why = format!("WebSocket message of {len} bytes, expected one packet of {frame_len}");
                    return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, why));
                }
                expect.answer(&buf[off + payload_at..])?;
                each(stamp(&buf[off + payload_at..]));
                off += total;
            }
        }
    }
    Ok(off)
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
    expect: Expect,
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
    let framing = match args.proto {
        Proto::Ws => {
            let mut packet = Vec::with_capacity(frame_len);
            frame(&mut packet, args.size, 0, args.request.then_some(0));
            Framing::Ws(ws::masked_template(&packet))
        }
        _ => Framing::Tcp,
    };
    // Room for every echo in flight, with its WebSocket header.
    let wire_len = frame_len + if args.proto == Proto::Ws { 14 } else { 0 };
    let mut cs = Vec::with_capacity(conns);
    for _ in 0..conns {
        let mut sock = std::net::TcpStream::connect(args.addr)?;
        sock.set_nodelay(true)?;
        let mut rbuf = vec![0; (wire_len * args.inflight).max(64 * 1024)];
        let mut have = 0;
        if args.proto == Proto::Ws {
            let early = ws::upgrade(&mut sock, &args.addr.to_string(), &args.ws_path)?;
            rbuf[..early.len()].copy_from_slice(&early);
            have = early.len();
        }
        let mut wbuf = Vec::with_capacity(wire_len * args.inflight);
        let mut expect = Expect {
            request: args.request,
            ..Expect::default()
        };
        for _ in 0..args.inflight {
            framing.push(&mut wbuf, args.size, now(), expect.issue());
        }
        cs.push(Conn {
            sock,
            rbuf,
            have,
            wbuf,
            wpos: 0,
            next: Vec::new(),
            expect,
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
                let mut done = 0u64;
                let off = parse_echoes(&framing, &c.rbuf[..c.have], frame_len, &mut c.expect, |sent| {
                    if phase == MEASURE {
                        let _ = hist.record(t.saturating_sub(sent).max(1));
                    }
                    done += 1;
                })?;
                c.rbuf.copy_within(off..c.have, 0);
                c.have -= off;
                if phase == MEASURE {
                    shared.msgs.fetch_add(done, Ordering::Relaxed);
                }
                for _ in 0..done {
                    let id = c.expect.issue();
                    framing.push(&mut c.next, args.size, t, id);
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
        pin_to(&[cpu]);
    }
}

/// Restricts the calling thread (and the threads it starts) to `cpus`.
fn pin_to(cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t with some bits set, passed with its size.
    unsafe {
        let mut set = std::mem::zeroed::<libc::cpu_set_t>();
        for &cpu in cpus {
            libc::CPU_SET(cpu, &mut set);
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
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
    let via_engine = args.engine || !matches!(args.proto, Proto::Tcp | Proto::Ws);
    let mut engine_run = None;
    if via_engine {
        match engine::start(&args, Arc::clone(&shared)) {
            Ok(r) => engine_run = Some(r),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    for t in (0..args.threads).filter(|_| !via_engine) {
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
    let cpu0 = pid.as_deref().and_then(cpu_times);
    let self0 = cpu_times("self");
    let t0 = Instant::now();
    shared.phase.store(MEASURE, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs_f64(args.duration));
    shared.phase.store(DONE, Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let cpu1 = pid.as_deref().and_then(cpu_times);
    let self1 = cpu_times("self");
    // The engine hands its counts over as it stops; the raw threads count
    // in `shared`. Neither counts anything after DONE.
    let (mut msgs, mut hist) = match engine_run {
        Some(r) => r.finish(),
        None => (0, Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap()),
    };
    msgs += shared.msgs.load(Ordering::Relaxed);
    // Connections end at their next read; closing the sockets is enough.
    for h in threads {
        // Each thread notices DONE within one ring wait (50 ms).
        if let Ok(Ok(part)) = h.join() {
            let _ = hist.add(part);
        }
    }
    let rate = msgs as f64 / elapsed;
    let mbps = rate * (HEADER + args.size) as f64 / 1e6;
    let both = |t: CpuTimes| t.user + t.sys;
    let server_ns = per_msg(cpu0, cpu1, msgs, both);
    let server_kernel_ns = per_msg(cpu0, cpu1, msgs, |t| t.sys);
    let load_ns = per_msg(self0, self1, msgs, both);
    let q = |p: f64| hist.value_at_quantile(p) as f64 / 1000.0;
    let errors = shared.errors.load(Ordering::Relaxed);
    if args.json {
        let opt = |v: Option<f64>| v.map_or("null".to_string(), |v| format!("{v:.1}"));
        println!(
            "{{\"proto\":\"{}\",\"engine\":{},\"request\":{},\"conns\":{},\"inflight\":{},\"size\":{},\"seconds\":{:.3},\"msgs\":{},\"msgs_per_s\":{:.0},\"mb_per_s\":{:.2},\"p50_us\":{:.1},\"p99_us\":{:.1},\"p999_us\":{:.1},\"server_cpu_ns_per_msg\":{},\"server_kernel_ns_per_msg\":{},\"load_cpu_ns_per_msg\":{},\"errors\":{}}}",
            args.proto.name(), via_engine, args.request, args.conns, args.inflight, args.size, elapsed, msgs, rate, mbps, q(0.5), q(0.99), q(0.999), opt(server_ns), opt(server_kernel_ns), opt(load_ns), errors
        );
    } else {
        println!(
            "{} conns x {} in flight, {} B payload, {:.1} s, {}{}{}",
            args.conns,
            args.inflight,
            args.size,
            elapsed,
            args.proto.name(),
            if via_engine { " (engine)" } else { "" },
            if args.request { ", request/response" } else { "" }
        );
        println!("  {:.0} msg/s, {:.1} MB/s, {} errors", rate, mbps, errors);
        println!(
            "  latency p50 {:.1} us, p99 {:.1} us, p99.9 {:.1} us",
            q(0.5),
            q(0.99),
            q(0.999)
        );
        if let (Some(ns), Some(k)) = (server_ns, server_kernel_ns) {
            println!(
                "  server CPU {ns:.0} ns/msg, {k:.0} of it in the kernel (capacity per core ~{:.2}M msg/s)",
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
