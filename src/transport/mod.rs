//! Servers and clients.

pub mod client;
mod client_events;
mod config;
pub mod options;
mod pool;
mod reconnect;
mod retry;
pub mod server;
mod shared;

pub use client::{ClientEventStream, RetryConfig, TransportClient, TransportClientBuilder};
pub use config::Limits;
pub use options::TransportOptions;
pub use pool::DEFAULT_POOL_SIZE;
pub use retry::{DEFAULT_BACKOFF_MULTIPLIER, DEFAULT_INITIAL_DELAY, DEFAULT_MAX_DELAY, DEFAULT_MAX_RETRIES};
pub use server::{ServerEventStream, TransportServer, TransportServerBuilder};
