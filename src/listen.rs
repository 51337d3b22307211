//! Making and adopting the sockets sockhold holds: listening stream sockets
//! (TCP, Unix path and abstract), bound datagram sockets (UDP, Unix
//! datagram path and abstract; never listen(2)ed), and inherited fds of
//! either kind. Unix socket files follow three rules: a stale file (nobody
//! is bound to it) is replaced, a live one is refused, and the file is
//! removed when sockhold lets go of it (at exit, or on a failed start) only
//! if it is still ours. Only an fd that was open when sockhold started can
//! be adopted (`InheritedFds`).
//!
//! Every socket is created CLOEXEC and left blocking: O_NONBLOCK lives on the
//! open file description, which the children share, and a server that does
//! blocking accept(2) or recv(2) must get a blocking socket.

#![allow(unsafe_code)]

use crate::addr::{ListenAddress, ListenSpec, Transport};
use crate::error::Error;
use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, Backlog, SockFlag, SockType, SockaddrIn, SockaddrIn6, SockaddrStorage,
    UnixAddr, sockopt,
};
use nix::sys::stat::Mode;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::fs::MetadataExt;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// One socket sockhold holds for its whole life.
#[derive(Debug)]
pub struct Listener {
    fd: OwnedFd,
    /// Its entry in LISTEN_FDNAMES.
    pub name: String,
    /// `tcp 127.0.0.1:43121`, `unix /run/app.sock`, `unix @name`,
    /// `udp [::]:5353`, `unix-dgram /run/log.sock`: the real address, for
    /// the log and `status`.
    pub description: String,
    /// Connections to accept, or datagrams to read.
    pub transport: Transport,
    /// The socket file we created, removed at exit if it is still ours.
    created_file: Option<SocketFile>,
    /// Where and how to listen again after a child shut the socket down.
    restore: Restore,
}

/// What a stream socket needs to listen again after a child called
/// shutdown(2) on it (`Listener::check`).
#[derive(Debug)]
struct Restore {
    address: HeldAddress,
    backlog: Backlog,
    permissions: FilePermissions,
}

/// The address a held socket was bound to, as bind(2) takes it again.
#[derive(Debug)]
enum HeldAddress {
    Ip(SockaddrStorage),
    UnixPath(PathBuf),
    UnixAbstract,
    /// A datagram socket (never listen(2)ed), or an address sockhold has no
    /// words for.
    None,
}

/// What `Listener::check` found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Listening, as it should (or a datagram socket, which never listens).
    Listening,
    /// A child had shut it down: it listens again, the same socket, so the
    /// children that have it are served again too.
    ListeningAgain,
    /// A child had shut it down: a new socket on the same path replaces it
    /// (a shut-down Unix socket cannot listen again). Children that have
    /// the old one accept nothing more; the next ones get the new one.
    Replaced,
    /// Shut down, and it could not be restored: why, with what to do.
    Lost(String),
}

/// A Unix socket file sockhold created, known by its inode so that it is
/// removed only while it is still ours. Removed when dropped, so that no
/// way out of sockhold (an error after binding included) leaves it behind.
#[derive(Debug)]
pub struct SocketFile {
    path: PathBuf,
    device: u64,
    inode: u64,
    /// Set once it has been dealt with: removed, or found not ours.
    done: std::cell::Cell<bool>,
}

impl SocketFile {
    /// A socket file an earlier sockhold of this pid created (`upgrade/`).
    pub fn adopted(path: PathBuf, device: u64, inode: u64) -> SocketFile {
        SocketFile {
            path,
            device,
            inode,
            done: std::cell::Cell::new(false),
        }
    }

    /// Its device and inode, for an upgrade.
    pub fn identity(&self) -> (u64, u64) {
        (self.device, self.inode)
    }

    /// Removes the file if it is still the one we created, so that a file
    /// another process has since bound at that path survives. After a
    /// privilege drop this may be refused by the directory's permissions:
    /// it is logged, and the next start replaces the stale file anyway.
    /// Only the first call acts.
    pub fn remove_if_ours(&self) {
        if self.done.replace(true) {
            return;
        }
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) if meta.st_dev() == self.device && meta.st_ino() == self.inode => {
                if let Err(error) = std::fs::remove_file(&self.path) {
                    log_cannot_remove(&self.path, &error);
                }
            }
            _ => log::debug!(
                "{} is no longer our socket file; left in place",
                self.path.display()
            ),
        }
    }
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        self.remove_if_ours();
    }
}

/// Logs a file that could not be removed at exit. After `--user`, a file
/// created as root in a directory the user cannot write stays behind; that
/// is expected and harmless (the next start replaces it), so it is not a
/// warning.
pub fn log_cannot_remove(path: &Path, error: &std::io::Error) {
    if error.kind() == std::io::ErrorKind::PermissionDenied && !nix::unistd::geteuid().is_root() {
        log::info!(
            "{} left in place: created before the privilege drop, in a directory this user cannot write",
            path.display()
        );
    } else {
        log::warn!("cannot remove {}: {error}", path.display());
    }
}

/// Owner to give Unix socket files (`--socket-owner`); `None` leaves that
/// id as bind(2) made it (sockhold's own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketOwner {
    pub uid: Option<nix::unistd::Uid>,
    pub gid: Option<nix::unistd::Gid>,
}

