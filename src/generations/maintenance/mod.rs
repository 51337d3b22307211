//! `--maintenance FILE`: while nobody serves, sockhold answers the
//! connections on its stream sockets itself with FILE's bytes. The
//! supervisor decides when (`Action::StartMaintenance`/`StopMaintenance`);
//! this file accepts, runs each connection's `Conversation`, and counts.
//!
//! Invariants:
//! - Answering only while no process of any generation is alive, and no
//!   process at all below sockhold (an orphaned worker may still hold the
//!   sockets and accept): then sockhold alone accepts, a listener that
//!   polls readable has a connection, and the listeners' O_NONBLOCK, which
//!   every child shares, is never touched. Connections are accepted with
//!   `accept4(SOCK_NONBLOCK)`, which sets it on the connection only.
//! - Never blocking sockhold: a listener is accepted on only after a
//!   zero-timeout poll says it has a connection queued, every connection is
//!   non-blocking, and every conversation has a deadline.
//! - At most `MAX_CONNECTIONS` open at once (then the kernel queues) and
//!   `MAX_PER_SOURCE` from one source (more are closed at once).
//! - Watched edge-triggered: each wakeup reads or writes until EAGAIN, and
//!   a state change goes on at once with the next step.

pub mod conversation;

use crate::addr::Transport;
use crate::config::{DEFAULT_MAX_CONNECTIONS, MaintenanceSettings, format_duration};
use crate::engine::Context;
use crate::net::{self, Peer};
use crate::per_connection::limits::{RESOURCE_PAUSE, Source};
use crate::quiet_log::QuietLog;
use conversation::{Conversation, Received, Step};
use nix::errno::Errno;
use nix::sys::socket::{self, MsgFlags, Shutdown, sockopt};
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::Instant;

/// Connections answered at once; more wait in the kernel's queue. The same
/// as `--max-connections`' default (systemd's MaxConnections=).
pub const MAX_CONNECTIONS: usize = DEFAULT_MAX_CONNECTIONS;
/// Connections from one source (IP address; uid on Unix sockets) answered
/// at once; more are closed at once.
pub const MAX_PER_SOURCE: usize = 16;
/// The largest FILE: an answer is a short page.
pub const MAX_ANSWER_BYTES: u64 = 1024 * 1024;
/// The keys of the answered connections' sources (`Context::watch`):
/// `KEY_BASE + slot`: above any generation id (notify sockets) in
/// practice, and without the bit of `--intercept-bind`'s keys (1 << 29).
const KEY_BASE: u64 = 1 << 28;
/// Accepted per listener before the loop looks at its other events.
const ACCEPT_BATCH: usize = 16;
/// Reads or writes per connection per wakeup; past it the connection is
/// registered again, so that edge-triggered epoll reports what is left.
const STEPS_PER_WAKEUP: usize = 128;

/// FILE's bytes: a regular file of at most `MAX_ANSWER_BYTES`; the reason
/// it cannot be used, if not.
pub fn read_answer(path: &Path) -> Result<Vec<u8>, String> {
    let describe = |error: std::io::Error| match error.raw_os_error() {
        Some(code) => crate::error::errno_text(Errno::from_raw(code)),
        None => error.to_string(),
    };
    let metadata = std::fs::metadata(path).map_err(describe)?;
    if !metadata.is_file() {
        return Err("not a regular file".to_string());
    }
    if metadata.len() > MAX_ANSWER_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_ANSWER_BYTES} an answer may have",
            metadata.len()
        ));
    }
    std::fs::read(path).map_err(describe)
}

struct Connection {
    fd: OwnedFd,
    conversation: Conversation,
    /// The answer as it was when the connection was accepted (FILE may be
    /// read again meanwhile).
    answer: Rc<[u8]>,
    source: Source,
}

/// What an upgrade carries of the answering (`upgrade/`): the counters,
/// and every connection being answered, with the answer it is given.
pub struct Carried<Fd> {
    pub wanted: Option<String>,
    pub answering: bool,
    pub answering_since: Option<Instant>,
    pub answered_this_time: u64,
    pub answered: u64,
    pub retry_at: Option<Instant>,
    /// The answers the connections are given (FILE may have been read
    /// again between two accepts); each connection names one by index.
    pub answers: Vec<Vec<u8>>,
    pub connections: Vec<CarriedConnection<Fd>>,
}

pub struct CarriedConnection<Fd> {
    pub slot: usize,
    pub fd: Fd,
    pub source: Source,
    pub conversation: conversation::Parts,
    pub answer: usize,
}

