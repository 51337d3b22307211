//! `--intercept-bind`, sockhold's side: for servers that bind their own
//! port instead of reading LISTEN_FDS. Each child runs under a seccomp
//! filter (installed before exec, `spawn.rs`; inherited by everything it
//! forks) that sends its `bind`, `listen` and, with Unix paths held,
//! `unlink`/`unlinkat` calls here as user notifications. This module
//! answers them:
//!
//! - `bind` to an address sockhold holds (`match_bind`, pure): a dup of
//!   the held socket is installed over the child's fd
//!   (SECCOMP_IOCTL_NOTIF_ADDFD), with the child's close-on-exec flag,
//!   its O_NONBLOCK and the options accepted connections inherit
//!   (`carry_options`), and the call returns 0. The held socket is never
//!   closed: the child gets a dup, sockhold keeps its own.
//! - `listen` on a held socket returns 0 without running: the socket
//!   listens already, with sockhold's `--backlog`, which a server's own
//!   small backlog (http.server's 5) must not shrink.
//! - `unlink` of a held socket file returns 0 and leaves it in place.
//! - Anything else runs for real (`SECCOMP_USER_NOTIF_FLAG_CONTINUE`): a
//!   port sockhold does not hold, port 0, other families and types.
//!
//! A convenience, not a security boundary: the child can change its memory
//! between sockhold's look and the kernel's (seccomp_unotify(2)), and a
//! foreign-ABI call is not trapped at all. Every notification is answered;
//! what cannot be looked at runs for real and is logged, never silently.

use crate::child;
use crate::engine::Context;
use crate::listen::Listener;
use crate::net;
use crate::seccomp::{self, FilterProgram, Notification, Pending, Trapped};
use nix::errno::Errno;
use nix::libc;
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};

/// Keys of the listener fds among the engine's sources: this bit set
/// (notify sockets use the generation id, far below it; maintenance
/// connections 1 << 28 and up, below it).
const KEY_FLAG: u64 = 1 << 29;
/// Notifications answered per wakeup and listener before the others get
/// their turn (a child looping on listen(2) cannot starve sockhold).
const NOTIFICATIONS_PER_WAKEUP: usize = 64;
/// asm-generic/socket.h (x86_64 and aarch64 alike); not in libc for glibc.
const SO_DOMAIN: libc::c_int = 39;
/// sizeof(struct sockaddr_storage): no address is longer.
const SOCKADDR_MAX: usize = 128;

/// Where a socket is, as far as interception goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Ip(SocketAddr),
    /// A Unix socket file, known by its identity (so that relative paths,
    /// symlinked directories and the child's own cwd all compare right).
    UnixFile {
        device: u64,
        inode: u64,
    },
    UnixAbstract(Vec<u8>),
}

/// A socket's type (SO_TYPE: SOCK_STREAM, SOCK_DGRAM, SOCK_SEQPACKET) and
/// where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub kind: libc::c_int,
    pub target: Target,
}

/// What a child's bind is, against the held sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BindMatch {
    /// The held socket at this index takes its place.
    Held(usize),
    /// Same type and port as this held socket, but the other IP family
    /// (0.0.0.0 against [::] or the reverse): not intercepted, and said so.
    OtherFamily(usize),
    NotHeld,
    /// Port 0 (the kernel picks one): never a held port.
    AnyPort,
}

/// The matching rules, in order:
/// - Port 0 runs for real.
/// - The type must be the same (a TCP bind never gets a UDP socket).
/// - IP: same port and family, and the same address, or either side's
///   wildcard (`0.0.0.0`, `[::]`). sockhold's address wins: a server
///   binding `0.0.0.0:P` under `-l 127.0.0.1:P` gets the loopback socket,
///   one binding `127.0.0.1:P` under `-l P` the one on every address. An
///   exact address is preferred over a wildcard. So Go's and Node's
///   dual-stack `[::]:P` matches sockhold's default `-l P` (dual-stack
///   `[::]`).
/// - The other family never matches: handing an IPv6 socket to a server
///   that made an IPv4 one (or the reverse) changes what accept(2) and
///   getsockname(2) write into its buffers. That case is reported
///   (`OtherFamily`), with the fix, and the bind runs for real (and fails
///   with EADDRINUSE where the held socket covers the address).
/// - Unix: the same socket file, or the same abstract name.
pub fn match_bind(bind: &Endpoint, held: &[Option<Endpoint>]) -> BindMatch {
    if let Target::Ip(address) = &bind.target {
        if address.port() == 0 {
            return BindMatch::AnyPort;
        }
    }
    let mut wildcard = None;
    let mut other_family = None;
    for (index, endpoint) in held.iter().enumerate() {
        let Some(endpoint) = endpoint else { continue };
        if endpoint.kind != bind.kind {
            continue;
        }
        match (&endpoint.target, &bind.target) {
            (Target::Ip(ours), Target::Ip(theirs)) => {
                if ours.port() != theirs.port() {
                    continue;
                }
                if ours.is_ipv4() != theirs.is_ipv4() {
                    other_family.get_or_insert(index);
                } else if ours.ip() == theirs.ip() {
                    return BindMatch::Held(index);
                } else if ours.ip().is_unspecified() || theirs.ip().is_unspecified() {
                    wildcard.get_or_insert(index);
                }
            }
            (ours, theirs) if ours == theirs => return BindMatch::Held(index),
            _ => {}
        }
    }
    match (wildcard, other_family) {
        (Some(index), _) => BindMatch::Held(index),
        (None, Some(index)) => BindMatch::OtherFamily(index),
        (None, None) => BindMatch::NotHeld,
    }
}