impl Listener {
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// The socket file sockhold created and removes at exit (device,
    /// inode), for an upgrade.
    pub fn socket_file(&self) -> Option<(u64, u64)> {
        self.created_file.as_ref().map(SocketFile::identity)
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Checks that a held stream socket still listens, and restores it if
    /// a child shut it down: shutdown(2) acts on the socket that sockhold
    /// and every generation share, so one child's graceful stop would
    /// otherwise refuse every connection for good.
    pub fn check(&mut self) -> Check {
        if !self.is_shut_down() {
            return Check::Listening;
        }
        match self.listen_again() {
            Ok(check) => check,
            Err(reason) => Check::Lost(reason),
        }
    }

    /// Whether a child shut this stream socket down (never for a datagram
    /// socket).
    pub fn is_shut_down(&self) -> bool {
        self.transport == Transport::Stream && is_shut_down(&self.fd)
    }

    fn listen_again(&mut self) -> Result<Check, String> {
        let restore = &self.restore;
        match &restore.address {
            HeldAddress::Ip(address) => {
                // A socket bound to port 0 loses its port with the shutdown
                // (the kernel keeps only a port that was asked for, see
                // SOCK_BINDPORT_LOCK in inet_bind(2) code): bind it to the
                // same port again. EINVAL: it is still bound.
                match socket::bind(self.fd.as_raw_fd(), address) {
                    Ok(()) | Err(Errno::EINVAL) => {}
                    Err(errno) => {
                        return Err(format!(
                            "cannot bind it again: {}{}",
                            crate::error::errno_text(errno),
                            match errno {
                                Errno::EADDRINUSE =>
                                    " (another process took the port meanwhile; stop it and restart sockhold)",
                                _ => " (restart sockhold)",
                            }
                        ));
                    }
                }
                socket::listen(&self.fd, restore.backlog).map_err(|errno| {
                    format!(
                        "cannot listen on it again: {} (restart sockhold)",
                        crate::error::errno_text(errno)
                    )
                })?;
                Ok(Check::ListeningAgain)
            }
            HeldAddress::UnixPath(path) => {
                // RCV_SHUTDOWN stays on a Unix socket for good: only a new
                // socket on the same path listens again.
                if let Some(created) = &self.created_file {
                    created.remove_if_ours();
                }
                let (fd, created) = bind_unix_path(
                    path,
                    Transport::Stream,
                    restore.backlog,
                    restore.permissions,
                    &path.display().to_string(),
                )
                .map_err(|error| format!("{} (restart sockhold)", error.message))?;
                self.fd = fd;
                self.created_file = Some(created);
                Ok(Check::Replaced)
            }
            HeldAddress::UnixAbstract => Err(
                "an abstract name stays taken while any process has the shut-down socket (stop the generations that have it, or restart sockhold)"
                    .to_string(),
            ),
            HeldAddress::None => Err("sockhold cannot bind its address again (restart sockhold)".to_string()),
        }
    }

    /// Leaves the Unix socket file at exit: the socket lives on in the
    /// service manager's fd store (`sd_notify::store_sockets`), and the
    /// next sockhold takes it back.
    pub fn keep_socket_file(&mut self) {
        if let Some(created) = self.created_file.take() {
            // Dealt with: its drop leaves the file alone.
            created.done.set(true);
        }
    }

    /// Removes the Unix socket file if it is still the one we created.
    pub fn remove_socket_file(&self) {
        if let Some(created) = &self.created_file {
            created.remove_if_ours();
        }
    }
}

/// How the sockets are made.
#[derive(Debug, Clone, Copy)]
pub struct SocketOptions {
    pub backlog: Option<i32>,
    pub socket_mode: Option<u32>,
    pub socket_owner: Option<SocketOwner>,
}

/// Binds (or adopts) every socket in order; the index gives the child's fd
/// (3 + index) and the default name. `fd:N` adopts only an fd that is in
/// `inherited`. On an error, the sockets made so far are dropped, and with
/// them their socket files.
/// Opens every socket; `stored[index]`, where set, is the inherited fd
/// that is that spec's socket already (passed back from the service
/// manager's fd store, `activation::take_back_stored`), adopted in place
/// of a new bind.
pub fn open_all(
    specs: &[ListenSpec],
    stored: &[Option<RawFd>],
    options: SocketOptions,
    inherited: &InheritedFds,
) -> Result<Vec<Listener>, Error> {
    specs
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let stored = stored.get(index).copied().flatten();
            open_one(spec, index, stored, options, inherited)
        })
        .collect()
}

