//! Generations and their state machine: data in, actions out. No system
//! calls and no clock of its own: every event comes with `now`, and the
//! driver asks `next_deadline()` when to come back. Unit-tested with a fake
//! clock and fake pids.
//!
//! A generation is one run of the command. At most one generation is
//! *current* (serving and in charge); a *starting* one takes over when it is
//! ready; *stopping* ones have been sent the stop signal and get SIGKILL at
//! their deadline.
//!
//! A generation runs the command as `--workers` processes, one per slot.
//! It is ready once every worker is; while it is current, a worker that
//! ends is restarted alone in its slot (its own backoff), and only the end
//! of its last live worker ends the generation, as the end of a single
//! child does. Without `--workers` there is one slot and nothing else.
//!
//! `handle` is a table: the *situation* is derived from the fields (never
//! stored twice), and each `(situation, event)` cell says what happens.
//! Per-generation events (spawned, ready, exited, deadlines) are handled by
//! the generation's own role in any situation.

use crate::child::ChildStatus;
use crate::config::{
    AUTO_DELAY, BUSY_OBSERVE_INTERVAL, NOTIFY_GRACE, OBSERVE_INTERVAL, ReadyMode, RestartPolicy,
    SupervisorSettings, format_duration,
};
use crate::error::exit;
use crate::signals::{self, StopBy};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::fmt;
use std::time::{Duration, Instant};

pub type GenerationId = u64;

/// A worker's place in its generation (`SOCKHOLD_WORKER`, 0..N-1): a
/// replacement takes the slot of the one it replaces.
pub type Slot = usize;

/// Why a reload of an idle `--lazy` sockhold has nothing to do.
const LAZY_IDLE: &str =
    "no child is running (--lazy); the next connection starts the command afresh";

/// What a child that died of SIGPIPE most likely ran into: a program
/// reading its output (`sockhold ... | grep -m1 ...`) exited, and the
/// next write killed it. Every restart then dies the same way.
fn pipe_hint(status: ChildStatus) -> &'static str {
    match status {
        ChildStatus::Signaled(Signal::SIGPIPE) => " (its stdout or stderr was closed?)",
        _ => "",
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// sockhold is up: start generation 1.
    Start,
    /// SIGHUP: start a new generation on the same sockets.
    Reload,
    /// Stop everything: `signal` is what asked (SIGTERM for the control
    /// socket's `stop`).
    Stop { signal: Signal, by: StopBy },
    /// A signal to pass on to the current child.
    Forward { signal: Signal },
    /// The driver started the child of a generation in `slot`.
    Spawned {
        generation: GenerationId,
        slot: Slot,
        pid: Pid,
    },
    /// The driver could not start it; `status` is what a shell would report.
    SpawnFailed {
        generation: GenerationId,
        slot: Slot,
        reason: String,
        status: ChildStatus,
    },
    /// A verified `READY=1` from the generation's processes: from the
    /// worker in `slot`, or (None) from a sender that could not be traced
    /// to one worker, counted for the lowest slot that has not sent one.
    Ready {
        generation: GenerationId,
        slot: Option<Slot>,
    },
    /// What one look at the generation's processes in /proc showed (the
    /// answer to `Action::Observe`).
    Observed {
        generation: GenerationId,
        observation: Observation,
    },
    /// A child was reaped.
    Exited { pid: Pid, status: ChildStatus },
    /// Time passed; deadlines may be due.
    Tick,
    /// `--lazy`: a connection is waiting on a listener that is watched.
    ConnectionWaiting,
    /// `pause`: stop every generation, keep the sockets, start nothing.
    Pause,
    /// `resume`: start a new generation after a pause.
    Resume,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the child of this generation in `slot` and report
    /// `Spawned`/`SpawnFailed`.
    Spawn {
        generation: GenerationId,
        slot: Slot,
    },
    /// Look at the generation's processes in /proc and report `Observed`.
    Observe { generation: GenerationId },
    /// Ask a child to stop: the stop signal, then SIGCONT (`child.rs`).
    Stop { pid: Pid, signal: Signal },
    /// Any other signal: forwarded ones, SIGKILL.
    Signal { pid: Pid, signal: Signal },
    /// The generation is gone: release what the driver holds for it.
    Forget { generation: GenerationId },
    /// Every child is gone: exit with this status.
    Exit { status: i32 },
    /// Something that those watching from outside (systemd, control
    /// clients) want to know.
    Report(Report),
    /// `--lazy`: report `ConnectionWaiting` when a listener has a connection
    /// queued (without accepting it).
    WatchListeners,
    /// `--lazy`: stop watching; the child accepts.
    UnwatchListeners,
    /// `--maintenance`: no process of any generation is alive, and nobody
    /// will serve for a while (`why`): answer the connections with FILE.
    StartMaintenance { why: String },
    /// Stop answering; comes before any `Spawn` of the same event, so that
    /// connections that arrive from then on wait for the child.
    StopMaintenance,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Report {
    /// A generation started at launch or after a crash is ready.
    Ready { generation: GenerationId, pid: Pid },
    /// A reload began: this generation is starting next to the current one.
    ReloadStarted { generation: GenerationId },
    /// The reloaded generation is ready and now current.
    ReloadSucceeded { generation: GenerationId, pid: Pid },
    /// The reloaded generation did not become ready; the old one serves on.
    ReloadFailed {
        generation: GenerationId,
        reason: String,
    },
    /// A reload that was not even attempted.
    ReloadRefused { reason: String },
    /// A reload with nothing to do (`--lazy`, nothing running): a success,
    /// as in `--accept` mode, so that `systemctl reload` of an idle lazy
    /// service does not fail.
    NothingToReload { reason: String },
    /// sockhold is stopping every generation.
    Stopping,
    /// Paused (or already paused): `what` says what it stopped.
    Paused { what: String },
    /// A pause that was not done.
    PauseRefused { reason: String },
}

/// Why a generation was started; a reload's outcome is reported as such.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    Launch,
    Reload,
    Restart,
    /// `resume` after a pause.
    Resume,
}

impl Cause {
    pub fn name(self) -> &'static str {
        match self {
            Cause::Launch => "launch",
            Cause::Reload => "reload",
            Cause::Restart => "restart",
            Cause::Resume => "resume",
        }
    }

    /// Whether a control client waits for this generation's outcome
    /// (`reload`, `resume`), reported as a reload's.
    fn is_awaited(self) -> bool {
        matches!(self, Cause::Reload | Cause::Resume)
    }
}

/// What a look at a starting generation's processes showed, judged by the
/// `--ready` rule (every held stream socket for `auto`, any for
/// `accepting`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// Taking connections from its fd `fd` (the first socket found):
    /// `pid` was seen `doing` so (`waits in accept`, `waits in epoll`,
    /// `has accepted a connection`, ...).
    Accepting {
        pid: Pid,
        fd: i32,
        doing: &'static str,
    },
    /// Seen, not taking connections yet.
    NotYet,
    /// Seen, not taking connections yet, with a thread that keeps waking
    /// up: looked at again sooner (BUSY_OBSERVE_INTERVAL) to catch it in
    /// its wait.
    Busy,
    /// Cannot be seen; `why` names the process and the reason.
    Unobservable { why: String },
    /// Seen, and it holds none of the held sockets: it cannot take
    /// connections from them, so no delay makes it ready (only READY=1).
    HoldsNone,
}

