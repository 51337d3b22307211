//! The generations engine: long-running children (one per generation, or
//! `--workers` of them), reloads, restarts, `--lazy`. The decisions are the
//! pure state machine's (`supervisor.rs`); this file carries them out: it
//! spawns each worker with its generation's notify socket, checks who
//! sends `READY=1` (and, with workers, which worker's tree it came from),
//! signals through the child handles, and tells systemd and control
//! clients how reloads end.

pub mod maintenance;
mod observe;
pub mod supervisor;

use crate::addr::Transport;
use crate::child::{ChildHandle, ChildStatus};
use crate::compat;
use crate::config::{Config, ReadyMode};
use crate::control;
use crate::engine::{Context, Engine, Event, Origin};
use crate::error::exit;
use crate::fd_store::FdStore;
use crate::intercept::Intercept;
use crate::listen::Listener;
use crate::net;
use crate::readiness::{self, NotifySocket};
use crate::signals::StopBy;
use crate::spawn::{self, ChildSpec, ChildStdio};
use maintenance::Maintenance;
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
    /// `--stdin-socket`.
    stdin_socket: bool,
    ready: ReadyMode,
    watcher: Watcher,
    /// O_NONBLOCK of each held socket as sockhold found it, until a
    /// generation changed it (warned once).
    nonblocking: Option<Vec<bool>>,
    /// The generations running when a held socket a child shut down was
    /// replaced by a new one: they have only the old one, so a reload
    /// follows (`reload_onto_new_sockets`).
    on_old_sockets: Vec<GenerationId>,
    /// `--intercept-bind`: the children's seccomp listeners.
    intercept: Option<Intercept>,
    /// `--maintenance`: answering connections while nobody serves.
    maintenance: Option<Maintenance>,
    /// `--fd-store-max`: the fds children stored, passed to every later one.
    fd_store: FdStore,
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
            stdin_socket: config.stdin_socket,
            ready: config.supervisor.ready,
            watcher: Watcher::new(listeners),
            nonblocking: Some(
                listeners
                    .iter()
                    .map(|l| net::is_nonblocking(l.fd()))
                    .collect(),
            ),
            on_old_sockets: Vec::new(),
            intercept: config.intercept_bind.then(|| Intercept::new(listeners)),
            maintenance: config
                .maintenance
                .as_ref()
                .map(|settings| Maintenance::new(settings, listeners.len())),
            fd_store: FdStore::new(config.fd_store_max),
        }
    }

    /// Restores the held sockets a child shut down (`Context::check_listeners`).
    /// A socket replaced by a new one (Unix) is one that the running
    /// generations no longer serve: the observer follows the new socket,
    /// and they are noted for a reload.
    fn check_listeners(&mut self, seen: &str, context: &mut Context<'_>) {
        if context.check_listeners(seen) {
            self.watcher = Watcher::new(context.listeners);
            self.on_old_sockets = self
                .supervisor
                .generations()
                .iter()
                .filter(|g| g.state != supervisor::GenerationState::Stopping)
                .map(|g| g.id)
                .collect();
        }
    }

    /// Starts a generation on the new sockets if one that has only the
    /// old ones is still serving or starting; one that ended meanwhile
    /// (restarted on the new ones) needs none.
    fn reload_onto_new_sockets(&mut self, context: &mut Context<'_>) -> Option<i32> {
        if self.on_old_sockets.is_empty() {
            return None;
        }
        let old = std::mem::take(&mut self.on_old_sockets);
        let left: Vec<String> = self
            .supervisor
            .generations()
            .iter()
            .filter(|g| g.state != supervisor::GenerationState::Stopping && old.contains(&g.id))
            .map(|g| g.id.to_string())
            .collect();
        if left.is_empty() {
            return None;
        }
        log::info!(
            "reload: generation {} has only the shut-down socket; starting one on the new socket",
            left.join(", ")
        );
        self.dispatch(supervisor::Event::Reload, context)
    }

    /// Feeds one event to the supervisor and carries out its actions, which
    /// may produce further events (a spawn's outcome).
    fn dispatch(&mut self, event: supervisor::Event, context: &mut Context<'_>) -> Option<i32> {
        let mut pending = VecDeque::from([event]);
        while let Some(event) = pending.pop_front() {
            let actions = self.supervisor.handle(event, Instant::now());
            // Before a generation takes over, or a worker takes over a
            // slot (and the one it replaces is told to stop): the sockets
            // it takes over must listen.
            if let Some(seen) = actions.iter().find_map(|action| match action {
                Action::Report(
                    Report::Ready { generation, .. } | Report::ReloadSucceeded { generation, .. },
                ) => Some(format!("seen before generation {generation} takes over")),
                Action::Stop { pid, .. } => Some(format!("seen before pid {pid} is told to stop")),
                _ => None,
            }) {
                self.check_listeners(&seen, context);
            }
            for action in actions {
                match action {
                    Action::Spawn { generation, slot } => {
                        pending.push_back(self.spawn(generation, slot, context));
                    }
                    Action::Stop { pid, signal } => context.children.stop(pid, signal),
                    Action::Signal { pid, signal } => context.children.signal(pid, signal),
                    Action::Forget { generation } => self.forget(generation, context),
                    Action::Observe { generation, slot } => {
                        if let Some(observation) = self.observe(generation, slot) {
                            pending.push_back(supervisor::Event::Observed {
                                generation,
                                slot,
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
                    Action::StartMaintenance { why } => {
                        if let Some(maintenance) = &mut self.maintenance {
                            maintenance.start(why, context);
                        }
                    }
                    Action::StopMaintenance => {
                        if let Some(maintenance) = &mut self.maintenance {
                            maintenance.stop(context);
                        }
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
            workers: self.supervisor.workers(),
            restarts: self.supervisor.restarts,
            reload_queued: self.supervisor.reload_queued(),
            paused_since: match self.supervisor.phase() {
                supervisor::Phase::Paused { since } => Some(since),
                _ => None,
            },
            maintenance: self
                .maintenance
                .as_ref()
                .map(|maintenance| control::MaintenanceView {
                    answering: maintenance.is_answering(),
                    answered: maintenance.answered(),
                }),
            interceptions: self.intercept.as_ref().map(Intercept::interceptions),
            fd_store: self
                .fd_store
                .stored()
                .enumerate()
                .map(|(index, stored)| control::StoredFdInfo {
                    fd: crate::spawn::FIRST_PASSED_FD as usize + context.listeners.len() + index,
                    name: stored.name,
                    kind: stored.kind.word(),
                })
                .collect(),
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
        let worker_pids = self.supervisor.worker_pids(generation);
        let main_pid = worker_pids.first().map(|&(_, pid)| pid);
        let many_workers = self.supervisor.names_workers();
        let socket = self.notify_sockets.get_mut(&generation)?;
        let now = Instant::now();
        if let Some(count) = socket.refusals().take_summary(now) {
            log_refused_notifications(generation, count);
        }
        // Which workers sent READY=1: None for a sender that cannot be
        // traced to one (with one worker, it is never looked up).
        let mut ready: Vec<Option<supervisor::Slot>> = Vec::new();
        let mut drained = false;
        // The fds trusted senders passed, closed once this wakeup's messages
        // are acted on: closing answers a BARRIER=1, whose sender waits for
        // everything it sent before to have been handled.
        let mut passed = Vec::new();
        for _ in 0..readiness::MESSAGES_PER_WAKEUP {
            let mut message = match socket.receive() {
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
                // Its fds are closed now, with the message: sockhold holds
                // nothing for a sender it does not trust.
                continue;
            }
            if !self.fd_store.is_off() {
                let held: Vec<_> = context.listeners.iter().map(Listener::fd).collect();
                self.fd_store.take(generation, &mut message, &held, context);
            } else if message.fd_store && !message.fds.is_empty() && socket.first_fd_store() {
                log::warn!(
                    "generation {generation} sent FDSTORE=1 with {} fds: sockhold keeps no fd store without --fd-store-max, so they are closed (a server must not count on getting them back after a reload)",
                    message.fds.len()
                );
            }
            passed.append(&mut message.fds);
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
            if message.ready {
                // With workers, the sender is traced to the worker whose
                // process tree it is in; one that has exited already
                // (systemd-notify from a script) cannot be.
                let slot = message.sender.filter(|_| many_workers).and_then(|sender| {
                    worker_pids
                        .iter()
                        .find(|&&(_, pid)| readiness::is_same_or_descendant(sender, pid))
                        .map(|&(slot, _)| slot)
                });
                ready.push(slot);
            }
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
        let mut outcome = None;
        for slot in ready {
            outcome = self.dispatch(supervisor::Event::Ready { generation, slot }, context);
            if outcome.is_some() {
                break;
            }
        }
        drop(passed);
        outcome
    }

    /// Starts the child of `generation` in `slot` and reports how that
    /// went. The workers of a generation share its notify socket.
    fn spawn(
        &mut self,
        generation: GenerationId,
        slot: supervisor::Slot,
        context: &mut Context<'_>,
    ) -> supervisor::Event {
        let failed = |reason: String, code: i32| supervisor::Event::SpawnFailed {
            generation,
            slot,
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
        let (notify, new_notify) = match self.notify_sockets.remove(&generation) {
            Some(notify) => (notify, false),
            None => match NotifySocket::new() {
                Ok(notify) => (notify, true),
                Err(errno) => {
                    return failed(format!("cannot create a notify socket: {errno}"), exit::OS);
                }
            },
        };
        let listeners = &*context.listeners;
        let mut env = self.inherited_env.clone();
        // The stored fds come after the held sockets (`fd_store.rs`).
        let fds: Vec<_> = listeners
            .iter()
            .map(Listener::raw_fd)
            .chain(self.fd_store.fds())
            .collect();
        env.push(("LISTEN_FDS".into(), fds.len().to_string().into()));
        let names: Vec<&str> = listeners
            .iter()
            .map(|l| l.name.as_str())
            .chain(self.fd_store.names())
            .collect();
        env.push(("LISTEN_FDNAMES".into(), names.join(":").into()));
        env.push(("NOTIFY_SOCKET".into(), notify.address().into()));
        if !self.fd_store.is_off() {
            env.push(("FDSTORE".into(), self.fd_store.max().to_string().into()));
        }
        env.extend(compat::generation_environment(&self.compat_env, generation));
        if self.supervisor.names_workers() {
            env.push(("SOCKHOLD_WORKER".into(), slot.to_string().into()));
            env.push(("SOCKHOLD_GENERATION".into(), generation.to_string().into()));
        }
        let mut spec = match ChildSpec::new(&program, &self.command, &env, fds, true) {
            Ok(spec) => spec,
            Err(reason) => {
                self.keep_notify(generation, notify, new_notify, context);
                return failed(reason, exit::CANNOT_EXECUTE);
            }
        };
        spec.set_process_group(self.signal_group);
        if self.stdin_socket {
            if let Some(listener) = listeners.first() {
                spec.set_stdio(ChildStdio::ListeningSocket(listener.raw_fd()));
            }
        }
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
                self.keep_notify(generation, notify, new_notify, context);
                supervisor::Event::Spawned {
                    generation,
                    slot,
                    pid,
                }
            }
            Err(error) => {
                self.keep_notify(generation, notify, new_notify, context);
                failed(error.describe(&program), error.exit_status())
            }
        }
    }

    /// Keeps the generation's notify socket for its other workers (and
    /// watches it, when it was just made); `forget` drops it.
    fn keep_notify(
        &mut self,
        generation: GenerationId,
        notify: NotifySocket,
        new: bool,
        context: &mut Context<'_>,
    ) {
        if new {
            let what = format!("generation {generation}'s notify socket");
            context.watch(notify.fd().as_raw_fd(), generation, &what);
        }
        self.notify_sockets.insert(generation, notify);
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

    /// One look at a starting worker's processes: its own process tree
    /// (and orphans), not those of the other workers and generations.
    fn observe(
        &self,
        generation: GenerationId,
        slot: supervisor::Slot,
    ) -> Option<supervisor::Observation> {
        let workers = self.supervisor.worker_pids(generation);
        let &(_, main) = workers.iter().find(|&&(s, _)| s == slot)?;
        let others: Vec<_> = self
            .supervisor
            .generations()
            .iter()
            .flat_map(|g| g.pids.clone())
            .filter(|&pid| pid != main)
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

impl Generations {
    fn carry_state(&self) -> Result<crate::upgrade::Carried, String> {
        if !self.on_old_sockets.is_empty() {
            return Err(
                "a held socket was replaced and a reload onto it is due; retry once it is serving"
                    .to_string(),
            );
        }
        let supervisor = self.supervisor.snapshot(crate::upgrade::clock())?;
        let notify = self
            .notify_sockets
            .iter()
            .map(|(&generation, socket)| crate::upgrade::CarriedNotify {
                generation,
                fd: socket.fd().as_raw_fd(),
                owner: socket.owner().as_raw(),
                address: socket.address().to_string(),
                directory: socket.directory().map(std::path::Path::to_path_buf),
            })
            .collect();
        let stored = self
            .fd_store
            .carried()
            .map(|(fd, polled, name)| (fd, polled, name.to_string()))
            .collect();
        Ok(crate::upgrade::Carried {
            supervisor,
            notify,
            stored,
            nonblocking: self.nonblocking.clone(),
            maintenance: self.maintenance.as_ref().map(Maintenance::carry),
            intercept: self.intercept.as_ref().map(Intercept::carried),
            per_connection: None,
        })
    }
}

impl Engine for Generations {
    fn carry(&self) -> Result<crate::upgrade::Carried, String> {
        self.carry_state()
    }

    fn restore(&mut self, carried: crate::upgrade::Restored, context: &mut Context<'_>) {
        self.supervisor = carried.supervisor;
        // `--lazy` with nobody running: the new binary watches the
        // listeners as the old one did (a backoff still running re-arms
        // them at its deadline, as before).
        if self.supervisor.phase() == (supervisor::Phase::Idle { watch_at: None }) {
            context.watch_listeners(true);
        }
        for (generation, socket) in carried.notify {
            let what = format!("generation {generation}'s notify socket");
            context.watch(socket.fd().as_raw_fd(), generation, &what);
            self.notify_sockets.insert(generation, socket);
        }
        self.fd_store.restore(carried.stored, context);
        self.nonblocking = carried.nonblocking;
        if let (Some(maintenance), Some(answering)) = (&mut self.maintenance, carried.maintenance) {
            maintenance.restore(answering, context);
        }
        if let (Some(intercept), Some((state, listeners))) =
            (&mut self.intercept, carried.intercept)
        {
            intercept.restore(state, listeners, context);
        }
    }

    fn handle(&mut self, event: Event, context: &mut Context<'_>) -> Option<i32> {
        if let Some(status) = self.handle_event(event, context) {
            return Some(status);
        }
        self.reload_onto_new_sockets(context)
    }

    /// After every wakeup: `--maintenance` accepts here, once the exits
    /// of the wakeup have been acted on.
    fn settle(&mut self, context: &mut Context<'_>) -> Option<i32> {
        if let Some(maintenance) = &mut self.maintenance {
            maintenance.accept_pending(context);
        }
        None
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let maintenance = self
            .maintenance
            .as_ref()
            .and_then(|maintenance| maintenance.next_deadline(now));
        self.supervisor
            .next_deadline()
            .into_iter()
            .chain(maintenance)
            .min()
    }
}

impl Generations {
    fn handle_event(&mut self, event: Event, context: &mut Context<'_>) -> Option<i32> {
        let event = match event {
            Event::Start => supervisor::Event::Start,
            Event::Reload { by } => {
                if let Some(maintenance) = &mut self.maintenance {
                    maintenance.read_again();
                }
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
            Event::Exited(reaped) => {
                // Before the exit is acted on: a restart must get a
                // listening socket.
                let seen = format!("seen when pid {} exited", reaped.pid);
                self.check_listeners(&seen, context);
                let event = supervisor::Event::Exited {
                    pid: reaped.pid,
                    status: reaped.status,
                };
                let outcome = self.dispatch(event, context);
                // Answering may have waited for this process to go.
                if let Some(maintenance) = &mut self.maintenance {
                    maintenance.reaped(context);
                }
                return outcome;
            }
            Event::ListenerReady { index } => match &mut self.maintenance {
                Some(maintenance) if maintenance.is_answering() => {
                    maintenance.listener_ready(index);
                    return None;
                }
                _ => supervisor::Event::ConnectionWaiting,
            },
            Event::SourceReady { key } if Maintenance::owns(key) => {
                if let Some(maintenance) = &mut self.maintenance {
                    maintenance.source_ready(key, context);
                }
                return None;
            }
            Event::SourceReady { key } if Intercept::owns(key) => {
                self.take_interceptions(key, context);
                return None;
            }
            Event::SourceReady { key } if FdStore::owns(key) => {
                let first = crate::spawn::FIRST_PASSED_FD as usize + context.listeners.len();
                self.fd_store.take_hangups(first);
                return None;
            }
            Event::SourceReady { key } => return self.take_notifications(key, context),
            Event::Pause { client } => {
                log::info!("control: pause requested");
                if let Some(control) = context.control.as_deref_mut() {
                    control.await_pause(client);
                }
                supervisor::Event::Pause
            }
            Event::Resume { client } => {
                log::info!("control: resume requested");
                if let Some(maintenance) = &mut self.maintenance {
                    maintenance.read_again();
                }
                // Answered as a reload is: once the generation it starts is
                // ready, or with its failure.
                if let Some(control) = context.control.as_deref_mut() {
                    control.await_reload(client);
                }
                supervisor::Event::Resume
            }
            Event::Scale { client, count } => {
                log::info!("control: scale {count} requested");
                if let Some(control) = context.control.as_deref_mut() {
                    control.await_scale(client);
                }
                supervisor::Event::Scale { count }
            }
            Event::Status { client } => {
                let json = self.status_json(context);
                if let Some(control) = context.control.as_deref_mut() {
                    control.reply(client, &json);
                }
                return None;
            }
            Event::Tick => {
                if let Some(maintenance) = &mut self.maintenance {
                    maintenance.tick(context);
                }
                supervisor::Event::Tick
            }
        };
        self.dispatch(event, context)
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
