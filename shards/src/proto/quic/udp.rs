//! The shard's UDP socket: `SO_REUSEPORT` so every shard binds the same
//! port, batched receives (`recvmmsg`, with GRO where the kernel has it)
//! and GSO sends, both through quinn-udp, and readiness from the shard's
//! own ring (`glommio::net::FdReady`).

use std::io::{self, IoSliceMut};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::task::{Context, Poll};

use quinn_udp::{RecvMeta, Transmit, UdpSockRef, UdpSocketState};
use socket2::{Domain, Protocol, Socket, Type};

use crate::error::StartError;

/// Datagrams per `recvmmsg`.
const RECV_BATCH: usize = quinn_udp::BATCH_SIZE;
/// Kernel buffer asked for in each direction: a burst of 64 KiB packets
/// from many connections must not overflow before the shard reads it.
const SOCKET_BUFFER: usize = 4 << 20;
/// Receive buffer taken past `net.core.rmem_max` where the process may
/// (`CAP_NET_ADMIN`, `SO_RCVBUFFORCE`). The kernel charges each small
/// datagram about 1 KiB or more, so 4 MiB holds only a few thousand: a
/// client closing 6,250 connections at once overflowed it and a third of
/// the CONNECTION_CLOSEs were lost (each then ended at the idle timeout).
const FORCED_RECV_BUFFER: usize = 32 << 20;
/// Datagrams per GSO send. quinn-udp may report 64 segments, but 64 full
/// datagrams pass the 64 KiB a single send can carry and the kernel then
/// refuses the whole send; quinn's own driver caps at 10 for that reason.
const MAX_GSO: usize = 10;

/// Binds one UDP socket per shard on `addr`, all sharing its port. Port 0
/// is resolved by the first bind and reused by the rest. A port another
/// process already holds is refused (`SO_REUSEPORT` would share it).
pub fn bind_reuseport(addr: SocketAddr, shards: usize) -> Result<(SocketAddr, Vec<UdpSocket>), StartError> {
    let mut out = Vec::with_capacity(shards);
    let mut addr = addr;
    for i in 0..shards {
        let err = |source: io::Error| match source.kind() {
            io::ErrorKind::AddrInUse => StartError::AddrInUse { addr },
            _ => StartError::Bind { addr, source },
        };
        if i == 0 && addr.port() != 0 {
            // Without SO_REUSEPORT this bind fails if anyone holds the port.
            drop(UdpSocket::bind(addr).map_err(err)?);
        }
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP)).map_err(err)?;
        s.set_reuse_port(true).map_err(err)?;
        s.set_nonblocking(true).map_err(err)?;
        s.bind(&addr.into()).map_err(err)?;
        if addr.port() == 0 {
            addr = s.local_addr().map_err(err)?.as_socket().expect("inet socket");
        }
        out.push(s.into());
    }
    Ok((addr, out))
}

/// A client endpoint's socket on an ephemeral port. It asks for ICMP
/// errors (`IP_RECVERR`): on an unconnected UDP socket the kernel reports
/// none otherwise, and a connect to a port nobody serves could only wait
/// out its timeout. With them it fails at once (`Udp::take_refusals`).
pub fn bind_client(ipv6: bool) -> io::Result<UdpSocket> {
    let s = if ipv6 {
        UdpSocket::bind("[::]:0")?
    } else {
        UdpSocket::bind("0.0.0.0:0")?
    };
    s.set_nonblocking(true)?;
    let opts: &[(libc::c_int, libc::c_int)] = if ipv6 {
        &[(libc::SOL_IPV6, libc::IPV6_RECVERR), (libc::SOL_IP, libc::IP_RECVERR)]
    } else {
        &[(libc::SOL_IP, libc::IP_RECVERR)]
    };
    for &(level, name) in opts {
        set_int_option(&s, level, name, 1);
    }
    Ok(s)
}

