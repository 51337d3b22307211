//! The driver: one mio `Poll`, the only place sockhold waits. Signals come
//! in through signal-hook-mio, child exits are reaped with
//! `waitpid(-1, WNOHANG)` until none is left, and the poll timeout is the
//! earliest deadline of the engine, the control server, the service
//! manager's watchdog and an upgrade's probe (none while idle: zero
//! wakeups).
//!
//! The driver knows no mode: it turns what happens into `engine::Event`s
//! for the engine that runs (generations or per-connection), in this order
//! within one wakeup: child exits first (so that no engine acts on a child
//! that is already gone), then signals, readiness and control requests,
//! then `Tick`, then the engine's `settle`.
//!
//! Where each thing is handled: signals in `take_signals` here (which
//! signals are caught, passed on or left alone: `signals.rs`); child exits
//! in `child.rs` (reaping) and the engine's `Event::Exited`; connections in
//! `per_connection/`; generations, reloads and readiness in `generations/`;
//! `upgrade` in `event_loop/upgrading.rs` (the loop's part) and `upgrade/`.

use crate::child::{self, Children};
use crate::config::Config;
use crate::control::{self, ControlSocket, Request};
use crate::engine::{self, Context, Engine, Event, ListenerWatch, Origin};
use crate::error::{Error, exit};
use crate::generations::Generations;
use crate::leftovers;
use crate::listen::Listener;
use crate::per_connection::PerConnection;
use crate::pidfile::PidFile;
use crate::sd_notify::{NotifyEnv, ServiceManager};
use crate::signals;
use crate::spawn::{self, Spawner};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use nix::sys::signal::{SigSet, Signal};
use nix::unistd::Pid;
use signal_hook_mio::v1_0::Signals;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

mod upgrading;

use upgrading::Probing;

const SIGNALS: Token = Token(0);
/// The stdout of an upgrade's probe (`upgrade::probe`).
const PROBE: Token = Token(1);
/// The control socket's listener, then its connections (`+ 1 + client`):
/// the last quarter of the tokens (see `engine::TOKEN_QUARTER`).
const CONTROL_BASE: usize = 3 * engine::TOKEN_QUARTER;

/// After SIGKILL, how long to wait for leftovers to be reaped, and how many
/// times to sweep for processes that their deaths orphaned.
const LEFTOVER_KILL_WAIT: Duration = Duration::from_secs(1);
const LEFTOVER_KILL_ROUNDS: usize = 10;

pub struct EventLoop {
    poll: Poll,
    signals: Signals,
    engine: Box<dyn Engine>,
    children: Children,
    spawner: Spawner,
    listeners: Vec<Listener>,
    listener_watch: ListenerWatch,
    forward_signals: Vec<Signal>,
    /// systemd (or another service manager) watching sockhold, if any.
    service_manager: ServiceManager,
    control: Option<control::Server>,
    pid_file: Option<PidFile>,
    started_at: Instant,
    /// How leftover processes are stopped at exit: as a generation is.
    stop_signal: Signal,
    stop_timeout: Duration,
    /// sockhold's own binary as resolved at start-up (a package upgrade
    /// may replace the file later): what `upgrade` executes by default.
    exe: Option<std::path::PathBuf>,
    /// Taken over from an earlier binary (`upgrade`): no `Start`.
    resumed: bool,
    /// An upgrade waiting for its probe's answer.
    probing: Option<Probing>,
}

