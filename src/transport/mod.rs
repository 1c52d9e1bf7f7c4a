//! Servers and clients.

pub mod client;
mod config;
pub mod server;

pub use client::{ClientEventStream, TransportClient, TransportClientBuilder, TransportOptions};
pub use config::Limits;
pub use server::{ServerEventStream, TransportServer, TransportServerBuilder};
