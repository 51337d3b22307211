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

    fn sends_ready(&mut self, generation: GenerationId, slot: Slot, now: Instant) -> Vec<Action> {
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
        sup.sends_ready(1, slot, t0);
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
    assert!(sup.sends_ready(1, 2, t0).is_empty());
    assert!(sup.sends_ready(1, 0, t0).is_empty());
    assert_eq!(sup.situation(), Situation::Launching);
    assert_eq!(
        sup.sends_ready(1, 1, t0 + ms(5)),
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
    sup.sends_ready(1, 1, t0);
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

/// What `status` would show now: (generation, slot, state) of every
/// worker process.
fn census(sup: &Supervisor) -> Vec<(GenerationId, Slot, &'static str)> {
    sup.workers()
        .iter()
        .map(|w| (w.generation, w.slot, w.state))
        .collect()
}

/// The rolling reload's promises, checked after every step: at least N
/// ready, at most N + surge running (not counting those stopping).
fn assert_capacity(sup: &Supervisor, surge: usize) {
    let workers = sup.workers();
    let ready = workers.iter().filter(|w| w.state == "ready").count();
    let running = workers.iter().filter(|w| w.state != "stopping").count();
    assert!(ready >= WORKERS, "{ready} ready: {:?}", census(sup));
    assert!(
        running <= WORKERS + surge,
        "{running} running: {:?}",
        census(sup)
    );
}

fn stop(generation: GenerationId, slot: Slot) -> Action {
    Action::Stop {
        pid: worker_pid(generation, slot),
        signal: TERM,
    }
}

fn spawn(generation: GenerationId, slot: Slot) -> Action {
    Action::Spawn { generation, slot }
}

#[test]
fn a_rolling_reload_starts_one_new_worker_at_a_time_and_stops_an_old_one_per_new_one_ready() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    assert_eq!(sup.step(Event::Reload, t0), vec![spawn(2, 0)]);
    for slot in 0..WORKERS {
        sup.worker_started(2, slot, t0);
        assert_capacity(&sup, 1);
        let mut expected = vec![stop(1, slot)];
        if slot + 1 < WORKERS {
            expected.push(spawn(2, slot + 1));
        } else {
            expected.push(Action::Report(Report::ReloadSucceeded {
                generation: 2,
                pid: worker_pid(2, 0),
            }));
        }
        assert_eq!(
            sup.sends_ready(2, slot, t0 + ms(10)),
            expected,
            "slot {slot}"
        );
        assert_capacity(&sup, 1);
    }
    assert_eq!(sup.situation(), Situation::Serving);
    assert_eq!(
        census(&sup),
        [
            (2, 0, "ready"),
            (2, 1, "ready"),
            (2, 2, "ready"),
            (1, 0, "stopping"),
            (1, 1, "stopping"),
            (1, 2, "stopping"),
        ]
    );
    assert_eq!(sup.reaped(100, ChildStatus::Signaled(TERM), t0), vec![]);
    assert_eq!(sup.reaped(101, ChildStatus::Signaled(TERM), t0), vec![]);
    assert_eq!(
        sup.reaped(102, ChildStatus::Signaled(TERM), t0),
        vec![Action::Forget { generation: 1 }]
    );
}

#[test]
fn a_surge_of_two_starts_two_at_a_time_and_hands_each_slot_over_in_any_order() {
    let t0 = Instant::now();
    let settings = SupervisorSettings {
        reload_surge: 2,
        ..workers(RestartPolicy::OnFailure)
    };
    let mut sup = serving_workers(settings, t0);
    assert_eq!(sup.step(Event::Reload, t0), vec![spawn(2, 0), spawn(2, 1)]);
    sup.worker_started(2, 0, t0);
    sup.worker_started(2, 1, t0);
    assert_capacity(&sup, 2);
    // Slot 1 is ready first: its old worker stops, and slot 2 starts.
    assert_eq!(sup.sends_ready(2, 1, t0), vec![stop(1, 1), spawn(2, 2)]);
    assert_capacity(&sup, 2);
    sup.worker_started(2, 2, t0);
    assert_capacity(&sup, 2);
    assert_eq!(sup.sends_ready(2, 0, t0), vec![stop(1, 0)]);
    assert_capacity(&sup, 2);
    let done = Action::Report(Report::ReloadSucceeded {
        generation: 2,
        pid: worker_pid(2, 0),
    });
    assert_eq!(sup.sends_ready(2, 2, t0), vec![stop(1, 2), done]);
}

#[test]
fn a_surge_of_all_workers_starts_them_at_once() {
    let t0 = Instant::now();
    let settings = SupervisorSettings {
        reload_surge: 8,
        ..workers(RestartPolicy::OnFailure)
    };
    let mut sup = serving_workers(settings, t0);
    assert_eq!(sup.step(Event::Reload, t0), spawns(2));
    sup.all_started(2, t0);
    assert_eq!(sup.sends_ready(2, 2, t0), vec![stop(1, 2)]);
}

#[test]
fn a_new_worker_that_crashes_mid_rollout_fails_it_and_the_old_generation_refills_its_slots() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.step(Event::Reload, t0);
    sup.worker_started(2, 0, t0);
    assert_eq!(sup.sends_ready(2, 0, t0), vec![stop(1, 0), spawn(2, 1)]);
    sup.worker_started(2, 1, t0);
    let actions = sup.handle(
        Event::Exited {
            pid: worker_pid(2, 1),
            status: ChildStatus::Exited(1),
        },
        t0 + ms(10),
    );
    // Slot 0 was handed over: generation 1 starts it again, and
    // generation 2's ready worker there serves until that one is ready.
    assert_eq!(
        actions,
        vec![
            Action::Report(Report::ReloadFailed {
                generation: 2,
                reason: "generation 2 worker 1 exited with status 1 before ready".into(),
            }),
            spawn(1, 0),
        ]
    );
    assert_eq!(sup.situation(), Situation::Serving);
    assert_capacity(&sup, 1);
    let refill = Event::Spawned {
        generation: 1,
        slot: 0,
        pid: pid(110),
    };
    assert!(sup.step(refill, t0 + ms(20)).is_empty());
    assert_capacity(&sup, 1);
    assert_eq!(
        census(&sup),
        [
            (1, 0, "starting"),
            (1, 1, "ready"),
            (1, 2, "ready"),
            (2, 0, "ready"),
            (1, 0, "stopping"),
        ]
    );
    assert_eq!(sup.sends_ready(1, 0, t0 + ms(30)), vec![stop(2, 0)]);
    assert_capacity(&sup, 1);
    assert_eq!(sup.reaped(100, ChildStatus::Signaled(TERM), t0), vec![]);
    assert_eq!(
        sup.reaped(200, ChildStatus::Signaled(TERM), t0),
        vec![Action::Forget { generation: 2 }]
    );
    assert_eq!(sup.main_pids(), vec![pid(110), pid(101), pid(102)]);
    assert_eq!(sup.next_deadline(), None, "nothing restarts");
}

