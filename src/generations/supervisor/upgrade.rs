//! What of the supervisor an upgrade carries to the new binary
//! (`upgrade/`): all of it but its settings (which come from the
//! arguments), as the pure state types of `upgrade/state.rs`, with every
//! instant as CLOCK_MONOTONIC nanoseconds. The new binary goes on exactly
//! where the old one was: generations starting, current and stopping,
//! processes leaving with their SIGKILL deadlines, backoffs, `--lazy`
//! idling, a queued reload, a waiting `scale`, whether `--maintenance`
//! answers. Only a sockhold that is stopping is not carried. This is the
//! one place that knows the supervisor's fields for an upgrade.

use super::{
    AfterStop, Awaiting, Cause, Generation, Leaving, Phase, Role, Supervisor, Worker, WorkerState,
};
use crate::child::ChildStatus;
use crate::config::SupervisorSettings;
use crate::upgrade::state::{self, Clock};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

impl Cause {
    pub fn from_name(name: &str) -> Option<Cause> {
        [Cause::Launch, Cause::Reload, Cause::Restart, Cause::Resume]
            .into_iter()
            .find(|cause| cause.name() == name)
    }
}

impl Supervisor {
    /// The state to carry, or why now is not the time.
    pub fn snapshot(&self, clock: Clock) -> Result<state::Supervisor, String> {
        let ns = |at| clock.to_ns(at);
        let phase = match self.phase {
            Phase::Running => state::Phase::Running,
            Phase::WaitingToRestart { at } => state::Phase::WaitingToRestart { at: ns(at) },
            Phase::Idle { watch_at } => state::Phase::Idle {
                watch_at: watch_at.map(ns),
            },
            Phase::Paused { since } => state::Phase::Paused { since: ns(since) },
            Phase::ShuttingDown { .. } | Phase::Exited => {
                return Err("sockhold is stopping".to_string());
            }
        };
        let mut generations = Vec::new();
        for g in &self.generations {
            let mut workers = Vec::new();
            for w in &g.workers {
                let state = match w.state {
                    WorkerState::Queued => state::WorkerState::Queued,
                    // Spawning is synchronous: it ends within the event
                    // that began it.
                    WorkerState::Spawning => {
                        return Err(format!(
                            "internal error: worker {} of generation {} is being spawned between events; retry",
                            w.slot, g.id
                        ));
                    }
                    WorkerState::Starting {
                        pid,
                        since,
                        awaiting,
                    } => state::WorkerState::Starting {
                        pid: pid.as_raw(),
                        since: ns(since),
                        awaiting: state::Awaiting {
                            ready_at: awaiting.ready_at.map(ns),
                            give_up_at: ns(awaiting.give_up_at),
                            observe_at: awaiting.observe_at.map(ns),
                            notified_at: awaiting.notified_at.map(ns),
                        },
                    },
                    WorkerState::Ready { pid, since } => state::WorkerState::Ready {
                        pid: pid.as_raw(),
                        since: ns(since),
                    },
                    WorkerState::WaitingToRestart { at } => {
                        state::WorkerState::WaitingToRestart { at: ns(at) }
                    }
                    WorkerState::HandedOver => state::WorkerState::HandedOver,
                    WorkerState::Ended => state::WorkerState::Ended,
                };
                workers.push(state::Worker {
                    slot: w.slot,
                    state,
                    failures: w.failures,
                    restarts: w.restarts,
                    ready_by: text(&w.ready_by),
                    unobservable: text(&w.unobservable),
                });
            }
            generations.push(state::Generation {
                id: g.id,
                cause: g.cause.name().as_bytes().to_vec(),
                started_at: ns(g.started_at),
                role: match g.role {
                    Role::Starting => state::Role::Starting,
                    Role::Current { since } => state::Role::Current { since: ns(since) },
                    Role::Stopping {
                        after: AfterStop::Nothing,
                    } => state::Role::Stopping,
                    Role::Stopping {
                        after: AfterStop::ApplyRestartPolicy { exited },
                    } => state::Role::Recovering {
                        exited: exited.map(status_out),
                    },
                },
                first_failure: g.first_failure.map(status_out),
                ready_by: text(&g.ready_by),
                workers,
            });
        }
        Ok(state::Supervisor {
            next_id: self.next_id,
            restarts: self.restarts,
            consecutive_failures: self.consecutive_failures,
            ever_spawned: self.ever_spawned,
            many_workers: self.many_workers,
            workers: self.settings.workers,
            phase,
            reload_queued: self.reload_queued,
            maintenance: self.maintenance,
            unserved_since: self.unserved_since.map(ns),
            scale_awaited: self.scale_awaited,
            generations,
            leaving: self
                .leaving
                .iter()
                .map(|l| state::Leaving {
                    generation: l.generation,
                    slot: l.slot,
                    pid: l.pid.as_raw(),
                    kill_at: l.kill_at.map(ns),
                    restarts: l.restarts,
                })
                .collect(),
        })
    }

