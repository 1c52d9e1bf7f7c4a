"""An independent WebSocket peer (python `websockets`) for msgtrans tests.

Usage: ws_check.py URL CASE [--cafile PEM]

Cases:
  sizes        one-way packets of 0 B .. 1 MiB payload, each echoed intact
  requests     requests answered with a response carrying id and payload
  text         a text message comes back as a one-way packet of that text
  subprotocol  offering msgtrans.v1 gets it echoed; offering nothing works
  admission    against a listener allowing origin https://app.example with
               token s3cret: the right origin and token (header or query)
               are served; a foreign origin gets 403, no token 401
Prints one line per check and exits non-zero on the first mismatch.
"""

import ssl
import struct
import sys

from websockets.sync.client import connect


def packet(ptype, mid, payload, ext=b"", biz=0):
    return struct.pack(">BBBBIHIH", 1, 0, ptype, biz, mid, len(ext), len(payload), 0) + ext + payload


def fail(msg):
    print("FAIL", msg)
    sys.exit(1)


def open_ws(url, cafile, **kw):
    ctx = None
    if url.startswith("wss:"):
        ctx = ssl.create_default_context(cafile=cafile)
    return connect(url, max_size=None, ssl=ctx, open_timeout=10, **kw)


def main():
    url, case = sys.argv[1], sys.argv[2]
    cafile = sys.argv[4] if len(sys.argv) > 4 and sys.argv[3] == "--cafile" else None
    if case == "sizes":
        with open_ws(url, cafile) as ws:
            for size in (0, 125, 126, 65535, 65536, 1 << 20):
                body = bytes((i * 7) & 0xFF for i in range(size))
                p = packet(0, size & 0xFFFF, body, b"x", 3)
                ws.send(p)
                back = ws.recv(timeout=20)
                if back != p:
                    fail(f"size {size}: got {len(back)} bytes, expected {len(p)}")
                print("ok size", size)
    elif case == "requests":
        with open_ws(url, cafile) as ws:
            for mid in (1, 2, 0xFFFFFFFF):
                ws.send(packet(1, mid, b"q%d" % mid))
                back = ws.recv(timeout=10)
                if back != packet(2, mid, b"q%d" % mid):
                    fail(f"request {mid}: got {back!r}")
                print("ok request", mid)
    elif case == "text":
        with open_ws(url, cafile) as ws:
            ws.send("héllo text")
            back = ws.recv(timeout=10)
            want = packet(0, 0, "héllo text".encode())
            if back != want:
                fail(f"text: got {back!r}, expected {want!r}")
            print("ok text")
    elif case == "subprotocol":
        with open_ws(url, cafile, subprotocols=["msgtrans.v1"]) as ws:
            if ws.subprotocol != "msgtrans.v1":
                fail(f"subprotocol {ws.subprotocol!r}")
            ws.send(packet(0, 5, b"v2"))
            if ws.recv(timeout=10) != packet(0, 5, b"v2"):
                fail("echo with subprotocol")
            print("ok subprotocol echoed")
        with open_ws(url, cafile) as ws:
            if ws.subprotocol is not None:
                fail(f"subprotocol chosen though none offered: {ws.subprotocol!r}")
            ws.send(packet(0, 6, b"v1"))
            if ws.recv(timeout=10) != packet(0, 6, b"v1"):
                fail("echo without subprotocol")
            print("ok no subprotocol")
    elif case == "admission":
        from websockets.exceptions import InvalidStatus

        def status(url, **kw):
            try:
                with open_ws(url, cafile, **kw) as ws:
                    ws.send(packet(0, 9, b"in"))
                    if ws.recv(timeout=10) != packet(0, 9, b"in"):
                        fail("echo after admission")
                    return 101
            except InvalidStatus as e:
                return e.response.status_code

        good = {"origin": "https://app.example"}
        bearer = {"additional_headers": {"Authorization": "Bearer s3cret"}}
        checks = [
            ("origin and bearer header", url, {**good, **bearer}, 101),
            ("origin and query token", url + "?token=s3cret", good, 101),
            ("foreign origin", url, {"origin": "https://evil.example", **bearer}, 403),
            ("no token", url, good, 401),
            ("wrong token", url + "?token=guess", good, 401),
        ]
        for name, u, kw, want in checks:
            got = status(u, **kw)
            if got != want:
                fail(f"{name}: status {got}, expected {want}")
            print("ok", name, got)
    else:
        fail(f"unknown case {case}")


if __name__ == "__main__":
    main()
