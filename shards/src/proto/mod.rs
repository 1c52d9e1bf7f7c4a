//! Transport pipelines. Each turns a byte stream (or datagrams) into
//! sessions driven by [`crate::session::Driver`].

pub mod tcp;