/// What sockhold knows of one held socket for interception.
#[derive(Debug)]
struct HeldSocket {
    endpoint: Option<Endpoint>,
    /// The socket's own inode (fstat), to tell a child's fd that is a dup
    /// of it (listen on a held socket).
    socket: Option<(u64, u64)>,
    /// `tcp 127.0.0.1:8080`, for the log.
    description: String,
}

/// One child's listener fd.
#[derive(Debug)]
struct Watched {
    generation: u64,
    listener: OwnedFd,
}

/// A change the engine should know of: interception set or cleared
/// O_NONBLOCK on a held socket (the shared open file description).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NonblockingSet {
    pub index: usize,
    pub on: bool,
}

/// sockhold's side of `--intercept-bind` for the generations engine.
#[derive(Debug)]
pub struct Intercept {
    filter: FilterProgram,
    held: Vec<HeldSocket>,
    watched: HashMap<u64, Watched>,
    next_key: u64,
    /// Generations whose first interception was logged (at info; the rest
    /// at debug).
    announced: HashSet<u64>,
    /// The kernel has refused ADDFD once (logged once).
    no_addfd: bool,
    /// Per generation, the held sockets (indexes) its binds got.
    bound: HashMap<u64, Vec<usize>>,
    /// Generations told that a bind of theirs is not of a held address.
    warned_unheld: HashSet<u64>,
    /// Per generation, its interceptions as the log words them, the first
    /// `MAX_SHOWN` of them (for `status`).
    shown: HashMap<u64, Vec<String>>,
}

/// The most interceptions of one generation that `status` lists.
const MAX_SHOWN: usize = 16;

impl Intercept {
    pub fn new(listeners: &[Listener]) -> Intercept {
        let held: Vec<HeldSocket> = listeners.iter().map(HeldSocket::of).collect();
        let unix_paths = held.iter().any(|h| {
            matches!(
                h.endpoint,
                Some(Endpoint {
                    target: Target::UnixFile { .. },
                    ..
                })
            )
        });
        Intercept {
            filter: FilterProgram::new(unix_paths),
            held,
            watched: HashMap::new(),
            next_key: 0,
            announced: HashSet::new(),
            no_addfd: false,
            bound: HashMap::new(),
            warned_unheld: HashSet::new(),
            shown: HashMap::new(),
        }
    }

    /// The filter every child gets.
    pub fn filter(&self) -> FilterProgram {
        self.filter.clone()
    }

    /// Whether an engine source key is one of the listeners'.
    pub fn owns(key: u64) -> bool {
        key & KEY_FLAG != 0
    }

    /// Watches the listener of `generation`'s child.
    pub fn watch(&mut self, generation: u64, listener: OwnedFd, context: &Context<'_>) {
        let key = KEY_FLAG | (self.next_key % KEY_FLAG);
        self.next_key += 1;
        context.watch(
            listener.as_raw_fd(),
            key,
            &format!("generation {generation}'s seccomp listener"),
        );
        self.watched.insert(
            key,
            Watched {
                generation,
                listener,
            },
        );
    }

    /// The generation is gone: its next interception (if a process of it
    /// lives on) is not "the first" any more than it was.
    pub fn forget(&mut self, generation: u64) {
        self.announced.remove(&generation);
        self.bound.remove(&generation);
        self.warned_unheld.remove(&generation);
        self.shown.remove(&generation);
    }

    /// Every live generation's interceptions (the first 16 of each), oldest
    /// generation first, for `status`.
    pub fn interceptions(&self) -> Vec<(u64, String)> {
        let mut generations: Vec<&u64> = self.shown.keys().collect();
        generations.sort();
        generations
            .into_iter()
            .flat_map(|generation| {
                self.shown[generation]
                    .iter()
                    .map(move |text| (*generation, text.clone()))
            })
            .collect()
    }

    /// The held sockets (indexes) that `generation`'s binds got so far;
    /// None before its first.
    pub fn bound_by(&self, generation: u64) -> Option<&[usize]> {
        self.bound.get(&generation).map(Vec::as_slice)
    }

    /// Answers what the listener `key` has pending. A listener whose
    /// processes have all exited is closed.
    pub fn handle(&mut self, key: u64, context: &Context<'_>) -> Vec<NonblockingSet> {
        let mut changes = Vec::new();
        // Out of the table while its notifications are answered (they
        // need the rest of `self`); back in unless it is done.
        let Some(watched) = self.watched.remove(&key) else {
            return changes;
        };
        let generation = watched.generation;
        let listener = watched.listener.as_fd();
        let mut drained = false;
        let mut hangup = false;
        for _ in 0..NOTIFICATIONS_PER_WAKEUP {
            match seccomp::pending(listener) {
                Pending::Nothing => {
                    drained = true;
                    break;
                }
                Pending::Hangup => {
                    hangup = true;
                    break;
                }
                Pending::Notification => {}
            }
            let notification = match seccomp::receive(listener) {
                Ok(notification) => notification,
                // Withdrawn: its caller was interrupted or killed.
                Err(Errno::ENOENT) | Err(Errno::EINTR) => continue,
                Err(errno) => {
                    log::warn!(
                        "generation {generation}: cannot read the seccomp listener: {}",
                        crate::error::errno_text(errno)
                    );
                    drained = true;
                    break;
                }
            };
            let mut answerer = Answerer {
                intercept: self,
                listener,
                notification: &notification,
                listeners: context.listeners,
                generation,
                changes: &mut changes,
            };
            answerer.answer();
        }
        let raw = listener.as_raw_fd();
        if hangup {
            context.unwatch(raw);
            log::debug!("generation {generation}: seccomp listener closed (no process uses it)");
            return changes;
        }
        if !drained {
            // Edge-triggered: what is left is reported again only once
            // registered anew.
            context.unwatch(raw);
            context.watch(
                raw,
                key,
                &format!("generation {generation}'s seccomp listener"),
            );
        }
        self.watched.insert(key, watched);
        changes
    }