#[test]
fn a_new_worker_never_ready_fails_the_rollout_and_the_old_workers_serve_on() {
    let t0 = Instant::now();
    let settings = SupervisorSettings {
        ready_timeout: Duration::from_secs(5),
        ..workers(RestartPolicy::OnFailure)
    };
    let mut sup = serving_workers(settings, t0);
    sup.step(Event::Reload, t0);
    sup.worker_started(2, 0, t0);
    assert_eq!(sup.next_deadline(), Some(t0 + Duration::from_secs(5)));
    let actions = sup.handle(Event::Tick, t0 + Duration::from_secs(5));
    assert_eq!(
        actions,
        vec![
            Action::Report(Report::ReloadFailed {
                generation: 2,
                reason: "generation 2 worker 0 not ready after 5s".into(),
            }),
            stop(2, 0),
        ]
    );
    assert_eq!(sup.main_pids(), vec![pid(100), pid(101), pid(102)]);
    assert_capacity(&sup, 1);
    assert_eq!(
        sup.reaped(
            200,
            ChildStatus::Signaled(TERM),
            t0 + Duration::from_secs(6)
        ),
        vec![Action::Forget { generation: 2 }]
    );
}

#[test]
fn a_reload_during_a_rollout_waits_for_it() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.step(Event::Reload, t0);
    assert!(sup.step(Event::Reload, t0).is_empty());
    assert!(sup.step(Event::Reload, t0).is_empty());
    assert!(sup.reload_queued());
    for slot in 0..WORKERS {
        sup.worker_started(2, slot, t0);
        sup.sends_ready(2, slot, t0);
    }
    // Generation 2 is current; the one queued reload rolls over it.
    let workers = sup.workers();
    assert!(workers.iter().any(|w| w.generation == 3 && w.slot == 0));
    assert!(!workers.iter().any(|w| w.generation == 3 && w.slot == 1));
    assert!(!sup.reload_queued());
}

