//! Per-connection (inetd) mode: accept on every listening socket and run
//! the command once per connection, within limits.
//!
//! Two halves. `Connections` is the pure bookkeeping (running children,
//! per-source counts, the rate limit, the stop sequence): data in, actions
//! out, unit-tested with a fake clock. `AcceptServer` is the glue that
//! accepts, builds each connection's environment and spawns.
//!
//! Invariants:
//! - At most `max_connections` children run at once. At the limit sockhold
//!   stops watching the listeners and the kernel queues new connections;
//!   nothing is refused for being one too many (s6-tcpserver, tcpserver).
//! - Whenever the listeners are watched, every one of them was last
//!   accepted on until `EAGAIN` (or was just registered, and epoll reports a
//!   queued connection at registration): edge-triggered events are never lost.
//! - Accepted sockets are born CLOEXEC (`accept4`) and closed in sockhold
//!   right after the spawn: the child's dup2'd copy is the only one left.
//! - A flood cannot flood the log: repeated warnings are summarised.

use crate::config::{AcceptSettings, format_duration};
use crate::error::{Error, exit};
use crate::listen::Listener;
use crate::signals;
use crate::spawn::{self, ChildSpec, ExtraEnv, SpawnError, Spawner};
use crate::supervisor::ChildStatus;
use nix::errno::Errno;
use nix::libc;
use nix::sys::signal::Signal;
use nix::sys::socket::{self, SockaddrStorage, sockopt};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::{Duration, Instant};

/// How long accepting pauses after the system ran out of something (fds,
/// memory, processes): long enough not to spin, short enough not to matter.
const RESOURCE_PAUSE: Duration = Duration::from_millis(100);

/// Connections accepted from one listener before the event loop looks at
/// its other events (children's exits above all) again.
const ACCEPT_BATCH: usize = 16;

/// At most one line per this interval for each kind of repeated warning.
const LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Where a connection comes from, as `--max-per-source` counts it: the IP
/// address (IPv4-mapped IPv6 as IPv4), or the peer's uid on a Unix socket,
/// as systemd's MaxConnectionsPerSource= does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Ip(IpAddr),
    Uid(u32),
    /// A Unix peer whose credentials could not be read.
    Unknown,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ip(ip) => write!(f, "{ip}"),
            Source::Uid(uid) => write!(f, "uid {uid}"),
            Source::Unknown => f.write_str("an unknown peer"),
        }
    }
}

/// Whether sockhold may accept another connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Open,
    /// `max_connections` children are running: wait for one to exit.
    Full,
    /// The rate limit, or a pause after running out of resources.
    WaitUntil(Instant),
    /// Stopping: never again.
    Closed,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Signal { pid: Pid, signal: Signal },
    Exit { status: i32 },
}

/// The limits, as the bookkeeping needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_source: Option<usize>,
    pub max_rate: Option<u32>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
}

impl From<&AcceptSettings> for Limits {
    fn from(settings: &AcceptSettings) -> Limits {
        Limits {
            max_connections: settings.max_connections,
            max_per_source: settings.max_per_source,
            max_rate: settings.max_rate,
            stop_signal: settings.stop_signal,
            stop_timeout: settings.stop_timeout,
        }
    }
}

/// `--max-rate` as a GCRA (the "virtual scheduling" form of a token
/// bucket): starts are spaced by `interval` on average, with bursts of up
/// to one second's worth. One timestamp of state, no timer.
#[derive(Debug, Clone)]
struct RateLimit {
    interval: Duration,
    /// How far ahead of schedule a start may be: the burst allowance.
    tolerance: Duration,
    /// The theoretical time of the next start; None before the first.
    next: Option<Instant>,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        let interval = Duration::from_secs(1) / per_second.max(1);
        RateLimit {
            interval,
            tolerance: interval * (per_second.max(1) - 1),
            next: None,
        }
    }

    /// When the next start is allowed (None: now).
    fn allowed_at(&self) -> Option<Instant> {
        self.next.and_then(|next| next.checked_sub(self.tolerance))
    }

    fn take(&mut self, now: Instant) {
        let base = self.next.map_or(now, |next| next.max(now));
        self.next = Some(base + self.interval);
    }
}

