//! Transport pipelines. Each turns a byte stream (or datagrams) into
//! sessions driven by `session::Driver`.

pub mod quic;
pub mod tcp;
pub mod tls;
pub mod ws;
