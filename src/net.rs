//! Socket system calls on the held sockets and their connections:
//! accept4(2) with the peer address, the local side of a connection, the
//! address family of a held socket for the compatibility variables, and
//! O_NONBLOCK. Every accepted fd is born CLOEXEC.

#![allow(unsafe_code)]

use crate::compat::SocketKind;
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{self, SockaddrStorage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// What sockhold knows about one listening socket, found out once.
#[derive(Debug, Clone, Copy)]
pub enum LocalSide {
    Unix,
    /// A TCP socket bound to one address: every connection's local side.
    Tcp(SocketAddr),
    /// Bound to every address: the local side is asked per connection.
    TcpAny,
}
/// The other end of an accepted connection.
#[derive(Debug, Clone, Copy)]
pub enum Peer {
    Ip(SocketAddr),
    Unix,
}

/// accept4(2) with SOCK_CLOEXEC, keeping the peer address it returns (no
/// getpeername call). The connection is blocking: it is the child's.
pub fn accept_one(listener: RawFd) -> Result<(OwnedFd, Peer), Errno> {
    // SAFETY: an all-zero sockaddr_storage is a valid value.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut length = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: accept4 writes at most `length` bytes into `storage` and the
    // new length into `length`; both live on this stack frame.
    let fd = unsafe {
        libc::accept4(
            listener,
            (&mut storage as *mut libc::sockaddr_storage).cast(),
            &mut length,
            libc::SOCK_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: accept4 just returned this fd; nothing else owns it.
    let connection = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok((connection, peer_of(&storage)))
}

fn peer_of(storage: &libc::sockaddr_storage) -> Peer {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the family says the storage holds a sockaddr_in, and
            // sockaddr_storage is large and aligned enough for it.
            let v4 =
                unsafe { &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
            let ip = Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
            Peer::Ip(SocketAddr::new(ip.into(), u16::from_be(v4.sin_port)))
        }
        libc::AF_INET6 => {
            // SAFETY: as above, for sockaddr_in6.
            let v6 = unsafe {
                &*(storage as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>()
            };
            let ip = Ipv6Addr::from(v6.sin6_addr.s6_addr);
            Peer::Ip(SocketAddr::new(ip.into(), u16::from_be(v6.sin6_port)))
        }
        _ => Peer::Unix,
    }
}

/// IPv4-mapped IPv6 addresses (a dual-stack socket's IPv4 clients) as plain
/// IPv4, as tcp-environ(5) and systemd write them.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

pub fn ip_address(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
    } else {
        address
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
    }
}

pub fn local_side(fd: BorrowedFd<'_>) -> LocalSide {
    match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd())
        .ok()
        .as_ref()
        .and_then(ip_address)
    {
        Some(address) if address.ip().is_unspecified() => LocalSide::TcpAny,
        Some(address) => LocalSide::Tcp(address),
        None => LocalSide::Unix,
    }
}

pub fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

/// Whether O_NONBLOCK is set on the open file description (shared by every
/// process that has the socket).
pub fn is_nonblocking(fd: BorrowedFd<'_>) -> bool {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    fcntl(fd, FcntlArg::F_GETFL)
        .is_ok_and(|flags| OFlag::from_bits_truncate(flags).contains(OFlag::O_NONBLOCK))
}

/// What a held socket is, as the compatibility variables (`--compat-env`)
/// describe it.
pub fn socket_kind(fd: RawFd) -> SocketKind {
    let Ok(address) = socket::getsockname::<SockaddrStorage>(fd) else {
        return SocketKind::Other;
    };
    if let Some(v4) = address.as_sockaddr_in() {
        return SocketKind::Tcp(SocketAddrV4::from(*v4).into());
    }
    if let Some(v6) = address.as_sockaddr_in6() {
        return SocketKind::Tcp(SocketAddrV6::from(*v6).into());
    }
    if let Some(unix) = address.as_unix_addr() {
        if let Some(path) = unix.path() {
            return SocketKind::UnixPath(path.to_string_lossy().into_owned());
        }
        if let Some(name) = unix.as_abstract() {
            return SocketKind::UnixAbstract(String::from_utf8_lossy(name).into_owned());
        }
    }
    SocketKind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }
}