/// A warning that may repeat thousands of times a second under a flood:
/// the first one is logged, the rest are counted and summarised once per
/// `LOG_INTERVAL`.
#[derive(Debug, Clone, Default)]
pub struct QuietLog {
    last_logged: Option<Instant>,
    silenced: u64,
}

impl QuietLog {
    /// Whether to log this occurrence now; otherwise it is counted.
    pub fn should_log(&mut self, now: Instant) -> bool {
        match self.last_logged {
            Some(last) if now.saturating_duration_since(last) < LOG_INTERVAL => {
                self.silenced += 1;
                false
            }
            _ => {
                self.last_logged = Some(now);
                true
            }
        }
    }

    /// When a summary of silenced occurrences is due.
    pub fn summary_due(&self) -> Option<Instant> {
        match self.last_logged {
            Some(last) if self.silenced > 0 => Some(last + LOG_INTERVAL),
            _ => None,
        }
    }

    /// How many were silenced, if their summary is due now (and resets).
    pub fn take_summary(&mut self, now: Instant) -> Option<u64> {
        match self.summary_due() {
            Some(due) if due <= now => {
                let silenced = std::mem::take(&mut self.silenced);
                self.last_logged = Some(now);
                Some(silenced)
            }
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Serving,
    /// The stop signal went to every child; SIGKILL at `kill_at` (None once
    /// it was sent).
    Stopping {
        kill_at: Option<Instant>,
        killed: bool,
    },
    Exited,
}

/// The bookkeeping of per-connection mode. No system calls.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    /// Every running child and where its connection came from.
    running: HashMap<Pid, Source>,
    /// Running children per source; only kept with `--max-per-source`.
    per_source: HashMap<Source, usize>,
    rate: Option<RateLimit>,
    /// Accepting pauses until then after running out of resources.
    paused_until: Option<Instant>,
    phase: Phase,
    /// Connections closed for `--max-per-source`, for the log.
    over_source_limit: QuietLog,
    /// Times accepting stopped at `--max-connections`, for the log.
    at_limit: QuietLog,
    /// Children started over sockhold's life.
    pub started_total: u64,
}

impl Connections {
    pub fn new(limits: Limits) -> Connections {
        Connections {
            rate: limits.max_rate.map(RateLimit::new),
            limits,
            running: HashMap::new(),
            per_source: HashMap::new(),
            paused_until: None,
            phase: Phase::Serving,
            over_source_limit: QuietLog::default(),
            at_limit: QuietLog::default(),
            started_total: 0,
        }
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.len()
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether another connection may be accepted now.
    pub fn room(&self, now: Instant) -> Room {
        if self.phase != Phase::Serving {
            return Room::Closed;
        }
        if self.running.len() >= self.limits.max_connections {
            return Room::Full;
        }
        let rate_at = self.rate.as_ref().and_then(RateLimit::allowed_at);
        let wait = [self.paused_until, rate_at]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .max();
        match wait {
            Some(at) => Room::WaitUntil(at),
            None => Room::Open,
        }
    }

    /// Notes (for the log) that accepting stopped at the connection limit.
    pub fn note_full(&mut self, now: Instant) {
        if self.at_limit.should_log(now) {
            log::info!(
                "{} connections running (--max-connections): new connections wait in the queue",
                self.running.len()
            );
        }
    }

    /// Whether a connection from `source` may start. Over `--max-per-source`
    /// it must be closed; that is logged here, quietly under a flood.
    pub fn admit(&mut self, source: Source, now: Instant) -> bool {
        let Some(max) = self.limits.max_per_source else {
            return true;
        };
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source < max {
            return true;
        }
        if self.over_source_limit.should_log(now) {
            log::warn!(
                "connection from {source} closed: {from_source} already running from there (--max-per-source {max})"
            );
        }
        false
    }

    /// A child was started for a connection from `source`.
    pub fn started(&mut self, pid: Pid, source: Source, now: Instant) {
        self.running.insert(pid, source);
        if self.limits.max_per_source.is_some() {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
        if let Some(rate) = &mut self.rate {
            rate.take(now);
        }
        self.started_total += 1;
    }

    /// The system is out of fds, memory or processes: stop accepting for a
    /// moment instead of spinning on a connection that cannot be served.
    pub fn pause(&mut self, now: Instant) {
        self.paused_until = Some(now + RESOURCE_PAUSE);
    }

    /// A child was reaped. Exits of processes that are not ours (orphans
    /// reparented to sockhold as a subreaper) change nothing.
    pub fn exited(&mut self, pid: Pid, status: ChildStatus) -> Vec<Action> {
        let Some(source) = self.running.remove(&pid) else {
            log::debug!("reaped pid {pid} ({status}), not a connection's child");
            return Vec::new();
        };
        log::debug!("connection child pid {pid} from {source} exited with {status}");
        if let Some(count) = self.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
        self.exit_if_done()
    }

    /// SIGTERM/SIGINT: stop accepting and stop every child; a second
    /// request kills them at once.
    pub fn stop(&mut self, signal: Signal, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match self.phase {
            Phase::Serving => {
                log::info!(
                    "{} received: stopping; {} to {} running connection children",
                    signals::name(signal),
                    signals::name(self.limits.stop_signal),
                    self.running.len()
                );
                self.phase = Phase::Stopping {
                    kill_at: Some(now + self.limits.stop_timeout),
                    killed: false,
                };
                actions.extend(self.signal_all(self.limits.stop_signal));
            }
            Phase::Stopping { .. } => {
                log::warn!(
                    "{} again while stopping: SIGKILL to every child",
                    signals::name(signal)
                );
                self.phase = Phase::Stopping {
                    kill_at: None,
                    killed: true,
                };
                actions.extend(self.signal_all(Signal::SIGKILL));
            }
            Phase::Exited => {}
        }
        actions.extend(self.exit_if_done());
        actions
    }

    /// A signal from the `--forward-signals` list: to every running child.
    pub fn forward(&self, signal: Signal) -> Vec<Action> {
        if self.running.is_empty() {
            log::debug!("no connection child to pass {} to", signals::name(signal));
        }
        self.signal_all(signal)
    }

    /// Deadlines: SIGKILL after the stop timeout, log summaries.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Phase::Stopping {
            kill_at: Some(at), ..
        } = self.phase
        {
            if at <= now {
                log::warn!(
                    "{} connection children did not stop within {}: SIGKILL",
                    self.running.len(),
                    format_duration(self.limits.stop_timeout)
                );
                self.phase = Phase::Stopping {
                    kill_at: None,
                    killed: true,
                };
                actions.extend(self.signal_all(Signal::SIGKILL));
            }
        }
        if let Some(count) = self.over_source_limit.take_summary(now) {
            log::warn!(
                "{count} more connections closed for --max-per-source in the last {}",
                format_duration(LOG_INTERVAL)
            );
        }
        if let Some(count) = self.at_limit.take_summary(now) {
            log::info!(
                "connection limit reached {count} more times in the last {}",
                format_duration(LOG_INTERVAL)
            );
        }
        if self.paused_until.is_some_and(|at| at <= now) {
            self.paused_until = None;
        }
        actions
    }

