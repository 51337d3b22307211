//! The server side of the control socket: binding it (`ControlSocket`) and
//! serving it in the event loop (`Server`). It never blocks: the listener
//! and every connection are non-blocking; at most `MAX_CLIENTS` are served
//! at once, the rest wait in the kernel's backlog; a peer that is neither
//! sockhold's uid nor root is refused (SO_PEERCRED).
//!
//! Invariant: unless accepting is paused (`accept_paused_until`), the
//! listener was last accepted on until `EAGAIN` or until `MAX_CLIENTS`
//! (and a closing client accepts again): epoll is edge-triggered, so a
//! connection left in the queue otherwise gets no event of its own. A
//! failed accept (EMFILE, ...) pauses and is retried at the deadline.

use super::protocol::{self, MAX_REQUEST, REQUEST_TIMEOUT, Request};
use crate::addr::Transport;
use crate::error::{Error, errno_text, exit};
use crate::generations::supervisor::{GenerationId, Report};
use crate::listen::{self, FilePermissions, SocketFile, SocketOwner};
use crate::quiet_log::{LOG_INTERVAL, QuietLog};
use crate::upgrade::state::{Waiter, Waits};
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use nix::sys::socket::{Backlog, getsockopt, sockopt};
use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Connections served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 32;
/// Listen backlog of the control socket.
const BACKLOG: i32 = 16;
/// After an accept that failed for want of resources (EMFILE, ENFILE,
/// ENOBUFS, ENOMEM), how long to wait before trying again: the queued
/// connection stays queued meanwhile, as in accept mode.
const ACCEPT_PAUSE: Duration = Duration::from_millis(100);

/// The bound control socket, before the event loop exists (it is bound
/// before sockhold drops privileges, so that it can live in /run).
pub struct ControlSocket {
    fd: OwnedFd,
    file: SocketFile,
    path: PathBuf,
}

impl ControlSocket {
    /// Binds `path` with mode 0600, owned by `owner` (the user sockhold will
    /// run as after `--user`), with the same stale/live rules as `-l`.
    pub fn bind(path: &Path, owner: Option<SocketOwner>) -> Result<ControlSocket, Error> {
        let text = path.display().to_string();
        let backlog = Backlog::new(BACKLOG).unwrap_or(Backlog::MAXCONN);
        let permissions = FilePermissions {
            mode: Some(0o600),
            owner,
        };
        let (fd, file) =
            listen::bind_unix_path(path, Transport::Stream, backlog, permissions, &text).map_err(
                |error| {
                    Error::new(
                        error.exit_status,
                        error.message.replacen(
                            "cannot listen on",
                            "cannot create the control socket",
                            1,
                        ),
                    )
                },
            )?;
        log::info!("control socket at {}", path.display());
        Ok(ControlSocket {
            fd,
            file,
            path: path.to_owned(),
        })
    }
}

impl ControlSocket {
    /// The control socket an earlier sockhold of this pid bound
    /// (`upgrade/`): its fd, and its file by device and inode.
    pub fn adopt(fd: OwnedFd, path: &Path, device: u64, inode: u64) -> ControlSocket {
        ControlSocket {
            fd,
            file: SocketFile::adopted(path.to_owned(), device, inode),
            path: path.to_owned(),
        }
    }
}

/// Identifies one connection; its token is `base + 1 + id`.
pub type ClientId = usize;

enum State {
    /// Reading the request line.
    Reading { buffer: Vec<u8>, deadline: Instant },
    /// The request was read; the event loop is acting on it.
    Asked,
    /// Waiting for the outcome of a reload. `None`: the reload that carries
    /// this request has not started yet (it is queued behind another);
    /// it is the next one to start.
    AwaitingReload { generation: Option<GenerationId> },
    /// Waiting for the outcome of a pause.
    AwaitingPause,
    /// Waiting for the outcome of a scale.
    AwaitingScale,
    /// Writing a reply, then closing or holding the connection.
    Writing {
        reply: Vec<u8>,
        written: usize,
        then: AfterReply,
    },
    /// After `stop`: closed when sockhold exits, which the client waits for.
    HeldUntilExit,
}

