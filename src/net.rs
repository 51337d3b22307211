//! Socket system calls on the held sockets and their connections:
//! accept4(2) with the peer address, the local side of a connection, the
//! address family of a held socket for the compatibility variables, and
//! O_NONBLOCK; reading a datagram with its sender's credentials and the fds
//! passed with it (notify sockets), and whether two received fds are the
//! same open file (the fd store). Every accepted or received fd is born
//! CLOEXEC.

#![allow(unsafe_code)]

use crate::compat::SocketKind;
use nix::errno::Errno;
use nix::libc;
use nix::sys::socket::{self, SockaddrStorage};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;

/// The most fds one datagram can carry (the kernel's SCM_MAX_FD). Room for
/// all of them keeps the credentials readable when a sender passes fds
/// (`BARRIER=1`, `FDSTORE=1`): a truncated control buffer loses them all.
const MAX_PASSED_FDS: usize = 253;

/// One datagram read by `receive_with_credentials`.
#[derive(Debug)]
pub struct Received {
    pub bytes: usize,
    /// The sender's pid and uid as the kernel vouches for them
    /// (SO_PASSCRED on the socket).
    pub sender: Option<nix::unistd::Pid>,
    pub sender_uid: Option<nix::unistd::Uid>,
    /// The fds passed with it (SCM_RIGHTS), CLOEXEC, owned: each is closed
    /// exactly once, when dropped.
    pub fds: Vec<OwnedFd>,
    /// The control part did not fit: its fds and credentials are lost
    /// (the kernel closed the fds that did not fit).
    pub truncated: bool,
}

/// Reads one datagram without blocking, with its sender's credentials and
/// the fds passed with it; `None` when nothing is waiting. MSG_CMSG_CLOEXEC:
/// a passed fd is never inherited by a child started meanwhile.
pub fn receive_with_credentials(
    fd: BorrowedFd<'_>,
    buffer: &mut [u8],
) -> Result<Option<Received>, Errno> {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, UnixCredentials};
    let mut control = nix::cmsg_space!(UnixCredentials, [RawFd; MAX_PASSED_FDS]);
    let mut iov = [std::io::IoSliceMut::new(buffer)];
    let message = match socket::recvmsg::<()>(
        fd.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
    ) {
        Ok(message) => message,
        Err(Errno::EAGAIN) => return Ok(None),
        Err(errno) => return Err(errno),
    };
    let mut received = Received {
        bytes: message.bytes,
        sender: None,
        sender_uid: None,
        fds: Vec::new(),
        truncated: false,
    };
    match message.cmsgs() {
        Ok(cmsgs) => {
            for cmsg in cmsgs {
                match cmsg {
                    ControlMessageOwned::ScmCredentials(credentials) => {
                        received.sender = Some(nix::unistd::Pid::from_raw(credentials.pid()));
                        received.sender_uid = Some(nix::unistd::Uid::from_raw(credentials.uid()));
                    }
                    ControlMessageOwned::ScmRights(fds) => {
                        for passed in fds {
                            // SAFETY: recvmsg(2) just installed this fd in
                            // sockhold for this message; nothing else has it.
                            received.fds.push(unsafe { OwnedFd::from_raw_fd(passed) });
                        }
                    }
                    _ => {}
                }
            }
        }
        Err(_) => received.truncated = true,
    }
    Ok(Some(received))
}

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

/// Whether a failed accept(2) only lost that connection (it died in the
/// queue) or hit a transient network error that accept(2) says to treat
/// like EAGAIN: the next one may be taken at once. Anything else (EMFILE,
/// ENFILE, ENOBUFS, ENOMEM) leaves the connection queued.
pub fn accept_error_is_transient(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EINTR
            | Errno::ECONNABORTED
            | Errno::EPROTO
            | Errno::ENETDOWN
            | Errno::ENOPROTOOPT
            | Errno::EHOSTDOWN
            | Errno::ENONET
            | Errno::EHOSTUNREACH
            | Errno::EOPNOTSUPP
            | Errno::ENETUNREACH
            | Errno::EPERM
    )
}

/// accept4(2) with SOCK_CLOEXEC, keeping the peer address it returns (no
/// getpeername call). The connection is blocking: it is the child's.
pub fn accept_one(listener: RawFd) -> Result<(OwnedFd, Peer), Errno> {
    accept_with(listener, libc::SOCK_CLOEXEC)
}

