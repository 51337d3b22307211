//! The generations engine: one long-running child per generation, reloads,
//! restarts, `--lazy`. The decisions are the pure state machine's
//! (`supervisor.rs`); this file carries them out: it spawns each
//! generation's child with its notify socket, checks who sends `READY=1`,
//! signals through the child handles, and tells systemd and control
//! clients how reloads end.

mod observe;
pub mod supervisor;

use crate::addr::Transport;
use crate::child::{ChildHandle, ChildStatus};
use crate::compat;
use crate::config::{Config, ReadyMode};
use crate::control;
use crate::engine::{Context, Engine, Event, Origin};
use crate::error::exit;
use crate::intercept::Intercept;
use crate::listen::Listener;
use crate::net;
use crate::readiness::{self, NotifySocket};
use crate::signals::StopBy;
use crate::spawn::{self, ChildSpec};
use observe::Watcher;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::time::Instant;
use supervisor::{Action, GenerationId, Supervisor};

pub use supervisor::Report;

pub struct Generations {
    supervisor: Supervisor,
    notify_sockets: HashMap<GenerationId, NotifySocket>,
    command: Vec<OsString>,
    /// sockhold's environment without what was addressed to it, plus the
    /// `--compat-env` variables (the same for every generation).
    inherited_env: Vec<(OsString, OsString)>,
    compat_env: Vec<compat::CompatEnv>,
    signal_group: bool,
    ready: ReadyMode,
    watcher: Watcher,
    /// O_NONBLOCK of each held socket as sockhold found it, until a
    /// generation changed it (warned once).
    nonblocking: Option<Vec<bool>>,
    /// `--intercept-bind`: the children's seccomp listeners.
    intercept: Option<Intercept>,
}

impl Generations {
    pub fn new(config: &Config, listeners: &[Listener]) -> Generations {
        Generations {
            supervisor: Supervisor::new(config.supervisor.clone()),
            notify_sockets: HashMap::new(),
            command: config.command.clone(),
            inherited_env: child_environment(&config.compat_env, listeners),
            compat_env: config.compat_env.clone(),
            signal_group: config.signal_group,
            ready: config.supervisor.ready,
            watcher: Watcher::new(listeners),
            nonblocking: Some(
                listeners
                    .iter()
                    .map(|l| net::is_nonblocking(l.fd()))
                    .collect(),
            ),
            intercept: config.intercept_bind.then(|| Intercept::new(listeners)),
        }
    }

    /// Feeds one event to the supervisor and carries out its actions, which
    /// may produce further events (a spawn's outcome).
    fn dispatch(&mut self, event: supervisor::Event, context: &mut Context<'_>) -> Option<i32> {
        let mut pending = VecDeque::from([event]);
        while let Some(event) = pending.pop_front() {
            for action in self.supervisor.handle(event, Instant::now()) {
                match action {
                    Action::Spawn { generation } => {
                        pending.push_back(self.spawn(generation, context));
                    }
                    Action::Stop { pid, signal } => context.children.stop(pid, signal),
                    Action::Signal { pid, signal } => context.children.signal(pid, signal),
                    Action::Forget { generation } => self.forget(generation, context),
                    Action::Observe { generation } => {
                        if let Some(observation) = self.observe(generation) {
                            pending.push_back(supervisor::Event::Observed {
                                generation,
                                observation,
                            });
                        }
                    }
                    Action::Exit { status } => return Some(status),
                    // Outcomes for outside watchers (systemd, control
                    // clients); the log already tells them to a person.
                    Action::Report(report) => {
                        if let Report::Ready { generation, .. }
                        | Report::ReloadSucceeded { generation, .. } = report
                        {
                            self.check_nonblocking(generation, context.listeners);
                        }
                        context.service_manager.report(&report);
                        if let Some(control) = context.control.as_deref_mut() {
                            control.report(&report);
                        }
                    }
                    Action::WatchListeners => {
                        context.watch_listeners(true);
                    }
                    Action::UnwatchListeners => {
                        context.watch_listeners(false);
                    }
                }
            }
        }
        None
    }

    fn status_json(&self, context: &Context<'_>) -> String {
        let state = self.supervisor.phase().to_string();
        let view = control::StatusView {
            pid: std::process::id(),
            state: &state,
            started_at: context.started_at,
            sockets: context.socket_infos(),
            generations: self.supervisor.generations(),
            restarts: self.supervisor.restarts,
            reload_queued: self.supervisor.reload_queued(),
        };
        control::status_json(&view, Instant::now(), std::time::SystemTime::now())
    }