impl State {
    /// When the request must have arrived; only a connection still
    /// reading it has such a deadline (the poll timeout and expiry agree).
    fn request_deadline(&self) -> Option<Instant> {
        match self {
            State::Reading { deadline, .. } => Some(*deadline),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum AfterReply {
    Close,
    HoldUntilExit,
}

struct Client {
    stream: UnixStream,
    state: State,
    /// Why this peer may not control sockhold; told once it has sent its
    /// request (replying before would race with its write, and closing
    /// with its request unread would reset the connection, losing the
    /// reply).
    refusal: Option<String>,
}

/// The control socket served by the event loop.
pub struct Server {
    listener: UnixListener,
    file: SocketFile,
    path: PathBuf,
    registry: Registry,
    /// The listener's token; clients use the tokens after it.
    base: usize,
    clients: HashMap<ClientId, Client>,
    next_client: ClientId,
    /// Requests read and not yet taken by the event loop.
    requests: Vec<(ClientId, Request)>,
    /// An accept failed: the next try is due then.
    accept_paused_until: Option<Instant>,
    accept_failures: QuietLog,
}

impl Server {
    /// Starts serving `socket` in the event loop, with tokens from `base`.
    pub fn new(socket: ControlSocket, registry: &Registry, base: usize) -> Result<Server, Error> {
        let fail = |error: std::io::Error| {
            Error::new(
                exit::OS,
                format!(
                    "cannot serve the control socket '{}': {error}",
                    socket.path.display()
                ),
            )
        };
        let std_listener = std::os::unix::net::UnixListener::from(socket.fd);
        // Only sockhold uses this socket (it is CLOEXEC and never passed to
        // a child), so making it non-blocking affects nobody else.
        std_listener.set_nonblocking(true).map_err(fail)?;
        let mut listener = UnixListener::from_std(std_listener);
        let registry = registry.try_clone().map_err(fail)?;
        registry
            .register(&mut listener, Token(base), Interest::READABLE)
            .map_err(fail)?;
        Ok(Server {
            listener,
            file: socket.file,
            path: socket.path,
            registry,
            base,
            clients: HashMap::new(),
            next_client: 0,
            requests: Vec::new(),
            accept_paused_until: None,
            accept_failures: QuietLog::default(),
        })
    }

    /// Handles readiness of the listener or a connection. Requests that
    /// become complete are collected for `take_requests`.
    pub fn handle_event(&mut self, token: Token, event: &mio::event::Event, now: Instant) {
        if token.0 == self.base {
            self.accept_pending(now);
            return;
        }
        let id = token.0 - self.base - 1;
        let waiting = matches!(
            self.clients.get(&id).map(|client| &client.state),
            Some(State::AwaitingReload { .. } | State::HeldUntilExit | State::Asked)
        );
        if waiting && (event.is_write_closed() || event.is_error()) {
            // Hung up before the answer: the reload goes on, the answer is
            // dropped. (A half-close after the request is not a hang-up.)
            log::debug!("control client {id} gone before the answer");
            self.close(id);
            return;
        }
        self.drive(id);
    }

    /// The requests read so far, for the event loop to act on (each with
    /// `reply`, `reply_and_hold` or `await_reload`).
    pub fn take_requests(&mut self) -> Vec<(ClientId, Request)> {
        std::mem::take(&mut self.requests)
    }

    /// Accepts while there is room; the rest wait in the backlog and are
    /// taken when a connection closes. After a failed accept, waits for
    /// the pause to end (`expire` tries again).
    fn accept_pending(&mut self, now: Instant) {
        if self.accept_paused_until.is_some() {
            return;
        }
        while self.clients.len() < MAX_CLIENTS {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                // The peer gave up while queued: take the next one.
                Err(error)
                    if matches!(
                        error.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue;
                }
                Err(error) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: the connection stays
                    // queued and no new event will say so; try again after
                    // a pause instead of spinning on it or stranding it.
                    if self.accept_failures.should_log(now) {
                        log::warn!(
                            "control socket: cannot accept a connection: {}; trying again in {}",
                            io_error_text(&error),
                            crate::config::format_duration(ACCEPT_PAUSE)
                        );
                    }
                    self.accept_paused_until = Some(now + ACCEPT_PAUSE);
                    return;
                }
            };
            let id = self.take_client_id();
            log::debug!("control socket: client {id} connected");
            let token = Token(self.base + 1 + id);
            if let Err(error) =
                self.registry
                    .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
            {
                log::warn!("control socket: cannot watch a connection: {error}");
                continue;
            }
            let refusal = check_peer(&stream).err();
            if let Some(reason) = &refusal {
                log::warn!("control socket: refused a client: {reason}");
            }
            let state = State::Reading {
                buffer: Vec::new(),
                deadline: now + REQUEST_TIMEOUT,
            };
            self.clients.insert(
                id,
                Client {
                    stream,
                    state,
                    refusal,
                },
            );
            self.drive(id);
        }
    }

    /// A free id. Ids count up and wrap before their tokens would pass
    /// `usize::MAX` (a 32-bit `usize` leaves room for 2^30 of them),
    /// skipping ids still in use.
    fn take_client_id(&mut self) -> ClientId {
        let last = usize::MAX - self.base - 1;
        loop {
            let id = self.next_client;
            self.next_client = if id >= last { 0 } else { id + 1 };
            if !self.clients.contains_key(&id) {
                return id;
            }
        }
    }

    /// Moves a connection forward as far as it goes without blocking.
    fn drive(&mut self, id: ClientId) {
        enum Next {
            Stay,
            Close,
            Asked(Request),
            Reply(String),
            Hold,
        }
        let Some(client) = self.clients.get_mut(&id) else {
            return;
        };
        let next = match &mut client.state {
            State::Reading { buffer, .. } => match read_request(&mut client.stream, buffer) {
                ReadOutcome::Pending => Next::Stay,
                ReadOutcome::Gone => Next::Close,
                _ if client.refusal.is_some() => Next::Reply(protocol::permission_denied(
                    client.refusal.as_deref().unwrap_or_default(),
                )),
                ReadOutcome::Line(line) => match Request::parse(&line) {
                    Some(request) => Next::Asked(request),
                    None => Next::Reply(protocol::unknown_request(&line)),
                },
                ReadOutcome::TooLong => Next::Reply(protocol::request_too_long()),
            },
            State::Writing {
                reply,
                written,
                then,
            } => match write_some(&mut client.stream, reply, written) {
                WriteOutcome::Done if *then == AfterReply::HoldUntilExit => Next::Hold,
                WriteOutcome::Done | WriteOutcome::Gone => Next::Close,
                WriteOutcome::Pending => Next::Stay,
            },
            State::Asked
            | State::AwaitingReload { .. }
            | State::AwaitingPause
            | State::AwaitingScale
            | State::HeldUntilExit => Next::Stay,
        };
        match next {
            Next::Stay => {}
            Next::Close => self.close(id),
            Next::Asked(request) => {
                client.state = State::Asked;
                self.requests.push((id, request));
            }
            Next::Reply(line) => self.reply(id, &line),
            Next::Hold => client.state = State::HeldUntilExit,
        }
    }

    /// What an upgrade carries: the listening fd, its file's device and
    /// inode, and the connection of `client` (answered by the new binary).
    pub fn carried(&self, client: ClientId) -> (RawFd, u64, u64, Option<RawFd>) {
        let (device, inode) = self.file.identity();
        let connection = self.clients.get(&client).map(|c| c.stream.as_raw_fd());
        (self.listener.as_raw_fd(), device, inode, connection)
    }

    /// What an upgrade carries besides: the connections of the clients
    /// waiting for an outcome, and what each waits for, so that the new
    /// binary answers them; and those whose request is not read whole
    /// yet, with what was read, so that the new binary reads on.
    pub fn waiters(&self, clock: crate::upgrade::state::Clock) -> Vec<Waiter> {
        self.clients
            .values()
            .filter_map(|client| {
                let waits = match &client.state {
                    State::AwaitingReload { generation } => Waits::Reload {
                        generation: *generation,
                    },
                    State::AwaitingPause => Waits::Pause,
                    State::AwaitingScale => Waits::Scale,
                    State::Reading { buffer, deadline } => Waits::Request {
                        read: buffer.clone(),
                        deadline: clock.to_ns(*deadline),
                    },
                    _ => return None,
                };
                Some(Waiter {
                    fd: client.stream.as_raw_fd(),
                    waits,
                })
            })
            .collect()
    }

    /// A client that waited for an outcome (or was sending its request)
    /// when the earlier binary of this pid executed this one: it waits on
    /// here. Its peer is checked again, as at the accept.
    pub fn adopt_waiter(
        &mut self,
        connection: OwnedFd,
        waits: Waits,
        clock: crate::upgrade::state::Clock,
    ) {
        let std_stream = std::os::unix::net::UnixStream::from(connection);
        if let Err(error) = std_stream.set_nonblocking(true) {
            log::warn!("control socket: cannot take over a waiting client: {error}");
            return;
        }
        let mut stream = UnixStream::from_std(std_stream);
        let id = self.take_client_id();
        let token = Token(self.base + 1 + id);
        if let Err(error) =
            self.registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("control socket: cannot watch a waiting client: {error}");
            return;
        }
        let reading = matches!(waits, Waits::Request { .. });
        let state = match waits {
            Waits::Reload { generation } => State::AwaitingReload { generation },
            Waits::Pause => State::AwaitingPause,
            Waits::Scale => State::AwaitingScale,
            Waits::Request { read, deadline } => State::Reading {
                buffer: read,
                deadline: clock.to_instant(deadline),
            },
        };
        let refusal = if reading {
            check_peer(&stream).err()
        } else {
            None
        };
        log::debug!("control socket: client {id} waits on after the upgrade");
        self.clients.insert(
            id,
            Client {
                stream,
                state,
                refusal,
            },
        );
        if reading {
            // What came during the exec is read now (registered, epoll
            // reports it too, but the request may be whole already).
            self.drive(id);
        }
    }

