#!/usr/bin/env python3
"""compare.py: run msgtrans and its baselines side by side, interleaved, and
report per-core figures next to a baseline measured in the same run.

Every figure in the output is relative to baseline_tokio measured in the same
session, because the project's 2-vCPU machine is noisy: absolute numbers from
different runs are not comparable, ratios from the same run are. Each
protocol is also set against its own peer, what a user would otherwise
write for it (tokio-tungstenite, the same over tokio-rustls, quinn), and
workloads ending in `-req` send requests that must be answered.

Python 3.11 standard library only.
"""

from __future__ import annotations

import argparse
import atexit
import csv
import datetime as dt
import json
import math
import os
import platform
import queue
import random
import re
import resource
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

REPO = Path(__file__).resolve().parent.parent
READY = "listening tcp "
# What sharded_server prints for a certificate clients must trust.
CERT_LINE = "certificate (trust it in clients): "
REFERENCE = "baseline_tokio"

# name, binary, argument template, role (printed under the table)
BUILTIN_SERVERS = [
    ("baseline_tokio", "baseline_tokio", ["--addr", "{addr}", "--shards", "{shards}"],
     "baseline 1: hand-batched tokio current_thread echo (ratio reference)"),
    ("baseline_framed", "baseline_framed", ["--addr", "{addr}", "--shards", "{shards}"],
     "baseline 2: tokio-util Framed echo"),
    ("baseline_glommio", "baseline_glommio", ["--addr", "{addr}", "--shards", "{shards}"],
     "baseline 3: raw glommio batched echo"),
    ("baseline_uring", "baseline_uring", ["--addr", "{addr}", "--shards", "{shards}"],
     "experiment: raw io_uring echo, no runtime (always one thread)"),
    ("baseline_glommio_ring", "baseline_glommio_ring", ["--addr", "{addr}", "--shards", "{shards}"],
     "experiment: glommio tasks whose I/O goes through a second DEFER_TASKRUN ring"),
    ("baseline_tokio_mt", "baseline_tokio_mt", ["--addr", "{addr}", "--shards", "{shards}"],
     "anchor: one tokio multi-thread (work-stealing) runtime with --shards workers"),
    ("msgtrans_inline", "sharded_server", ["--tcp", "{addr}", "--no-ws", "--no-quic", "--shards", "{shards}"],
     "msgtrans sharded_server, inline on-shard handler"),
    ("msgtrans_inline_ring", "sharded_server",
     ["--tcp", "{addr}", "--no-ws", "--no-quic", "--shards", "{shards}", "--tcp-ring"],
     "the same with plain TCP on the shard's own ring (--tcp-ring, opt-in)"),
    ("msgtrans_events", "sharded_server", ["--tcp", "{addr}", "--no-ws", "--no-quic", "--shards", "{shards}", "--events"],
     "msgtrans sharded_server --events (Tokio event stream)"),
]
# The same server over its other protocols: name, binary, argument template,
# role, protocol (load's --proto), the line that says it is ready. The TCP
# listener cannot be switched off, so it takes a free port. The baselines
# speak TCP only, so these rows' ratios compare with a TCP echo. They are
# left out of the connection sweep (a TCP plot).
PROTO_SERVERS = [
    ("msgtrans_ws", "sharded_server",
     ["--tcp", "127.0.0.1:0", "--ws", "{addr}", "--no-quic", "--shards", "{shards}"],
     "msgtrans sharded_server over WebSocket (load: raw io_uring, masked frames)",
     "ws", "listening websocket "),
    ("msgtrans_ws_ring", "sharded_server",
     ["--tcp", "127.0.0.1:0", "--ws", "{addr}", "--no-quic", "--shards", "{shards}", "--tcp-ring"],
     "msgtrans_ws on the shard's own ring (--tcp-ring, opt-in)",
     "ws", "listening websocket "),
    ("msgtrans_wss", "sharded_server",
     ["--tcp", "127.0.0.1:0", "--ws", "{addr}", "--no-quic", "--self-signed", "--shards", "{shards}"],
     "msgtrans sharded_server over WebSocket+TLS (load: our engine on its own core)",
     "wss", "listening wss "),
    ("msgtrans_quic", "sharded_server",
     ["--tcp", "127.0.0.1:0", "--no-ws", "--quic", "{addr}", "--shards", "{shards}"],
     "msgtrans sharded_server over QUIC (load: our engine on its own core)",
     "quic", "listening quic "),
]
# Per-protocol peers: what a user who does not take msgtrans writes for that
# protocol, each written as a competent user would (batched writes). Same
# shape as PROTO_SERVERS.
PEER_SERVERS = [
    ("baseline_tungstenite", "baseline_tungstenite", ["--addr", "{addr}", "--shards", "{shards}"],
     "peer: tokio-tungstenite, its default config (128 KiB read buffer, zero-filled per read)",
     "ws", "listening websocket "),
    ("baseline_tungstenite_16k", "baseline_tungstenite",
     ["--addr", "{addr}", "--shards", "{shards}", "--read-buffer", "16384"],
     "peer: tokio-tungstenite with a 16 KiB read buffer (msgtrans_ws's peer)",
     "ws", "listening websocket "),
    ("baseline_tungstenite_tls", "baseline_tungstenite",
     ["--addr", "{addr}", "--shards", "{shards}", "--read-buffer", "16384", "--tls"],
     "peer: the same over tokio-rustls (msgtrans_wss's peer)",
     "wss", "listening wss "),
    ("baseline_quinn", "baseline_quinn", ["--addr", "{addr}", "--shards", "{shards}"],
     "peer: quinn 0.11 on tokio, msgtrans's framing (msgtrans_quic's peer)",
     "quic", "listening quic "),
]
# Each protocol row's peer, for the "vs peer" ratios.
PEER_OF = {
    "msgtrans_inline": REFERENCE,
    "msgtrans_inline_ring": REFERENCE,
    "msgtrans_events": REFERENCE,
    "msgtrans_ws": "baseline_tungstenite_16k",
    "msgtrans_ws_ring": "baseline_tungstenite_16k",
    "msgtrans_wss": "baseline_tungstenite_tls",
    "msgtrans_quic": "baseline_quinn",
    "msgtrans_quic_nogso": "baseline_quinn",
    "msgtrans_quic_nogso_both": "baseline_quinn",
}
# The peer of an --extra server speaking another protocol than TCP, and
# the line that says it is ready (msgtrans's sharded_server prints these).
EXTRA_PEER = {"ws": "baseline_tungstenite_16k", "wss": "baseline_tungstenite_tls",
              "quic": "baseline_quinn"}
EXTRA_READY = {"ws": "listening websocket ", "wss": "listening wss ",
               "quic": "listening quic "}
# Servers that answer requests (the `-req` workloads): msgtrans, baseline 1
# and the peers. The other baselines only echo, so they sit those out.
ANSWERS_REQUESTS = {"baseline_tokio", "baseline_tungstenite", "baseline_tungstenite_16k",
                    "baseline_tungstenite_tls", "baseline_quinn"}
# Run only when named in --servers: the QUIC server with GSO/GRO switched
# off (quinn-udp's segmentation offload; see shards/src/proto/quic/udp.rs),
# to set beside msgtrans_quic: on the server only, or on the load
# generator's engine as well. Each: ..., server env, load env.
NO_OFFLOAD = {"MSGTRANS_QUIC_NO_OFFLOAD": "1"}
OPT_IN_SERVERS = [
    ("msgtrans_quic_nogso", "sharded_server",
     ["--tcp", "127.0.0.1:0", "--no-ws", "--quic", "{addr}", "--shards", "{shards}"],
     "msgtrans_quic with MSGTRANS_QUIC_NO_OFFLOAD=1 on the server (the load keeps GSO/GRO)",
     "quic", "listening quic ", NO_OFFLOAD, {}),
    ("msgtrans_quic_nogso_both", "sharded_server",
     ["--tcp", "127.0.0.1:0", "--no-ws", "--quic", "{addr}", "--shards", "{shards}"],
     "msgtrans_quic with MSGTRANS_QUIC_NO_OFFLOAD=1 on the server and the load generator",
     "quic", "listening quic ", NO_OFFLOAD, NO_OFFLOAD),
]
BINARIES = ["sharded_server", "baseline_tokio", "baseline_framed", "baseline_glommio",
            "baseline_uring", "baseline_glommio_ring", "baseline_tungstenite", "baseline_quinn",
            "baseline_tokio_mt",
            "load"]
DEFAULT_WORKLOADS = ["64B-1x1", "64B-64x16", "64B-64x16-req", "1K-64x16", "64K-8x4"]
LATENCY_WORKLOAD = "64B-64x16"
METRICS = ["msgs_per_s", "server_cpu_ns_per_msg", "server_kernel_ns_per_msg",
           "server_user_ns_per_msg", "p50_us",
           "p99_us", "p999_us", "load_cpu_ns_per_msg", "mb_per_s"]
HISTORY_COLUMNS = [
    "timestamp", "commit", "dirty", "machine", "nproc", "kernel", "server", "workload",
    "shards", "rounds", "ok_runs", "duration_s", "msgs_per_s", "cpu_ns_per_msg",
    "cpu_ns_min", "cpu_ns_max", "p50_us", "p99_us", "p999_us", "load_ns_per_msg",
    "cpu_ratio", "tput_ratio",
]


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class Fatal(Exception):
    """A setup error: printed as `error: ...`, exit code 2."""


# --------------------------------------------------------------------------
# Child process bookkeeping: nothing we start outlives us.

_children: set[subprocess.Popen] = set()
_children_lock = threading.Lock()