    /// Reads a generation's notify socket; a `READY=1` from sockhold's
    /// user or root (`NotifySocket::trusts`) becomes an event. At most
    /// `MESSAGES_PER_WAKEUP` per wakeup, so that a flood cannot keep
    /// sockhold from its other work; refusals are logged once per interval
    /// with a count, as accept mode does.
    fn take_notifications(
        &mut self,
        generation: GenerationId,
        context: &mut Context<'_>,
    ) -> Option<i32> {
        let main_pid = self.supervisor.pid_of(generation);
        let socket = self.notify_sockets.get_mut(&generation)?;
        let now = Instant::now();
        if let Some(count) = socket.refusals().take_summary(now) {
            log_refused_notifications(generation, count);
        }
        let mut ready = false;
        let mut drained = false;
        for _ in 0..readiness::MESSAGES_PER_WAKEUP {
            let message = match socket.receive() {
                Ok(Some(message)) => message,
                Ok(None) => {
                    drained = true;
                    break;
                }
                Err(errno) => {
                    log::warn!("cannot read generation {generation}'s notify socket: {errno}");
                    drained = true;
                    break;
                }
            };
            if !socket.trusts(&message) {
                if socket.refusals().should_log(now) {
                    log::warn!(
                        "ignoring notify message from pid {} (uid {}) on generation {generation}'s socket: only sockhold's user (uid {}) and root may send",
                        message
                            .sender
                            .map_or_else(|| "unknown".to_string(), |p| p.to_string()),
                        message
                            .sender_uid
                            .map_or_else(|| "unknown".to_string(), |u| u.to_string()),
                        socket.owner()
                    );
                }
                continue;
            }
            // Who sent it, for the curious only: a sender that has exited
            // (systemd-notify in a script) cannot be looked up, and the
            // lookup costs a walk through /proc.
            if log::log_enabled!(log::Level::Debug) {
                if let (Some(sender), Some(main)) = (message.sender, main_pid) {
                    if !readiness::is_same_or_descendant(sender, main) {
                        log::debug!(
                            "notify message on generation {generation}'s socket from pid {sender}, not (or no longer) one of its processes: counted, as its sender runs as sockhold's user or root"
                        );
                    }
                }
            }
            if let Some(status) = &message.status {
                log::debug!("generation {generation} status: {status}");
            }
            ready |= message.ready;
        }
        if !drained {
            // epoll reports the socket edge-triggered: what is left would
            // wait for the next datagram. Registered again, the socket is
            // reported at once by the next wait, after this wakeup's other
            // events.
            let fd = socket.fd().as_raw_fd();
            context.unwatch(fd);
            context.watch(
                fd,
                generation,
                &format!("generation {generation}'s notify socket"),
            );
        }
        if ready {
            return self.dispatch(supervisor::Event::Ready { generation }, context);
        }
        None
    }

    /// Starts the child of `generation` and reports how that went.
    fn spawn(&mut self, generation: GenerationId, context: &mut Context<'_>) -> supervisor::Event {
        let failed = |reason: String, code: i32| supervisor::Event::SpawnFailed {
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
            Err(error) => return failed(error.to_string(), error.exit_status()),
        };
        let notify = match NotifySocket::new() {
            Ok(notify) => notify,
            Err(errno) => {
                return failed(format!("cannot create a notify socket: {errno}"), exit::OS);
            }
        };
        let listeners = context.listeners;
        let mut env = self.inherited_env.clone();
        env.push(("LISTEN_FDS".into(), listeners.len().to_string().into()));
        let names: Vec<&str> = listeners.iter().map(|l| l.name.as_str()).collect();
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
        env.push(("NOTIFY_SOCKET".into(), notify.address().into()));
        env.extend(compat::generation_environment(&self.compat_env, generation));
        let fds = listeners.iter().map(Listener::raw_fd).collect();
        let mut spec = match ChildSpec::new(&program, &self.command, &env, fds, true) {
            Ok(spec) => spec,
            Err(reason) => return failed(reason, exit::CANNOT_EXECUTE),
        };
        spec.set_process_group(self.signal_group);
        spec.set_intercept(self.intercept.as_ref().map(Intercept::filter));
        match spawn::spawn(context.spawner, &spec) {
            Ok(spawn::Spawned {
                pid,
                pidfd,
                intercept,
            }) => {
                context
                    .children
                    .insert(ChildHandle::new(pid, pidfd, self.signal_group));
                if let (Some(watcher), Some(listener)) = (&mut self.intercept, intercept) {
                    watcher.watch(generation, listener, context);
                }
                let what = format!("generation {generation}'s notify socket");
                context.watch(notify.fd().as_raw_fd(), generation, &what);
                self.notify_sockets.insert(generation, notify);
                supervisor::Event::Spawned { generation, pid }
            }
            Err(error) => failed(error.describe(&program), error.exit_status()),
        }
    }

