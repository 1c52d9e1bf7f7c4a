"""An independent QUIC server (aioquic) for tests/quic_client_params.rs.

Accepts connections with ALPN msgtrans/1 and, once a handshake completes,
prints the transport parameters the client sent, so a test can see that
our client's options reach the wire. Prints "port N" first; runs until its
standard input closes.

usage: quic_server.py CERT_PEM KEY_PEM
"""

import asyncio
import sys

from aioquic.asyncio import serve
from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.events import HandshakeCompleted


class Report(QuicConnectionProtocol):
    def quic_event_received(self, event):
        if isinstance(event, HandshakeCompleted):
            c = self._quic
            print(
                "params idle=%s bidi=%d uni=%d max_data=%d stream_data=%d"
                % (
                    c._remote_max_idle_timeout,
                    c._remote_max_streams_bidi,
                    c._remote_max_streams_uni,
                    c._remote_max_data,
                    c._remote_max_stream_data_bidi_local,
                ),
                flush=True,
            )


async def main():
    cfg = QuicConfiguration(is_client=False, alpn_protocols=["msgtrans/1"])
    cfg.load_cert_chain(sys.argv[1], sys.argv[2])
    server = await serve("127.0.0.1", 0, configuration=cfg, create_protocol=Report)
    print("port", server._transport.get_extra_info("sockname")[1], flush=True)
    loop = asyncio.get_running_loop()
    # Until the test closes our stdin.
    await loop.run_in_executor(None, sys.stdin.read)
    server.close()


asyncio.run(main())