    /// What an upgrade carries (`upgrade::state::Intercept`): every
    /// listener with its poll key, and per generation what its binds got
    /// and what was logged. `handle` answers each notification it reads
    /// before it returns, so none is half-answered here; those not read
    /// yet stay queued in their listener, which the next binary watches.
    pub fn carried(&self) -> crate::upgrade::state::Intercept {
        use crate::upgrade::state;
        let mut listeners: Vec<state::InterceptListener> = self
            .watched
            .iter()
            .map(|(&key, watched)| state::InterceptListener {
                key,
                generation: watched.generation,
                fd: watched.listener.as_raw_fd(),
            })
            .collect();
        listeners.sort_by_key(|l| l.key);
        let mut ids: Vec<u64> = self
            .announced
            .iter()
            .chain(self.bound.keys())
            .chain(self.warned_unheld.iter())
            .chain(self.shown.keys())
            .copied()
            .collect();
        ids.sort_unstable();
        ids.dedup();
        let generations = ids
            .into_iter()
            .map(|id| state::InterceptGeneration {
                id,
                announced: self.announced.contains(&id),
                warned_unheld: self.warned_unheld.contains(&id),
                bound: self.bound.get(&id).cloned(),
                shown: self
                    .shown
                    .get(&id)
                    .map(|shown| shown.iter().map(|t| t.as_bytes().to_vec()).collect())
                    .unwrap_or_default(),
            })
            .collect();
        state::Intercept {
            next_key: self.next_key,
            no_addfd: self.no_addfd,
            listeners,
            generations,
        }
    }

    /// Takes over what the sockhold before an upgrade kept (`carried`):
    /// each listener (`fds`, in the order of `carried.listeners`) is
    /// watched again under its own key, so that a notification queued
    /// meanwhile is reported at once.
    pub fn restore(
        &mut self,
        carried: crate::upgrade::state::Intercept,
        fds: Vec<OwnedFd>,
        context: &Context<'_>,
    ) {
        self.restore_tables(&carried);
        for (listener, fd) in carried.listeners.into_iter().zip(fds) {
            let generation = listener.generation;
            context.watch(
                fd.as_raw_fd(),
                listener.key,
                &format!("generation {generation}'s seccomp listener"),
            );
            self.watched.insert(
                listener.key,
                Watched {
                    generation,
                    listener: fd,
                },
            );
        }
    }

    /// The tables of `carried` (all but its listeners).
    fn restore_tables(&mut self, carried: &crate::upgrade::state::Intercept) {
        self.next_key = carried.next_key;
        self.no_addfd = carried.no_addfd;
        for generation in &carried.generations {
            let id = generation.id;
            if generation.announced {
                self.announced.insert(id);
            }
            if generation.warned_unheld {
                self.warned_unheld.insert(id);
            }
            if let Some(bound) = &generation.bound {
                self.bound.insert(id, bound.clone());
            }
            if !generation.shown.is_empty() {
                let shown = generation
                    .shown
                    .iter()
                    .map(|text| String::from_utf8_lossy(text).into_owned())
                    .collect();
                self.shown.insert(id, shown);
            }
        }
    }

    /// Logs one interception: the first of a generation at info.
    fn announce(&mut self, generation: u64, text: std::fmt::Arguments<'_>) {
        let shown = self.shown.entry(generation).or_default();
        if shown.len() < MAX_SHOWN {
            shown.push(text.to_string());
        }
        if self.announced.insert(generation) {
            log::info!("generation {generation}: {text}");
        } else {
            log::debug!("generation {generation}: {text}");
        }
    }
}

impl HeldSocket {
    fn of(listener: &Listener) -> HeldSocket {
        let fd = listener.fd();
        let kind = net::int_option(fd, libc::SOL_SOCKET, libc::SO_TYPE).ok();
        let target = held_target(fd);
        let socket = nix::sys::stat::fstat(fd)
            .ok()
            .map(|stat| identity(stat.st_dev, stat.st_ino));
        HeldSocket {
            endpoint: kind
                .zip(target)
                .map(|(kind, target)| Endpoint { kind, target }),
            socket,
            description: listener.description.clone(),
        }
    }
}

/// (device, inode) as u64s (they are narrower on some 32-bit targets).
#[allow(clippy::useless_conversion)]
fn identity(device: libc::dev_t, inode: libc::ino_t) -> (u64, u64) {
    (u64::from(device), u64::from(inode))
}