    /// The earliest time `tick` (or the accept loop) has work to do.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let kill = match self.phase {
            Phase::Stopping { kill_at, .. } => kill_at,
            _ => None,
        };
        let resume = match self.room(now) {
            Room::WaitUntil(at) => Some(at),
            _ => None,
        };
        [
            kill,
            resume,
            self.over_source_limit.summary_due(),
            self.at_limit.summary_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn signal_all(&self, signal: Signal) -> Vec<Action> {
        self.running
            .keys()
            .map(|&pid| Action::Signal { pid, signal })
            .collect()
    }

    /// Stopping and nobody left: exit 0, or 128+9 when some child had to
    /// be killed (as a generation that ignores its stop signal would).
    fn exit_if_done(&mut self) -> Vec<Action> {
        match self.phase {
            Phase::Stopping { killed, .. } if self.running.is_empty() => {
                self.phase = Phase::Exited;
                let status = if killed {
                    exit::SIGNAL_BASE + Signal::SIGKILL as i32
                } else {
                    exit::OK
                };
                log::info!("every connection child has exited; exiting with status {status}");
                vec![Action::Exit { status }]
            }
            _ => Vec::new(),
        }
    }
}

/// What sockhold knows about one listening socket, found out once.
#[derive(Debug, Clone, Copy)]
enum LocalSide {
    Unix,
    /// A TCP socket bound to one address: every connection's local side.
    Tcp(SocketAddr),
    /// Bound to every address: the local side is asked per connection.
    TcpAny,
}

/// The glue of per-connection mode: accepts, spawns, and feeds
/// `Connections`.
pub struct AcceptServer {
    pub connections: Connections,
    /// The child as prepared once: program resolved, base environment
    /// converted. Each connection only sets its fd and extra variables.
    spec: ChildSpec,
    /// The connection's own variables, rebuilt in place per connection.
    env: ExtraEnv,
    spawner: Spawner,
    inetd: bool,
    /// The listening sockets (owned by the event loop for sockhold's life).
    listener_fds: Vec<RawFd>,
    /// Parallel to `listener_fds`.
    local_sides: Vec<LocalSide>,
    /// Listeners reported readable and not yet accepted on until EAGAIN.
    pending: Vec<bool>,
    spawn_failures: QuietLog,
    accept_failures: QuietLog,
}

impl AcceptServer {
    /// Prepares per-connection mode: the listeners become non-blocking
    /// (only accepted connections reach children, so no child shares their
    /// open file description), and the child is prepared once.
    pub fn new(
        settings: &AcceptSettings,
        program: &Path,
        command: &[OsString],
        inherited_env: &[(OsString, OsString)],
        listeners: &[Listener],
    ) -> Result<AcceptServer, Error> {
        let mut local_sides = Vec::with_capacity(listeners.len());
        for listener in listeners {
            // SAFETY: the listener owns this fd for sockhold's whole life,
            // which outlives this borrow.
            let fd = unsafe { BorrowedFd::borrow_raw(listener.raw_fd()) };
            set_nonblocking(fd)
                .map_err(|errno| Error::os("cannot accept on", &listener.description, errno, ""))?;
            local_sides.push(local_side(fd));
        }
        let mut env = inherited_env.to_vec();
        if !settings.inetd {
            env.push(("LISTEN_FDS".into(), "1".into()));
            env.push(("LISTEN_FDNAMES".into(), "connection".into()));
        }
        let mut spec = ChildSpec::new(program, command, &env, Vec::new(), !settings.inetd)
            .map_err(|reason| Error::new(exit::CANNOT_EXECUTE, format!("cannot run: {reason}")))?;
        spec.set_process_group(settings.signal_group);
        let spawner = Spawner::new().map_err(spawn::spawner_error)?;
        Ok(AcceptServer {
            connections: Connections::new(Limits::from(settings)),
            spec,
            env: ExtraEnv::default(),
            spawner,
            inetd: settings.inetd,
            listener_fds: listeners.iter().map(Listener::raw_fd).collect(),
            pending: vec![false; listeners.len()],
            local_sides,
            spawn_failures: QuietLog::default(),
            accept_failures: QuietLog::default(),
        })
    }