impl Observation {
    /// One look at every worker of a generation, as one look: accepting
    /// only once every worker is; otherwise what holds it back. A worker
    /// that cannot be seen (or holds no socket) decides for all, so that
    /// the fallbacks stay those of one child.
    pub fn of_all(looks: Vec<Observation>) -> Observation {
        if let Some(found) = looks
            .iter()
            .find(|look| matches!(look, Observation::Unobservable { .. }))
            .or_else(|| looks.iter().find(|look| **look == Observation::HoldsNone))
        {
            return found.clone();
        }
        if looks.contains(&Observation::Busy) {
            return Observation::Busy;
        }
        match looks.first() {
            Some(first @ Observation::Accepting { .. })
                if looks
                    .iter()
                    .all(|look| matches!(look, Observation::Accepting { .. })) =>
            {
                first.clone()
            }
            _ => Observation::NotYet,
        }
    }
}

/// A generation's state as outsiders see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GenerationState {
    Starting,
    Current,
    Stopping,
}

impl GenerationState {
    pub fn name(self) -> &'static str {
        match self {
            GenerationState::Starting => "starting",
            GenerationState::Current => "current",
            GenerationState::Stopping => "stopping",
        }
    }
}

impl fmt::Display for GenerationState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A worker as outsiders see it (`status`'s `workers`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerInfo {
    pub slot: Slot,
    pub generation: GenerationId,
    /// None while it is (re)started.
    pub pid: Option<Pid>,
    /// `running`, `starting`, `waiting to restart`, `exited`.
    pub state: &'static str,
    pub restarts: u64,
}

/// A generation as outsiders see it (the control socket's `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    pub id: GenerationId,
    /// Its first worker's; None only while its spawn is under way.
    pub pid: Option<Pid>,
    /// Every live worker's, by slot.
    pub pids: Vec<Pid>,
    pub state: GenerationState,
    pub cause: Cause,
    pub started_at: Instant,
    /// What made it ready (`accepting on fd 3 (pid 42)`, `READY=1`, ...).
    pub ready_by: Option<String>,
}

/// What happens once a stopping generation is gone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AfterStop {
    Nothing,
    /// It never became ready and nobody else serves: its end is a failed
    /// start, and the restart policy decides what comes next.
    ApplyRestartPolicy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Spawned, not yet ready. `ready_at`: when the delay makes it ready;
    /// `observe_at`: when to look at its processes next (`auto`,
    /// `accepting`); `notified_at`: when it sent `READY=1` (`auto` waits to
    /// see it accepting until `NOTIFY_GRACE` after that).
    Starting {
        ready_at: Option<Instant>,
        give_up_at: Instant,
        observe_at: Option<Instant>,
        notified_at: Option<Instant>,
    },
    Current {
        since: Instant,
    },
    /// Sent the stop signal; `kill_at` is None once SIGKILL was sent.
    Stopping {
        kill_at: Option<Instant>,
        after: AfterStop,
    },
}

/// What one slot of a generation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Between `Spawn` and `Spawned`.
    Spawning,
    Running {
        pid: Pid,
        since: Instant,
    },
    /// Exited on its own while its generation serves: started again in
    /// its slot at `at` (the slot's backoff).
    WaitingToRestart {
        at: Instant,
    },
    /// Gone, and not restarted in its slot.
    Ended,
}

#[derive(Debug, Clone)]
struct Worker {
    slot: Slot,
    state: WorkerState,
    /// Sent `READY=1` while its generation was starting.
    notified: bool,
    /// Crashes in a row in this slot, for its backoff.
    failures: u32,
    restarts: u64,
}

impl Worker {
    fn new(slot: Slot) -> Worker {
        Worker {
            slot,
            state: WorkerState::Spawning,
            notified: false,
            failures: 0,
            restarts: 0,
        }
    }

    fn pid(&self) -> Option<Pid> {
        match self.state {
            WorkerState::Running { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Running, or about to be.
    fn is_live(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Spawning | WorkerState::Running { .. }
        )
    }
}

#[derive(Debug, Clone)]
struct Generation {
    id: GenerationId,
    /// One per slot, in slot order.
    workers: Vec<Worker>,
    /// The first failed status of a worker that was not restarted: the
    /// generation's ending when the last one is gone.
    first_failure: Option<ChildStatus>,
    role: Role,
    started_at: Instant,
    cause: Cause,
    /// Why its processes cannot be observed, once that is known.
    unobservable: Option<String>,
    ready_by: Option<String>,
}

impl Generation {
    /// The first live worker's pid: the one reports name.
    fn pid(&self) -> Option<Pid> {
        self.workers.iter().find_map(Worker::pid)
    }

    fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.workers.iter().filter_map(Worker::pid)
    }

    fn any_live(&self) -> bool {
        self.workers.iter().any(Worker::is_live)
    }

    /// "generation 2" or, with workers, "generation 2 worker 1".
    fn name(&self, slot: Slot) -> String {
        if self.workers.len() > 1 {
            format!("generation {} worker {slot}", self.id)
        } else {
            format!("generation {}", self.id)
        }
    }
}

/// What sockhold as a whole is doing (stored: it is not a function of the
/// generations). Displayed in `status` as `running`, `waiting to restart`,
/// `waiting for a connection`, `stopping` or `exited`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Running,
    /// Nobody is serving; the next generation starts at this time.
    WaitingToRestart {
        at: Instant,
    },
    /// `--lazy`: nobody is serving; the next generation starts when a
    /// connection is waiting. The listeners are watched from `watch_at`
    /// (None: now), which a crash puts off by the restart backoff.
    Idle {
        watch_at: Option<Instant>,
    },
    /// Stopping everything; exit once every generation is gone.
    ShuttingDown {
        /// The signal that asked for the stop; None when the child ended and
        /// the restart policy said not to restart.
        requested_by: Option<Signal>,
        /// The generation whose end decides the exit status.
        primary: Option<GenerationId>,
        exit_status: i32,
    },
    /// `pause`: no generation runs and none starts; the sockets stay open
    /// and connections wait in their queues.
    Paused {
        since: Instant,
    },
    Exited,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Running => "running",
            Phase::WaitingToRestart { .. } => "waiting to restart",
            Phase::Idle { .. } => "waiting for a connection",
            Phase::ShuttingDown { .. } => "stopping",
            Phase::Paused { .. } => "paused",
            Phase::Exited => "exited",
        })
    }
}

/// The rows of the table: what the generations are doing, derived from the
/// phase and the generations' roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Situation {
    /// Nobody serves yet (or any more) and a generation is starting.
    Launching,
    /// One generation is current and none is starting.
    Serving,
    /// The current generation serves while a new one starts.
    Reloading,
    /// Nobody serves or starts: a generation that never became ready is
    /// being stopped, and its end applies the restart policy.
    Recovering,
    /// Nobody serves: the restart backoff runs.
    WaitingToRestart,
    /// `--lazy`: nobody serves; the listeners are watched.
    Idle,
    /// `--lazy`: nobody serves; watching resumes after the backoff.
    IdleBackingOff,
    /// Stopping everything. `asked`: a stop signal or request asked for it
    /// (not the restart policy).
    ShuttingDown {
        asked: bool,
    },
    /// `pause`: nothing runs or starts but what is still stopping.
    Paused,
    Exited,
}

