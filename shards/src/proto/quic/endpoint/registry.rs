//! A shard's QUIC endpoints, kept in its driver registry: one per QUIC
//! listener (by the listener's index, the same on every shard) and the
//! client endpoints (IPv4, IPv6), made on first connect. Listening,
//! connecting and relayed datagrams reach them through here.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use super::{ConnectReply, Endpoint, Relayed};
use crate::error::StartError;
use crate::proto::quic::ServerSide;
use crate::shard::{DriverState, Shard};

#[derive(Default)]
pub(crate) struct QuicEndpoints {
    listeners: RefCell<Vec<Rc<Endpoint>>>,
    clients: RefCell<[Option<Rc<Endpoint>>; 2]>,
}

impl DriverState for QuicEndpoints {
    /// A connection still closing (its last bytes not yet acknowledged):
    /// a stop waits for it, within its grace period.
    fn busy(&self) -> bool {
        let clients = self.clients.borrow();
        self.listeners
            .borrow()
            .iter()
            .chain(clients.iter().flatten())
            .any(|e| e.busy())
    }

    /// Ends every endpoint, closing their sockets.
    fn shutdown(&self) {
        let clients = std::mem::take(&mut *self.clients.borrow_mut());
        for e in self
            .listeners
            .borrow_mut()
            .drain(..)
            .chain(clients.into_iter().flatten())
        {
            e.shutdown();
        }
    }
}

impl QuicEndpoints {
    fn of(shard: &Shard) -> Rc<Self> {
        shard.drivers.get_or_insert_with(Self::default)
    }

    /// Serves QUIC listener `index` on this shard's socket of it.
    pub(crate) fn listen(shard: &Rc<Shard>, socket: std::net::UdpSocket, index: usize, side: ServerSide) {
        match Endpoint::server(shard, index, socket, side) {
            Ok(e) => {
                glommio::spawn_local(Rc::clone(&e).run(Rc::clone(shard))).detach();
                let this = Self::of(shard);
                let mut listeners = this.listeners.borrow_mut();
                debug_assert_eq!(listeners.len(), index, "listeners arrive in order");
                listeners.push(e);
            }
            Err(e) => tracing::warn!(shard = shard.index, error = %e, "QUIC listener failed"),
        }
    }

    /// Opens an outgoing connection from this shard's client endpoint.
    pub(crate) fn connect(
        shard: &Rc<Shard>,
        addr: SocketAddr,
        timeout: Duration,
        config: quinn_proto::ClientConfig,
        server_name: &str,
        reply: ConnectReply,
    ) {
        match Self::of(shard).client(shard, addr) {
            Ok(e) => e.connect(shard, config, addr, server_name, timeout, reply),
            Err(source) => {
                let _ = reply.send(Err(StartError::Connect { addr, source }));
            }
        }
    }

    /// A datagram another shard received for a connection of listener
    /// `listener` that this shard owns.
    pub(crate) fn relayed(shard: &Rc<Shard>, listener: usize, datagram: Relayed) {
        if let Some(e) = Self::of(shard).listeners.borrow().get(listener) {
            e.relay(datagram);
        }
    }

    /// This shard's client endpoint for the address family of `addr`.
    fn client(&self, shard: &Rc<Shard>, addr: SocketAddr) -> std::io::Result<Rc<Endpoint>> {
        let family = usize::from(addr.is_ipv6());
        if let Some(e) = &self.clients.borrow()[family] {
            return Ok(Rc::clone(e));
        }
        let socket = crate::proto::quic::udp::bind_client(addr.is_ipv6())?;
        let e = Endpoint::client(shard, socket)?;
        glommio::spawn_local(Rc::clone(&e).run(Rc::clone(shard))).detach();
        self.clients.borrow_mut()[family] = Some(Rc::clone(&e));
        Ok(e)
    }
}
