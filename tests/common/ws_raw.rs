//! A raw WebSocket peer over a tokio socket: the upgrade and client frames
//! spelled out in bytes, so tests see exactly what the server sends.

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{within, GUARD};

/// The RFC 6455 sample upgrade request for path `/ws`.
pub const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";

/// The mask every client frame here uses.
pub const MASK: [u8; 4] = [1, 2, 3, 4];

/// Connects to `addr` and upgrades; panics unless the answer is 101.
pub async fn upgraded(addr: std::net::SocketAddr) -> TcpStream {
    let mut s = within(GUARD, "ws connect", TcpStream::connect(addr)).await.unwrap();
    s.set_nodelay(true).unwrap();
    s.write_all(UPGRADE.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = within(GUARD, "upgrade response", s.read(&mut b)).await.unwrap();
        assert!(n > 0, "closed before a response: {:?}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    let head = String::from_utf8(head).unwrap();
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    s
}

/// A masked client frame: FIN + `opcode`.
pub fn client_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n if n <= 0xFFFF => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// Reads one server frame: (first byte, payload). `None` at EOF or reset.
pub async fn read_frame(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut h = [0u8; 2];
    within(GUARD, "frame head", s.read_exact(&mut h)).await.ok()?;
    assert_eq!(h[1] & 0x80, 0, "server frames are never masked");
    let len = match h[1] & 0x7F {
        126 => {
            let mut b = [0u8; 2];
            s.read_exact(&mut b).await.ok()?;
            u16::from_be_bytes(b) as usize
        }
        127 => {
            let mut b = [0u8; 8];
            s.read_exact(&mut b).await.ok()?;
            u64::from_be_bytes(b) as usize
        }
        n => n as usize,
    };
    let mut p = vec![0u8; len];
    within(GUARD, "frame body", s.read_exact(&mut p)).await.ok()?;
    Some((h[0], p))
}
