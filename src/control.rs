//! The control socket (`--control PATH`): its server, run by the event
//! loop, and its client, run by `sockhold reload|status|stop`.
//!
//! Protocol: the client sends one request line, sockhold sends one reply
//! line.
//!
//! | request  | reply                                                     |
//! |----------|-----------------------------------------------------------|
//! | `reload` | `ok generation N pid P` or `error REASON`, once known     |
//! | `status` | one JSON object                                           |
//! | `stop`   | `ok stopping`; the connection then stays open until sockhold exits |
//!
//! Anything else gets `error REASON`. A peer whose uid is neither
//! sockhold's nor root's gets `error permission denied: ...` (checked with
//! SO_PEERCRED, on top of the file's mode 0600).
//!
//! The server never blocks: the listener and every connection are
//! non-blocking in the one event loop; a request is at most `MAX_REQUEST`
//! bytes and must arrive within `REQUEST_TIMEOUT`; at most `MAX_CLIENTS`
//! connections are served at once and further ones wait in the kernel's
//! backlog; replies are buffered and written as the peer takes them.

use crate::addr::Transport;
use crate::error::{Error, errno_text, exit};
use crate::listen::{self, FilePermissions, SocketFile, SocketOwner};
use crate::supervisor::{GenerationId, GenerationInfo, Report};
use mio::net::{UnixListener, UnixStream};
use mio::{Interest, Registry, Token};
use nix::errno::Errno;
use nix::sys::socket::{Backlog, getsockopt, sockopt};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

/// Longest request line, newline included; requests are single words.
pub const MAX_REQUEST: usize = 256;
/// Connections served at once; more wait in the listen backlog.
pub const MAX_CLIENTS: usize = 32;
/// A connection that has not sent its request by then is closed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Listen backlog of the control socket.
const BACKLOG: i32 = 16;

/// What a client may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    Reload,
    Status,
    Stop,
}

impl Request {
    /// The request line's word.
    pub fn word(self) -> &'static str {
        match self {
            Request::Reload => "reload",
            Request::Status => "status",
            Request::Stop => "stop",
        }
    }

    fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "reload" => Some(Request::Reload),
            "status" => Some(Request::Status),
            "stop" => Some(Request::Stop),
            _ => None,
        }
    }
}

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

    /// Removes the socket file (sockhold did not get to run).
    pub fn remove(&self) {
        self.file.remove_if_ours();
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
    /// Writing a reply, then closing or holding the connection.
    Writing {
        reply: Vec<u8>,
        written: usize,
        then: AfterReply,
    },
    /// After `stop`: closed when sockhold exits, which the client waits for.
    HeldUntilExit,
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
    /// taken when a connection closes.
    fn accept_pending(&mut self, now: Instant) {
        while self.clients.len() < MAX_CLIENTS {
            let mut stream = match self.listener.accept() {
                Ok((stream, _)) => stream,
                Err(error) if error.kind() == ErrorKind::WouldBlock => return,
                Err(error) if error.kind() == ErrorKind::Interrupted => continue,
                Err(error) => {
                    log::warn!("control socket: cannot accept: {error}");
                    return;
                }
            };
            let id = self.next_client;
            self.next_client += 1;
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
                _ if client.refusal.is_some() => Next::Reply(format!(
                    "error permission denied: {}",
                    client.refusal.as_deref().unwrap_or_default()
                )),
                ReadOutcome::Line(line) => match Request::parse(&line) {
                    Some(request) => Next::Asked(request),
                    None => {
                        let shown: String = line.trim().chars().take(40).collect();
                        Next::Reply(format!(
                            "error unknown request '{}' (send reload, status or stop)",
                            shown.escape_debug()
                        ))
                    }
                },
                ReadOutcome::TooLong => {
                    Next::Reply(format!("error request longer than {MAX_REQUEST} bytes"))
                }
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
            State::Asked | State::AwaitingReload { .. } | State::HeldUntilExit => Next::Stay,
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
            client.state = writing(line.to_string(), then);
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

    /// Answers the clients that a supervisor report concerns.
    pub fn report(&mut self, report: &Report) {
        let mut answers: Vec<(ClientId, String)> = Vec::new();
        for (id, client) in &mut self.clients {
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
                    answers.push((*id, format!("ok generation {done} pid {pid}")));
                }
                Report::ReloadFailed {
                    generation: failed,
                    reason,
                } if *generation == Some(*failed) => {
                    answers.push((*id, format!("error {reason}")));
                }
                Report::ReloadRefused { reason } if generation.is_none() => {
                    answers.push((*id, format!("error {reason}")));
                }
                Report::Stopping => {
                    answers.push((*id, "error sockhold is stopping".to_string()));
                }
                _ => {}
            }
        }
        for (id, answer) in answers {
            self.reply(id, &answer);
        }
    }

    /// The earliest request deadline, for the event loop's poll timeout.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .values()
            .filter_map(|client| match client.state {
                State::Reading { deadline, .. } => Some(deadline),
                _ => None,
            })
            .min()
    }

    /// Closes connections that did not send a request in time.
    pub fn expire(&mut self, now: Instant) {
        let late: Vec<ClientId> = self
            .clients
            .iter()
            .filter(|(_, client)| {
                matches!(client.state, State::Reading { deadline, .. } if deadline <= now)
            })
            .map(|(id, _)| *id)
            .collect();
        for id in late {
            self.reply(
                id,
                &format!(
                    "error no request within {}",
                    crate::config::format_duration(REQUEST_TIMEOUT)
                ),
            );
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
                    let mut written = 0;
                    let _ = write_some(
                        &mut client.stream,
                        b"error sockhold exited before the reload finished\n",
                        &mut written,
                    );
                }
                State::Writing { reply, written, .. } => {
                    let _ = write_some(&mut client.stream, reply, written);
                }
                State::Reading { .. } | State::HeldUntilExit => {}
            }
        }
        self.file.remove_if_ours();
        log::debug!("control socket {} closed", self.path.display());
    }
}