/// Whether the inherited `fd` is a socket of `address`'s kind bound to
/// it (any port for port 0), and listening if it is a stream socket: the
/// socket a previous sockhold held for it.
pub fn is_bound_to(fd: RawFd, address: &ListenAddress, inherited: &InheritedFds) -> bool {
    if !inherited.contains(fd) || !is_open(fd) {
        return false;
    }
    // SAFETY: the fd is open and was inherited (checked above); it is only
    // borrowed for this call, and nothing closes it meanwhile.
    let fd = unsafe { BorrowedFd::borrow_raw(fd) };
    let kind = match socket::getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => Transport::Stream,
        Ok(SockType::Datagram) => Transport::Datagram,
        _ => return false,
    };
    if address.transport() != Some(kind)
        || (kind == Transport::Stream
            && !socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false))
    {
        return false;
    }
    let Ok(local) = socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) else {
        return false;
    };
    let port_fits = |wanted: u16, got: u16| wanted == 0 || wanted == got;
    let unix = local.as_unix_addr();
    match address {
        ListenAddress::TcpAll { port } | ListenAddress::UdpAll { port } => {
            crate::net::ip_address(&local)
                .is_some_and(|got| got.ip().is_unspecified() && port_fits(*port, got.port()))
        }
        ListenAddress::Tcp(wanted) | ListenAddress::Udp(wanted) => crate::net::ip_address(&local)
            .is_some_and(|got| {
                crate::net::canonical_ip(got.ip()) == crate::net::canonical_ip(wanted.ip())
                    && port_fits(wanted.port(), got.port())
            }),
        ListenAddress::Unix(path) | ListenAddress::UnixDatagram(path) => {
            unix.and_then(|unix| unix.path()) == Some(path.as_path())
        }
        ListenAddress::Abstract(name) | ListenAddress::AbstractDatagram(name) => {
            unix.and_then(|unix| unix.as_abstract()) == Some(name.as_bytes())
        }
        ListenAddress::Fd(_) => false,
    }
}

/// The fds that were open when sockhold started, before it opened any of
/// its own: the only ones `fd:N` (and LISTEN_FDS) may adopt. Without this,
/// `-l ADDR -l fd:3` with nothing inherited on fd 3 would adopt the socket
/// sockhold had just bound there for ADDR: one socket with two owners,
/// closed twice, and passed to the child twice.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InheritedFds(Vec<RawFd>);

impl InheritedFds {
    /// What is open now. Called first thing in `main`, before anything is
    /// opened.
    pub fn at_start() -> InheritedFds {
        let mut open = listed_fds().unwrap_or_else(probed_fds);
        open.sort_unstable();
        open.dedup();
        InheritedFds(open)
    }

    pub fn contains(&self, fd: RawFd) -> bool {
        self.0.binary_search(&fd).is_ok()
    }
}

impl FromIterator<RawFd> for InheritedFds {
    fn from_iter<I: IntoIterator<Item = RawFd>>(fds: I) -> InheritedFds {
        let mut open: Vec<RawFd> = fds.into_iter().collect();
        open.sort_unstable();
        open.dedup();
        InheritedFds(open)
    }
}

/// Whether `fd` is open, without taking it over.
fn is_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD only reads the fd's flags and touches no memory; on a
    // closed fd it fails with EBADF.
    unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) != -1 }
}

/// The entries of /proc/self/fd. The listing's own fd is among them, and
/// is closed again once the listing is read: only the fds still open then
/// are kept.
fn listed_fds() -> Option<Vec<RawFd>> {
    let listed = std::fs::read_dir("/proc/self/fd")
        .ok()?
        .map(|entry| entry.ok()?.file_name().to_str()?.parse::<RawFd>().ok())
        .collect::<Option<Vec<RawFd>>>()?;
    Some(listed.into_iter().filter(|&fd| is_open(fd)).collect())
}

/// Without /proc (or without a free fd to read it): every fd below the
/// soft fd limit, asked one by one (up to 65536 of them).
fn probed_fds() -> Vec<RawFd> {
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .map_or(1024, |(soft, _)| soft)
        .min(1 << 16) as RawFd;
    (0..limit).filter(|&fd| is_open(fd)).collect()
}

/// The name a socket gets in LISTEN_FDNAMES when `NAME=` was not given: the
/// fd number the child finds it at.
pub fn default_name(index: usize) -> String {
    format!("fd{}", crate::spawn::FIRST_PASSED_FD as usize + index)
}

fn open_one(
    spec: &ListenSpec,
    index: usize,
    stored: Option<RawFd>,
    options: SocketOptions,
    inherited: &InheritedFds,
) -> Result<Listener, Error> {
    let backlog = match options.backlog {
        Some(n) => Backlog::new(n.min(Backlog::MAXCONN.into())).unwrap_or(Backlog::MAXCONN),
        // -1 asks Linux for its maximum (net.core.somaxconn).
        None => Backlog::MAXALLOWABLE,
    };
    let name = spec.name.clone().unwrap_or_else(|| default_name(index));
    let cannot = |errno: Errno| {
        Error::os(
            "cannot listen on",
            &spec.text,
            errno,
            hint_for(errno, &spec.address),
        )
    };
    let unix_permissions = FilePermissions {
        mode: options.socket_mode,
        owner: options.socket_owner,
    };
    let (fd, transport, created_file) = if let Some(number) = stored {
        let (fd, transport) = adopt_fd(number, &spec.text, inherited)?;
        (fd, transport, None)
    } else {
        match &spec.address {
            ListenAddress::TcpAll { port } | ListenAddress::UdpAll { port } => {
                let transport = transport_of(&spec.address);
                let fd = bind_ip_all(transport, *port, backlog).map_err(cannot)?;
                (fd, transport, None)
            }
            ListenAddress::Tcp(address) | ListenAddress::Udp(address) => {
                let transport = transport_of(&spec.address);
                let fd = bind_ip(transport, *address, None, backlog).map_err(cannot)?;
                (fd, transport, None)
            }
            ListenAddress::Unix(path) | ListenAddress::UnixDatagram(path) => {
                let transport = transport_of(&spec.address);
                let (fd, created) =
                    bind_unix_path(path, transport, backlog, unix_permissions, &spec.text)?;
                (fd, transport, Some(created))
            }
            ListenAddress::Abstract(abstract_name)
            | ListenAddress::AbstractDatagram(abstract_name) => {
                let transport = transport_of(&spec.address);
                let address = UnixAddr::new_abstract(abstract_name.as_bytes()).map_err(cannot)?;
                let fd = bind_unix(&address, transport, backlog).map_err(cannot)?;
                (fd, transport, None)
            }
            ListenAddress::Fd(number) => {
                let (fd, transport) = adopt_fd(*number, &spec.text, inherited)?;
                (fd, transport, None)
            }
        }
    };
    let description = match &spec.address {
        _ if stored.is_some() => {
            format!("{} (from the fd store)", describe(&fd, transport))
        }
        ListenAddress::Fd(number) => {
            format!("inherited fd {number} ({})", describe(&fd, transport))
        }
        _ => describe(&fd, transport),
    };
    let restore = Restore {
        address: held_address(&fd, transport),
        backlog,
        permissions: unix_permissions,
    };
    let listener = Listener {
        fd,
        name,
        description,
        transport,
        created_file,
        restore,
    };
    log::info!(
        "listening on {} (fd {}, name {})",
        listener.description,
        crate::spawn::FIRST_PASSED_FD as usize + index,
        listener.name
    );
    Ok(listener)
}