/// How a generation that nobody replaces ended, for the restart policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// It ended on its own (or failed to start) with this status.
    Exited(ChildStatus),
    /// It never became ready and was stopped: a failed start, whatever
    /// status the stopped child returned.
    NeverReady(ChildStatus),
}

impl Ending {
    fn status(self) -> ChildStatus {
        match self {
            Ending::Exited(status) | Ending::NeverReady(status) => status,
        }
    }

    fn failed(self) -> bool {
        match self {
            Ending::Exited(status) => !status.success(),
            Ending::NeverReady(_) => true,
        }
    }

    /// sockhold's exit status when nothing restarts: the child's, except
    /// that a start that never got ready is never reported as success.
    fn exit_code(self) -> i32 {
        match self {
            Ending::NeverReady(status) if status.success() => exit::GENERAL_FAILURE,
            ending => ending.status().exit_code(),
        }
    }
}

pub struct Supervisor {
    settings: SupervisorSettings,
    generations: Vec<Generation>,
    next_id: GenerationId,
    phase: Phase,
    /// A reload asked for while another was in flight (at most one).
    reload_queued: bool,
    /// Crashes in a row, for the backoff.
    consecutive_failures: u32,
    /// Restarts after a crash, over sockhold's life.
    pub restarts: u64,
    /// Whether any child was ever started: until then, a command that
    /// cannot be executed is bad input, not a crash to retry.
    ever_spawned: bool,
    /// Since when no generation has been current (None while one is), for
    /// `--maintenance-after`.
    unserved_since: Option<Instant>,
    /// Whether the driver was last told to answer (`StartMaintenance`);
    /// what it should be is `maintenance_due`.
    maintenance: bool,
}

impl Supervisor {
    pub fn new(settings: SupervisorSettings) -> Supervisor {
        Supervisor {
            settings,
            generations: Vec::new(),
            next_id: 1,
            phase: Phase::Running,
            reload_queued: false,
            consecutive_failures: 0,
            restarts: 0,
            ever_spawned: false,
            unserved_since: None,
            maintenance: false,
        }
    }

    /// The row of the table that the next event falls into.
    pub fn situation(&self) -> Situation {
        match self.phase {
            Phase::Exited => Situation::Exited,
            Phase::ShuttingDown { requested_by, .. } => Situation::ShuttingDown {
                asked: requested_by.is_some(),
            },
            Phase::WaitingToRestart { .. } => Situation::WaitingToRestart,
            Phase::Paused { .. } => Situation::Paused,
            Phase::Idle { watch_at: None } => Situation::Idle,
            Phase::Idle { watch_at: Some(_) } => Situation::IdleBackingOff,
            Phase::Running => match (self.current(), self.newest_starting()) {
                (Some(_), Some(_)) => Situation::Reloading,
                (Some(_), None) => Situation::Serving,
                (None, Some(_)) => Situation::Launching,
                (None, None) if self.recovering().is_some() => Situation::Recovering,
                // Between a start and its Spawn action nothing else runs;
                // treat it as launching.
                (None, None) => Situation::Launching,
            },
        }
    }

    /// Handles one event to completion and says what the driver must do.
    pub fn handle(&mut self, event: Event, now: Instant) -> Vec<Action> {
        use Situation as S;
        let mut actions = Vec::new();
        let a = &mut actions;
        match (self.situation(), event) {
            (S::Exited, _) => {}

            // Starting up.
            (_, Event::Start) if self.settings.lazy => {
                log::info!("waiting for a connection to start generation 1 (--lazy)");
                self.phase = Phase::Idle { watch_at: None };
                a.push(Action::WatchListeners);
            }
            (_, Event::Start) => self.start_generation(Cause::Launch, now, a),
            (S::Idle, Event::ConnectionWaiting) => {
                log::info!("connection waiting: starting generation {}", self.next_id);
                self.phase = Phase::Running;
                a.push(Action::UnwatchListeners);
                self.start_generation(Cause::Launch, now, a);
            }
            (_, Event::ConnectionWaiting) => {}

            // Planned downtime.
            (S::ShuttingDown { .. }, Event::Pause) => {
                log::info!("pause refused: sockhold is stopping");
                a.push(Action::Report(Report::PauseRefused {
                    reason: "sockhold is stopping".to_string(),
                }));
            }
            (S::Paused, Event::Pause) => {
                let Phase::Paused { since } = self.phase else {
                    unreachable!("the Paused situation is the Paused phase")
                };
                let what = format!(
                    "already paused for {}",
                    format_duration(now.saturating_duration_since(since))
                );
                log::info!("pause: {what}");
                a.push(Action::Report(Report::Paused { what }));
            }
            (_, Event::Pause) => self.pause(now, a),
            (S::Paused, Event::Resume) => {
                log::info!("resume: starting generation {}", self.next_id);
                self.phase = Phase::Running;
                self.consecutive_failures = 0;
                self.start_generation(Cause::Resume, now, a);
            }
            (S::ShuttingDown { .. }, Event::Resume) => {
                a.push(Action::Report(Report::ReloadRefused {
                    reason: "sockhold is stopping".to_string(),
                }));
            }
            (_, Event::Resume) => {
                log::info!("resume: not paused; nothing to do");
                a.push(Action::Report(Report::ReloadRefused {
                    reason: "not paused (resume follows a pause; reload starts a new generation)"
                        .to_string(),
                }));
            }

            // Reloads.
            (S::Paused, Event::Reload) => {
                log::info!("reload refused: sockhold is paused");
                a.push(Action::Report(Report::ReloadRefused {
                    reason: "sockhold is paused: resume it (sockhold resume --control PATH)"
                        .to_string(),
                }));
            }
            (S::ShuttingDown { .. }, Event::Reload) => {
                log::info!("reload ignored: sockhold is stopping");
                a.push(Action::Report(Report::ReloadRefused {
                    reason: "sockhold is stopping".to_string(),
                }));
            }
            (S::WaitingToRestart, Event::Reload) => {
                log::info!("reload: starting a new generation now instead of waiting to restart");
                self.phase = Phase::Running;
                self.start_generation(Cause::Reload, now, a);
            }
            (S::Recovering, Event::Reload) => {
                // The generation being stopped no longer decides what comes
                // next: the new one does. Exactly one generation starts.
                for g in &mut self.generations {
                    if let Role::Stopping { after, .. } = &mut g.role {
                        *after = AfterStop::Nothing;
                    }
                }
                log::info!(
                    "reload: starting generation {} now instead of restarting after the one that never became ready",
                    self.next_id
                );
                self.start_generation(Cause::Reload, now, a);
            }
            (S::IdleBackingOff, Event::Reload) => {
                log::info!("reload: waiting for a connection now instead of after the backoff");
                self.phase = Phase::Idle { watch_at: None };
                self.consecutive_failures = 0;
                a.push(Action::WatchListeners);
                a.push(Action::Report(Report::NothingToReload {
                    reason: format!("{LAZY_IDLE}, without waiting for the backoff"),
                }));
            }
            (S::Idle, Event::Reload) => {
                log::info!("reload: nothing to reload: {LAZY_IDLE}");
                a.push(Action::Report(Report::NothingToReload {
                    reason: LAZY_IDLE.to_string(),
                }));
            }
            (S::Launching | S::Reloading, Event::Reload) => self.queue_reload(),
            (S::Serving, Event::Reload) => {
                log::info!("reload: starting generation {}", self.next_id);
                self.start_generation(Cause::Reload, now, a);
            }

            // Stopping.
            (
                S::ShuttingDown { .. },
                Event::Stop {
                    by: StopBy::Control,
                    ..
                },
            ) => {
                // Not the impatient second Ctrl-C: the client just waits.
                log::debug!("stop requested again: already stopping");
            }
            (
                S::ShuttingDown { .. },
                Event::Stop {
                    signal,
                    by: StopBy::Signal,
                },
            ) => {
                self.kill_all(signal, a);
            }
            (_, Event::Stop { signal, by }) => self.stop(signal, by, now, a),

            // Whatever the situation.
            (_, Event::Forward { signal }) => self.forward(signal, a),
            (
                _,
                Event::Spawned {
                    generation,
                    slot,
                    pid,
                },
            ) => self.spawned(generation, slot, pid, now, a),
            (
                _,
                Event::SpawnFailed {
                    generation,
                    slot,
                    reason,
                    status,
                },
            ) => self.spawn_failed(generation, slot, &reason, status, now, a),
            (_, Event::Ready { generation, slot }) => self.ready(generation, slot, now, a),
            (
                _,
                Event::Observed {
                    generation,
                    observation,
                },
            ) => self.observed(generation, observation, now, a),
            (_, Event::Exited { pid, status }) => self.exited(pid, status, now, a),
            (_, Event::Tick) => self.tick(now, a),
        }
        self.follow_maintenance(now, &mut actions);
        self.finish(actions)
    }