/// Where a held socket is: its address, or for a Unix path the identity
/// of the file sockhold bound.
fn held_target(fd: BorrowedFd<'_>) -> Option<Target> {
    use nix::sys::socket::{SockaddrStorage, getsockname};
    let address = getsockname::<SockaddrStorage>(fd.as_raw_fd()).ok()?;
    if let Some(ip) = net::ip_address(&address) {
        return Some(Target::Ip(ip));
    }
    let unix = address.as_unix_addr()?;
    if let Some(path) = unix.path() {
        let metadata = std::fs::metadata(path).ok()?;
        return Some(Target::UnixFile {
            device: metadata.dev(),
            inode: metadata.ino(),
        });
    }
    unix.as_abstract()
        .map(|name| Target::UnixAbstract(name.to_vec()))
}

/// How a notification is answered.
enum Reply {
    /// The call runs for real.
    Continue,
    /// The call returns 0 without running.
    Success,
}

/// Answers one notification (a short-lived borrow of everything it needs).
struct Answerer<'a> {
    intercept: &'a mut Intercept,
    listener: BorrowedFd<'a>,
    notification: &'a Notification,
    listeners: &'a [Listener],
    generation: u64,
    changes: &'a mut Vec<NonblockingSet>,
}

impl Answerer<'_> {
    fn answer(&mut self) {
        let reply = match self.notification.call {
            Some(Trapped::Bind) => self.bind(),
            Some(Trapped::Listen) => self.listen(),
            Some(Trapped::Unlink) => self.unlink(None, self.notification.args[0], 0),
            Some(Trapped::Unlinkat) => {
                let [dirfd, path, flags, ..] = self.notification.args;
                self.unlink(Some(dirfd as i32), path, flags as i32)
            }
            None => Reply::Continue,
        };
        let id = self.notification.id;
        let sent = match reply {
            Reply::Continue => seccomp::reply_continue(self.listener, id),
            Reply::Success => seccomp::reply_success(self.listener, id),
        };
        match sent {
            // ENOENT: the caller was interrupted (a signal) or died meanwhile.
            Ok(()) | Err(Errno::ENOENT) => {}
            Err(errno) => log::warn!(
                "generation {}: cannot answer pid {}: {}",
                self.generation,
                self.notification.thread,
                crate::error::errno_text(errno)
            ),
        }
    }

    /// The caller's process (notifications name the thread).
    fn process(&self) -> Pid {
        thread_group_of(self.notification.thread).unwrap_or(self.notification.thread)
    }

    /// Whether the caller still waits in this call: what was read from it
    /// was really its own.
    fn still_valid(&self) -> bool {
        seccomp::still_valid(self.listener, self.notification.id)
    }

    /// A copy in sockhold of the caller's `fd`, or why not (logged: what
    /// cannot be looked at runs for real).
    fn copy_fd(&self, fd: RawFd, call: &str) -> Option<OwnedFd> {
        match child::copy_fd_of(self.process(), fd) {
            Ok(copy) => Some(copy),
            // Not an fd: the kernel's own EBADF is what the call gets.
            Err(Errno::EBADF) => None,
            Err(errno) => {
                log::warn!(
                    "generation {}: cannot look at pid {}'s fd {fd} for its {call}: {} (it runs as it is; a server that made itself undumpable needs sockhold to run as root)",
                    self.generation,
                    self.process(),
                    crate::error::errno_text(errno)
                );
                None
            }
        }
    }

    fn bind(&mut self) -> Reply {
        let [fd, address, length, ..] = self.notification.args;
        let fd = fd as RawFd;
        let Some(copy) = self.copy_fd(fd, "bind") else {
            return Reply::Continue;
        };
        let (Ok(domain), Ok(kind)) = (
            net::int_option(copy.as_fd(), libc::SOL_SOCKET, SO_DOMAIN),
            net::int_option(copy.as_fd(), libc::SOL_SOCKET, libc::SO_TYPE),
        ) else {
            return Reply::Continue;
        };
        let mut bytes = [0u8; SOCKADDR_MAX];
        let wanted = (length as usize).min(SOCKADDR_MAX);
        let Ok(read) =
            seccomp::read_memory(self.notification.thread, address, &mut bytes[..wanted])
        else {
            return Reply::Continue;
        };
        let Some(bound) = parse_sockaddr(&bytes[..read], domain) else {
            return Reply::Continue;
        };
        let target = match &bound {
            BindAddress::Ip(address) => Target::Ip(*address),
            BindAddress::UnixPath(path) => {
                match self.unix_file(None, path, true) {
                    Some(target) => target,
                    // No file there (yet): not sockhold's.
                    None => return Reply::Continue,
                }
            }
            BindAddress::UnixAbstract(name) => Target::UnixAbstract(name.clone()),
        };
        if !self.still_valid() {
            return Reply::Continue;
        }
        let held: Vec<Option<Endpoint>> = self
            .intercept
            .held
            .iter()
            .map(|h| h.endpoint.clone())
            .collect();
        let process = self.process();
        match match_bind(&Endpoint { kind, target }, &held) {
            BindMatch::Held(index) => self.install(index, fd, copy, &bound),
            BindMatch::OtherFamily(index) => {
                let theirs = if matches!(bound, BindAddress::Ip(SocketAddr::V4(_))) {
                    "IPv4"
                } else {
                    "IPv6"
                };
                log::warn!(
                    "generation {}: pid {process} bind {bound}: not intercepted: sockhold holds {} on the same port, and the server's socket is {theirs} (listen with -l on the address the server binds, e.g. -l {}, or have the server bind the address sockhold holds)",
                    self.generation,
                    self.intercept.held[index].description,
                    suggested_listen(&bound)
                );
                Reply::Continue
            }
            BindMatch::NotHeld if !self.intercept.bound.contains_key(&self.generation) => {
                // Most often a port given to sockhold and another to the
                // server: the server then serves on a socket that reloads
                // close, and the held ones stay unused. Said once per
                // generation (an admin port bound first is told too).
                if self.intercept.warned_unheld.insert(self.generation) {
                    let holds: Vec<&str> = self
                        .intercept
                        .held
                        .iter()
                        .map(|h| h.description.as_str())
                        .collect();
                    log::warn!(
                        "generation {}: pid {process} bind {bound}: not an address sockhold holds ({}), so it runs as it is and no held socket is claimed yet (give -l the address the server binds, or have the server bind a held one)",
                        self.generation,
                        holds.join(", ")
                    );
                }
                Reply::Continue
            }
            BindMatch::NotHeld | BindMatch::AnyPort => {
                log::debug!(
                    "generation {}: pid {process} bind {bound}: not held, runs as it is",
                    self.generation
                );
                Reply::Continue
            }
        }
    }

    /// Puts a dup of held socket `index` in place of the caller's `fd`.
    fn install(&mut self, index: usize, fd: RawFd, copy: OwnedFd, bound: &BindAddress) -> Reply {
        let Some(listener) = self.listeners.get(index) else {
            return Reply::Continue;
        };
        let held = listener.fd();
        let process = self.process();
        let cloexec = fd_is_cloexec(self.notification.thread, fd).unwrap_or(true);
        let nonblocking = net::is_nonblocking(copy.as_fd());
        if net::is_nonblocking(held) != nonblocking {
            match net::set_nonblocking_to(held, nonblocking) {
                Ok(()) => self.changes.push(NonblockingSet {
                    index,
                    on: nonblocking,
                }),
                Err(errno) => log::warn!(
                    "cannot set O_NONBLOCK on {}: {}",
                    listener.description,
                    crate::error::errno_text(errno)
                ),
            }
        }
        if matches!(bound, BindAddress::Ip(_)) {
            carry_options(copy.as_fd(), held);
        }
        match seccomp::install_fd(self.listener, self.notification.id, held, fd, cloexec) {
            Ok(()) => {}
            Err(Errno::ENOENT) => return Reply::Continue,
            Err(errno) => {
                if !std::mem::replace(&mut self.intercept.no_addfd, true) {
                    log::error!(
                        "generation {}: pid {process} bind {bound}: cannot install the held socket (SECCOMP_IOCTL_NOTIF_ADDFD: {}; Linux 5.9 or later is needed): the bind runs as it is and fails",
                        self.generation,
                        crate::error::errno_text(errno)
                    );
                }
                return Reply::Continue;
            }
        }
        let generation = self.generation;
        let bound_here = self.intercept.bound.entry(generation).or_default();
        if !bound_here.contains(&index) {
            bound_here.push(index);
        }
        let child_fd = crate::spawn::FIRST_PASSED_FD as usize + index;
        self.intercept.announce(
            generation,
            format_args!("pid {process} bind {bound} -> held fd {child_fd}"),
        );
        Reply::Success
    }

    fn listen(&mut self) -> Reply {
        let fd = self.notification.args[0] as RawFd;
        let Some(copy) = self.copy_fd(fd, "listen") else {
            return Reply::Continue;
        };
        let Ok(stat) = nix::sys::stat::fstat(copy.as_fd()) else {
            return Reply::Continue;
        };
        let socket = identity(stat.st_dev, stat.st_ino);
        let Some(index) = self
            .intercept
            .held
            .iter()
            .position(|held| held.socket == Some(socket))
        else {
            return Reply::Continue;
        };
        // A stream socket listens already (with --backlog); a datagram
        // socket's listen fails for real, as it would have.
        if net::int_option(copy.as_fd(), libc::SOL_SOCKET, libc::SO_ACCEPTCONN) != Ok(1) {
            return Reply::Continue;
        }
        log::debug!(
            "generation {}: pid {} listen on held fd {}: listens already, with sockhold's backlog",
            self.generation,
            self.process(),
            crate::spawn::FIRST_PASSED_FD as usize + index
        );
        Reply::Success
    }

    /// `unlink(path)` (dirfd None) or `unlinkat(dirfd, path, flags)`.
    fn unlink(&mut self, dirfd: Option<i32>, path: u64, flags: i32) -> Reply {
        if flags & libc::AT_REMOVEDIR != 0 {
            return Reply::Continue;
        }
        let Some(path) =
            seccomp::read_c_string(self.notification.thread, path, libc::PATH_MAX as usize)
        else {
            return Reply::Continue;
        };
        let dirfd = dirfd.filter(|&fd| fd != libc::AT_FDCWD);
        let Some(target) = self.unix_file(dirfd, &path, false) else {
            return Reply::Continue;
        };
        if !self.still_valid() {
            return Reply::Continue;
        }
        let Some(index) = self.intercept.held.iter().position(|held| {
            held.endpoint
                .as_ref()
                .is_some_and(|endpoint| endpoint.target == target)
        }) else {
            return Reply::Continue;
        };
        let generation = self.generation;
        let process = self.process();
        let shown = String::from_utf8_lossy(&path).into_owned();
        let child_fd = crate::spawn::FIRST_PASSED_FD as usize + index;
        self.intercept.announce(
            generation,
            format_args!(
                "pid {process} unlink {shown}: kept, it is held fd {child_fd}'s socket file"
            ),
        );
        Reply::Success
    }

    /// The socket file at `path` as the caller sees it: relative to its
    /// cwd (or `dirfd`), absolute from its root, through /proc so that
    /// sockhold resolves it in the caller's place. `follow`: bind(2)
    /// follows no symlink either at the last component, but a socket file
    /// is never a symlink; stat and lstat differ only for one, where
    /// unlink removes the link, not the socket.
    fn unix_file(&self, dirfd: Option<i32>, path: &[u8], follow: bool) -> Option<Target> {
        let thread = self.notification.thread;
        let mut full = Vec::new();
        if path.first() == Some(&b'/') {
            full.extend_from_slice(format!("/proc/{thread}/root").as_bytes());
        } else if let Some(dirfd) = dirfd {
            full.extend_from_slice(format!("/proc/{}/fd/{dirfd}/", self.process()).as_bytes());
        } else {
            full.extend_from_slice(format!("/proc/{thread}/cwd/").as_bytes());
        }
        full.extend_from_slice(path);
        let full = std::path::Path::new(std::ffi::OsStr::from_bytes(&full));
        let metadata = if follow {
            std::fs::metadata(full)
        } else {
            std::fs::symlink_metadata(full)
        }
        .ok()?;
        metadata.file_type().is_socket().then(|| Target::UnixFile {
            device: metadata.dev(),
            inode: metadata.ino(),
        })
    }
}

