//! Transport pipelines. Each turns a byte stream (or datagrams) into
//! sessions driven by `session::Driver`.
//!
//! Plain TCP is always built; the others follow the crate's features.
//! `tls` is always present: without the `tls` feature its types are
//! uninhabited, so an `Option<ServerTls>` can only be `None` and the plain
//! paths need no feature gates of their own.

pub(crate) mod drive;
#[cfg(feature = "quic")]
pub mod quic;
pub(crate) mod socket;
pub mod tcp;
#[cfg_attr(not(feature = "tls"), path = "tls_absent.rs")]
pub mod tls;
#[cfg(feature = "websocket")]
pub mod ws;

#[cfg(any(feature = "tls", feature = "websocket"))]
pub(crate) use crate::timeout::within;
