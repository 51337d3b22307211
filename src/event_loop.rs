//! The driver: one mio `Poll`, the only place sockhold waits. Signals come
//! in through signal-hook-mio, child exits are reaped with
//! `waitpid(-1, WNOHANG)` until none is left, readiness datagrams arrive on
//! the generations' notify sockets, and the poll timeout is the
//! supervisor's next deadline (none while idle: zero wakeups).
//! The supervisor decides; this file carries out its actions. In
//! per-connection mode (`--accept`) the supervisor has nothing to do:
//! `accept.rs` gets the listeners' events and every reaped child instead.

use crate::accept::{self, AcceptServer};
use crate::compat;
use crate::config::Config;
use crate::control::{self, ControlSocket, Request};
use crate::error::{Error, exit};
use crate::leftovers;
use crate::listen::Listener;
use crate::pidfile::PidFile;
use crate::readiness::{self, NotifySocket};
use crate::sd_notify::{NotifyEnv, ServiceManager};
use crate::signals;
use crate::spawn::{self, ChildSpec, ResolveError, Spawner};
use crate::supervisor::{Action, ChildStatus, Event, GenerationId, Report, Supervisor};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::{WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use signal_hook_mio::v1_0::Signals;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

const SIGNALS: Token = Token(0);
/// Notify sockets use tokens from here on: `NOTIFY_BASE + generation`.
const NOTIFY_BASE: usize = 1 << 32;
/// Listening sockets (watched in `--accept` and `--lazy` mode only):
/// `LISTENER_BASE + index`.
const LISTENER_BASE: usize = 1 << 40;
/// The control socket's listener, then its connections (`+ 1 + client`).
const CONTROL_BASE: usize = 1 << 48;

/// After SIGKILL, how long to wait for leftovers to be reaped, and how many
/// times to sweep for processes that their deaths orphaned.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(1);
const LEFTOVER_KILL_ROUNDS: usize = 10;

pub struct EventLoop {
    poll: Poll,
    signals: Signals,
    supervisor: Supervisor,
    listeners: Vec<Listener>,
    notify_sockets: HashMap<GenerationId, NotifySocket>,
    command: Vec<OsString>,
    /// sockhold's environment without what was addressed to it, plus the
    /// `--compat-env` variables (the same for every generation).
    inherited_env: Vec<(OsString, OsString)>,
    compat_env: Vec<compat::CompatEnv>,
    forward_signals: Vec<Signal>,
    /// systemd (or another service manager) watching sockhold, if any.
    service_manager: ServiceManager,
    /// Per-connection mode; None: generations.
    accept: Option<AcceptServer>,
    /// Whether the listeners are registered with the poll.
    watching_listeners: bool,
    control: Option<control::Server>,
    pid_file: Option<PidFile>,
    started_at: Instant,
    /// How leftover processes are stopped at exit: as a generation is.
    stop_signal: Signal,
    stop_timeout: Duration,
    /// `--signal-group`: children lead their own process groups, and
    /// signals go to the group.
    signal_group: bool,
    /// Starts the generations' children.
    spawner: Spawner,
}

impl EventLoop {
    pub fn new(config: Config, listeners: Vec<Listener>) -> Result<EventLoop, Error> {
        let poll = Poll::new().map_err(|e| io_error("cannot create the event loop", e))?;
        let mut handled = vec![
            Signal::SIGCHLD,
            Signal::SIGHUP,
            Signal::SIGTERM,
            Signal::SIGINT,
        ];
        handled.extend(config.forward_signals.iter().copied());
        let mut signals = Signals::new(handled.iter().map(|s| *s as i32))
            .map_err(|e| io_error("cannot install signal handlers", e))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| io_error("cannot watch signals", e))?;
        // Orphaned grandchildren are reparented to us and reaped by the
        // waitpid loop, instead of piling up as zombies under init.
        if let Err(errno) = nix::sys::prctl::set_child_subreaper(true) {
            log::warn!(
                "cannot become a child subreaper: {}",
                crate::error::errno_text(errno)
            );
        }
        let inherited_env = spawn::inherited_environment();
        let accept = match &config.accept {
            Some(settings) => {
                // Resolved once: every connection execs this path, so a new
                // binary installed there is picked up without a reload.
                let path_var = inherited_env
                    .iter()
                    .find(|(key, _)| key == "PATH")
                    .map(|(_, value)| value.as_os_str());
                let program = spawn::resolve_command(&config.command[0], path_var)?;
                Some(AcceptServer::new(
                    settings,
                    &program,
                    &config.command,
                    &inherited_env,
                    &listeners,
                )?)
            }
            None => None,
        };
        // --compat-env is refused with --accept: its variables describe
        // listening sockets, which a per-connection child does not get.
        let inherited_env = child_environment(&config.compat_env, &listeners);
        let stop_signal = config.supervisor.stop_signal;
        let stop_timeout = config.supervisor.stop_timeout;
        let spawner = Spawner::new().map_err(spawn::spawner_error)?;
        Ok(EventLoop {
            poll,
            signals,
            supervisor: Supervisor::new(config.supervisor),
            listeners,
            notify_sockets: HashMap::new(),
            command: config.command,
            inherited_env,
            compat_env: config.compat_env,
            forward_signals: config.forward_signals,
            service_manager: ServiceManager::new(
                &NotifyEnv::from_environment(),
                std::process::id(),
                Instant::now(),
            ),
            accept,
            watching_listeners: false,
            control: None,
            pid_file: None,
            started_at: Instant::now(),
            stop_signal,
            stop_timeout,
            signal_group: config.signal_group,
            spawner,
        })
    }

    /// Serves the control socket (if any) and removes the pid file (if
    /// any) at exit.
    pub fn with_control(
        mut self,
        control: Option<ControlSocket>,
        pid_file: Option<PidFile>,
    ) -> Result<EventLoop, Error> {
        if let Some(socket) = control {
            self.control = Some(control::Server::new(
                socket,
                self.poll.registry(),
                CONTROL_BASE,
            )?);
        }
        self.pid_file = pid_file;
        Ok(self)
    }

    /// Runs until the supervisor says to exit; returns the exit status.
    pub fn run(mut self) -> Result<i32, Error> {
        let mut events = Events::with_capacity(64);
        let mut status = self.dispatch(Event::Start);
        // In --accept and --lazy mode sockhold itself waits for connections
        // at first: it is ready as soon as it does.
        if self.watching_listeners {
            self.service_manager.waiting_for_connections();
        }
        while status.is_none() {
            let now = Instant::now();
            let deadline = match &self.accept {
                // Connections still queued: only look for other events.
                Some(server) if server.has_pending() => Some(now),
                Some(server) => server.next_deadline(now),
                None => self.supervisor.next_deadline(),
            };
            let control_deadline = self
                .control
                .as_ref()
                .and_then(control::Server::next_deadline);
            let timeout = [
                deadline,
                control_deadline,
                self.service_manager.next_deadline(),
            ]
            .into_iter()
            .flatten()
            .min()
            .map(|deadline| deadline.saturating_duration_since(now));
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(io_error("cannot wait for events", error)),
            }
            let mut incoming = Vec::new();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.take_signals(&mut incoming),
                    Token(token) if token >= CONTROL_BASE => {
                        if let Some(control) = &mut self.control {
                            control.handle_event(Token(token), event, Instant::now());
                        }
                    }
                    Token(token) if token >= LISTENER_BASE => {
                        self.listener_ready(token - LISTENER_BASE, &mut incoming);
                    }
                    Token(token) if token >= NOTIFY_BASE => {
                        self.take_notifications(
                            (token - NOTIFY_BASE) as GenerationId,
                            &mut incoming,
                        );
                    }
                    Token(_) => {}
                }
            }
            self.service_manager.tick(Instant::now());
            incoming.push(Event::Tick);
            for event in incoming {
                status = self.dispatch(event);
                if status.is_some() {
                    break;
                }
            }
            // Accepting comes after reaping, so that children that exited
            // meanwhile make room first.
            if status.is_none() {
                self.accept_pending();
            }
            if status.is_none() {
                status = self.serve_control();
            }
        }
        self.stop_leftovers();
        for listener in &self.listeners {
            listener.remove_socket_file();
        }
        if let Some(control) = &mut self.control {
            control.shutdown();
        }
        if let Some(pid_file) = &self.pid_file {
            pid_file.remove();
        }
        Ok(status.unwrap_or(exit::INTERNAL))
    }

    /// At exit: stops the processes that children left behind (see
    /// `leftovers.rs`) with the stop signal, then SIGKILL after the stop
    /// timeout, or at once on a second TERM or INT. Returns once none is
    /// left (or none will die).
    fn stop_leftovers(&mut self) {
        let me = Pid::this();
        let left = leftovers::children_of(me);
        if left.is_empty() {
            return;
        }
        log::info!(
            "stopping what the child left behind: {} to {}",
            signals::name(self.stop_signal),
            leftovers::describe(&left)
        );
        for pid in &left {
            let _ = nix::sys::signal::kill(*pid, self.stop_signal);
        }
        let deadline = Instant::now() + self.stop_timeout;
        if self.wait_for_leftovers(deadline, true) {
            return;
        }
        // SIGKILL can orphan further processes (a killed worker's own
        // children): sweep until nothing is left.
        for _ in 0..LEFTOVER_KILL_ROUNDS {
            let left = leftovers::children_of(me);
            if left.is_empty() {
                return;
            }
            log::warn!(
                "left behind and still running: SIGKILL to {}",
                leftovers::describe(&left)
            );
            for pid in &left {
                let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
            }
            if self.wait_for_leftovers(Instant::now() + LEFTOVER_KILL_WAIT, false) {
                return;
            }
        }
        log::warn!(
            "exiting with processes left: {} (unkillable, e.g. in uninterruptible sleep)",
            leftovers::describe(&leftovers::children_of(me))
        );
    }

    /// Reaps until no child is left (true) or `deadline` passes (false); a
    /// TERM or INT ends the wait early when `interruptible`.
    fn wait_for_leftovers(&mut self, deadline: Instant, interruptible: bool) -> bool {
        let mut events = Events::with_capacity(8);
        loop {
            let mut exits = Vec::new();
            reap_children(&mut exits);
            for exit in exits {
                if let Event::Exited { pid, status } = exit {
                    log::debug!("left-behind pid {pid} ended with {status}");
                }
            }
            if leftovers::children_of(Pid::this()).is_empty() {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            match self.poll.poll(&mut events, Some(deadline - now)) {
                Ok(()) => {}
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                Err(error) => {
                    log::warn!("cannot wait for events: {error}");
                    return false;
                }
            }
            if events.iter().any(|event| event.token() == SIGNALS) {
                let received: Vec<i32> = self.signals.pending().collect();
                let stop = [Signal::SIGTERM as i32, Signal::SIGINT as i32];
                if interruptible && received.iter().any(|n| stop.contains(n)) {
                    return false;
                }
            }
        }
    }

    /// Feeds one event to the supervisor and carries out its actions, which
    /// may produce further events (a spawn's outcome).
    fn dispatch(&mut self, event: Event) -> Option<i32> {
        if self.accept.is_some() {
            return self.dispatch_accept(event);
        }
        let mut pending = VecDeque::from([event]);
        while let Some(event) = pending.pop_front() {
            for action in self.supervisor.handle(event, Instant::now()) {
                match action {
                    Action::Spawn { generation } => pending.push_back(self.spawn(generation)),
                    Action::Signal { pid, signal } => send(pid, signal, self.signal_group),
                    Action::Forget { generation } => self.forget(generation),
                    Action::Exit { status } => return Some(status),
                    // Outcomes for outside watchers (systemd, control
                    // clients); the log already tells them to a person.
                    Action::Report(report) => {
                        self.service_manager.report(&report);
                        if let Some(control) = &mut self.control {
                            control.report(&report);
                        }
                    }
                    Action::WatchListeners => self.watch_listeners(true),
                    Action::UnwatchListeners => self.watch_listeners(false),
                }
            }
        }
        None
    }

    /// Per-connection mode: every event goes to `accept.rs`.
    fn dispatch_accept(&mut self, event: Event) -> Option<i32> {
        if let Event::Stop { .. } = event {
            self.service_manager.report(&Report::Stopping);
        }
        let group = self.signal_group;
        let server = self.accept.as_mut()?;
        let now = Instant::now();
        let actions = match event {
            Event::Start => {
                log::info!(
                    "accepting connections: one child per connection, at most {} at once",
                    server.connections.limits().max_connections
                );
                Vec::new()
            }
            Event::Reload => {
                log::info!(
                    "reload: nothing to reload in --accept mode; every new connection runs the command afresh"
                );
                Vec::new()
            }
            Event::Stop { signal } => server.connections.stop(signal, now),
            Event::Forward { signal } => server.connections.forward(signal),
            Event::Exited { pid, status } => server.connections.exited(pid, status),
            Event::Tick => server.tick(now),
            _ => Vec::new(),
        };
        for action in actions {
            match action {
                accept::Action::Signal { pid, signal } => send(pid, signal, group),
                accept::Action::Exit { status } => return Some(status),
            }
        }
        let wanted = server.wants_listeners(Instant::now());
        self.watch_listeners(wanted);
        None
    }

    /// A watched listener has a connection queued: accept it (`--accept`),
    /// or tell the supervisor (`--lazy`, where the child accepts).
    fn listener_ready(&mut self, index: usize, incoming: &mut Vec<Event>) {
        match &mut self.accept {
            Some(server) => server.mark_ready(index),
            None => {
                if !incoming.contains(&Event::ConnectionWaiting) {
                    incoming.push(Event::ConnectionWaiting);
                }
            }
        }
    }

    /// Accepts what is queued on the listeners that reported readiness.
    fn accept_pending(&mut self) {
        let Some(server) = &mut self.accept else {
            return;
        };
        server.accept_pending();
        let wanted = server.wants_listeners(Instant::now());
        self.watch_listeners(wanted);
    }

    /// Registers or deregisters every listener. Edge-triggered: on
    /// registration epoll reports a connection already queued, so a
    /// listener that was not drained is picked up again.
    fn watch_listeners(&mut self, on: bool) {
        if on == self.watching_listeners {
            return;
        }
        self.watching_listeners = on;
        if let Some(server) = &mut self.accept {
            // Whatever is still queued is reported again on registration.
            server.forget_pending();
        }
        let registry = self.poll.registry();
        for (index, listener) in self.listeners.iter().enumerate() {
            let raw = listener.raw_fd();
            let result = if on {
                registry.register(
                    &mut SourceFd(&raw),
                    Token(LISTENER_BASE + index),
                    Interest::READABLE,
                )
            } else {
                registry.deregister(&mut SourceFd(&raw))
            };
            if let Err(error) = result {
                log::warn!("cannot watch {}: {error}", listener.description);
            }
        }
    }

    /// Acts on the control requests read so far. A reload client is
    /// registered as waiting before the supervisor sees the request, so
    /// that the reload it starts or joins (a queued one) answers it.
    fn serve_control(&mut self) -> Option<i32> {
        let now = Instant::now();
        if let Some(control) = &mut self.control {
            control.expire(now);
        }
        loop {
            let requests = self.control.as_mut()?.take_requests();
            if requests.is_empty() {
                return None;
            }
            for (client, request) in requests {
                match request {
                    Request::Reload if self.accept.is_some() => {
                        self.control.as_mut()?.reply(
                            client,
                            "ok nothing to reload in --accept mode: every connection runs the command afresh",
                        );
                    }
                    Request::Reload => {
                        log::info!("control: reload requested");
                        self.control.as_mut()?.await_reload(client);
                        if let Some(status) = self.dispatch(Event::Reload) {
                            return Some(status);
                        }
                    }
                    Request::Status => {
                        let json = self.status_json();
                        self.control.as_mut()?.reply(client, &json);
                    }
                    Request::Stop => {
                        self.control.as_mut()?.reply_and_hold(client, "ok stopping");
                        // A second stop request is not the impatient
                        // second Ctrl-C that kills at once: it just waits.
                        if self.supervisor.phase_name() != "stopping" {
                            log::info!("control: stop requested");
                            let stop = Event::Stop {
                                signal: Signal::SIGTERM,
                            };
                            if let Some(status) = self.dispatch(stop) {
                                return Some(status);
                            }
                        }
                    }
                }
            }
        }
    }

    fn status_json(&self) -> String {
        let sockets = self
            .listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| control::SocketInfo {
                fd: spawn::FIRST_PASSED_FD as usize + index,
                name: &listener.name,
                address: &listener.description,
            })
            .collect();
        let view = control::StatusView {
            pid: std::process::id(),
            state: self.supervisor.phase_name(),
            started_at: self.started_at,
            sockets,
            generations: self.supervisor.generations(),
            restarts: self.supervisor.restarts,
            reload_queued: self.supervisor.reload_queued(),
        };
        control::status_json(&view, Instant::now(), std::time::SystemTime::now())
    }

    fn take_signals(&mut self, incoming: &mut Vec<Event>) {
        let received: Vec<i32> = self.signals.pending().collect();
        for number in received {
            let Ok(signal) = Signal::try_from(number) else {
                continue;
            };
            match signal {
                Signal::SIGCHLD => reap_children(incoming),
                Signal::SIGHUP => incoming.push(Event::Reload),
                Signal::SIGTERM | Signal::SIGINT => incoming.push(Event::Stop { signal }),
                other if self.forward_signals.contains(&other) => {
                    incoming.push(Event::Forward { signal: other });
                }
                _ => {}
            }
        }
    }

    fn take_notifications(&mut self, generation: GenerationId, incoming: &mut Vec<Event>) {
        let Some(socket) = self.notify_sockets.get(&generation) else {
            return;
        };
        let main_pid = self.supervisor.pid_of(generation);
        loop {
            let message = match socket.receive() {
                Ok(Some(message)) => message,
                Ok(None) => break,
                Err(errno) => {
                    log::warn!("cannot read generation {generation}'s notify socket: {errno}");
                    break;
                }
            };
            let trusted = match (message.sender, main_pid) {
                (Some(sender), Some(main)) => readiness::is_same_or_descendant(sender, main),
                _ => false,
            };
            if !trusted {
                log::warn!(
                    "ignoring notify message from pid {} on generation {generation}'s socket: not one of its processes",
                    message
                        .sender
                        .map_or_else(|| "unknown".to_string(), |p| p.to_string())
                );
                continue;
            }
            if let Some(status) = &message.status {
                log::debug!("generation {generation} status: {status}");
            }
            if message.ready {
                incoming.push(Event::Ready { generation });
            }
        }
    }

    /// Starts the child of `generation` and reports how that went.
    fn spawn(&mut self, generation: GenerationId) -> Event {
        let failed = |reason: String, code: i32| Event::SpawnFailed {
            generation,
            reason,
            status: ChildStatus::Exited(code),
        };
        let path_var = self
            .inherited_env
            .iter()
            .find(|(key, _)| key == "PATH")
            .map(|(_, value)| value.as_os_str());
        let program = match spawn::resolve_program(&self.command[0], path_var) {
            Ok(program) => program,
            Err(error) => {
                let reason = match &error {
                    ResolveError::NotFound => "command not found".to_string(),
                    ResolveError::NotExecutable(why) => format!("cannot execute: {why}"),
                };
                return failed(reason, error.exit_status());
            }
        };
        let notify = match NotifySocket::new() {
            Ok(notify) => notify,
            Err(errno) => {
                return failed(format!("cannot create a notify socket: {errno}"), exit::OS);
            }
        };
        let mut env = self.inherited_env.clone();
        env.push(("LISTEN_FDS".into(), self.listeners.len().to_string().into()));
        let names: Vec<&str> = self.listeners.iter().map(|l| l.name.as_str()).collect();
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
        env.push(("NOTIFY_SOCKET".into(), notify.address().into()));
        env.extend(compat::generation_environment(&self.compat_env, generation));
        let fds = self.listeners.iter().map(Listener::raw_fd).collect();
        let mut spec = match ChildSpec::new(&program, &self.command, &env, fds, true) {
            Ok(spec) => spec,
            Err(reason) => return failed(reason, exit::CANNOT_EXECUTE),
        };
        spec.set_process_group(self.signal_group);
        match spawn::spawn(&mut self.spawner, &spec) {
            Ok(spawn::Spawned { pid, .. }) => {
                let token = Token(NOTIFY_BASE + generation as usize);
                let raw = notify.fd().as_raw_fd();
                if let Err(error) =
                    self.poll
                        .registry()
                        .register(&mut SourceFd(&raw), token, Interest::READABLE)
                {
                    log::warn!("cannot watch generation {generation}'s notify socket: {error}");
                }
                self.notify_sockets.insert(generation, notify);
                Event::Spawned { generation, pid }
            }
            Err(error) => failed(error.describe(&program), error.exit_status()),
        }
    }

    fn forget(&mut self, generation: GenerationId) {
        if let Some(notify) = self.notify_sockets.remove(&generation) {
            let raw = notify.fd().as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        }
    }
}