    /// Sends one reply line and closes the connection once it is written.
    pub fn reply(&mut self, id: ClientId, line: &str) {
        self.send(id, line, AfterReply::Close);
    }

    /// Sends one reply line and keeps the connection open until sockhold
    /// exits (`stop`: the client learns of the exit from the close).
    pub fn reply_and_hold(&mut self, id: ClientId, line: &str) {
        self.send(id, line, AfterReply::HoldUntilExit);
    }

    fn send(&mut self, id: ClientId, line: &str, then: AfterReply) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.state = writing(line, then);
            self.drive(id);
        }
    }

    /// The client waits for the outcome of the reload its request starts
    /// or joins; call before the supervisor handles that request, so that
    /// the `ReloadStarted` it reports is matched.
    pub fn await_reload(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.state = State::AwaitingReload { generation: None };
        }
    }

    /// The client waits for the outcome of its `pause`; call before the
    /// supervisor handles it.
    pub fn await_pause(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.state = State::AwaitingPause;
        }
    }

    /// The client waits for the outcome of its `scale`; call before the
    /// supervisor handles it.
    pub fn await_scale(&mut self, id: ClientId) {
        if let Some(client) = self.clients.get_mut(&id) {
            client.state = State::AwaitingScale;
        }
    }

    /// Answers the clients that a supervisor report concerns.
    pub fn report(&mut self, report: &Report) {
        let mut answers: Vec<(ClientId, String)> = Vec::new();
        for (id, client) in &mut self.clients {
            if let State::AwaitingScale = client.state {
                match report {
                    Report::Scaled { what, .. } => answers.push((*id, protocol::scaled(what))),
                    Report::ScaleFailed { reason } => {
                        answers.push((*id, protocol::error(reason)));
                    }
                    _ => {}
                }
                continue;
            }
            if let State::AwaitingPause = client.state {
                match report {
                    Report::Paused { what } => answers.push((*id, protocol::paused(what))),
                    Report::PauseRefused { reason } => {
                        answers.push((*id, protocol::error(reason)));
                    }
                    _ => {}
                }
                continue;
            }
            let State::AwaitingReload { generation } = &mut client.state else {
                continue;
            };
            match report {
                Report::ReloadStarted {
                    generation: started,
                } => {
                    generation.get_or_insert(*started);
                }
                Report::ReloadSucceeded {
                    generation: done,
                    pid,
                } if *generation == Some(*done) => {
                    answers.push((*id, protocol::reloaded(*done, *pid)));
                }
                Report::ReloadFailed {
                    generation: failed,
                    reason,
                } if *generation == Some(*failed) => {
                    answers.push((*id, protocol::reload_failed(reason)));
                }
                Report::ReloadRefused { reason } if generation.is_none() => {
                    answers.push((*id, protocol::error(reason)));
                }
                Report::NothingToReload { reason } if generation.is_none() => {
                    answers.push((*id, protocol::nothing_to_reload(format_args!(": {reason}"))));
                }
                Report::Stopping => {
                    answers.push((*id, protocol::reload_failed("sockhold is stopping")));
                }
                _ => {}
            }
        }
        for (id, answer) in answers {
            self.reply(id, &answer);
        }
    }

    /// The earliest deadline (a request due, a paused accept, a summary
    /// of failed accepts), for the event loop's poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(|client| client.state.request_deadline())
            .chain(self.accept_paused_until)
            .chain(self.accept_failures.summary_due())
            .min()
    }

    /// Closes connections that did not send a request in time, and tries
    /// a paused accept again once its pause is over.
    pub fn expire(&mut self, now: Instant) {
        if let Some(count) = self.accept_failures.take_summary(now) {
            log::warn!(
                "control socket: {count} more failures to accept in the last {}",
                crate::config::format_duration(LOG_INTERVAL)
            );
        }
        if self.accept_paused_until.is_some_and(|until| until <= now) {
            self.accept_paused_until = None;
            self.accept_pending(now);
        }
        let late: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, client)| {
                client
                    .state
                    .request_deadline()
                    .is_some_and(|deadline| deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.reply(id, &protocol::no_request_in_time());
        }
    }

    fn close(&mut self, id: ClientId) {
        if let Some(mut client) = self.clients.remove(&id) {
            let _ = self.registry.deregister(&mut client.stream);
            // Closing with unread input makes the kernel reset the
            // connection, and the peer would lose the reply still queued
            // for it: read what is there first (bounded).
            let mut sink = [0u8; 4096];
            for _ in 0..16 {
                match client.stream.read(&mut sink) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        // A slot is free: take a connection that waited in the backlog (no
        // new readiness event would come for it: epoll is edge-triggered).
        if self.clients.len() == MAX_CLIENTS - 1 {
            self.accept_pending(Instant::now());
        }
    }

    /// At exit: tells the clients still waiting for a reload that there
    /// will be no outcome, flushes what can be flushed without waiting,
    /// and removes the socket file. Connections close as sockhold exits.
    pub fn shutdown(&mut self) {
        for client in self.clients.values_mut() {
            match &mut client.state {
                State::AwaitingReload { .. } | State::Asked => {
                    let reply = protocol::line(&protocol::reload_failed(
                        "sockhold exited before the reload finished",
                    ));
                    let mut written = 0;
                    let _ = write_some(&mut client.stream, &reply, &mut written);
                }
                State::Writing { reply, written, .. } => {
                    let _ = write_some(&mut client.stream, reply, written);
                }
                State::AwaitingPause | State::AwaitingScale => {
                    let reply = protocol::line(&protocol::error("sockhold exited"));
                    let mut written = 0;
                    let _ = write_some(&mut client.stream, &reply, &mut written);
                }
                State::Reading { .. } | State::HeldUntilExit => {}
            }
        }
        self.file.remove_if_ours();
        log::debug!("control socket {} closed", self.path.display());
    }
}

/// `too many open files`, as `errno_text` words it.
fn io_error_text(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(errno) => errno_text(nix::errno::Errno::from_raw(errno)),
        None => error.to_string(),
    }
}

