//! Why msgtrans parses WebSocket frames in place instead of using
//! tungstenite's `WebSocket` message stream: the same 1,000 masked binary
//! messages (one 64-byte MsgTrans packet each), read, decoded and echoed
//! by (a) the msgtrans session driver and (b) tungstenite's `WebSocket`
//! over an in-memory stream. Both run on one core with no network.

use std::hint::black_box;
use std::io::{Cursor, Read, Write};

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use msgtrans::packet::{FrameLimits, Packet};
use msgtrans_shards::codec;
use tungstenite::protocol::{Message, Role, WebSocket};

const MESSAGES: usize = 1000;

/// One masked client frame carrying `payload`.
fn masked_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut f = vec![0x82];
    match payload.len() {
        n if n < 126 => f.push(0x80 | n as u8),
        n => {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        }
    }
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

fn input() -> Vec<u8> {
    let packet = Packet::one_way(1, vec![7u8; 64]).to_bytes().unwrap();
    (0..MESSAGES).flat_map(|_| masked_frame(&packet)).collect()
}

/// An in-memory duplex: reads from `input`, keeps what is written.
struct Mem {
    input: Cursor<Vec<u8>>,
    output: Vec<u8>,
}

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.input.read(buf)?;
        if n == 0 && !buf.is_empty() {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        Ok(n)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.output.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn ws(c: &mut Criterion) {
    let wire = input();
    let mut g = c.benchmark_group("ws_echo_1000x64B");
    g.throughput(Throughput::Elements(MESSAGES as u64));
    g.bench_function("msgtrans_in_place", |b| {
        b.iter_batched(
            || wire.chunks(64 * 1024).map(<[u8]>::to_vec).collect::<Vec<_>>(),
            |chunks| {
                black_box(
                    msgtrans_shards::testing::run_session(true, chunks, 1 << 20)
                        .written
                        .len(),
                )
            },
            BatchSize::SmallInput,
        )
    });
    g.bench_function("tungstenite_websocket", |b| {
        b.iter_batched(
            || Mem {
                input: Cursor::new(wire.clone()),
                output: Vec::with_capacity(wire.len()),
            },
            |mem| {
                let mut ws = WebSocket::from_raw_socket(mem, Role::Server, None);
                let limits = FrameLimits::default();
                while let Ok(Message::Binary(data)) = ws.read() {
                    let mut buf = BytesMut::from(&data[..]);
                    let p = codec::decode(&mut buf, &limits).unwrap().unwrap();
                    ws.write(Message::Binary(p.to_bytes().unwrap().freeze())).unwrap();
                }
                ws.flush().unwrap();
                black_box(ws.get_ref().output.len())
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group!(benches, ws);
criterion_main!(benches);