    /// The supervisor as the old binary left it; the error names what in
    /// the state makes no sense.
    pub fn restore(
        mut settings: SupervisorSettings,
        carried: &state::Supervisor,
        clock: Clock,
    ) -> Result<Supervisor, String> {
        let at = |ns| clock.to_instant(ns);
        settings.workers = carried.workers;
        let mut supervisor = Supervisor::new(settings);
        supervisor.next_id = carried.next_id;
        supervisor.restarts = carried.restarts;
        supervisor.consecutive_failures = carried.consecutive_failures;
        supervisor.ever_spawned = carried.ever_spawned;
        supervisor.many_workers = carried.many_workers;
        supervisor.phase = match carried.phase {
            state::Phase::Running => Phase::Running,
            state::Phase::WaitingToRestart { at: ns } => Phase::WaitingToRestart { at: at(ns) },
            state::Phase::Idle { watch_at } => Phase::Idle {
                watch_at: watch_at.map(at),
            },
            state::Phase::Paused { since } => Phase::Paused { since: at(since) },
        };
        supervisor.reload_queued = carried.reload_queued;
        supervisor.maintenance = carried.maintenance;
        supervisor.unserved_since = carried.unserved_since.map(at);
        supervisor.scale_awaited = carried.scale_awaited;
        for g in &carried.generations {
            let cause = String::from_utf8_lossy(&g.cause);
            let cause = Cause::from_name(&cause)
                .ok_or_else(|| format!("generation {}: unknown cause '{cause}'", g.id))?;
            let mut workers = Vec::new();
            for (index, w) in g.workers.iter().enumerate() {
                if w.slot != index {
                    return Err(format!(
                        "generation {}: worker {} is in slot {index}",
                        g.id, w.slot
                    ));
                }
                let state = match w.state {
                    state::WorkerState::Queued => WorkerState::Queued,
                    state::WorkerState::Starting {
                        pid,
                        since,
                        awaiting,
                    } => WorkerState::Starting {
                        pid: pid_in(pid)?,
                        since: at(since),
                        awaiting: Awaiting {
                            ready_at: awaiting.ready_at.map(at),
                            give_up_at: at(awaiting.give_up_at),
                            observe_at: awaiting.observe_at.map(at),
                            notified_at: awaiting.notified_at.map(at),
                        },
                    },
                    state::WorkerState::Ready { pid, since } => WorkerState::Ready {
                        pid: pid_in(pid)?,
                        since: at(since),
                    },
                    state::WorkerState::WaitingToRestart { at: ns } => {
                        WorkerState::WaitingToRestart { at: at(ns) }
                    }
                    state::WorkerState::HandedOver => WorkerState::HandedOver,
                    state::WorkerState::Ended => WorkerState::Ended,
                };
                workers.push(Worker {
                    slot: w.slot,
                    state,
                    failures: w.failures,
                    restarts: w.restarts,
                    unobservable: string(&w.unobservable),
                    ready_by: string(&w.ready_by),
                });
            }
            supervisor.generations.push(Generation {
                id: g.id,
                workers,
                first_failure: g.first_failure.map(status_in).transpose()?,
                role: match g.role {
                    state::Role::Starting => Role::Starting,
                    state::Role::Current { since } => Role::Current { since: at(since) },
                    state::Role::Stopping => Role::Stopping {
                        after: AfterStop::Nothing,
                    },
                    state::Role::Recovering { exited } => Role::Stopping {
                        after: AfterStop::ApplyRestartPolicy {
                            exited: exited.map(status_in).transpose()?,
                        },
                    },
                },
                started_at: at(g.started_at),
                cause,
                ready_by: string(&g.ready_by),
            });
        }
        let current = supervisor
            .generations
            .iter()
            .filter(|g| matches!(g.role, Role::Current { .. }))
            .count();
        if current > 1 {
            return Err(format!("{current} generations are current"));
        }
        for l in &carried.leaving {
            supervisor.leaving.push(Leaving {
                generation: l.generation,
                slot: l.slot,
                pid: pid_in(l.pid)?,
                kill_at: l.kill_at.map(at),
                restarts: l.restarts,
            });
        }
        Ok(supervisor)
    }
}

fn text(value: &Option<String>) -> Option<Vec<u8>> {
    value.as_ref().map(|t| t.as_bytes().to_vec())
}

fn string(value: &Option<Vec<u8>>) -> Option<String> {
    value
        .as_ref()
        .map(|b| String::from_utf8_lossy(b).into_owned())
}

fn pid_in(pid: i32) -> Result<Pid, String> {
    if pid > 0 {
        Ok(Pid::from_raw(pid))
    } else {
        Err(format!("'{pid}' is not a pid"))
    }
}

fn status_out(status: ChildStatus) -> state::Status {
    match status {
        ChildStatus::Exited(code) => state::Status::Exited(code),
        ChildStatus::Signaled(signal) => state::Status::Signaled(signal as i32),
    }
}

fn status_in(status: state::Status) -> Result<ChildStatus, String> {
    match status {
        state::Status::Exited(code) => Ok(ChildStatus::Exited(code)),
        state::Status::Signaled(number) => Signal::try_from(number)
            .map(ChildStatus::Signaled)
            .map_err(|_| format!("'{number}' is not a signal")),
    }
}
