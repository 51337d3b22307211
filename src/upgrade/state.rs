//! The upgrade state, pure (no syscalls): what one sockhold hands the
//! binary it executes in its place (`upgrade/mod.rs`), as versioned
//! line-based text. Every line is a keyword and its fields, separated by
//! single spaces; a string field is escaped (`%XX` for a byte that is not
//! printable ASCII, for a space and for `%`; `-` alone is "none", so a
//! string that is `-` is written `%2D`; an empty one is an empty field).
//! Instants are CLOCK_MONOTONIC
//! nanoseconds, converted by the caller (`Clock`), so the state means the
//! same thing on both sides of execve.
//!
//! A reader takes only the versions in `READS`; the probe (`upgrade
//! --exec`) asks a binary which those are before anything is handed over.

use std::time::{Duration, Instant};

/// The version this sockhold writes.
pub const VERSION: u32 = 2;
/// The versions this sockhold reads (what it answers the probe with).
/// Version 1 carried only the steady state: ready workers of one current
/// generation, or none while paused.
pub const READS: &[u32] = &[1, 2];
/// The first line of the state.
const MAGIC: &str = "sockhold-state";

/// A held socket, in `-l` order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldSocket {
    pub fd: i32,
    /// The socket file sockhold created (device, inode), removed at exit.
    pub file: Option<(u64, u64)>,
}

/// A generation's notify socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notify {
    pub generation: u64,
    pub fd: i32,
    pub owner: u32,
    pub address: Vec<u8>,
    pub directory: Option<Vec<u8>>,
}

/// A child sockhold started and has not reaped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Child {
    pub pid: i32,
    pub pidfd: Option<i32>,
    pub group: bool,
    pub started_at: u64,
}

/// One fd in the fd store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub fd: i32,
    pub polled: bool,
    pub name: Vec<u8>,
}

/// How a child ended: `exited:N` or `signaled:N`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Exited(i32),
    Signaled(i32),
}

/// A starting worker's deadlines (the supervisor's `Awaiting`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Awaiting {
    pub ready_at: Option<u64>,
    pub give_up_at: u64,
    pub observe_at: Option<u64>,
    pub notified_at: Option<u64>,
}

/// What one slot is doing (the supervisor's `WorkerState`; `Spawning`
/// never lasts beyond an event, so it is never carried).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    Queued,
    Starting {
        pid: i32,
        since: u64,
        awaiting: Awaiting,
    },
    Ready {
        pid: i32,
        since: u64,
    },
    WaitingToRestart {
        at: u64,
    },
    HandedOver,
    Ended,
}

/// A worker of a generation, in its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Worker {
    pub slot: usize,
    pub state: WorkerState,
    pub failures: u32,
    pub restarts: u64,
    pub ready_by: Option<Vec<u8>>,
    pub unobservable: Option<Vec<u8>>,
}

/// A generation's role; `Recovering`: stopping, and its end applies the
/// restart policy (`exited`: the status that ended its start).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Starting,
    Current { since: u64 },
    Stopping,
    Recovering { exited: Option<Status> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Generation {
    pub id: u64,
    /// `launch`, `reload`, `restart`, `resume`.
    pub cause: Vec<u8>,
    pub started_at: u64,
    pub role: Role,
    pub first_failure: Option<Status>,
    pub ready_by: Option<Vec<u8>>,
    pub workers: Vec<Worker>,
}

/// A process told to stop, until reaped; SIGKILL at `kill_at` (None: sent).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Leaving {
    pub generation: u64,
    pub slot: usize,
    pub pid: i32,
    pub kill_at: Option<u64>,
    pub restarts: u64,
}

/// What sockhold as a whole is doing (the supervisor's `Phase`, but for
/// stopping, which is never carried).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Running,
    WaitingToRestart {
        at: u64,
    },
    Idle {
        watch_at: Option<u64>,
    },
    Paused {
        since: u64,
    },
}

/// The whole supervisor but its settings (which come from the arguments).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Supervisor {
    pub next_id: u64,
    pub restarts: u64,
    pub consecutive_failures: u32,
    pub ever_spawned: bool,
    pub many_workers: bool,
    /// `--workers`, as `scale` left it.
    pub workers: usize,
    pub phase: Phase,
    pub reload_queued: bool,
    /// Whether the driver was told to answer (`--maintenance`; a line of
    /// its own).
    pub maintenance: bool,
    pub unserved_since: Option<u64>,
    pub scale_awaited: Option<usize>,
    pub generations: Vec<Generation>,
    pub leaving: Vec<Leaving>,
}

impl Supervisor {
    /// Every process the supervisor follows: running workers, and those
    /// told to stop.
    pub fn pids(&self) -> Vec<i32> {
        let workers = self
            .generations
            .iter()
            .flat_map(|g| &g.workers)
            .filter_map(|w| match w.state {
                WorkerState::Starting { pid, .. } | WorkerState::Ready { pid, .. } => Some(pid),
                _ => None,
            });
        workers.chain(self.leaving.iter().map(|l| l.pid)).collect()
    }
}

/// `--maintenance` answering (since version 2).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Maintenance {
    pub wanted: Option<Vec<u8>>,
    pub answering: bool,
    pub answering_since: Option<u64>,
    pub answered_this_time: u64,
    pub answered: u64,
    pub retry_at: Option<u64>,
    pub answers: Vec<Vec<u8>>,
    pub connections: Vec<MaintenanceConnection>,
}

/// A connection being answered: its slot, fd, source (`ip:ADDRESS`,
/// `uid:N`, `unknown`), conversation phase (`reading`, `writing`,
/// `draining`, `closed`) with its byte count and quiet time, and the index
/// of its answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceConnection {
    pub slot: usize,
    pub fd: i32,
    pub source: Vec<u8>,
    pub phase: Vec<u8>,
    pub bytes: u64,
    pub quiet_at: Option<u64>,
    pub answer_len: u64,
    pub read_until: u64,
    pub give_up_at: u64,
    pub answered: bool,
    pub answer: usize,
}

/// What a control client waits for (`reload`'s generation: None until
/// the reload it joined has started).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Waits {
    Reload {
        generation: Option<u64>,
    },
    Pause,
    Scale,
    /// Its request line is not read whole yet: what was read, and when
    /// the rest must have come (CLOCK_MONOTONIC ns).
    Request {
        read: Vec<u8>,
        deadline: u64,
    },
}

/// A control client waiting for an answer (or still sending its
/// request), on its connection `fd`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter {
    pub fd: i32,
    pub waits: Waits,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct State {
    /// The binary the old sockhold ran, and the one it executes.
    pub exe: Vec<u8>,
    pub target: Vec<u8>,
    /// The old binary's argv (since version 2): what a fallback executes it
    /// with again, whatever argv the new binary was given.
    pub arguments: Vec<Vec<u8>>,
    pub started_at: u64,
    pub sockets: Vec<HeldSocket>,
    /// The control socket: fd and its file's (device, inode).
    pub control: Option<(i32, u64, u64)>,
    /// The connection of the client that asked for the upgrade.
    pub client: Option<i32>,
    pub pid_file: Option<i32>,
    pub notify: Vec<Notify>,
    pub children: Vec<Child>,
    pub stored: Vec<Stored>,
    /// systemd's serving generation and pid (STATUS lines).
    pub serving: Option<(u64, i32)>,
    /// O_NONBLOCK of each held socket as first found (None: warned).
    pub nonblocking: Option<Vec<bool>>,
    pub supervisor: Supervisor,
    pub maintenance: Option<Maintenance>,
    /// `--intercept-bind`: what the interceptor keeps.
    pub intercept: Option<Intercept>,
    /// `--accept`: the per-connection engine's bookkeeping.
    pub per_connection: Option<PerConnection>,
    /// Control clients waiting for an outcome (a reload, a scale).
    pub waiters: Vec<Waiter>,
}