    /// Answers a child's trapped calls (`--intercept-bind`). Where that
    /// set O_NONBLOCK on a held socket for the server that asked for it,
    /// that is the new normal the O_NONBLOCK warning compares with.
    fn take_interceptions(&mut self, key: u64, context: &mut Context<'_>) {
        let Some(intercept) = &mut self.intercept else {
            return;
        };
        for change in intercept.handle(key, context) {
            if let Some(found) = &mut self.nonblocking {
                if let Some(was) = found.get_mut(change.index) {
                    *was = change.on;
                }
            }
        }
    }

    /// O_NONBLOCK lives on the open file description that every generation
    /// shares: a generation that changes it changes it for all (a server
    /// that accepts blocking, next to one that set it, gets EAGAIN).
    fn check_nonblocking(&mut self, generation: GenerationId, listeners: &[Listener]) {
        let Some(found) = &self.nonblocking else {
            return;
        };
        for (listener, was) in listeners.iter().zip(found) {
            let now = net::is_nonblocking(listener.fd());
            if now != *was {
                let state = if now { "sets" } else { "clears" };
                log::warn!(
                    "generation {generation} {state} O_NONBLOCK on {}: every generation shares it, so a server that expects the other mode may fail to accept (see CAVEATS)",
                    listener.description
                );
                self.nonblocking = None;
                return;
            }
        }
    }

    /// One look at a starting generation's processes.
    fn observe(&self, generation: GenerationId) -> Option<supervisor::Observation> {
        let main = self.supervisor.pid_of(generation)?;
        let others: Vec<_> = self
            .supervisor
            .generations()
            .iter()
            .filter(|g| g.id != generation)
            .filter_map(|g| g.pid)
            .collect();
        let bound = self
            .intercept
            .as_ref()
            .and_then(|intercept| intercept.bound_by(generation));
        Some(self.watcher.look(main, &others, self.ready, bound))
    }

    /// Drops the generation's notify socket, which removes its file and
    /// directory; refusals not yet told are told now.
    fn forget(&mut self, generation: GenerationId, context: &mut Context<'_>) {
        if let Some(intercept) = &mut self.intercept {
            intercept.forget(generation);
        }
        if let Some(mut notify) = self.notify_sockets.remove(&generation) {
            context.unwatch(notify.fd().as_raw_fd());
            let count = notify.refusals().take_silenced();
            if count > 0 {
                log_refused_notifications(generation, count);
            }
        }
    }
}

impl Engine for Generations {
    fn handle(&mut self, event: Event, context: &mut Context<'_>) -> Option<i32> {
        let event = match event {
            Event::Start => supervisor::Event::Start,
            Event::Reload { by } => {
                if let Origin::Control(client) = by {
                    log::info!("control: reload requested");
                    // Registered before the supervisor sees the request, so
                    // that the reload it starts or joins answers it.
                    if let Some(control) = context.control.as_deref_mut() {
                        control.await_reload(client);
                    }
                }
                supervisor::Event::Reload
            }
            Event::Stop { signal, by } => {
                let by = match by {
                    Origin::Signal => StopBy::Signal,
                    Origin::Control(_) => StopBy::Control,
                };
                supervisor::Event::Stop { signal, by }
            }
            Event::Forward { signal } => supervisor::Event::Forward { signal },
            Event::Exited(reaped) => supervisor::Event::Exited {
                pid: reaped.pid,
                status: reaped.status,
            },
            Event::ListenerReady { .. } => supervisor::Event::ConnectionWaiting,
            Event::SourceReady { key } if Intercept::owns(key) => {
                self.take_interceptions(key, context);
                return None;
            }
            Event::SourceReady { key } => return self.take_notifications(key, context),
            Event::Status { client } => {
                let json = self.status_json(context);
                if let Some(control) = context.control.as_deref_mut() {
                    control.reply(client, &json);
                }
                return None;
            }
            Event::Tick => supervisor::Event::Tick,
        };
        self.dispatch(event, context)
    }

    fn next_deadline(&self, _now: Instant) -> Option<Instant> {
        self.supervisor.next_deadline()
    }
}

/// The summary of notify messages refused since the last warning.
fn log_refused_notifications(generation: GenerationId, count: u64) {
    log::warn!("{count} more notify messages ignored on generation {generation}'s socket");
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
    if kinds.is_empty() {
        return env;
    }
    let sockets: Vec<compat::SocketKind> = listeners
        .iter()
        .map(|listener| match listener.transport {
            Transport::Stream => net::socket_kind(listener.raw_fd()),
            Transport::Datagram => {
                log::info!(
                    "--compat-env leaves out {}: Server::Starter and einhorn describe stream sockets only",
                    listener.description
                );
                compat::SocketKind::Datagram
            }
        })
        .collect();
    env.retain(|(key, _)| !compat::replaces(kinds, key.as_bytes()));
    env.extend(compat::environment(kinds, &sockets));
    env
}