impl EventLoop {
    pub fn new(config: Config, listeners: Vec<Listener>) -> Result<EventLoop, Error> {
        let poll = Poll::new().map_err(|e| io_error("cannot create the event loop", e))?;
        // Every catchable asynchronous signal, so that none can end
        // sockhold by its default action (see `signals::Handling`).
        let mut signals = Signals::new(signals::caught(&config.forward_signals))
            .map_err(|e| io_error("cannot install signal handlers", e))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| io_error("cannot watch signals", e))?;
        // A mask inherited from whoever started sockhold would keep the
        // handled signals from ever arriving: a blocked HUP, TERM or CHLD
        // would leave reloads, stops and exits unnoticed. Unblocked only now
        // that their handlers are in place, so one that is already pending
        // is handled, not fatal. (Children get an empty mask: spawn.rs.)
        let mut unblock = SigSet::all();
        for signal in Signal::iterator() {
            if signals::left_at_default(signal, &config.forward_signals) {
                unblock.remove(signal);
            }
        }
        unblock
            .thread_unblock()
            .map_err(|errno| io_error("cannot unblock signals", errno.into()))?;
        // Orphaned grandchildren are reparented to us and reaped by the
        // waitpid loop, instead of piling up as zombies under init.
        if let Err(errno) = nix::sys::prctl::set_child_subreaper(true) {
            log::warn!(
                "cannot become a child subreaper: {}",
                crate::error::errno_text(errno)
            );
        }
        let mut spawner = Spawner::new().map_err(spawn::spawner_error)?;
        spawner.set_parent_death_signal(config.parent_death_signal);
        // A mode is a type: the driver holds whichever engine runs.
        let engine: Box<dyn Engine> = match config.accept {
            Some(_) => Box::new(PerConnection::new(&config, &listeners)?),
            None => Box::new(Generations::new(&config, &listeners)),
        };
        Ok(EventLoop {
            poll,
            signals,
            engine,
            children: Children::default(),
            spawner,
            listeners,
            listener_watch: ListenerWatch::default(),
            forward_signals: config.forward_signals,
            service_manager: ServiceManager::new(
                &NotifyEnv::from_environment(),
                std::process::id(),
                Instant::now(),
            ),
            control: None,
            pid_file: None,
            started_at: Instant::now(),
            stop_signal: config.supervisor.stop_signal,
            stop_timeout: config.supervisor.stop_timeout,
            exe: None,
            resumed: false,
            probing: None,
        })
    }

    /// The binary `upgrade` executes when not told another.
    pub fn with_exe(mut self, exe: Option<std::path::PathBuf>) -> EventLoop {
        self.exe = exe;
        self
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

    /// Runs until the engine says to exit; returns the exit status.
    pub fn run(mut self) -> Result<i32, Error> {
        let mut events = Events::with_capacity(64);
        // After an upgrade nothing starts: the children run on. Those that
        // ended during the exec are reaped now (their SIGCHLD may have gone
        // to the old binary's handler).
        let mut status = if self.resumed {
            let exits: Vec<Event> = self
                .children
                .reap()
                .into_iter()
                .map(Event::Exited)
                .collect();
            let mut status = None;
            for event in exits {
                status = self.dispatch(event);
                if status.is_some() {
                    break;
                }
            }
            status
        } else {
            self.dispatch(Event::Start)
        };
        // In --accept and --lazy mode sockhold itself waits for connections
        // at first: it is ready as soon as it does. (After an upgrade,
        // `resume` has said READY=1 already.)
        if self.listener_watch.is_on() && !self.resumed {
            self.service_manager.waiting_for_connections();
        }
        while status.is_none() {
            let now = Instant::now();
            let control_deadline = self
                .control
                .as_ref()
                .and_then(control::Server::next_deadline);
            let probe_deadline = self.probing.as_ref().and_then(|p| p.probe.deadline());
            let timeout = [
                self.engine.next_deadline(now),
                control_deadline,
                self.service_manager.next_deadline(),
                probe_deadline,
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
            // Exits first: an engine must never act on a child that is
            // already gone (signal-hook reports SIGCHLD after HUP, INT and
            // TERM, whose events would otherwise come first).
            let mut exits = Vec::new();
            let mut incoming = Vec::new();
            for event in events.iter() {
                match event.token() {
                    SIGNALS => self.take_signals(&mut exits, &mut incoming),
                    PROBE => {
                        if let Some(probing) = &mut self.probing {
                            if probing.probe.readable() {
                                let raw = probing.probe.stdout().as_raw_fd();
                                let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
                            }
                        }
                    }
                    Token(token) if token >= CONTROL_BASE => {
                        if let Some(control) = &mut self.control {
                            control.handle_event(Token(token), event, Instant::now());
                        }
                    }
                    Token(token) if token >= engine::LISTENER_BASE => {
                        let index = token - engine::LISTENER_BASE;
                        incoming.push(Event::ListenerReady { index });
                    }
                    Token(token) if token >= engine::ENGINE_BASE => {
                        let key = (token - engine::ENGINE_BASE) as u64;
                        incoming.push(Event::SourceReady { key });
                    }
                    Token(_) => {}
                }
            }
            self.service_manager.tick(Instant::now());
            incoming.push(Event::Tick);
            for event in exits.into_iter().chain(incoming) {
                status = self.dispatch(event);
                if status.is_some() {
                    break;
                }
            }
            if status.is_none() {
                status = self.settle();
            }
            if status.is_none() {
                status = self.serve_control();
            }
            if status.is_none() {
                self.follow_probe();
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
    /// timeout, or at once on a second TERM or INT. Returns once every one
    /// of them is reaped (or none more will die).
    fn stop_leftovers(&mut self) {
        let me = Pid::this();
        // Zombies first: one that is reaped here is not stopped below, and
        // one left unreaped would outlive sockhold as a zombie.
        self.reap_leftovers();
        let left = leftovers::children_of(me);
        if left.is_empty() {
            // Anything that died since the reap is waited for all the same.
            self.wait_for_leftovers(Instant::now() + LEFTOVER_KILL_WAIT, false);
            return;
        }
        log::info!(
            "stopping what the child left behind: {} to {}",
            signals::name(self.stop_signal),
            leftovers::describe(&left)
        );
        for pid in &left {
            child::stop_unreaped(*pid, self.stop_signal);
        }
        let deadline = Instant::now() + self.stop_timeout;
        if self.wait_for_leftovers(deadline, true) {
            return;
        }
        // SIGKILL can orphan further processes (a killed worker's own
        // children): sweep until nothing is left.
        for _ in 0..LEFTOVER_KILL_ROUNDS {
            let left = leftovers::children_of(me);
            if !left.is_empty() {
                log::warn!(
                    "left behind and still running: SIGKILL to {}",
                    leftovers::describe(&left)
                );
                for pid in &left {
                    let _ = nix::sys::signal::kill(*pid, Signal::SIGKILL);
                }
            }
            if self.wait_for_leftovers(Instant::now() + LEFTOVER_KILL_WAIT, false) {
                return;
            }
        }
        log::warn!(
            "exiting with processes left: {} (unkillable, e.g. in uninterruptible sleep)",
            leftovers::describe(&leftovers::unreaped_children_of(me))
        );
    }

    /// Reaps every child that has ended, saying which.
    fn reap_leftovers(&mut self) {
        for reaped in self.children.reap() {
            log::debug!(
                "left-behind pid {} ended with {}",
                reaped.pid,
                reaped.status
            );
        }
    }

    /// Reaps until no child is left, zombies included (true), or until
    /// `deadline` passes (false); a TERM or INT ends the wait early when
    /// `interruptible`.
    ///
    /// Every pass reaps, then looks: a child that dies after the reap is
    /// seen (as a zombie, which `leftovers::children_of` would skip) and
    /// its SIGCHLD, sent after the signal pipe was last read, wakes the
    /// poll for the next pass.
    fn wait_for_leftovers(&mut self, deadline: Instant, interruptible: bool) -> bool {
        let mut events = Events::with_capacity(8);
        loop {
            self.reap_leftovers();
            if leftovers::unreaped_children_of(Pid::this()).is_empty() {
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

    /// Hands one event to the engine.
    fn dispatch(&mut self, event: Event) -> Option<i32> {
        self.with_engine(|engine, context| engine.handle(event, context))
    }

    fn settle(&mut self) -> Option<i32> {
        self.with_engine(|engine, context| engine.settle(context))
    }

    /// Lends the engine what it may use (the `Context`).
    fn with_engine<R>(&mut self, act: impl FnOnce(&mut dyn Engine, &mut Context<'_>) -> R) -> R {
        let mut context = Context {
            registry: self.poll.registry(),
            children: &mut self.children,
            spawner: &mut self.spawner,
            listeners: &mut self.listeners,
            listener_watch: &mut self.listener_watch,
            control: self.control.as_mut(),
            service_manager: &mut self.service_manager,
            started_at: self.started_at,
        };
        act(self.engine.as_mut(), &mut context)
    }

    /// Acts on the control requests read so far.
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
                let event = match request {
                    Request::Reload => Event::Reload {
                        by: Origin::Control(client),
                    },
                    Request::Status => Event::Status { client },
                    Request::Pause => Event::Pause { client },
                    Request::Resume => Event::Resume { client },
                    Request::Scale { count } => Event::Scale { client, count },
                    Request::Upgrade { target } => {
                        self.upgrade(client, target);
                        continue;
                    }
                    Request::Stop => {
                        self.control
                            .as_mut()?
                            .reply_and_hold(client, control::STOPPING);
                        Event::Stop {
                            signal: Signal::SIGTERM,
                            by: Origin::Control(client),
                        }
                    }
                };
                if let Some(status) = self.dispatch(event) {
                    return Some(status);
                }
            }
        }
    }

    /// Turns the signals received into events; SIGCHLD reaps at once, and
    /// its exits go into `exits`, which are handled first. What is caught
    /// but neither acted on nor passed on is logged and dropped.
    fn take_signals(&mut self, exits: &mut Vec<Event>, incoming: &mut Vec<Event>) {
        let received: Vec<i32> = self.signals.pending().collect();
        for number in received {
            let Ok(signal) = Signal::try_from(number) else {
                // Real-time: caught only so that it cannot end sockhold.
                log::info!(
                    "ignoring {} (signal {number}; real-time signals are not passed on)",
                    signals::describe_number(number)
                );
                continue;
            };
            match signal {
                Signal::SIGCHLD => {
                    for reaped in self.children.reap() {
                        match &mut self.probing {
                            Some(probing) if probing.probe.pid() == reaped.pid => {
                                probing.probe.exited(reaped.status);
                            }
                            _ => exits.push(Event::Exited(reaped)),
                        }
                    }
                }
                Signal::SIGHUP => incoming.push(Event::Reload { by: Origin::Signal }),
                Signal::SIGTERM | Signal::SIGINT => incoming.push(Event::Stop {
                    signal,
                    by: Origin::Signal,
                }),
                other if self.forward_signals.contains(&other) => {
                    incoming.push(Event::Forward { signal: other });
                }
                Signal::SIGXCPU => log::warn!(
                    "ignoring SIGXCPU (not in --forward-signals): the kernel sends it when sockhold itself goes over its CPU time limit (RLIMIT_CPU)"
                ),
                Signal::SIGXFSZ => log::warn!(
                    "ignoring SIGXFSZ (not in --forward-signals): the kernel sends it when sockhold itself goes over its file size limit (RLIMIT_FSIZE)"
                ),
                other => log::info!(
                    "ignoring {} (not in --forward-signals)",
                    signals::name(other)
                ),
            }
        }
    }
}

fn io_error(what: &str, error: std::io::Error) -> Error {
    Error::new(exit::OS, format!("{what}: {error}"))
}