/// The held sockets after an upgrade (`upgrade/`): the fd at each spec is
/// taken over instead of bound, and a socket file sockhold had created,
/// known by `file` (device, inode), is still removed at exit. Every fd is
/// checked before any is owned, so that a refusal closes nothing and the
/// old binary can take them all back (`Incoming::fall_back`). A socket is
/// taken as the old binary held it: one a child shut down is still taken
/// (and replaced later, as it would have been).
pub fn adopt_all(
    specs: &[ListenSpec],
    held: &[(RawFd, Option<(u64, u64)>)],
    options: SocketOptions,
) -> Result<Vec<Listener>, String> {
    let backlog = match options.backlog {
        Some(n) => Backlog::new(n.min(Backlog::MAXCONN.into())).unwrap_or(Backlog::MAXCONN),
        None => Backlog::MAXALLOWABLE,
    };
    let mut transports = Vec::new();
    for (spec, &(number, _)) in specs.iter().zip(held) {
        if !is_open(number) {
            return Err(format!(
                "the socket of '{}' (fd {number}) is not open",
                spec.text
            ));
        }
        // SAFETY: open (checked above); borrowed for this call only.
        let fd = unsafe { BorrowedFd::borrow_raw(number) };
        let transport = match socket::getsockopt(&fd, sockopt::SockType) {
            Ok(SockType::Stream) => Transport::Stream,
            Ok(SockType::Datagram) => Transport::Datagram,
            _ => {
                return Err(format!(
                    "fd {number}, held for '{}', is not a stream or datagram socket",
                    spec.text
                ));
            }
        };
        let expected = match &spec.address {
            ListenAddress::Fd(_) => None,
            address => Some(transport_of(address)),
        };
        if expected.is_some_and(|expected| expected != transport) {
            return Err(format!(
                "fd {number}, held for '{}', is a {} socket",
                spec.text,
                if transport == Transport::Stream {
                    "stream"
                } else {
                    "datagram"
                }
            ));
        }
        transports.push(transport);
    }
    let mut listeners = Vec::new();
    for (index, ((spec, &(number, file)), transport)) in
        specs.iter().zip(held).zip(transports).enumerate()
    {
        // SAFETY: checked open above, named once in the upgrade state, and
        // owned by nothing else in this process.
        let fd = unsafe { OwnedFd::from_raw_fd(number) };
        let description = match &spec.address {
            ListenAddress::Fd(number) => {
                format!("inherited fd {number} ({})", describe(&fd, transport))
            }
            _ => describe(&fd, transport),
        };
        let created_file = match (&spec.address, file) {
            (
                ListenAddress::Unix(path) | ListenAddress::UnixDatagram(path),
                Some((device, inode)),
            ) => Some(SocketFile::adopted(path.clone(), device, inode)),
            _ => None,
        };
        let restore = Restore {
            address: held_address(&fd, transport),
            backlog,
            permissions: FilePermissions {
                mode: options.socket_mode,
                owner: options.socket_owner,
            },
        };
        listeners.push(Listener {
            fd,
            name: spec.name.clone().unwrap_or_else(|| default_name(index)),
            description,
            transport,
            created_file,
            restore,
        });
    }
    Ok(listeners)
}

/// Whether a held stream socket was shut down (shutdown(2) with SHUT_RD or
/// SHUT_RDWR, by any process that has it). TCP: the listener is closed, and
/// SO_ACCEPTCONN reads 0 on every copy. Unix: it stays in the listening
/// state, but every connect(2) is refused from then on; poll(2) tells it by
/// POLLRDHUP (`unix_poll` in net/unix/af_unix.c). Neither costs a
/// connection: a probe connect would land in the queue for a child.
fn is_shut_down(fd: &OwnedFd) -> bool {
    use nix::libc;
    if !socket::getsockopt(fd, sockopt::AcceptConn).unwrap_or(true) {
        return true;
    }
    // nix's PollFlags has no POLLRDHUP (and drops the bits it does not know).
    let mut poll_fd = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLRDHUP,
        revents: 0,
    };
    // SAFETY: one pollfd on this stack frame, and a zero timeout: poll(2)
    // only writes its `revents`.
    let ready = unsafe { libc::poll(&mut poll_fd, 1, 0) };
    ready > 0 && poll_fd.revents & libc::POLLRDHUP != 0
}

