//! How an admitted session runs on its stream once its handshakes are
//! done. Its own module so that the protocols which hand sessions over
//! (TCP, TLS, WebSocket) all depend on it and not on one another.

use std::rc::Rc;

use futures_lite::{AsyncRead, AsyncWrite};

use crate::session::SessionState;
use crate::session_io::Stream;
use crate::shard::{Opening, Shard};

/// Runs an admitted session over `stream` (a TCP or TLS stream) until it
/// ends. `initial` holds bytes already read from the stream (after a
/// handshake).
pub(crate) fn drive<S>(shard: &Rc<Shard>, st: Rc<SessionState>, stream: S, initial: &[u8], opening: Opening)
where
    S: AsyncRead + AsyncWrite + Unpin + 'static,
{
    shard.start_session(st, Stream(stream), initial, opening, |_| {})
}

/// A stream a session can run on (`initial`: bytes a handshake read past
/// its end). A plain socket, under plain TCP or WebSocket framing, moves
/// onto the shard's ring when the shard has one (its impl is in `tcp`); a
/// stream layered on it (TLS) stays a stream.
pub(crate) trait Drive: AsyncRead + AsyncWrite + Unpin + Sized + 'static {
    fn drive(self, shard: &Rc<Shard>, st: Rc<SessionState>, initial: &[u8], opening: Opening) {
        drive(shard, st, self, initial, opening)
    }
}