/// A bind's address as the caller gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum BindAddress {
    Ip(SocketAddr),
    UnixPath(Vec<u8>),
    UnixAbstract(Vec<u8>),
}

impl std::fmt::Display for BindAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BindAddress::Ip(address) => write!(f, "{address}"),
            BindAddress::UnixPath(path) => f.write_str(&String::from_utf8_lossy(path)),
            BindAddress::UnixAbstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

/// The `-l` that would hold what the server binds.
fn suggested_listen(bound: &BindAddress) -> String {
    match bound {
        BindAddress::Ip(SocketAddr::V4(v4)) => v4.to_string(),
        BindAddress::Ip(SocketAddr::V6(v6)) if v6.ip().is_unspecified() => v6.port().to_string(),
        other => other.to_string(),
    }
}

/// Parses a sockaddr of the socket's `domain` (None: another family than
/// the socket's, which the kernel refuses itself, or an autobind).
fn parse_sockaddr(bytes: &[u8], domain: libc::c_int) -> Option<BindAddress> {
    let family = libc::c_int::from(u16::from_ne_bytes(bytes.get(..2)?.try_into().ok()?));
    if family != domain {
        return None;
    }
    let port = |b: &[u8]| u16::from_be_bytes([b[2], b[3]]);
    match family {
        libc::AF_INET if bytes.len() >= 8 => {
            let ip = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            Some(BindAddress::Ip(SocketAddr::new(
                IpAddr::V4(ip),
                port(bytes),
            )))
        }
        // SIN6_LEN_RFC2133: the kernel takes 24 bytes (no scope id).
        libc::AF_INET6 if bytes.len() >= 24 => {
            let octets: [u8; 16] = bytes[8..24].try_into().ok()?;
            let ip = Ipv6Addr::from(octets);
            Some(BindAddress::Ip(SocketAddr::new(
                IpAddr::V6(ip),
                port(bytes),
            )))
        }
        libc::AF_UNIX => {
            let path = &bytes[2..];
            match path.first() {
                // sizeof(sa_family_t) alone: autobind to an abstract name.
                None => None,
                Some(0) => Some(BindAddress::UnixAbstract(path[1..].to_vec())),
                Some(_) => {
                    let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
                    Some(BindAddress::UnixPath(path[..end].to_vec()))
                }
            }
        }
        _ => None,
    }
}