def _register(p: subprocess.Popen) -> None:
    with _children_lock:
        _children.add(p)


def stop_process(p: subprocess.Popen, grace: float = 2.0) -> int | None:
    """SIGTERM the process group, SIGKILL it after `grace` seconds, reap."""
    try:
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=5)
        else:
            # The leader is gone; make sure nothing else of its group lingers.
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
    finally:
        with _children_lock:
            _children.discard(p)
    return p.returncode


def kill_all_children() -> None:
    with _children_lock:
        live = list(_children)
    for p in live:
        try:
            stop_process(p, grace=1.0)
        except Exception as e:  # noqa: BLE001 - best effort at exit
            log(f"warning: could not stop pid {p.pid}: {e}")


def _on_signal(signum, _frame):
    raise SystemExit(128 + signum)


atexit.register(kill_all_children)


# --------------------------------------------------------------------------
# Configuration

@dataclass
class Server:
    name: str
    argv: list[str]          # with {addr}/{host}/{port}/{shards} placeholders
    role: str
    extra: bool = False
    proto: str = "tcp"         # load's --proto
    ready: str = READY         # the line that says the server is ready
    sweep: bool = True         # part of the connection sweep
    env: dict = field(default_factory=dict)       # set in the server's environment
    load_env: dict = field(default_factory=dict)  # set in the load generator's
    opt_in: bool = False       # runs only when named in --servers

    @property
    def peer(self) -> str | None:
        """The server this one's "vs peer" ratios are taken against."""
        return PEER_OF.get(self.name)

    @property
    def answers_requests(self) -> bool:
        return self.name.startswith("msgtrans") or self.name in ANSWERS_REQUESTS or self.extra


@dataclass
class Workload:
    name: str
    size: int
    conns: int
    inflight: int
    request: bool = False      # requests answered by responses, not echoes


def parse_workload(name: str) -> Workload:
    m = re.fullmatch(r"(\d+)([bkm]?)-(\d+)x(\d+)(-req)?", name.strip(), re.I)
    if not m:
        raise Fatal(f"workload {name!r}: expected SIZE-CONNSxINFLIGHT[-req], e.g. 64B-64x16, "
                    "1K-8x4 or 64B-64x16-req")
    mult = {"": 1, "b": 1, "k": 1024, "m": 1024 * 1024}[m.group(2).lower()]
    return Workload(name.strip(), int(m.group(1)) * mult, int(m.group(3)), int(m.group(4)),
                    request=m.group(5) is not None)


def int_list(s: str, what: str) -> list[int]:
    try:
        out = [int(x) for x in s.split(",") if x.strip()]
    except ValueError:
        raise Fatal(f"{what}: expected a comma-separated list of integers, got {s!r}") from None
    if any(v <= 0 for v in out):
        raise Fatal(f"{what}: values must be positive")
    return out


def machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        nproc = int(subprocess.run(["nproc"], capture_output=True, text=True).stdout.strip())
    except (OSError, ValueError):
        nproc = len(os.sched_getaffinity(0))
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) / 1024 / 1024, 1)
    except (OSError, ValueError):
        pass
    return {"nproc": nproc, "kernel": platform.release(), "cpu_model": model,
            "mem_gib": mem, "hostname": platform.node()}


def machine_label(m: dict) -> str:
    return f"{m['nproc']} vCPU {m['cpu_model']}, Linux {m['kernel']}"


def git_info() -> tuple[str, bool]:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    cwd=REPO, capture_output=True, text=True,
                                    timeout=10).stdout.strip())
        return commit or "unknown", dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


# --------------------------------------------------------------------------
# Other benchmarks on the machine (the VM is shared)

BENCH_RE = re.compile(r"examples/(load|sharded_server|baseline_\w+)$|/(load|sharded_server|baseline_\w+)$")


