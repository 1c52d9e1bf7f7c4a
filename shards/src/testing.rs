//! A session driven over an in-memory stream, outside any runtime: the
//! harness behind the fuzz targets (`fuzz/`) and their corpus replay test.
//! Not part of the supported API.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_lite::{AsyncRead, AsyncWrite};

use crate::config::EngineConfig;
use crate::error::CloseReason;
use crate::event::EventSink;
use crate::mesh;
use crate::mesh::Mesh;
use crate::pool::buffer::BufferPool;
use crate::pool::slab::SlotTable;
use crate::session::handler::Inline;
use crate::session::SessionCtx;
use crate::shard::Shard;
use crate::stats::ShardStats;
use crate::wire::Wire;

/// Delivers `chunks` one read at a time, then EOF; keeps what is written.
struct Script {
    chunks: std::collections::VecDeque<Vec<u8>>,
    written: Vec<u8>,
}

impl AsyncRead for Script {
    fn poll_read(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &mut [u8]) -> Poll<std::io::Result<usize>> {
        let Some(mut chunk) = self.chunks.pop_front() else {
            return Poll::Ready(Ok(0));
        };
        let n = chunk.len().min(buf.len());
        buf[..n].copy_from_slice(&chunk[..n]);
        if n < chunk.len() {
            self.chunks.push_front(chunk.split_off(n));
        }
        Poll::Ready(Ok(n))
    }
}

impl AsyncWrite for Script {
    fn poll_write(mut self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.written.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

/// What a scripted session did.
#[derive(Debug)]
pub struct Outcome {
    /// Every byte the session wrote.
    pub written: Vec<u8>,
    /// Why it ended.
    pub reason: CloseReason,
}

/// Runs one server session (TCP framing, or WebSocket after the upgrade
/// when `websocket`) whose peer sends `chunks` and then closes, served by
/// an inline echo, with payloads limited to `max_payload`.
pub fn run_session(websocket: bool, chunks: Vec<Vec<u8>>, max_payload: u32) -> Outcome {
    let mut cfg = EngineConfig::default();
    cfg.frame.max_payload = max_payload;
    cfg.frame.max_ext_header = 1024;
    let echo = |ctx: &mut Inline<'_>| {
        let (h, ext, p) = (ctx.header().clone(), ctx.ext_header(), ctx.payload());
        if ctx.is_request() {
            ctx.respond(p);
        } else {
            ctx.write(&h, ext, p);
        }
    };
    let shard = lone_shard(cfg, Some(Arc::new(echo)));
    let wire = match websocket {
        #[cfg(feature = "websocket")]
        true => Wire::WsServer,
        #[cfg(not(feature = "websocket"))]
        true => panic!("a WebSocket session needs the `websocket` feature"),
        false => Wire::Tcp,
    };
    let st = shard.admit(wire).expect("a free slot");
    let mut script = Script {
        chunks: chunks.into(),
        written: Vec::new(),
    };
    let driver = shard.driver(Rc::clone(&st), crate::session_io::Stream(&mut script), &[]);
    let reason = futures_lite::future::block_on(driver);
    shard.finish(&st, reason.clone());
    Outcome {
        written: script.written,
        reason,
    }
}

/// A one-shard engine's shard with `cfg` and `handler`, outside any
/// runtime and with no thread: for driving sessions and queues by hand.
pub(crate) fn lone_shard(
    cfg: EngineConfig,
    handler: Option<Arc<dyn crate::session::handler::InlineHandler>>,
) -> Rc<Shard> {
    let (outbox, _inbox) = mesh::inbox();
    let mesh = Arc::new(Mesh {
        outboxes: vec![outbox],
        tables: vec![SlotTable::new(4)],
        open_total: AtomicUsize::new(0),
        peers: crate::peers::PeerTable::new(cfg.max_connections_per_ip, cfg.max_connects_per_ip_per_sec),
        secret: Default::default(),
        node: cfg.node,
        uplink: Default::default(),
    });
    let (tx, _rx) = flume::bounded(1024);
    let sink = EventSink {
        tx,
        lifecycle: Arc::new(AtomicBool::new(false)),
        bell: Arc::default(),
    };
    let pool = BufferPool::new(0, Default::default());
    let ctx = SessionCtx::new(0, Arc::new(cfg), pool, mesh, sink, Arc::new(ShardStats::new(1)));
    Shard::new(ctx, handler, None)
}

use std::rc::Rc;

/// The bodies of the fuzz targets, shared with the corpus replay test so
/// that CI runs exactly what the fuzzer ran.
pub mod fuzz {
    use bytes::BytesMut;

    use crate::codec::{self, FrameLimits};
    use crate::packet::{CompressionType, Packet, PacketType, ReservedFlags};

    const LIMITS: FrameLimits = FrameLimits {
        max_payload: 1 << 16,
        max_ext_header: 1 << 10,
    };

