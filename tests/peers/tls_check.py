"""An independent TLS client (python `ssl`) for msgtrans's client-certificate
tests: connects to HOST:PORT trusting CA, optionally presenting CERT/KEY,
sends one MsgTrans request and expects it echoed back as a response.

Usage: tls_check.py HOST PORT CA [CERT KEY]
Prints "ok served" or "refused: <why>" and exits 0 either way; exits 1 on
anything else (a wrong echo, a hang).
"""

import socket
import ssl
import struct
import sys


def main():
    host, port, ca = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ctx = ssl.create_default_context(cafile=ca)
    if len(sys.argv) > 5:
        ctx.load_cert_chain(sys.argv[4], sys.argv[5])
    payload = b"from python ssl"
    request = struct.pack(">BBBBIHIH", 1, 0, 1, 0, 42, 0, len(payload), 0) + payload
    try:
        with socket.create_connection((host, port), timeout=10) as raw:
            with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                s.sendall(request)
                want = struct.pack(">BBBBIHIH", 1, 0, 2, 0, 42, 0, len(payload), 0) + payload
                got = b""
                while len(got) < len(want):
                    chunk = s.recv(4096)
                    if not chunk:
                        print("refused: closed")
                        return
                    got += chunk
                if got != want:
                    print("FAIL echo", got)
                    sys.exit(1)
                print("ok served")
    except (ssl.SSLError, ConnectionResetError, BrokenPipeError) as e:
        print("refused:", e)


if __name__ == "__main__":
    main()
