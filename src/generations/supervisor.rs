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
//! A generation runs the command as `--workers` processes, one per slot,
//! each with its own readiness. It is ready once every worker is. A
//! reload next to a serving generation is rolling: `--reload-surge` new
//! workers start at a time, and each one ready takes over its slot from
//! the old worker there, which is stopped; so at least N workers are
//! ready all along. While a generation is current, a worker that ends is
//! restarted alone in its slot (its own backoff, readiness awaited again),
//! and only the end of its last live worker ends the generation, as the
//! end of a single child does. `scale` changes N at run time. Without
//! `--workers` there is one slot and nothing else.
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
    /// What one look at a worker's processes in /proc showed (the
    /// answer to `Action::Observe`).
    Observed {
        generation: GenerationId,
        slot: Slot,
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
    /// `scale`: run `count` workers from now on.
    Scale { count: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Start the child of this generation in `slot` and report
    /// `Spawned`/`SpawnFailed`.
    Spawn {
        generation: GenerationId,
        slot: Slot,
    },
    /// Look at the processes of the worker in `slot` in /proc and report
    /// `Observed`.
    Observe {
        generation: GenerationId,
        slot: Slot,
    },
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
    /// `scale`: the serving generation has `count` ready workers (`what`
    /// says more), or nothing runs and the next generation will.
    Scaled { count: usize, what: String },
    /// A scale that was refused, or whose new workers failed.
    ScaleFailed { reason: String },
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
    /// `starting`, `ready`, `stopping`, `waiting to restart`.
    pub state: &'static str,
    pub restarts: u64,
    /// What made it ready (`accepting on fd 3 (pid 42) after 1.2s`, ...).
    pub ready_by: Option<String>,
}

/// A generation as outsiders see it (the control socket's `status`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationInfo {
    pub id: GenerationId,
    /// Its first worker's; None only while its spawn is under way.
    pub pid: Option<Pid>,
    /// Every process of it: its workers by slot, then those stopping.
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
    /// start, and the restart policy decides what comes next. `exited`:
    /// the status of the worker whose own exit ended the start (None:
    /// it was stopped, not ready in time).
    ApplyRestartPolicy {
        exited: Option<ChildStatus>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Its workers are starting: all at once while nobody serves, or
    /// `--reload-surge` at a time next to the current generation (a
    /// rolling reload). It becomes current once every worker is ready.
    Starting,
    Current {
        since: Instant,
    },
    /// Stopped as a whole. After a failed rolling reload, its ready
    /// workers in slots they took over serve on until the current
    /// generation's worker there is ready again.
    Stopping {
        after: AfterStop,
    },
}

/// A running worker not yet ready. `ready_at`: when the delay makes it
/// ready; `observe_at`: when to look at its processes next (`auto`,
/// `accepting`); `notified_at`: when it sent `READY=1` (`auto` waits to
/// see it accepting until `NOTIFY_GRACE` after that).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Awaiting {
    ready_at: Option<Instant>,
    give_up_at: Instant,
    observe_at: Option<Instant>,
    notified_at: Option<Instant>,
}

impl Awaiting {
    fn new(settings: &SupervisorSettings, now: Instant) -> Awaiting {
        let (ready_at, observe_at) = match settings.ready {
            ReadyMode::Delay(delay) => (Some(now + delay), None),
            ReadyMode::Notify => (None, None),
            // The first look comes with the next tick.
            ReadyMode::Auto | ReadyMode::Accepting => (None, Some(now)),
        };
        Awaiting {
            ready_at,
            give_up_at: now + settings.ready_timeout,
            observe_at,
            notified_at: None,
        }
    }

    /// The earliest time something is due.
    fn deadline(&self) -> Instant {
        [
            self.ready_at,
            Some(self.give_up_at),
            self.observe_at,
            self.notified_at.map(|at| at + NOTIFY_GRACE),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.give_up_at)
    }
}

/// What one slot of a generation is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WorkerState {
    /// Rolling reload: waits for its turn among `--reload-surge` starting
    /// at once.
    Queued,
    /// Between `Spawn` and `Spawned`.
    Spawning,
    /// Running, not yet ready.
    Starting {
        pid: Pid,
        since: Instant,
        awaiting: Awaiting,
    },
    Ready {
        pid: Pid,
        since: Instant,
    },
    /// Exited on its own while its generation serves: started again in
    /// its slot at `at` (the slot's backoff).
    WaitingToRestart {
        at: Instant,
    },
    /// Its slot was taken over by a ready worker of the next generation
    /// in a rolling reload (its process is `Leaving`).
    HandedOver,
    /// Gone, or stopped (then its process is `Leaving`), and not
    /// restarted in its slot.
    Ended,
}

#[derive(Debug, Clone)]
struct Worker {
    slot: Slot,
    state: WorkerState,
    /// Crashes in a row in this slot, for its backoff.
    failures: u32,
    restarts: u64,
    /// Why its processes cannot be observed, once that is known.
    unobservable: Option<String>,
    ready_by: Option<String>,
}

impl Worker {
    fn new(slot: Slot, state: WorkerState) -> Worker {
        Worker {
            slot,
            state,
            failures: 0,
            restarts: 0,
            unobservable: None,
            ready_by: None,
        }
    }

