//! `--workers`: a generation as a set of slots, with a fake clock and fake
//! pids (workers of generation G in slot S run as pid 100 * G + S).
use super::*;

const WORKERS: usize = 3;

fn workers(restart: RestartPolicy) -> SupervisorSettings {
    SupervisorSettings {
        ready: ReadyMode::Notify,
        restart,
        workers: WORKERS,
        ..SupervisorSettings::default()
    }
}

fn worker_pid(generation: GenerationId, slot: Slot) -> Pid {
    pid(100 * generation as i32 + slot as i32)
}

fn spawns(generation: GenerationId) -> Vec<Action> {
    (0..WORKERS)
        .map(|slot| Action::Spawn { generation, slot })
        .collect()
}

fn stops(generation: GenerationId) -> Vec<Action> {
    (0..WORKERS)
        .map(|slot| Action::Stop {
            pid: worker_pid(generation, slot),
            signal: TERM,
        })
        .collect()
}

impl Supervisor {
    fn worker_started(&mut self, generation: GenerationId, slot: Slot, now: Instant) {
        let pid = worker_pid(generation, slot);
        let event = Event::Spawned {
            generation,
            slot,
            pid,
        };
        assert_eq!(self.step(event, now), vec![]);
    }

    fn all_started(&mut self, generation: GenerationId, now: Instant) {
        for slot in 0..WORKERS {
            self.worker_started(generation, slot, now);
        }
    }

    fn worker_ready(&mut self, generation: GenerationId, slot: Slot, now: Instant) -> Vec<Action> {
        let slot = Some(slot);
        self.handle(Event::Ready { generation, slot }, now)
    }
}

/// Generation 1's three workers are running and it is current.
fn serving_workers(settings: SupervisorSettings, t0: Instant) -> Supervisor {
    let mut sup = Supervisor::new(settings);
    assert_eq!(sup.step(Event::Start, t0), spawns(1));
    sup.all_started(1, t0);
    for slot in 0..WORKERS {
        sup.worker_ready(1, slot, t0);
    }
    assert_eq!(sup.situation(), Situation::Serving);
    sup
}

#[test]
fn a_generation_of_three_workers_is_ready_only_once_all_three_are() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(workers(RestartPolicy::OnFailure));
    assert_eq!(sup.step(Event::Start, t0), spawns(1));
    sup.all_started(1, t0);
    assert!(sup.worker_ready(1, 2, t0).is_empty());
    assert!(sup.worker_ready(1, 0, t0).is_empty());
    assert_eq!(sup.situation(), Situation::Launching);
    assert_eq!(
        sup.worker_ready(1, 1, t0 + ms(5)),
        vec![Action::Report(Report::Ready {
            generation: 1,
            pid: worker_pid(1, 0)
        })]
    );
    assert_eq!(sup.situation(), Situation::Serving);
    let pids: Vec<Pid> = (0..WORKERS).map(|slot| worker_pid(1, slot)).collect();
    assert_eq!(sup.main_pids(), pids);
}

#[test]
fn ready_from_an_untraced_sender_counts_for_the_next_slot_without_one() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(workers(RestartPolicy::OnFailure));
    sup.step(Event::Start, t0);
    sup.all_started(1, t0);
    let untraced = Event::Ready {
        generation: 1,
        slot: None,
    };
    sup.worker_ready(1, 1, t0);
    assert!(sup.handle(untraced.clone(), t0).is_empty());
    assert_eq!(sup.situation(), Situation::Launching);
    assert!(!sup.handle(untraced, t0).is_empty());
    assert_eq!(sup.situation(), Situation::Serving);
}