/// One shard's socket and its receive buffers.
pub(crate) struct Udp {
    socket: UdpSocket,
    state: UdpSocketState,
    ready: glommio::net::FdReady,
    bufs: Vec<Vec<u8>>,
    meta: Vec<RecvMeta>,
    /// Use GSO/GRO (off with `MSGTRANS_QUIC_NO_OFFLOAD=1`, to measure them).
    offload: bool,
}

impl Udp {
    pub(crate) fn new(socket: UdpSocket) -> io::Result<Self> {
        let state = UdpSocketState::new(UdpSockRef::from(&socket))?;
        let _ = state.set_send_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        let _ = state.set_recv_buffer_size(UdpSockRef::from(&socket), SOCKET_BUFFER);
        force_recv_buffer(&socket, FORCED_RECV_BUFFER);
        // quinn-udp 0.6 asks for a receive timestamp on every datagram
        // (`SO_TIMESTAMPNS`), which quinn-proto never reads: the kernel
        // then formats a control message per datagram (1.3% of the
        // server's CPU at 64 B) and timestamps every packet the host
        // receives while any such socket is open.
        set_int_option(&socket, libc::SOL_SOCKET, libc::SO_TIMESTAMPNS, 0);
        let offload = std::env::var_os("MSGTRANS_QUIC_NO_OFFLOAD").is_none();
        // quinn-udp turns GRO on for every socket. Without offload it is
        // turned off again: left on, a peer's GSO bursts arrive coalesced,
        // and 2 KiB slots would cut them short (the datagrams lost, and the
        // measurement with them).
        let gro = state.gro_segments() > 1 && (offload || !disable_gro(&socket));
        // With GRO one slot may hold many coalesced datagrams.
        let slot = if gro { 64 * 1024 } else { 2048 };
        let ready = glommio::net::FdReady::new(socket.as_raw_fd());
        Ok(Self {
            bufs: (0..RECV_BATCH).map(|_| vec![0u8; slot]).collect(),
            meta: vec![RecvMeta::default(); RECV_BATCH],
            socket,
            state,
            ready,
            offload,
        })
    }

    pub(crate) fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// Datagrams one send may carry.
    pub(crate) fn max_datagrams(&self) -> usize {
        if self.offload {
            self.state.max_gso_segments().clamp(1, MAX_GSO)
        } else {
            1
        }
    }

    /// Receives one batch; calls `each(from, local_ip, ecn, datagram)` for
    /// every datagram (GRO buffers split at their stride). `Ok(0)`: none
    /// waiting.
    pub(crate) fn recv(
        &mut self,
        mut each: impl FnMut(SocketAddr, Option<std::net::IpAddr>, Option<quinn_udp::EcnCodepoint>, &[u8]),
    ) -> io::Result<usize> {
        let mut slices: Vec<IoSliceMut<'_>> = self.bufs.iter_mut().map(|b| IoSliceMut::new(b)).collect();
        let n = match self
            .state
            .recv(UdpSockRef::from(&self.socket), &mut slices, &mut self.meta)
        {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(0),
            Err(e) => return Err(e),
        };
        let mut count = 0;
        for (meta, buf) in self.meta[..n].iter().zip(&self.bufs) {
            let stride = meta.stride.max(1);
            for d in buf[..meta.len].chunks(stride) {
                each(meta.addr, meta.dst_ip, meta.ecn, d);
                count += 1;
            }
        }
        Ok(count.max(n))
    }

