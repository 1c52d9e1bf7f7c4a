//! WebSocket for the raw io_uring loop: the upgrade, done blocking per
//! connection before anything is measured, and the framing (RFC 6455) of
//! one packet per binary message. Client frames are masked, as the RFC
//! requires, with one fixed key: each frame is a copy of a pre-masked
//! template with its 8 timestamp bytes masked in, so a 64 KiB frame costs a
//! copy, as it does over TCP, not a pass of XOR.

use std::io::{Read, Write};
use std::net::TcpStream;

/// The masking key of every frame we send.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];
/// Where the timestamp starts in a packet (right after the 16-byte header).
const STAMP_AT: usize = 16;
/// Where the message id sits in the packet (header bytes 4..8, big-endian).
const ID_AT: usize = 4;

/// Upgrades `sock` to WebSocket on `path`, offering the `msgtrans.v1`
/// subprotocol as MsgTrans 2.0 clients do, and checks the server's
/// `Sec-WebSocket-Accept`. Returns the bytes read past the response (none
/// from our server, which speaks only when spoken to).
pub fn upgrade(sock: &mut TcpStream, host: &str, path: &str) -> std::io::Result<Vec<u8>> {
    use msgtrans_shards::proto::ws::handshake::{check_response, client_request};
    let refused = |why: String| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, why);
    let key = tungstenite::handshake::client::generate_key();
    sock.write_all(client_request(host, path, &key).as_bytes())?;
    let mut buf = Vec::with_capacity(512);
    let mut chunk = [0u8; 512];
    loop {
        if let Some(len) = check_response(&buf, &key).map_err(refused)? {
            return Ok(buf.split_off(len));
        }
        let n = sock.read(&mut chunk)?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// Length of a frame header carrying `len` payload bytes (without the mask).
fn header_len(len: usize) -> usize {
    match len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

/// One masked binary frame holding `packet`, ready to be copied per send.
pub fn masked_template(packet: &[u8]) -> Vec<u8> {
    let len = packet.len();
    let mut f = Vec::with_capacity(header_len(len) + 4 + len);
    f.push(0x82); // FIN, binary
    match header_len(len) {
        2 => f.push(0x80 | len as u8),
        4 => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(len as u16).to_be_bytes());
        }
        _ => {
            f.push(0x80 | 127);
            f.extend_from_slice(&(len as u64).to_be_bytes());
        }
    }
    f.extend_from_slice(&MASK);
    f.extend(packet.iter().enumerate().map(|(i, b)| b ^ MASK[i % 4]));
    f
}

/// Appends one frame: the template with `stamp` masked into the packet's
/// timestamp bytes and `id` into its message id.
pub fn push_frame(out: &mut Vec<u8>, template: &[u8], stamp: u64, id: u32) {
    let packet = out.len() + header_len_of(template) + 4;
    out.extend_from_slice(template);
    for (i, b) in stamp.to_le_bytes().into_iter().enumerate() {
        // The stamp sits at packet offset 16 + i, so its mask byte is MASK[i % 4].
        out[packet + STAMP_AT + i] = b ^ MASK[(STAMP_AT + i) % 4];
    }
    for (i, b) in id.to_be_bytes().into_iter().enumerate() {
        out[packet + ID_AT + i] = b ^ MASK[(ID_AT + i) % 4];
    }
}

/// Header length (without the mask) of a frame we built.
fn header_len_of(frame: &[u8]) -> usize {
    match frame[1] & 0x7f {
        126 => 4,
        127 => 10,
        _ => 2,
    }
}

/// What the start of a receive buffer holds.
pub enum Parsed {
    /// Not a whole frame yet.
    Partial,
    /// A binary frame: its total length, and where its payload starts.
    Packet {
        total: usize,
        payload_at: usize,
        len: usize,
    },
}

/// Parses one server frame (unmasked) at the start of `buf`. Anything but
/// a single-frame binary message ends the run with an error: our server
/// sends nothing else unprompted, and a load generator that skipped frames
/// would miscount.
pub fn parse(buf: &[u8]) -> std::io::Result<Parsed> {
    let bad = |why: String| std::io::Error::new(std::io::ErrorKind::InvalidData, why);
    if buf.len() < 2 {
        return Ok(Parsed::Partial);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b1 & 0x80 != 0 {
        return Err(bad("masked frame from the server".into()));
    }
    let (hl, len) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (4, u16::from_be_bytes([buf[2], buf[3]]) as usize),
        127 if buf.len() >= 10 => (10, u64::from_be_bytes(buf[2..10].try_into().unwrap()) as usize),
        126 | 127 => return Ok(Parsed::Partial),
        n => (2, n as usize),
    };
    if b0 != 0x82 {
        let why = match b0 & 0x0f {
            0x8 => "the server closed the WebSocket".to_string(),
            op => format!("unexpected WebSocket frame (first byte {b0:#04x}, opcode {op})"),
        };
        return Err(bad(why));
    }
    if buf.len() < hl + len {
        return Ok(Parsed::Partial);
    }
    Ok(Parsed::Packet {
        total: hl + len,
        payload_at: hl,
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_unmask_to_the_packet_with_its_stamp_and_id() {
        for size in [24usize, 125, 126, 65535, 65536, 70000] {
            let mut packet = vec![0xABu8; size];
            let t = masked_template(&packet);
            let mut out = vec![9u8; 3];
            push_frame(&mut out, &t, 0x0102030405060708, 0xA1B2C3D4);
            let f = &out[3..];
            let hl = header_len_of(f);
            let key = &f[hl..hl + 4];
            let un: Vec<u8> = f[hl + 4..].iter().enumerate().map(|(i, b)| b ^ key[i % 4]).collect();
            packet[16..24].copy_from_slice(&0x0102030405060708u64.to_le_bytes());
            packet[4..8].copy_from_slice(&0xA1B2C3D4u32.to_be_bytes());
            assert_eq!(un, packet, "size {size}");
        }
    }
}