    /// Listener `index` reported a connection.
    pub fn mark_ready(&mut self, index: usize) {
        if let Some(pending) = self.pending.get_mut(index) {
            *pending = true;
        }
    }

    /// Whether some listener may still have connections queued.
    pub fn has_pending(&self) -> bool {
        self.pending.contains(&true)
    }

    /// The listeners are no longer watched; registering them again reports
    /// whatever is queued.
    pub fn forget_pending(&mut self) {
        self.pending.fill(false);
    }

    /// Accepts a batch on every listener that reported readiness.
    pub fn accept_pending(&mut self) {
        for index in 0..self.pending.len() {
            if self.pending[index] {
                self.pending[index] = !self.accept_on(index);
            }
        }
    }

    /// Accepts on listener `index` until it has nothing queued, there is no
    /// room, or a batch is done; every accepted connection is spawned or
    /// closed at once. Returns whether the listener is done (not worth
    /// trying again before its next event).
    fn accept_on(&mut self, index: usize) -> bool {
        let fd = self.listener_fds[index];
        for _ in 0..ACCEPT_BATCH {
            let now = Instant::now();
            match self.connections.room(now) {
                Room::Open => {}
                Room::Full => {
                    self.connections.note_full(now);
                    return true;
                }
                Room::WaitUntil(_) | Room::Closed => return true,
            }
            let (connection, peer) = match accept_one(fd) {
                Ok(accepted) => accepted,
                Err(Errno::EAGAIN) => return true,
                // The connection died in the queue, or a transient network
                // error that accept(2) says to treat like EAGAIN: try the next.
                Err(
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
                    | Errno::EPERM,
                ) => continue,
                Err(errno) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays
                    // queued; pause instead of spinning on it.
                    if self.accept_failures.should_log(now) {
                        log::warn!(
                            "cannot accept a connection: {}; pausing for {}",
                            crate::error::errno_text(errno),
                            format_duration(RESOURCE_PAUSE)
                        );
                    }
                    self.connections.pause(now);
                    return true;
                }
            };
            self.serve(index, connection, peer, now);
        }
        false
    }

