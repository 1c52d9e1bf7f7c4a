//! A deadline for any future on a shard.

use std::time::Duration;

/// Runs `fut` for at most `timeout`; `None` if it ran out.
pub(crate) async fn within<T>(timeout: Duration, fut: impl std::future::Future<Output = T>) -> Option<T> {
    let expire = async {
        glommio::timer::sleep(timeout).await;
        None
    };
    futures_lite::future::or(async { Some(fut.await) }, expire).await
}