pub struct Maintenance {
    file: PathBuf,
    answer: Rc<[u8]>,
    /// Why the supervisor wants answering (None: it does not).
    wanted: Option<String>,
    /// Whether sockhold answers now (it may wait for leftovers to go).
    answering: bool,
    /// Since when, and how many connections it answered since.
    answering_since: Option<Instant>,
    answered_this_time: u64,
    /// Connections answered over sockhold's life, for `status`.
    answered: u64,
    slots: Vec<Option<Connection>>,
    per_source: HashMap<Source, usize>,
    /// Listeners reported readable and not yet accepted on until empty.
    pending: Vec<bool>,
    /// After running out of fds or memory: no accept before then.
    retry_at: Option<Instant>,
    buffer: Box<[u8]>,
    accept_failures: QuietLog,
    refused: QuietLog,
}

impl Maintenance {
    pub fn new(settings: &MaintenanceSettings, listeners: usize) -> Maintenance {
        Maintenance {
            file: settings.file.clone(),
            answer: settings.answer.clone().into(),
            wanted: None,
            answering: false,
            answering_since: None,
            answered_this_time: 0,
            answered: 0,
            slots: (0..MAX_CONNECTIONS).map(|_| None).collect(),
            per_source: HashMap::new(),
            pending: vec![false; listeners],
            retry_at: None,
            buffer: vec![0; 16 * 1024].into_boxed_slice(),
            accept_failures: QuietLog::default(),
            refused: QuietLog::default(),
        }
    }

    /// The answering as it is, for an upgrade.
    pub fn carry(&self) -> Carried<std::os::fd::RawFd> {
        let mut answers: Vec<Rc<[u8]>> = Vec::new();
        let mut connections = Vec::new();
        for (slot, connection) in self.slots.iter().enumerate() {
            let Some(connection) = connection else {
                continue;
            };
            let answer = match answers
                .iter()
                .position(|a| Rc::ptr_eq(a, &connection.answer))
            {
                Some(index) => index,
                None => {
                    answers.push(Rc::clone(&connection.answer));
                    answers.len() - 1
                }
            };
            connections.push(CarriedConnection {
                slot,
                fd: connection.fd.as_raw_fd(),
                source: connection.source,
                conversation: connection.conversation.parts(),
                answer,
            });
        }
        Carried {
            wanted: self.wanted.clone(),
            answering: self.answering,
            answering_since: self.answering_since,
            answered_this_time: self.answered_this_time,
            answered: self.answered,
            retry_at: self.retry_at,
            answers: answers.iter().map(|a| a.to_vec()).collect(),
            connections,
        }
    }

    /// Takes over what the old binary was answering: the connections are
    /// watched again under their slots' keys, and the listeners too while
    /// answering (epoll then reports what queued meanwhile).
    pub fn restore(&mut self, carried: Carried<OwnedFd>, context: &mut Context<'_>) {
        self.wanted = carried.wanted;
        self.answering = carried.answering;
        self.answering_since = carried.answering_since;
        self.answered_this_time = carried.answered_this_time;
        self.answered = carried.answered;
        self.retry_at = carried.retry_at;
        let answers: Vec<Rc<[u8]>> = carried.answers.into_iter().map(Rc::from).collect();
        for connection in carried.connections {
            let slot = connection.slot;
            let (Some(answer), true) = (
                answers.get(connection.answer),
                slot < self.slots.len() && self.slots[slot].is_none(),
            ) else {
                // Not from a sockhold: closed (dropped) rather than kept
                // unanswered.
                log::warn!("maintenance: a carried connection in slot {slot} is not valid; closed");
                continue;
            };
            *self.per_source.entry(connection.source).or_insert(0) += 1;
            let raw = connection.fd.as_raw_fd();
            self.slots[slot] = Some(Connection {
                fd: connection.fd,
                conversation: Conversation::from_parts(connection.conversation),
                answer: Rc::clone(answer),
                source: connection.source,
            });
            context.watch_read_write(raw, KEY_BASE + slot as u64, "a maintenance connection");
        }
        if self.answering {
            context.watch_listeners(true);
        }
    }

    /// Whether `key` (of `Event::SourceReady`) is one of the connections.
    pub fn owns(key: u64) -> bool {
        key >= KEY_BASE && key < KEY_BASE + MAX_CONNECTIONS as u64
    }

    pub fn is_answering(&self) -> bool {
        self.answering
    }

    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// On `reload` and `resume`: FILE again; unreadable, the old answer
    /// stays.
    pub fn read_again(&mut self) {
        match read_answer(&self.file) {
            Ok(answer) => {
                if *answer != *self.answer {
                    log::info!(
                        "maintenance file '{}' read again: {} bytes",
                        self.file.display(),
                        answer.len()
                    );
                }
                self.answer = answer.into();
            }
            Err(reason) => log::warn!(
                "cannot read --maintenance file '{}' again: {reason}; answering with the {} bytes read before",
                self.file.display(),
                self.answer.len()
            ),
        }
    }

