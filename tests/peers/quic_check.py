"""An independent QUIC peer (aioquic) for tests/quic_python_peer.rs.

Drives aioquic's sans-IO QuicConnection over its own UDP socket, so a case
can also move to a new local port mid-connection (address migration).
Prints one line per check and exits non-zero on the first failure.

usage: quic_check.py HOST:PORT CASE --cafile PEM [--expect-idle SECS]
cases: request, echo1m, no-alpn, wrong-alpn, uni, malformed, idle, migrate, params
"""

import argparse
import os
import select
import socket
import struct
import sys
import time

from aioquic.quic import events
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection

ALPN = "msgtrans/1"


def packet(ptype, mid, payload, biz=0, ext=b""):
    """A MsgTrans packet: 16-byte big-endian header, ext header, payload."""
    return struct.pack(">BBBBIHIH", 1, 0, ptype, biz, mid, len(ext), len(payload), 0) + ext + payload


def parse(buf):
    """Whole packets from the front of buf: (packets, rest)."""
    out = []
    while len(buf) >= 16:
        ext, plen = struct.unpack(">HI", buf[8:14])
        n = 16 + ext + plen
        if len(buf) < n:
            break
        out.append((buf[2], struct.unpack(">I", buf[4:8])[0], buf[16 + ext : n]))
        buf = buf[n:]
    return out, buf


class Peer:
    def __init__(self, addr, cafile, alpn=(ALPN,), idle=30.0):
        host, port = addr.rsplit(":", 1)
        self.addr = (host, int(port))
        cfg = QuicConfiguration(is_client=True, alpn_protocols=list(alpn) if alpn else None, idle_timeout=idle)
        cfg.load_verify_locations(cafile)
        cfg.server_name = "localhost"
        self.conn = QuicConnection(configuration=cfg)
        self.sock = self.new_socket()
        self.events = []
        self.streams = {}
        self.terminated = None
        self.conn.connect(self.addr, now=time.time())
        self.flush()

    def new_socket(self):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.bind(("127.0.0.1", 0))
        s.setblocking(False)
        return s

    def flush(self):
        for data, addr in self.conn.datagrams_to_send(now=time.time()):
            self.sock.sendto(data, addr)

    def step(self, timeout):
        timer = self.conn.get_timer()
        wait = timeout if timer is None else max(0.0, min(timeout, timer - time.time()))
        r, _, _ = select.select([self.sock], [], [], wait)
        if r:
            while True:
                try:
                    data, addr = self.sock.recvfrom(65536)
                except BlockingIOError:
                    break
                self.conn.receive_datagram(data, addr, now=time.time())
        timer = self.conn.get_timer()
        if timer is not None and timer <= time.time():
            self.conn.handle_timer(now=time.time())
        while True:
            ev = self.conn.next_event()
            if ev is None:
                break
            if isinstance(ev, events.StreamDataReceived):
                self.streams.setdefault(ev.stream_id, bytearray()).extend(ev.data)
            if isinstance(ev, events.ConnectionTerminated):
                self.terminated = ev
            self.events.append(ev)
        self.flush()

    def until(self, cond, timeout, what):
        end = time.time() + timeout
        while not cond():
            if time.time() > end:
                fail(f"{what}: nothing after {timeout}s")
            if self.terminated and not what.startswith("close"):
                fail(f"{what}: connection terminated: {self.terminated}")
            self.step(min(0.05, max(0.0, end - time.time())))

    def handshake(self):
        self.until(lambda: any(isinstance(e, events.HandshakeCompleted) for e in self.events), 10, "handshake")

    def bidi(self):
        return self.conn.get_next_available_stream_id(is_unidirectional=False)

    def request(self, sid, mid, payload, timeout=20):
        """Sends a request on a bidi stream, length-prefixed; returns the response payload."""
        p = packet(1, mid, payload)
        self.conn.send_stream_data(sid, struct.pack(">I", len(p)) + p, end_stream=False)
        self.flush()
        return self.await_packet(sid, mid, timeout, prefixed=True)

    def await_packet(self, sid, mid, timeout, prefixed):
        found = {}

        def done():
            buf = bytes(self.streams.get(sid, b""))
            pkts = []
            while prefixed and len(buf) >= 4:
                n = struct.unpack(">I", buf[:4])[0]
                if len(buf) < 4 + n:
                    break
                pkts.append(buf[4 : 4 + n])
                buf = buf[4 + n :]
            if not prefixed:
                pkts = [buf]
            for raw in pkts:
                got, _ = parse(raw)
                for ptype, m, payload in got:
                    if m == mid:
                        found["p"] = (ptype, payload)
            return "p" in found

        self.until(done, timeout, f"response to {mid}")
        return found["p"]


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