def foreign_bench_processes() -> list[str]:
    """Benchmark-looking processes that are not ours: anything named like a
    server or the load generator outside our own children."""
    with _children_lock:
        mine = {p.pid for p in _children}
    found = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) in mine:
            continue
        try:
            argv = (d / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if not argv or not argv[0]:
            continue
        exe = argv[0].decode("utf-8", "replace")
        if BENCH_RE.search(exe):
            found.append(f"{d.name}:{Path(exe).name}")
    return sorted(found)


CLK_TCK = os.sysconf("SC_CLK_TCK")


def system_cpu() -> tuple[float, float]:
    """(busy, steal) CPU seconds of the whole machine, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq = f[:7]
    steal = f[7] if len(f) > 7 else 0
    return (user + nice + system + irq + softirq) / CLK_TCK, steal / CLK_TCK


def process_cpu(pid: int) -> float | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    f = stat[stat.rfind(")") + 2:].split()
    return (int(f[11]) + int(f[12])) / CLK_TCK


def wait_quiet(cfg) -> float:
    """Before a run (no server of ours is up), waits up to cfg.settle seconds
    for the machine's busy CPU to drop below cfg.quiet cores. Returns the
    seconds waited."""
    if cfg.settle <= 0:
        return 0.0
    t0 = time.monotonic()
    said = False
    while True:
        b0, w0 = system_cpu()[0], time.monotonic()
        time.sleep(0.5)
        busy = (system_cpu()[0] - b0) / (time.monotonic() - w0)
        waited = time.monotonic() - t0
        if busy <= cfg.quiet:
            return waited
        if waited >= cfg.settle:
            log(f"  machine still busy ({busy:.2f} cores) after {waited:.0f} s; running anyway")
            return waited
        if not said:
            log(f"  machine busy ({busy:.2f} cores used by others); waiting up to "
                f"{cfg.settle:g} s for it to settle")
            said = True


def children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --------------------------------------------------------------------------
# Ports

_port_lock = threading.Lock()
_next_port = random.randint(20000, 28000)


def port_free(port: int) -> bool:
    """Whether `port` is free on 127.0.0.1 for both TCP and UDP (QUIC)."""
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        with socket.socket(socket.AF_INET, kind) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def fresh_port() -> int:
    """A port not used earlier in this session and free right now."""
    global _next_port
    with _port_lock:
        for _ in range(2000):
            port = _next_port
            _next_port = 20000 if _next_port >= 29999 else _next_port + 1
            if port_free(port):
                return port
    raise Fatal("no free port found in 20000-29999")


# --------------------------------------------------------------------------
# One run

@dataclass
class Run:
    server: str
    workload: str
    shards: int
    round: int
    kind: str                      # "main", "sweep" or "scaling"
    size: int
    conns: int
    inflight: int
    request: bool = False
    load_cpus: str | None = None       # overrides --load-cpus (scaling)
    load_threads: int = 1
    ok: bool = False
    error: str | None = None
    result: dict | None = None
    actual_shards: int | None = None
    server_cmd: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    settle_wait_s: float = 0.0         # time spent waiting for a quiet machine
    other_cores: float | None = None   # CPU used by neither server nor load, in cores
    steal_cores: float | None = None   # hypervisor steal over the run, in cores
    load_cmd: list[str] = field(default_factory=list)
    started: str = ""


class OutputPump(threading.Thread):
    """Reads a child's merged stdout/stderr so its pipe never fills, keeps the
    tail for error messages and signals the ready line."""

    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: queue.Queue[str] = queue.Queue()
        self.tail: list[str] = []

    def run(self):
        for raw in iter(self.stream.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip("\n")
            self.tail = (self.tail + [line])[-30:]
            self.lines.put(line)
        self.lines.put(None)  # EOF marker

    def tail_text(self, n: int = 8) -> str:
        return "".join("\n    | " + l for l in self.tail[-n:])


def server_pinning(shards: int, pin: bool, nproc: int) -> list[str]:
    if not pin:
        return []
    if shards == 1:
        return ["taskset", "-c", "0"]
    return ["taskset", "-c", f"0-{min(shards, nproc) - 1}"]


def wait_ready(proc: subprocess.Popen, pump: OutputPump, addr: tuple[str, int],
               timeout: float, probe: bool,
               ready_line: str = READY) -> tuple[bool, str, int | None, str | None]:
    """Waits for the `ready_line` line (or, for --extra servers, for the
    port to accept a connection). Returns (ready, message, reported shards,
    the certificate file the server said to trust, if any)."""
    cert = None
    deadline = time.monotonic() + timeout
    next_probe = time.monotonic() + 0.2
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return False, f"not ready after {timeout:.0f} s (no {ready_line!r} line)", None, cert
        try:
            line = pump.lines.get(timeout=min(left, 0.1))
        except queue.Empty:
            line = ""
        if line is None:
            proc.wait(timeout=5)
            return False, f"exited with code {proc.returncode} before it was ready", None, cert
        if line and CERT_LINE in line:
            cert = line.split(CERT_LINE, 1)[1].strip()
        if line and line.startswith(ready_line):
            m = re.search(r"shards=(\d+)", line)
            return True, line, int(m.group(1)) if m else None, cert
        if probe and time.monotonic() >= next_probe:
            next_probe = time.monotonic() + 0.2
            try:
                with socket.create_connection(addr, timeout=0.2):
                    return True, "port accepts connections", None, cert
            except OSError:
                pass


def one_run(cfg, server: Server, run: Run) -> Run:
    run.started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    port = fresh_port()
    addr = f"127.0.0.1:{port}"
    subst = {"addr": addr, "host": "127.0.0.1", "port": str(port), "shards": str(run.shards)}
    try:
        argv = [a.format(**subst) for a in server.argv]
    except (KeyError, IndexError, ValueError) as e:
        run.error = f"bad command template {server.argv}: {e}"
        return run
    run.server_cmd = server_pinning(run.shards, cfg.pin, cfg.machine["nproc"]) + argv
    proc = None
    cert = None
    try:
        try:
            proc = subprocess.Popen(run.server_cmd, stdout=subprocess.PIPE,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=REPO,
                                    env={**os.environ, **server.env} if server.env else None)
        except OSError as e:
            run.error = f"cannot start server {shlex.join(run.server_cmd)}: {e}"
            return run
        _register(proc)
        pump = OutputPump(proc.stdout)
        pump.start()
        ready, msg, reported, cert = wait_ready(proc, pump, ("127.0.0.1", port),
                                                cfg.ready_timeout,
                                                # A TLS or QUIC server must first print its
                                                # certificate, and UDP cannot be probed.
                                                probe=server.extra and server.proto in ("tcp", "ws"),
                                                ready_line=server.ready)
        if not ready:
            run.error = f"server {msg}{pump.tail_text()}"
            return run
        run.actual_shards = reported
        run.foreign = foreign_bench_processes()
        run.load_cmd = [
            str(cfg.bin_dir / "load"), "--addr", addr, "-c", str(run.conns),
            "-p", str(run.inflight), "-s", str(run.size), "-d", f"{cfg.duration:g}",
            "-w", f"{cfg.warmup:g}", "--server-pid", str(proc.pid), "--json",
            "-t", str(run.load_threads),
        ] + (["--cpus", run.load_cpus or cfg.load_cpus] if cfg.pin else [])
        if run.request:
            run.load_cmd.append("--request")
        if server.proto != "tcp":
            run.load_cmd += ["--proto", server.proto]
        if server.proto in ("tls", "wss", "quic"):
            if cert is None:
                run.error = f"server printed no {CERT_LINE!r} line{pump.tail_text()}"
                return run
            run.load_cmd += ["--ca", cert]
        timeout = cfg.duration + cfg.warmup + cfg.load_grace
        snap0 = (time.monotonic(), system_cpu(), process_cpu(proc.pid), children_cpu())
        lp = subprocess.Popen(run.load_cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, start_new_session=True, cwd=REPO,
                              env={**os.environ, **server.load_env} if server.load_env else None)
        _register(lp)
        try:
            out, err = lp.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            stop_process(lp, grace=1.0)
            run.error = f"load did not finish within {timeout:.0f} s (killed)"
            return run
        finally:
            stop_process(lp, grace=1.0)
        snap1 = (time.monotonic(), system_cpu(), process_cpu(proc.pid), children_cpu())
        if snap0[2] is not None and snap1[2] is not None:
            # Whole-machine busy CPU minus the server and the load generator
            # (the load's own time comes from the children rusage: it is the
            # only child reaped in this window). What is left is everyone else.
            window = snap1[0] - snap0[0]
            busy = snap1[1][0] - snap0[1][0]
            ours = (snap1[2] - snap0[2]) + (snap1[3] - snap0[3])
            run.other_cores = round(max(0.0, busy - ours) / window, 3)
            run.steal_cores = round((snap1[1][1] - snap0[1][1]) / window, 3)
        run.foreign = sorted(set(run.foreign) | set(foreign_bench_processes()))
        out_s, err_s = out.decode("utf-8", "replace"), err.decode("utf-8", "replace")
        js = [l for l in out_s.splitlines() if l.startswith("{")]
        if js:
            try:
                run.result = json.loads(js[-1])
            except json.JSONDecodeError as e:
                run.error = f"load printed bad JSON ({e}): {js[-1][:200]}"
        err_tail = "".join("\n    | " + l for l in err_s.strip().splitlines()[-5:])
        if proc.poll() is not None:
            run.error = (f"server exited with code {proc.returncode} during the run"
                         f"{pump.tail_text()}")
        elif run.result is None and run.error is None:
            run.error = f"load exited with code {lp.returncode} and printed no JSON{err_tail}"
        elif run.result is not None:
            r = run.result
            if lp.returncode != 0 or r.get("errors", 0) or not r.get("msgs"):
                run.error = (f"load exit code {lp.returncode}, errors={r.get('errors')}, "
                             f"msgs={r.get('msgs')}{err_tail}")
            elif r.get("server_cpu_ns_per_msg") is None:
                run.error = "load could not read the server's CPU time (/proc)"
            else:
                run.ok = True
        return run
    finally:
        if proc is not None:
            stop_process(proc, grace=2.0)
        if cert is not None and Path(cert).name.startswith("msgtrans-"):
            # The server's throwaway certificate: nobody needs it any more.
            Path(cert).unlink(missing_ok=True)


# --------------------------------------------------------------------------
# Aggregation

def median_of(runs: list[Run], key: str):
    vals = [r.result[key] for r in runs if r.ok and r.result.get(key) is not None]
    return statistics.median(vals) if vals else None


def summarize(runs: list[Run], kind: str) -> dict:
    """{(shards, workload, server): summary} over the runs of one kind."""
    groups: dict[tuple, list[Run]] = {}
    for r in runs:
        if r.kind == kind:
            groups.setdefault((r.shards, r.workload, r.server), []).append(r)
    out = {}
    for key, rs in groups.items():
        ok = [r for r in rs if r.ok]
        for r in ok:
            cpu, kern = r.result.get("server_cpu_ns_per_msg"), r.result.get("server_kernel_ns_per_msg")
            r.result["server_user_ns_per_msg"] = cpu - kern if cpu is not None and kern is not None else None
        cpu = [r.result["server_cpu_ns_per_msg"] for r in ok]
        s = {"runs": len(rs), "ok_runs": len(ok),
             "actual_shards": sorted({r.actual_shards for r in rs if r.actual_shards is not None}),
             "conns": rs[0].conns, "inflight": rs[0].inflight, "size": rs[0].size}
        for m in METRICS:
            s[m] = median_of(rs, m)
        s["contended_runs"] = sum(1 for r in rs if r.foreign)
        oc = [r.other_cores for r in rs if r.other_cores is not None]
        s["other_cores"] = statistics.median(oc) if oc else None
        s["other_cores_max"] = max(oc) if oc else None
        s["cpu_ns_min"] = min(cpu) if cpu else None
        s["cpu_ns_max"] = max(cpu) if cpu else None
        out[key] = s
    # Ratios to the reference in the same workload and shard count.
    for (shards, wl, name), s in out.items():
        ref = out.get((shards, wl, REFERENCE))
        s["cpu_ratio"] = s["tput_ratio"] = None
        s["paired_cpu_ratio_median"] = None
        if ref and ref["server_cpu_ns_per_msg"] and s["server_cpu_ns_per_msg"] is not None:
            s["cpu_ratio"] = s["server_cpu_ns_per_msg"] / ref["server_cpu_ns_per_msg"]
        if ref and ref["msgs_per_s"] and s["msgs_per_s"] is not None:
            s["tput_ratio"] = s["msgs_per_s"] / ref["msgs_per_s"]
        # Round-by-round ratio (same round = closest in time), for the JSON.
        mine = {r.round: r for r in runs if r.kind == kind and r.ok
                and (r.shards, r.workload, r.server) == (shards, wl, name)}
        refs = {r.round: r for r in runs if r.kind == kind and r.ok
                and (r.shards, r.workload, r.server) == (shards, wl, REFERENCE)}
        paired = [mine[k].result["server_cpu_ns_per_msg"] / refs[k].result["server_cpu_ns_per_msg"]
                  for k in mine if k in refs and refs[k].result["server_cpu_ns_per_msg"]]
        if paired:
            s["paired_cpu_ratio_median"] = statistics.median(paired)
    # Against each row's own peer: CPU and throughput as above, and p99.
    for (shards, wl, name), s in out.items():
        peer = PEER_OF.get(name)
        p = out.get((shards, wl, peer)) if peer else None
        s["peer"] = peer if p else None
        for key, col in [("peer_cpu_ratio", "server_cpu_ns_per_msg"),
                         ("peer_user_ratio", "server_user_ns_per_msg"),
                         ("peer_kernel_ratio", "server_kernel_ns_per_msg"),
                         ("peer_tput_ratio", "msgs_per_s"), ("peer_p99_ratio", "p99_us")]:
            mine, theirs = s.get(col), (p or {}).get(col)
            s[key] = mine / theirs if mine is not None and theirs else None
    return out


# --------------------------------------------------------------------------
# Formatting

def f_rate(v) -> str:
    if v is None:
        return "–"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def f_num(v, digits=0) -> str:
    return "–" if v is None else f"{v:,.{digits}f}"


def f_ratio(v) -> str:
    return "–" if v is None else f"{v:.2f}×"


def f_us(v) -> str:
    if v is None:
        return "–"
    return f"{v:,.0f}" if v >= 100 else f"{v:.1f}"


def f_share(part, whole) -> str:
    """`part` as a percentage of `whole`, or a dash when either is unknown."""
    if part is None or not whole:
        return "–"
    return f"{100 * part / whole:.0f}%"


def make_table(cfg, summary: dict, servers: list[Server], workloads: list[Workload],
               shards_list: list[int]) -> str:
    lines = []
    head = ["server", "shards", "workload", "ok runs", "msgs/s", "CPU ns/msg",
            "CPU ns/msg min–max", "kernel share", "CPU ratio", "msgs/s ratio", "p50 µs", "p99 µs",
            "load ns/msg", "server cores busy", "other CPU (cores)"]
    lines.append("| " + " | ".join(head) + " |")
    lines.append("|" + "|".join(["---"] * 3 + ["--:"] * (len(head) - 3)) + "|")
    mismatched = set()
    for shards in shards_list:
        for wl in workloads:
            for sv in servers:
                s = summary.get((shards, wl.name, sv.name))
                if s is None:
                    continue
                sh = str(shards)
                if s["actual_shards"] and s["actual_shards"] != [shards]:
                    sh += "†"
                    mismatched.add((sv.name, tuple(s["actual_shards"])))
                name = f"**{sv.name}**" if sv.name.startswith("msgtrans") else sv.name
                if s["ok_runs"] == 0:
                    row = [name, sh, wl.name, f"0/{s['runs']} FAILED"] + ["–"] * (len(head) - 4)
                else:
                    busy = (s["msgs_per_s"] * s["server_cpu_ns_per_msg"] / 1e9
                            if s["msgs_per_s"] and s["server_cpu_ns_per_msg"] else None)
                    row = [name, sh, wl.name, f"{s['ok_runs']}/{s['runs']}",
                           f_rate(s["msgs_per_s"]), f_num(s["server_cpu_ns_per_msg"]),
                           f"{f_num(s['cpu_ns_min'])}–{f_num(s['cpu_ns_max'])}",
                           f_share(s.get("server_kernel_ns_per_msg"), s["server_cpu_ns_per_msg"]),
                           f_ratio(s["cpu_ratio"]), f_ratio(s["tput_ratio"]),
                           f_us(s["p50_us"]), f_us(s["p99_us"]),
                           f_num(s["load_cpu_ns_per_msg"]),
                           "–" if busy is None else f"{busy:.2f}",
                           "–" if s["other_cores"] is None else
                           f"{s['other_cores']:.2f}" + ("!" if s["other_cores_max"] > 0.15 else "")]
                lines.append("| " + " | ".join(row) + " |")
    notes = [
        "",
        f"Medians over {cfg.rounds} interleaved round(s) of {cfg.duration:g} s "
        f"(+{cfg.warmup:g} s warm-up); servers run in a fresh shuffled order every round.",
        f"CPU ratio = CPU ns/msg ÷ {REFERENCE}'s in the same workload and shard count "
        "(lower is better); msgs/s ratio likewise (higher is better).",
        "CPU ns/msg is the server's utime+stime from /proc over the measured seconds, "
        "divided by messages echoed. kernel share = the part of it that was stime: the "
        "kernel's TCP work, which no server saves by spending less in user space, so "
        "baseline 1's kernel share is the floor of any CPU ratio that keeps its kernel work. "
        "server cores busy = msgs/s × CPU ns/msg: well below "
        "1.0 per shard means the load generator, not the server, set the pace.",
        "other CPU (cores) = median CPU used on the machine by anything but the server "
        "and the load generator during a run (from /proc/stat); `!` marks a row where a "
        "run saw more than 0.15 cores of it, i.e. a contended figure.",
    ]
    if cfg.pin:
        notes.append(f"1 shard: server pinned to cpu0 (taskset -c 0), load generator to "
                     f"cpu{cfg.load_cpus} (--cpus {cfg.load_cpus}).")
        if any(s > 1 for s in shards_list):
            notes.append(
                f"N>1 shards: server under taskset -c 0-(N-1) (the shards pick their cores "
                f"within that), load generator on cpu{cfg.load_cpus}"
                + (f": on this {cfg.machine['nproc']}-core machine the server shares cores "
                   "with the load generator, so N>1 rows are not per-core figures."
                   if max(shards_list) >= cfg.machine["nproc"] else "."))
    else:
        notes.append("No CPU pinning (--no-pin).")
    contended = [r for r in cfg.all_runs if r.foreign]
    if contended:
        names = sorted({f.split(":", 1)[1] for r in contended for f in r.foreign})
        notes.append(f"WARNING: {len(contended)} of {len(cfg.all_runs)} runs (incl. sweep) saw other "
                     f"benchmark processes on the machine ({', '.join(names)}); "
                     "their figures are contended. See `foreign` in results.json.")
    for name, actual in sorted(mismatched):
        notes.append(f"† {name} reported shards={','.join(map(str, actual))}: it ignores "
                     "--shards, so its N>1 rows measure a single thread.")
    notes.append("")
    notes.append("Servers: " + "; ".join(f"`{s.name}` = {s.role}" for s in servers) + ".")
    return "\n".join(lines + notes) + "\n"


def peer_table(summary: dict, servers: list[Server], workloads: list[Workload],
               shards_list: list[int]) -> str:
    """Each msgtrans row against its protocol's peer, and the ratios the
    project sets targets on (issue 20): request/response against the
    one-way echo of the same server, and the Tokio event path against the
    inline handler."""
    lines = ["", "Each protocol against its own peer (ratios of medians; lower is better "
             "for CPU and p99, higher for msgs/s):", "",
             "| server | shards | workload | peer | CPU ratio | user | kernel | msgs/s ratio "
             "| p99 ratio | CPU ns/msg (user + kernel) | peer's |",
             "|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|"]
    def split(s):
        u, k = s.get("server_user_ns_per_msg"), s.get("server_kernel_ns_per_msg")
        return "–" if u is None or k is None else f"{u:,.0f} + {k:,.0f}"
    rows = 0
    for shards in shards_list:
        for wl in workloads:
            for sv in servers:
                s = summary.get((shards, wl.name, sv.name))
                if not s or not s.get("peer") or not (sv.name.startswith("msgtrans") or sv.extra):
                    continue
                p = summary[(shards, wl.name, s["peer"])]
                lines.append(f"| **{sv.name}** | {shards} | {wl.name} | {s['peer']} | "
                             f"{f_ratio(s['peer_cpu_ratio'])} | {f_ratio(s['peer_user_ratio'])} | "
                             f"{f_ratio(s['peer_kernel_ratio'])} | {f_ratio(s['peer_tput_ratio'])} | "
                             f"{f_ratio(s['peer_p99_ratio'])} | {split(s)} | {split(p)} |")
                rows += 1
    if not rows:
        lines = []
    derived = []
    for shards in shards_list:
        for wl in workloads:
            if not wl.request:
                continue
            base = wl.name[: -len("-req")]
            for sv in servers:
                a, b = summary.get((shards, wl.name, sv.name)), summary.get((shards, base, sv.name))
                if a and b and a["server_cpu_ns_per_msg"] and b["server_cpu_ns_per_msg"]:
                    derived.append(f"| {sv.name} | {shards} | {wl.name} ÷ {base} | "
                                   f"{f_ratio(a['server_cpu_ns_per_msg'] / b['server_cpu_ns_per_msg'])} | "
                                   f"{f_ratio(a['p99_us'] / b['p99_us']) if b['p99_us'] else '–'} |")
        for wl in workloads:
            a = summary.get((shards, wl.name, "msgtrans_events"))
            b = summary.get((shards, wl.name, "msgtrans_inline"))
            if a and b and a["server_cpu_ns_per_msg"] and b["server_cpu_ns_per_msg"]:
                derived.append(f"| msgtrans_events ÷ msgtrans_inline | {shards} | {wl.name} | "
                               f"{f_ratio(a['server_cpu_ns_per_msg'] / b['server_cpu_ns_per_msg'])} | "
                               f"{f_ratio(a['p99_us'] / b['p99_us']) if b['p99_us'] else '–'} |")
    if derived:
        lines += ["", "Requests against one-way echoes, and the Tokio event path against "
                  "the inline handler (same run):", "",
                  "| server | shards | workloads | CPU ratio | p99 ratio |", "|---|---|---|--:|--:|"]
        lines += derived
    return "\n".join(lines) + ("\n" if lines else "")


# --------------------------------------------------------------------------
# SVG plots, by hand

PALETTE = ["#4e79a7", "#f28e2b", "#59a14f", "#b07aa1", "#e15759", "#76b7b2",
           "#edc948", "#9c755f", "#ff9da7", "#bab0ac"]


def nice_ticks(lo: float, hi: float, n: int = 6) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    raw = (hi - lo) / (n + 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    start = math.floor(lo / step) * step
    ticks, v = [], start
    while not ticks or ticks[-1] < hi - step * 1e-9:
        ticks.append(round(v, 10))
        v += step
    return ticks


def tick_rate(v: float) -> str:
    for div, suf in ((1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.2f}".rstrip("0").rstrip(".") + suf
    return f"{v:g}"


def marker(shape: int, x: float, y: float, color: str, r: float = 4.5) -> str:
    k = shape % 5
    if k == 0:
        return f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{color}" stroke="white" stroke-width="0.8"/>'
    if k == 1:
        return (f'<rect x="{x - r:.1f}" y="{y - r:.1f}" width="{2 * r}" height="{2 * r}" '
                f'fill="{color}" stroke="white" stroke-width="0.8"/>')
    if k == 2:
        return (f'<polygon points="{x:.1f},{y - r - 1:.1f} {x - r - 1:.1f},{y + r:.1f} '
                f'{x + r + 1:.1f},{y + r:.1f}" fill="{color}" stroke="white" stroke-width="0.8"/>')
    if k == 3:
        return (f'<polygon points="{x:.1f},{y - r - 1:.1f} {x + r + 1:.1f},{y:.1f} '
                f'{x:.1f},{y + r + 1:.1f} {x - r - 1:.1f},{y:.1f}" fill="{color}" stroke="white" stroke-width="0.8"/>')
    return (f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="white" stroke="{color}" '
            f'stroke-width="2"/>')


class Chart:
    W, H = 960, 560
    L, R, T, B = 90, 250, 78, 62   # margins; the legend lives in the right one

    def __init__(self, title: str, subtitle: str, xlabel: str, ylabel: str):
        self.parts = [
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.W}" height="{self.H}" '
            f'viewBox="0 0 {self.W} {self.H}" font-family="DejaVu Sans, Helvetica, Arial, '
            f'sans-serif">',
            f'<rect width="{self.W}" height="{self.H}" fill="white"/>',
            f'<text x="{self.L}" y="28" font-size="17" font-weight="bold">{escape(title)}</text>',
            f'<text x="{self.L}" y="50" font-size="12" fill="#444">{escape(subtitle)}</text>',
            f'<text x="{self.L + self.pw / 2:.0f}" y="{self.H - 16}" font-size="13" '
            f'text-anchor="middle">{escape(xlabel)}</text>',
            f'<text transform="translate(22,{self.T + self.ph / 2:.0f}) rotate(-90)" '
            f'font-size="13" text-anchor="middle">{escape(ylabel)}</text>',
        ]
        self.legend_n = 0

    @property
    def pw(self):
        return self.W - self.L - self.R

    @property
    def ph(self):
        return self.H - self.T - self.B

    def frame(self):
        self.parts.append(f'<rect x="{self.L}" y="{self.T}" width="{self.pw}" '
                          f'height="{self.ph}" fill="none" stroke="#333"/>')

    def xtick(self, x: float, label: str, major: bool = True):
        y0 = self.T + self.ph
        if major:
            self.parts.append(f'<line x1="{x:.1f}" y1="{self.T}" x2="{x:.1f}" y2="{y0}" '
                              f'stroke="#e3e3e3"/>')
            self.parts.append(f'<text x="{x:.1f}" y="{y0 + 18}" font-size="12" '
                              f'text-anchor="middle">{escape(label)}</text>')
        self.parts.append(f'<line x1="{x:.1f}" y1="{y0}" x2="{x:.1f}" '
                          f'y2="{y0 + (6 if major else 3)}" stroke="#333"/>')

    def ytick(self, y: float, label: str):
        self.parts.append(f'<line x1="{self.L}" y1="{y:.1f}" x2="{self.L + self.pw}" '
                          f'y2="{y:.1f}" stroke="#e3e3e3"/>')
        self.parts.append(f'<line x1="{self.L - 6}" y1="{y:.1f}" x2="{self.L}" y2="{y:.1f}" '
                          f'stroke="#333"/>')
        self.parts.append(f'<text x="{self.L - 9}" y="{y + 4:.1f}" font-size="12" '
                          f'text-anchor="end">{escape(label)}</text>')

    def legend(self, label: str, color: str, shape: int, dashed: bool):
        x = self.L + self.pw + 18
        y = self.T + 10 + 22 * self.legend_n
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        self.parts.append(f'<line x1="{x}" y1="{y}" x2="{x + 30}" y2="{y}" stroke="{color}" '
                          f'stroke-width="2.5"{dash}/>')
        self.parts.append(marker(shape, x + 15, y, color))
        self.parts.append(f'<text x="{x + 38}" y="{y + 4}" font-size="12">{escape(label)}</text>')
        self.legend_n += 1

    def note(self, text: str, line: int = 0):
        x = self.L + self.pw + 18
        y = self.T + 10 + 22 * self.legend_n + 14 + 15 * line
        self.parts.append(f'<text x="{x}" y="{y}" font-size="11" fill="#555">'
                          f'{escape(text)}</text>')

    def svg(self) -> str:
        return "\n".join(self.parts + ["</svg>"]) + "\n"


def style_for(servers: list[Server]) -> dict[str, tuple[str, int, bool]]:
    return {s.name: (PALETTE[i % len(PALETTE)], i, s.extra) for i, s in enumerate(servers)}


def throughput_svg(cfg, sweep_summary: dict, servers: list[Server], shards: int,
                   title_tail: str) -> str | None:
    pts = {}
    for sv in servers:
        row = []
        for c in cfg.sweep:
            s = sweep_summary.get((shards, f"64B-{c}x16", sv.name))
            if s and s["msgs_per_s"]:
                row.append((c, s["msgs_per_s"]))
        if row:
            pts[sv.name] = row
    if not pts:
        return None
    ch = Chart(f"Throughput vs connections: 64 B, 16 in flight, {shards} shard"
               f"{'s' if shards > 1 else ''}",
               title_tail, "connections (log scale)", "messages/s (median)")
    ch.frame()
    xs = sorted(cfg.sweep)
    lx0, lx1 = math.log2(xs[0]), math.log2(xs[-1])
    if lx1 == lx0:
        lx0, lx1 = lx0 - 1, lx1 + 1
    pad = (lx1 - lx0) * 0.05

    def X(c):
        return ch.L + (math.log2(c) - lx0 + pad) / (lx1 - lx0 + 2 * pad) * ch.pw

    ymax = max(v for row in pts.values() for _, v in row) * 1.05
    ticks = nice_ticks(0, ymax)
    ytop = ticks[-1]

    def Y(v):
        return ch.T + ch.ph - v / ytop * ch.ph

    for t in ticks:
        ch.ytick(Y(t), tick_rate(t))
    for c in xs:
        ch.xtick(X(c), str(c))
    styles = style_for(servers)
    for sv in servers:
        if sv.name not in pts:
            continue
        color, shape, dashed = styles[sv.name]
        row = pts[sv.name]
        d = " ".join(f"{'M' if i == 0 else 'L'}{X(c):.1f},{Y(v):.1f}" for i, (c, v) in enumerate(row))
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        ch.parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2.2"{dash}/>')
        for c, v in row:
            ch.parts.append(marker(shape, X(c), Y(v), color))
        ch.legend(sv.name, color, shape, dashed)
    rounds = cfg.sweep_rounds
    ch.note(f"median of {rounds} round{'s' if rounds > 1 else ''},", 0)
    ch.note(f"{cfg.duration:g} s each; load gen on cpu{cfg.load_cpus}", 1)
    return ch.svg()


# --------------------------------------------------------------------------
# Per-core scaling (--scaling)

SCALING_SERVERS = ["msgtrans_inline", "baseline_tokio", "baseline_tokio_mt"]
SCALING_ONLY = {"baseline_tokio_mt"}


def scaling_points(nproc: int) -> list[int]:
    """Server core counts 1, 2, 4 ... such that the load generator gets as
    many cores again: it costs about what the server does per message (more
    for WSS and QUIC), so fewer load cores would measure the load, not the
    server."""
    pts, n = [], 1
    while 2 * n <= nproc:
        pts.append(n)
        n *= 2
    return pts


def scaling_table(summary: dict, points: list[int], nproc: int) -> str:
    lines = ["| server | cores | msgs/s | per core | vs 1 core | CPU ns/msg | p99 µs "
             "| msgs/s ÷ baseline_tokio |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for name in SCALING_SERVERS:
        one = summary.get((1, "scaling", name))
        for n in points:
            s = summary.get((n, "scaling", name))
            if not s or not s["msgs_per_s"]:
                lines.append(f"| {name} | {n} | FAILED | – | – | – | – | – |")
                continue
            ref = summary.get((n, "scaling", REFERENCE))
            vs1 = s["msgs_per_s"] / one["msgs_per_s"] if one and one["msgs_per_s"] else None
            lines.append(f"| {name} | {n} | {f_rate(s['msgs_per_s'])} | {f_rate(s['msgs_per_s'] / n)} | "
                         f"{f_ratio(vs1)} | {f_num(s['server_cpu_ns_per_msg'])} | {f_us(s['p99_us'])} | "
                         f"{f_ratio(s['msgs_per_s'] / ref['msgs_per_s']) if ref and ref['msgs_per_s'] else '–'} |")
    why = (f"This machine has {nproc} cores, so the largest point is {points[-1]} server "
           f"core{'s' if points[-1] > 1 else ''}: each point gives the load generator as many "
           "cores as the server (it costs about as much per message), so "
           f"{2 * points[-1] * 2} cores are needed for the next." if points else
           f"This machine has {nproc} core(s): no point fits (each needs 2 cores or more).")
    notes = ["", "Each point: N server cores (msgtrans with N shards, baseline_tokio with N "
             "current_thread threads, baseline_tokio_mt one work-stealing runtime with N "
             "workers, under taskset -c 0..N-1), load generator with N threads pinned to cores "
             "N..2N-1, 64·N connections × 16 in flight, 64 B.", why]
    return "\n".join(lines + notes) + "\n"


def scaling_svg(cfg, summary: dict, points: list[int], servers: list[Server],
                title_tail: str) -> str | None:
    pts = {}
    for name in SCALING_SERVERS:
        row = [(n, summary[(n, "scaling", name)]["msgs_per_s"]) for n in points
               if (n, "scaling", name) in summary and summary[(n, "scaling", name)]["msgs_per_s"]]
        if row:
            pts[name] = row
    if not pts:
        return None
    ch = Chart("Messages/s against server cores: 64 B, 64 connections per core × 16 in flight",
               title_tail, "server cores (log scale)", "messages/s (median)")
    ch.frame()
    lx0, lx1 = 0.0, max(1.0, math.log2(points[-1]))
    pad = (lx1 - lx0) * 0.08 + 0.3

    def X(n):
        return ch.L + (math.log2(n) - lx0 + pad) / (lx1 - lx0 + 2 * pad) * ch.pw

    ymax = max(v for row in pts.values() for _, v in row) * 1.05
    ticks = nice_ticks(0, ymax)

    def Y(v):
        return ch.T + ch.ph - v / ticks[-1] * ch.ph

    for t in ticks:
        ch.ytick(Y(t), tick_rate(t))
    for n in points:
        ch.xtick(X(n), str(n))
    styles = {name: (PALETTE[i % len(PALETTE)], i, False) for i, name in enumerate(SCALING_SERVERS)}
    for name, row in pts.items():
        color, shape, _ = styles[name]
        d = " ".join(f"{'M' if i == 0 else 'L'}{X(c):.1f},{Y(v):.1f}" for i, (c, v) in enumerate(row))
        ch.parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2.2"/>')
        for c, v in row:
            ch.parts.append(marker(shape, X(c), Y(v), color))
        ch.legend(name, color, shape, False)
    ch.note(f"median of {cfg.rounds} round{'s' if cfg.rounds > 1 else ''},", 0)
    ch.note(f"{cfg.duration:g} s each; load on the next N cores", 1)
    return ch.svg()


def latency_svg(cfg, summary: dict, servers: list[Server], shards: int,
                title_tail: str) -> str | None:
    qs = [(0.5, "p50_us"), (0.99, "p99_us"), (0.999, "p999_us")]
    pts = {}
    for sv in servers:
        s = summary.get((shards, LATENCY_WORKLOAD, sv.name))
        if s and all(s[k] for _, k in qs):
            pts[sv.name] = [(s[k], q) for q, k in qs]
    if not pts:
        return None
    ch = Chart(f"Latency p50/p99/p99.9: {LATENCY_WORKLOAD}, {shards} shard"
               f"{'s' if shards > 1 else ''} (only these 3 points are measured)",
               title_tail, "round-trip latency, µs (log scale)",
               "fraction of messages at or below (nines scale)")
    ch.frame()
    lo = min(v for row in pts.values() for v, _ in row) / 1.4
    hi = max(v for row in pts.values() for v, _ in row) * 1.4
    l0, l1 = math.log10(lo), math.log10(hi)

    def X(v):
        return ch.L + (math.log10(v) - l0) / (l1 - l0) * ch.pw

    def nines(q):
        return -math.log10(1 - q)

    ytop = 3.3

    def Y(q):
        return ch.T + ch.ph - nines(q) / ytop * ch.ph

    for q, lab in [(0.0, "0"), (0.5, "50%"), (0.9, "90%"), (0.99, "99%"), (0.999, "99.9%")]:
        ch.ytick(Y(q), lab)
    decades = range(math.floor(l0), math.ceil(l1) + 1)
    few = l1 - l0 <= 2.5  # then label 2x and 5x too
    for dec in decades:
        for m in (1, 2, 5):
            v = m * 10 ** dec
            if lo <= v <= hi:
                label = f"{v:,.0f}" if v >= 1 else f"{v:g}"
                ch.xtick(X(v), label if (m == 1 or few) else "", major=(m == 1 or few))
    styles = style_for(servers)
    for sv in servers:
        if sv.name not in pts:
            continue
        color, shape, dashed = styles[sv.name]
        d = " ".join(f"{'M' if i == 0 else 'L'}{X(v):.1f},{Y(q):.1f}"
                     for i, (v, q) in enumerate(pts[sv.name]))
        dash = ' stroke-dasharray="6,4"' if dashed else ""
        ch.parts.append(f'<path d="{d}" fill="none" stroke="{color}" stroke-width="2.2" '
                        f'stroke-opacity="0.9"{dash}/>')
        for v, q in pts[sv.name]:
            ch.parts.append(marker(shape, X(v), Y(q), color))
        ch.legend(sv.name, color, shape, dashed)
    ch.note("Markers: medians over rounds of", 0)
    ch.note("load's p50, p99 and p99.9. The", 1)
    ch.note("lines only join those three points;", 2)
    ch.note("nothing between them is measured.", 3)
    return ch.svg()


# --------------------------------------------------------------------------
# History

def history_rows(cfg, summary: dict, servers: list[Server], workloads: list[Workload],
                 shards_list: list[int], meta: dict) -> list[dict]:
    rows = []
    m = meta["machine"]

    def fmt(v, d=1):
        return "" if v is None else f"{v:.{d}f}"

    for shards in shards_list:
        for wl in workloads:
            for sv in servers:
                s = summary.get((shards, wl.name, sv.name))
                if s is None:
                    continue
                rows.append({
                    "timestamp": meta["timestamp"], "commit": meta["commit"],
                    "dirty": "1" if meta["dirty"] else "0",
                    "machine": machine_label(m), "nproc": m["nproc"], "kernel": m["kernel"],
                    "server": sv.name, "workload": wl.name, "shards": shards,
                    "rounds": cfg.rounds, "ok_runs": s["ok_runs"],
                    "duration_s": f"{cfg.duration:g}",
                    "msgs_per_s": fmt(s["msgs_per_s"], 0),
                    "cpu_ns_per_msg": fmt(s["server_cpu_ns_per_msg"]),
                    "cpu_ns_min": fmt(s["cpu_ns_min"]), "cpu_ns_max": fmt(s["cpu_ns_max"]),
                    "p50_us": fmt(s["p50_us"]), "p99_us": fmt(s["p99_us"]),
                    "p999_us": fmt(s["p999_us"]),
                    "load_ns_per_msg": fmt(s["load_cpu_ns_per_msg"]),
                    "cpu_ratio": fmt(s["cpu_ratio"], 3), "tput_ratio": fmt(s["tput_ratio"], 3),
                })
    return rows


def read_history(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def check_history(old: list[dict], new: list[dict], tolerance: float) -> list[str]:
    """Compares the new ratios with the last earlier row for the same server,
    workload and shard count. Returns the report lines; REGRESSION marks any
    ratio that worsened by more than `tolerance`."""
    last = {}
    for r in old:  # the last row that has ratios (failed rows have none)
        if r.get("cpu_ratio") and r.get("tput_ratio"):
            last[(r.get("server"), r.get("workload"), str(r.get("shards")))] = r
    out = []
    for r in new:
        key = (r["server"], r["workload"], str(r["shards"]))
        tag = f"{r['server']} {r['workload']} shards={r['shards']}"
        if r["server"] == REFERENCE:
            continue
        prev = last.get(key)
        if prev is None:
            out.append(f"new        {tag}: no earlier row")
            continue
        since = f"vs {prev.get('commit', '?')} {prev.get('timestamp', '?')}"
        if prev.get("machine") != r["machine"]:
            since += f" (other machine: {prev.get('machine')})"
        for col, worse_if_higher, what in [("cpu_ratio", True, "CPU ratio"),
                                           ("tput_ratio", False, "msgs/s ratio")]:
            try:
                a, b = float(prev[col]), float(r[col])
            except (KeyError, TypeError, ValueError):
                out.append(f"skipped    {tag}: {what} missing in old or new row")
                continue
            change = b / a - 1 if a else 0.0
            worse = change > tolerance if worse_if_higher else change < -tolerance
            word = "REGRESSION" if worse else "ok        "
            out.append(f"{word} {tag}: {what} {a:.3f} -> {b:.3f} ({change:+.1%}) {since}")
    return out


def append_history(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    exists = path.exists() and path.stat().st_size > 0
    fields = HISTORY_COLUMNS
    if exists:
        with path.open(newline="") as f:
            header = next(csv.reader(f), None) or HISTORY_COLUMNS
        if header != HISTORY_COLUMNS:
            missing = [c for c in HISTORY_COLUMNS if c not in header]
            if missing:
                log(f"warning: {path} has an older header; not writing columns {missing}")
            fields = header
    with path.open("a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        if not exists:
            w.writeheader()
        w.writerows(rows)


# --------------------------------------------------------------------------
# Main

HELP_EPILOG = f"""\
servers (rows):
  baseline_tokio    baseline 1, the ratio reference
  baseline_framed   baseline 2
  baseline_glommio  baseline 3
  baseline_uring    experiment (single-threaded; ignores --shards)
  baseline_glommio_ring  experiment: glommio tasks, I/O on a second ring
  msgtrans_inline   sharded_server
  msgtrans_inline_ring  sharded_server --tcp-ring (the shard's own ring)
  msgtrans_ws_ring  msgtrans_ws on the shard's own ring (--tcp-ring)
  msgtrans_events   sharded_server --events
  msgtrans_ws       sharded_server over WebSocket (load: raw io_uring frames)
  msgtrans_wss      sharded_server over WebSocket+TLS (load: our engine)
  msgtrans_quic     sharded_server over QUIC (load: our engine)
  msgtrans_quic_nogso  the same with MSGTRANS_QUIC_NO_OFFLOAD=1 (no GSO/GRO)
                    on the server; only when named in --servers
  msgtrans_quic_nogso_both  ...on the server and the load generator; the same
  baseline_tungstenite      peer: tokio-tungstenite, default config
  baseline_tungstenite_16k  peer: the same with a 16 KiB read buffer (ws)
  baseline_tungstenite_tls  peer: the same over tokio-rustls (wss)
  baseline_quinn    peer: quinn 0.11 with msgtrans's framing (quic)
  NAME              from --extra NAME[@PROTO]=CMD
The main table's ratios are against baseline_tokio (a TCP echo) for every
row; a second table sets each protocol against its own peer. Only TCP rows
are part of the sweep.

workloads are named SIZE-CONNSxINFLIGHT[-req] (SIZE in bytes, or with K/M);
-req sends requests, each answered by a response with its id, and runs only
the servers that answer requests (msgtrans, baseline_tokio, the peers):
  default {','.join(DEFAULT_WORKLOADS)}

pinning: with 1 shard the server runs under `taskset -c 0` and the load
generator gets `--cpus 1`; with N>1 shards the server gets cpus 0..N-1 and the
load generator still runs on cpu1, so on a 2-core machine they share a core.

exit status: 0 all runs ok; 1 some run failed; 2 setup/usage error;
3 all runs ok but --check found a REGRESSION.

examples:
  python3 scripts/compare.py --quick
  python3 scripts/compare.py --build --rounds 3 --shards 1,2 --check
  python3 scripts/compare.py --extra 'msgtrans1=/path/to/v1_server --addr {{addr}}'
  python3 scripts/compare.py --servers msgtrans_quic,baseline_quinn --workloads 64K-8x4 \
      --extra 'before@quic=/tmp/old_server --tcp 127.0.0.1:0 --no-ws --quic {{addr}} --shards 1'
  python3 scripts/compare.py --servers msgtrans_quic,msgtrans_quic_nogso,msgtrans_quic_nogso_both \\
      --workloads 64B-64x16,64K-8x4 --rounds 3 --sweep '' --no-history
"""


def parse_args(argv):
    p = argparse.ArgumentParser(
        prog="compare.py",
        description="Benchmark msgtrans against its baselines in one interleaved session "
                    "and report medians, CPU per message and ratios to baseline_tokio.",
        epilog=HELP_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--build", action="store_true",
                   help="run `cargo build --release --examples` first (default: build nothing)")
    p.add_argument("--bin-dir", type=Path, default=REPO / "target/release/examples",
                   help="where the example binaries are (default: target/release/examples)")
    p.add_argument("--workloads", help=f"comma-separated workloads (default: "
                                       f"{','.join(DEFAULT_WORKLOADS)})")
    p.add_argument("--servers", help="comma-separated subset of the built-in servers to run (default: all); "
                        "--extra servers always run")
    p.add_argument("--extra", action="append", default=[], metavar="NAME[@PROTO]=CMD",
                   help="extra server; CMD is split like a shell line, {addr} {host} {port} "
                        "{shards} are substituted. It must exec the server itself (no `sh -c`), "
                        "because its pid is the one whose CPU is measured. Ready when it prints "
                        f"{READY!r} or its port accepts a connection. PROTO (default tcp) is load's "
                        "--proto: ws, wss or quic, ready when it prints sharded_server's "
                        "`listening PROTO` line (and, for TLS and QUIC, the certificate line "
                        "before it); its peer ratios are against that protocol's peer. Repeatable.")
    p.add_argument("--shards", default="1", help="comma-separated shard counts (default: 1)")
    p.add_argument("--rounds", type=int, help="interleaved rounds per workload (default: 3)")
    p.add_argument("--duration", type=float, help="measured seconds per run (default: 5)")
    p.add_argument("--warmup", type=float, help="warm-up seconds per run (default: 1)")
    p.add_argument("--sweep", help="connection counts for the throughput plot, 64 B x 16 in "
                                   "flight; '' for none (default: 1,4,16,64)")
    p.add_argument("--sweep-rounds", type=int,
                   help="rounds for the sweep (default: 1, or --rounds if given)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 round, 2 s, 0.5 s warm-up, only 64B-64x16, no sweep, "
                        "no history (explicit flags still win)")
    p.add_argument("--out", type=Path, default=REPO / "target/compare",
                   help="output directory (default: target/compare/)")
    p.add_argument("--history", type=Path,
                   help="CSV to append one row per server x workload x shards "
                        "(default: bench-history/history.csv)")
    p.add_argument("--no-history", action="store_true", help="do not append to the history")
    p.add_argument("--check", action="store_true",
                   help="compare the new ratios with the last history row of the same "
                        "server/workload/shards and print REGRESSION if one worsened by more "
                        "than --tolerance")
    p.add_argument("--tolerance", type=float, default=15.0,
                   help="regression threshold in percent (default: 15)")
    p.add_argument("--seed", type=int, help="seed for the shuffled order (default: random)")
    p.add_argument("--no-pin", dest="pin", action="store_false",
                   help="do not pin the server or the load generator")
    p.add_argument("--scaling", action="store_true",
                   help="per-core scaling instead of the comparison: msgtrans, baseline_tokio "
                        "and a tokio multi-thread echo on 1, 2, 4 ... server cores, the load "
                        "generator on as many more; writes scaling.md and scaling.svg")
    p.add_argument("--load-cpus", default="1", help="--cpus for the load generator (default: 1)")
    p.add_argument("--settle", type=float, default=0.0, metavar="S",
                   help="before each run wait up to S seconds for other processes to leave "
                        "the machine quiet (default: 0, do not wait)")
    p.add_argument("--quiet", type=float, default=0.15, metavar="CORES",
                   help="'quiet' for --settle: at most this many cores busy (default: 0.15)")
    p.add_argument("--ready-timeout", type=float, default=15.0,
                   help="seconds to wait for a server to be ready (default: 15)")
    p.add_argument("--load-grace", type=float, default=30.0,
                   help="seconds load may run past warm-up+duration before it is killed")
    args = p.parse_args(argv)

    args.rounds_given = args.rounds is not None
    if args.quick:
        args.rounds = 1 if args.rounds is None else args.rounds
        args.duration = 2.0 if args.duration is None else args.duration
        args.warmup = 0.5 if args.warmup is None else args.warmup
        args.workloads = args.workloads or LATENCY_WORKLOAD
        args.sweep = "" if args.sweep is None else args.sweep
    args.rounds = 3 if args.rounds is None else args.rounds
    args.duration = 5.0 if args.duration is None else args.duration
    args.warmup = 1.0 if args.warmup is None else args.warmup
    args.workloads = args.workloads or ",".join(DEFAULT_WORKLOADS)
    args.sweep = "1,4,16,64" if args.sweep is None else args.sweep
    if args.history is None:
        args.history = REPO / "bench-history/history.csv"
        if args.quick:
            args.no_history = True
    if args.rounds < 1 or args.duration <= 0 or args.warmup < 0:
        p.error("need --rounds >= 1, --duration > 0 and --warmup >= 0")
    return args


def main(argv=None) -> int:
    for s in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(s, _on_signal)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    cfg = parse_args(argv)
    cfg.machine = machine_info()
    cmdline = shlex.join([sys.executable, *sys.argv]) if argv is None else shlex.join(argv)

    shards_list = int_list(cfg.shards, "--shards")
    workloads = [parse_workload(w) for w in cfg.workloads.split(",") if w.strip()]
    cfg.sweep = int_list(cfg.sweep, "--sweep") if cfg.sweep.strip() else []
    cfg.sweep_rounds = cfg.sweep_rounds or (cfg.rounds if cfg.rounds_given else 1)

    servers = [Server(n, [str(cfg.bin_dir / b)] + a, role) for n, b, a, role in BUILTIN_SERVERS]
    servers += [Server(n, [str(cfg.bin_dir / b)] + a, role, proto=proto, ready=ready, sweep=False)
                for n, b, a, role, proto, ready in PROTO_SERVERS + PEER_SERVERS]
    servers += [Server(n, [str(cfg.bin_dir / b)] + a, role, proto=proto, ready=ready, sweep=False,
                       env=env, load_env=load_env, opt_in=True)
                for n, b, a, role, proto, ready, env, load_env in OPT_IN_SERVERS]
    for spec in cfg.extra:
        if "=" not in spec:
            raise Fatal(f"--extra {spec!r}: expected NAME=CMD")
        name, cmd = spec.split("=", 1)
        name, _, proto = name.strip().partition("@")
        proto = proto or "tcp"
        if not re.fullmatch(r"[A-Za-z0-9_.-]+", name) or any(s.name == name for s in servers):
            raise Fatal(f"--extra: bad or duplicate server name {name!r}")
        if proto != "tcp" and proto not in EXTRA_READY:
            raise Fatal(f"--extra {name}: unknown protocol {proto!r}; one of tcp, {', '.join(EXTRA_READY)}")
        argv_t = shlex.split(cmd)
        if not argv_t:
            raise Fatal(f"--extra {name}: empty command")
        servers.append(Server(name, argv_t, f"extra: {cmd}", extra=True, proto=proto,
                              ready=EXTRA_READY.get(proto, READY)))
        if proto in EXTRA_PEER:
            PEER_OF[name] = EXTRA_PEER[proto]
    if cfg.servers:
        want = [s.strip() for s in cfg.servers.split(",") if s.strip()]
        unknown = [w for w in want if w not in {s.name for s in servers}]
        if unknown:
            raise Fatal(f"--servers: unknown {unknown}; known: {[s.name for s in servers]}")
        servers = [s for s in servers if s.name in want or s.extra]
    else:
        # The multi-thread anchor is a scaling figure; it has no per-core
        # meaning in the comparison unless asked for by name.
        servers = [s for s in servers if not s.opt_in
                   and (cfg.scaling or s.name not in SCALING_ONLY)]
    if cfg.scaling:
        servers = [s for s in servers if s.name in SCALING_SERVERS]
    if not any(s.name == REFERENCE for s in servers):
        log(f"warning: {REFERENCE} is not in the run; ratios will be empty")

    if cfg.pin:
        cpus = os.sched_getaffinity(0)
        need = {0} | {int(c) for c in cfg.load_cpus.split(",")}
        if not need <= cpus:
            raise Fatal(f"pinning needs cpus {sorted(need)} but this process may use "
                        f"{sorted(cpus)}; pass --no-pin or --load-cpus")
        if subprocess.run(["which", "taskset"], capture_output=True).returncode != 0:
            raise Fatal("taskset not found (util-linux); install it or pass --no-pin")

    if cfg.build:
        log("$ cargo build --release --examples")
        if subprocess.run(["cargo", "build", "--release", "--examples"], cwd=REPO).returncode:
            raise Fatal("cargo build --release --examples failed")
    needed = {"load"} | {Path(s.argv[0]).name for s in servers if not s.extra}
    missing = [b for b in sorted(needed) if not (cfg.bin_dir / b).is_file()]
    if missing:
        raise Fatal(f"missing binaries in {cfg.bin_dir}: {', '.join(missing)}; "
                    "run `cargo build --release --examples` or pass --build")

    commit, dirty = git_info()
    started = dt.datetime.now(dt.timezone.utc)
    meta = {"timestamp": started.isoformat(timespec="seconds"), "commit": commit,
            "dirty": dirty, "machine": cfg.machine, "command": cmdline}
    seed = cfg.seed if cfg.seed is not None else random.randrange(1 << 31)
    rng = random.Random(seed)

    # The plan: for each shard count and workload, R rounds of every server in
    # a fresh shuffled order; then the connection sweep, interleaved the same way.
    plan: list[tuple[Server, Run]] = []
    scaling_pts = scaling_points(cfg.machine["nproc"]) if cfg.scaling else []
    if cfg.scaling:
        shards_list, workloads, cfg.sweep = [], [], []
        for n in scaling_pts:
            for rnd in range(1, cfg.rounds + 1):
                order = servers[:]
                rng.shuffle(order)
                for sv in order:
                    plan.append((sv, Run(sv.name, "scaling", n, rnd, "scaling", 64, 64 * n, 16,
                                         load_cpus=",".join(str(c) for c in range(n, 2 * n)),
                                         load_threads=n)))
        if not plan:
            raise Fatal(f"--scaling: this machine has {cfg.machine['nproc']} core(s); "
                        "the smallest point needs 2 (one server core, one for the load)")
    for shards in shards_list:
        for wl in workloads:
            for rnd in range(1, cfg.rounds + 1):
                order = servers[:]
                rng.shuffle(order)
                for sv in order:
                    if wl.request and not sv.answers_requests:
                        continue
                    plan.append((sv, Run(sv.name, wl.name, shards, rnd, "main",
                                         wl.size, wl.conns, wl.inflight, request=wl.request)))
        for c in cfg.sweep:
            for rnd in range(1, cfg.sweep_rounds + 1):
                order = [sv for sv in servers if sv.sweep]
                rng.shuffle(order)
                for sv in order:
                    plan.append((sv, Run(sv.name, f"64B-{c}x16", shards, rnd, "sweep",
                                         64, c, 16)))

    per_run = cfg.duration + cfg.warmup + 0.8
    log(f"machine: {machine_label(cfg.machine)}")
    others = foreign_bench_processes()
    if others:
        log(f"warning: other benchmark processes are running ({', '.join(others)}); "
            "runs that overlap them are flagged")
    log(f"commit {commit}{' (dirty tree)' if dirty else ''}; seed {seed}; {len(plan)} runs, "
        f"about {len(plan) * per_run / 60:.1f} min")
    runs: list[Run] = []
    t0 = time.monotonic()
    for i, (sv, run) in enumerate(plan, 1):
        run.settle_wait_s = round(wait_quiet(cfg), 1)
        one_run(cfg, sv, run)
        runs.append(run)
        eta = (time.monotonic() - t0) / i * (len(plan) - i)
        head = (f"[{i}/{len(plan)}] {run.kind} {run.workload} shards={run.shards} "
                f"round {run.round} {run.server}:")
        if run.foreign:
            head += f" [other benchmark processes running: {', '.join(run.foreign)}]"
        if run.ok:
            r = run.result
            oc = "" if run.other_cores is None else f", other CPU {run.other_cores:.2f} cores"
            log(f"{head} {f_rate(r['msgs_per_s'])} msg/s, {r['server_cpu_ns_per_msg']:.0f} "
                f"server ns/msg, p99 {f_us(r['p99_us'])} µs{oc}  (eta {eta / 60:.1f} min)")
        else:
            log(f"{head} FAILED: {run.error}")

    cfg.all_runs = runs
    if cfg.scaling:
        return finish_scaling(cfg, runs, scaling_pts, servers, meta, commit, dirty, started, cmdline)
    main_sum = summarize(runs, "main")
    sweep_sum = summarize(runs, "sweep")
    table = make_table(cfg, main_sum, servers, workloads, shards_list)
    table += peer_table(main_sum, servers, workloads, shards_list)
    header = (f"# msgtrans comparison, {meta['timestamp']}\n\n"
              f"machine: {machine_label(cfg.machine)}"
              f"{', %s GiB' % cfg.machine['mem_gib'] if cfg.machine['mem_gib'] else ''}\n"
              f"commit: {commit}{' (uncommitted changes)' if dirty else ''}\n"
              f"command: `{cmdline}`\nseed: {seed}\n\n")
    failed = [r for r in runs if not r.ok]
    fail_txt = ""
    if failed:
        fail_txt = f"\n{len(failed)} of {len(runs)} runs FAILED:\n" + "".join(
            f"- {r.kind} {r.workload} shards={r.shards} round {r.round} {r.server}: "
            f"{(r.error or '').splitlines()[0]}\n" for r in failed)

    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "table.md").write_text(header + table + fail_txt)
    title_tail = (f"{machine_label(cfg.machine)} · {started:%Y-%m-%d %H:%M} UTC · "
                  f"{commit}{'+dirty' if dirty else ''}")
    svgs = []
    for shards in shards_list:
        suffix = "" if shards == shards_list[0] else f"-{shards}shards"
        for fname, body in [
            (f"throughput_vs_conns{suffix}.svg",
             throughput_svg(cfg, sweep_sum, servers, shards, title_tail) if cfg.sweep else None),
            (f"latency_64B-64x16{suffix}.svg",
             latency_svg(cfg, main_sum, servers, shards, title_tail)),
        ]:
            if body:
                (cfg.out / fname).write_text(body)
                svgs.append(cfg.out / fname)

    def key_s(d):
        return {f"{k[2]}|{k[1]}|shards={k[0]}": v for k, v in d.items()}

    results = {
        **meta, "seed": seed,
        "config": {"rounds": cfg.rounds, "duration": cfg.duration, "warmup": cfg.warmup,
                   "workloads": [w.__dict__ for w in workloads], "shards": shards_list,
                   "sweep": cfg.sweep, "sweep_rounds": cfg.sweep_rounds, "pin": cfg.pin,
                   "load_cpus": cfg.load_cpus, "reference": REFERENCE,
                   "settle": cfg.settle, "quiet": cfg.quiet,
                   "servers": [{"name": s.name, "argv": s.argv, "role": s.role}
                               for s in servers]},
        "medians": key_s(main_sum), "sweep_medians": key_s(sweep_sum),
        "runs": [r.__dict__ for r in runs],
        "failed_runs": len(failed),
    }
    (cfg.out / "results.json").write_text(json.dumps(results, indent=1) + "\n")

    print(header + table + fail_txt)
    print(f"wrote {cfg.out / 'results.json'}, {cfg.out / 'table.md'}"
          + "".join(f", {s}" for s in svgs))

    regression = False
    if not cfg.no_history or cfg.check:
        rows = history_rows(cfg, main_sum, servers, workloads, shards_list, meta)
        old = read_history(cfg.history)
        if cfg.check:
            report = check_history(old, rows, cfg.tolerance / 100)
            regression = any(l.startswith("REGRESSION") for l in report)
            print(f"\ncheck against {cfg.history} (tolerance {cfg.tolerance:g}%):")
            print("\n".join(report) if report else "(nothing to compare)")
            (cfg.out / "check.txt").write_text("\n".join(report) + "\n")
        if not cfg.no_history:
            append_history(cfg.history, rows)
            print(f"appended {len(rows)} rows to {cfg.history}")

    if failed:
        log(f"error: {len(failed)} of {len(runs)} runs failed (see above and results.json)")
        return 1
    return 3 if regression else 0


def finish_scaling(cfg, runs, points, servers, meta, commit, dirty, started, cmdline) -> int:
    summary = summarize(runs, "scaling")
    header = (f"# msgtrans per-core scaling, {meta['timestamp']}\n\n"
              f"machine: {machine_label(cfg.machine)}\ncommit: {commit}"
              f"{' (uncommitted changes)' if dirty else ''}\ncommand: `{cmdline}`\n\n")
    table = scaling_table(summary, points, cfg.machine["nproc"])
    cfg.out.mkdir(parents=True, exist_ok=True)
    (cfg.out / "scaling.md").write_text(header + table)
    title_tail = (f"{machine_label(cfg.machine)} · {started:%Y-%m-%d %H:%M} UTC · "
                  f"{commit}{'+dirty' if dirty else ''}")
    svg = scaling_svg(cfg, summary, points, servers, title_tail)
    if svg:
        (cfg.out / "scaling.svg").write_text(svg)
    (cfg.out / "scaling.json").write_text(json.dumps(
        {**meta, "points": points,
         "medians": {f"{k[2]}|cores={k[0]}": v for k, v in summary.items()},
         "runs": [r.__dict__ for r in runs]}, indent=1) + "\n")
    print(header + table)
    print(f"wrote {cfg.out / 'scaling.md'}" + (f", {cfg.out / 'scaling.svg'}" if svg else ""))
    failed = [r for r in runs if not r.ok]
    for r in failed:
        log(f"failed: {r.server} cores={r.shards} round {r.round}: {(r.error or '').splitlines()[0]}")
    return 1 if failed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Fatal as e:
        log(f"error: {e}")
        sys.exit(2)
    except KeyboardInterrupt:
        log("interrupted; stopping servers")
        kill_all_children()
        sys.exit(130)
    finally:
        kill_all_children()
