//! The loop that serves a shard's inbox, in batches, until a stop.

use std::rc::Rc;
use std::sync::Arc;

use super::Shard;
use crate::error::StartError;
use crate::event::Command;
use crate::mesh::Inbox;

/// Inbox messages handled per batch before the shard lets sessions run.
const INBOX_BATCH: usize = 256;

/// Runs a shard until it is told to stop. Drivers that keep state per
/// shard (the shard ring) are started by the caller beforehand.
pub(crate) async fn run(shard: Rc<Shard>, inbox: Inbox<Command>) {
    glommio::spawn_local(Rc::clone(&shard).sweep_requests()).detach();
    glommio::spawn_local(Rc::clone(&shard).sweep_idle()).detach();
    glommio::spawn_local(Rc::clone(&shard.pump).run(shard.index, Arc::clone(&shard.stats))).detach();
    glommio::spawn_local(Rc::clone(&shard.turn_bell).run()).detach();
    let mut batch = Vec::with_capacity(INBOX_BATCH);
    while inbox.recv_batch(&mut batch, INBOX_BATCH).await {
        let mut stop_reply = None;
        for cmd in batch.drain(..) {
            match cmd {
                Command::Stop { drain_until, reply } => {
                    // Let the shard close its sessions first, then answer.
                    let (tx, rx) = flume::bounded(1);
                    shard.handle(Command::Stop { drain_until, reply: tx });
                    stop_reply = Some((reply, rx));
                }
                cmd => shard.handle(cmd),
            }
        }
        shard.flush_outgoing();
        if let Some((reply, done)) = stop_reply {
            let _ = done.recv_async().await;
            // Every session is gone: the drivers release the sockets and
            // buffers they still hold (QUIC endpoints, the shard ring)
            // before `stop()` is told the shard is done (the executor does
            // not drop tasks that never finish, so their own Drop may
            // never run).
            shard.drivers.shutdown();
            let _ = reply.send(());
            return;
        }
    }
}

pub(crate) fn start_error(shard: usize, e: std::io::Error) -> StartError {
    StartError::Shard { shard, source: e }
}

/// A panic unwound out of shard `shard`'s executor (the panic hook has
/// already printed it): the process stops, with the reason on stderr.
///
/// Catching a handler's panic per session and going on was the other
/// choice. It would run every later message on a shard whose state the
/// panic may have left half-updated (a session's batch, its pending
/// requests, the pool), and keep running a server whose bug nobody
/// fixes; an application that wants to survive its own handler's panics
/// can catch them inside the handler, where it knows what is safe.
pub(crate) fn panicked(shard: usize) -> ! {
    eprintln!(
        "msgtrans: shard {shard} panicked (see above); a shard cannot go on half alive, so the process stops \
         (catch panics inside your handler to keep a session's bug from stopping the server)"
    );
    std::process::abort()
}