def ok(msg):
    print("ok", msg)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("addr")
    ap.add_argument("case")
    ap.add_argument("--cafile", required=True)
    ap.add_argument("--expect-idle", type=float, default=1.0)
    a = ap.parse_args()

    if a.case == "request":
        p = Peer(a.addr, a.cafile)
        p.handshake()
        ptype, payload = p.request(p.bidi(), 7, b"what time is it?")
        if ptype != 2 or payload != b"what time is it?":
            fail(f"response {ptype} {payload!r}")
        ok("request answered over ALPN msgtrans/1")
    elif a.case == "echo1m":
        p = Peer(a.addr, a.cafile)
        p.handshake()
        sid = p.bidi()
        payload = os.urandom(1 << 20)
        pk = packet(0, 9, payload)
        p.conn.send_stream_data(sid, struct.pack(">I", len(pk)) + pk, end_stream=False)
        p.flush()
        ptype, got = p.await_packet(sid, 9, 30, prefixed=True)
        if got != payload:
            fail(f"1 MiB echo differs ({len(got)} bytes)")
        ok("1 MiB echoed intact")
    elif a.case == "no-alpn":
        p = Peer(a.addr, a.cafile, alpn=None)
        p.handshake()
        ptype, payload = p.request(p.bidi(), 3, b"1.0 style")
        if payload != b"1.0 style":
            fail(f"response {payload!r}")
        ok("a client offering no ALPN is served")
    elif a.case == "wrong-alpn":
        p = Peer(a.addr, a.cafile, alpn=("h3",))
        p.until(lambda: p.terminated is not None, 10, "close on wrong ALPN")
        if any(isinstance(e, events.HandshakeCompleted) for e in p.events):
            fail("handshake completed with ALPN h3")
        # TLS alert no_application_protocol (120) as CRYPTO_ERROR 0x100 + 120.
        if p.terminated.error_code != 0x100 + 120:
            fail(f"refused with {p.terminated.error_code:#x}, not no_application_protocol")
        ok("wrong ALPN refused with no_application_protocol")
    elif a.case == "uni":
        p = Peer(a.addr, a.cafile, alpn=None)
        p.handshake()
        for mid in (11, 12):
            sid = p.conn.get_next_available_stream_id(is_unidirectional=True)
            p.conn.send_stream_data(sid, packet(1, mid, b"uni %d" % mid), end_stream=True)
            p.flush()
        got = {}

        def both():
            for sid, buf in p.streams.items():
                if sid % 4 == 3:  # server-initiated unidirectional
                    for ptype, mid, payload in parse(bytes(buf))[0]:
                        got[mid] = (ptype, payload)
            return len(got) == 2

        p.until(both, 20, "answers on unidirectional streams")
        for mid in (11, 12):
            if got[mid] != (2, b"uni %d" % mid):
                fail(f"answer {mid}: {got[mid]}")
        ok("per-packet unidirectional streams answered in kind")
    elif a.case == "malformed":
        bad = Peer(a.addr, a.cafile)
        good = Peer(a.addr, a.cafile)
        bad.handshake()
        good.handshake()
        pk = b"\x09" + packet(1, 1, b"bad version")[1:]
        bad.conn.send_stream_data(bad.bidi(), struct.pack(">I", len(pk)) + pk, end_stream=False)
        bad.flush()
        bad.until(lambda: bad.terminated is not None, 10, "close on malformed packet")
        if bad.terminated.error_code != 1:
            fail(f"closed with {bad.terminated.error_code}, not application error 1")
        ptype, payload = good.request(good.bidi(), 5, b"still served")
        if payload != b"still served":
            fail("the other connection was harmed")
        ok("malformed packet closes that connection with error 1; the other carries on")
    elif a.case == "idle":
        p = Peer(a.addr, a.cafile)
        p.handshake()
        start = time.time()
        p.until(lambda: p.terminated is not None, a.expect_idle * 4 + 5, "close by idle timeout")
        took = time.time() - start
        if p.terminated.error_code != 0:
            fail(f"idle close with code {p.terminated.error_code}")
        ok(f"closed by the server after {took:.2f}s idle")
    elif a.case == "vanish":
        # Served once, then gone without a CONNECTION_CLOSE: os._exit skips
        # every cleanup, as a crashed or unplugged peer would.
        p = Peer(a.addr, a.cafile)
        p.handshake()
        p.request(p.bidi(), 1, b"here")
        print("ok: served, vanishing", flush=True)
        os._exit(0)
    elif a.case == "migrate":
        p = Peer(a.addr, a.cafile)
        p.handshake()
        sid = p.bidi()
        p.request(sid, 1, b"before")
        for i in range(12):
            p.sock.close()
            p.sock = p.new_socket()
            p.conn.send_ping(100 + i)
            p.flush()
            _, payload = p.request(sid, 2 + i, b"moved %d" % i)
            if payload != b"moved %d" % i:
                fail(f"after move {i}: {payload!r}")
        ok("requests answered from 12 new local ports")
    elif a.case == "params":
        p = Peer(a.addr, a.cafile)
        p.handshake()
        c = p.conn
        print(
            "params idle=%s bidi=%d uni=%d max_data=%d stream_data=%d"
            % (
                c._remote_max_idle_timeout,
                c._remote_max_streams_bidi,
                c._remote_max_streams_uni,
                c._remote_max_data,
                c._remote_max_stream_data_bidi_remote,
            )
        )
    else:
        fail(f"unknown case {a.case}")


if __name__ == "__main__":
    main()