    /// `--maintenance`: why sockhold should answer connections itself now,
    /// if it should. Only while no process of any generation is alive (so
    /// that sockhold is the only one accepting, and never has to touch the
    /// sockets' O_NONBLOCK): paused, or in a restart backoff once no
    /// generation has been ready for `--maintenance-after`.
    fn maintenance_due(&self, now: Instant) -> Option<String> {
        let after = self.settings.maintenance_after?;
        if !self.generations.is_empty() {
            return None;
        }
        match self.phase {
            Phase::Paused { .. } => Some("paused".to_string()),
            Phase::WaitingToRestart { .. } => {
                let since = self.unserved_since?;
                let unserved = now.saturating_duration_since(since);
                (unserved >= after).then(|| {
                    format!(
                        "no generation has been ready for {}",
                        format_duration(unserved)
                    )
                })
            }
            _ => None,
        }
    }

    /// After every event: notes since when nobody serves, and tells the
    /// driver when answering should start or stop.
    fn follow_maintenance(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.current().is_some() {
            self.unserved_since = None;
        } else if self.unserved_since.is_none() {
            self.unserved_since = Some(now);
        }
        match (self.maintenance, self.maintenance_due(now)) {
            (false, Some(why)) => {
                self.maintenance = true;
                actions.push(Action::StartMaintenance { why });
            }
            (true, None) => {
                self.maintenance = false;
                // First: a child spawned by this event must find the
                // listeners no longer taken by sockhold.
                actions.insert(0, Action::StopMaintenance);
            }
            _ => {}
        }
    }

    /// Exits once shutting down has nothing left to wait for.
    fn finish(&mut self, mut actions: Vec<Action>) -> Vec<Action> {
        if let Phase::ShuttingDown { exit_status, .. } = self.phase {
            if self.generations.is_empty() {
                self.phase = Phase::Exited;
                actions.push(Action::Exit {
                    status: exit_status,
                });
            }
        }
        actions
    }

    /// Stops every generation and exits with `exit_status` once they are
    /// gone.
    fn shut_down(&mut self, exit_status: i32, now: Instant, actions: &mut Vec<Action>) {
        self.phase = Phase::ShuttingDown {
            requested_by: None,
            primary: None,
            exit_status,
        };
        for index in 0..self.generations.len() {
            self.stop_generation(index, now, actions);
        }
    }

    /// The earliest time `Tick` has work to do; None: wait for events only.
    pub fn next_deadline(&self) -> Option<Instant> {
        let from_generations = self.generations.iter().filter_map(|g| match g.role {
            Role::Starting {
                ready_at,
                give_up_at,
                observe_at,
                notified_at,
            } => [
                ready_at,
                Some(give_up_at),
                observe_at,
                notified_at.map(|at| at + NOTIFY_GRACE),
            ]
            .into_iter()
            .flatten()
            .min(),
            Role::Current { .. } => None,
            Role::Stopping { kill_at, .. } => kill_at,
        });
        let slot_restarts =
            self.generations
                .iter()
                .flat_map(|g| &g.workers)
                .filter_map(|w| match w.state {
                    WorkerState::WaitingToRestart { at } => Some(at),
                    _ => None,
                });
        let restart = match self.phase {
            Phase::WaitingToRestart { at } => Some(at),
            Phase::Idle { watch_at } => watch_at,
            _ => None,
        };
        // `--maintenance-after` in a restart backoff: when answering starts.
        let maintenance = match (self.phase, self.settings.maintenance_after) {
            (Phase::WaitingToRestart { .. }, Some(after))
                if !self.maintenance && self.generations.is_empty() =>
            {
                self.unserved_since.map(|since| since + after)
            }
            _ => None,
        };
        from_generations
            .chain(slot_restarts)
            .chain(restart)
            .chain(maintenance)
            .min()
    }

    /// The pids that forwarded signals go to: every worker of the current
    /// generation, or of the starting one when nobody is current yet.
    pub fn main_pids(&self) -> Vec<Pid> {
        self.current()
            .or_else(|| self.newest_starting())
            .map(|index| self.generations[index].pids().collect())
            .unwrap_or_default()
    }

