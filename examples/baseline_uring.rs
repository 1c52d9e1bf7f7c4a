//! Experiment: a raw io_uring echo on one thread, no runtime at all. Every
//! connection keeps one RECV in flight; complete frames go back with one
//! SEND; all submissions of a loop turn share one `io_uring_enter`. It shows
//! what the kernel interface allows per message, below any executor.

mod common;

use std::collections::HashMap;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use io_uring::{opcode, types, IoUring};

const ACCEPT: u64 = u64::MAX;
const BUF: usize = 64 * 1024;

struct Conn {
    fd: RawFd,
    rbuf: Vec<u8>,
    have: usize,
    wbuf: Vec<u8>,
    pending: Vec<u8>,
    sending: bool,
}

fn main() {
    let (addr, _) = common::args("baseline_uring", "raw io_uring batched echo (experiment)");
    let listener = common::reuseport_listener(&addr);
    let lfd = listener.as_raw_fd();
    let mut ring: IoUring = IoUring::builder()
        .setup_single_issuer()
        .setup_defer_taskrun()
        .build(4096)
        .expect("io_uring");
    let mut conns: HashMap<u64, Conn> = HashMap::new();
    let mut next_key = 0u64;
    println!("listening tcp {addr} shards=1 path=baseline_uring");
    let accept = opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
        .build()
        .user_data(ACCEPT);
    unsafe { ring.submission().push(&accept).unwrap() };
    let recv = |c: &mut Conn, key: u64| {
        let spare = &mut c.rbuf[c.have..];
        opcode::Recv::new(types::Fd(c.fd), spare.as_mut_ptr(), spare.len() as u32)
            .build()
            .user_data(key << 1)
    };
    let send = |c: &Conn, key: u64| {
        opcode::Send::new(types::Fd(c.fd), c.wbuf.as_ptr(), c.wbuf.len() as u32)
            .build()
            .user_data((key << 1) | 1)
    };
    loop {
        if ring.submit_and_wait(1).is_err() {
            continue;
        }
        let cqes: Vec<_> = ring.completion().map(|c| (c.user_data(), c.result())).collect();
        let mut sqes = Vec::new();
        for (ud, res) in cqes {
            if ud == ACCEPT {
                if res >= 0 {
                    let fd = res;
                    let s = unsafe { <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd) };
                    let _ = s.set_nodelay(true);
                    let fd = s.into_raw_fd();
                    let key = next_key;
                    next_key += 1;
                    let mut c = Conn {
                        fd,
                        rbuf: vec![0; BUF],
                        have: 0,
                        wbuf: Vec::new(),
                        pending: Vec::new(),
                        sending: false,
                    };
                    sqes.push(recv(&mut c, key));
                    conns.insert(key, c);
                }
                sqes.push(accept.clone());
                continue;
            }
            let key = ud >> 1;
            let Some(c) = conns.get_mut(&key) else { continue };
            if res <= 0 {
                unsafe { libc::close(c.fd) };
                conns.remove(&key);
                continue;
            }
            if ud & 1 == 0 {
                c.have += res as usize;
                let done = common::complete_frames(&c.rbuf[..c.have]);
                if done > 0 {
                    c.pending.extend_from_slice(&c.rbuf[..done]);
                    c.rbuf.copy_within(done..c.have, 0);
                    c.have -= done;
                }
                if c.have == c.rbuf.len() {
                    c.rbuf.resize(c.rbuf.len() * 2, 0);
                }
                sqes.push(recv(c, key));
            } else {
                c.wbuf.drain(..res as usize);
                c.sending = false;
            }
            if !c.sending {
                if c.wbuf.is_empty() {
                    std::mem::swap(&mut c.wbuf, &mut c.pending);
                }
                if !c.wbuf.is_empty() {
                    c.sending = true;
                    sqes.push(send(c, key));
                }
            }
        }
        let mut sq = ring.submission();
        for e in sqes {
            unsafe { sq.push(&e).unwrap() };
        }
    }
}
