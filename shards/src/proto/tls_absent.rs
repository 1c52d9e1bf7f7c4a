//! TLS when the crate is built without its `tls` feature: the types exist
//! so that the plain paths keep one shape, but nothing can make a value of
//! them, so every `Option` of them is `None` and these functions are never
//! called.

use std::net::SocketAddr;
use std::time::Duration;

use crate::error::StartError;

/// TLS for a listener: not built (the `tls` feature is off).
#[derive(Debug, Clone)]
pub enum ServerTls {}

/// TLS for an outgoing connection: not built (the `tls` feature is off).
#[derive(Debug, Clone)]
pub enum ClientTls {}

pub(crate) async fn accept<S>(tls: &ServerTls, _stream: S, _timeout: Duration) -> Option<S> {
    match *tls {}
}

pub(crate) fn server_info<S>(_stream: &S) -> crate::accept::TlsInfo {
    crate::accept::TlsInfo::default()
}

pub(crate) async fn connect<S>(
    tls: &ClientTls,
    _stream: S,
    _addr: SocketAddr,
    _timeout: Duration,
) -> Result<S, StartError> {
    match *tls {}
}
