//! Proves the server reassembles frames that arrive in two reads, cut at
//! every byte boundary (the msgtrans 1.0.10 fixtures plus a request with an
//! extension header), and that the codec decodes and encodes every fixture
//! exactly as its `.json` describes.

mod common;

use std::time::Duration;

use bytes::BytesMut;
use common::*;
use msgtrans::packet::{CompressionType, FrameLimits, Packet, PacketType};
use msgtrans_shards::codec;

/// What the inline echo must send back for `frame`: the same bytes for a
/// one-way packet (and for an unmatched response, which is delivered to the
/// handler), the same bytes with the type byte set to Response for a request.
fn expected_reply(frame: &[u8]) -> Vec<u8> {
    let mut r = frame.to_vec();
    if frame[2] == PacketType::Request as u8 {
        r[2] = PacketType::Response as u8;
    }
    r
}

fn request_with_ext_header() -> Vec<u8> {
    let mut p = Packet::request(0x0102_0304, b"question?".to_vec());
    p.set_biz_type(77);
    p.set_ext_header(b"trace=abc".to_vec());
    p.set_priority(true);
    wire(&p)
}

fn all_frames() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<_> = fixtures().into_iter().map(|f| (f.name, f.bin)).collect();
    v.push(("synthesized_request_with_ext_header".into(), request_with_ext_header()));
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_cut_at_every_byte_is_reassembled_and_echoed() {
    cut_frames_echo(builder()).await;
}

/// On the shard ring, a read that continues a partial frame lends the
/// session's own buffer to the kernel instead of taking a provided one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_frame_cut_at_every_byte_is_reassembled_and_echoed_on_the_shard_ring() {
    cut_frames_echo(builder().tcp_ring(true)).await;
}

async fn cut_frames_echo(b: msgtrans::transport::TransportServerBuilder) {
    let server = start_inline_echo(b).await;
    let mut c = RawClient::connect(addr(&server)).await;
    for (name, frame) in all_frames() {
        let want = expected_reply(&frame);
        for cut in 1..frame.len() {
            c.write(&frame[..cut]).await;
            // Let the first part arrive as its own read.
            tokio::time::sleep(Duration::from_millis(3)).await;
            c.write(&frame[cut..]).await;
            let got = c.recv_exact(want.len()).await;
            assert_eq!(got, want, "{name} cut at byte {cut}");
        }
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_frames_reach_the_event_stream_whole() {
    let (server, _events) = start_events_echo(builder()).await;
    let mut c = RawClient::connect(addr(&server)).await;
    // The events path keeps id, type, biz type, ext header and payload
    // (not the flag bits), so compare decoded fields.
    for (name, frame) in all_frames() {
        let mut b = BytesMut::from(&frame[..]);
        let sent = codec::decode(&mut b, &FrameLimits::default()).unwrap().unwrap();
        if sent.header.packet_type == PacketType::Response {
            continue; // an unsolicited response is not echoed by this server
        }
        for cut in 1..frame.len() {
            c.write(&frame[..cut]).await;
            tokio::time::sleep(Duration::from_millis(3)).await;
            c.write(&frame[cut..]).await;
            let got = c.recv().await;
            let want_type = match sent.header.packet_type {
                PacketType::Request => PacketType::Response,
                t => t,
            };
            assert_eq!(got.header.packet_type, want_type, "{name} cut {cut}");
            assert_eq!(got.header.message_id, sent.header.message_id, "{name} cut {cut}");
            assert_eq!(got.header.biz_type, sent.header.biz_type, "{name} cut {cut}");
            assert_eq!(got.ext_header, sent.ext_header, "{name} cut {cut}");
            assert_eq!(got.payload, sent.payload, "{name} cut {cut}");
        }
    }
    server.stop().await;
}

#[test]
fn codec_decodes_every_fixture_to_its_json_fields() {
    for f in fixtures() {
        let mut buf = BytesMut::from(&f.bin[..]);
        let p = codec::decode(&mut buf, &FrameLimits::default())
            .unwrap_or_else(|e| panic!("{}: {e}", f.name))
            .unwrap_or_else(|| panic!("{}: incomplete", f.name));
        assert!(buf.is_empty(), "{}: bytes left after the frame", f.name);
        let h = &p.header;
        assert_eq!(h.version as u64, f.field("version"), "{} version", f.name);
        assert_eq!(h.compression as u64, f.field("compression"), "{} compression", f.name);
        assert_eq!(h.compression, CompressionType::None, "{} compression", f.name);
        assert_eq!(h.packet_type as u64, f.field("packet_type"), "{} packet_type", f.name);
        assert_eq!(h.biz_type as u64, f.field("biz_type"), "{} biz_type", f.name);
        assert_eq!(h.message_id as u64, f.field("message_id"), "{} message_id", f.name);
        assert_eq!(h.reserved.raw() as u64, f.field("reserved"), "{} reserved", f.name);
        assert_eq!(p.ext_header.to_vec(), f.ext_header(), "{} ext header", f.name);
        assert_eq!(p.payload.to_vec(), f.payload(), "{} payload", f.name);
        assert_eq!(
            h.ext_header_len as usize,
            f.ext_header().len(),
            "{} ext_header_len",
            f.name
        );
        assert_eq!(h.payload_len as usize, f.payload().len(), "{} payload_len", f.name);
        let reserved = f.field("reserved") as u16;
        assert_eq!(p.is_fragmented(), reserved & 1 != 0, "{} fragmented", f.name);
        assert_eq!(p.is_high_priority(), reserved & 2 != 0, "{} priority", f.name);
        assert_eq!(p.has_route_tag(), reserved & 4 != 0, "{} route tag", f.name);
    }
}

#[test]
fn a_packet_built_from_each_fixture_json_encodes_to_its_bin() {
    for f in fixtures() {
        let ptype = PacketType::try_from(f.field("packet_type") as u8).unwrap();
        let mut p = Packet::new(ptype, f.field("message_id") as u32);
        p.set_compression(CompressionType::try_from(f.field("compression") as u8).unwrap());
        p.set_biz_type(f.field("biz_type") as u8);
        p.set_ext_header(f.ext_header());
        p.set_payload(f.payload());
        let reserved = f.field("reserved") as u16;
        p.set_fragmented(reserved & 1 != 0);
        p.set_priority(reserved & 2 != 0);
        p.set_route_tag(reserved & 4 != 0);
        assert_eq!(wire(&p), f.bin, "{}", f.name);
    }
}

#[test]
fn codec_needs_more_bytes_at_every_cut_of_every_fixture() {
    for f in fixtures() {
        for cut in 0..f.bin.len() {
            let mut buf = BytesMut::from(&f.bin[..cut]);
            assert_eq!(
                codec::decode(&mut buf, &FrameLimits::default()).unwrap(),
                None,
                "{} cut {cut}",
                f.name
            );
            assert_eq!(&buf[..], &f.bin[..cut], "{} cut {cut}: partial frame consumed", f.name);
            buf.extend_from_slice(&f.bin[cut..]);
            let p = codec::decode(&mut buf, &FrameLimits::default()).unwrap().unwrap();
            assert_eq!(wire(&p), f.bin, "{} cut {cut}", f.name);
        }
    }
}
