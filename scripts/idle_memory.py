#!/usr/bin/env python3
"""Resident memory per idle session, measured on the sharded_server example.

Starts `sharded_server` (TCP only), opens N connections from this process,
has each exchange one packet (so every session has been through a read and
a write), then leaves them idle and reads the server's resident memory
(VmRSS) from /proc. Closes them all and reads it again. Kernel socket
buffers are not part of a process's RSS, so the figure is user-space memory.

This machine caps open files at 20,000 per process; the server and this
client are separate processes, so 15,000 sessions fit.
"""

import argparse
import os
import re
import socket
import struct
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return int(re.search(r"VmRSS:\s+(\d+)", f.read()).group(1))


def settle(pid, seconds=1.0):
    time.sleep(seconds)
    return rss_kib(pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-n", "--sessions", type=int, default=15000)
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--bin", default=os.path.join(ROOT, "target/release/examples/sharded_server"))
    a = ap.parse_args()
    if not os.path.exists(a.bin):
        sys.exit(f"{a.bin} missing: cargo build --release --example sharded_server")
    srv = subprocess.Popen([a.bin, "--tcp", "127.0.0.1:0", "--no-ws", "--no-quic", "--shards", str(a.shards), "--max-connections", str(a.sessions + 100)],
                           stdout=subprocess.PIPE, text=True)
    try:
        line = srv.stdout.readline()
        m = re.search(r"listening tcp (\S+):(\d+)", line)
        if not m:
            sys.exit(f"unexpected server output: {line!r}")
        addr = (m.group(1), int(m.group(2)))
        base = settle(srv.pid)
        pkt = struct.pack(">BBBBIHIH", 1, 0, 0, 0, 1, 0, 8, 0) + b"idle-ses"

        def open_all():
            socks = []
            for _ in range(a.sessions):
                s = socket.create_connection(addr)
                s.sendall(pkt)
                socks.append(s)
                if len(socks) % 500 == 0 or len(socks) == a.sessions:
                    for x in socks[-(len(socks) % 500 or 500):]:
                        got = b""
                        while len(got) < len(pkt):
                            got += x.recv(len(pkt) - len(got))
            return socks

        t0 = time.time()
        socks = open_all()
        opened = time.time() - t0
        idle = settle(srv.pid, 2.0)
        per = (idle - base) * 1024 / a.sessions
        for s in socks:
            s.close()
        after = settle(srv.pid, 2.0)
        # A second round: freed session memory is reused, not leaked.
        socks = open_all()
        idle2 = settle(srv.pid, 2.0)
        for s in socks:
            s.close()
        after2 = settle(srv.pid, 2.0)
        print(f"sessions={a.sessions} shards={a.shards} opened_in={opened:.1f}s")
        print(f"rss_kib: baseline={base} idle={idle} after_close={after} idle_again={idle2} after_close_again={after2}")
        print(f"bytes_per_idle_session={per:.0f} (budget 4096)")
        print(f"after_close_growth_over_baseline_kib={after - base} second_round_extra_kib={idle2 - idle}")
    finally:
        srv.terminate()
        srv.wait(timeout=10)


if __name__ == "__main__":
    main()
