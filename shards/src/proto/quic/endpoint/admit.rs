//! A QUIC connection's admission by the application's accept hook: asked
//! once its handshake is done (the hook sees the server name and ALPN),
//! after the endpoint's borrow ends, and answered from a task of its own;
//! a refusal closes the connection with `app_code::REFUSED` and the hook's
//! reason.

use std::rc::Rc;
use std::time::Instant;

use quinn_proto::{Side, VarInt};

use super::conns::mark;
use super::{app_code, tls_info, Conn, Endpoint};
use crate::accept::{ConnectRequest, Verdict};
use crate::shard::Shard;
use crate::stats::Protocol;

impl Endpoint {
    /// Whether a connection whose handshake just finished must wait for
    /// the accept hook; queues the question the first time.
    pub(super) fn must_ask(&self, shard: &Shard, c: &mut Conn, ch: usize) -> bool {
        if c.asked || c.q.side() != Side::Server || !shard.has_accept_hook() {
            return false;
        }
        c.asked = true;
        let request = ConnectRequest {
            peer: c.q.remote_address(),
            local: self.local,
            protocol: Protocol::Quic,
            websocket: None,
            tls: Some(tls_info(&c.q)),
        };
        self.asking.borrow_mut().push((ch, c.gen, request));
        true
    }

    /// Asks the hook about the connections queued by [`Endpoint::must_ask`].
    pub(super) fn ask_hook(self: &Rc<Self>, shard: &Rc<Shard>) {
        let asking = std::mem::take(&mut *self.asking.borrow_mut());
        for (ch, gen, request) in asking {
            let (ep, shard) = (Rc::clone(self), Rc::clone(shard));
            glommio::spawn_local(async move {
                let verdict = shard.ask(|| request).await;
                ep.decided(&shard, ch, gen, verdict);
            })
            .detach();
        }
    }

    /// The hook's answer for connection `ch`: it becomes a session, or it
    /// closes. Nothing, if it ended meanwhile (its handshake deadline).
    fn decided(self: &Rc<Self>, shard: &Rc<Shard>, ch: usize, gen: u64, verdict: Verdict) {
        let mut guard = self.inner.borrow_mut();
        let inner = &mut *guard;
        let Some(c) = inner.conns.get_mut(&ch).filter(|c| c.gen == gen) else {
            return;
        };
        match verdict {
            Verdict::Accept => self.connected(shard, c, ch),
            Verdict::Refuse { reason, .. } => {
                if self.fail_quietly(shard, c) {
                    let code = VarInt::from_u32(app_code::REFUSED);
                    c.q.close(Instant::now(), code, reason.into_bytes().into());
                }
            }
        }
        mark(&mut inner.dirty, c, ch);
        drop(guard);
        self.start_sessions(shard);
        self.wake();
    }
}