/// The address to bind again, as the socket itself reports it (also for an
/// adopted one; a kernel-chosen port as chosen).
fn held_address(fd: &OwnedFd, transport: Transport) -> HeldAddress {
    if transport != Transport::Stream {
        return HeldAddress::None;
    }
    match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(address)
            if address.as_sockaddr_in().is_some() || address.as_sockaddr_in6().is_some() =>
        {
            HeldAddress::Ip(address)
        }
        Ok(address) => match address.as_unix_addr() {
            Some(unix) if unix.path().is_some() => {
                HeldAddress::UnixPath(unix.path().map(Path::to_owned).unwrap_or_default())
            }
            Some(unix) if unix.as_abstract().is_some() => HeldAddress::UnixAbstract,
            _ => HeldAddress::None,
        },
        Err(_) => HeldAddress::None,
    }
}

/// The transport of an address that names one (every form but `fd:N`).
fn transport_of(address: &ListenAddress) -> Transport {
    address.transport().unwrap_or(Transport::Stream)
}

fn hint_for(errno: Errno, address: &ListenAddress) -> &'static str {
    let unix = matches!(
        address,
        ListenAddress::Unix(_)
            | ListenAddress::Abstract(_)
            | ListenAddress::UnixDatagram(_)
            | ListenAddress::AbstractDatagram(_)
    );
    match errno {
        Errno::EADDRINUSE if unix => {
            "another process holds that name; choose another or stop that process"
        }
        Errno::EADDRINUSE => "another process holds it; choose another port or stop that process",
        Errno::EACCES if unix => "check the permissions of the directory",
        Errno::EACCES | Errno::EPERM => {
            "ports below 1024 need root or CAP_NET_BIND_SERVICE; use a higher port or run as root"
        }
        Errno::EADDRNOTAVAIL => "that address is not on this machine; check `ip addr`",
        Errno::EAFNOSUPPORT => "this machine has no such address family (IPv6 disabled?)",
        Errno::ENOENT => "the directory does not exist; create it first",
        _ => "",
    }
}

fn sock_type(transport: Transport) -> SockType {
    match transport {
        Transport::Stream => SockType::Stream,
        Transport::Datagram => SockType::Datagram,
    }
}

fn ip_socket(family: AddressFamily, transport: Transport) -> Result<OwnedFd, Errno> {
    let fd = socket::socket(family, sock_type(transport), SockFlag::SOCK_CLOEXEC, None)?;
    // TCP: lets a restarted sockhold bind while old connections sit in
    // TIME_WAIT. Never on UDP, which has no TIME_WAIT: there it would let
    // a second process bind the same port and take some of the datagrams,
    // instead of failing with "address already in use" (see socket(7)).
    if transport == Transport::Stream {
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    }
    Ok(fd)
}

/// listen(2) for a stream socket; a datagram socket is ready once bound.
fn listen_if_stream(fd: &OwnedFd, transport: Transport, backlog: Backlog) -> Result<(), Errno> {
    match transport {
        Transport::Stream => socket::listen(fd, backlog),
        Transport::Datagram => Ok(()),
    }
}

fn bind_ip(
    transport: Transport,
    address: SocketAddr,
    v6_only: Option<bool>,
    backlog: Backlog,
) -> Result<OwnedFd, Errno> {
    let fd = match address {
        SocketAddr::V4(v4) => {
            let fd = ip_socket(AddressFamily::Inet, transport)?;
            socket::bind(fd.as_raw_fd(), &SockaddrIn::from(v4))?;
            fd
        }
        SocketAddr::V6(v6) => {
            let fd = ip_socket(AddressFamily::Inet6, transport)?;
            if let Some(v6_only) = v6_only {
                socket::setsockopt(&fd, sockopt::Ipv6V6Only, &v6_only)?;
            }
            socket::bind(fd.as_raw_fd(), &SockaddrIn6::from(v6))?;
            fd
        }
    };
    listen_if_stream(&fd, transport, backlog)?;
    Ok(fd)
}

/// `[::]:port` with IPv4 mapped in; `0.0.0.0:port` where IPv6 is absent.
fn bind_ip_all(transport: Transport, port: u16, backlog: Backlog) -> Result<OwnedFd, Errno> {
    let any6 = SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), port);
    match bind_ip(transport, any6, Some(false), backlog) {
        Err(Errno::EAFNOSUPPORT | Errno::EADDRNOTAVAIL) => {
            log::debug!("no IPv6 here; binding on IPv4 only");
            let any4 = SocketAddr::new(std::net::Ipv4Addr::UNSPECIFIED.into(), port);
            bind_ip(transport, any4, None, backlog)
        }
        other => other,
    }
}

fn bind_unix(address: &UnixAddr, transport: Transport, backlog: Backlog) -> Result<OwnedFd, Errno> {
    let fd = bind_unix_unlistened(address, transport)?;
    listen_if_stream(&fd, transport, backlog)?;
    Ok(fd)
}