fn writing(mut line: String, then: AfterReply) -> State {
    line.push('\n');
    State::Writing {
        reply: line.into_bytes(),
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

/// One socket as `status` shows it.
pub struct SocketInfo<'a> {
    pub fd: usize,
    pub name: &'a str,
    /// `tcp 127.0.0.1:8080`, `unix /run/app.sock`: the real address.
    pub address: &'a str,
}

/// Everything `status` reports.
pub struct StatusView<'a> {
    pub pid: u32,
    /// The supervisor's phase: `running`, `waiting to restart`, `stopping`.
    pub state: &'a str,
    pub started_at: Instant,
    pub sockets: Vec<SocketInfo<'a>>,
    pub generations: Vec<GenerationInfo>,
    pub restarts: u64,
    pub reload_queued: bool,
}

/// The `status` reply: one JSON object on one line. Times are given both
/// as Unix time (`started`) and as seconds since (`uptime_seconds`,
/// `age_seconds`), in seconds with millisecond precision.
pub fn status_json(view: &StatusView, now: Instant, unix_now: SystemTime) -> String {
    let unix_time = |at: Instant| {
        let ago = now.saturating_duration_since(at);
        unix_now
            .checked_sub(ago)
            .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |since| since.as_secs_f64())
    };
    let seconds_since = |at: Instant| now.saturating_duration_since(at).as_secs_f64();
    let sockets: Vec<String> = view
        .sockets
        .iter()
        .map(|socket| {
            format!(
                "{{\"fd\":{},\"name\":{},\"address\":{}}}",
                socket.fd,
                json_string(socket.name),
                json_string(socket.address)
            )
        })
        .collect();
    let generations: Vec<String> = view
        .generations
        .iter()
        .map(|g| {
            format!(
                "{{\"id\":{},\"pid\":{},\"state\":{},\"cause\":{},\"started\":{:.3},\"age_seconds\":{:.3}}}",
                g.id,
                g.pid.map_or_else(|| "null".to_string(), |pid| pid.to_string()),
                json_string(g.state),
                json_string(g.cause.name()),
                unix_time(g.started_at),
                seconds_since(g.started_at)
            )
        })
        .collect();
    format!(
        "{{\"pid\":{},\"state\":{},\"started\":{:.3},\"uptime_seconds\":{:.3},\"restarts\":{},\"reload_queued\":{},\"sockets\":[{}],\"generations\":[{}]}}",
        view.pid,
        json_string(view.state),
        unix_time(view.started_at),
        seconds_since(view.started_at),
        view.restarts,
        view.reload_queued,
        sockets.join(","),
        generations.join(",")
    )
}

