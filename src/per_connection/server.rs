//! Per-connection mode's glue: accepts on every listening socket, builds
//! each connection's environment, and spawns the command once per
//! connection, feeding the bookkeeping (`limits.rs`).
//!
//! Invariants:
//! - Whenever the listeners are watched, every one of them was last
//!   accepted on until `EAGAIN` (or was just registered, and epoll reports a
//!   queued connection at registration): edge-triggered events are never lost.
//! - Accepted sockets are born CLOEXEC (`accept4`) and closed in sockhold
//!   right after the spawn: the child's dup2'd copy is the only one left.

use super::limits::{self, Action, Connections, Limits, RESOURCE_PAUSE, Room, Source};
use crate::child::{ChildHandle, Children};
use crate::config::{AcceptSettings, format_duration};
use crate::error::{Error, exit};
use crate::listen::Listener;
use crate::net::{self, LocalSide, Peer};
use crate::quiet_log::{LOG_INTERVAL, QuietLog};
use crate::spawn::{self, ChildSpec, ChildStdio, ExtraEnv, SpawnError, Spawner};
use nix::errno::Errno;
use nix::sys::socket::{self, SockaddrStorage, sockopt};
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::time::Instant;

/// Connections accepted from one listener before the event loop looks at
/// its other events (children's exits above all) again.
const ACCEPT_BATCH: usize = 16;

/// The glue of per-connection mode: accepts, spawns, and feeds
/// `Connections`.
pub struct AcceptServer {
    pub connections: Connections,
    /// The child as prepared once: program resolved, base environment
    /// converted. Each connection only sets its fd and extra variables.
    spec: ChildSpec,
    /// The connection's own variables, rebuilt in place per connection.
    env: ExtraEnv,
    inetd: bool,
    signal_group: bool,
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
            let fd = listener.fd();
            net::set_nonblocking(fd)
                .map_err(|errno| Error::os("cannot accept on", &listener.description, errno, ""))?;
            local_sides.push(net::local_side(fd));
        }
        let mut env = inherited_env.to_vec();
        if !settings.inetd {
            env.push(("LISTEN_FDS".into(), "1".into()));
            env.push(("LISTEN_FDNAMES".into(), "connection".into()));
        }
        let mut spec = ChildSpec::new(program, command, &env, Vec::new(), !settings.inetd)
            .map_err(|reason| Error::new(exit::CANNOT_EXECUTE, format!("cannot run: {reason}")))?;
        spec.set_process_group(settings.signal_group);
        Ok(AcceptServer {
            connections: Connections::new(Limits::from(settings)),
            spec,
            env: ExtraEnv::default(),
            inetd: settings.inetd,
            signal_group: settings.signal_group,
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
    pub fn accept_pending(&mut self, children: &mut Children, spawner: &mut Spawner) {
        for index in 0..self.pending.len() {
            if self.pending[index] {
                self.pending[index] = !self.accept_on(index, children, spawner);
            }
        }
    }

    /// Accepts on listener `index` until it has nothing queued, there is no
    /// room, or a batch is done; every accepted connection is spawned or
    /// closed at once. Returns whether the listener is done (not worth
    /// trying again before its next event).
    fn accept_on(&mut self, index: usize, children: &mut Children, spawner: &mut Spawner) -> bool {
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
            let (connection, peer) = match net::accept_one(fd) {
                Ok(accepted) => accepted,
                Err(Errno::EAGAIN) => return true,
                // The connection died in the queue, or a transient network
                // error that accept(2) says to treat like EAGAIN: try the next.
                Err(errno) if net::accept_error_is_transient(errno) => continue,
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
            self.serve(index, connection, peer, now, children, spawner);
        }
        false
    }

    /// Spawns the child of one accepted connection, or closes it.
    fn serve(
        &mut self,
        index: usize,
        connection: OwnedFd,
        peer: Peer,
        now: Instant,
        children: &mut Children,
        spawner: &mut Spawner,
    ) {
        let credentials = match peer {
            Peer::Ip(_) => None,
            Peer::Unix => socket::getsockopt(&connection, sockopt::PeerCredentials).ok(),
        };
        let source = match (peer, credentials) {
            (Peer::Ip(remote), _) => Source::Ip(net::canonical_ip(remote.ip())),
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
                        .and_then(|address| net::ip_address(&address)),
                };
                let remote_ip = net::canonical_ip(remote.ip());
                self.env.push("PROTO", "TCP");
                self.env.push("TCPREMOTEIP", remote_ip);
                self.env.push("TCPREMOTEPORT", remote.port());
                if let Some(local) = local {
                    self.env.push("TCPLOCALIP", net::canonical_ip(local.ip()));
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
            self.spec.set_stdio(ChildStdio::Connection(raw));
        } else {
            self.spec.set_fds(&[raw]);
        }
        match spawn::spawn_with_env(spawner, &self.spec, &self.env) {
            Ok(spawn::Spawned { pid, pidfd, .. }) => {
                log::debug!("connection from {source}: pid {pid}");
                children.insert(ChildHandle::new(pid, pidfd, self.signal_group));
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
    /// What an upgrade carries: the bookkeeping and the quiet logs' state.
    /// (Which listeners were still to be drained is not: the new binary
    /// registers them afresh, and epoll reports what is queued then.)
    pub fn carry(&self) -> Result<Carried, String> {
        Ok(Carried {
            connections: self.connections.carry()?,
            spawn_failures: self.spawn_failures.carried(),
            accept_failures: self.accept_failures.carried(),
        })
    }

    pub fn restore(&mut self, carried: Carried) {
        let limits = self.connections.limits().clone();
        self.connections = Connections::restore(limits, carried.connections);
        let (last, silenced) = carried.spawn_failures;
        self.spawn_failures = QuietLog::restored(last, silenced);
        let (last, silenced) = carried.accept_failures;
        self.accept_failures = QuietLog::restored(last, silenced);
    }
}

/// What an upgrade carries of `AcceptServer`.
pub struct Carried {
    pub connections: limits::Carried,
    pub spawn_failures: (Option<Instant>, u64),
    pub accept_failures: (Option<Instant>, u64),
}
