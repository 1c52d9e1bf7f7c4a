//! The server: builder, handle and event stream.

mod builder;
mod events;
mod handle;

pub use builder::TransportServerBuilder;
pub use events::ServerEventStream;
pub use handle::TransportServer;