    /// Decodes `data` as a stream of packets: every packet decoded must
    /// re-encode to exactly the bytes it came from.
    pub fn decode(data: &[u8]) {
        let mut buf = BytesMut::from(data);
        let mut offset = 0;
        while let Ok(Some(p)) = codec::decode(&mut buf, &LIMITS) {
            let wire = p.to_bytes().expect("a decoded packet encodes");
            assert_eq!(&wire[..], &data[offset..offset + wire.len()]);
            offset += wire.len();
        }
    }

    /// Feeds `data` in chunks whose sizes come from its first bytes: the
    /// packets and the error, if any, are the same as decoding it whole.
    pub fn chunked(data: &[u8]) {
        let (sizes, body) = data.split_at(data.len().min(8));
        let whole = collect(&mut BytesMut::from(body));
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        let mut rest = body;
        let mut i = 0;
        let mut failed = None;
        while !rest.is_empty() && failed.is_none() {
            let n = (sizes.get(i % sizes.len().max(1)).copied().unwrap_or(1) as usize).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            i += 1;
            loop {
                match codec::decode(&mut buf, &LIMITS) {
                    Ok(Some(p)) => got.push(Ok(p)),
                    Ok(None) => break,
                    Err(e) => {
                        failed = Some(e);
                        got.push(Err(e));
                        break;
                    }
                }
            }
        }
        assert_eq!(got, whole);
    }

    /// Every packet in `buf`, up to and including the first error.
    fn collect(buf: &mut BytesMut) -> Vec<Result<Packet, crate::CodecError>> {
        let mut out = Vec::new();
        loop {
            match codec::decode(buf, &LIMITS) {
                Ok(Some(p)) => out.push(Ok(p)),
                Ok(None) => return out,
                Err(e) => {
                    out.push(Err(e));
                    return out;
                }
            }
        }
    }

    /// Builds a packet from `data`, encodes and decodes it: the same packet.
    pub fn round_trip(data: &[u8]) {
        if data.len() < 8 {
            return;
        }
        let ty = [PacketType::OneWay, PacketType::Request, PacketType::Response][data[0] as usize % 3];
        let mut p = Packet::new(ty, u32::from_be_bytes([data[1], data[2], data[3], data[4]]));
        p.set_biz_type(data[5]);
        p.header.compression =
            [CompressionType::None, CompressionType::Zstd, CompressionType::Zlib][data[6] as usize % 3];
        p.header.reserved = ReservedFlags::from_raw(u16::from(data[7]) << 3 | u16::from(data[7] & 7));
        let rest = &data[8..];
        let split = rest.first().map_or(0, |b| (*b as usize).min(rest.len()));
        p.set_ext_header(rest[..split].to_vec());
        p.set_payload(rest[split..].to_vec());
        let mut buf = p.to_bytes().unwrap();
        let back = codec::decode(&mut buf, &FrameLimits::default()).unwrap().unwrap();
        assert_eq!(back, p);
        assert!(buf.is_empty());
    }

    /// Runs a server session on arbitrary input in arbitrary chunks (first
    /// byte: TCP or WebSocket, then chunk sizes). It must end with a reason
    /// and no panic; on TCP, input made only of whole uncompressed one-way
    /// packets comes back byte for byte, and with compressed ones among
    /// them, packet for packet with the same plain payloads.
    pub fn session(data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let websocket = mode & 1 == 1;
        let (sizes, body) = rest.split_at(rest.len().min(4));
        let mut chunks = Vec::new();
        let mut left = body;
        let mut i = 0;
        while !left.is_empty() {
            let n = (sizes.get(i % sizes.len().max(1)).copied().unwrap_or(16) as usize).clamp(1, left.len());
            chunks.push(left[..n].to_vec());
            left = &left[n..];
            i += 1;
        }
        let out = super::run_session(websocket, chunks, LIMITS.max_payload);
        if !websocket && out.reason == crate::CloseReason::PeerClosed {
            let sent = collect(&mut BytesMut::from(body));
            let all_one_way = sent
                .iter()
                .all(|p| matches!(p, Ok(p) if p.header.packet_type == PacketType::OneWay));
            let plain = |p: &Packet| {
                let mut out = Vec::new();
                crate::compress::decompress(p.header.compression, &p.payload, u32::MAX, &mut out)
                    .expect("the session accepted it");
                (
                    p.header.message_id,
                    p.header.biz_type,
                    p.header.reserved,
                    p.ext_header.clone(),
                    out,
                )
            };
            if all_one_way
                && sent
                    .iter()
                    .flatten()
                    .all(|p| p.header.compression == CompressionType::None)
            {
                assert_eq!(out.written, body);
            } else if all_one_way {
                // Compressed packets are inflated for the echo and deflated
                // again (or not, under the threshold): the bytes may differ.
                let back = collect(&mut BytesMut::from(&out.written[..]));
                assert_eq!(back.len(), sent.len());
                for (a, b) in sent.iter().zip(&back) {
                    assert_eq!(plain(a.as_ref().unwrap()), plain(b.as_ref().unwrap()));
                }
            }
        }
    }
}