/// The process a thread belongs to (`Tgid:` in /proc/TID/status):
/// pidfd_open(2) takes a process, and notifications name the thread.
fn thread_group_of(thread: Pid) -> Option<Pid> {
    let status = std::fs::read_to_string(format!("/proc/{thread}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("Tgid:"))
        .and_then(|tgid| tgid.trim().parse().ok())
        .map(Pid::from_raw)
}

/// Whether the caller's `fd` is close-on-exec (`flags:` in fdinfo shows
/// O_CLOEXEC for it; a pidfd_getfd copy is always CLOEXEC, so it cannot
/// tell).
fn fd_is_cloexec(thread: Pid, fd: RawFd) -> Option<bool> {
    let info = std::fs::read_to_string(format!("/proc/{thread}/fdinfo/{fd}")).ok()?;
    let flags = info
        .lines()
        .find_map(|line| line.strip_prefix("flags:"))
        .and_then(|octal| i64::from_str_radix(octal.trim(), 8).ok())?;
    Some(flags & i64::from(libc::O_CLOEXEC) != 0)
}

/// The options of the child's own socket that the connections accepted
/// from the held one inherit on Linux, and that servers set before bind:
/// SO_KEEPALIVE, SO_LINGER and TCP_NODELAY. Each is set on the held socket
/// to the child's value (also back to the default, so a generation gets
/// what it asked for, not what the one before asked). Not carried:
/// SO_REUSEADDR/SO_REUSEPORT (the held socket is bound already),
/// IPV6_V6ONLY (it cannot change once bound), buffer sizes, and
/// listener-side options (TCP_DEFER_ACCEPT, TCP_FASTOPEN) set before bind;
/// options set after bind reach the held socket directly.
fn carry_options(theirs: BorrowedFd<'_>, held: BorrowedFd<'_>) {
    let ints = [
        (libc::SOL_SOCKET, libc::SO_KEEPALIVE, "SO_KEEPALIVE"),
        (libc::IPPROTO_TCP, libc::TCP_NODELAY, "TCP_NODELAY"),
    ];
    for (level, name, text) in ints {
        let Ok(value) = net::int_option(theirs, level, name) else {
            continue;
        };
        if net::int_option(held, level, name) == Ok(value) {
            continue;
        }
        if let Err(errno) = net::set_int_option(held, level, name, value) {
            log::warn!(
                "cannot carry {text} over to the held socket: {}",
                crate::error::errno_text(errno)
            );
        }
    }
    if let Ok(linger) = net::linger(theirs) {
        if net::linger(held) != Ok(linger) {
            if let Err(errno) = net::set_linger(held, linger) {
                log::warn!(
                    "cannot carry SO_LINGER over to the held socket: {}",
                    crate::error::errno_text(errno)
                );
            }
        }
    }
}

/// Whether this kernel can run `--intercept-bind`: seccomp user
/// notification (5.0, with CONTINUE 5.5) and ADDFD (5.9), and whether a
/// filter may be installed here at all (tried in a throwaway child). One
/// line naming what is missing. Called before the event loop starts
/// (single-threaded: `seccomp::probe` forks).
pub fn check_support() -> Result<(), crate::error::Error> {
    let fail = |reason: String| {
        Err(crate::error::Error::new(
            crate::error::exit::OS,
            format!("cannot use --intercept-bind: {reason}"),
        ))
    };
    if !seccomp::SUPPORTED {
        return fail("only built for x86_64 and aarch64".to_string());
    }
    let actions = std::fs::read_to_string("/proc/sys/kernel/seccomp/actions_avail");
    match actions {
        Ok(actions) if actions.split_whitespace().any(|a| a == "user_notif") => {}
        Ok(_) => {
            return fail(
                "this kernel has no seccomp user notification (Linux 5.9 or later is needed)"
                    .to_string(),
            );
        }
        Err(error) => {
            return fail(format!(
                "cannot read /proc/sys/kernel/seccomp/actions_avail: {error} (is the kernel built with seccomp filters?)"
            ));
        }
    }
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    if let Some((major, minor)) = kernel_version(&release) {
        if (major, minor) < (5, 9) {
            return fail(format!(
                "Linux {release} has no SECCOMP_IOCTL_NOTIF_ADDFD (Linux 5.9 or later is needed)"
            ));
        }
    }
    if let Err(errno) = seccomp::probe(&FilterProgram::new(false)) {
        return Err(crate::error::Error::new(
            match errno {
                Errno::EPERM | Errno::EACCES => crate::error::exit::PERMISSION,
                _ => crate::error::exit::OS,
            },
            format!(
                "cannot use --intercept-bind: cannot install a seccomp filter: {}{}",
                crate::error::errno_text(errno),
                seccomp::refusal_hint(errno)
            ),
        ));
    }
    Ok(())
}

fn kernel_version(release: &str) -> Option<(u32, u32)> {
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tcp(address: &str) -> Option<Endpoint> {
        Some(Endpoint {
            kind: libc::SOCK_STREAM,
            target: Target::Ip(address.parse().unwrap()),
        })
    }

    fn bind(address: &str) -> Endpoint {
        tcp(address).unwrap()
    }

    #[test]
    fn a_bind_matches_the_same_port_and_address_or_a_wildcard_of_its_family() {
        let held = [tcp("127.0.0.1:8080"), tcp("[::]:9090"), tcp("0.0.0.0:7070")];
        assert_eq!(
            match_bind(&bind("127.0.0.1:8080"), &held),
            BindMatch::Held(0)
        );
        // The server's wildcard under a held loopback: sockhold's address wins.
        assert_eq!(match_bind(&bind("0.0.0.0:8080"), &held), BindMatch::Held(0));
        // Go's and Node's dual-stack [::] on sockhold's default `-l P`.
        assert_eq!(match_bind(&bind("[::]:9090"), &held), BindMatch::Held(1));
        assert_eq!(match_bind(&bind("[::1]:9090"), &held), BindMatch::Held(1));
        assert_eq!(
            match_bind(&bind("127.0.0.1:7070"), &held),
            BindMatch::Held(2)
        );
        // Another address of the same family on the port sockhold holds
        // one address of: not held (the real bind works).
        assert_eq!(
            match_bind(&bind("127.0.0.2:8080"), &held),
            BindMatch::NotHeld
        );
        // Another port, and port 0.
        assert_eq!(
            match_bind(&bind("127.0.0.1:8081"), &held),
            BindMatch::NotHeld
        );
        assert_eq!(match_bind(&bind("127.0.0.1:0"), &held), BindMatch::AnyPort);
        assert_eq!(match_bind(&bind("[::]:0"), &held), BindMatch::AnyPort);
    }

    #[test]
    fn the_other_ip_family_is_reported_never_half_matched() {
        let held = [tcp("[::]:9090"), tcp("0.0.0.0:7070")];
        assert_eq!(
            match_bind(&bind("0.0.0.0:9090"), &held),
            BindMatch::OtherFamily(0)
        );
        assert_eq!(
            match_bind(&bind("[::]:7070"), &held),
            BindMatch::OtherFamily(1)
        );
        // Where both families are held, each bind gets its own.
        let both = [tcp("[::1]:80"), tcp("127.0.0.1:80")];
        assert_eq!(match_bind(&bind("0.0.0.0:80"), &both), BindMatch::Held(1));
        assert_eq!(match_bind(&bind("[::]:80"), &both), BindMatch::Held(0));
    }

    #[test]
    fn an_exact_address_wins_over_a_wildcard_and_types_must_agree() {
        let held = [tcp("0.0.0.0:80"), tcp("127.0.0.1:80")];
        assert_eq!(match_bind(&bind("127.0.0.1:80"), &held), BindMatch::Held(1));
        let udp = Endpoint {
            kind: libc::SOCK_DGRAM,
            target: Target::Ip("127.0.0.1:80".parse().unwrap()),
        };
        assert_eq!(match_bind(&udp, &[tcp("127.0.0.1:80")]), BindMatch::NotHeld);
        assert_eq!(match_bind(&udp, &[Some(udp.clone())]), BindMatch::Held(0));
    }

    #[test]
    fn unix_sockets_match_by_file_or_abstract_name() {
        let file = |inode| Endpoint {
            kind: libc::SOCK_STREAM,
            target: Target::UnixFile { device: 1, inode },
        };
        let abstract_name = |name: &[u8]| Endpoint {
            kind: libc::SOCK_STREAM,
            target: Target::UnixAbstract(name.to_vec()),
        };
        let held = [Some(file(7)), None, Some(abstract_name(b"app"))];
        assert_eq!(match_bind(&file(7), &held), BindMatch::Held(0));
        assert_eq!(match_bind(&file(8), &held), BindMatch::NotHeld);
        assert_eq!(
            match_bind(&abstract_name(b"app"), &held),
            BindMatch::Held(2)
        );
        assert_eq!(match_bind(&abstract_name(b"ap"), &held), BindMatch::NotHeld);
    }

    #[test]
    fn sockaddrs_are_read_as_the_kernel_reads_them() {
        let mut v4 = vec![0u8; 16];
        v4[..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
        v4[2..4].copy_from_slice(&8080u16.to_be_bytes());
        v4[4..8].copy_from_slice(&[127, 0, 0, 1]);
        assert_eq!(
            parse_sockaddr(&v4, libc::AF_INET),
            Some(BindAddress::Ip("127.0.0.1:8080".parse().unwrap()))
        );
        // The family must be the socket's.
        assert_eq!(parse_sockaddr(&v4, libc::AF_INET6), None);
        let mut v6 = vec![0u8; 28];
        v6[..2].copy_from_slice(&(libc::AF_INET6 as u16).to_ne_bytes());
        v6[2..4].copy_from_slice(&443u16.to_be_bytes());
        assert_eq!(
            parse_sockaddr(&v6, libc::AF_INET6),
            Some(BindAddress::Ip("[::]:443".parse().unwrap()))
        );
        let mut unix = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        unix.extend_from_slice(b"/run/app.sock\0junk");
        assert_eq!(
            parse_sockaddr(&unix, libc::AF_UNIX),
            Some(BindAddress::UnixPath(b"/run/app.sock".to_vec()))
        );
        let mut abstract_name = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        abstract_name.extend_from_slice(b"\0app");
        assert_eq!(
            parse_sockaddr(&abstract_name, libc::AF_UNIX),
            Some(BindAddress::UnixAbstract(b"app".to_vec()))
        );
        let autobind = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        assert_eq!(parse_sockaddr(&autobind, libc::AF_UNIX), None);
    }

    #[test]
    fn what_an_upgrade_carries_is_what_the_next_interceptor_keeps() {
        use crate::upgrade::state;
        let carried = state::Intercept {
            next_key: 7,
            no_addfd: true,
            listeners: Vec::new(),
            generations: vec![
                state::InterceptGeneration {
                    id: 2,
                    announced: true,
                    warned_unheld: true,
                    bound: Some(vec![1, 0]),
                    shown: vec![b"pid 9 bind 127.0.0.1:80 -> held fd 4".to_vec()],
                },
                state::InterceptGeneration {
                    id: 5,
                    announced: false,
                    warned_unheld: true,
                    bound: None,
                    shown: Vec::new(),
                },
            ],
        };
        let mut intercept = Intercept::new(&[]);
        intercept.restore_tables(&carried);
        assert_eq!(intercept.carried(), carried);
        assert_eq!(intercept.bound_by(2), Some(&[1, 0][..]));
        assert_eq!(intercept.bound_by(5), None);
        assert_eq!(
            intercept.interceptions(),
            vec![(2, "pid 9 bind 127.0.0.1:80 -> held fd 4".to_string())]
        );
        // A generation forgotten before the upgrade is not carried.
        intercept.forget(2);
        assert_eq!(intercept.carried().generations.len(), 1);
        // The next listener's key follows the carried ones.
        assert_eq!(intercept.next_key, 7);
    }

    #[test]
    fn kernel_releases_are_read_as_major_and_minor() {
        assert_eq!(kernel_version("6.18.44-fc-v1045"), Some((6, 18)));
        assert_eq!(kernel_version("5.4.0-150-generic"), Some((5, 4)));
        assert_eq!(kernel_version("garbage"), None);
    }
}