    /// Spawns the child of one accepted connection, or closes it.
    fn serve(&mut self, index: usize, connection: OwnedFd, peer: Peer, now: Instant) {
        let credentials = match peer {
            Peer::Ip(_) => None,
            Peer::Unix => socket::getsockopt(&connection, sockopt::PeerCredentials).ok(),
        };
        let source = match (peer, credentials) {
            (Peer::Ip(remote), _) => Source::Ip(canonical_ip(remote.ip())),
            (Peer::Unix, Some(credentials)) => Source::Uid(credentials.uid()),
            (Peer::Unix, None) => Source::Unknown,
        };
        // Decided before anything else is done for it: under a flood from
        // one source, a refusal costs only the accept and the close.
        if !self.connections.admit(source, now) {
            return; // `connection` is closed here, at once.
        }
        self.env.clear();
        match peer {
            Peer::Ip(remote) => {
                let local = match self.local_sides.get(index) {
                    Some(LocalSide::Tcp(local)) => Some(*local),
                    _ => socket::getsockname::<SockaddrStorage>(connection.as_raw_fd())
                        .ok()
                        .and_then(|address| ip_address(&address)),
                };
                let remote_ip = canonical_ip(remote.ip());
                self.env.push("PROTO", "TCP");
                self.env.push("TCPREMOTEIP", remote_ip);
                self.env.push("TCPREMOTEPORT", remote.port());
                if let Some(local) = local {
                    self.env.push("TCPLOCALIP", canonical_ip(local.ip()));
                    self.env.push("TCPLOCALPORT", local.port());
                }
                self.env.push("REMOTE_ADDR", remote_ip);
                self.env.push("REMOTE_PORT", remote.port());
            }
            Peer::Unix => {
                self.env.push("PROTO", "UNIX");
                if let Some(credentials) = credentials {
                    self.env.push("UNIXREMOTEUID", credentials.uid());
                    self.env.push("UNIXREMOTEGID", credentials.gid());
                    self.env.push("UNIXREMOTEPID", credentials.pid());
                }
            }
        }
        let raw = connection.as_raw_fd();
        if self.inetd {
            self.spec.set_stdio(Some(raw));
        } else {
            self.spec.set_fds(&[raw]);
        }
        match spawn::spawn_with_env(&mut self.spawner, &self.spec, &self.env) {
            Ok(spawn::Spawned { pid, .. }) => {
                log::debug!("connection from {source}: pid {pid}");
                self.connections.started(pid, source, now);
            }
            Err(error) => {
                if self.spawn_failures.should_log(now) {
                    log::warn!("connection from {source} closed: {error}");
                }
                if let SpawnError::Fork(_) = error {
                    self.connections.pause(now);
                }
            }
        }
        // The child has its own copy (or none, if it failed): sockhold's
        // is closed now, so the connection ends when the child ends.
        drop(connection);
    }

    /// Summaries of silenced warnings, with the bookkeeping's own deadlines.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        for (log, what) in [
            (
                &mut self.spawn_failures,
                "connections closed: cannot start the command",
            ),
            (&mut self.accept_failures, "failures to accept"),
        ] {
            if let Some(count) = log.take_summary(now) {
                log::warn!(
                    "{count} more {what} in the last {}",
                    format_duration(LOG_INTERVAL)
                );
            }
        }
        self.connections.tick(now)
    }

    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        [
            self.connections.next_deadline(now),
            self.spawn_failures.summary_due(),
            self.accept_failures.summary_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Whether the event loop should watch the listeners now.
    pub fn wants_listeners(&self, now: Instant) -> bool {
        self.connections.room(now) == Room::Open
    }
}

