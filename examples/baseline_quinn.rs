//! The QUIC peer: what a user who does not take msgtrans writes for a QUIC
//! echo with msgtrans's framing, quinn 0.11 (the same quinn-proto our QUIC
//! driver runs) on a tokio `current_thread` runtime per thread, each with
//! its own endpoint on an `SO_REUSEPORT` UDP socket. ALPN `msgtrans/1`;
//! packets travel on the client's bidirectional stream, each after its
//! length as a u32 big-endian, and go back the same way. Written as a
//! competent user would: read what the stream has into one buffer, write
//! every complete packet in it back with one `write_all`.
//!
//! msgtrans's own client also opens an empty unidirectional stream at once
//! (it says "I read streams you open"); those are drained and ignored.
//! Requests (packet type 1) go back as responses (2), as msgtrans answers
//! them.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

const HELP: &str = "\
baseline_quinn: quinn echo with msgtrans's QUIC framing, the QUIC peer of msgtrans

USAGE:
    baseline_quinn [--addr ADDR] [--shards N]

OPTIONS:
    --addr ADDR   UDP listen address              [default: 127.0.0.1:8003]
    --shards N    threads, each a current_thread runtime with its own
                  endpoint on an SO_REUSEPORT socket [default: 1]
    -h, --help    print this help

A fresh self-signed certificate is written to a file, which it prints.
";

/// msgtrans's ALPN.
const ALPN: &[u8] = b"msgtrans/1";
/// Bytes of the length prefix before each packet.
const PREFIX: usize = 4;
/// A packet announcing more than this closes its connection (msgtrans's
/// default payload limit is far below).
const MAX_PACKET: usize = 64 << 20;

fn parse() -> Result<(SocketAddr, usize), String> {
    let mut addr: SocketAddr = "127.0.0.1:8003".parse().unwrap();
    let mut shards = 1;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--addr" => addr = value("--addr")?.parse().map_err(|e| format!("--addr: {e}"))?,
            "--shards" => shards = value("--shards")?.parse().map_err(|e| format!("--shards: {e}"))?,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    Ok((addr, usize::max(shards, 1)))
}

/// The server config: a self-signed certificate (written where clients can
/// read it) and the transport settings msgtrans's QUIC defaults use, so
/// that flow control is not what differs: 2 MiB per stream, 8 MiB per
/// connection (both directions), 30 s idle timeout, 16 bidirectional and
/// 100 unidirectional streams.
fn server_config() -> Result<quinn::ServerConfig, String> {
    use quinn::{IdleTimeout, VarInt};
    let mut tls = common::self_signed_server_config("baseline-quinn", true)?;
    tls.alpn_protocols = vec![ALPN.to_vec()];
    let crypto = quinn::crypto::rustls::QuicServerConfig::try_from(tls).map_err(|e| e.to_string())?;
    let mut config = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    let mut t = quinn::TransportConfig::default();
    t.max_idle_timeout(Some(IdleTimeout::try_from(Duration::from_secs(30)).unwrap()))
        .max_concurrent_bidi_streams(VarInt::from_u32(16))
        .max_concurrent_uni_streams(VarInt::from_u32(100))
        .stream_receive_window(VarInt::from_u32(2 << 20))
        .receive_window(VarInt::from_u32(8 << 20))
        .send_window(8 << 20);
    config.transport_config(Arc::new(t));
    Ok(config)
}

/// Length of the complete prefixed packets at the start of `buf`, each
/// request among them turned into its response; None for a packet larger
/// than anyone sends.
fn complete_packets(buf: &mut [u8]) -> Option<usize> {
    let mut off = 0;
    while buf.len() - off >= PREFIX {
        let len = u32::from_be_bytes(buf[off..off + PREFIX].try_into().unwrap()) as usize;
        if len > MAX_PACKET {
            return None;
        }
        if buf.len() - off < PREFIX + len {
            break;
        }
        let packet = &mut buf[off + PREFIX..off + PREFIX + len];
        if packet.len() > 2 && packet[2] == common::REQUEST {
            packet[2] = common::RESPONSE;
        }
        off += PREFIX + len;
    }
    Some(off)
}

async fn echo(conn: quinn::Connection, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0;
    loop {
        if have == buf.len() {
            buf.resize(buf.len() * 2, 0);
        }
        let n = match recv.read(&mut buf[have..]).await {
            Ok(Some(n)) => n,
            Ok(None) | Err(_) => return,
        };
        have += n;
        let Some(done) = complete_packets(&mut buf[..have]) else {
            conn.close(quinn::VarInt::from_u32(1), b"packet too large");
            return;
        };
        if done > 0 {
            if send.write_all(&buf[..done]).await.is_err() {
                return;
            }
            buf.copy_within(done..have, 0);
            have -= done;
        }
    }
}

async fn serve(conn: quinn::Connection) {
    let uni = conn.clone();
    tokio::spawn(async move {
        while let Ok(mut r) = uni.accept_uni().await {
            tokio::spawn(async move {
                let mut sink = [0u8; 4096];
                while let Ok(Some(_)) = r.read(&mut sink).await {}
            });
        }
    });
    while let Ok((send, recv)) = conn.accept_bi().await {
        tokio::spawn(echo(conn.clone(), send, recv));
    }
}

/// A UDP socket on `addr` that other threads' sockets share.
fn reuseport_udp(addr: SocketAddr) -> std::net::UdpSocket {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::DGRAM, None).expect("socket");
    s.set_reuse_address(true).unwrap();
    s.set_reuse_port(true).unwrap();
    s.bind(&addr.into()).expect("bind");
    s.into()
}

fn main() {
    let (addr, shards) = match parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {e}\n\n{HELP}");
            std::process::exit(2);
        }
    };
    let config = match server_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    let threads: Vec<_> = (0..shards)
        .map(|_| {
            let socket = reuseport_udp(addr);
            let config = config.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let endpoint = quinn::Endpoint::new(
                        quinn::EndpointConfig::default(),
                        Some(config),
                        socket,
                        Arc::new(quinn::TokioRuntime),
                    )
                    .expect("endpoint");
                    while let Some(incoming) = endpoint.accept().await {
                        tokio::spawn(async move {
                            if let Ok(conn) = incoming.await {
                                serve(conn).await;
                            }
                        });
                    }
                })
            })
        })
        .collect();
    println!("listening quic {addr} shards={shards} path=baseline_quinn");
    for t in threads {
        let _ = t.join();
    }
}
