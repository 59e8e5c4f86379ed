//! File descriptors the shards need: SO_REUSEPORT listeners (one per shard, so the kernel
//! spreads connections), eventfds for cross-shard wake-ups, socket options, and turning a raw
//! fd that arrived in a completion into an owned one.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

fn check(ret: libc::c_int) -> io::Result<libc::c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Takes ownership of a descriptor returned by the kernel (accept) or handed over by another
/// shard. The caller must own `fd`: nothing else may close it.
pub fn adopt_fd(fd: RawFd) -> OwnedFd {
    // SAFETY: callers pass descriptors they exclusively own (fresh from accept, or moved
    // between shards with the sender giving up every use of it).
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// A TCP listener bound with SO_REUSEPORT (and SO_REUSEADDR), listening with `backlog`.
pub fn reuseport_listener(addr: SocketAddr, backlog: i32) -> io::Result<OwnedFd> {
    let fd = bound(addr, true)?;
    // SAFETY: listen on a descriptor we own.
    check(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
    Ok(fd)
}

/// Fails (EADDRINUSE) while any socket listens on `addr`: a bind with SO_REUSEADDR only
/// (past connections in TIME_WAIT), never listening, so no client can connect to it.
pub fn probe_bind(addr: SocketAddr) -> io::Result<()> {
    bound(addr, false).map(drop)
}

/// A TCP socket with SO_REUSEADDR (and SO_REUSEPORT if `reuseport`), bound to `addr`.
fn bound(addr: SocketAddr, reuseport: bool) -> io::Result<OwnedFd> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    // SAFETY: plain syscalls on a descriptor we create and own; the sockaddr structs are
    // fully initialised locals that outlive the calls.
    unsafe {
        let fd = check(libc::socket(
            domain,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let fd = OwnedFd::from_raw_fd(fd);
        let one: libc::c_int = 1;
        let options: &[libc::c_int] = if reuseport {
            &[libc::SO_REUSEADDR, libc::SO_REUSEPORT]
        } else {
            &[libc::SO_REUSEADDR]
        };
        for &opt in options {
            check(libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            ))?;
        }
        match addr {
            SocketAddr::V4(a) => {
                let sin = libc::sockaddr_in {
                    sin_family: libc::AF_INET as libc::sa_family_t,
                    sin_port: a.port().to_be(),
                    sin_addr: libc::in_addr {
                        s_addr: u32::from_ne_bytes(a.ip().octets()),
                    },
                    sin_zero: [0; 8],
                };
                check(libc::bind(
                    fd.as_raw_fd(),
                    (&sin as *const libc::sockaddr_in).cast(),
                    std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
                ))?;
            }
            SocketAddr::V6(a) => {
                let sin6 = libc::sockaddr_in6 {
                    sin6_family: libc::AF_INET6 as libc::sa_family_t,
                    sin6_port: a.port().to_be(),
                    sin6_flowinfo: a.flowinfo(),
                    sin6_addr: libc::in6_addr {
                        s6_addr: a.ip().octets(),
                    },
                    sin6_scope_id: a.scope_id(),
                };
                check(libc::bind(
                    fd.as_raw_fd(),
                    (&sin6 as *const libc::sockaddr_in6).cast(),
                    std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
                ))?;
            }
        }
        Ok(fd)
    }
}

/// Sets TCP_NODELAY: the broker batches its own writes, so Nagle only adds latency.
pub fn set_nodelay(fd: &OwnedFd) -> io::Result<()> {
    let one: libc::c_int = 1;
    // SAFETY: setsockopt on an fd we own with a local int that outlives the call.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
    .map(|_| ())
}

/// Shuts the write side of a socket: the peer reads what was queued, then end of stream.
pub fn shutdown_write(fd: &OwnedFd) -> io::Result<()> {
    // SAFETY: shutdown on an fd we own.
    check(unsafe { libc::shutdown(fd.as_raw_fd(), libc::SHUT_WR) }).map(|_| ())
}

/// An eventfd for waking a shard. Blocking on purpose: io_uring returns EAGAIN for reads of
/// O_NONBLOCK files instead of waiting, and a write only blocks at a counter of 2^64 - 1.
pub fn eventfd() -> io::Result<OwnedFd> {
    // SAFETY: creates a new descriptor that we immediately own.
    let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC) })?;
    Ok(adopt_fd(fd))
}

/// Adds 1 to an eventfd with a plain write(2): for threads that have no ring (signal
/// handling, shutdown). Shards wake each other through their rings instead.
pub fn signal_eventfd(fd: RawFd) -> io::Result<()> {
    let one: u64 = 1;
    // SAFETY: writes 8 bytes from a local that outlives the call.
    let n = unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
    if n < 0 {
        let e = io::Error::last_os_error();
        // A full counter (EAGAIN) already means "wake up".
        if e.kind() != io::ErrorKind::WouldBlock {
            return Err(e);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_probe_bind_fails_while_someone_listens() {
        let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = plain.local_addr().unwrap();
        let in_use = |r: io::Result<()>| r.unwrap_err().kind() == io::ErrorKind::AddrInUse;
        assert!(in_use(probe_bind(addr)));
        drop(plain);
        let shard = reuseport_listener(addr, 16).unwrap();
        assert!(in_use(probe_bind(addr)), "a shard's listener is seen too");
        drop(shard);
        probe_bind(addr).unwrap();
    }
}