fn writing(line: &str, then: AfterReply) -> State {
    State::Writing {
        reply: protocol::line(line),
        written: 0,
        then,
    }
}

/// Only sockhold's own uid and root may control it.
fn check_peer(stream: &UnixStream) -> Result<(), String> {
    let ours = nix::unistd::geteuid().as_raw();
    match getsockopt(stream, sockopt::PeerCredentials) {
        Ok(peer) if peer.uid() == ours || peer.uid() == 0 => Ok(()),
        Ok(peer) => Err(format!(
            "uid {} is neither sockhold's uid {ours} nor root",
            peer.uid()
        )),
        Err(errno) => Err(format!(
            "cannot check the peer's credentials: {}",
            errno_text(errno)
        )),
    }
}

enum ReadOutcome {
    Pending,
    Line(String),
    TooLong,
    Gone,
}

/// Reads what is there (until WouldBlock: mio is edge-triggered).
fn read_request(stream: &mut UnixStream, buffer: &mut Vec<u8>) -> ReadOutcome {
    let mut chunk = [0u8; MAX_REQUEST];
    loop {
        if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
            return ReadOutcome::Line(String::from_utf8_lossy(&buffer[..end]).into_owned());
        }
        if buffer.len() >= MAX_REQUEST {
            return ReadOutcome::TooLong;
        }
        match stream.read(&mut chunk[..MAX_REQUEST - buffer.len()]) {
            // End of input: a last line without a newline still counts.
            Ok(0) if buffer.is_empty() => return ReadOutcome::Gone,
            Ok(0) => return ReadOutcome::Line(String::from_utf8_lossy(buffer).into_owned()),
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
            Err(error) if error.kind() == ErrorKind::WouldBlock => return ReadOutcome::Pending,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            Err(_) => return ReadOutcome::Gone,
        }
    }
}

enum WriteOutcome {
    Done,
    Pending,
    Gone,
}

fn write_some(stream: &mut UnixStream, reply: &[u8], written: &mut usize) -> WriteOutcome {
    while *written < reply.len() {
        match stream.write(&reply[*written..]) {
            Ok(0) => return WriteOutcome::Gone,
            Ok(n) => *written += n,
            Err(error) if error.kind() == ErrorKind::WouldBlock => return WriteOutcome::Pending,
            Err(error) if error.kind() == ErrorKind::Interrupted => {}
            // EPIPE: the client left (Rust ignores SIGPIPE, so it is an error).
            Err(_) => return WriteOutcome::Gone,
        }
    }
    WriteOutcome::Done
}