    /// Drains the socket's error queue and returns the addresses that
    /// answered with "port unreachable". Call it when a receive fails: the
    /// kernel reports a queued error there first, and the socket stays
    /// readable (`POLLERR`) until the queue is empty.
    pub(crate) fn take_refusals(&self) -> Vec<SocketAddr> {
        let mut refused = Vec::new();
        loop {
            // SAFETY: zeroed plain-old-data buffers for recvmsg to fill.
            let mut name: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut control = [0u64; 64];
            let mut byte = [0u8; 1];
            let mut iov = libc::iovec {
                iov_base: byte.as_mut_ptr().cast(),
                iov_len: byte.len(),
            };
            // SAFETY: as above.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut name as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = control.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&control) as _;
            // SAFETY: msg points at the live buffers above.
            let n = unsafe {
                libc::recvmsg(
                    self.socket.as_raw_fd(),
                    &mut msg,
                    libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                return refused;
            }
            if errno_of(&msg) == Some(libc::ECONNREFUSED) {
                if let Some(addr) = socket_addr(&name) {
                    refused.push(addr);
                }
            }
        }
    }

    /// Sends one transmit (several datagrams under GSO). `Ok(false)`: the
    /// socket buffer is full and nothing was sent; the caller keeps the
    /// transmit and waits for [`Udp::poll_writable`].
    pub(crate) fn send(&self, t: &quinn_proto::Transmit, contents: &[u8]) -> io::Result<bool> {
        let tx = Transmit {
            destination: t.destination,
            ecn: t.ecn.and_then(|e| quinn_udp::EcnCodepoint::from_bits(e as u8)),
            contents,
            segment_size: t.segment_size,
            src_ip: t.src_ip,
        };
        match self.state.try_send(UdpSockRef::from(&self.socket), &tx) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `Ready` once the socket may take a datagram again.
    pub(crate) fn poll_writable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready.poll_writable(cx)
    }

    /// `Ready` once the socket may have datagrams.
    pub(crate) fn poll_readable(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.ready.poll_readable(cx)
    }
}

/// The errno of the extended error in an error-queue message, if any.
fn errno_of(msg: &libc::msghdr) -> Option<i32> {
    // SAFETY: walks the control buffer recvmsg filled, as the CMSG macros
    // are meant to; the data of an IP(V6)_RECVERR message is a
    // sock_extended_err (read unaligned: cmsg data has no alignment promise).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(msg);
        while !cmsg.is_null() {
            let c = &*cmsg;
            if (c.cmsg_level == libc::SOL_IP && c.cmsg_type == libc::IP_RECVERR)
                || (c.cmsg_level == libc::SOL_IPV6 && c.cmsg_type == libc::IPV6_RECVERR)
            {
                let e: libc::sock_extended_err = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                return Some(e.ee_errno as i32);
            }
            cmsg = libc::CMSG_NXTHDR(msg, cmsg);
        }
    }
    None
}

/// A `sockaddr_storage` the kernel filled, as a `SocketAddr`.
fn socket_addr(name: &libc::sockaddr_storage) -> Option<SocketAddr> {
    // SAFETY: the family says which of the two layouts the kernel wrote.
    unsafe {
        match name.ss_family as libc::c_int {
            libc::AF_INET => {
                let a = &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>();
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 => {
                let a = &*(name as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>();
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::from((ip, u16::from_be(a.sin6_port))))
            }
            _ => None,
        }
    }
}

/// Turns `UDP_GRO` off; whether that worked.
fn disable_gro(socket: &UdpSocket) -> bool {
    set_int_option(socket, libc::SOL_UDP, libc::UDP_GRO, 0)
}

/// Sets an integer socket option; whether the kernel took it.
fn set_int_option(socket: &UdpSocket, level: libc::c_int, name: libc::c_int, value: libc::c_int) -> bool {
    // SAFETY: a valid socket and a c_int option value of the right size.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    r == 0
}

/// Raises the receive buffer past the system cap if allowed; otherwise the
/// buffer stays as it was.
fn force_recv_buffer(socket: &UdpSocket, bytes: usize) {
    set_int_option(socket, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, bytes as libc::c_int);
}

impl Drop for Udp {
    fn drop(&mut self) {
        // The ring's pending readiness poll holds the socket's file until it
        // completes: shutdown() wakes it, so the port is free once the fd
        // closes (as for the TCP listeners).
        // SAFETY: the fd is this socket's, still open.
        unsafe { libc::shutdown(self.socket.as_raw_fd(), libc::SHUT_RDWR) };
    }
}