    /// Every worker of every generation, oldest generation first.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        self.generations
            .iter()
            .flat_map(|g| {
                g.workers.iter().map(|w| WorkerInfo {
                    slot: w.slot,
                    generation: g.id,
                    pid: w.pid(),
                    state: match (w.state, g.role) {
                        (WorkerState::Spawning, _) => "starting",
                        (WorkerState::Running { .. }, Role::Starting { .. }) if w.notified => {
                            "ready"
                        }
                        (WorkerState::Running { .. }, Role::Starting { .. }) => "starting",
                        (WorkerState::Running { .. }, Role::Current { .. }) => "running",
                        (WorkerState::Running { .. }, Role::Stopping { .. }) => "stopping",
                        (WorkerState::WaitingToRestart { .. }, _) => "waiting to restart",
                        (WorkerState::Ended, _) => "exited",
                    },
                    restarts: w.restarts,
                })
            })
            .collect()
    }

    /// Every generation, oldest first: a read-only view for status reports.
    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.generations
            .iter()
            .map(|g| GenerationInfo {
                id: g.id,
                pid: g.pid(),
                pids: g.pids().collect(),
                state: match g.role {
                    Role::Starting { .. } => GenerationState::Starting,
                    Role::Current { .. } => GenerationState::Current,
                    Role::Stopping { .. } => GenerationState::Stopping,
                },
                cause: g.cause,
                started_at: g.started_at,
                ready_by: g.ready_by.clone(),
            })
            .collect()
    }

    /// What sockhold as a whole is doing, for `status`.
    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// Whether a reload waits for the one in flight.
    pub fn reload_queued(&self) -> bool {
        self.reload_queued
    }

    /// The pid of each live worker of a generation, with its slot (to
    /// look at them in /proc, and to tell who sent a notify message).
    pub fn worker_pids(&self, generation: GenerationId) -> Vec<(Slot, Pid)> {
        self.index_of(generation)
            .map(|index| {
                self.generations[index]
                    .workers
                    .iter()
                    .filter_map(|w| w.pid().map(|pid| (w.slot, pid)))
                    .collect()
            })
            .unwrap_or_default()
    }

    fn index_of(&self, generation: GenerationId) -> Option<usize> {
        self.generations.iter().position(|g| g.id == generation)
    }

    fn current(&self) -> Option<usize> {
        self.generations
            .iter()
            .position(|g| matches!(g.role, Role::Current { .. }))
    }

    fn newest_starting(&self) -> Option<usize> {
        self.generations
            .iter()
            .rposition(|g| matches!(g.role, Role::Starting { .. }))
    }

    /// A stopping generation whose end applies the restart policy.
    fn recovering(&self) -> Option<usize> {
        self.generations.iter().position(|g| {
            matches!(
                g.role,
                Role::Stopping {
                    after: AfterStop::ApplyRestartPolicy,
                    ..
                }
            )
        })
    }

    fn start_generation(&mut self, cause: Cause, now: Instant, actions: &mut Vec<Action>) {
        let id = self.next_id;
        self.next_id += 1;
        self.generations.push(Generation {
            id,
            workers: (0..self.settings.workers).map(Worker::new).collect(),
            first_failure: None,
            role: Role::Starting {
                ready_at: None,
                give_up_at: now + self.settings.ready_timeout,
                observe_at: None,
                notified_at: None,
            },
            started_at: now,
            cause,
            unobservable: None,
            ready_by: None,
        });
        for slot in 0..self.settings.workers {
            actions.push(Action::Spawn {
                generation: id,
                slot,
            });
        }
        if cause.is_awaited() {
            actions.push(Action::Report(Report::ReloadStarted { generation: id }));
        }
    }

    /// A reload while a generation is starting waits for it (at most one).
    fn queue_reload(&mut self) {
        let starting = self
            .newest_starting()
            .map_or(self.next_id, |index| self.generations[index].id);
        if self.reload_queued {
            log::info!("reload already queued behind generation {starting}");
        } else {
            self.reload_queued = true;
            log::info!("reload queued: generation {starting} is still starting");
        }
    }

    /// Starts the queued reload, if any, now that none is in flight.
    fn start_queued_reload(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.reload_queued {
            self.reload_queued = false;
            log::info!("reload: starting queued generation {}", self.next_id);
            self.start_generation(Cause::Reload, now, actions);
        }
    }

    fn spawn_failed(
        &mut self,
        generation: GenerationId,
        slot: Slot,
        reason: &str,
        status: ChildStatus,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(index) = self.index_of(generation) else {
            return;
        };
        let cannot_exec = matches!(
            status,
            ChildStatus::Exited(exit::CANNOT_EXECUTE | exit::NOT_FOUND)
        );
        let g = &mut self.generations[index];
        if let Some(worker) = g.workers.get_mut(slot) {
            worker.state = WorkerState::Ended;
        }
        if cannot_exec && !self.ever_spawned && self.phase == Phase::Running && g.any_live() {
            // The first child cannot run at all (below): neither can its
            // siblings, whose failures end the generation.
            log::error!("{reason}");
            self.shut_down(status.exit_code(), now, actions);
            return;
        }
        if g.any_live() {
            // Other workers run: this slot's failure is one worker's.
            let why = format!("could not start ({reason})");
            let gone = Gone {
                slot,
                pid: None,
                status,
                ran_for: Duration::ZERO,
            };
            self.worker_gone(index, gone, &why, now, actions);
            return;
        }
        if let Role::Stopping { .. } | Role::Current { .. } = g.role {
            let why = format!("could not start ({reason})");
            let gone = Gone {
                slot,
                pid: None,
                status,
                ran_for: Duration::ZERO,
            };
            self.worker_gone(index, gone, &why, now, actions);
            return;
        }
        let g = self.generations.remove(index);
        actions.push(Action::Forget { generation });
        let cannot_exec = matches!(
            status,
            ChildStatus::Exited(exit::CANNOT_EXECUTE | exit::NOT_FOUND)
        );
        if cannot_exec && !self.ever_spawned && self.phase == Phase::Running {
            // The very first child cannot run at all (say, a binary for
            // another machine): retrying cannot help, so fail like any other
            // bad command line. A failed fork is retried: resources come back.
            log::error!("{reason}");
            self.shut_down(status.exit_code(), now, actions);
            return;
        }
        self.failed_before_ready(
            g.id,
            g.cause,
            &format!("could not start ({reason})"),
            status,
            now,
            actions,
        );
    }

    fn spawned(
        &mut self,
        generation: GenerationId,
        slot: Slot,
        pid: Pid,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.ever_spawned = true;
        let (ready_at, observe_at) = match self.settings.ready {
            ReadyMode::Delay(delay) => (Some(now + delay), None),
            ReadyMode::Notify => (None, None),
            // The first look comes with the next tick.
            ReadyMode::Auto | ReadyMode::Accepting => (None, Some(now)),
        };
        let give_up_at = now + self.settings.ready_timeout;
        let Some(index) = self.index_of(generation) else {
            // Its generation ended (another worker failed) while this one
            // was being started: nobody wants it.
            log::info!("pid {pid} started for generation {generation}, which is gone: SIGKILL");
            actions.push(Action::Signal {
                pid,
                signal: Signal::SIGKILL,
            });
            return;
        };
        let g = &mut self.generations[index];
        let name = g.name(slot);
        let Some(worker) = g.workers.get_mut(slot) else {
            return;
        };
        worker.state = WorkerState::Running { pid, since: now };
        match g.role {
            Role::Starting { .. } => {
                g.started_at = now;
                g.role = Role::Starting {
                    ready_at,
                    give_up_at,
                    observe_at,
                    notified_at: None,
                };
                log::info!("{name} started: pid {pid}");
            }
            // The line before said it restarts in its slot.
            Role::Current { .. } => log::info!("{name} started: pid {pid}"),
            Role::Stopping { .. } => {
                log::info!(
                    "{name} started while its generation stops: {} to pid {pid}",
                    signals::name(self.settings.stop_signal)
                );
                actions.push(Action::Stop {
                    pid,
                    signal: self.settings.stop_signal,
                });
            }
        }
    }

    /// A verified `READY=1`.
    fn ready(
        &mut self,
        generation: GenerationId,
        slot: Option<Slot>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(index) = self.index_of(generation) else {
            return;
        };
        let g = &mut self.generations[index];
        if !matches!(g.role, Role::Starting { .. }) {
            return;
        }
        // With workers, the generation counts as having sent READY=1 once
        // every worker has.
        let slot = slot.or_else(|| g.workers.iter().find(|w| !w.notified).map(|w| w.slot));
        if let Some(worker) = slot.and_then(|slot| g.workers.get_mut(slot)) {
            worker.notified = true;
        }
        let notified = g.workers.iter().filter(|w| w.notified).count();
        if notified < g.workers.len() {
            log::info!(
                "{} sent READY=1 ({notified} of {} workers)",
                g.name(slot.unwrap_or_default()),
                g.workers.len()
            );
            return;
        }
        let Role::Starting { notified_at, .. } = &mut g.role else {
            return;
        };
        let waited = format_duration(now.saturating_duration_since(g.started_at));
        match (self.settings.ready, &g.unobservable) {
            (ReadyMode::Notify | ReadyMode::Delay(_), _) => {
                self.promote(index, format!("READY=1 after {waited}"), now, actions);
            }
            (ReadyMode::Auto | ReadyMode::Accepting, Some(why)) => {
                let why = format!("READY=1 after {waited} ({why})");
                self.promote(index, why, now, actions);
            }
            // Some servers say READY=1 before they can serve (gunicorn's
            // arbiter, before its workers have loaded the app): wait to see
            // it accepting, for a bounded time.
            (ReadyMode::Auto, None) => {
                if notified_at.is_none() {
                    *notified_at = Some(now);
                    log::info!(
                        "generation {generation} sent READY=1 after {waited}; ready once seen accepting (at most {} more)",
                        format_duration(NOTIFY_GRACE)
                    );
                }
            }
            (ReadyMode::Accepting, None) => {
                log::debug!(
                    "generation {generation} sent READY=1; --ready accepting waits to see it accepting"
                );
            }
        }
    }

    /// What a look at the generation's processes showed.
    fn observed(
        &mut self,
        generation: GenerationId,
        observation: Observation,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(index) = self.index_of(generation) else {
            return;
        };
        let g = &mut self.generations[index];
        let Role::Starting {
            ready_at,
            observe_at,
            notified_at,
            ..
        } = &mut g.role
        else {
            return;
        };
        let waited = format_duration(now.saturating_duration_since(g.started_at));
        match observation {
            Observation::NotYet => {}
            Observation::Busy => {
                if let Some(at) = observe_at {
                    *at = (*at).min(now + BUSY_OBSERVE_INTERVAL);
                }
            }
            Observation::Accepting { pid, fd, doing } => {
                log::debug!("generation {generation}: pid {pid} {doing} on fd {fd}");
                let why = format!("accepting on fd {fd} (pid {pid}) after {waited}");
                self.promote(index, why, now, actions);
            }
            Observation::HoldsNone => {
                // It closed every held socket: nothing to see any more, and
                // taking it for ready after a delay would stop a serving
                // generation for one that cannot serve.
                *observe_at = None;
                let why = "it holds none of the sockets".to_string();
                if notified_at.is_some() {
                    let why = format!("READY=1 after {waited} ({why})");
                    self.promote(index, why, now, actions);
                    return;
                }
                log::warn!(
                    "generation {generation} {why}: it cannot take connections from them; ready only on READY=1"
                );
                g.unobservable = Some(why);
            }
            Observation::Unobservable { why } => {
                // Nothing more to see: stop looking, and fall back.
                *observe_at = None;
                if notified_at.is_some() {
                    let why = format!("READY=1 after {waited} ({why})");
                    self.promote(index, why, now, actions);
                    return;
                }
                match self.settings.ready {
                    ReadyMode::Auto => {
                        log::info!(
                            "generation {generation}: {why}; ready on READY=1, or when still running after {}",
                            format_duration(AUTO_DELAY)
                        );
                        *ready_at = Some(g.started_at + AUTO_DELAY);
                    }
                    _ => log::warn!(
                        "generation {generation}: {why}; --ready accepting now waits for READY=1"
                    ),
                }
                g.unobservable = Some(why);
            }
        }
    }

    fn forward(&mut self, signal: Signal, actions: &mut Vec<Action>) {
        let pids = self.main_pids();
        if pids.is_empty() {
            log::warn!("no child to pass {} to", signals::name(signal));
        }
        for pid in pids {
            log::debug!("passing {} to pid {pid}", signals::name(signal));
            actions.push(Action::Signal { pid, signal });
        }
    }

    /// A second stop signal while stopping: SIGKILL to every child now
    /// (users press Ctrl-C twice).
    fn kill_all(&mut self, signal: Signal, actions: &mut Vec<Action>) {
        log::warn!(
            "{} again while stopping: SIGKILL to every child",
            signals::name(signal)
        );
        for g in &mut self.generations {
            for pid in g.pids() {
                actions.push(Action::Signal {
                    pid,
                    signal: Signal::SIGKILL,
                });
            }
            g.role = Role::Stopping {
                kill_at: None,
                after: AfterStop::Nothing,
            };
        }
    }

    fn stop(&mut self, signal: Signal, by: StopBy, now: Instant, actions: &mut Vec<Action>) {
        match by {
            StopBy::Signal => log::info!("{} received: stopping", signals::name(signal)),
            StopBy::Control => log::info!("stop requested on the control socket: stopping"),
        }
        actions.push(Action::Report(Report::Stopping));
        if self.phase == (Phase::Idle { watch_at: None }) {
            actions.push(Action::UnwatchListeners);
        }
        let primary = self
            .current()
            .or_else(|| self.newest_starting())
            .map(|index| self.generations[index].id);
        self.phase = Phase::ShuttingDown {
            requested_by: Some(signal),
            primary,
            exit_status: crate::error::exit::OK,
        };
        self.reload_queued = false;
        for index in 0..self.generations.len() {
            self.stop_generation(index, now, actions);
        }
    }

    /// `pause`: every generation gets the stop signal; what ends while
    /// paused restarts nothing. A reload in flight fails.
    fn pause(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if self.phase == (Phase::Idle { watch_at: None }) {
            actions.push(Action::UnwatchListeners);
        }
        self.reload_queued = false;
        let mut stopping = Vec::new();
        for index in 0..self.generations.len() {
            let g = &mut self.generations[index];
            match g.role {
                Role::Stopping { ref mut after, .. } => *after = AfterStop::Nothing,
                Role::Starting { .. } if g.cause.is_awaited() => {
                    actions.push(Action::Report(Report::ReloadFailed {
                        generation: g.id,
                        reason: format!("paused before generation {} was ready", g.id),
                    }));
                }
                _ => {}
            }
            if !matches!(self.generations[index].role, Role::Stopping { .. }) {
                stopping.push(self.generations[index].id);
            }
            self.stop_generation(index, now, actions);
        }
        let what = match stopping.as_slice() {
            [] => "no generation was running".to_string(),
            [one] => format!("generation {one} stopping"),
            many => format!(
                "generations {} stopping",
                many.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        };
        log::info!("paused: {what}; the sockets stay open and connections wait until resume");
        self.phase = Phase::Paused { since: now };
        actions.push(Action::Report(Report::Paused { what }));
    }

    /// Sends the stop signal unless the generation is already stopping.
    fn stop_generation(&mut self, index: usize, now: Instant, actions: &mut Vec<Action>) {
        let g = &mut self.generations[index];
        if let Role::Stopping { .. } = g.role {
            return;
        }
        g.role = Role::Stopping {
            kill_at: Some(now + self.settings.stop_timeout),
            after: AfterStop::Nothing,
        };
        for worker in &mut g.workers {
            // A slot waiting to restart restarts no more.
            if let WorkerState::WaitingToRestart { .. } = worker.state {
                worker.state = WorkerState::Ended;
            }
        }
        for pid in g.pids().collect::<Vec<_>>() {
            log::info!(
                "generation {} stopping: {} to pid {pid}",
                g.id,
                signals::name(self.settings.stop_signal)
            );
            actions.push(Action::Stop {
                pid,
                signal: self.settings.stop_signal,
            });
        }
    }

    /// The generation at `index` is ready: it becomes current and the one
    /// it replaces is stopped.
    fn promote(&mut self, index: usize, why: String, now: Instant, actions: &mut Vec<Action>) {
        log::info!("generation {} ready: {why}", self.generations[index].id);
        if let Some(old) = self.current() {
            self.stop_generation(old, now, actions);
        }
        let promoted = &mut self.generations[index];
        promoted.role = Role::Current { since: now };
        promoted.ready_by = Some(why);
        if let Some(pid) = promoted.pid() {
            let generation = promoted.id;
            actions.push(Action::Report(match promoted.cause {
                Cause::Reload | Cause::Resume => Report::ReloadSucceeded { generation, pid },
                Cause::Launch | Cause::Restart => Report::Ready { generation, pid },
            }));
        }
        self.start_queued_reload(now, actions);
    }

    fn exited(&mut self, pid: Pid, status: ChildStatus, now: Instant, actions: &mut Vec<Action>) {
        let Some((index, slot, since)) = self.generations.iter().enumerate().find_map(|(i, g)| {
            g.workers.iter().find_map(|w| match w.state {
                WorkerState::Running { pid: p, since } if p == pid => Some((i, w.slot, since)),
                _ => None,
            })
        }) else {
            log::debug!("reaped pid {pid} ({status}), not a generation's main process");
            return;
        };
        let id = self.generations[index].id;
        if let Phase::ShuttingDown {
            requested_by,
            primary: Some(primary),
            ref mut exit_status,
        } = self.phase
        {
            if primary == id {
                // A stop that was asked for and honoured exits 0, so that a
                // clean stop is not reported as a failure. With workers,
                // the first worker that did not honour it decides.
                let honoured = requested_by.is_some_and(|asked| {
                    status.success()
                        || status == ChildStatus::Signaled(self.settings.stop_signal)
                        || status == ChildStatus::Signaled(asked)
                });
                if *exit_status == exit::OK && !honoured {
                    *exit_status = status.exit_code();
                }
            }
        }
        self.generations[index].workers[slot].state = WorkerState::Ended;
        let why = format!("exited with {status} before ready{}", pipe_hint(status));
        let ran_for = now.saturating_duration_since(since);
        let gone = Gone {
            slot,
            pid: Some(pid),
            status,
            ran_for,
        };
        self.worker_gone(index, gone, &why, now, actions);
    }

    /// The worker in `slot` ended (exited, or could not start; `why`
    /// says which, for a starting generation). While other workers of its
    /// generation live, that is the slot's business; the last one takes
    /// the generation with it.
    fn worker_gone(
        &mut self,
        index: usize,
        gone: Gone,
        why: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Gone {
            slot,
            pid,
            status,
            ran_for,
        } = gone;
        let g = &self.generations[index];
        let name = g.name(slot);
        if g.any_live() {
            match g.role {
                Role::Stopping { .. } => {
                    log::info!("{name} exited with {status}{}", pipe_hint(status));
                }
                Role::Starting { .. } => {
                    self.abandon_starting(index, &format!("{name} {why}"), now, actions);
                }
                Role::Current { .. } => self.worker_ended(index, slot, status, ran_for, now),
            }
            return;
        }
        let g = self.generations.remove(index);
        actions.push(Action::Forget { generation: g.id });
        let nobody_else = self.phase == Phase::Running
            && self.current().is_none()
            && self.newest_starting().is_none();
        match g.role {
            Role::Stopping { after, .. } => {
                log::info!("{name} exited with {status}{}", pipe_hint(status));
                if after == AfterStop::ApplyRestartPolicy && nobody_else {
                    log::warn!(
                        "generation {} never became ready: a failed start, whatever its status",
                        g.id
                    );
                    let ending = Ending::NeverReady(status);
                    self.apply_restart_policy(g.id, ending, Duration::ZERO, now, actions);
                }
            }
            Role::Starting { .. } => {
                self.failed_before_ready(g.id, g.cause, why, status, now, actions);
            }
            Role::Current { since } => {
                let pid = pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
                log::warn!(
                    "{name}{pid} exited on its own with {status}{}",
                    pipe_hint(status)
                );
                if let Some(next) = self.newest_starting() {
                    log::info!(
                        "generation {} is starting and will take over",
                        self.generations[next].id
                    );
                } else if self.phase == Phase::Running {
                    // Nobody serves: the generation ends as a whole, with
                    // its first worker's failure if one failed before.
                    let ran_for = now.saturating_duration_since(since);
                    let ending = Ending::Exited(g.first_failure.unwrap_or(status));
                    self.apply_restart_policy(g.id, ending, ran_for, now, actions);
                }
            }
        }
    }

    /// A worker of the current generation ended while others serve: it is
    /// restarted alone in its slot, after the slot's own backoff, if the
    /// restart policy says so.
    fn worker_ended(
        &mut self,
        index: usize,
        slot: Slot,
        status: ChildStatus,
        ran_for: Duration,
        now: Instant,
    ) {
        let restart = self.phase == Phase::Running
            && match self.settings.restart {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => !status.success(),
                RestartPolicy::Always => true,
            };
        let settings = &self.settings;
        let g = &mut self.generations[index];
        let name = g.name(slot);
        if !restart {
            if !status.success() && g.first_failure.is_none() {
                g.first_failure = Some(status);
            }
            log::warn!(
                "{name} exited on its own with {status}{}; not restarting it (--restart {}); the other workers serve on",
                pipe_hint(status),
                policy_name(settings.restart)
            );
            return;
        }
        let worker = &mut g.workers[slot];
        if ran_for >= settings.healthy_after {
            worker.failures = 0;
        }
        let delay = backoff(settings, worker.failures);
        worker.failures = worker.failures.saturating_add(1);
        worker.restarts += 1;
        worker.state = WorkerState::WaitingToRestart { at: now + delay };
        self.restarts += 1;
        log::warn!(
            "{name} exited on its own with {status}{}; restarting it in its slot in {} (restart {} of slot {slot})",
            pipe_hint(status),
            format_duration(delay),
            worker.restarts
        );
    }

    /// A starting generation is gone before it became ready.
    fn failed_before_ready(
        &mut self,
        generation: GenerationId,
        cause: Cause,
        why: &str,
        status: ChildStatus,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if cause.is_awaited() {
            actions.push(Action::Report(Report::ReloadFailed {
                generation,
                reason: format!("generation {generation} {why}"),
            }));
        }
        if self.phase != Phase::Running {
            log::info!("generation {generation} {why}");
            return;
        }
        match self.current() {
            Some(current) => {
                log::warn!(
                    "reload failed: generation {generation} {why}; generation {} keeps serving",
                    self.generations[current].id
                );
                self.start_queued_reload(now, actions);
            }
            None => {
                // A --lazy child that serves its connection and exits
                // cleanly before it counts as ready has done its job.
                if self.settings.lazy && status.success() {
                    log::info!("generation {generation} {why}");
                } else {
                    log::warn!("generation {generation} {why}");
                }
                let ending = Ending::Exited(status);
                self.apply_restart_policy(generation, ending, Duration::ZERO, now, actions);
            }
        }
    }

    /// Nobody is serving any more: restart, or stop and exit.
    fn apply_restart_policy(
        &mut self,
        generation: GenerationId,
        ending: Ending,
        ran_for: Duration,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        if self.settings.lazy && self.settings.restart != RestartPolicy::Never {
            self.wait_for_connection(generation, ending, ran_for, now, actions);
            return;
        }
        let restart = match self.settings.restart {
            RestartPolicy::Never => false,
            RestartPolicy::OnFailure => ending.failed(),
            RestartPolicy::Always => true,
        };
        if !restart {
            let policy = policy_name(self.settings.restart);
            log::info!(
                "generation {generation} ended with {}; not restarting (--restart {policy}): exiting with status {}",
                ending.status(),
                ending.exit_code()
            );
            self.shut_down(ending.exit_code(), now, actions);
            return;
        }
        if ran_for >= self.settings.healthy_after {
            self.consecutive_failures = 0;
        }
        let delay = self.restart_delay();
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.restarts += 1;
        log::info!(
            "restarting in {} (restart {})",
            format_duration(delay),
            self.restarts
        );
        self.phase = Phase::WaitingToRestart { at: now + delay };
    }

    /// `--lazy`: the child ended on its own, so go back to waiting for a
    /// connection. Not a restart: no backoff after a clean exit (or a
    /// healthy run). A child that failed quickly may have left the
    /// connection that woke it queued, which would wake it again at once:
    /// watching resumes only after the restart backoff, so a crash loop
    /// cannot spin.
    fn wait_for_connection(
        &mut self,
        generation: GenerationId,
        ending: Ending,
        ran_for: Duration,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let status = ending.status();
        if !ending.failed() || ran_for >= self.settings.healthy_after {
            self.consecutive_failures = 0;
            log::info!(
                "generation {generation} ended with {status}; waiting for a connection (--lazy)"
            );
            self.phase = Phase::Idle { watch_at: None };
            actions.push(Action::WatchListeners);
        } else {
            let delay = self.restart_delay();
            self.consecutive_failures = self.consecutive_failures.saturating_add(1);
            log::info!(
                "generation {generation} ended with {status}; waiting for a connection again in {} (--lazy)",
                format_duration(delay)
            );
            self.phase = Phase::Idle {
                watch_at: Some(now + delay),
            };
        }
    }

    fn restart_delay(&self) -> Duration {
        backoff(&self.settings, self.consecutive_failures)
    }

    fn tick(&mut self, now: Instant, actions: &mut Vec<Action>) {
        if let Phase::WaitingToRestart { at } = self.phase {
            if at <= now {
                self.phase = Phase::Running;
                self.start_generation(Cause::Restart, now, actions);
            }
        }
        if let Phase::Idle { watch_at: Some(at) } = self.phase {
            if at <= now {
                log::info!("waiting for a connection (--lazy)");
                self.phase = Phase::Idle { watch_at: None };
                actions.push(Action::WatchListeners);
            }
        }
        for g in &mut self.generations {
            for worker in &mut g.workers {
                if let WorkerState::WaitingToRestart { at } = worker.state {
                    if at <= now {
                        worker.state = WorkerState::Spawning;
                        actions.push(Action::Spawn {
                            generation: g.id,
                            slot: worker.slot,
                        });
                    }
                }
            }
        }
        let mut index = 0;
        while index < self.generations.len() {
            let g = &self.generations[index];
            match g.role {
                Role::Starting { ready_at, .. } if ready_at.is_some_and(|at| at <= now) => {
                    let waited = format_duration(now.saturating_duration_since(g.started_at));
                    let why = match &g.unobservable {
                        Some(unobservable) => {
                            format!("still running after {waited} ({unobservable})")
                        }
                        None => format!("still running after {waited}"),
                    };
                    self.promote(index, why, now, actions);
                }
                Role::Starting { give_up_at, .. } if give_up_at <= now => {
                    self.not_ready_in_time(index, now, actions);
                }
                Role::Starting {
                    notified_at: Some(notified),
                    ..
                } if notified + NOTIFY_GRACE <= now => {
                    let since = format_duration(notified.saturating_duration_since(g.started_at));
                    let why = format!(
                        "READY=1 after {since}; not seen accepting within {} (io_uring, or a socket it never accepts on?)",
                        format_duration(NOTIFY_GRACE)
                    );
                    self.promote(index, why, now, actions);
                }
                Role::Starting {
                    observe_at: Some(at),
                    ready_at,
                    give_up_at,
                    notified_at,
                } if at <= now => {
                    actions.push(Action::Observe { generation: g.id });
                    self.generations[index].role = Role::Starting {
                        ready_at,
                        give_up_at,
                        observe_at: Some(now + OBSERVE_INTERVAL),
                        notified_at,
                    };
                }
                Role::Stopping {
                    kill_at: Some(at),
                    after,
                } if at <= now => {
                    for pid in g.pids() {
                        log::warn!(
                            "generation {} did not stop within {}: SIGKILL to pid {pid}",
                            g.id,
                            format_duration(self.settings.stop_timeout)
                        );
                        actions.push(Action::Signal {
                            pid,
                            signal: Signal::SIGKILL,
                        });
                    }
                    self.generations[index].role = Role::Stopping {
                        kill_at: None,
                        after,
                    };
                }
                _ => {}
            }
            index += 1;
        }
    }

    fn not_ready_in_time(&mut self, index: usize, now: Instant, actions: &mut Vec<Action>) {
        let id = self.generations[index].id;
        let timeout = format_duration(self.settings.ready_timeout);
        self.abandon_starting(
            index,
            &format!("generation {id} not ready after {timeout}"),
            now,
            actions,
        );
    }

    /// A starting generation will not become ready (`what` says why): it
    /// is stopped, and the current one, if any, serves on.
    fn abandon_starting(
        &mut self,
        index: usize,
        what: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let id = self.generations[index].id;
        if self.generations[index].cause.is_awaited() {
            actions.push(Action::Report(Report::ReloadFailed {
                generation: id,
                reason: what.to_string(),
            }));
        }
        let current = self.current().map(|current| self.generations[current].id);
        match current {
            Some(current) => {
                log::warn!("reload failed: {what}; generation {current} keeps serving");
            }
            None => log::warn!("{what}"),
        }
        self.stop_generation(index, now, actions);
        if current.is_none() {
            if let Role::Stopping { kill_at, .. } = self.generations[index].role {
                self.generations[index].role = Role::Stopping {
                    kill_at,
                    after: AfterStop::ApplyRestartPolicy,
                };
            }
        } else {
            self.start_queued_reload(now, actions);
        }
    }
}

/// A worker that ended: in which slot, which process (None: it never
/// started), how, after how long.
struct Gone {
    slot: Slot,
    pid: Option<Pid>,
    status: ChildStatus,
    ran_for: Duration,
}

/// 100ms, 200ms, 400ms, ... up to the cap, after `failures` crashes in a
/// row (of the whole generation, or of one worker's slot).
fn backoff(settings: &SupervisorSettings, failures: u32) -> Duration {
    let doublings = failures.min(30);
    settings
        .restart_delay
        .saturating_mul(1u32 << doublings)
        .min(settings.restart_max_delay)
}

fn policy_name(policy: RestartPolicy) -> &'static str {
    match policy {
        RestartPolicy::Never => "never",
        RestartPolicy::OnFailure => "on-failure",
        RestartPolicy::Always => "always",
    }
}

#[cfg(test)]
mod tests;