impl State {
    /// Every fd the state names, for the exec (they must stay open).
    pub fn fds(&self) -> Vec<i32> {
        let mut fds: Vec<i32> = self.sockets.iter().map(|s| s.fd).collect();
        fds.extend(self.control.map(|(fd, _, _)| fd));
        fds.extend(self.client);
        fds.extend(self.pid_file);
        fds.extend(self.notify.iter().map(|n| n.fd));
        fds.extend(self.children.iter().filter_map(|c| c.pidfd));
        fds.extend(self.stored.iter().map(|s| s.fd));
        if let Some(maintenance) = &self.maintenance {
            fds.extend(maintenance.connections.iter().map(|c| c.fd));
        }
        if let Some(intercept) = &self.intercept {
            fds.extend(intercept.listeners.iter().map(|l| l.fd));
        }
        fds.extend(self.waiters.iter().map(|w| w.fd));
        fds
    }
}

/// Converts instants to CLOCK_MONOTONIC nanoseconds and back, through one
/// pair of readings of both clocks taken together (Rust's `Instant` is
/// CLOCK_MONOTONIC on Linux, but has no public epoch).
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    pub instant: Instant,
    pub monotonic_ns: u64,
}

impl Clock {
    pub fn to_ns(self, at: Instant) -> u64 {
        if at <= self.instant {
            let ago = self.instant.duration_since(at).as_nanos() as u64;
            self.monotonic_ns.saturating_sub(ago)
        } else {
            self.monotonic_ns + at.duration_since(self.instant).as_nanos() as u64
        }
    }

    pub fn to_instant(self, ns: u64) -> Instant {
        if ns <= self.monotonic_ns {
            let ago = Duration::from_nanos(self.monotonic_ns - ns);
            self.instant.checked_sub(ago).unwrap_or(self.instant)
        } else {
            self.instant + Duration::from_nanos(ns - self.monotonic_ns)
        }
    }
}

/// A string field.
pub fn escape(bytes: &[u8]) -> String {
    if bytes == b"-" {
        return "%2D".to_string();
    }
    let mut out = String::with_capacity(bytes.len());
    for &byte in bytes {
        if byte.is_ascii_graphic() && byte != b'%' {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The bytes of a string field; None for a bad escape.
pub fn unescape(text: &str) -> Option<Vec<u8>> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut index = 0;
    while index < bytes.len() {
        if bytes[index] == b'%' {
            let hex = text.get(index + 1..index + 3)?;
            if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
            index += 3;
        } else {
            out.push(bytes[index]);
            index += 1;
        }
    }
    Some(out)
}

fn optional(value: &Option<Vec<u8>>) -> String {
    value.as_deref().map_or_else(|| "-".to_string(), escape)
}

fn optional_number<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_string(), |v| v.to_string())
}

fn optional_status(status: Option<Status>) -> String {
    match status {
        None => "-".to_string(),
        Some(Status::Exited(code)) => format!("exited:{code}"),
        Some(Status::Signaled(signal)) => format!("signaled:{signal}"),
    }
}

fn flag(on: bool) -> &'static str {
    if on { "1" } else { "0" }
}

/// The state as text.
pub fn write(state: &State) -> String {
    let mut out = format!("{MAGIC} {VERSION}\n");
    let mut line = |text: String| {
        out.push_str(&text);
        out.push('\n');
    };
    line(format!("exe {}", escape(&state.exe)));
    line(format!("target {}", escape(&state.target)));
    for argument in &state.arguments {
        line(format!("arg {}", escape(argument)));
    }
    line(format!("started-at {}", state.started_at));
    for socket in &state.sockets {
        match socket.file {
            Some((device, inode)) => line(format!("socket {} {device} {inode}", socket.fd)),
            None => line(format!("socket {} - -", socket.fd)),
        }
    }
    if let Some((fd, device, inode)) = state.control {
        line(format!("control {fd} {device} {inode}"));
    }
    if let Some(fd) = state.client {
        line(format!("client {fd}"));
    }
    if let Some(fd) = state.pid_file {
        line(format!("pid-file {fd}"));
    }
    for n in &state.notify {
        line(format!(
            "notify {} {} {} {} {}",
            n.generation,
            n.fd,
            n.owner,
            escape(&n.address),
            optional(&n.directory)
        ));
    }
    for c in &state.children {
        let pidfd = c.pidfd.map_or_else(|| "-".to_string(), |fd| fd.to_string());
        line(format!(
            "child {} {pidfd} {} {}",
            c.pid,
            flag(c.group),
            c.started_at
        ));
    }
    for s in &state.stored {
        line(format!(
            "stored {} {} {}",
            s.fd,
            flag(s.polled),
            escape(&s.name)
        ));
    }
    if let Some((generation, pid)) = state.serving {
        line(format!("serving {generation} {pid}"));
    }
    if let Some(found) = &state.nonblocking {
        let flags: Vec<&str> = found.iter().map(|&on| flag(on)).collect();
        line(
            format!("nonblocking {}", flags.join(" "))
                .trim_end()
                .to_string(),
        );
    }
    let s = &state.supervisor;
    line(format!(
        "supervisor {} {} {} {} {} {} {} {} {}",
        s.next_id,
        s.restarts,
        s.consecutive_failures,
        flag(s.ever_spawned),
        flag(s.many_workers),
        s.workers,
        flag(s.reload_queued),
        optional_number(s.unserved_since),
        optional_number(s.scale_awaited),
    ));
    if s.maintenance {
        line("supervisor-maintenance 1".to_string());
    }
    line(match s.phase {
        Phase::Running => "phase running".to_string(),
        Phase::WaitingToRestart { at } => format!("phase waiting-to-restart {at}"),
        Phase::Idle { watch_at } => format!("phase idle {}", optional_number(watch_at)),
        Phase::Paused { since } => format!("phase paused {since}"),
    });
    for g in &s.generations {
        let role = match g.role {
            Role::Starting => "starting".to_string(),
            Role::Current { since } => format!("current {since}"),
            Role::Stopping => "stopping".to_string(),
            Role::Recovering { exited } => format!("recovering {}", optional_status(exited)),
        };
        line(format!(
            "generation {} {} {} {} {} {role}",
            g.id,
            escape(&g.cause),
            g.started_at,
            optional(&g.ready_by),
            optional_status(g.first_failure),
        ));
        for w in &g.workers {
            let state = match w.state {
                WorkerState::Queued => "queued".to_string(),
                WorkerState::Starting {
                    pid,
                    since,
                    awaiting: a,
                } => format!(
                    "starting {pid} {since} {} {} {} {}",
                    optional_number(a.ready_at),
                    a.give_up_at,
                    optional_number(a.observe_at),
                    optional_number(a.notified_at),
                ),
                WorkerState::Ready { pid, since } => format!("ready {pid} {since}"),
                WorkerState::WaitingToRestart { at } => format!("waiting-to-restart {at}"),
                WorkerState::HandedOver => "handed-over".to_string(),
                WorkerState::Ended => "ended".to_string(),
            };
            line(format!(
                "worker {} {} {} {} {} {state}",
                w.slot,
                w.failures,
                w.restarts,
                optional(&w.ready_by),
                optional(&w.unobservable),
            ));
        }
    }
    for l in &s.leaving {
        line(format!(
            "leaving {} {} {} {} {}",
            l.generation,
            l.slot,
            l.pid,
            optional_number(l.kill_at),
            l.restarts
        ));
    }
    if let Some(m) = &state.maintenance {
        let at = |t: Option<u64>| t.map_or_else(|| "-".to_string(), |t| t.to_string());
        line(format!(
            "maintenance {} {} {} {} {} {}",
            flag(m.answering),
            optional(&m.wanted),
            at(m.answering_since),
            m.answered_this_time,
            m.answered,
            at(m.retry_at)
        ));
        for answer in &m.answers {
            line(format!("maintenance-answer {}", escape(answer)));
        }
        for c in &m.connections {
            line(format!(
                "maintenance-connection {} {} {} {} {} {} {} {} {} {} {}",
                c.slot,
                c.fd,
                escape(&c.source),
                escape(&c.phase),
                c.bytes,
                at(c.quiet_at),
                c.answer_len,
                c.read_until,
                c.give_up_at,
                flag(c.answered),
                c.answer
            ));
        }
    }
    if let Some(intercept) = &state.intercept {
        write_intercept(intercept, &mut line);
    }
    if let Some(per_connection) = &state.per_connection {
        write_per_connection(per_connection, &mut line);
    }
    for w in &state.waiters {
        line(match &w.waits {
            Waits::Reload { generation } => {
                format!("waiter {} reload {}", w.fd, optional_number(*generation))
            }
            Waits::Pause => format!("waiter {} pause", w.fd),
            Waits::Scale => format!("waiter {} scale", w.fd),
            Waits::Request { read, deadline } => {
                format!("waiter {} request {deadline} {}", w.fd, escape(read))
            }
        });
    }
    line("end".to_string());
    out
}