    /// `Action::StartMaintenance`.
    pub fn start(&mut self, why: String, context: &mut Context<'_>) {
        self.wanted = Some(why);
        self.try_answering(context, true);
    }

    /// A process was reaped: answering may wait for it.
    pub fn reaped(&mut self, context: &mut Context<'_>) {
        self.try_answering(context, false);
    }

    /// Starts answering if it is wanted and nothing below sockhold is left
    /// that could accept on the sockets too.
    fn try_answering(&mut self, context: &mut Context<'_>, first: bool) {
        let Some(why) = &self.wanted else {
            return;
        };
        if self.answering {
            return;
        }
        let left = crate::leftovers::children_of(nix::unistd::Pid::this());
        if !left.is_empty() {
            if first {
                log::warn!(
                    "maintenance answering waits ({why}): {} left behind by a generation may still accept on the sockets",
                    crate::leftovers::describe(&left)
                );
            }
            return;
        }
        log::info!(
            "maintenance answering started ({why}): connections get the {} bytes of '{}'",
            self.answer.len(),
            self.file.display()
        );
        self.answering = true;
        self.answering_since = Some(Instant::now());
        self.answered_this_time = 0;
        // Registered, epoll reports what is queued already.
        context.watch_listeners(true);
    }

    /// `Action::StopMaintenance`: the listeners go back to the children;
    /// connections accepted already are answered to the end.
    pub fn stop(&mut self, context: &mut Context<'_>) {
        self.wanted = None;
        if !self.answering {
            return;
        }
        self.answering = false;
        context.watch_listeners(false);
        self.pending.fill(false);
        let since = self
            .answering_since
            .take()
            .map(|since| format_duration(since.elapsed()))
            .unwrap_or_default();
        log::info!(
            "maintenance answering stopped: {} connections answered in {since}",
            self.answered_this_time
        );
    }

    /// A watched listener has something queued.
    pub fn listener_ready(&mut self, index: usize) {
        if let Some(pending) = self.pending.get_mut(index) {
            *pending = self.answering;
        }
    }

    /// Accepts on every listener that reported a connection, as long as
    /// there is room.
    pub fn accept_pending(&mut self, context: &mut Context<'_>) {
        let now = Instant::now();
        if !self.answering || self.retry_at.is_some_and(|at| at > now) {
            return;
        }
        self.retry_at = None;
        for index in 0..self.pending.len() {
            if self.pending[index] {
                self.pending[index] = !self.accept_on(index, now, context);
            }
        }
    }