/// Bound, not yet listening: until listen(2), connect(2) to a stream socket
/// is refused, so whatever is done to the file in between is done before
/// anyone can use it. (A datagram socket takes datagrams from bind(2) on:
/// for it, the file's permissions alone keep senders out meanwhile.)
fn bind_unix_unlistened(address: &UnixAddr, transport: Transport) -> Result<OwnedFd, Errno> {
    let fd = socket::socket(
        AddressFamily::Unix,
        sock_type(transport),
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    socket::bind(fd.as_raw_fd(), address)?;
    Ok(fd)
}

/// Mode and owner a Unix socket file must have before anyone can connect.
#[derive(Debug, Clone, Copy, Default)]
pub struct FilePermissions {
    /// `None`: as the umask makes it.
    pub mode: Option<u32>,
    pub owner: Option<SocketOwner>,
}

/// Binds a Unix socket file with the given mode and owner, following the
/// stale/live rules, and listens on it (stream sockets). Also used for the
/// control socket.
pub fn bind_unix_path(
    path: &Path,
    transport: Transport,
    backlog: Backlog,
    permissions: FilePermissions,
    text: &str,
) -> Result<(OwnedFd, SocketFile), Error> {
    let address = ListenAddress::Unix(path.to_owned());
    let cannot =
        |errno: Errno| Error::os("cannot listen on", text, errno, hint_for(errno, &address));
    clear_stale_socket_file(path, transport, text)?;
    let unix_address = UnixAddr::new(path).map_err(cannot)?;
    // There is no window with looser permissions than asked for:
    // - bind(2) creates the file with 0777 & ~umask, so the umask is set for
    //   just this call (sockhold is single-threaded: no other file is
    //   created meanwhile). With a mode only, the file is born with it.
    // - With an owner, the file is born 0000 (nobody but root can send to
    //   it or connect), then gets its owner, then its mode; the file is
    //   never more open than the final mode.
    // - For a stream socket all of that also happens before listen(2):
    //   until then every connect(2) is refused whatever the permissions.
    let born_mode = match (permissions.owner, permissions.mode) {
        (Some(_), _) => Some(0),
        (None, Some(mode)) => Some(mode),
        (None, None) => None,
    };
    let previous_umask =
        born_mode.map(|mode| nix::sys::stat::umask(Mode::from_bits_truncate(!mode & 0o777)));
    let bound = bind_unix_unlistened(&unix_address, transport);
    if let Some(previous) = previous_umask {
        nix::sys::stat::umask(previous);
    }
    let fd = bound.map_err(cannot)?;
    let file_error = |error: std::io::Error| {
        Error::os(
            "cannot listen on",
            text,
            io_errno(&error),
            "the socket file changed under sockhold after bind",
        )
    };
    let meta = std::fs::symlink_metadata(path).map_err(file_error)?;
    // From here on, returning an error drops `created`, which removes the
    // file.
    let created = SocketFile {
        path: path.to_owned(),
        device: meta.st_dev(),
        inode: meta.st_ino(),
        done: std::cell::Cell::new(false),
    };
    if let Some(owner) = permissions.owner {
        let fail = |errno: Errno| {
            Error::os(
                "cannot set the owner of",
                text,
                errno,
                "changing a file's owner needs root",
            )
        };
        // AT_SYMLINK_NOFOLLOW: never follow a link someone put at our path.
        nix::unistd::fchownat(
            nix::fcntl::AT_FDCWD,
            path,
            owner.uid,
            owner.gid,
            nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
        )
        .map_err(fail)?;
        let final_mode = permissions
            .mode
            .unwrap_or_else(|| 0o777 & !previous_umask.map_or(0, |umask| umask.bits()));
        // chmod(2) follows links: check first that the path is still our
        // socket (only someone allowed to write the directory could swap it).
        let now = std::fs::symlink_metadata(path).map_err(file_error)?;
        if now.st_dev() != created.device || now.st_ino() != created.inode {
            return Err(file_error(std::io::Error::from_raw_os_error(
                Errno::EEXIST as i32,
            )));
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(final_mode))
            .map_err(|e| fail(io_errno(&e)))?;
    }
    listen_if_stream(&fd, transport, backlog).map_err(cannot)?;
    Ok((fd, created))
}

fn io_errno(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(libc_eio()))
}

fn libc_eio() -> i32 {
    Errno::EIO as i32
}

/// How long the stale-file probe waits for a socket to answer: one that
/// does not answer in time is taken as live.
const PROBE_DEADLINE: std::time::Duration = std::time::Duration::from_millis(500);

/// A leftover socket file nobody is bound to is removed; a live one, or a
/// file that is not a socket, is an error. The probe connects with the
/// type we are about to bind: a socket of the other type that is alive
/// answers EPROTOTYPE, a file nobody holds ECONNREFUSED (see unix(7)).
fn clear_stale_socket_file(path: &Path, transport: Transport, text: &str) -> Result<(), Error> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(_) => return Ok(()),
    };
    if !meta.file_type().is_socket() {
        return Err(Error::new(
            crate::error::exit::OS,
            format!(
                "cannot listen on '{text}': the file exists and is not a socket (remove it or choose another path)"
            ),
        ));
    }
    match probe(path, transport).map_err(|errno| Error::os("cannot probe", text, errno, ""))? {
        Probe::Live => Err(live_socket(text)),
        Probe::Stale => {
            log::info!("removing stale socket file {}", path.display());
            std::fs::remove_file(path).map_err(|e| {
                Error::os(
                    "cannot remove stale socket",
                    text,
                    io_errno(&e),
                    "remove it by hand",
                )
            })
        }
        Probe::Unknown(errno) => Err(Error::os(
            "cannot listen on",
            text,
            errno,
            "cannot tell whether the existing socket is live",
        )),
    }
}