/// The fields of one line, read in order.
struct Fields<'a> {
    number: usize,
    keyword: &'a str,
    fields: std::str::Split<'a, char>,
}

impl<'a> Fields<'a> {
    fn bad(&self, what: &str) -> String {
        format!("line {} ('{}'): {what}", self.number, self.keyword)
    }

    fn text(&mut self) -> Result<&'a str, String> {
        self.fields
            .next()
            .ok_or_else(|| self.bad("a field is missing"))
    }

    fn number<T: std::str::FromStr>(&mut self) -> Result<T, String> {
        let text = self.text()?;
        text.parse()
            .map_err(|_| self.bad(&format!("'{text}' is not a number")))
    }

    fn optional_number<T: std::str::FromStr>(&mut self) -> Result<Option<T>, String> {
        let text = self.text()?;
        if text == "-" {
            return Ok(None);
        }
        text.parse()
            .map(Some)
            .map_err(|_| self.bad(&format!("'{text}' is not a number")))
    }

    fn flag(&mut self) -> Result<bool, String> {
        match self.text()? {
            "0" => Ok(false),
            "1" => Ok(true),
            other => Err(self.bad(&format!("'{other}' is not 0 or 1"))),
        }
    }

    fn string(&mut self) -> Result<Vec<u8>, String> {
        let text = self.text()?;
        unescape(text).ok_or_else(|| self.bad(&format!("bad escape in '{text}'")))
    }

    fn optional_string(&mut self) -> Result<Option<Vec<u8>>, String> {
        let text = self.text()?;
        if text == "-" {
            return Ok(None);
        }
        unescape(text)
            .map(Some)
            .ok_or_else(|| self.bad(&format!("bad escape in '{text}'")))
    }

    fn optional_status(&mut self) -> Result<Option<Status>, String> {
        let text = self.text()?;
        if text == "-" {
            return Ok(None);
        }
        let parsed = match text.split_once(':') {
            Some(("exited", code)) => code.parse().ok().map(Status::Exited),
            Some(("signaled", signal)) => signal.parse().ok().map(Status::Signaled),
            _ => None,
        };
        parsed
            .map(Some)
            .ok_or_else(|| self.bad(&format!("'{text}' is not a status")))
    }

    fn done(mut self) -> Result<(), String> {
        match self.fields.next() {
            None => Ok(()),
            Some(extra) => Err(self.bad(&format!("unexpected field '{extra}'"))),
        }
    }
}

/// The version a state's first line says, if it is a state at all.
pub fn version_of(text: &str) -> Option<u32> {
    text.lines()
        .next()?
        .strip_prefix(MAGIC)?
        .strip_prefix(' ')?
        .parse()
        .ok()
}