    /// Its process, while it runs and was not told to stop.
    fn pid(&self) -> Option<Pid> {
        match self.state {
            WorkerState::Starting { pid, .. } | WorkerState::Ready { pid, .. } => Some(pid),
            _ => None,
        }
    }

    /// Running, or about to be.
    fn is_live(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Spawning | WorkerState::Starting { .. } | WorkerState::Ready { .. }
        )
    }

    fn is_ready(&self) -> bool {
        matches!(self.state, WorkerState::Ready { .. })
    }

    /// Started, not yet ready.
    fn is_in_flight(&self) -> bool {
        matches!(
            self.state,
            WorkerState::Spawning | WorkerState::Starting { .. }
        )
    }
}

/// A process that was sent the stop signal (with its generation, or alone:
/// handed over, scaled away), until it is reaped. SIGKILL at `kill_at`;
/// None once sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Leaving {
    generation: GenerationId,
    slot: Slot,
    pid: Pid,
    kill_at: Option<Instant>,
    restarts: u64,
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
    ready_by: Option<String>,
}

impl Generation {
    /// The first running worker's pid: the one reports name.
    fn pid(&self) -> Option<Pid> {
        self.workers.iter().find_map(Worker::pid)
    }

    fn pids(&self) -> impl Iterator<Item = Pid> + '_ {
        self.workers.iter().filter_map(Worker::pid)
    }

    fn any_live(&self) -> bool {
        self.workers.iter().any(Worker::is_live)
    }

    fn all_ready(&self) -> bool {
        self.workers.iter().all(Worker::is_ready)
    }
}