/// What connecting to an existing socket file says about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Probe {
    /// Some process holds it (or it did not answer within the deadline).
    Live,
    /// Nobody is bound to it.
    Stale,
    Unknown(Errno),
}

/// Connects to the socket at `path` without blocking: a live server whose
/// accept queue is full would otherwise hold sockhold's start-up until it
/// accepts (a blocking connect(2) to a Unix socket waits for room in the
/// queue). Errors are those of making the probe socket itself.
fn probe(path: &Path, transport: Transport) -> Result<Probe, Errno> {
    let probe = socket::socket(
        AddressFamily::Unix,
        sock_type(transport),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )?;
    let address = UnixAddr::new(path)?;
    let answer = match socket::connect(probe.as_raw_fd(), &address) {
        // Linux answers a Unix connect at once; EINPROGRESS (as on other
        // socket families) is waited for, up to the deadline.
        Err(Errno::EINPROGRESS) => wait_for_connect(&probe),
        other => other,
    };
    Ok(match answer {
        // EAGAIN: the queue is full, so something is bound and listening
        // (unix(7)). EPERM: a datagram socket that is connected to another
        // peer and so refuses us; it is alive all the same.
        Ok(()) | Err(Errno::EPROTOTYPE | Errno::EAGAIN | Errno::ETIMEDOUT) => Probe::Live,
        Err(Errno::EPERM) if transport == Transport::Datagram => Probe::Live,
        Err(Errno::ECONNREFUSED) => Probe::Stale,
        Err(errno) => Probe::Unknown(errno),
    })
}

/// Waits up to `PROBE_DEADLINE` for a non-blocking connect to finish;
/// ETIMEDOUT if it does not.
fn wait_for_connect(probe: &OwnedFd) -> Result<(), Errno> {
    use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
    let deadline = std::time::Instant::now() + PROBE_DEADLINE;
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = PollTimeout::try_from(left).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(probe.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, timeout) {
            Ok(0) => return Err(Errno::ETIMEDOUT),
            Ok(_) => break,
            Err(Errno::EINTR) => continue,
            Err(errno) => return Err(errno),
        }
    }
    match socket::getsockopt(probe, sockopt::SocketError)? {
        0 => Ok(()),
        errno => Err(Errno::from_raw(errno)),
    }
}

fn live_socket(text: &str) -> Error {
    Error::new(
        crate::error::exit::OS,
        format!(
            "cannot listen on '{text}': already in use by another process (stop it, or choose another path)"
        ),
    )
}

/// Takes over an inherited fd after checking that it was open when
/// sockhold started and really is a listening stream socket or a bound
/// datagram socket: passing anything else to the child as a socket would
/// break it in ways hard to trace.
fn adopt_fd(
    number: RawFd,
    text: &str,
    inherited: &InheritedFds,
) -> Result<(OwnedFd, Transport), Error> {
    let refuse = |reason: &str| {
        Error::new(
            crate::error::exit::USAGE,
            format!(
                "cannot adopt '{text}': {reason} (pass a listening stream socket or a bound datagram socket on that fd)"
            ),
        )
    };
    if !inherited.contains(number) {
        return Err(refuse(&format!(
            "nothing was open on fd {number} when sockhold started"
        )));
    }
    if !is_open(number) {
        return Err(refuse("no such open file descriptor"));
    }
    // SAFETY: the fd is open (checked above), and it was open before
    // sockhold opened anything (`inherited`), so it is none of sockhold's
    // own: nothing else in sockhold owns it (`activation` refuses an fd
    // adopted twice).
    let fd = unsafe { OwnedFd::from_raw_fd(number) };
    let transport = match socket::getsockopt(&fd, sockopt::SockType) {
        Ok(SockType::Stream) => Transport::Stream,
        Ok(SockType::Datagram) => Transport::Datagram,
        Ok(_) => return Err(refuse("neither a stream nor a datagram socket")),
        Err(_) => return Err(refuse("not a socket")),
    };
    match transport {
        Transport::Stream => {
            if !socket::getsockopt(&fd, sockopt::AcceptConn).unwrap_or(false) {
                return Err(refuse("the stream socket is not listening"));
            }
        }
        Transport::Datagram => {
            if !is_bound(&fd) {
                return Err(refuse("the datagram socket is not bound to an address"));
            }
        }
    }
    nix::fcntl::fcntl(
        &fd,
        nix::fcntl::FcntlArg::F_SETFD(nix::fcntl::FdFlag::FD_CLOEXEC),
    )
    .map_err(|errno| Error::os("cannot adopt", text, errno, ""))?;
    Ok((fd, transport))
}

/// Whether a socket has a local address datagrams can be sent to: a port
/// other than 0, or a Unix path or abstract name.
fn is_bound(fd: &OwnedFd) -> bool {
    match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(address) => {
            if let Some(v4) = address.as_sockaddr_in() {
                v4.port() != 0
            } else if let Some(v6) = address.as_sockaddr_in6() {
                v6.port() != 0
            } else if let Some(unix) = address.as_unix_addr() {
                unix.path().is_some() || unix.as_abstract().is_some()
            } else {
                // A family sockhold has no words for: trust whoever passed it.
                true
            }
        }
        Err(_) => false,
    }
}

