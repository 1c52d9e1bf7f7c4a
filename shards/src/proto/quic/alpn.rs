//! One QUIC port for MsgTrans 2.0 clients (ALPN `msgtrans/1`) and 1.0
//! clients (no ALPN). rustls in QUIC mode refuses a client that offers no
//! ALPN when the server has ALPN configured, and the server must configure
//! it for 2.0 clients (RFC 9001 §8.1), so neither config serves both. The
//! session here waits for the ClientHello, reads whether it offers ALPN,
//! and only then lets the fitting rustls config take over. A client that
//! offers only other protocols (`h3`) meets the ALPN config, which refuses
//! it with `no_application_protocol`.

use std::any::Any;
use std::sync::Arc;

use quinn_proto::crypto::{
    self, ExportKeyingMaterialError, KeyPair, Keys, PacketKey, ServerConfig as _, UnsupportedVersion,
};
use quinn_proto::transport_parameters::TransportParameters;
use quinn_proto::{ConnectionId, Side, TransportError};

/// The ALPN MsgTrans 2.0 negotiates.
pub const ALPN: &[u8] = b"msgtrans/1";

/// A server crypto config that picks its rustls config by the ClientHello.
pub(crate) struct AlpnSwitch {
    /// For clients that offer ALPN.
    pub with_alpn: Arc<quinn_proto::crypto::rustls::QuicServerConfig>,
    /// For clients that offer none (MsgTrans 1.0).
    pub without: Arc<quinn_proto::crypto::rustls::QuicServerConfig>,
}

impl crypto::ServerConfig for AlpnSwitch {
    fn initial_keys(&self, version: u32, dst_cid: &ConnectionId) -> Result<Keys, UnsupportedVersion> {
        self.with_alpn.initial_keys(version, dst_cid)
    }

    fn retry_tag(&self, version: u32, orig_dst_cid: &ConnectionId, packet: &[u8]) -> [u8; 16] {
        self.with_alpn.retry_tag(version, orig_dst_cid, packet)
    }

    fn start_session(self: Arc<Self>, version: u32, params: &TransportParameters) -> Box<dyn crypto::Session> {
        // Initial keys depend on the CID and version only, so the ALPN
        // session can answer for both until the ClientHello decides.
        let inner = Arc::clone(&self.with_alpn).start_session(version, params);
        Box::new(Switching {
            cfg: self,
            version,
            params: *params,
            hello: Vec::new(),
            decided: false,
            inner,
        })
    }
}

struct Switching {
    cfg: Arc<AlpnSwitch>,
    version: u32,
    params: TransportParameters,
    /// ClientHello bytes gathered until the message is whole.
    hello: Vec<u8>,
    decided: bool,
    inner: Box<dyn crypto::Session>,
}

/// Whether a whole ClientHello handshake message offers ALPN.
/// `None`: `msg` does not hold a whole, well-formed ClientHello yet.
fn offers_alpn(msg: &[u8]) -> Option<bool> {
    struct R<'a>(&'a [u8]);
    impl<'a> R<'a> {
        fn take(&mut self, n: usize) -> Option<&'a [u8]> {
            let (a, b) = (self.0.get(..n)?, self.0.get(n..)?);
            self.0 = b;
            Some(a)
        }
        fn u8(&mut self) -> Option<usize> {
            self.take(1).map(|b| b[0] as usize)
        }
        fn u16(&mut self) -> Option<usize> {
            self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]) as usize)
        }
    }
    let mut r = R(msg);
    // Handshake header: type 1 (client_hello), u24 length.
    if r.u8()? != 1 {
        return Some(false);
    }
    let len = r.take(3)?;
    let len = (len[0] as usize) << 16 | (len[1] as usize) << 8 | len[2] as usize;
    let mut r = R(r.take(len)?);
    r.take(2 + 32)?; // legacy_version, random
    let n = r.u8()?;
    r.take(n)?; // legacy_session_id
    let n = r.u16()?;
    r.take(n)?; // cipher_suites
    let n = r.u8()?;
    r.take(n)?; // legacy_compression_methods
    let n = r.u16()?;
    let mut ext = R(r.take(n)?);
    while !ext.0.is_empty() {
        let kind = ext.u16()?;
        let n = ext.u16()?;
        ext.take(n)?;
        if kind == 16 {
            return Some(true);
        }
    }
    Some(false)
}