#[test]
fn stop_stops_every_worker_and_exits_once_all_are_gone() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    let stop = term();
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
    let stop = term();
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
    sup.worker_started(2, 0, t0);
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
fn a_restarted_worker_is_starting_until_ready_and_stopped_if_never() {
    let t0 = Instant::now();
    let settings = SupervisorSettings {
        ready_timeout: Duration::from_secs(5),
        ..workers(RestartPolicy::OnFailure)
    };
    let mut sup = serving_workers(settings, t0);
    sup.reaped(101, ChildStatus::Exited(1), t0);
    assert_eq!(sup.step(Event::Tick, t0 + ms(100)), vec![spawn(1, 1)]);
    let restarted = Event::Spawned {
        generation: 1,
        slot: 1,
        pid: pid(111),
    };
    sup.step(restarted, t0 + ms(100));
    assert_eq!(census(&sup)[1], (1, 1, "starting"));
    // Not ready in time: stopped, and its slot restarted after its backoff.
    let late = t0 + ms(100) + Duration::from_secs(5);
    assert_eq!(
        sup.step(Event::Tick, late),
        vec![Action::Stop {
            pid: pid(111),
            signal: TERM
        }]
    );
    assert_eq!(census(&sup)[1], (1, 1, "waiting to restart"));
    assert_eq!(sup.step(Event::Tick, late + ms(200)), vec![spawn(1, 1)]);
    let again = Event::Spawned {
        generation: 1,
        slot: 1,
        pid: pid(121),
    };
    sup.step(again, late + ms(200));
    sup.sends_ready(1, 1, late + ms(300));
    assert_eq!(census(&sup)[1], (1, 1, "ready"));
    assert_eq!(sup.workers()[1].restarts, 2);
}

#[test]
fn scale_up_starts_the_new_slots_and_answers_once_they_are_ready() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    assert_eq!(
        sup.handle(Event::Scale { count: 5 }, t0),
        vec![spawn(1, 3), spawn(1, 4)]
    );
    sup.worker_started(1, 3, t0);
    sup.worker_started(1, 4, t0);
    assert!(sup.sends_ready(1, 4, t0).is_empty());
    assert_eq!(
        sup.sends_ready(1, 3, t0),
        vec![Action::Report(Report::Scaled {
            count: 5,
            what: "generation 1 has 5 ready workers".into()
        })]
    );
    // A reload now rolls over all five.
    sup.step(Event::Reload, t0);
    let spawns_of_2 = sup.workers().iter().filter(|w| w.generation == 2).count();
    assert_eq!(spawns_of_2, 1);
    assert_eq!(sup.worker_count(), 5);
}

#[test]
fn scale_down_stops_the_highest_slots_and_answers_at_once() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    assert_eq!(
        sup.handle(Event::Scale { count: 1 }, t0),
        vec![
            stop(1, 2),
            stop(1, 1),
            Action::Report(Report::Scaled {
                count: 1,
                what: "generation 1 has 1 ready workers".into()
            })
        ]
    );
    // Their exits are no crashes: nothing restarts.
    assert!(sup.reaped(102, ChildStatus::Signaled(TERM), t0).is_empty());
    assert!(sup.reaped(101, ChildStatus::Exited(1), t0).is_empty());
    assert_eq!(sup.next_deadline(), None);
    assert_eq!(sup.main_pids(), vec![pid(100)]);
}

#[test]
fn a_new_slot_that_fails_fails_the_scale_and_restarts_in_its_slot() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.handle(Event::Scale { count: 4 }, t0);
    sup.worker_started(1, 3, t0);
    assert_eq!(
        sup.handle(
            Event::Exited {
                pid: worker_pid(1, 3),
                status: ChildStatus::Exited(2)
            },
            t0
        ),
        vec![Action::Report(Report::ScaleFailed {
            reason: "generation 1 worker 3 exited with status 2 before ready".into()
        })]
    );
    assert_eq!(census(&sup)[3], (1, 3, "waiting to restart"));
}