#[test]
fn a_crashed_worker_is_restarted_alone_in_its_slot_with_its_own_backoff() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    let crashed = ChildStatus::Exited(1);
    // Slot 1 crashes: nothing happens to the others, nor to the generation.
    assert_eq!(sup.reaped(101, crashed, t0 + ms(10)), vec![]);
    assert_eq!(sup.situation(), Situation::Serving);
    assert_eq!(sup.main_pids(), vec![pid(100), pid(102)]);
    assert_eq!(sup.next_deadline(), Some(t0 + ms(110)));
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(110)),
        vec![Action::Spawn {
            generation: 1,
            slot: 1
        }]
    );
    let again = Event::Spawned {
        generation: 1,
        slot: 1,
        pid: pid(111),
    };
    assert_eq!(sup.step(again, t0 + ms(110)), vec![]);
    assert_eq!(sup.main_pids(), vec![pid(100), pid(111), pid(102)]);
    // Its second crash in a row waits twice as long; slot 2's first, not.
    assert_eq!(sup.reaped(111, crashed, t0 + ms(120)), vec![]);
    assert_eq!(sup.reaped(102, crashed, t0 + ms(120)), vec![]);
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(220)),
        vec![Action::Spawn {
            generation: 1,
            slot: 2
        }]
    );
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(320)),
        vec![Action::Spawn {
            generation: 1,
            slot: 1
        }]
    );
    assert_eq!(sup.restarts, 3);
    let slot_1 = sup.workers().into_iter().find(|w| w.slot == 1).unwrap();
    assert_eq!((slot_1.generation, slot_1.restarts), (1, 2));
}

#[test]
fn a_reload_switches_once_every_new_worker_is_ready() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    assert_eq!(sup.step(Event::Reload, t0), spawns(2));
    sup.all_started(2, t0);
    assert!(sup.worker_ready(2, 0, t0).is_empty());
    assert!(sup.worker_ready(2, 1, t0).is_empty());
    assert_eq!(sup.situation(), Situation::Reloading);
    let mut expected = stops(1);
    expected.push(Action::Report(Report::ReloadSucceeded {
        generation: 2,
        pid: worker_pid(2, 0),
    }));
    assert_eq!(sup.worker_ready(2, 2, t0 + ms(50)), expected);
    assert_eq!(sup.reaped(100, ChildStatus::Signaled(TERM), t0), vec![]);
    assert_eq!(sup.reaped(101, ChildStatus::Signaled(TERM), t0), vec![]);
    assert_eq!(
        sup.reaped(102, ChildStatus::Signaled(TERM), t0),
        vec![Action::Forget { generation: 1 }]
    );
}

#[test]
fn a_new_worker_that_crashes_mid_reload_fails_it_and_stops_the_other_new_ones() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.step(Event::Reload, t0);
    sup.all_started(2, t0);
    sup.worker_ready(2, 0, t0);
    let actions = sup.handle(
        Event::Exited {
            pid: worker_pid(2, 1),
            status: ChildStatus::Exited(1),
        },
        t0 + ms(10),
    );
    assert_eq!(
        actions,
        vec![
            Action::Report(Report::ReloadFailed {
                generation: 2,
                reason: "generation 2 worker 1 exited with status 1 before ready".into(),
            }),
            Action::Stop {
                pid: pid(200),
                signal: TERM
            },
            Action::Stop {
                pid: pid(202),
                signal: TERM
            },
        ]
    );
    assert_eq!(sup.situation(), Situation::Serving);
    assert_eq!(sup.main_pids(), vec![pid(100), pid(101), pid(102)]);
    sup.reaped(200, ChildStatus::Signaled(TERM), t0 + ms(20));
    assert_eq!(
        sup.reaped(202, ChildStatus::Signaled(TERM), t0 + ms(20)),
        vec![Action::Forget { generation: 2 }]
    );
    assert_eq!(sup.next_deadline(), None, "nothing restarts");
}

#[test]
fn stop_stops_every_worker_and_exits_once_all_are_gone() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    let stop = Event::Stop {
        signal: TERM,
        by: StopBy::Signal,
    };
    assert_eq!(sup.step(stop, t0), stops(1));
    assert_eq!(sup.reaped(100, ChildStatus::Signaled(TERM), t0), vec![]);
    assert_eq!(sup.reaped(101, ChildStatus::Exited(0), t0), vec![]);
    assert_eq!(
        sup.reaped(102, ChildStatus::Signaled(TERM), t0),
        vec![Action::Forget { generation: 1 }, Action::Exit { status: 0 }]
    );
}

