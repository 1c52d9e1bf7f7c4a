//! Transport pipelines. Each turns a byte stream (or datagrams) into
//! sessions driven by `session::Driver`.
//!
//! Plain TCP is always built; the others follow the crate's features.
//! `tls` is always present: without the `tls` feature its types are
//! uninhabited, so an `Option<ServerTls>` can only be `None` and the plain
//! paths need no feature gates of their own.

#[cfg(feature = "quic")]
pub mod quic;
pub mod tcp;
#[cfg_attr(not(feature = "tls"), path = "tls_absent.rs")]
pub mod tls;
#[cfg(feature = "websocket")]
pub mod ws;

/// Runs `fut` for at most `timeout`; `None` if it ran out.
#[cfg(any(feature = "tls", feature = "websocket"))]
pub(crate) async fn within<T>(timeout: std::time::Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let expire = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    futures_lite::future::or(async { Some(fut.await) }, expire).await
}
