//! Servers and clients.

pub mod client;
mod config;
pub mod options;
pub mod server;

pub use client::{ClientEventStream, TransportClient, TransportClientBuilder};
pub use config::Limits;
pub use options::TransportOptions;
pub use server::{ServerEventStream, TransportServer, TransportServerBuilder};
