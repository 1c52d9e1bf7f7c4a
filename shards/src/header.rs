//! The 16-byte header every MsgTrans packet starts with (DESIGN.md §3):
//! its fields and their value types. The bottom of the crate: it uses
//! nothing else here.

/// Size of the fixed header that starts every packet.
pub const HEADER_LEN: usize = 16;
/// The only wire version this crate speaks (MsgTrans 1.0 and 2.0 both use 1).
pub const WIRE_VERSION: u8 = 1;

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
            version: WIRE_VERSION,
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