/// As `accept_one`, with the new connection non-blocking (sockhold's own,
/// `--maintenance`). SOCK_NONBLOCK sets O_NONBLOCK on the connection's
/// open file description only: the listener's, which children share, is
/// left as it is.
pub fn accept_nonblocking(listener: RawFd) -> Result<(OwnedFd, Peer), Errno> {
    accept_with(listener, libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK)
}

/// Whether a listening socket has a connection queued, without waiting
/// (poll(2) with a zero timeout): on a blocking listener, accept only
/// after this says so, or accept may block.
pub fn has_queued(listener: BorrowedFd<'_>) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let mut fds = [PollFd::new(listener, PollFlags::POLLIN)];
    loop {
        match poll(&mut fds, PollTimeout::ZERO) {
            Ok(ready) => {
                return ready > 0
                    && fds[0]
                        .revents()
                        .is_some_and(|revents| revents.contains(PollFlags::POLLIN));
            }
            Err(Errno::EINTR) => continue,
            Err(_) => return false,
        }
    }
}

fn accept_with(listener: RawFd, flags: libc::c_int) -> Result<(OwnedFd, Peer), Errno> {
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
            flags,
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

/// getsockopt(2) of an int option (SO_DOMAIN, SO_TYPE, TCP_NODELAY, ...).
pub fn int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
) -> Result<libc::c_int, Errno> {
    let mut value: libc::c_int = 0;
    let mut length = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: getsockopt writes at most `length` bytes into `value` and
    // the length into `length`, both on this frame.
    let result = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut value as *mut libc::c_int).cast(),
            &mut length,
        )
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(value)
    }
}

/// setsockopt(2) of an int option.
pub fn set_int_option(
    fd: BorrowedFd<'_>,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> Result<(), Errno> {
    // SAFETY: setsockopt reads `size_of::<c_int>()` bytes from `value`.
    let result = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if result < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// SO_LINGER as (on, seconds).
pub fn linger(fd: BorrowedFd<'_>) -> Result<(bool, i32), Errno> {
    let value = socket::getsockopt(&fd, socket::sockopt::Linger)?;
    Ok((value.l_onoff != 0, value.l_linger))
}

pub fn set_linger(fd: BorrowedFd<'_>, (on, seconds): (bool, i32)) -> Result<(), Errno> {
    let value = libc::linger {
        l_onoff: libc::c_int::from(on),
        l_linger: seconds,
    };
    socket::setsockopt(&fd, socket::sockopt::Linger, &value)
}

/// Sets or clears O_NONBLOCK on the open file description.
pub fn set_nonblocking_to(fd: BorrowedFd<'_>, on: bool) -> Result<(), Errno> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    let wanted = if on {
        flags | OFlag::O_NONBLOCK
    } else {
        flags - OFlag::O_NONBLOCK
    };
    if wanted != flags {
        fcntl(fd, FcntlArg::F_SETFL(wanted))?;
    }
    Ok(())
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

/// linux/kcmp.h: compare two processes' open file descriptions.
const KCMP_FILE: libc::c_int = 0;

/// Whether `a` and `b` are the same open file description (one is a dup
/// of the other, or the same file passed twice), as systemd's `same_fd`
/// decides it for its fd store: kcmp(2) where the kernel has it; else the
/// same inode (devices never count, their fds may be different contexts)
/// opened with the same access mode (which tells a pipe's two ends apart).
pub fn same_open_file(a: BorrowedFd<'_>, b: BorrowedFd<'_>) -> bool {
    let pid = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    // SAFETY: kcmp(2) only compares kernel objects; the fds are borrowed,
    // so open for the whole call.
    let compared = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            a.as_raw_fd() as libc::c_ulong,
            b.as_raw_fd() as libc::c_ulong,
        )
    };
    match compared {
        0 => return true,
        1..=3 => return false,
        // ENOSYS (no CONFIG_KCMP), EPERM/EACCES (forbidden by a seccomp
        // filter or Yama): compare what fstat(2) says instead.
        _ => {}
    }
    let (Ok(first), Ok(second)) = (nix::sys::stat::fstat(a), nix::sys::stat::fstat(b)) else {
        return false;
    };
    let kind = first.st_mode & libc::S_IFMT;
    if (first.st_dev, first.st_ino) != (second.st_dev, second.st_ino)
        || kind == libc::S_IFCHR
        || kind == libc::S_IFBLK
    {
        return false;
    }
    let access = |fd| {
        nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).map(|flags| flags & libc::O_ACCMODE)
    };
    matches!((access(a), access(b)), (Ok(x), Ok(y)) if x == y)
}

