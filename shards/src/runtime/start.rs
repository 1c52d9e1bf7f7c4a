//! Starting an engine: a thread per shard, each with its glommio executor
//! pinned to its core, and errors that say which resource is missing when
//! an executor cannot start.

use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::{Arc, Mutex};

use glommio::{LocalExecutorBuilder, Placement};

use super::{usable_cores, Engine};
use crate::accept::AcceptHook;
use crate::config::EngineConfig;
use crate::error::StartError;
use crate::event::{Command, EventSink};
use crate::mesh::{self, Mesh};
use crate::peers::PeerTable;
use crate::pool::buffer::{set_thread_home, BufferPool};
use crate::pool::slab::SlotTable;
use crate::session::handler::InlineHandler;
use crate::session::SessionCtx;
use crate::shard::{self, Shard};
use crate::stats::ShardStats;
/// Maps an executor start failure to an error that says what to do.
fn classify(shard: usize, e: glommio::GlommioError<()>) -> StartError {
    // glommio checks RLIMIT_MEMLOCK itself before it makes a ring, and
    // refuses below 512 KiB whatever the process's privileges. Its executor
    // hands that on as an io::Error whose text is all that is left of it.
    if let glommio::GlommioError::ReactorError(glommio::ReactorErrorKind::MemLockLimit(have, need)) = e {
        return memlock_too_low(have, need);
    }
    let io: std::io::Error = e.into();
    if let Some((have, need)) = io
        .to_string()
        .strip_prefix("MemLockLimit(")
        .and_then(|r| r.strip_suffix(')'))
        .and_then(|r| r.split_once('/'))
    {
        return memlock_too_low(have, need);
    }
    match io.raw_os_error() {
        Some(libc::ENOMEM) | Some(libc::EAGAIN) => StartError::LockedMemory(io),
        Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EACCES) => StartError::IoUringUnavailable(io),
        _ => shard::start_error(shard, io),
    }
}

fn memlock_too_low(have: impl std::fmt::Display, need: impl std::fmt::Display) -> StartError {
    StartError::LockedMemory(std::io::Error::other(format!(
        "RLIMIT_MEMLOCK is {have} bytes, glommio needs at least {need}"
    )))
}

impl Engine {
    /// Starts the shards. Each reports whether its executor came up before
    /// this returns, so a missing io_uring or memlock limit is an error here,
    /// never a panic on a shard thread.
    pub async fn start(
        cfg: EngineConfig,
        handler: Option<Arc<dyn InlineHandler>>,
        sink: EventSink,
    ) -> Result<Engine, StartError> {
        Self::start_with_accept_hook(cfg, handler, None, sink).await
    }