#[test]
fn a_stop_one_worker_did_not_honour_exits_with_its_status() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    let stop = Event::Stop {
        signal: TERM,
        by: StopBy::Signal,
    };
    sup.step(stop, t0);
    sup.reaped(100, ChildStatus::Signaled(TERM), t0);
    sup.reaped(101, ChildStatus::Exited(4), t0);
    assert_eq!(
        sup.reaped(102, ChildStatus::Exited(5), t0),
        vec![Action::Forget { generation: 1 }, Action::Exit { status: 4 }]
    );
}

#[test]
fn with_restart_never_sockhold_exits_with_the_first_failure_once_the_last_worker_is_gone() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::Never), t0);
    assert_eq!(sup.reaped(101, ChildStatus::Exited(3), t0), vec![]);
    assert_eq!(sup.reaped(100, ChildStatus::Exited(0), t0), vec![]);
    assert_eq!(sup.situation(), Situation::Serving);
    assert_eq!(
        sup.reaped(102, ChildStatus::Exited(0), t0),
        vec![Action::Forget { generation: 1 }, Action::Exit { status: 3 }]
    );
}

#[test]
fn the_last_worker_gone_restarts_the_generation_as_a_whole() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    let clean = ChildStatus::Exited(0);
    assert_eq!(sup.reaped(100, clean, t0), vec![]);
    assert_eq!(sup.reaped(101, clean, t0), vec![]);
    assert_eq!(
        sup.reaped(102, ChildStatus::Exited(2), t0),
        vec![Action::Forget { generation: 1 }]
    );
    assert_eq!(sup.situation(), Situation::WaitingToRestart);
    assert_eq!(sup.step(Event::Tick, t0 + ms(100)), spawns(2));
}

#[test]
fn forwarded_signals_go_to_every_worker_of_the_current_generation() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.step(Event::Reload, t0);
    sup.all_started(2, t0);
    let usr1 = Signal::SIGUSR1;
    let expected: Vec<Action> = (0..WORKERS)
        .map(|slot| Action::Signal {
            pid: worker_pid(1, slot),
            signal: usr1,
        })
        .collect();
    assert_eq!(sup.step(Event::Forward { signal: usr1 }, t0), expected);
}

#[test]
fn a_generation_is_seen_accepting_only_once_every_worker_is() {
    let accepting = Observation::Accepting {
        pid: pid(100),
        fd: 3,
        doing: "waits in accept",
    };
    let all = Observation::of_all(vec![accepting.clone(), accepting.clone()]);
    assert_eq!(all, accepting);
    let one_not_yet = vec![accepting.clone(), Observation::NotYet];
    assert_eq!(Observation::of_all(one_not_yet), Observation::NotYet);
    let one_busy = vec![Observation::Busy, accepting.clone()];
    assert_eq!(Observation::of_all(one_busy), Observation::Busy);
    let hidden = Observation::Unobservable {
        why: "pid 101 is gone".into(),
    };
    assert_eq!(Observation::of_all(vec![accepting, hidden.clone()]), hidden);
}

#[test]
fn with_lazy_every_worker_starts_on_the_first_connection() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(SupervisorSettings {
        lazy: true,
        ..workers(RestartPolicy::OnFailure)
    });
    assert_eq!(sup.step(Event::Start, t0), vec![Action::WatchListeners]);
    let mut expected = vec![Action::UnwatchListeners];
    expected.extend(spawns(1));
    assert_eq!(sup.step(Event::ConnectionWaiting, t0), expected);
}

#[test]
fn workers_that_do_not_stop_in_time_all_get_sigkill() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    let stop = Event::Stop {
        signal: TERM,
        by: StopBy::Signal,
    };
    sup.step(stop, t0);
    sup.reaped(101, ChildStatus::Signaled(TERM), t0);
    let timeout = SupervisorSettings::default().stop_timeout;
    assert_eq!(
        sup.step(Event::Tick, t0 + timeout),
        vec![
            Action::Signal {
                pid: pid(100),
                signal: Signal::SIGKILL
            },
            Action::Signal {
                pid: pid(102),
                signal: Signal::SIGKILL
            },
        ]
    );
}