/// The state from its text; the error says what is wrong where.
pub fn read(text: &str) -> Result<State, String> {
    let version = match version_of(text) {
        Some(version) if READS.contains(&version) => version,
        Some(version) => {
            return Err(format!(
                "it is version {version}; this sockhold reads {}",
                versions(READS)
            ));
        }
        None => return Err(format!("it does not start with '{MAGIC} N'")),
    };
    let mut state = State::default();
    let mut ended = false;
    let mut supervisor = false;
    for (index, line) in text.lines().enumerate().skip(1) {
        if ended {
            return Err(format!("line {}: after 'end'", index + 1));
        }
        let mut split = line.split(' ');
        let keyword = split.next().unwrap_or("");
        let mut f = Fields {
            number: index + 1,
            keyword,
            fields: split,
        };
        match keyword {
            "exe" => state.exe = f.string()?,
            "target" => state.target = f.string()?,
            "arg" => state.arguments.push(f.string()?),
            "started-at" => state.started_at = f.number()?,
            "socket" => {
                let fd = f.number()?;
                let device = f.optional_number()?;
                let inode = f.optional_number()?;
                let file = match (device, inode) {
                    (Some(device), Some(inode)) => Some((device, inode)),
                    (None, None) => None,
                    _ => return Err(f.bad("device and inode go together")),
                };
                state.sockets.push(HeldSocket { fd, file });
            }
            "control" => state.control = Some((f.number()?, f.number()?, f.number()?)),
            "client" => state.client = Some(f.number()?),
            "pid-file" => state.pid_file = Some(f.number()?),
            "notify" => state.notify.push(Notify {
                generation: f.number()?,
                fd: f.number()?,
                owner: f.number()?,
                address: f.string()?,
                directory: f.optional_string()?,
            }),
            "child" => state.children.push(Child {
                pid: f.number()?,
                pidfd: f.optional_number()?,
                group: f.flag()?,
                started_at: f.number()?,
            }),
            "stored" => state.stored.push(Stored {
                fd: f.number()?,
                polled: f.flag()?,
                name: f.string()?,
            }),
            "serving" => state.serving = Some((f.number()?, f.number()?)),
            "nonblocking" => {
                let mut found = Vec::new();
                while f.fields.clone().next().is_some() {
                    found.push(f.flag()?);
                }
                state.nonblocking = Some(found);
            }
            "supervisor" => {
                supervisor = true;
                let s = &mut state.supervisor;
                s.next_id = f.number()?;
                s.restarts = f.number()?;
                s.consecutive_failures = f.number()?;
                s.ever_spawned = f.flag()?;
                s.many_workers = f.flag()?;
                s.workers = f.number()?;
                if version == 1 {
                    // Paused since then, or running with one current
                    // generation.
                    if let Some(since) = f.optional_number()? {
                        s.phase = Phase::Paused { since };
                        s.unserved_since = Some(since);
                    }
                } else {
                    s.reload_queued = f.flag()?;
                    s.unserved_since = f.optional_number()?;
                    s.scale_awaited = f.optional_number()?;
                }
            }
            "supervisor-maintenance" => state.supervisor.maintenance = f.flag()?,
            "phase" if version >= 2 => {
                state.supervisor.phase = match f.text()? {
                    "running" => Phase::Running,
                    "waiting-to-restart" => Phase::WaitingToRestart { at: f.number()? },
                    "idle" => Phase::Idle {
                        watch_at: f.optional_number()?,
                    },
                    "paused" => Phase::Paused { since: f.number()? },
                    other => return Err(f.bad(&format!("unknown phase '{other}'"))),
                }
            }
            "generation" if version == 1 => {
                let id = f.number()?;
                let cause = f.string()?;
                let started_at = f.number()?;
                let since = f.number()?;
                state.supervisor.generations.push(Generation {
                    id,
                    cause,
                    started_at,
                    role: Role::Current { since },
                    first_failure: None,
                    ready_by: f.optional_string()?,
                    workers: Vec::new(),
                });
            }
            "generation" => {
                let id = f.number()?;
                let cause = f.string()?;
                let started_at = f.number()?;
                let ready_by = f.optional_string()?;
                let first_failure = f.optional_status()?;
                let role = match f.text()? {
                    "starting" => Role::Starting,
                    "current" => Role::Current { since: f.number()? },
                    "stopping" => Role::Stopping,
                    "recovering" => Role::Recovering {
                        exited: f.optional_status()?,
                    },
                    other => return Err(f.bad(&format!("unknown role '{other}'"))),
                };
                state.supervisor.generations.push(Generation {
                    id,
                    cause,
                    started_at,
                    role,
                    first_failure,
                    ready_by,
                    workers: Vec::new(),
                });
            }
            "worker" => {
                let worker = if version == 1 {
                    let slot = f.number()?;
                    let pid = f.number()?;
                    let since = f.number()?;
                    Worker {
                        slot,
                        state: WorkerState::Ready { pid, since },
                        failures: f.number()?,
                        restarts: f.number()?,
                        ready_by: f.optional_string()?,
                        unobservable: f.optional_string()?,
                    }
                } else {
                    let slot = f.number()?;
                    let failures = f.number()?;
                    let restarts = f.number()?;
                    let ready_by = f.optional_string()?;
                    let unobservable = f.optional_string()?;
                    let state = match f.text()? {
                        "queued" => WorkerState::Queued,
                        "starting" => WorkerState::Starting {
                            pid: f.number()?,
                            since: f.number()?,
                            awaiting: Awaiting {
                                ready_at: f.optional_number()?,
                                give_up_at: f.number()?,
                                observe_at: f.optional_number()?,
                                notified_at: f.optional_number()?,
                            },
                        },
                        "ready" => WorkerState::Ready {
                            pid: f.number()?,
                            since: f.number()?,
                        },
                        "waiting-to-restart" => WorkerState::WaitingToRestart { at: f.number()? },
                        "handed-over" => WorkerState::HandedOver,
                        "ended" => WorkerState::Ended,
                        other => return Err(f.bad(&format!("unknown worker state '{other}'"))),
                    };
                    Worker {
                        slot,
                        state,
                        failures,
                        restarts,
                        ready_by,
                        unobservable,
                    }
                };
                let Some(generation) = state.supervisor.generations.last_mut() else {
                    return Err(f.bad("a worker before any generation"));
                };
                generation.workers.push(worker);
            }
            "leaving" if version >= 2 => state.supervisor.leaving.push(Leaving {
                generation: f.number()?,
                slot: f.number()?,
                pid: f.number()?,
                kill_at: f.optional_number()?,
                restarts: f.number()?,
            }),
            "maintenance" => {
                state.maintenance = Some(Maintenance {
                    answering: f.flag()?,
                    wanted: f.optional_string()?,
                    answering_since: f.optional_number()?,
                    answered_this_time: f.number()?,
                    answered: f.number()?,
                    retry_at: f.optional_number()?,
                    ..Maintenance::default()
                });
            }
            "maintenance-answer" | "maintenance-connection" => {
                let answer = keyword == "maintenance-answer";
                let bytes = if answer { Some(f.string()?) } else { None };
                let connection = match bytes {
                    Some(_) => None,
                    None => Some(MaintenanceConnection {
                        slot: f.number()?,
                        fd: f.number()?,
                        source: f.string()?,
                        phase: f.string()?,
                        bytes: f.number()?,
                        quiet_at: f.optional_number()?,
                        answer_len: f.number()?,
                        read_until: f.number()?,
                        give_up_at: f.number()?,
                        answered: f.flag()?,
                        answer: f.number()?,
                    }),
                };
                let Some(maintenance) = state.maintenance.as_mut() else {
                    return Err(f.bad("before any 'maintenance' line"));
                };
                maintenance.answers.extend(bytes);
                maintenance.connections.extend(connection);
            }
            "intercept" | "intercept-listener" | "intercept-generation" | "intercept-shown" => {
                read_intercept(&mut f, &mut state)?
            }
            "accepting" | "accept-log" | "connection" => {
                read_per_connection(&mut f, &mut state.per_connection)?
            }
            "waiter" if version >= 2 => {
                let fd = f.number()?;
                let waits = match f.text()? {
                    "reload" => Waits::Reload {
                        generation: f.optional_number()?,
                    },
                    "pause" => Waits::Pause,
                    "scale" => Waits::Scale,
                    "request" => Waits::Request {
                        deadline: f.number()?,
                        read: f.string()?,
                    },
                    other => return Err(f.bad(&format!("unknown wait '{other}'"))),
                };
                state.waiters.push(Waiter { fd, waits });
            }
            "end" => ended = true,
            other => return Err(format!("line {}: unknown keyword '{other}'", index + 1)),
        }
        f.done()?;
    }
    if !ended {
        return Err("it is truncated (no 'end' line)".to_string());
    }
    if !supervisor {
        return Err("it has no 'supervisor' line".to_string());
    }
    Ok(state)
}

