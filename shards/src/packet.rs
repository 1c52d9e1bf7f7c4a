//! The packet model, with MsgTrans 1.0's names and field layout so user code
//! that touches `packet.header.message_id` or `packet.payload` keeps
//! compiling. Payloads are [`Bytes`], so a decoded packet shares the read
//! buffer instead of copying it.

use bytes::{Bytes, BytesMut};

use crate::error::CodecError;

/// What a packet is for. Unknown values are a protocol error here (MsgTrans
/// 1.0 silently mapped them to `OneWay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PacketType {
    /// A message that expects no reply.
    OneWay = 0,
    /// A message that expects exactly one [`PacketType::Response`] with the same id.
    Request = 1,
    /// The reply to a request.
    Response = 2,
}

impl PacketType {
    /// MsgTrans 1.0's alias for [`PacketType::OneWay`].
    #[allow(non_upper_case_globals)]
    pub const Data: PacketType = PacketType::OneWay;
}

impl TryFrom<u8> for PacketType {
    type Error = CodecError;
    fn try_from(v: u8) -> Result<Self, CodecError> {
        match v {
            0 => Ok(Self::OneWay),
            1 => Ok(Self::Request),
            2 => Ok(Self::Response),
            other => Err(CodecError::UnknownPacketType(other)),
        }
    }
}

/// How the payload is compressed. Unknown values are a protocol error here
/// (MsgTrans 1.0 silently treated them as `None`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[repr(u8)]
pub enum CompressionType {
    /// Not compressed.
    #[default]
    None = 0,
    /// zstd.
    Zstd = 1,
    /// zlib.
    Zlib = 2,
}

impl TryFrom<u8> for CompressionType {
    type Error = CodecError;
    fn try_from(v: u8) -> Result<Self, CodecError> {
        match v {
            0 => Ok(Self::None),
            1 => Ok(Self::Zstd),
            2 => Ok(Self::Zlib),
            other => Err(CodecError::UnknownCompression(other)),
        }
    }
}

/// The header's 16-bit flags field.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct ReservedFlags(u16);

impl ReservedFlags {
    const FRAGMENTED: u16 = 0x0001;
    const HIGH_PRIORITY: u16 = 0x0002;
    const ROUTE_TAG: u16 = 0x0004;

    /// No flags set.
    pub fn new() -> Self {
        Self(0)
    }
    /// The raw wire value.
    pub fn raw(&self) -> u16 {
        self.0
    }
    /// Flags from their wire value; unknown bits are kept and passed through.
    pub fn from_raw(v: u16) -> Self {
        Self(v)
    }
    fn with(self, bit: u16, on: bool) -> Self {
        Self(if on { self.0 | bit } else { self.0 & !bit })
    }
    /// Sets or clears the fragmented bit.
    pub fn with_fragmented(self, on: bool) -> Self {
        self.with(Self::FRAGMENTED, on)
    }
    /// Sets or clears the high-priority bit.
    pub fn with_priority(self, on: bool) -> Self {
        self.with(Self::HIGH_PRIORITY, on)
    }
    /// Sets or clears the route-tag bit.
    pub fn with_route_tag(self, on: bool) -> Self {
        self.with(Self::ROUTE_TAG, on)
    }
    /// Whether the fragmented bit is set.
    pub fn is_fragmented(&self) -> bool {
        self.0 & Self::FRAGMENTED != 0
    }
    /// Whether the high-priority bit is set.
    pub fn is_high_priority(&self) -> bool {
        self.0 & Self::HIGH_PRIORITY != 0
    }
    /// Whether the route-tag bit is set.
    pub fn has_route_tag(&self) -> bool {
        self.0 & Self::ROUTE_TAG != 0
    }
}

/// The 16-byte fixed header (DESIGN.md §3).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FixedHeader {
    /// Always 1 on the wire.
    pub version: u8,
    /// Payload compression.
    pub compression: CompressionType,
    /// One-way, request or response.
    pub packet_type: PacketType,
    /// Application-defined, passed through both ways.
    pub biz_type: u8,
    /// Request/response correlation id.
    pub message_id: u32,
    /// Length of the extension header (set by the encoder from the bytes).
    pub ext_header_len: u16,
    /// Length of the payload (set by the encoder from the bytes).
    pub payload_len: u32,
    /// Flags.
    pub reserved: ReservedFlags,
}

impl FixedHeader {
    /// A version-1 header with no compression, biz type 0 and no flags.
    pub fn new(packet_type: PacketType, message_id: u32) -> Self {
        Self {
            version: crate::codec::WIRE_VERSION,
            compression: CompressionType::None,
            packet_type,
            biz_type: 0,
            message_id,
            ext_header_len: 0,
            payload_len: 0,
            reserved: ReservedFlags::new(),
        }
    }
}

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
        crate::codec::encoded_len(self.ext_header.len(), self.payload.len())
    }
    /// Encodes to a fresh buffer.
    pub fn to_bytes(&self) -> Result<BytesMut, CodecError> {
        let mut out = BytesMut::with_capacity(self.wire_len());
        crate::codec::encode(self, &mut out)?;
        Ok(out)
    }
}
