//! The packet model, with MsgTrans 1.0's names and field layout so user code
//! that touches `packet.header.message_id` or `packet.payload` keeps
//! compiling. Payloads are [`Bytes`], so a decoded packet shares the read
//! buffer instead of copying it.

use bytes::{Bytes, BytesMut};

pub use crate::header::{CompressionType, FixedHeader, PacketType, ReservedFlags};

/// Byte containers a payload or extension header can be built from: the
/// ones MsgTrans 1.0's `impl Into<Vec<u8>>` took, plus [`Bytes`] without a copy.
pub trait IntoPayload {
    /// Converts into [`Bytes`], copying only borrowed slices.
    fn into_payload(self) -> Bytes;
}

impl IntoPayload for Bytes {
    fn into_payload(self) -> Bytes {
        self
    }
}
impl IntoPayload for BytesMut {
    fn into_payload(self) -> Bytes {
        self.freeze()
    }
}
impl IntoPayload for Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}
impl IntoPayload for String {
    fn into_payload(self) -> Bytes {
        Bytes::from(self)
    }
}
impl IntoPayload for &[u8] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl<const N: usize> IntoPayload for &[u8; N] {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl IntoPayload for &str {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}
impl IntoPayload for &Vec<u8> {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self)
    }
}
impl IntoPayload for &String {
    fn into_payload(self) -> Bytes {
        Bytes::copy_from_slice(self.as_bytes())
    }
}

/// One MsgTrans packet: header, extension header, payload.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Packet {
    /// The fixed header. Its length fields are recomputed when encoding.
    pub header: FixedHeader,
    /// Extension header bytes.
    pub ext_header: Bytes,
    /// Payload bytes.
    pub payload: Bytes,
}

impl Packet {
    /// An empty packet of the given type.
    pub fn new(packet_type: PacketType, message_id: u32) -> Self {
        Self {
            header: FixedHeader::new(packet_type, message_id),
            ext_header: Bytes::new(),
            payload: Bytes::new(),
        }
    }
    /// A one-way packet.
    pub fn one_way(message_id: u32, payload: impl IntoPayload) -> Self {
        Self::new(PacketType::OneWay, message_id).with_payload(payload)
    }
    /// A request packet.
    pub fn request(message_id: u32, payload: impl IntoPayload) -> Self {
        Self::new(PacketType::Request, message_id).with_payload(payload)
    }
    /// A response packet.
    pub fn response(message_id: u32, payload: impl IntoPayload) -> Self {
        Self::new(PacketType::Response, message_id).with_payload(payload)
    }
    fn with_payload(mut self, payload: impl IntoPayload) -> Self {
        self.set_payload(payload);
        self
    }
    /// Replaces the payload.
    pub fn set_payload(&mut self, payload: impl IntoPayload) {
        self.payload = payload.into_payload();
        self.header.payload_len = self.payload.len() as u32;
    }
    /// Replaces the extension header.
    pub fn set_ext_header(&mut self, ext: impl IntoPayload) {
        self.ext_header = ext.into_payload();
        self.header.ext_header_len = self.ext_header.len() as u16;
    }
    /// Sets the message id.
    pub fn set_message_id(&mut self, id: u32) {
        self.header.message_id = id;
    }
    /// Sets the packet type.
    pub fn set_packet_type(&mut self, t: PacketType) {
        self.header.packet_type = t;
    }
    /// Sets the compression byte.
    pub fn set_compression(&mut self, c: CompressionType) {
        self.header.compression = c;
    }
    /// Sets the business type.
    pub fn set_biz_type(&mut self, biz: u8) {
        self.header.biz_type = biz;
    }
    /// Sets or clears the fragmented flag.
    pub fn set_fragmented(&mut self, on: bool) {
        self.header.reserved = self.header.reserved.with_fragmented(on);
    }
    /// Sets or clears the high-priority flag.
    pub fn set_priority(&mut self, on: bool) {
        self.header.reserved = self.header.reserved.with_priority(on);
    }
    /// Sets or clears the route-tag flag.
    pub fn set_route_tag(&mut self, on: bool) {
        self.header.reserved = self.header.reserved.with_route_tag(on);
    }
    /// The message id.
    pub fn message_id(&self) -> u32 {
        self.header.message_id
    }
    /// The packet type.
    pub fn packet_type(&self) -> PacketType {
        self.header.packet_type
    }
    /// The business type.
    pub fn biz_type(&self) -> u8 {
        self.header.biz_type
    }
    /// The compression byte.
    pub fn compression(&self) -> CompressionType {
        self.header.compression
    }
    /// Whether the fragmented flag is set.
    pub fn is_fragmented(&self) -> bool {
        self.header.reserved.is_fragmented()
    }
    /// Whether the high-priority flag is set.
    pub fn is_high_priority(&self) -> bool {
        self.header.reserved.is_high_priority()
    }
    /// Whether the route-tag flag is set.
    pub fn has_route_tag(&self) -> bool {
        self.header.reserved.has_route_tag()
    }
    /// The payload as UTF-8, if it is.
    pub fn payload_as_string(&self) -> Option<String> {
        std::str::from_utf8(&self.payload).ok().map(str::to_owned)
    }
    /// The encoded size on the wire.
    pub fn wire_len(&self) -> usize {
        crate::header::HEADER_LEN + self.ext_header.len() + self.payload.len()
    }
}