// Per-connection mode (`--accept`): the bookkeeping of `per_connection/`
// beside the children's `child` lines (their pidfds). One `accepting` line,
// then one `accept-log` line per quiet log and one `connection` line per
// running connection child:
//   accepting STARTED-TOTAL RATE-NEXT|- PAUSED-UNTIL|-
//   accept-log NAME LAST-LOGGED|- SILENCED
//   connection PID ip ADDRESS | uid UID | unknown -

/// Where a connection came from, as `--max-per-source` counts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectionSource {
    Ip(std::net::IpAddr),
    Uid(u32),
    Unknown,
}

/// A running connection child and where its connection came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connection {
    pub pid: i32,
    pub source: ConnectionSource,
}

/// A quiet log (`quiet_log.rs`): when it last logged, and how many it
/// silenced since (a summary still due).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QuietLogState {
    pub last_logged: Option<u64>,
    pub silenced: u64,
}

/// The per-connection engine's bookkeeping; instants in CLOCK_MONOTONIC ns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PerConnection {
    pub started_total: u64,
    /// `--max-rate`: the theoretical time of the next start.
    pub rate_next: Option<u64>,
    /// Accepting pauses until then (the system ran out of fds, memory...).
    pub paused_until: Option<u64>,
    pub over_source_limit: QuietLogState,
    pub at_limit: QuietLogState,
    pub spawn_failures: QuietLogState,
    pub accept_failures: QuietLogState,
    pub connections: Vec<Connection>,
}

impl PerConnection {
    const LOGS: [&'static str; 4] = [
        "over-source-limit",
        "at-limit",
        "spawn-failures",
        "accept-failures",
    ];

    fn log_mut(&mut self, name: &str) -> Option<&mut QuietLogState> {
        match name {
            "over-source-limit" => Some(&mut self.over_source_limit),
            "at-limit" => Some(&mut self.at_limit),
            "spawn-failures" => Some(&mut self.spawn_failures),
            "accept-failures" => Some(&mut self.accept_failures),
            _ => None,
        }
    }

    fn log(&self, name: &str) -> QuietLogState {
        match name {
            "over-source-limit" => self.over_source_limit,
            "at-limit" => self.at_limit,
            "spawn-failures" => self.spawn_failures,
            _ => self.accept_failures,
        }
    }
}

fn optional_ns(value: Option<u64>) -> String {
    value.map_or_else(|| "-".to_string(), |ns| ns.to_string())
}

fn write_per_connection(p: &PerConnection, line: &mut impl FnMut(String)) {
    line(format!(
        "accepting {} {} {}",
        p.started_total,
        optional_ns(p.rate_next),
        optional_ns(p.paused_until)
    ));
    for name in PerConnection::LOGS {
        let log = p.log(name);
        line(format!(
            "accept-log {name} {} {}",
            optional_ns(log.last_logged),
            log.silenced
        ));
    }
    for c in &p.connections {
        let source = match c.source {
            ConnectionSource::Ip(ip) => format!("ip {ip}"),
            ConnectionSource::Uid(uid) => format!("uid {uid}"),
            ConnectionSource::Unknown => "unknown -".to_string(),
        };
        line(format!("connection {} {source}", c.pid));
    }
}

fn read_per_connection(f: &mut Fields<'_>, into: &mut Option<PerConnection>) -> Result<(), String> {
    if f.keyword == "accepting" {
        if into.is_some() {
            return Err(f.bad("a second 'accepting' line"));
        }
        *into = Some(PerConnection {
            started_total: f.number()?,
            rate_next: f.optional_number()?,
            paused_until: f.optional_number()?,
            ..PerConnection::default()
        });
        return Ok(());
    }
    let Some(p) = into.as_mut() else {
        return Err(f.bad("before the 'accepting' line"));
    };
    if f.keyword == "accept-log" {
        let name = f.text()?;
        let state = QuietLogState {
            last_logged: f.optional_number()?,
            silenced: f.number()?,
        };
        let Some(log) = p.log_mut(name) else {
            return Err(f.bad(&format!("unknown log '{name}'")));
        };
        *log = state;
        return Ok(());
    }
    let pid = f.number()?;
    let source = match (f.text()?, f.text()?) {
        ("ip", address) => ConnectionSource::Ip(
            address
                .parse()
                .map_err(|_| f.bad(&format!("'{address}' is not an IP address")))?,
        ),
        ("uid", uid) => ConnectionSource::Uid(
            uid.parse()
                .map_err(|_| f.bad(&format!("'{uid}' is not a number")))?,
        ),
        ("unknown", "-") => ConnectionSource::Unknown,
        (kind, value) => {
            return Err(f.bad(&format!(
                "'{kind} {value}' is not a source (ip, uid, unknown)"
            )));
        }
    };
    p.connections.push(Connection { pid, source });
    Ok(())
}

/// "1" or "1, 2".
pub fn versions(list: &[u32]) -> String {
    let words: Vec<String> = list.iter().map(u32::to_string).collect();
    words.join(", ")
}

// --- `--intercept-bind` (keywords `intercept`, `intercept-listener`,
// `intercept-generation`, `intercept-shown`) ---

/// What the interceptor keeps: the seccomp listener of each child it
/// watches and, per generation, what its binds were given and what was
/// logged of them. No notification is ever held between two events (each
/// is answered as it is read), so none is carried: those not read yet
/// wait in their listener, which is carried.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Intercept {
    /// The poll key the next listener gets.
    pub next_key: u64,
    /// The kernel refused ADDFD once (logged once).
    pub no_addfd: bool,
    pub listeners: Vec<InterceptListener>,
    pub generations: Vec<InterceptGeneration>,
}

/// One child's seccomp listener, with its poll key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterceptListener {
    pub key: u64,
    pub generation: u64,
    pub fd: i32,
}

/// One generation's interceptions so far.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InterceptGeneration {
    pub id: u64,
    /// Its first interception was logged (at info).
    pub announced: bool,
    /// It was told that a bind of its was not of a held address.
    pub warned_unheld: bool,
    /// The held sockets (indexes) its binds got; None before the first.
    pub bound: Option<Vec<usize>>,
    /// Its interceptions as logged (for `status`).
    pub shown: Vec<Vec<u8>>,
}

/// `-`: none; an empty field: none yet; else `0,2`.
fn indexes(list: &Option<Vec<usize>>) -> String {
    match list {
        None => "-".to_string(),
        Some(list) => {
            let words: Vec<String> = list.iter().map(usize::to_string).collect();
            words.join(",")
        }
    }
}

fn write_intercept(intercept: &Intercept, line: &mut impl FnMut(String)) {
    line(format!(
        "intercept {} {}",
        intercept.next_key,
        flag(intercept.no_addfd)
    ));
    for l in &intercept.listeners {
        line(format!(
            "intercept-listener {} {} {}",
            l.key, l.generation, l.fd
        ));
    }
    for g in &intercept.generations {
        line(format!(
            "intercept-generation {} {} {} {}",
            g.id,
            flag(g.announced),
            flag(g.warned_unheld),
            indexes(&g.bound)
        ));
        for shown in &g.shown {
            line(format!("intercept-shown {}", escape(shown)));
        }
    }
}