/// "generation 2" or, with workers, "generation 2 worker 1".
fn worker_name(generation: GenerationId, slot: Slot, many: bool) -> String {
    if many {
        format!("generation {generation} worker {slot}")
    } else {
        format!("generation {generation}")
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
    /// Processes told to stop, until reaped.
    leaving: Vec<Leaving>,
    /// A `scale` waiting for the serving generation to have this many
    /// ready workers.
    scale_awaited: Option<usize>,
    /// Whether workers are named by slot (`--workers` above 1, now or
    /// ever): in the log, and in the children's environment.
    many_workers: bool,
}

impl Supervisor {
    pub fn new(settings: SupervisorSettings) -> Supervisor {
        Supervisor {
            generations: Vec::new(),
            next_id: 1,
            phase: Phase::Running,
            reload_queued: false,
            consecutive_failures: 0,
            restarts: 0,
            ever_spawned: false,
            unserved_since: None,
            maintenance: false,
            leaving: Vec::new(),
            scale_awaited: None,
            many_workers: settings.workers > 1,
            settings,
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
                    slot,
                    observation,
                },
            ) => self.observed(generation, slot, observation, now, a),
            (_, Event::Exited { pid, status }) => self.exited(pid, status, now, a),
            (_, Event::Tick) => self.tick(now, a),

            // Scaling.
            (S::ShuttingDown { .. }, Event::Scale { .. }) => {
                a.push(Action::Report(Report::ScaleFailed {
                    reason: "sockhold is stopping".to_string(),
                }));
            }
            (_, Event::Scale { count }) => self.scale(count, now, a),
        }
        self.follow_maintenance(now, &mut actions);
        self.follow_scale(&mut actions);
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
        let workers = self
            .generations
            .iter()
            .flat_map(|g| &g.workers)
            .filter_map(|w| match w.state {
                WorkerState::Starting { awaiting, .. } => Some(awaiting.deadline()),
                WorkerState::WaitingToRestart { at } => Some(at),
                _ => None,
            });
        let kills = self.leaving.iter().filter_map(|l| l.kill_at);
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
        workers.chain(kills).chain(restart).chain(maintenance).min()
    }

    /// The pids that forwarded signals go to: every running worker of the
    /// current generation, or of the starting one when nobody is current.
    pub fn main_pids(&self) -> Vec<Pid> {
        self.current()
            .or_else(|| self.newest_starting())
            .map(|index| self.generations[index].pids().collect())
            .unwrap_or_default()
    }

    /// Every worker process of every generation (and every slot about to
    /// get one), oldest generation first; then those stopping.
    pub fn workers(&self) -> Vec<WorkerInfo> {
        let running = self.generations.iter().flat_map(|g| {
            g.workers.iter().filter_map(|w| {
                let state = match w.state {
                    WorkerState::Spawning | WorkerState::Starting { .. } => "starting",
                    WorkerState::Ready { .. } => "ready",
                    WorkerState::WaitingToRestart { .. } => "waiting to restart",
                    WorkerState::Queued | WorkerState::HandedOver | WorkerState::Ended => {
                        return None;
                    }
                };
                Some(WorkerInfo {
                    slot: w.slot,
                    generation: g.id,
                    pid: w.pid(),
                    state,
                    restarts: w.restarts,
                    ready_by: w.ready_by.clone().filter(|_| w.is_ready()),
                })
            })
        });
        let leaving = self.leaving.iter().map(|l| WorkerInfo {
            slot: l.slot,
            generation: l.generation,
            pid: Some(l.pid),
            state: "stopping",
            restarts: l.restarts,
            ready_by: None,
        });
        running.chain(leaving).collect()
    }

    /// Every generation, oldest first: a read-only view for status reports.
    pub fn generations(&self) -> Vec<GenerationInfo> {
        self.generations
            .iter()
            .map(|g| GenerationInfo {
                id: g.id,
                pid: g.pid(),
                pids: g
                    .pids()
                    .chain(
                        self.leaving
                            .iter()
                            .filter(|l| l.generation == g.id)
                            .map(|l| l.pid),
                    )
                    .collect(),
                state: match g.role {
                    Role::Starting => GenerationState::Starting,
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

    /// How many workers a generation runs (`--workers`, or `scale`).
    #[cfg(test)]
    pub fn worker_count(&self) -> usize {
        self.settings.workers
    }

    /// Whether workers are told their slot (`SOCKHOLD_WORKER`): with
    /// more than one worker, now or before.
    pub fn names_workers(&self) -> bool {
        self.many_workers
    }

    /// The pid of each running worker of a generation, with its slot (to
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
            .rposition(|g| g.role == Role::Starting)
    }

    /// A stopping generation whose end applies the restart policy.
    fn recovering(&self) -> Option<usize> {
        self.generations.iter().position(|g| {
            matches!(
                g.role,
                Role::Stopping {
                    after: AfterStop::ApplyRestartPolicy { .. },
                }
            )
        })
    }

    fn name(&self, index: usize, slot: Slot) -> String {
        worker_name(self.generations[index].id, slot, self.many_workers)
    }

    fn start_generation(&mut self, cause: Cause, now: Instant, actions: &mut Vec<Action>) {
        let id = self.next_id;
        self.next_id += 1;
        // Next to a serving generation, workers start a few at a time
        // (`fill`); while nobody serves, all at once.
        let state = if self.current().is_some() {
            WorkerState::Queued
        } else {
            WorkerState::Spawning
        };
        self.generations.push(Generation {
            id,
            workers: (0..self.settings.workers)
                .map(|slot| Worker::new(slot, state))
                .collect(),
            first_failure: None,
            role: Role::Starting,
            started_at: now,
            cause,
            ready_by: None,
        });
        if state == WorkerState::Spawning {
            for slot in 0..self.settings.workers {
                actions.push(Action::Spawn {
                    generation: id,
                    slot,
                });
            }
        } else {
            self.fill(self.generations.len() - 1, actions);
        }
        if cause.is_awaited() {
            actions.push(Action::Report(Report::ReloadStarted { generation: id }));
        }
    }

    /// Starts the queued workers of a starting generation: up to
    /// `--reload-surge` not yet ready next to a serving generation, every
    /// one when nobody serves.
    fn fill(&mut self, index: usize, actions: &mut Vec<Action>) {
        let room = if self.current().is_some() {
            let in_flight = self.generations[index]
                .workers
                .iter()
                .filter(|w| w.is_in_flight())
                .count();
            self.settings.reload_surge.saturating_sub(in_flight)
        } else {
            usize::MAX
        };
        let g = &mut self.generations[index];
        if g.role != Role::Starting {
            return;
        }
        for worker in g
            .workers
            .iter_mut()
            .filter(|w| w.state == WorkerState::Queued)
            .take(room)
        {
            worker.state = WorkerState::Spawning;
            actions.push(Action::Spawn {
                generation: g.id,
                slot: worker.slot,
            });
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
        if let Some(worker) = self.generations[index].workers.get_mut(slot) {
            if worker.state == WorkerState::Spawning {
                worker.state = WorkerState::Ended;
            }
        }
        let cannot_exec = matches!(
            status,
            ChildStatus::Exited(exit::CANNOT_EXECUTE | exit::NOT_FOUND)
        );
        if cannot_exec && !self.ever_spawned && self.phase == Phase::Running {
            // The very first child cannot run at all (say, a binary for
            // another machine): retrying cannot help, so fail like any other
            // bad command line. A failed fork is retried: resources come back.
            // Its siblings cannot run either.
            log::error!("{reason}");
            self.shut_down(status.exit_code(), now, actions);
            self.remove_gone(actions);
            return;
        }
        let why = format!("could not start ({reason})");
        let gone = Gone {
            slot,
            pid: None,
            status,
            ran_for: Duration::ZERO,
            starting: why.clone(),
            serving: why,
        };
        self.worker_gone(index, gone, now, actions);
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
        let name = self.name(index, slot);
        let stop_signal = self.settings.stop_signal;
        let awaiting = Awaiting::new(&self.settings, now);
        let g = &mut self.generations[index];
        let wanted = !matches!(g.role, Role::Stopping { .. });
        match g.workers.get_mut(slot) {
            Some(worker) if wanted && worker.state == WorkerState::Spawning => {
                worker.state = WorkerState::Starting {
                    pid,
                    since: now,
                    awaiting,
                };
                worker.unobservable = None;
                worker.ready_by = None;
                log::info!("{name} started: pid {pid}");
            }
            worker => {
                // Its generation stops, or its slot was scaled away or
                // handed over while it was being started.
                let restarts = worker.map_or(0, |w| w.restarts);
                log::info!(
                    "{name} started while it is no longer wanted: {} to pid {pid}",
                    signals::name(stop_signal)
                );
                self.leave(generation, slot, pid, restarts, now, actions);
            }
        }
    }

    /// Sends the stop signal to `pid` and follows it until it is reaped.
    fn leave(
        &mut self,
        generation: GenerationId,
        slot: Slot,
        pid: Pid,
        restarts: u64,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.leaving.push(Leaving {
            generation,
            slot,
            pid,
            kill_at: Some(now + self.settings.stop_timeout),
            restarts,
        });
        actions.push(Action::Stop {
            pid,
            signal: self.settings.stop_signal,
        });
    }

    /// The worker in `slot` stops (`why`, for the log): its process gets
    /// the stop signal, and the slot restarts no more.
    fn stop_worker(
        &mut self,
        index: usize,
        slot: Slot,
        why: &str,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        self.leave_slot(index, slot, why, WorkerState::Ended, now, actions);
    }

    /// `stop_worker`, leaving the slot in `then` (`Ended`, `HandedOver`).
    fn leave_slot(
        &mut self,
        index: usize,
        slot: Slot,
        why: &str,
        then: WorkerState,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let name = self.name(index, slot);
        let g = &mut self.generations[index];
        let id = g.id;
        let Some(worker) = g.workers.get_mut(slot) else {
            return;
        };
        if worker.state == WorkerState::Ended {
            return;
        }
        let pid = worker.pid();
        let restarts = worker.restarts;
        // A worker being spawned is stopped when it is reported started.
        worker.state = then;
        let Some(pid) = pid else {
            return;
        };
        log::info!(
            "{name} stopping{why}: {} to pid {pid}",
            signals::name(self.settings.stop_signal)
        );
        self.leave(id, slot, pid, restarts, now, actions);
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
        if let Role::Stopping { .. } = g.role {
            return;
        }
        // A sender that could not be traced counts for the lowest slot
        // that has not sent one.
        let Some(slot) = slot.or_else(|| {
            g.workers.iter().find_map(|w| match w.state {
                WorkerState::Starting { awaiting, .. } if awaiting.notified_at.is_none() => {
                    Some(w.slot)
                }
                _ => None,
            })
        }) else {
            return;
        };
        let Some(worker) = g.workers.get_mut(slot) else {
            return;
        };
        let WorkerState::Starting {
            since,
            ref mut awaiting,
            ..
        } = worker.state
        else {
            return;
        };
        let waited = format_duration(now.saturating_duration_since(since));
        let name = worker_name(generation, slot, self.many_workers);
        match (self.settings.ready, &worker.unobservable) {
            (ReadyMode::Notify | ReadyMode::Delay(_), _) => {
                self.worker_ready(index, slot, format!("READY=1 after {waited}"), now, actions);
            }
            (ReadyMode::Auto | ReadyMode::Accepting, Some(why)) => {
                let why = format!("READY=1 after {waited} ({why})");
                self.worker_ready(index, slot, why, now, actions);
            }
            // Some servers say READY=1 before they can serve (gunicorn's
            // arbiter, before its workers have loaded the app): wait to see
            // it accepting, for a bounded time.
            (ReadyMode::Auto, None) => {
                if awaiting.notified_at.is_none() {
                    awaiting.notified_at = Some(now);
                    log::info!(
                        "{name} sent READY=1 after {waited}; ready once seen accepting (at most {} more)",
                        format_duration(NOTIFY_GRACE)
                    );
                }
            }
            (ReadyMode::Accepting, None) => {
                log::debug!("{name} sent READY=1; --ready accepting waits to see it accepting");
            }
        }
    }

    /// What a look at a worker's processes showed.
    fn observed(
        &mut self,
        generation: GenerationId,
        slot: Slot,
        observation: Observation,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let Some(index) = self.index_of(generation) else {
            return;
        };
        let name = self.name(index, slot);
        let ready_mode = self.settings.ready;
        let Some(worker) = self.generations[index].workers.get_mut(slot) else {
            return;
        };
        let WorkerState::Starting {
            since,
            ref mut awaiting,
            ..
        } = worker.state
        else {
            return;
        };
        let waited = format_duration(now.saturating_duration_since(since));
        match observation {
            Observation::NotYet => {}
            Observation::Busy => {
                if let Some(at) = &mut awaiting.observe_at {
                    *at = (*at).min(now + BUSY_OBSERVE_INTERVAL);
                }
            }
            Observation::Accepting { pid, fd, doing } => {
                log::debug!("{name}: pid {pid} {doing} on fd {fd}");
                let why = format!("accepting on fd {fd} (pid {pid}) after {waited}");
                self.worker_ready(index, slot, why, now, actions);
            }
            Observation::HoldsNone => {
                // It closed every held socket: nothing to see any more, and
                // taking it for ready after a delay would stop a serving
                // generation for one that cannot serve.
                awaiting.observe_at = None;
                let why = "it holds none of the sockets".to_string();
                if awaiting.notified_at.is_some() {
                    let why = format!("READY=1 after {waited} ({why})");
                    self.worker_ready(index, slot, why, now, actions);
                    return;
                }
                log::warn!(
                    "{name} {why}: it cannot take connections from them; ready only on READY=1"
                );
                worker.unobservable = Some(why);
            }
            Observation::Unobservable { why } => {
                // Nothing more to see: stop looking, and fall back.
                awaiting.observe_at = None;
                if awaiting.notified_at.is_some() {
                    let why = format!("READY=1 after {waited} ({why})");
                    self.worker_ready(index, slot, why, now, actions);
                    return;
                }
                match ready_mode {
                    ReadyMode::Auto => {
                        log::info!(
                            "{name}: {why}; ready on READY=1, or when still running after {}",
                            format_duration(AUTO_DELAY)
                        );
                        awaiting.ready_at = Some(since + AUTO_DELAY);
                    }
                    _ => log::warn!("{name}: {why}; --ready accepting now waits for READY=1"),
                }
                worker.unobservable = Some(why);
            }
        }
    }

    /// The worker in `slot` is ready (`why`): the slot is its own now, and
    /// the older workers that held it stop. A starting generation whose
    /// workers are all ready takes over; until then, the next ones start.
    fn worker_ready(
        &mut self,
        index: usize,
        slot: Slot,
        why: String,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let name = self.name(index, slot);
        let g = &mut self.generations[index];
        let id = g.id;
        let worker = &mut g.workers[slot];
        let WorkerState::Starting { pid, since, .. } = worker.state else {
            return;
        };
        worker.state = WorkerState::Ready { pid, since };
        worker.ready_by = Some(why.clone());
        if self.many_workers {
            log::info!("{name} ready: {why}");
        }
        let role = g.role;
        // Said before any old worker is told to stop.
        let completes = role == Role::Starting && g.all_ready();
        let generation_why = if self.many_workers {
            format!("all {} workers ready, the last {why}", g.workers.len())
        } else {
            why
        };
        if completes {
            log::info!("generation {id} ready: {generation_why}");
        }
        // Older holders of the slot: the current generation's worker when
        // this one rolls in; a failed rollout's stand-in when this one
        // refills the slot.
        let why = if self.many_workers {
            format!(" (generation {id} worker {slot} is ready)")
        } else {
            String::new()
        };
        for other in 0..self.generations.len() {
            match self.generations[other].role {
                _ if other == index => {}
                Role::Current { .. } if role == Role::Starting => {
                    let then = WorkerState::HandedOver;
                    self.leave_slot(other, slot, &why, then, now, actions);
                }
                Role::Stopping { .. } => self.stop_worker(other, slot, &why, now, actions),
                _ => {}
            }
        }
        self.remove_gone(actions);
        let Some(index) = self.index_of(id) else {
            return;
        };
        if completes {
            self.promote(index, generation_why, now, actions);
        } else {
            self.fill(index, actions);
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
            g.role = Role::Stopping {
                after: AfterStop::Nothing,
            };
            for worker in &mut g.workers {
                if let Some(pid) = worker.pid() {
                    self.leaving.push(Leaving {
                        generation: g.id,
                        slot: worker.slot,
                        pid,
                        kill_at: None,
                        restarts: worker.restarts,
                    });
                }
                worker.state = WorkerState::Ended;
            }
        }
        for leaving in &mut self.leaving {
            leaving.kill_at = None;
            actions.push(Action::Signal {
                pid: leaving.pid,
                signal: Signal::SIGKILL,
            });
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
                Role::Stopping { ref mut after } => *after = AfterStop::Nothing,
                Role::Starting if g.cause.is_awaited() => {
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

    /// Sends the stop signal to every worker of the generation (also to a
    /// failed rollout's stand-ins); what it does once gone stays as it was
    /// if it was stopping already.
    fn stop_generation(&mut self, index: usize, now: Instant, actions: &mut Vec<Action>) {
        let g = &mut self.generations[index];
        if !matches!(g.role, Role::Stopping { .. }) {
            g.role = Role::Stopping {
                after: AfterStop::Nothing,
            };
        }
        for slot in 0..g.workers.len() {
            self.stop_worker(index, slot, "", now, actions);
        }
    }

    /// The generation at `index` is ready (said already: `why`): it
    /// becomes current and the one it replaces is stopped.
    fn promote(&mut self, index: usize, why: String, now: Instant, actions: &mut Vec<Action>) {
        let id = self.generations[index].id;
        if let Some(old) = self.current() {
            self.stop_generation(old, now, actions);
        }
        let Some(index) = self.index_of(id) else {
            return;
        };
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
        self.remove_gone(actions);
        self.start_queued_reload(now, actions);
    }

    fn exited(&mut self, pid: Pid, status: ChildStatus, now: Instant, actions: &mut Vec<Action>) {
        if let Some(position) = self.leaving.iter().position(|l| l.pid == pid) {
            let leaving = self.leaving.remove(position);
            self.note_exit_status(leaving.generation, status);
            let name = worker_name(leaving.generation, leaving.slot, self.many_workers);
            log::info!("{name} exited with {status}{}", pipe_hint(status));
            self.remove_gone_with(Some(status), now, actions);
            return;
        }
        let Some((index, slot, since)) = self.generations.iter().enumerate().find_map(|(i, g)| {
            g.workers.iter().find_map(|w| match w.state {
                WorkerState::Starting { pid: p, since, .. }
                | WorkerState::Ready { pid: p, since }
                    if p == pid =>
                {
                    Some((i, w.slot, since))
                }
                _ => None,
            })
        }) else {
            log::debug!("reaped pid {pid} ({status}), not a generation's main process");
            return;
        };
        self.note_exit_status(self.generations[index].id, status);
        let worker = &mut self.generations[index].workers[slot];
        let hint = pipe_hint(status);
        let starting = if worker.is_ready() {
            format!("exited with {status}{hint} while the others started")
        } else {
            format!("exited with {status} before ready{hint}")
        };
        worker.state = WorkerState::Ended;
        let gone = Gone {
            slot,
            pid: Some(pid),
            status,
            ran_for: now.saturating_duration_since(since),
            starting,
            serving: format!("exited on its own with {status}{hint}"),
        };
        self.worker_gone(index, gone, now, actions);
    }

    /// While stopping: the exit of a process of the generation whose end
    /// decides sockhold's status. A stop that was asked for and honoured
    /// exits 0, so that a clean stop is not reported as a failure. With
    /// workers, the first worker that did not honour it decides.
    fn note_exit_status(&mut self, generation: GenerationId, status: ChildStatus) {
        let stop_signal = self.settings.stop_signal;
        if let Phase::ShuttingDown {
            requested_by,
            primary: Some(primary),
            ref mut exit_status,
        } = self.phase
        {
            if primary == generation {
                let honoured = requested_by.is_some_and(|asked| {
                    status.success()
                        || status == ChildStatus::Signaled(stop_signal)
                        || status == ChildStatus::Signaled(asked)
                });
                if *exit_status == exit::OK && !honoured {
                    *exit_status = status.exit_code();
                }
            }
        }
    }

    /// The worker in `slot` ended on its own (exited, or could not start;
    /// `why` says which, for a starting generation). In a starting
    /// generation that ends the start; in the current one it is the
    /// slot's business while other workers live, and the last one takes
    /// the generation with it.
    fn worker_gone(&mut self, index: usize, gone: Gone, now: Instant, actions: &mut Vec<Action>) {
        let Gone {
            slot,
            pid,
            status,
            ran_for,
            starting,
            serving,
        } = gone;
        let name = self.name(index, slot);
        let g = &self.generations[index];
        match g.role {
            Role::Stopping { .. } => {
                log::info!("{name} exited with {status}{}", pipe_hint(status));
            }
            Role::Starting => {
                let what = format!("{name} {starting}");
                self.abandon_starting(index, &what, Some(status), now, actions);
            }
            Role::Current { .. } if g.any_live() => {
                // One that was never ready: a `scale` waiting for it fails.
                if g.workers[slot].ready_by.is_none() {
                    self.scale_failed(&format!("{name} {starting}"), actions);
                }
                self.worker_ended(index, slot, status, ran_for, &serving, now);
            }
            Role::Current { since } => {
                let pid = pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default();
                log::warn!("{name}{pid} {serving}");
                let id = g.id;
                let ending = Ending::Exited(g.first_failure.unwrap_or(status));
                self.stop_generation(index, now, actions);
                self.remove_gone(actions);
                if let Some(next) = self.newest_starting() {
                    log::info!(
                        "generation {} is starting and will take over",
                        self.generations[next].id
                    );
                    // Nobody serves now: the rest of it starts at once.
                    self.fill(next, actions);
                } else if self.phase == Phase::Running {
                    // Nobody serves: the generation ends as a whole, with
                    // its first worker's failure if one failed before.
                    let ran_for = now.saturating_duration_since(since);
                    self.apply_restart_policy(id, ending, ran_for, now, actions);
                }
            }
        }
        self.remove_gone_with(Some(status), now, actions);
    }

    /// Removes the generations that have no process left; see
    /// `remove_gone_with`.
    fn remove_gone(&mut self, actions: &mut Vec<Action>) {
        let mut index = 0;
        while index < self.generations.len() {
            let g = &self.generations[index];
            let leaving = self.leaving.iter().any(|l| l.generation == g.id);
            let waiting = g
                .workers
                .iter()
                .any(|w| matches!(w.state, WorkerState::WaitingToRestart { .. }));
            if g.any_live() || leaving || waiting || !matches!(g.role, Role::Stopping { .. }) {
                index += 1;
                continue;
            }
            let g = self.generations.remove(index);
            actions.push(Action::Forget { generation: g.id });
        }
    }

    /// Removes the generations that have no process left (`status`: the
    /// last exit's). One that was stopped because it never became ready,
    /// while nobody else serves, then applies the restart policy.
    fn remove_gone_with(
        &mut self,
        status: Option<ChildStatus>,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let before: Vec<(GenerationId, Role)> =
            self.generations.iter().map(|g| (g.id, g.role)).collect();
        self.remove_gone(actions);
        for (id, role) in before {
            if self.index_of(id).is_some() {
                continue;
            }
            let Role::Stopping {
                after: AfterStop::ApplyRestartPolicy { exited },
            } = role
            else {
                continue;
            };
            let nobody_else = self.phase == Phase::Running
                && self.current().is_none()
                && self.newest_starting().is_none();
            if !nobody_else {
                continue;
            }
            let status = status.unwrap_or(ChildStatus::Exited(exit::GENERAL_FAILURE));
            match exited {
                Some(exited) => {
                    let ending = Ending::Exited(exited);
                    self.apply_restart_policy(id, ending, Duration::ZERO, now, actions);
                }
                None => {
                    log::warn!(
                        "generation {id} never became ready: a failed start, whatever its status"
                    );
                    let ending = Ending::NeverReady(status);
                    self.apply_restart_policy(id, ending, Duration::ZERO, now, actions);
                }
            }
        }
    }

    /// A worker of the current generation ended while others serve: it is
    /// restarted alone in its slot, after the slot's own backoff, if the
    /// restart policy says so (`what` says how it ended).
    fn worker_ended(
        &mut self,
        index: usize,
        slot: Slot,
        status: ChildStatus,
        ran_for: Duration,
        what: &str,
        now: Instant,
    ) {
        let restart = self.phase == Phase::Running
            && match self.settings.restart {
                RestartPolicy::Never => false,
                RestartPolicy::OnFailure => !status.success(),
                RestartPolicy::Always => true,
            };
        let name = self.name(index, slot);
        let settings = &self.settings;
        let g = &mut self.generations[index];
        if !restart {
            if !status.success() && g.first_failure.is_none() {
                g.first_failure = Some(status);
            }
            log::warn!(
                "{name} {what}; not restarting it (--restart {}); the other workers serve on",
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
            "{name} {what}; restarting it in its slot in {} (restart {} of slot {slot})",
            format_duration(delay),
            worker.restarts
        );
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
        // What is due, noted first: acting on it changes the generations.
        let mut due = Vec::new();
        for g in &mut self.generations {
            for worker in &mut g.workers {
                match worker.state {
                    WorkerState::WaitingToRestart { at } if at <= now => {
                        worker.state = WorkerState::Spawning;
                        actions.push(Action::Spawn {
                            generation: g.id,
                            slot: worker.slot,
                        });
                    }
                    WorkerState::Starting {
                        ref mut awaiting, ..
                    } => {
                        if awaiting.ready_at.is_some_and(|at| at <= now) {
                            due.push((g.id, worker.slot, Due::Delay));
                        } else if awaiting.give_up_at <= now {
                            due.push((g.id, worker.slot, Due::GiveUp));
                        } else if awaiting
                            .notified_at
                            .is_some_and(|at| at + NOTIFY_GRACE <= now)
                        {
                            due.push((g.id, worker.slot, Due::NotifyGrace));
                        } else if awaiting.observe_at.is_some_and(|at| at <= now) {
                            awaiting.observe_at = Some(now + OBSERVE_INTERVAL);
                            actions.push(Action::Observe {
                                generation: g.id,
                                slot: worker.slot,
                            });
                        }
                    }
                    _ => {}
                }
            }
        }
        for (generation, slot, what) in due {
            let Some(index) = self.index_of(generation) else {
                continue;
            };
            let WorkerState::Starting {
                since, awaiting, ..
            } = self.generations[index].workers[slot].state
            else {
                continue;
            };
            let waited = format_duration(now.saturating_duration_since(since));
            match what {
                Due::Delay => {
                    let why = match &self.generations[index].workers[slot].unobservable {
                        Some(unobservable) => {
                            format!("still running after {waited} ({unobservable})")
                        }
                        None => format!("still running after {waited}"),
                    };
                    self.worker_ready(index, slot, why, now, actions);
                }
                Due::GiveUp => self.not_ready_in_time(index, slot, now, actions),
                Due::NotifyGrace => {
                    let notified = awaiting.notified_at.unwrap_or(now);
                    let since = format_duration(notified.saturating_duration_since(since));
                    let why = format!(
                        "READY=1 after {since}; not seen accepting within {} (io_uring, or a socket it never accepts on?)",
                        format_duration(NOTIFY_GRACE)
                    );
                    self.worker_ready(index, slot, why, now, actions);
                }
            }
        }
        let stop_timeout = format_duration(self.settings.stop_timeout);
        for leaving in &mut self.leaving {
            if leaving.kill_at.is_some_and(|at| at <= now) {
                let name = worker_name(leaving.generation, leaving.slot, self.many_workers);
                log::warn!(
                    "{name} did not stop within {stop_timeout}: SIGKILL to pid {}",
                    leaving.pid
                );
                actions.push(Action::Signal {
                    pid: leaving.pid,
                    signal: Signal::SIGKILL,
                });
                leaving.kill_at = None;
            }
        }
    }

    /// A worker was not ready within `--ready-timeout`. In a starting
    /// generation, the start fails; in the current one (a restarted or
    /// added worker), it is stopped and its slot restarted after its
    /// backoff, as if it had crashed.
    fn not_ready_in_time(
        &mut self,
        index: usize,
        slot: Slot,
        now: Instant,
        actions: &mut Vec<Action>,
    ) {
        let name = self.name(index, slot);
        let what = format!(
            "{name} not ready after {}",
            format_duration(self.settings.ready_timeout)
        );
        match self.generations[index].role {
            Role::Starting => self.abandon_starting(index, &what, None, now, actions),
            Role::Current { .. } => {
                // Stopped, and then gone as a worker that failed.
                let pid = self.generations[index].workers[slot].pid();
                self.stop_worker(index, slot, " (not ready in time)", now, actions);
                let why = format!(
                    "not ready after {}",
                    format_duration(self.settings.ready_timeout)
                );
                let gone = Gone {
                    slot,
                    pid,
                    status: ChildStatus::Exited(exit::GENERAL_FAILURE),
                    ran_for: Duration::ZERO,
                    starting: why.clone(),
                    serving: why,
                };
                self.worker_gone(index, gone, now, actions);
            }
            Role::Stopping { .. } => {}
        }
    }

    /// A starting generation will not become ready (`what` says why;
    /// `exited`: the status of the worker whose exit ended it). It is
    /// stopped, and the current one, if any, serves on: slots it had
    /// already handed over are started again there, and this generation's
    /// ready workers in them serve until those are ready.
    fn abandon_starting(
        &mut self,
        index: usize,
        what: &str,
        exited: Option<ChildStatus>,
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
        self.scale_failed(what, actions);
        let Some(current) = self.current() else {
            // A --lazy child that serves its connection and exits
            // cleanly before it counts as ready has done its job.
            if self.settings.lazy && exited.is_some_and(|status| status.success()) {
                log::info!("{what}");
            } else {
                log::warn!("{what}");
            }
            self.stop_generation(index, now, actions);
            self.generations[index].role = Role::Stopping {
                after: AfterStop::ApplyRestartPolicy { exited },
            };
            return;
        };
        let current_id = self.generations[current].id;
        log::warn!("reload failed: {what}; generation {current_id} keeps serving");
        let slots = self.generations[index].workers.len();
        for slot in 0..slots {
            let handed_over = self.generations[current]
                .workers
                .get(slot)
                .is_some_and(|w| w.state == WorkerState::HandedOver);
            let stands_in = handed_over && self.generations[index].workers[slot].is_ready();
            if handed_over {
                let name = self.name(current, slot);
                log::info!("{name} starting again in its slot: the reload failed");
                let worker = &mut self.generations[current].workers[slot];
                worker.state = WorkerState::Spawning;
                actions.push(Action::Spawn {
                    generation: current_id,
                    slot,
                });
            }
            if !stands_in {
                self.stop_worker(index, slot, "", now, actions);
            }
        }
        self.generations[index].role = Role::Stopping {
            after: AfterStop::Nothing,
        };
        self.start_queued_reload(now, actions);
    }

    /// `scale`: from now on every generation runs `count` workers. The
    /// current generation starts the new slots at once (a rolling reload
    /// in flight gets them too), and stops the surplus, highest slots
    /// first. Answered once the serving generation has `count` ready.
    fn scale(&mut self, count: usize, now: Instant, actions: &mut Vec<Action>) {
        let before = self.settings.workers;
        self.settings.workers = count;
        self.many_workers |= count > 1;
        log::info!("scale: {before} workers to {count}");
        for index in 0..self.generations.len() {
            let role = self.generations[index].role;
            if let Role::Stopping { .. } = role {
                continue;
            }
            let len = self.generations[index].workers.len();
            for slot in (count..len).rev() {
                self.stop_worker(index, slot, " (scaled down)", now, actions);
            }
            let rolling = role == Role::Starting && self.current().is_some();
            let g = &mut self.generations[index];
            g.workers.truncate(count);
            for slot in len..count {
                let state = if rolling {
                    WorkerState::Queued
                } else {
                    actions.push(Action::Spawn {
                        generation: g.id,
                        slot,
                    });
                    WorkerState::Spawning
                };
                g.workers.push(Worker::new(slot, state));
            }
        }
        self.remove_gone(actions);
        // A starting generation whose surplus was all that was left to
        // start may be complete now; one with new slots may start more.
        if let Some(index) = self.newest_starting() {
            if self.generations[index].all_ready() {
                let why = format!("all {count} workers ready (scaled)");
                log::info!("generation {} ready: {why}", self.generations[index].id);
                self.promote(index, why, now, actions);
            } else {
                self.fill(index, actions);
            }
        }
        if self.current().is_none() && self.newest_starting().is_none() {
            let what = format!(
                "{count} workers from the next generation on ({})",
                self.phase
            );
            actions.push(Action::Report(Report::Scaled { count, what }));
            return;
        }
        self.scale_awaited = Some(count);
    }

    /// After every event: answers a waiting `scale` once as many slots as
    /// asked have a ready worker (in a rolling reload, of either
    /// generation).
    fn follow_scale(&mut self, actions: &mut Vec<Action>) {
        let Some(count) = self.scale_awaited else {
            return;
        };
        if let Phase::ShuttingDown { .. } | Phase::Paused { .. } = self.phase {
            self.scale_failed(&format!("sockhold is {}", self.phase), actions);
            return;
        }
        let Some(index) = self.current() else {
            return;
        };
        let serving = (0..count)
            .filter(|&slot| {
                self.generations
                    .iter()
                    .any(|g| g.workers.get(slot).is_some_and(Worker::is_ready))
            })
            .count();
        let g = &self.generations[index];
        if g.workers.len() == count && serving == count {
            self.scale_awaited = None;
            let what = match self.newest_starting() {
                Some(next) => format!(
                    "{count} ready workers (generations {} and {})",
                    g.id, self.generations[next].id
                ),
                None => format!("generation {} has {count} ready workers", g.id),
            };
            log::info!("scaled: {what}");
            actions.push(Action::Report(Report::Scaled { count, what }));
        }
    }

    /// A waiting `scale` fails (`why`).
    fn scale_failed(&mut self, why: &str, actions: &mut Vec<Action>) {
        if self.scale_awaited.take().is_some() {
            actions.push(Action::Report(Report::ScaleFailed {
                reason: why.to_string(),
            }));
        }
    }
}

/// What a starting worker's tick found due.
#[derive(Debug, Clone, Copy)]
enum Due {
    Delay,
    GiveUp,
    NotifyGrace,
}

/// A worker that ended: in which slot, which process (None: it never
/// started), how, after how long; and how to say it of a worker of a
/// starting generation (`exited with status 1 before ready`) and of a
/// serving one (`exited on its own with status 1`).
struct Gone {
    slot: Slot,
    pid: Option<Pid>,
    status: ChildStatus,
    ran_for: Duration,
    starting: String,
    serving: String,
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

mod upgrade;

#[cfg(test)]
mod tests;