    /// [`Engine::start`], with an accept hook that decides who may connect
    /// (see [`crate::accept`]).
    pub async fn start_with_accept_hook(
        cfg: EngineConfig,
        handler: Option<Arc<dyn InlineHandler>>,
        accept_hook: Option<Arc<dyn AcceptHook>>,
        sink: EventSink,
    ) -> Result<Engine, StartError> {
        let n = if cfg.shards == 0 { usable_cores() } else { cfg.shards };
        if n == 0 || n > crate::id::MAX_SHARDS {
            return Err(StartError::InvalidShardCount(n));
        }
        let per_shard = cfg.max_connections_per_shard.unwrap_or(cfg.max_connections).max(1);
        let cfg = Arc::new(cfg);
        let (outboxes, inboxes): (Vec<_>, Vec<_>) = (0..n).map(|_| mesh::inbox::<Command>()).unzip();
        let mesh = Arc::new(Mesh {
            outboxes,
            tables: (0..n).map(|_| SlotTable::new(per_shard)).collect(),
            open_total: AtomicUsize::new(0),
            peers: PeerTable::new(cfg.max_connections_per_ip, cfg.max_connects_per_ip_per_sec),
            secret: Default::default(),
            node: cfg.node,
            uplink: Default::default(),
        });
        let cores = core_affinity::get_core_ids().unwrap_or_default();
        let stats: Vec<_> = (0..n).map(|_| Arc::new(ShardStats::new(n))).collect();
        let pools: Vec<_> = (0..n).map(|i| BufferPool::new(i, cfg.pool)).collect();
        let mut ready = Vec::with_capacity(n);
        let mut exits = Vec::with_capacity(n);
        for (i, inbox) in inboxes.into_iter().enumerate() {
            let placement = match cores.get(i % cores.len().max(1)) {
                Some(c) if cfg.pin => Placement::Fixed(c.id),
                _ => Placement::Unbound,
            };
            let (ready_tx, ready_rx) = flume::bounded(1);
            let (exit_tx, exit_rx) = flume::bounded::<()>(1);
            let (cfg2, mesh2, sink2, handler2) = (Arc::clone(&cfg), Arc::clone(&mesh), sink.clone(), handler.clone());
            let hook2 = accept_hook.clone();
            let (stats2, pool2) = (Arc::clone(&stats[i]), Arc::clone(&pools[i]));
            std::thread::Builder::new()
                .name(format!("{}-{i}", cfg.name))
                .spawn(move || {
                    let ex = match LocalExecutorBuilder::new(placement).io_memory(cfg2.io_memory).make() {
                        Ok(ex) => ex,
                        Err(e) => {
                            let _ = ready_tx.send(Err(classify(i, e)));
                            return;
                        }
                    };
                    set_thread_home(i);
                    // Entered for the thread's whole life, so every event a
                    // shard logs says which shard. One span per shard, so it
                    // can be at info level at no per-message cost.
                    let _span = tracing::info_span!("shard", shard = i).entered();
                    let _ = ready_tx.send(Ok(()));
                    let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        ex.run(async move {
                            let ctx = SessionCtx::new(i, cfg2, pool2, mesh2, sink2, stats2);
                            let shard = Shard::new(ctx, handler2, hook2);
                            crate::ring::start(&shard);
                            crate::epoll::start(&shard);
                            shard::run(shard, inbox).await;
                        })
                    }));
                    if ran.is_err() {
                        // A panic (an inline handler's, or ours) unwound
                        // out of the shard: its sessions, tables and inbox
                        // are gone with it, while other shards, clients
                        // and `stop()` still count on it. Going on would
                        // leave a half-alive server, so stop loudly.
                        shard::panicked(i);
                    }
                    // The ring goes first, so every socket it held is
                    // released before `stop()` is told the shard is gone.
                    drop(ex);
                    drop(exit_tx);
                })
                .map_err(|e| shard::start_error(i, e))?;
            ready.push(ready_rx);
            exits.push(exit_rx);
        }
        let engine = Engine {
            mesh,
            stats,
            pools,
            exits: Mutex::new(exits),
            stopped: AtomicBool::new(false),
            cfg,
            #[cfg(feature = "quic")]
            quic_listeners: Mutex::new(0),
        };
        for r in ready {
            match r.recv_async().await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    engine.stop().await;
                    return Err(e);
                }
                Err(_) => {
                    engine.stop().await;
                    return Err(StartError::Stopped);
                }
            }
        }
        Ok(engine)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn os(code: i32) -> glommio::GlommioError<()> {
        glommio::GlommioError::IoError(std::io::Error::from_raw_os_error(code))
    }

    #[test]
    fn startup_errors_say_which_resource_is_missing() {
        assert!(matches!(classify(0, os(libc::ENOMEM)), StartError::LockedMemory(_)));
        assert!(matches!(
            classify(0, os(libc::ENOSYS)),
            StartError::IoUringUnavailable(_)
        ));
        assert!(matches!(
            classify(0, os(libc::EPERM)),
            StartError::IoUringUnavailable(_)
        ));
        assert!(matches!(
            classify(3, os(libc::EBADF)),
            StartError::Shard { shard: 3, .. }
        ));
        let msg = classify(0, os(libc::ENOMEM)).to_string();
        assert!(msg.contains("ulimit -l"), "{msg}");
        let msg = classify(0, os(libc::ENOSYS)).to_string();
        assert!(msg.contains("io_uring_disabled"), "{msg}");
        // glommio's own check of the limit, before any syscall fails.
        let low = glommio::GlommioError::ReactorError(glommio::ReactorErrorKind::MemLockLimit(65536, 524288));
        let e = classify(0, low);
        assert!(matches!(e, StartError::LockedMemory(_)), "{e:?}");
        let msg = e.to_string();
        assert!(msg.contains("ulimit -l") && msg.contains("65536"), "{msg}");
        // The same check as the executor reports it (compat/dependent/run.sh
        // meets it for real, as an unprivileged user).
        let low = glommio::GlommioError::IoError(std::io::Error::other("MemLockLimit(65536/524288)"));
        let msg = classify(0, low).to_string();
        assert!(msg.contains("ulimit -l") && msg.contains("524288"), "{msg}");
    }
}