fn read_intercept(f: &mut Fields<'_>, state: &mut State) -> Result<(), String> {
    if f.keyword == "intercept" {
        if state.intercept.is_some() {
            return Err(f.bad("a second 'intercept' line"));
        }
        state.intercept = Some(Intercept {
            next_key: f.number()?,
            no_addfd: f.flag()?,
            ..Intercept::default()
        });
        return Ok(());
    }
    let Some(intercept) = state.intercept.as_mut() else {
        return Err(f.bad("before the 'intercept' line"));
    };
    match f.keyword {
        "intercept-listener" => intercept.listeners.push(InterceptListener {
            key: f.number()?,
            generation: f.number()?,
            fd: f.number()?,
        }),
        "intercept-generation" => {
            let id = f.number()?;
            let announced = f.flag()?;
            let warned_unheld = f.flag()?;
            let text = f.text()?;
            let bound = match text {
                "-" => None,
                "" => Some(Vec::new()),
                list => Some(
                    list.split(',')
                        .map(|index| index.parse())
                        .collect::<Result<Vec<usize>, _>>()
                        .map_err(|_| f.bad(&format!("'{list}' is not a list of numbers")))?,
                ),
            };
            intercept.generations.push(InterceptGeneration {
                id,
                announced,
                warned_unheld,
                bound,
                shown: Vec::new(),
            });
        }
        _ => {
            let shown = f.string()?;
            let Some(generation) = intercept.generations.last_mut() else {
                return Err(f.bad("before any 'intercept-generation' line"));
            };
            generation.shown.push(shown);
        }
    }
    Ok(())
}

#[cfg(test)]
mod intercept_tests {
    use super::*;

    fn with_intercept() -> State {
        State {
            supervisor: Supervisor::default(),
            intercept: Some(Intercept {
                next_key: 3,
                no_addfd: true,
                listeners: vec![
                    InterceptListener {
                        key: (1 << 29) | 1,
                        generation: 2,
                        fd: 11,
                    },
                    InterceptListener {
                        key: (1 << 29) | 2,
                        generation: 3,
                        fd: 12,
                    },
                ],
                generations: vec![
                    InterceptGeneration {
                        id: 2,
                        announced: true,
                        warned_unheld: false,
                        bound: Some(vec![0, 2]),
                        shown: vec![
                            b"pid 42 bind 127.0.0.1:8080 -> held fd 3".to_vec(),
                            b"pid 42 unlink /run/a b: kept".to_vec(),
                        ],
                    },
                    InterceptGeneration {
                        id: 3,
                        announced: false,
                        warned_unheld: true,
                        bound: None,
                        shown: Vec::new(),
                    },
                    InterceptGeneration {
                        id: 4,
                        bound: Some(Vec::new()),
                        ..InterceptGeneration::default()
                    },
                ],
            }),
            ..State::default()
        }
    }

    #[test]
    fn the_interceptor_reads_back_as_written_and_names_its_listeners() {
        let state = with_intercept();
        let text = write(&state);
        assert!(text.contains("\nintercept 3 1\n"), "{text}");
        assert!(
            text.contains("\nintercept-generation 2 1 0 0,2\n"),
            "{text}"
        );
        assert_eq!(read(&text), Ok(state.clone()));
        assert_eq!(state.fds(), vec![11, 12]);
        // No interceptor: no line, and None again.
        let none = State::default();
        assert!(!write(&none).contains("intercept"));
        assert_eq!(read(&write(&none)), Ok(none));
        // An interceptor with nothing yet.
        let empty = State {
            intercept: Some(Intercept::default()),
            ..State::default()
        };
        assert_eq!(read(&write(&empty)), Ok(empty));
    }

    #[test]
    fn interceptor_lines_out_of_place_are_refused_with_their_line() {
        let text = write(&with_intercept());
        let orphan = text.replacen("intercept 3 1\n", "", 1);
        assert!(
            read(&orphan)
                .unwrap_err()
                .contains("('intercept-listener'): before the 'intercept' line"),
            "{orphan}"
        );
        let twice = text.replacen("intercept 3 1\n", "intercept 3 1\nintercept 3 1\n", 1);
        assert!(
            read(&twice)
                .unwrap_err()
                .contains("a second 'intercept' line")
        );
        let bad = text.replacen(" 0,2\n", " 0,x\n", 1);
        assert!(
            read(&bad)
                .unwrap_err()
                .contains("'0,x' is not a list of numbers")
        );
        let shown_first = text.replacen("intercept 3 1\n", "intercept 3 1\nintercept-shown x\n", 1);
        assert!(
            read(&shown_first)
                .unwrap_err()
                .contains("before any 'intercept-generation' line")
        );
        let short = text.replacen(
            "intercept-listener 536870913 2 11",
            "intercept-listener 1 2",
            1,
        );
        assert!(read(&short).unwrap_err().contains("a field is missing"));
    }
}