/// The other end of an accepted connection.
#[derive(Debug, Clone, Copy)]
enum Peer {
    Ip(SocketAddr),
    Unix,
}

/// accept4(2) with SOCK_CLOEXEC, keeping the peer address it returns (no
/// getpeername call). The connection is blocking: it is the child's.
fn accept_one(listener: RawFd) -> Result<(OwnedFd, Peer), Errno> {
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
fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
        v4 => v4,
    }
}

fn ip_address(address: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = address.as_sockaddr_in() {
        Some(SocketAddr::from(std::net::SocketAddrV4::from(*v4)))
    } else {
        address
            .as_sockaddr_in6()
            .map(|v6| SocketAddr::from(std::net::SocketAddrV6::from(*v6)))
    }
}

fn local_side(fd: BorrowedFd<'_>) -> LocalSide {
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

fn set_nonblocking(fd: BorrowedFd<'_>) -> Result<(), Errno> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = OFlag::from_bits_truncate(fcntl(fd.as_fd(), FcntlArg::F_GETFL)?);
    fcntl(fd, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: Signal = Signal::SIGTERM;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    fn ip(text: &str) -> Source {
        Source::Ip(text.parse().unwrap())
    }

    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_per_source: None,
            max_rate: None,
            stop_signal: TERM,
            stop_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn at_the_connection_limit_there_is_no_room_until_a_child_exits() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(2));
        assert_eq!(connections.room(t0), Room::Open);
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.started(pid(2), ip("10.0.0.2"), t0);
        assert_eq!(connections.room(t0), Room::Full);
        assert!(
            connections
                .exited(pid(99), ChildStatus::Exited(0))
                .is_empty(),
            "an orphan's exit frees nothing"
        );
        assert_eq!(connections.room(t0), Room::Full);
        connections.exited(pid(1), ChildStatus::Exited(0));
        assert_eq!(connections.room(t0), Room::Open);
        assert_eq!(connections.running(), 1);
        assert_eq!(connections.next_deadline(t0), None, "no timer while idle");
    }

    #[test]
    fn per_source_limit_counts_running_children_of_each_source() {
        let t0 = Instant::now();
        let mut l = limits(10);
        l.max_per_source = Some(2);
        let mut connections = Connections::new(l);
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        assert!(connections.admit(a, t0));
        connections.started(pid(1), a, t0);
        connections.started(pid(2), a, t0);
        assert!(!connections.admit(a, t0), "a third from the same address");
        assert!(connections.admit(b, t0), "others are not affected");
        assert!(connections.admit(Source::Uid(1000), t0));
        connections.exited(pid(1), ChildStatus::Exited(0));
        assert!(connections.admit(a, t0));
        connections.exited(pid(2), ChildStatus::Signaled(TERM));
        assert!(connections.per_source.is_empty(), "no entry left behind");
    }

    #[test]
    fn refusals_are_logged_once_per_interval_then_summarised() {
        let t0 = Instant::now();
        let mut log = QuietLog::default();
        assert!(log.should_log(t0));
        assert_eq!(log.summary_due(), None);
        for i in 0..1000 {
            assert!(!log.should_log(t0 + ms(i % 900)));
        }
        assert_eq!(log.summary_due(), Some(t0 + LOG_INTERVAL));
        assert_eq!(log.take_summary(t0 + ms(500)), None, "not yet");
        assert_eq!(log.take_summary(t0 + LOG_INTERVAL), Some(1000));
        assert_eq!(log.summary_due(), None);
        assert!(!log.should_log(t0 + LOG_INTERVAL + ms(1)));
        assert!(log.should_log(t0 + LOG_INTERVAL * 2));
    }

    #[test]
    fn rate_limit_allows_a_burst_then_spaces_starts() {
        let t0 = Instant::now();
        let mut l = limits(100);
        l.max_rate = Some(4);
        let mut connections = Connections::new(l);
        for n in 0..4 {
            assert_eq!(connections.room(t0), Room::Open, "burst start {n}");
            connections.started(pid(n + 1), ip("10.0.0.1"), t0);
        }
        let Room::WaitUntil(at) = connections.room(t0) else {
            panic!("expected a wait, got {:?}", connections.room(t0))
        };
        assert_eq!(at, t0 + ms(250));
        assert_eq!(connections.next_deadline(t0), Some(at));
        assert_eq!(connections.room(at), Room::Open);
        connections.started(pid(10), ip("10.0.0.1"), at);
        assert_eq!(connections.room(at), Room::WaitUntil(at + ms(250)));
        // After a quiet second the whole burst is available again.
        let later = at + Duration::from_secs(2);
        for n in 0..4 {
            assert_eq!(connections.room(later), Room::Open);
            connections.started(pid(20 + n), ip("10.0.0.1"), later);
        }
        assert!(matches!(connections.room(later), Room::WaitUntil(_)));
    }

    #[test]
    fn running_out_of_resources_pauses_accepting_briefly() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.pause(t0);
        assert_eq!(connections.room(t0), Room::WaitUntil(t0 + RESOURCE_PAUSE));
        assert_eq!(connections.next_deadline(t0), Some(t0 + RESOURCE_PAUSE));
        connections.tick(t0 + RESOURCE_PAUSE);
        assert_eq!(connections.room(t0 + RESOURCE_PAUSE), Room::Open);
        assert_eq!(connections.next_deadline(t0 + RESOURCE_PAUSE), None);
    }

    #[test]
    fn stop_signals_every_child_and_exits_zero_when_they_end() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.started(pid(2), ip("10.0.0.1"), t0);
        let mut actions = connections.stop(TERM, t0);
        actions.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            actions,
            vec![
                Action::Signal {
                    pid: pid(1),
                    signal: TERM
                },
                Action::Signal {
                    pid: pid(2),
                    signal: TERM
                }
            ]
        );
        assert_eq!(connections.room(t0), Room::Closed);
        assert_eq!(
            connections.next_deadline(t0),
            Some(t0 + Duration::from_secs(10))
        );
        assert!(
            connections
                .exited(pid(1), ChildStatus::Signaled(TERM))
                .is_empty()
        );
        assert_eq!(
            connections.exited(pid(2), ChildStatus::Exited(3)),
            vec![Action::Exit { status: 0 }]
        );
    }

    #[test]
    fn stop_with_nothing_running_exits_at_once() {
        let mut connections = Connections::new(limits(10));
        assert_eq!(
            connections.stop(Signal::SIGINT, Instant::now()),
            vec![Action::Exit { status: 0 }]
        );
    }

    #[test]
    fn children_that_outlive_the_stop_timeout_are_killed_and_reported() {
        let t0 = Instant::now();
        let mut l = limits(10);
        l.stop_timeout = ms(300);
        let mut connections = Connections::new(l);
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.stop(TERM, t0);
        assert!(connections.tick(t0 + ms(299)).is_empty());
        assert_eq!(
            connections.tick(t0 + ms(300)),
            vec![Action::Signal {
                pid: pid(1),
                signal: Signal::SIGKILL
            }]
        );
        assert_eq!(connections.next_deadline(t0 + ms(300)), None);
        assert_eq!(
            connections.exited(pid(1), ChildStatus::Signaled(Signal::SIGKILL)),
            vec![Action::Exit { status: 137 }]
        );
    }

    #[test]
    fn second_stop_request_kills_at_once() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.stop(TERM, t0);
        assert_eq!(
            connections.stop(Signal::SIGINT, t0),
            vec![Action::Signal {
                pid: pid(1),
                signal: Signal::SIGKILL
            }]
        );
    }

    #[test]
    fn forwarded_signals_reach_every_running_child() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        assert!(connections.forward(Signal::SIGUSR1).is_empty());
        connections.started(pid(1), ip("10.0.0.1"), t0);
        assert_eq!(
            connections.forward(Signal::SIGUSR1),
            vec![Action::Signal {
                pid: pid(1),
                signal: Signal::SIGUSR1
            }]
        );
    }

    #[test]
    fn mapped_ipv4_counts_as_ipv4() {
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().unwrap();
        assert_eq!(canonical_ip(mapped), "192.0.2.7".parse::<IpAddr>().unwrap());
        let v6: IpAddr = "2001:db8::1".parse().unwrap();
        assert_eq!(canonical_ip(v6), v6);
    }
}
