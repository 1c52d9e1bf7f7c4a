//! Baseline 2: what a typical tokio user writes. `tokio-util`'s `Framed`
//! with a MsgTrans codec, one `send` (and so one flush) per message.

mod common;

use bytes::{Buf, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{Decoder, Encoder, Framed};

struct FrameCodec;

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = std::io::Error;
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>, Self::Error> {
        if src.len() < 16 {
            return Ok(None);
        }
        let ext = u16::from_be_bytes([src[8], src[9]]) as usize;
        let payload = u32::from_be_bytes([src[10], src[11], src[12], src[13]]) as usize;
        let len = 16 + ext + payload;
        if src.len() < len {
            src.reserve(len - src.len());
            return Ok(None);
        }
        Ok(Some(src.split_to(len)))
    }
}

impl Encoder<BytesMut> for FrameCodec {
    type Error = std::io::Error;
    fn encode(&mut self, item: BytesMut, dst: &mut BytesMut) -> Result<(), Self::Error> {
        dst.extend_from_slice(item.chunk());
        Ok(())
    }
}

fn main() {
    let (addr, shards) = common::args(
        "baseline_framed",
        "tokio-util Framed echo, one send per message (baseline 2)",
    );
    let threads: Vec<_> = (0..shards)
        .map(|_| {
            let std_listener = common::reuseport_listener(&addr);
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    std_listener.set_nonblocking(true).unwrap();
                    let listener = tokio::net::TcpListener::from_std(std_listener).unwrap();
                    loop {
                        let Ok((s, _)) = listener.accept().await else { continue };
                        let _ = s.set_nodelay(true);
                        tokio::spawn(async move {
                            let mut framed = Framed::new(s, FrameCodec);
                            while let Some(Ok(frame)) = framed.next().await {
                                if framed.send(frame).await.is_err() {
                                    return;
                                }
                            }
                        });
                    }
                })
            })
        })
        .collect();
    println!("listening tcp {addr} shards={shards} path=baseline_framed");
    for t in threads {
        let _ = t.join();
    }
}
