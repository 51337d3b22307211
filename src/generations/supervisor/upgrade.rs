//! What of the supervisor an upgrade carries to the new binary
//! (`upgrade/`): the steady state only, where nothing is in flight and no
//! deadline is pending, so that nothing can be lost between the two
//! binaries. Anything else is refused with the reason and what to do.

use super::{Cause, Generation, Phase, Role, Slot, Supervisor, Worker, WorkerState};
use crate::config::SupervisorSettings;
use nix::unistd::Pid;
use std::time::Instant;

/// The supervisor in its steady state. (The default is the one
/// per-connection mode carries: no supervisor at all.)
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Snapshot {
    pub next_id: u64,
    pub restarts: u64,
    pub consecutive_failures: u32,
    pub ever_spawned: bool,
    pub many_workers: bool,
    /// `--workers`, as `scale` left it.
    pub workers: usize,
    /// Paused since then (no generation); None: one generation serves.
    pub paused_since: Option<Instant>,
    pub current: Option<CurrentGeneration>,
    /// Whether the driver was told to answer (`--maintenance`).
    pub maintenance: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentGeneration {
    pub id: u64,
    pub cause: Cause,
    pub started_at: Instant,
    pub since: Instant,
    pub ready_by: Option<String>,
    pub workers: Vec<ReadyWorker>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadyWorker {
    pub slot: Slot,
    pub pid: Pid,
    pub since: Instant,
    pub failures: u32,
    pub restarts: u64,
    pub ready_by: Option<String>,
    pub unobservable: Option<String>,
}

impl Cause {
    pub fn from_name(name: &str) -> Option<Cause> {
        [Cause::Launch, Cause::Reload, Cause::Restart, Cause::Resume]
            .into_iter()
            .find(|cause| cause.name() == name)
    }
}

/// Retrying once the generation serves is what to do for anything in flight.
const RETRY: &str = "retry once it is serving (see sockhold status)";

impl Supervisor {
    /// The state to carry, or why now is not the time.
    pub fn snapshot(&self) -> Result<Snapshot, String> {
        if self.reload_queued {
            return Err(format!("a reload is queued; {RETRY}"));
        }
        if self.scale_awaited.is_some() {
            return Err(format!("a scale is in flight; {RETRY}"));
        }
        if let Some(leaving) = self.leaving.first() {
            return Err(format!(
                "pid {} of generation {} is stopping; {RETRY}",
                leaving.pid, leaving.generation
            ));
        }
        let paused_since = match self.phase {
            Phase::Running => None,
            Phase::Paused { since } => Some(since),
            Phase::WaitingToRestart { .. } => {
                return Err(format!(
                    "nobody serves and a restart is waiting for its backoff; {RETRY}"
                ));
            }
            Phase::Idle { .. } => {
                return Err(
                    "--lazy with no child running is not carried over yet; retry once a connection has started one"
                        .to_string(),
                );
            }
            Phase::ShuttingDown { .. } | Phase::Exited => {
                return Err("sockhold is stopping".to_string());
            }
        };
        let current = match (paused_since, self.generations.as_slice()) {
            (Some(_), []) => None,
            (None, [generation]) => Some(current_generation(generation)?),
            (_, generations) => {
                let starting = generations
                    .iter()
                    .find(|g| !matches!(g.role, Role::Current { .. }));
                return Err(match starting {
                    Some(g) if g.role == Role::Starting => {
                        format!(
                            "a reload is in flight (generation {} is starting); {RETRY}",
                            g.id
                        )
                    }
                    Some(g) => format!("generation {} is stopping; {RETRY}", g.id),
                    None => format!("no generation serves; {RETRY}"),
                });
            }
        };
        Ok(Snapshot {
            next_id: self.next_id,
            restarts: self.restarts,
            consecutive_failures: self.consecutive_failures,
            ever_spawned: self.ever_spawned,
            many_workers: self.many_workers,
            workers: self.settings.workers,
            paused_since,
            current,
            maintenance: self.maintenance,
        })
    }

    /// The supervisor as the old binary left it.
    pub fn restore(mut settings: SupervisorSettings, snapshot: Snapshot) -> Supervisor {
        settings.workers = snapshot.workers;
        let mut supervisor = Supervisor::new(settings);
        supervisor.next_id = snapshot.next_id;
        supervisor.restarts = snapshot.restarts;
        supervisor.consecutive_failures = snapshot.consecutive_failures;
        supervisor.ever_spawned = snapshot.ever_spawned;
        supervisor.many_workers = snapshot.many_workers;
        supervisor.maintenance = snapshot.maintenance;
        if let Some(since) = snapshot.paused_since {
            supervisor.phase = Phase::Paused { since };
            supervisor.unserved_since = Some(since);
        }
        if let Some(current) = snapshot.current {
            supervisor.generations.push(Generation {
                id: current.id,
                workers: current
                    .workers
                    .into_iter()
                    .map(|w| Worker {
                        slot: w.slot,
                        state: WorkerState::Ready {
                            pid: w.pid,
                            since: w.since,
                        },
                        failures: w.failures,
                        restarts: w.restarts,
                        unobservable: w.unobservable,
                        ready_by: w.ready_by,
                    })
                    .collect(),
                first_failure: None,
                role: Role::Current {
                    since: current.since,
                },
                started_at: current.started_at,
                cause: current.cause,
                ready_by: current.ready_by,
            });
        }
        supervisor
    }
}

fn current_generation(generation: &Generation) -> Result<CurrentGeneration, String> {
    let Role::Current { since } = generation.role else {
        return Err(format!(
            "generation {} is not serving yet; {RETRY}",
            generation.id
        ));
    };
    if generation.first_failure.is_some() {
        return Err(format!(
            "a worker of generation {} ended and was not restarted; {RETRY}",
            generation.id
        ));
    }
    let mut workers = Vec::new();
    for worker in &generation.workers {
        let WorkerState::Ready { pid, since } = worker.state else {
            return Err(format!(
                "worker {} of generation {} is not ready (restarting or starting); {RETRY}",
                worker.slot, generation.id
            ));
        };
        workers.push(ReadyWorker {
            slot: worker.slot,
            pid,
            since,
            failures: worker.failures,
            restarts: worker.restarts,
            ready_by: worker.ready_by.clone(),
            unobservable: worker.unobservable.clone(),
        });
    }
    Ok(CurrentGeneration {
        id: generation.id,
        cause: generation.cause,
        started_at: generation.started_at,
        since,
        ready_by: generation.ready_by.clone(),
        workers,
    })
}