// --- end of `--intercept-bind` ---

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> State {
        State {
            exe: b"/usr/bin/sockhold".to_vec(),
            target: b"/opt/new sock%hold\n".to_vec(),
            arguments: vec![
                b"sockhold".to_vec(),
                b"-l".to_vec(),
                b"".to_vec(),
                b"-".to_vec(),
            ],
            started_at: 12_345,
            sockets: vec![
                HeldSocket { fd: 3, file: None },
                HeldSocket {
                    fd: 4,
                    file: Some((2049, 77)),
                },
            ],
            control: Some((5, 1, 2)),
            client: Some(9),
            pid_file: Some(6),
            notify: vec![Notify {
                generation: 3,
                fd: 7,
                owner: 1000,
                address: b"/run/user/1000/sockhold-x/notify".to_vec(),
                directory: Some(b"/run/user/1000/sockhold-x".to_vec()),
            }],
            children: vec![Child {
                pid: 4242,
                pidfd: Some(8),
                group: true,
                started_at: 999,
            }],
            stored: vec![Stored {
                fd: 10,
                polled: false,
                name: b"-".to_vec(),
            }],
            serving: Some((3, 4242)),
            nonblocking: Some(vec![false, true]),
            supervisor: Supervisor {
                next_id: 4,
                restarts: 2,
                consecutive_failures: 0,
                ever_spawned: true,
                many_workers: true,
                workers: 2,
                phase: Phase::Running,
                reload_queued: true,
                maintenance: false,
                unserved_since: None,
                scale_awaited: Some(3),
                generations: vec![
                    Generation {
                        id: 2,
                        cause: b"launch".to_vec(),
                        started_at: 50,
                        role: Role::Current { since: 60 },
                        first_failure: Some(Status::Signaled(9)),
                        ready_by: None,
                        workers: vec![
                            Worker {
                                slot: 0,
                                state: WorkerState::HandedOver,
                                failures: 0,
                                restarts: 0,
                                ready_by: None,
                                unobservable: None,
                            },
                            Worker {
                                slot: 1,
                                state: WorkerState::WaitingToRestart { at: 700 },
                                failures: 2,
                                restarts: 1,
                                ready_by: None,
                                unobservable: None,
                            },
                        ],
                    },
                    Generation {
                        id: 3,
                        cause: b"reload".to_vec(),
                        started_at: 100,
                        role: Role::Starting,
                        first_failure: None,
                        ready_by: Some(b"accepting on fd 3 (pid 4242) after 1.2s".to_vec()),
                        workers: vec![
                            Worker {
                                slot: 0,
                                state: WorkerState::Ready {
                                    pid: 4242,
                                    since: 150,
                                },
                                failures: 1,
                                restarts: 3,
                                ready_by: None,
                                unobservable: Some(b"".to_vec()),
                            },
                            Worker {
                                slot: 1,
                                state: WorkerState::Starting {
                                    pid: 4243,
                                    since: 160,
                                    awaiting: Awaiting {
                                        ready_at: None,
                                        give_up_at: 900,
                                        observe_at: Some(170),
                                        notified_at: Some(165),
                                    },
                                },
                                failures: 0,
                                restarts: 0,
                                ready_by: None,
                                unobservable: None,
                            },
                        ],
                    },
                    Generation {
                        id: 1,
                        cause: b"restart".to_vec(),
                        started_at: 10,
                        role: Role::Recovering {
                            exited: Some(Status::Exited(1)),
                        },
                        first_failure: Some(Status::Exited(3)),
                        ready_by: None,
                        workers: vec![
                            Worker {
                                slot: 0,
                                state: WorkerState::Ended,
                                failures: 0,
                                restarts: 0,
                                ready_by: None,
                                unobservable: None,
                            },
                            Worker {
                                slot: 1,
                                state: WorkerState::Queued,
                                failures: 0,
                                restarts: 0,
                                ready_by: None,
                                unobservable: None,
                            },
                        ],
                    },
                    Generation {
                        id: 0,
                        cause: b"launch".to_vec(),
                        started_at: 5,
                        role: Role::Recovering { exited: None },
                        first_failure: None,
                        ready_by: None,
                        workers: Vec::new(),
                    },
                    Generation {
                        id: 5,
                        cause: b"resume".to_vec(),
                        started_at: 5,
                        role: Role::Stopping,
                        first_failure: None,
                        ready_by: None,
                        workers: Vec::new(),
                    },
                ],
                leaving: vec![
                    Leaving {
                        generation: 2,
                        slot: 0,
                        pid: 4100,
                        kill_at: Some(5000),
                        restarts: 4,
                    },
                    Leaving {
                        generation: 1,
                        slot: 1,
                        pid: 4101,
                        kill_at: None,
                        restarts: 0,
                    },
                ],
            },
            maintenance: None,
            intercept: None,
            per_connection: None,
            waiters: vec![
                Waiter {
                    fd: 11,
                    waits: Waits::Reload {
                        generation: Some(3),
                    },
                },
                Waiter {
                    fd: 12,
                    waits: Waits::Reload { generation: None },
                },
                Waiter {
                    fd: 13,
                    waits: Waits::Scale,
                },
                Waiter {
                    fd: 14,
                    waits: Waits::Pause,
                },
                Waiter {
                    fd: 15,
                    waits: Waits::Request {
                        read: b"sta".to_vec(),
                        deadline: 8000,
                    },
                },
                Waiter {
                    fd: 16,
                    waits: Waits::Request {
                        read: Vec::new(),
                        deadline: 8001,
                    },
                },
            ],
        }
    }

    #[test]
    fn a_state_reads_back_as_written() {
        let state = sample();
        let text = write(&state);
        assert!(text.starts_with("sockhold-state 2\n"));
        assert_eq!(read(&text), Ok(state));
        for phase in [
            Phase::Paused { since: 5 },
            Phase::WaitingToRestart { at: 6 },
            Phase::Idle { watch_at: None },
            Phase::Idle { watch_at: Some(7) },
        ] {
            let other = State {
                supervisor: Supervisor {
                    phase,
                    maintenance: true,
                    unserved_since: Some(4),
                    ..Supervisor::default()
                },
                nonblocking: Some(Vec::new()),
                ..State::default()
            };
            assert_eq!(read(&write(&other)), Ok(other));
        }
        assert_eq!(
            sample().fds(),
            [3, 4, 5, 9, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16]
        );
        assert_eq!(sample().supervisor.pids(), [4242, 4243, 4100, 4101]);
    }

    /// What the previous sockhold (version 1) wrote: ready workers of one
    /// current generation, or none while paused.
    #[test]
    fn a_version_1_state_is_still_read() {
        let text = "sockhold-state 1\nexe /usr/bin/sockhold\ntarget /usr/bin/sockhold\nstarted-at 12345\nsocket 3 - -\ncontrol 5 1 2\nclient 9\nchild 4242 8 0 999\nserving 3 4242\nnonblocking 0\nsupervisor 4 2 0 1 1 2 -\ngeneration 3 reload 100 200 accepting%20on%20fd%203\nworker 0 4242 150 1 3 - -\nend\n";
        let state = read(text).unwrap();
        assert_eq!(state.client, Some(9));
        let s = &state.supervisor;
        assert_eq!(
            (s.next_id, s.restarts, s.workers, s.phase, s.reload_queued),
            (4, 2, 2, Phase::Running, false)
        );
        assert_eq!(s.unserved_since, None);
        assert_eq!(
            s.generations,
            [Generation {
                id: 3,
                cause: b"reload".to_vec(),
                started_at: 100,
                role: Role::Current { since: 200 },
                first_failure: None,
                ready_by: Some(b"accepting on fd 3".to_vec()),
                workers: vec![Worker {
                    slot: 0,
                    state: WorkerState::Ready {
                        pid: 4242,
                        since: 150
                    },
                    failures: 1,
                    restarts: 3,
                    ready_by: None,
                    unobservable: None,
                }],
            }]
        );
        assert!(s.leaving.is_empty() && state.waiters.is_empty());
        assert!(state.arguments.is_empty() && !s.maintenance);
        let paused = "sockhold-state 1\nsupervisor 4 2 0 1 0 1 77\nend\n";
        let s = read(paused).unwrap().supervisor;
        assert_eq!(
            (s.phase, s.unserved_since),
            (Phase::Paused { since: 77 }, Some(77))
        );
        assert!(s.generations.is_empty());
        // What version 1 never had is not taken from it.
        let phase = "sockhold-state 1\nsupervisor 4 2 0 1 0 1 -\nphase idle -\nend\n";
        assert!(read(phase).unwrap_err().contains("unknown keyword 'phase'"));
    }

    #[test]
    fn unknown_words_in_the_new_lines_are_refused_with_their_line() {
        let text = write(&sample());
        let role = text.replacen(" starting\n", " booting\n", 1);
        assert!(read(&role).unwrap_err().contains("unknown role 'booting'"));
        let worker = text.replacen(" queued\n", " sleeping\n", 1);
        assert!(
            read(&worker)
                .unwrap_err()
                .contains("unknown worker state 'sleeping'")
        );
        let status = text.replacen("exited:1", "exited:x", 1);
        assert!(
            read(&status)
                .unwrap_err()
                .contains("'exited:x' is not a status")
        );
        let phase = text.replacen("phase running", "phase jogging", 1);
        assert!(
            read(&phase)
                .unwrap_err()
                .contains("unknown phase 'jogging'")
        );
    }

    #[test]
    fn maintenance_answering_reads_back_as_written() {
        let state = State {
            maintenance: Some(Maintenance {
                wanted: Some(b"paused".to_vec()),
                answering: true,
                answering_since: Some(77),
                answered_this_time: 3,
                answered: 9,
                retry_at: None,
                answers: vec![b"HTTP/1.0 503 x\r\n\r\ndown".to_vec(), Vec::new()],
                connections: vec![MaintenanceConnection {
                    slot: 4,
                    fd: 12,
                    source: b"ip:::1".to_vec(),
                    phase: b"reading".to_vec(),
                    bytes: 17,
                    quiet_at: Some(90),
                    answer_len: 22,
                    read_until: 100,
                    give_up_at: 300,
                    answered: false,
                    answer: 1,
                }],
            }),
            ..sample()
        };
        assert_eq!(read(&write(&state)), Ok(state.clone()));
        assert!(state.fds().contains(&12));
        let orphan = write(&sample()).replacen("end\n", "maintenance-answer x\nend\n", 1);
        assert!(
            read(&orphan)
                .unwrap_err()
                .contains("before any 'maintenance' line")
        );
    }

    #[test]
    fn strings_escape_every_byte_that_could_break_a_line() {
        for bytes in [&b"a b"[..], b"%", b"\n", b"-", b"", b"\xff\x00", b"x-y"] {
            let escaped = escape(bytes);
            assert!(
                !escaped.contains(' ') && !escaped.contains('\n'),
                "{escaped}"
            );
            assert_eq!(unescape(&escaped).as_deref(), Some(bytes), "{escaped}");
        }
        assert_ne!(escape(b"-"), "-");
    }

    #[test]
    fn another_version_is_refused_with_the_versions_read() {
        let text = write(&sample()).replacen("sockhold-state 2", "sockhold-state 3", 1);
        assert_eq!(
            read(&text),
            Err("it is version 3; this sockhold reads 1, 2".to_string())
        );
        assert_eq!(version_of(&text), Some(3));
        assert!(read("hello\n").unwrap_err().contains("does not start with"));
    }

    #[test]
    fn a_truncated_state_is_refused() {
        let text = write(&sample());
        let cut = &text[..text.len() - "end\n".len()];
        assert_eq!(
            read(cut),
            Err("it is truncated (no 'end' line)".to_string())
        );
        let half = &text[..text.len() / 2];
        assert!(read(half).is_err());
    }

    #[test]
    fn bad_escapes_and_fields_are_refused_with_their_line() {
        let text = write(&sample());
        let bad = text.replacen("exe /usr/bin/sockhold", "exe /usr%zzbin", 1);
        assert_eq!(
            read(&bad),
            Err("line 2 ('exe'): bad escape in '/usr%zzbin'".to_string())
        );
        let short = text.replacen("exe /usr/bin/sockhold", "exe /usr%4", 1);
        assert!(read(&short).unwrap_err().contains("bad escape"));
        let extra = text.replacen("client 9", "client 9 10", 1);
        assert_eq!(
            read(&extra),
            Err("line 12 ('client'): unexpected field '10'".to_string())
        );
        let nan = text.replacen("client 9", "client x", 1);
        assert!(read(&nan).unwrap_err().contains("'x' is not a number"));
        let unknown = text.replacen("client 9", "clients 9", 1);
        assert!(read(&unknown).unwrap_err().contains("unknown keyword"));
    }

    fn accepting() -> PerConnection {
        PerConnection {
            started_total: 17,
            rate_next: Some(5_000),
            paused_until: None,
            over_source_limit: QuietLogState {
                last_logged: Some(4_000),
                silenced: 300,
            },
            at_limit: QuietLogState {
                last_logged: Some(4_500),
                silenced: 0,
            },
            spawn_failures: QuietLogState::default(),
            accept_failures: QuietLogState {
                last_logged: None,
                silenced: 2,
            },
            connections: vec![
                Connection {
                    pid: 100,
                    source: ConnectionSource::Ip("127.0.0.1".parse().unwrap()),
                },
                Connection {
                    pid: 101,
                    source: ConnectionSource::Ip("::1".parse().unwrap()),
                },
                Connection {
                    pid: 102,
                    source: ConnectionSource::Uid(1000),
                },
                Connection {
                    pid: 103,
                    source: ConnectionSource::Unknown,
                },
            ],
        }
    }

    #[test]
    fn per_connection_bookkeeping_reads_back_as_written() {
        let state = State {
            per_connection: Some(accepting()),
            ..State::default()
        };
        let text = write(&state);
        assert!(text.contains("\naccepting 17 5000 -\n"), "{text}");
        assert!(
            text.contains("\naccept-log over-source-limit 4000 300\n"),
            "{text}"
        );
        assert!(text.contains("\nconnection 101 ip ::1\n"), "{text}");
        assert!(text.contains("\nconnection 103 unknown -\n"), "{text}");
        assert_eq!(read(&text), Ok(state));
        let idle = State {
            per_connection: Some(PerConnection {
                paused_until: Some(9),
                ..PerConnection::default()
            }),
            ..State::default()
        };
        assert_eq!(read(&write(&idle)), Ok(idle));
        // Generations mode writes none of it.
        assert!(!write(&sample()).contains("\naccepting "));
        assert_eq!(read(&write(&sample())).unwrap().per_connection, None);
    }

    #[test]
    fn bad_per_connection_lines_are_refused_with_their_line() {
        let text = write(&State {
            per_connection: Some(accepting()),
            ..State::default()
        });
        let early = text.replacen("accepting 17 5000 -\n", "", 1);
        assert!(
            read(&early)
                .unwrap_err()
                .contains("('accept-log'): before the 'accepting' line"),
            "{:?}",
            read(&early)
        );
        let twice = text.replacen(
            "accepting 17 5000 -\n",
            "accepting 17 5000 -\naccepting 1 - -\n",
            1,
        );
        assert!(
            read(&twice)
                .unwrap_err()
                .contains("a second 'accepting' line")
        );
        for (from, to, why) in [
            (
                "connection 100 ip 127.0.0.1",
                "connection 100 ip 127.0.0",
                "'127.0.0' is not an IP address",
            ),
            (
                "connection 102 uid 1000",
                "connection 102 gid 1000",
                "'gid 1000' is not a source",
            ),
            (
                "connection 103 unknown -",
                "connection 103 unknown x",
                "'unknown x' is not a source",
            ),
            (
                "connection 103 unknown -",
                "connection 103 unknown",
                "a field is missing",
            ),
            (
                "accept-log at-limit",
                "accept-log at-limits",
                "unknown log 'at-limits'",
            ),
            ("accepting 17", "accepting x", "'x' is not a number"),
        ] {
            let bad = text.replacen(from, to, 1);
            let error = read(&bad).unwrap_err();
            assert!(error.contains(why), "{to}: {error}");
        }
    }

    #[test]
    fn instants_survive_the_conversion() {
        let now = Instant::now();
        let clock = Clock {
            instant: now,
            monotonic_ns: 10_000_000_000,
        };
        let past = now - Duration::from_millis(1500);
        let future = now + Duration::from_millis(250);
        assert_eq!(clock.to_ns(past), 8_500_000_000);
        assert_eq!(clock.to_instant(clock.to_ns(past)), past);
        assert_eq!(clock.to_instant(clock.to_ns(future)), future);
    }
}
