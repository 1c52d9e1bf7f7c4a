//! Per-send options (MsgTrans 1.0's `TransportOptions`): timeout, biz type,
//! extension header, compression and message id for one send or request,
//! and the server's `send_with_options` / `request_with_options`. The
//! client's are in `client.rs`.

use std::time::Duration;

use bytes::Bytes;
use msgtrans_shards::{CompressionType, Packet};

use super::server::TransportServer;
use crate::error::Result;
use crate::event::TransportResult;
use crate::SessionId;

/// Options for one `send_with_options` or `request_with_options`, on the
/// client or the server. Every field left `None` takes its default.
#[derive(Debug, Clone, Default)]
pub struct TransportOptions {
    /// Request timeout (default: the one the server or client was built with).
    pub timeout: Option<Duration>,
    /// Compress the payload with zstd or zlib (default: none). Payloads
    /// under the compression threshold (default 256 bytes) are sent as they
    /// are, and so are payloads that would not shrink. A response to a
    /// compressed request is compressed the same way.
    pub compression: Option<CompressionType>,
    /// Business type (default 0). A response keeps its request's.
    pub biz_type: Option<u8>,
    /// Extension header (default none). A response keeps its request's.
    pub ext_header: Option<Bytes>,
    /// Message id of a one-way send (default: the next id). Requests always
    /// get a fresh id so that two in flight never share one.
    pub message_id: Option<u32>,
}

impl TransportOptions {
    /// No options set.
    pub fn new() -> Self {
        Self::default()
    }
    /// Sets the timeout.
    pub fn with_timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Sets the compression.
    pub fn with_compression(mut self, c: CompressionType) -> Self {
        self.compression = Some(c);
        self
    }
    /// Sets the business type.
    pub fn with_biz_type(mut self, b: u8) -> Self {
        self.biz_type = Some(b);
        self
    }
    /// Sets the extension header.
    pub fn with_ext_header(mut self, e: impl Into<Bytes>) -> Self {
        self.ext_header = Some(e.into());
        self
    }
    /// Sets the message id of a one-way send.
    pub fn with_message_id(mut self, id: u32) -> Self {
        self.message_id = Some(id);
        self
    }
    /// Writes the packet-level options into `p`.
    pub(crate) fn apply(&self, p: &mut Packet) {
        if let Some(b) = self.biz_type {
            p.set_biz_type(b);
        }
        if let Some(e) = &self.ext_header {
            p.set_ext_header(e.clone());
        }
        p.set_compression(self.compression.unwrap_or_default());
    }
}

impl TransportServer {
    /// Sends `data` to `session_id` as a one-way packet with `options`
    /// (biz type, extension header, compression, message id). Returns like
    /// [`TransportServer::send`]: once the packet is queued on an open
    /// session, waiting for room up to the send timeout.
    pub async fn send_with_options(
        &self,
        session_id: SessionId,
        data: Bytes,
        options: TransportOptions,
    ) -> Result<TransportResult> {
        let id = options.message_id.unwrap_or_else(|| self.next_id());
        let mut p = Packet::one_way(id, data);
        options.apply(&mut p);
        self.send_to_session(session_id, p).await?;
        Ok(TransportResult::sent(session_id, id))
    }

    /// Sends `data` to `session_id` as a request with `options` and returns
    /// the response's payload, decompressed. `options.timeout` replaces the
    /// server's request timeout for this request; `message_id` is ignored
    /// (the session assigns request ids).
    pub async fn request_with_options(
        &self,
        session_id: SessionId,
        data: Bytes,
        options: TransportOptions,
    ) -> Result<Bytes> {
        let mut p = Packet::request(0, data);
        options.apply(&mut p);
        let timeout = options.timeout.unwrap_or_else(|| self.request_timeout());
        Ok(self.request_packet(session_id, p, timeout).await?.payload)
    }
}