/// The real local address with its kind, as the log and `status` show it:
/// `tcp 127.0.0.1:43121`, `udp [::]:5353`, `unix /run/app.sock`,
/// `unix-dgram @log` (port 0 becomes the port the kernel chose).
fn describe(fd: &OwnedFd, transport: Transport) -> String {
    let (ip, unix) = match transport {
        Transport::Stream => ("tcp", "unix"),
        Transport::Datagram => ("udp", "unix-dgram"),
    };
    match socket::getsockname::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(address) => {
            if let Some(v4) = address.as_sockaddr_in() {
                format!("{ip} {}", std::net::SocketAddrV4::from(*v4))
            } else if let Some(v6) = address.as_sockaddr_in6() {
                format!(
                    "{ip} {}",
                    SocketAddr::from(std::net::SocketAddrV6::from(*v6))
                )
            } else if let Some(address) = address.as_unix_addr() {
                match (address.path(), address.as_abstract()) {
                    (Some(path), _) => format!("{unix} {}", path.display()),
                    (None, Some(name)) => format!("{unix} @{}", String::from_utf8_lossy(name)),
                    _ => format!("{unix} (unnamed)"),
                }
            } else {
                "unknown address".to_string()
            }
        }
        Err(errno) => format!("unknown address ({})", crate::error::errno_text(errno)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fds_open_at_start_are_found_with_or_without_proc() {
        for found in [InheritedFds::at_start(), probed_fds().into_iter().collect()] {
            for fd in 0..3 {
                assert!(found.contains(fd), "fd {fd} in {found:?}");
            }
            assert!(!found.contains(-1));
        }
    }

    fn open(text: &str) -> Listener {
        let spec = crate::addr::parse_listen(text).unwrap();
        let options = SocketOptions {
            backlog: None,
            socket_mode: None,
            socket_owner: None,
        };
        open_one(&spec, 0, None, options, &InheritedFds::default()).unwrap()
    }

    /// What a child does with its copy: shutdown(2) acts on the socket.
    fn shut_down_a_copy(listener: &Listener) {
        let copy = listener.fd.try_clone().unwrap();
        socket::shutdown(copy.as_raw_fd(), socket::Shutdown::Both).unwrap();
    }

    #[test]
    fn a_tcp_listener_shut_down_by_a_child_listens_again_on_its_port() {
        for text in ["127.0.0.1:0", "[::1]:0"] {
            let mut listener = open(text);
            let before = socket::getsockname::<SockaddrStorage>(listener.raw_fd()).unwrap();
            let address = crate::net::ip_address(&before).unwrap();
            assert_eq!(listener.check(), Check::Listening);
            shut_down_a_copy(&listener);
            assert!(std::net::TcpStream::connect(address).is_err(), "{text}");
            assert_eq!(listener.check(), Check::ListeningAgain, "{text}");
            std::net::TcpStream::connect(address).unwrap();
            assert_eq!(listener.check(), Check::Listening);
        }
    }

    #[test]
    fn a_unix_listener_shut_down_by_a_child_is_replaced_on_its_path() {
        let dir = std::env::temp_dir().join(format!("sockhold-shut-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("shut.sock");
        let mut listener = open(path.to_str().unwrap());
        shut_down_a_copy(&listener);
        // Still "listening", but every connection is refused.
        assert!(socket::getsockopt(&listener.fd, sockopt::AcceptConn).unwrap());
        assert!(std::os::unix::net::UnixStream::connect(&path).is_err());
        assert_eq!(listener.check(), Check::Replaced);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
        assert_eq!(listener.check(), Check::Listening);
        drop(listener);
        assert!(!path.exists(), "the new file is ours, removed with it");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_abstract_listener_shut_down_while_others_have_it_is_lost() {
        let name = format!("@sockhold-shut-{}", std::process::id());
        let mut listener = open(&name);
        let child_copy = listener.fd.try_clone().unwrap();
        socket::shutdown(child_copy.as_raw_fd(), socket::Shutdown::Read).unwrap();
        assert!(matches!(listener.check(), Check::Lost(reason) if reason.contains("abstract")));
    }

    #[test]
    fn a_socket_file_nobody_holds_is_stale_and_a_full_queue_is_live() {
        let dir = std::env::temp_dir().join(format!("sockhold-probe-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("probe.sock");
        let address = UnixAddr::new(&path).unwrap();
        let listener = bind_unix_unlistened(&address, Transport::Stream).unwrap();
        // Bound but not listening: connect(2) is refused, as for a file
        // nobody holds.
        assert_eq!(probe(&path, Transport::Stream), Ok(Probe::Stale));
        socket::listen(&listener, Backlog::new(0).unwrap()).unwrap();
        let mut queued = Vec::new();
        loop {
            let client = socket::socket(
                AddressFamily::Unix,
                SockType::Stream,
                SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
                None,
            )
            .unwrap();
            match socket::connect(client.as_raw_fd(), &address) {
                Ok(()) => queued.push(client),
                Err(Errno::EAGAIN) => break,
                Err(errno) => panic!("connect: {errno}"),
            }
            assert!(queued.len() < 64, "the queue never filled");
        }
        // Full: the probe answers at once, without waiting for room.
        assert_eq!(probe(&path, Transport::Stream), Ok(Probe::Live));
        assert_eq!(probe(&path, Transport::Datagram), Ok(Probe::Live));
        drop(listener);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