/// A JSON string literal (RFC 8259 §7): quotes, backslashes and control
/// characters escaped; everything else passes as UTF-8.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The client: sends `request` to the control socket at `path`, prints the
/// answer, and returns the exit status (0 on success).
pub fn run_client(path: &Path, request: Request) -> Result<i32, Error> {
    let text = path.display().to_string();
    let unreachable = |error: std::io::Error| {
        let errno = Errno::from_raw(error.raw_os_error().unwrap_or(Errno::EIO as i32));
        let (status, hint) = match errno {
            Errno::EACCES | Errno::EPERM => (
                exit::PERMISSION,
                "run it as the user sockhold runs as, or as root",
            ),
            Errno::ENOENT => (
                exit::UNAVAILABLE,
                "is sockhold running with --control at that path?",
            ),
            Errno::ECONNREFUSED => (
                exit::UNAVAILABLE,
                "nobody serves that socket: sockhold is not running",
            ),
            _ => (exit::UNAVAILABLE, "see sockhold's log"),
        };
        Error::new(
            status,
            format!(
                "cannot reach sockhold at '{text}': {} ({hint})",
                errno_text(errno)
            ),
        )
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?;
    // A refused write (sockhold already replied and closed) is not the
    // end: its reply may be waiting to be read.
    let _ = stream.write_all(format!("{}\n", request.word()).as_bytes());
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(unreachable)?;
    let line = line.trim_end_matches(['\n', '\r']);
    if line.is_empty() {
        return Err(Error::new(
            exit::UNAVAILABLE,
            format!(
                "no answer from sockhold at '{text}': it closed the connection (it may have exited; see its log)"
            ),
        ));
    }
    if let Some(reason) = line.strip_prefix("error ") {
        let status = if reason.starts_with("permission denied") {
            exit::PERMISSION
        } else {
            exit::CLIENT_FAILED
        };
        return Err(Error::new(
            status,
            format!(
                "{} refused by sockhold at '{text}': {reason} (see sockhold's log)",
                request.word()
            ),
        ));
    }
    match request {
        Request::Status if line.starts_with('{') => {
            println!("{line}");
            Ok(exit::OK)
        }
        Request::Reload if line.starts_with("ok ") => {
            println!("{}", &line[3..]);
            Ok(exit::OK)
        }
        Request::Stop if line == "ok stopping" => {
            // The connection closes when sockhold exits: wait for that, so
            // that `stop` returns once every generation is gone.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            Ok(exit::OK)
        }
        _ => Err(Error::new(
            exit::PROTOCOL,
            format!(
                "unexpected answer from '{text}': '{}' (is that a sockhold control socket?)",
                line.chars().take(80).collect::<String>()
            ),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervisor::Cause;
    use nix::unistd::Pid;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(json_string("é"), "\"é\"");
    }

    #[test]
    fn status_lists_sockets_and_generations() {
        let now = Instant::now();
        let unix_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let view = StatusView {
            pid: 42,
            state: "running",
            started_at: now - Duration::from_secs(10),
            sockets: vec![SocketInfo {
                fd: 3,
                name: "http",
                address: "tcp 127.0.0.1:8080",
            }],
            generations: vec![GenerationInfo {
                id: 2,
                pid: Some(Pid::from_raw(4242)),
                state: "current",
                cause: Cause::Reload,
                started_at: now - Duration::from_millis(1500),
            }],
            restarts: 1,
            reload_queued: false,
        };
        assert_eq!(
            status_json(&view, now, unix_now),
            concat!(
                r#"{"pid":42,"state":"running","started":999990.000,"uptime_seconds":10.000,"#,
                r#""restarts":1,"reload_queued":false,"#,
                r#""sockets":[{"fd":3,"name":"http","address":"tcp 127.0.0.1:8080"}],"#,
                r#""generations":[{"id":2,"pid":4242,"state":"current","cause":"reload","#,
                r#""started":999998.500,"age_seconds":1.500}]}"#
            )
        );
    }

    #[test]
    fn requests_are_single_words() {
        assert_eq!(Request::parse("reload"), Some(Request::Reload));
        assert_eq!(Request::parse("status\r"), Some(Request::Status));
        assert_eq!(Request::parse("stop"), Some(Request::Stop));
        assert_eq!(Request::parse("reload now"), None);
    }
}