impl crypto::Session for Switching {
    fn initial_keys(&self, dst_cid: &ConnectionId, side: Side) -> Keys {
        self.inner.initial_keys(dst_cid, side)
    }
    fn handshake_data(&self) -> Option<Box<dyn Any>> {
        self.inner.handshake_data()
    }
    fn peer_identity(&self) -> Option<Box<dyn Any>> {
        self.inner.peer_identity()
    }
    fn early_crypto(&self) -> Option<(Box<dyn crypto::HeaderKey>, Box<dyn PacketKey>)> {
        self.inner.early_crypto()
    }
    fn early_data_accepted(&self) -> Option<bool> {
        self.inner.early_data_accepted()
    }
    fn is_handshaking(&self) -> bool {
        self.inner.is_handshaking()
    }
    fn read_handshake(&mut self, buf: &[u8]) -> Result<bool, TransportError> {
        if self.decided {
            return self.inner.read_handshake(buf);
        }
        self.hello.extend_from_slice(buf);
        let alpn = match offers_alpn(&self.hello) {
            Some(a) => a,
            // A ClientHello larger than any real one: let rustls judge it.
            None if self.hello.len() > 64 * 1024 => true,
            None => return Ok(false),
        };
        self.decided = true;
        if !alpn {
            self.inner = Arc::clone(&self.cfg.without).start_session(self.version, &self.params);
        }
        let hello = std::mem::take(&mut self.hello);
        self.inner.read_handshake(&hello)
    }
    fn transport_parameters(&self) -> Result<Option<TransportParameters>, TransportError> {
        self.inner.transport_parameters()
    }
    fn write_handshake(&mut self, buf: &mut Vec<u8>) -> Option<Keys> {
        if !self.decided {
            return None;
        }
        self.inner.write_handshake(buf)
    }
    fn next_1rtt_keys(&mut self) -> Option<KeyPair<Box<dyn PacketKey>>> {
        self.inner.next_1rtt_keys()
    }
    fn is_valid_retry(&self, orig_dst_cid: &ConnectionId, header: &[u8], payload: &[u8]) -> bool {
        self.inner.is_valid_retry(orig_dst_cid, header, payload)
    }
    fn export_keying_material(
        &self,
        output: &mut [u8],
        label: &[u8],
        context: &[u8],
    ) -> Result<(), ExportKeyingMaterialError> {
        self.inner.export_keying_material(output, label, context)
    }
}

#[cfg(test)]
mod tests {
    use super::offers_alpn;

    fn hello(exts: &[(u16, &[u8])]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[0; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one suite
        body.extend_from_slice(&[1, 0]); // null compression
        let mut e = Vec::new();
        for (kind, data) in exts {
            e.extend_from_slice(&kind.to_be_bytes());
            e.extend_from_slice(&(data.len() as u16).to_be_bytes());
            e.extend_from_slice(data);
        }
        body.extend_from_slice(&(e.len() as u16).to_be_bytes());
        body.extend_from_slice(&e);
        let mut msg = vec![1];
        msg.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
        msg.extend_from_slice(&body);
        msg
    }

    #[test]
    fn reads_alpn_from_a_whole_client_hello_only() {
        let with = hello(&[(0, b"x"), (16, b"\x00\x0b\x0amsgtrans/1")]);
        let without = hello(&[(0, b"x"), (43, b"\x02\x03\x04")]);
        assert_eq!(offers_alpn(&with), Some(true));
        assert_eq!(offers_alpn(&without), Some(false));
        for cut in 0..with.len() {
            assert_eq!(offers_alpn(&with[..cut]), None, "cut at {cut}");
        }
    }
}