#[test]
fn scale_up_during_a_rollout_grows_both_generations() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.step(Event::Reload, t0);
    sup.worker_started(2, 0, t0);
    sup.sends_ready(2, 0, t0);
    // Slot 1 of generation 2 is starting; slot 3 is new in both.
    assert_eq!(sup.step(Event::Scale { count: 4 }, t0), vec![spawn(1, 3)]);
    sup.worker_started(1, 3, t0);
    let scaled = sup.sends_ready(1, 3, t0);
    assert!(
        matches!(
            scaled.as_slice(),
            [Action::Report(Report::Scaled { count: 4, .. })]
        ),
        "{scaled:?}"
    );
    for slot in 1..4 {
        sup.worker_started(2, slot, t0);
        sup.sends_ready(2, slot, t0);
    }
    assert_eq!(sup.situation(), Situation::Serving);
    let current: Vec<_> = sup
        .workers()
        .iter()
        .filter(|w| w.state == "ready")
        .map(|w| (w.generation, w.slot))
        .collect();
    assert_eq!(current, [(2, 0), (2, 1), (2, 2), (2, 3)]);
}

#[test]
fn scale_down_during_a_rollout_shrinks_both_and_may_complete_it() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.step(Event::Reload, t0);
    sup.worker_started(2, 0, t0);
    sup.sends_ready(2, 0, t0);
    sup.worker_started(2, 1, t0);
    let actions = sup.handle(Event::Scale { count: 1 }, t0);
    assert_eq!(
        actions,
        vec![
            stop(1, 2),
            stop(1, 1),
            stop(2, 1),
            Action::Report(Report::ReloadSucceeded {
                generation: 2,
                pid: worker_pid(2, 0)
            }),
            Action::Report(Report::Scaled {
                count: 1,
                what: "generation 2 has 1 ready workers".into()
            }),
        ]
    );
    assert_eq!(sup.main_pids(), vec![worker_pid(2, 0)]);
}

#[test]
fn scale_while_nothing_runs_is_for_the_next_generation_and_refused_while_stopping() {
    let t0 = Instant::now();
    let mut sup = serving_workers(workers(RestartPolicy::OnFailure), t0);
    sup.step(Event::Pause, t0);
    let reports = sup.reports(Event::Scale { count: 2 }, t0);
    assert_eq!(
        reports,
        vec![Report::Scaled {
            count: 2,
            what: "2 workers from the next generation on (paused)".into()
        }]
    );
    let stop = term();
    sup.step(stop, t0);
    assert_eq!(
        sup.reports(Event::Scale { count: 3 }, t0),
        vec![Report::ScaleFailed {
            reason: "sockhold is stopping".into()
        }]
    );
}

#[test]
fn each_worker_is_observed_alone_and_the_generation_is_ready_once_all_are_seen() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(SupervisorSettings {
        ready: ReadyMode::Auto,
        ..workers(RestartPolicy::OnFailure)
    });
    sup.step(Event::Start, t0);
    sup.all_started(1, t0);
    let looks: Vec<Action> = (0..WORKERS)
        .map(|slot| Action::Observe {
            generation: 1,
            slot,
        })
        .collect();
    assert_eq!(sup.step(Event::Tick, t0), looks, "one look per worker");
    let seen = |slot: Slot| Event::Observed {
        generation: 1,
        slot,
        observation: Observation::Accepting {
            pid: worker_pid(1, slot),
            fd: 3,
            doing: "waits in accept",
        },
    };
    assert!(sup.handle(seen(2), t0 + ms(10)).is_empty());
    assert!(sup.handle(seen(0), t0 + ms(10)).is_empty());
    let states: Vec<_> = sup.workers().iter().map(|w| w.state).collect();
    assert_eq!(states, ["ready", "starting", "ready"]);
    // Only the worker not yet seen is looked at again.
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(20)),
        vec![Action::Observe {
            generation: 1,
            slot: 1
        }]
    );
    assert_eq!(
        sup.handle(seen(1), t0 + ms(20)),
        vec![Action::Report(Report::Ready {
            generation: 1,
            pid: worker_pid(1, 0)
        })]
    );
    let ready_by = sup.workers()[1].ready_by.clone().unwrap();
    assert_eq!(ready_by, "accepting on fd 3 (pid 101) after 20ms");
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
    let stop = term();
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