/// What every child inherits: sockhold's environment without what was
/// addressed to sockhold, with the `--compat-env` variables in place of any
/// inherited ones of the same names.
fn child_environment(
    kinds: &[compat::CompatEnv],
    listeners: &[Listener],
) -> Vec<(OsString, OsString)> {
    use std::os::unix::ffi::OsStrExt;
    let mut env = spawn::inherited_environment();
    env.retain(|(key, _)| !compat::replaces(kinds, key.as_bytes()));
    env.extend(compat::environment(kinds, listeners));
    env
}

/// Sends `signal` to a child, or with `--signal-group` to its process group
/// (and to the child itself as well if it has left that group).
fn send(pid: Pid, signal: Signal, group: bool) {
    let mut result = Ok(());
    let mut reached_child = false;
    if group {
        result = nix::sys::signal::killpg(pid, signal);
        reached_child = nix::unistd::getpgid(Some(pid)) == Ok(pid);
    }
    if !reached_child {
        result = nix::sys::signal::kill(pid, signal);
    }
    if let Err(errno) = result {
        // ESRCH: it exited already; its exit is on its way.
        log::debug!(
            "cannot send {} to pid {pid}: {errno}",
            signals::name(signal)
        );
    }
}

/// One SIGCHLD can stand for many exits: reap until nothing is left.
fn reap_children(incoming: &mut Vec<Event>) {
    loop {
        match nix::sys::wait::waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(pid, code)) => incoming.push(Event::Exited {
                pid,
                status: ChildStatus::Exited(code),
            }),
            Ok(WaitStatus::Signaled(pid, signal, _)) => incoming.push(Event::Exited {
                pid,
                status: ChildStatus::Signaled(signal),
            }),
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => break,
            Ok(_) => {}
            Err(Errno::EINTR) => {}
            Err(errno) => {
                log::warn!("waitpid failed: {errno}");
                break;
            }
        }
    }
}

fn io_error(what: &str, error: std::io::Error) -> Error {
    Error::new(exit::OS, format!("{what}: {error}"))
}