    /// Accepts a batch on listener `index`; true when it has nothing
    /// queued any more (or is no stream socket).
    fn accept_on(&mut self, index: usize, now: Instant, context: &mut Context<'_>) -> bool {
        let Some(listener) = context.listeners.get(index) else {
            return true;
        };
        // Datagram sockets are left alone: they have no connections.
        if listener.transport == Transport::Datagram {
            return true;
        }
        let fd = listener.raw_fd();
        for _ in 0..ACCEPT_BATCH {
            let Some(slot) = self.slots.iter().position(Option::is_none) else {
                // Full: the kernel queues; a closing connection makes room.
                return false;
            };
            if !net::has_queued(context.listeners[index].fd()) {
                return true;
            }
            let (connection, peer) = match net::accept_nonblocking(fd) {
                Ok(accepted) => accepted,
                Err(Errno::EAGAIN) => return true,
                // Died in the queue, or transient (accept(2)): the next.
                Err(errno) if net::accept_error_is_transient(errno) => continue,
                Err(errno) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: it stays queued.
                    if self.accept_failures.should_log(now) {
                        log::warn!(
                            "maintenance: cannot accept a connection: {}; trying again in {}",
                            crate::error::errno_text(errno),
                            format_duration(RESOURCE_PAUSE)
                        );
                    }
                    self.retry_at = Some(now + RESOURCE_PAUSE);
                    return false;
                }
            };
            let source = match peer {
                Peer::Ip(remote) => Source::Ip(net::canonical_ip(remote.ip())),
                Peer::Unix => socket::getsockopt(&connection, sockopt::PeerCredentials)
                    .map_or(Source::Unknown, |credentials| {
                        Source::Uid(credentials.uid())
                    }),
            };
            let count = self.per_source.entry(source).or_insert(0);
            if *count >= MAX_PER_SOURCE {
                if self.refused.should_log(now) {
                    log::warn!(
                        "maintenance: connection from {source} closed: it has {MAX_PER_SOURCE} being answered"
                    );
                }
                continue; // `connection` is closed here.
            }
            *count += 1;
            let raw = connection.as_raw_fd();
            self.slots[slot] = Some(Connection {
                fd: connection,
                conversation: Conversation::new(self.answer.len(), now),
                answer: Rc::clone(&self.answer),
                source,
            });
            context.watch_read_write(raw, KEY_BASE + slot as u64, "a maintenance connection");
            self.drive(slot, now, context);
        }
        false
    }

    /// A connection's socket is ready.
    pub fn source_ready(&mut self, key: u64, context: &mut Context<'_>) {
        if let Some(slot) = key.checked_sub(KEY_BASE) {
            self.drive(slot as usize, Instant::now(), context);
        }
    }

    /// Runs a connection's conversation until it must wait (EAGAIN, a
    /// deadline) or is over.
    fn drive(&mut self, slot: usize, now: Instant, context: &mut Context<'_>) {
        let Some(connection) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return;
        };
        let fd = connection.fd.as_raw_fd();
        let c = &mut connection.conversation;
        let mut waits = false;
        for _ in 0..STEPS_PER_WAKEUP {
            match c.step() {
                step @ (Step::Read | Step::Drain) => {
                    match socket::recv(fd, &mut self.buffer, MsgFlags::MSG_DONTWAIT) {
                        Ok(0) => c.received(Received::Eof, now),
                        Ok(n) => c.received(Received::Bytes(n), now),
                        Err(Errno::EAGAIN) => {
                            waits = true;
                            break;
                        }
                        Err(Errno::EINTR) => {}
                        Err(errno) => {
                            log::debug!("maintenance connection: {step:?}: {errno}");
                            c.received(Received::Failed, now);
                        }
                    }
                }
                Step::Write { from } => {
                    // MSG_NOSIGNAL: a client gone is an error, not SIGPIPE.
                    let flags = MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL;
                    match socket::send(fd, &connection.answer[from..], flags) {
                        Ok(n) => c.sent(n),
                        Err(Errno::EAGAIN) => {
                            waits = true;
                            break;
                        }
                        Err(Errno::EINTR) => {}
                        Err(errno) => {
                            log::debug!("maintenance connection: write: {errno}");
                            c.failed();
                        }
                    }
                }
                Step::ShutDownWrite => match socket::shutdown(fd, Shutdown::Write) {
                    // The client reads the answer to its end and closes.
                    Ok(()) => c.shut_down(),
                    Err(errno) => {
                        log::debug!("maintenance connection: shutdown: {errno}");
                        c.failed();
                    }
                },
                Step::Close => {
                    self.close(slot, context);
                    return;
                }
            }
        }
        if !waits {
            // Steps left: registered again, epoll reports the connection
            // at once by the next wait.
            context.unwatch(fd);
            context.watch_read_write(fd, KEY_BASE + slot as u64, "a maintenance connection");
        }
    }

    fn close(&mut self, slot: usize, context: &mut Context<'_>) {
        let Some(connection) = self.slots[slot].take() else {
            return;
        };
        context.unwatch(connection.fd.as_raw_fd());
        if let Some(count) = self.per_source.get_mut(&connection.source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&connection.source);
            }
        }
        if connection.conversation.answered() {
            self.answered += 1;
            self.answered_this_time += 1;
        }
        // Dropped: closed, with nothing unread if the client closed first.
    }

    /// Deadlines of the conversations; summaries of silenced warnings.
    pub fn tick(&mut self, context: &mut Context<'_>) {
        let now = Instant::now();
        for slot in 0..self.slots.len() {
            let due = self.slots[slot]
                .as_ref()
                .and_then(|connection| connection.conversation.deadline())
                .is_some_and(|deadline| deadline <= now);
            if due {
                if let Some(connection) = self.slots[slot].as_mut() {
                    connection.conversation.tick(now);
                }
                self.drive(slot, now, context);
            }
        }
        for (log, what) in [
            (&mut self.accept_failures, "failures to accept"),
            (
                &mut self.refused,
                "connections closed (one source, too many)",
            ),
        ] {
            if let Some(count) = log.take_summary(now) {
                log::warn!("maintenance: {count} more {what}");
            }
        }
    }

    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let room = self.slots.iter().any(Option::is_none);
        // Listeners not accepted on until empty, and room: at once.
        let accept = (self.answering && room && self.pending.contains(&true))
            .then(|| self.retry_at.unwrap_or(now).max(now));
        self.slots
            .iter()
            .flatten()
            .filter_map(|connection| connection.conversation.deadline())
            .chain(accept)
            .chain(self.accept_failures.summary_due())
            .chain(self.refused.summary_due())
            .min()
    }
}