/// A listening stream socket's address, to tell connections accepted
/// from it: an accepted connection has its listener's local address (for
/// a listener on every address, its port on one of the host's addresses)
/// and type, and is not listening itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerName {
    address: BoundAddress,
    /// SO_TYPE: SOCK_STREAM or SOCK_SEQPACKET.
    kind: libc::c_int,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum BoundAddress {
    Ip(SocketAddr),
    UnixPath(Vec<u8>),
    UnixAbstract(Vec<u8>),
}

impl ListenerName {
    /// The name of the listening socket `fd`; None for one with no
    /// address a connection could show (an unnamed Unix socket) or that
    /// cannot be asked.
    pub fn of(fd: BorrowedFd<'_>) -> Option<ListenerName> {
        Some(ListenerName {
            address: bound_address(fd)?,
            kind: socket::getsockopt(&fd, socket::sockopt::SockType).ok()? as libc::c_int,
        })
    }

    /// Whether the socket `fd` is a connection accepted from this listener
    /// (or from another listener on the same address and port).
    pub fn accepted(&self, fd: BorrowedFd<'_>) -> bool {
        let listening = socket::getsockopt(&fd, socket::sockopt::AcceptConn).unwrap_or(true);
        let kind = socket::getsockopt(&fd, socket::sockopt::SockType).map(|k| k as libc::c_int);
        if listening || kind != Ok(self.kind) {
            return false;
        }
        match (&self.address, bound_address(fd)) {
            (BoundAddress::Ip(listener), Some(BoundAddress::Ip(local))) => {
                let (wanted, seen) = (canonical_ip(listener.ip()), canonical_ip(local.ip()));
                let address_matches = match wanted {
                    // 0.0.0.0 takes IPv4 only; [::] both (unless v6only).
                    IpAddr::V4(any) if any.is_unspecified() => seen.is_ipv4(),
                    IpAddr::V6(any) if any.is_unspecified() => true,
                    _ => wanted == seen,
                };
                listener.port() == local.port() && address_matches
            }
            (listener, local) => local.as_ref() == Some(listener),
        }
    }
}

fn bound_address(fd: BorrowedFd<'_>) -> Option<BoundAddress> {
    let address = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
    if let Some(ip) = ip_address(&address) {
        return Some(BoundAddress::Ip(ip));
    }
    let unix = address.as_unix_addr()?;
    if let Some(path) = unix.path() {
        return Some(BoundAddress::UnixPath(path.as_os_str().as_bytes().to_vec()));
    }
    unix.as_abstract()
        .map(|name| BoundAddress::UnixAbstract(name.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{TcpListener, TcpStream};
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn a_dup_is_the_same_open_file_and_a_pipe_s_other_end_is_not() {
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let copy = read.try_clone().unwrap();
        assert!(same_open_file(read.as_fd(), copy.as_fd()));
        assert!(same_open_file(read.as_fd(), read.as_fd()));
        assert!(!same_open_file(read.as_fd(), write.as_fd()));
        let (one, other) = UnixStream::pair().unwrap();
        assert!(!same_open_file(one.as_fd(), other.as_fd()));
    }

    #[test]
    fn a_connection_is_told_by_its_listener_s_address() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let other = TcpListener::bind("127.0.0.1:0").unwrap();
        let name = ListenerName::of(listener.as_fd()).unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(name.accepted(accepted.as_fd()));
        // The client's end has an ephemeral local port; a listener is no
        // connection; another listener's connection is not this one's.
        assert!(!name.accepted(client.as_fd()));
        assert!(!name.accepted(listener.as_fd()));
        let _client = TcpStream::connect(other.local_addr().unwrap()).unwrap();
        let (elsewhere, _) = other.accept().unwrap();
        assert!(!name.accepted(elsewhere.as_fd()));
    }

    #[test]
    fn a_wildcard_listener_s_connections_are_on_some_host_address() {
        let listener = TcpListener::bind("0.0.0.0:0").unwrap();
        let name = ListenerName::of(listener.as_fd()).unwrap();
        let port = listener.local_addr().unwrap().port();
        let _client = TcpStream::connect(("127.0.0.1", port)).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(name.accepted(accepted.as_fd()));
    }

    #[test]
    fn a_unix_connection_carries_its_listener_s_path() {
        let dir = std::env::temp_dir().join(format!("sockhold-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s");
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let name = ListenerName::of(listener.as_fd()).unwrap();
        let client = UnixStream::connect(&path).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(name.accepted(accepted.as_fd()));
        // The connecting end is unnamed.
        assert!(!name.accepted(client.as_fd()));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }
}
