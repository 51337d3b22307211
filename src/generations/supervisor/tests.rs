//! The generations table, cell by cell, with a fake clock and fake pids.
use super::*;

const TERM: Signal = Signal::SIGTERM;

impl Supervisor {
    /// The first pid forwarded signals go to.
    fn main_pid(&self) -> Option<Pid> {
        self.main_pids().first().copied()
    }

    /// `handle` without the reports: what the driver must do.
    fn step(&mut self, event: Event, now: Instant) -> Vec<Action> {
        self.handle(event, now)
            .into_iter()
            .filter(|action| !matches!(action, Action::Report(_)))
            .collect()
    }

    /// The driver reports that `generation` started as `pid`.
    fn started_as(&mut self, generation: GenerationId, pid: i32, now: Instant) -> Vec<Action> {
        self.step(
            Event::Spawned {
                generation,
                slot: 0,
                pid: Pid::from_raw(pid),
            },
            now,
        )
    }

    /// The driver reaped `pid` with `status`.
    fn reaped(&mut self, pid: i32, status: ChildStatus, now: Instant) -> Vec<Action> {
        self.step(
            Event::Exited {
                pid: Pid::from_raw(pid),
                status,
            },
            now,
        )
    }

    /// The driver could not start `generation`; `code` as for the shell.
    fn start_failed(&mut self, generation: GenerationId, code: i32, now: Instant) -> Vec<Action> {
        self.step(
            Event::SpawnFailed {
                generation,
                slot: 0,
                reason: "cannot start".into(),
                status: ChildStatus::Exited(code),
            },
            now,
        )
    }

    /// Only the reports.
    fn reports(&mut self, event: Event, now: Instant) -> Vec<Report> {
        self.handle(event, now)
            .into_iter()
            .filter_map(|action| match action {
                Action::Report(report) => Some(report),
                _ => None,
            })
            .collect()
    }
}

/// The tests of the delay, restart and stop logic run with `--ready 1s`
/// (where nothing is observed); `observing()` gives the default `auto`.
fn settings() -> SupervisorSettings {
    SupervisorSettings {
        ready: ReadyMode::Delay(Duration::from_secs(1)),
        ..SupervisorSettings::default()
    }
}

/// SIGTERM, as a stop signal from outside.
fn term() -> Event {
    Event::Stop {
        signal: TERM,
        by: StopBy::Signal,
    }
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn pid(n: i32) -> Pid {
    Pid::from_raw(n)
}

/// A supervisor whose generation 1 runs as pid 100 and is current.
fn serving(settings: SupervisorSettings, t0: Instant) -> Supervisor {
    let mut sup = Supervisor::new(settings);
    assert_eq!(
        sup.step(Event::Start, t0),
        vec![Action::Spawn {
            generation: 1,
            slot: 0
        }]
    );
    sup.started_as(1, 100, t0);
    assert!(
        sup.step(
            Event::Ready {
                generation: 1,
                slot: None
            },
            t0
        )
        .is_empty()
    );
    sup
}

#[test]
fn reload_stops_the_old_generation_only_once_the_new_is_ready() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    assert_eq!(
        sup.step(Event::Reload, t0),
        vec![Action::Spawn {
            generation: 2,
            slot: 0
        }]
    );
    sup.started_as(2, 200, t0);
    assert!(
        sup.step(Event::Tick, t0 + ms(500)).is_empty(),
        "nothing before ready"
    );
    assert_eq!(
        sup.step(
            Event::Ready {
                generation: 2,
                slot: None
            },
            t0 + ms(600)
        ),
        vec![Action::Stop {
            pid: pid(100),
            signal: TERM
        }]
    );
    assert_eq!(sup.main_pid(), Some(pid(200)));
    assert_eq!(
        sup.reaped(100, ChildStatus::Signaled(TERM), t0 + ms(700)),
        vec![Action::Forget { generation: 1 }]
    );
}

#[test]
fn delay_mode_makes_a_running_child_ready_after_the_delay() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    assert_eq!(sup.next_deadline(), Some(t0 + Duration::from_secs(1)));
    assert_eq!(
        sup.step(Event::Tick, t0 + Duration::from_secs(1)),
        vec![Action::Stop {
            pid: pid(100),
            signal: TERM
        }]
    );
}

#[test]
fn failed_reload_leaves_the_old_generation_serving() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    let actions = sup.reaped(200, ChildStatus::Exited(1), t0 + ms(10));
    assert_eq!(actions, vec![Action::Forget { generation: 2 }]);
    assert_eq!(sup.main_pid(), Some(pid(100)));
    assert_eq!(sup.next_deadline(), None, "no restart, no timers");
}

#[test]
fn not_ready_in_time_is_stopped_then_killed_and_the_old_keeps_serving() {
    let t0 = Instant::now();
    let mut s = settings();
    s.ready = ReadyMode::Notify;
    s.ready_timeout = ms(500);
    s.stop_timeout = ms(300);
    let mut sup = serving(s, t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(500)),
        vec![Action::Stop {
            pid: pid(200),
            signal: TERM
        }]
    );
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(800)),
        vec![Action::Signal {
            pid: pid(200),
            signal: Signal::SIGKILL
        }]
    );
    assert_eq!(sup.main_pid(), Some(pid(100)));
    sup.reaped(200, ChildStatus::Signaled(Signal::SIGKILL), t0 + ms(801));
    assert_eq!(sup.main_pid(), Some(pid(100)));
    assert_eq!(sup.next_deadline(), None);
}

#[test]
fn reloads_during_a_reload_queue_at_most_one() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    assert!(sup.step(Event::Reload, t0).is_empty());
    assert!(sup.step(Event::Reload, t0).is_empty());
    assert!(sup.step(Event::Reload, t0).is_empty());
    let actions = sup.step(
        Event::Ready {
            generation: 2,
            slot: None,
        },
        t0 + ms(10),
    );
    assert_eq!(
        actions,
        vec![
            Action::Stop {
                pid: pid(100),
                signal: TERM
            },
            Action::Spawn {
                generation: 3,
                slot: 0
            }
        ]
    );
    sup.started_as(3, 300, t0 + ms(10));
    let actions = sup.step(
        Event::Ready {
            generation: 3,
            slot: None,
        },
        t0 + ms(20),
    );
    assert_eq!(
        actions,
        vec![Action::Stop {
            pid: pid(200),
            signal: TERM
        }],
        "no fourth generation"
    );
}

#[test]
fn crash_restarts_with_doubling_backoff_up_to_the_cap() {
    let t0 = Instant::now();
    let mut s = settings();
    s.restart_max_delay = ms(350);
    let mut sup = serving(s, t0);
    let mut now = t0;
    let mut pid_counter = 100;
    for expected_delay in [100, 200, 350, 350] {
        let actions = sup.step(
            Event::Exited {
                pid: pid(pid_counter),
                status: ChildStatus::Exited(3),
            },
            now,
        );
        assert!(!actions.iter().any(|a| matches!(a, Action::Spawn { .. })));
        assert_eq!(sup.next_deadline(), Some(now + ms(expected_delay)));
        now += ms(expected_delay);
        let actions = sup.step(Event::Tick, now);
        let [Action::Spawn { generation, .. }] = actions[..] else {
            panic!("{actions:?}")
        };
        pid_counter += 100;
        sup.step(
            Event::Spawned {
                generation,
                slot: 0,
                pid: pid(pid_counter),
            },
            now,
        );
        sup.step(
            Event::Ready {
                generation,
                slot: None,
            },
            now,
        );
    }
    assert_eq!(sup.restarts, 4);
}

#[test]
fn a_child_that_ran_long_enough_resets_the_backoff() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    for _ in 0..3 {
        sup.consecutive_failures += 1;
    }
    let later = t0 + Duration::from_secs(60);
    sup.reaped(100, ChildStatus::Exited(1), later);
    assert_eq!(sup.next_deadline(), Some(later + ms(100)));
}

#[test]
fn restart_never_exits_with_the_child_status() {
    let t0 = Instant::now();
    let mut s = settings();
    s.restart = RestartPolicy::Never;
    let mut sup = serving(s, t0);
    let actions = sup.reaped(100, ChildStatus::Exited(7), t0);
    assert_eq!(
        actions,
        vec![Action::Forget { generation: 1 }, Action::Exit { status: 7 }]
    );
}

#[test]
fn on_failure_exits_zero_after_a_clean_exit() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    let actions = sup.reaped(100, ChildStatus::Exited(0), t0);
    assert_eq!(actions.last(), Some(&Action::Exit { status: 0 }));
}

#[test]
fn death_by_signal_exits_128_plus_n_under_never() {
    let t0 = Instant::now();
    let mut s = settings();
    s.restart = RestartPolicy::Never;
    let mut sup = serving(s, t0);
    let actions = sup.reaped(100, ChildStatus::Signaled(Signal::SIGSEGV), t0);
    assert_eq!(actions.last(), Some(&Action::Exit { status: 139 }));
}

#[test]
fn requested_and_honoured_stop_exits_zero() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    assert_eq!(
        sup.step(
            Event::Stop {
                signal: TERM,
                by: StopBy::Signal
            },
            t0
        ),
        vec![Action::Stop {
            pid: pid(100),
            signal: TERM
        }]
    );
    let actions = sup.reaped(100, ChildStatus::Signaled(TERM), t0);
    assert_eq!(actions.last(), Some(&Action::Exit { status: 0 }));
}

#[test]
fn stop_that_the_child_does_not_honour_exits_with_its_status() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(
        Event::Stop {
            signal: Signal::SIGINT,
            by: StopBy::Signal,
        },
        t0,
    );
    let actions = sup.reaped(100, ChildStatus::Exited(3), t0);
    assert_eq!(actions.last(), Some(&Action::Exit { status: 3 }));
}

#[test]
fn stop_timeout_sends_sigkill_and_exit_reports_it() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(term(), t0);
    assert_eq!(sup.next_deadline(), Some(t0 + Duration::from_secs(10)));
    assert_eq!(
        sup.step(Event::Tick, t0 + Duration::from_secs(10)),
        vec![Action::Signal {
            pid: pid(100),
            signal: Signal::SIGKILL
        }]
    );
    assert_eq!(sup.next_deadline(), None);
    let actions = sup.reaped(
        100,
        ChildStatus::Signaled(Signal::SIGKILL),
        t0 + Duration::from_secs(10),
    );
    assert_eq!(actions.last(), Some(&Action::Exit { status: 137 }));
}

#[test]
fn stop_waits_for_every_generation() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    let actions = sup.step(term(), t0);
    assert_eq!(
        actions,
        vec![
            Action::Stop {
                pid: pid(100),
                signal: TERM
            },
            Action::Stop {
                pid: pid(200),
                signal: TERM
            }
        ]
    );
    let actions = sup.reaped(100, ChildStatus::Exited(0), t0);
    assert!(!actions.contains(&Action::Exit { status: 0 }));
    let actions = sup.reaped(200, ChildStatus::Exited(0), t0);
    assert_eq!(actions.last(), Some(&Action::Exit { status: 0 }));
}

#[test]
fn second_stop_request_kills_at_once() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(
        Event::Stop {
            signal: Signal::SIGINT,
            by: StopBy::Signal,
        },
        t0,
    );
    assert_eq!(
        sup.step(
            Event::Stop {
                signal: Signal::SIGINT,
                by: StopBy::Signal
            },
            t0
        ),
        vec![Action::Signal {
            pid: pid(100),
            signal: Signal::SIGKILL
        }]
    );
}

#[test]
fn forwarded_signals_go_to_the_current_child() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    assert_eq!(
        sup.step(
            Event::Forward {
                signal: Signal::SIGUSR1
            },
            t0
        ),
        vec![Action::Signal {
            pid: pid(100),
            signal: Signal::SIGUSR1
        }]
    );
}

#[test]
fn initial_failure_under_on_failure_restarts_and_reload_skips_the_wait() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(settings());
    sup.step(Event::Start, t0);
    sup.started_as(1, 100, t0);
    sup.reaped(100, ChildStatus::Exited(1), t0);
    assert_eq!(sup.next_deadline(), Some(t0 + ms(100)));
    assert_eq!(
        sup.step(Event::Reload, t0),
        vec![Action::Spawn {
            generation: 2,
            slot: 0
        }]
    );
}

#[test]
fn spawn_failure_on_reload_keeps_the_old_generation() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0);
    let actions = sup.start_failed(2, 127, t0);
    assert_eq!(actions, vec![Action::Forget { generation: 2 }]);
    assert_eq!(sup.main_pid(), Some(pid(100)));
}

#[test]
fn first_child_that_cannot_exec_exits_with_its_status_whatever_the_policy() {
    let t0 = Instant::now();
    let mut s = settings();
    s.restart = RestartPolicy::Always;
    let mut sup = Supervisor::new(s);
    sup.step(Event::Start, t0);
    let actions = sup.start_failed(1, 126, t0);
    assert_eq!(
        actions,
        vec![
            Action::Forget { generation: 1 },
            Action::Exit { status: 126 }
        ]
    );
}

#[test]
fn first_child_that_cannot_be_forked_is_retried_with_backoff() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(settings());
    sup.step(Event::Start, t0);
    let actions = sup.start_failed(1, 71, t0);
    assert_eq!(actions, vec![Action::Forget { generation: 1 }]);
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(100)),
        vec![Action::Spawn {
            generation: 2,
            slot: 0
        }]
    );
}

#[test]
fn exec_failure_after_a_child_once_ran_is_retried_with_backoff() {
    // The program may be mid-upgrade: a later crash restart that cannot
    // exec is a failure like a crash, not bad input.
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.reaped(100, ChildStatus::Exited(1), t0);
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(100)),
        vec![Action::Spawn {
            generation: 2,
            slot: 0
        }]
    );
    let actions = sup.start_failed(2, 126, t0 + ms(100));
    assert_eq!(actions, vec![Action::Forget { generation: 2 }]);
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(300)),
        vec![Action::Spawn {
            generation: 3,
            slot: 0
        }]
    );
}

/// Generation 1 under `--ready notify` that never says READY=1 and is
/// being stopped for it at `t0 + 100ms`.
fn never_ready_and_stopping(restart: RestartPolicy, t0: Instant) -> Supervisor {
    let mut s = settings();
    s.ready = ReadyMode::Notify;
    s.ready_timeout = ms(100);
    s.restart = restart;
    let mut sup = Supervisor::new(s);
    sup.step(Event::Start, t0);
    sup.started_as(1, 100, t0);
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(100)),
        vec![Action::Stop {
            pid: pid(100),
            signal: TERM
        }]
    );
    assert_eq!(sup.situation(), Situation::Recovering);
    sup
}

#[test]
fn a_start_that_never_got_ready_is_restarted_even_if_the_child_exits_zero() {
    let t0 = Instant::now();
    let mut sup = never_ready_and_stopping(RestartPolicy::OnFailure, t0);
    // The server exits 0 on the SIGTERM sockhold sent: still a failed start.
    let actions = sup.reaped(100, ChildStatus::Exited(0), t0 + ms(110));
    assert_eq!(actions, vec![Action::Forget { generation: 1 }]);
    assert_eq!(sup.situation(), Situation::WaitingToRestart);
    assert_eq!(sup.next_deadline(), Some(t0 + ms(210)), "with the backoff");
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(210)),
        vec![Action::Spawn {
            generation: 2,
            slot: 0
        }]
    );
    assert_eq!(sup.restarts, 1);
}

#[test]
fn a_start_that_never_got_ready_never_exits_zero_under_restart_never() {
    let t0 = Instant::now();
    let mut sup = never_ready_and_stopping(RestartPolicy::Never, t0);
    let actions = sup.reaped(100, ChildStatus::Exited(0), t0 + ms(110));
    assert_eq!(
        actions,
        vec![
            Action::Forget { generation: 1 },
            Action::Exit {
                status: exit::GENERAL_FAILURE
            }
        ]
    );
    let mut sup = never_ready_and_stopping(RestartPolicy::Never, t0);
    let actions = sup.reaped(100, ChildStatus::Signaled(TERM), t0 + ms(110));
    assert_eq!(actions.last(), Some(&Action::Exit { status: 128 + 15 }));
}

#[test]
fn reload_while_an_unready_first_generation_stops_starts_exactly_one_generation() {
    let t0 = Instant::now();
    let mut sup = never_ready_and_stopping(RestartPolicy::OnFailure, t0);
    assert_eq!(
        sup.step(Event::Reload, t0 + ms(105)),
        vec![Action::Spawn {
            generation: 2,
            slot: 0
        }]
    );
    sup.started_as(2, 200, t0 + ms(105));
    assert_eq!(sup.situation(), Situation::Launching);
    // Generation 1's end no longer starts a restart beside generation 2.
    assert_eq!(
        sup.reaped(100, ChildStatus::Signaled(TERM), t0 + ms(110)),
        vec![Action::Forget { generation: 1 }]
    );
    assert_eq!(sup.situation(), Situation::Launching);
    assert_eq!(
        sup.next_deadline(),
        Some(t0 + ms(205)),
        "only gen 2's timeout"
    );
    assert!(sup.step(Event::Tick, t0 + ms(204)).is_empty());
    assert_eq!(sup.restarts, 0);
}

#[test]
fn a_second_stop_request_from_the_control_socket_waits() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    let stop = Event::Stop {
        signal: TERM,
        by: StopBy::Control,
    };
    sup.step(stop.clone(), t0);
    assert_eq!(sup.situation(), Situation::ShuttingDown { asked: true });
    assert!(sup.step(stop, t0 + ms(10)).is_empty(), "no SIGKILL");
    assert_eq!(
        sup.reaped(100, ChildStatus::Exited(0), t0 + ms(20)),
        vec![Action::Forget { generation: 1 }, Action::Exit { status: 0 }]
    );
}

#[test]
fn situations_follow_the_generations() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(settings());
    sup.step(Event::Start, t0);
    assert_eq!(sup.situation(), Situation::Launching);
    sup.started_as(1, 100, t0);
    sup.step(
        Event::Ready {
            generation: 1,
            slot: None,
        },
        t0,
    );
    assert_eq!(sup.situation(), Situation::Serving);
    sup.step(Event::Reload, t0);
    assert_eq!(sup.situation(), Situation::Reloading);
    sup.started_as(2, 200, t0);
    sup.step(
        Event::Ready {
            generation: 2,
            slot: None,
        },
        t0,
    );
    assert_eq!(sup.situation(), Situation::Serving);
    sup.reaped(200, ChildStatus::Exited(1), t0 + ms(1));
    assert_eq!(sup.situation(), Situation::WaitingToRestart);
    assert_eq!(sup.phase().to_string(), "waiting to restart");
}

#[test]
fn first_generation_never_ready_is_stopped_and_restarted() {
    let t0 = Instant::now();
    let mut s = settings();
    s.ready = ReadyMode::Notify;
    s.ready_timeout = ms(100);
    let mut sup = Supervisor::new(s);
    sup.step(Event::Start, t0);
    sup.started_as(1, 100, t0);
    sup.step(Event::Tick, t0 + ms(100));
    sup.reaped(100, ChildStatus::Signaled(TERM), t0 + ms(110));
    assert_eq!(sup.next_deadline(), Some(t0 + ms(210)));
}

#[test]
fn orphans_are_reaped_quietly() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    assert!(sup.reaped(999, ChildStatus::Exited(0), t0).is_empty());
    assert_eq!(sup.main_pid(), Some(pid(100)));
}

#[test]
fn reports_tell_outsiders_about_readiness_reloads_and_stopping() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(settings());
    assert!(sup.reports(Event::Start, t0).is_empty());
    sup.started_as(1, 100, t0);
    assert_eq!(
        sup.reports(
            Event::Ready {
                generation: 1,
                slot: None
            },
            t0
        ),
        vec![Report::Ready {
            generation: 1,
            pid: pid(100)
        }]
    );
    assert_eq!(
        sup.reports(Event::Reload, t0),
        vec![Report::ReloadStarted { generation: 2 }]
    );
    sup.started_as(2, 200, t0);
    assert_eq!(
        sup.reports(
            Event::Ready {
                generation: 2,
                slot: None
            },
            t0
        ),
        vec![Report::ReloadSucceeded {
            generation: 2,
            pid: pid(200)
        }]
    );
    sup.reports(Event::Reload, t0);
    sup.started_as(3, 300, t0);
    assert_eq!(
        sup.reports(
            Event::Exited {
                pid: pid(300),
                status: ChildStatus::Exited(1)
            },
            t0
        ),
        vec![Report::ReloadFailed {
            generation: 3,
            reason: "generation 3 exited with status 1 before ready".into()
        }]
    );
    assert_eq!(
        sup.reports(
            Event::Stop {
                signal: TERM,
                by: StopBy::Signal
            },
            t0
        ),
        vec![Report::Stopping]
    );
    assert_eq!(
        sup.reports(Event::Reload, t0),
        vec![Report::ReloadRefused {
            reason: "sockhold is stopping".into()
        }]
    );
}

#[test]
fn generations_view_shows_ids_pids_states_and_causes() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0 + ms(10));
    sup.step(Event::Reload, t0 + ms(20));
    let view = sup.generations();
    assert_eq!(view.len(), 2);
    assert_eq!(
        (view[0].id, view[0].pid, view[0].state.name(), view[0].cause),
        (1, Some(pid(100)), "current", Cause::Launch)
    );
    assert_eq!(
        (view[1].id, view[1].pid, view[1].state.name(), view[1].cause),
        (2, None, "starting", Cause::Reload)
    );
    assert_eq!(view[1].started_at, t0 + ms(10));
    assert!(sup.reload_queued());
    assert_eq!(sup.phase().to_string(), "running");
    sup.step(term(), t0 + ms(30));
    assert_eq!(sup.phase().to_string(), "stopping");
    assert!(
        sup.generations()
            .iter()
            .all(|g| g.state == GenerationState::Stopping)
    );
}

#[test]
fn reload_timeout_is_reported_as_a_failed_reload() {
    let t0 = Instant::now();
    let mut s = settings();
    s.ready = ReadyMode::Notify;
    s.ready_timeout = ms(100);
    let mut sup = serving(s, t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    assert_eq!(
        sup.reports(Event::Tick, t0 + ms(100)),
        vec![Report::ReloadFailed {
            generation: 2,
            reason: "generation 2 not ready after 100ms".into()
        }]
    );
}
fn lazy() -> SupervisorSettings {
    SupervisorSettings {
        lazy: true,
        ..settings()
    }
}

#[test]
fn lazy_start_watches_the_listeners_and_starts_on_the_first_connection() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(lazy());
    assert_eq!(sup.step(Event::Start, t0), vec![Action::WatchListeners]);
    assert_eq!(sup.next_deadline(), None, "no timer while waiting");
    assert_eq!(sup.main_pid(), None);
    assert_eq!(
        sup.step(Event::ConnectionWaiting, t0),
        vec![
            Action::UnwatchListeners,
            Action::Spawn {
                generation: 1,
                slot: 0
            }
        ]
    );
    assert!(
        sup.step(Event::ConnectionWaiting, t0).is_empty(),
        "one start for many connections"
    );
}

/// A lazy supervisor whose generation 1 runs as pid 100 and is current.
fn lazy_serving(settings: SupervisorSettings, t0: Instant) -> Supervisor {
    let mut sup = Supervisor::new(settings);
    sup.step(Event::Start, t0);
    sup.step(Event::ConnectionWaiting, t0);
    sup.started_as(1, 100, t0);
    sup.step(
        Event::Ready {
            generation: 1,
            slot: None,
        },
        t0,
    );
    sup
}

#[test]
fn lazy_child_that_exits_goes_back_to_waiting_without_backoff() {
    let t0 = Instant::now();
    let mut sup = lazy_serving(lazy(), t0);
    let actions = sup.reaped(100, ChildStatus::Exited(0), t0 + ms(50));
    assert_eq!(
        actions,
        vec![Action::Forget { generation: 1 }, Action::WatchListeners]
    );
    assert_eq!(sup.next_deadline(), None);
    assert_eq!(
        sup.step(Event::ConnectionWaiting, t0 + ms(60)),
        vec![
            Action::UnwatchListeners,
            Action::Spawn {
                generation: 2,
                slot: 0
            }
        ]
    );
    sup.started_as(2, 200, t0 + ms(60));
    sup.step(
        Event::Ready {
            generation: 2,
            slot: None,
        },
        t0 + ms(70),
    );
    // Even a failure, after a healthy run, is no reason to wait.
    let later = t0 + Duration::from_secs(60);
    let actions = sup.reaped(200, ChildStatus::Exited(1), later);
    assert_eq!(
        actions,
        vec![Action::Forget { generation: 2 }, Action::WatchListeners]
    );
    assert_eq!(sup.restarts, 0, "waiting again is not a restart");
}

#[test]
fn lazy_child_that_fails_quickly_is_watched_for_again_after_the_backoff() {
    let t0 = Instant::now();
    let mut sup = lazy_serving(lazy(), t0);
    let actions = sup.reaped(100, ChildStatus::Exited(1), t0);
    assert_eq!(actions, vec![Action::Forget { generation: 1 }]);
    assert_eq!(sup.next_deadline(), Some(t0 + ms(100)));
    assert!(
        sup.step(Event::ConnectionWaiting, t0 + ms(10)).is_empty(),
        "not watching during the backoff"
    );
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(100)),
        vec![Action::WatchListeners]
    );
    assert_eq!(sup.next_deadline(), None);
    // A second quick failure doubles the wait.
    sup.step(Event::ConnectionWaiting, t0 + ms(100));
    sup.started_as(2, 200, t0 + ms(100));
    sup.reaped(200, ChildStatus::Exited(1), t0 + ms(110));
    assert_eq!(sup.next_deadline(), Some(t0 + ms(310)));
    // A reload skips the wait.
    assert_eq!(
        sup.step(Event::Reload, t0 + ms(120)),
        vec![Action::WatchListeners]
    );
}

#[test]
fn lazy_reload_with_nothing_running_has_nothing_to_do_and_stop_exits_zero() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(lazy());
    sup.step(Event::Start, t0);
    assert!(sup.step(Event::Reload, t0).is_empty());
    assert!(matches!(
        sup.reports(Event::Reload, t0)[..],
        [Report::NothingToReload { .. }]
    ));
    assert_eq!(
        sup.step(
            Event::Stop {
                signal: TERM,
                by: StopBy::Signal
            },
            t0
        ),
        vec![Action::UnwatchListeners, Action::Exit { status: 0 }]
    );
}

#[test]
fn lazy_with_restart_never_exits_with_the_child() {
    let t0 = Instant::now();
    let mut s = lazy();
    s.restart = RestartPolicy::Never;
    let mut sup = lazy_serving(s, t0);
    let actions = sup.reaped(100, ChildStatus::Exited(0), t0);
    assert_eq!(actions.last(), Some(&Action::Exit { status: 0 }));
}

/// `--ready auto` (the default) or `accepting`.
fn observing(ready: ReadyMode) -> SupervisorSettings {
    SupervisorSettings {
        ready,
        ..SupervisorSettings::default()
    }
}

fn accepting_on_fd_3(pid_number: i32) -> Observation {
    Observation::Accepting {
        pid: pid(pid_number),
        fd: 3,
        doing: "waits in accept",
    }
}

/// Generation 1 spawned as pid 100 at `t0` under `settings`.
fn starting(settings: SupervisorSettings, t0: Instant) -> Supervisor {
    let mut sup = Supervisor::new(settings);
    sup.step(Event::Start, t0);
    sup.started_as(1, 100, t0);
    sup
}

fn observed(sup: &mut Supervisor, observation: Observation, now: Instant) -> Vec<Report> {
    sup.reports(
        Event::Observed {
            generation: 1,
            slot: 0,
            observation,
        },
        now,
    )
}

#[test]
fn auto_looks_every_10ms_while_starting_and_is_ready_once_seen_accepting() {
    let t0 = Instant::now();
    let mut sup = starting(SupervisorSettings::default(), t0);
    assert_eq!(
        sup.next_deadline(),
        Some(t0),
        "the first look comes at once"
    );
    assert_eq!(
        sup.step(Event::Tick, t0),
        vec![Action::Observe {
            generation: 1,
            slot: 0
        }]
    );
    assert_eq!(sup.next_deadline(), Some(t0 + ms(10)));
    assert!(
        sup.step(Event::Tick, t0 + ms(5)).is_empty(),
        "not before 10ms"
    );
    assert!(observed(&mut sup, Observation::NotYet, t0 + ms(5)).is_empty());
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(10)),
        vec![Action::Observe {
            generation: 1,
            slot: 0
        }]
    );
    assert_eq!(
        observed(&mut sup, accepting_on_fd_3(101), t0 + ms(2980)),
        vec![Report::Ready {
            generation: 1,
            pid: pid(100)
        }]
    );
    let view = sup.generations();
    assert_eq!(
        view[0].ready_by.as_deref(),
        Some("accepting on fd 3 (pid 101) after 2.98s")
    );
    assert_eq!(
        sup.next_deadline(),
        None,
        "nothing is looked at while serving"
    );
}

#[test]
fn auto_does_not_trust_an_early_ready_1_while_it_can_look() {
    let t0 = Instant::now();
    let mut sup = starting(SupervisorSettings::default(), t0);
    sup.step(Event::Tick, t0);
    // gunicorn's arbiter says READY=1 before its workers can serve.
    assert!(
        sup.reports(
            Event::Ready {
                generation: 1,
                slot: None
            },
            t0 + ms(70)
        )
        .is_empty()
    );
    assert!(observed(&mut sup, Observation::NotYet, t0 + ms(80)).is_empty());
    assert_eq!(
        observed(&mut sup, accepting_on_fd_3(102), t0 + ms(3000)),
        vec![Report::Ready {
            generation: 1,
            pid: pid(100)
        }]
    );
}

#[test]
fn auto_trusts_ready_1_alone_after_the_grace_when_never_seen_accepting() {
    let t0 = Instant::now();
    let mut sup = starting(SupervisorSettings::default(), t0);
    sup.step(
        Event::Ready {
            generation: 1,
            slot: None,
        },
        t0 + ms(70),
    );
    let due = t0 + ms(70) + NOTIFY_GRACE;
    assert!(sup.next_deadline().is_some_and(|at| at <= due));
    let actions = sup.handle(Event::Tick, due);
    assert!(actions.contains(&Action::Report(Report::Ready {
        generation: 1,
        pid: pid(100)
    })));
    let ready_by = sup.generations()[0].ready_by.clone().unwrap();
    assert!(
        ready_by.starts_with("READY=1 after 70ms; not seen accepting within 5s"),
        "{ready_by}"
    );
}

#[test]
fn auto_that_cannot_look_falls_back_to_ready_1_or_the_1s_delay() {
    let t0 = Instant::now();
    let why = || Observation::Unobservable {
        why: "cannot observe pid 100: permission denied".into(),
    };
    // No READY=1: still running after 1s.
    let mut sup = starting(SupervisorSettings::default(), t0);
    sup.step(Event::Tick, t0);
    assert!(observed(&mut sup, why(), t0 + ms(1)).is_empty());
    assert_eq!(
        sup.next_deadline(),
        Some(t0 + AUTO_DELAY),
        "and no more looks"
    );
    let actions = sup.handle(Event::Tick, t0 + AUTO_DELAY);
    assert!(actions.contains(&Action::Report(Report::Ready {
        generation: 1,
        pid: pid(100)
    })));
    assert_eq!(
        sup.generations()[0].ready_by.as_deref(),
        Some("still running after 1s (cannot observe pid 100: permission denied)")
    );
    // A READY=1 is trusted at once where nothing can be seen.
    let mut sup = starting(SupervisorSettings::default(), t0);
    observed(&mut sup, why(), t0 + ms(1));
    assert_eq!(
        sup.reports(
            Event::Ready {
                generation: 1,
                slot: None
            },
            t0 + ms(200)
        ),
        vec![Report::Ready {
            generation: 1,
            pid: pid(100)
        }]
    );
}

#[test]
fn accepting_ignores_ready_1_and_reloads_only_once_seen_accepting() {
    let t0 = Instant::now();
    let mut sup = starting(observing(ReadyMode::Accepting), t0);
    sup.step(Event::Tick, t0);
    observed(&mut sup, accepting_on_fd_3(100), t0 + ms(20));
    assert_eq!(
        sup.step(Event::Reload, t0 + ms(30)),
        vec![Action::Spawn {
            generation: 2,
            slot: 0
        }]
    );
    sup.started_as(2, 200, t0 + ms(30));
    assert!(
        sup.step(
            Event::Ready {
                generation: 2,
                slot: None
            },
            t0 + ms(40)
        )
        .is_empty()
    );
    assert!(
        !sup.step(Event::Tick, t0 + ms(30) + NOTIFY_GRACE)
            .iter()
            .any(|a| matches!(a, Action::Stop { .. })),
        "READY=1 never makes it ready"
    );
    let actions = sup.step(
        Event::Observed {
            generation: 2,
            slot: 0,
            observation: accepting_on_fd_3(200),
        },
        t0 + ms(30) + NOTIFY_GRACE,
    );
    assert_eq!(
        actions,
        vec![Action::Stop {
            pid: pid(100),
            signal: TERM
        }]
    );
}

#[test]
fn auto_never_takes_a_generation_that_holds_none_of_the_sockets_for_ready_by_delay() {
    let t0 = Instant::now();
    let mut sup = starting(SupervisorSettings::default(), t0);
    sup.step(Event::Tick, t0);
    observed(&mut sup, accepting_on_fd_3(100), t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    sup.step(Event::Tick, t0);
    let none = Event::Observed {
        generation: 2,
        slot: 0,
        observation: Observation::HoldsNone,
    };
    assert!(sup.step(none, t0 + ms(5)).is_empty());
    assert_eq!(
        sup.next_deadline(),
        Some(t0 + Duration::from_secs(60)),
        "only the ready timeout is left"
    );
    assert!(
        !sup.step(Event::Tick, t0 + Duration::from_secs(2))
            .iter()
            .any(|a| matches!(a, Action::Stop { .. })),
        "generation 1 keeps serving"
    );
}

#[test]
fn a_busy_look_brings_the_next_one_to_2ms_and_a_quiet_one_keeps_10ms() {
    let t0 = Instant::now();
    let mut sup = starting(SupervisorSettings::default(), t0);
    assert_eq!(
        sup.step(Event::Tick, t0),
        vec![Action::Observe {
            generation: 1,
            slot: 0
        }]
    );
    assert!(observed(&mut sup, Observation::Busy, t0).is_empty());
    assert_eq!(sup.next_deadline(), Some(t0 + ms(2)));
    assert_eq!(
        sup.step(Event::Tick, t0 + ms(2)),
        vec![Action::Observe {
            generation: 1,
            slot: 0
        }]
    );
    assert!(observed(&mut sup, Observation::NotYet, t0 + ms(2)).is_empty());
    assert_eq!(sup.next_deadline(), Some(t0 + ms(12)));
    // Busy never puts off a look already due sooner, nor makes one
    // where none is due (a generation no longer looked at).
    let mut ready = starting(SupervisorSettings::default(), t0);
    ready.step(Event::Tick, t0);
    observed(&mut ready, accepting_on_fd_3(100), t0);
    assert!(observed(&mut ready, Observation::Busy, t0 + ms(1)).is_empty());
    assert_eq!(ready.next_deadline(), None);
}

#[test]
fn pause_stops_the_generation_and_nothing_restarts_until_resume() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    assert_eq!(
        sup.handle(Event::Pause, t0),
        vec![
            Action::Stop {
                pid: pid(100),
                signal: TERM
            },
            Action::Report(Report::Paused {
                what: "generation 1 stopping".into()
            })
        ]
    );
    assert_eq!(sup.phase().to_string(), "paused");
    // Its exit restarts nothing, whatever its status.
    assert_eq!(
        sup.reaped(100, ChildStatus::Exited(1), t0 + ms(100)),
        vec![Action::Forget { generation: 1 }]
    );
    assert_eq!(sup.next_deadline(), None, "no restart is due");
    assert!(sup.step(Event::Tick, t0 + ms(60_000)).is_empty());
    // A second pause says so; a reload is refused and says what to do.
    assert_eq!(
        sup.reports(Event::Pause, t0 + ms(3000)),
        vec![Report::Paused {
            what: "already paused for 3s".into()
        }]
    );
    assert_eq!(
        sup.reports(Event::Reload, t0 + ms(3000)),
        vec![Report::ReloadRefused {
            reason: "sockhold is paused: resume it (sockhold resume --control PATH)".into()
        }]
    );
    // Resume starts a new generation, awaited as a reload is.
    assert_eq!(
        sup.handle(Event::Resume, t0 + ms(4000)),
        vec![
            Action::Spawn {
                generation: 2,
                slot: 0
            },
            Action::Report(Report::ReloadStarted { generation: 2 })
        ]
    );
    sup.started_as(2, 200, t0 + ms(4000));
    assert_eq!(
        sup.reports(
            Event::Ready {
                generation: 2,
                slot: None
            },
            t0 + ms(4100)
        ),
        vec![Report::ReloadSucceeded {
            generation: 2,
            pid: pid(200)
        }]
    );
    assert_eq!(sup.phase().to_string(), "running");
    assert_eq!(sup.generations()[0].cause, Cause::Resume);
}

#[test]
fn pause_during_a_reload_fails_the_reload_and_stops_both() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0);
    sup.started_as(2, 200, t0);
    let actions = sup.handle(Event::Pause, t0 + ms(10));
    assert!(actions.contains(&Action::Report(Report::ReloadFailed {
        generation: 2,
        reason: "paused before generation 2 was ready".into()
    })));
    for old_or_new in [100, 200] {
        assert!(actions.contains(&Action::Stop {
            pid: pid(old_or_new),
            signal: TERM
        }));
    }
    assert!(actions.contains(&Action::Report(Report::Paused {
        what: "generations 1, 2 stopping".into()
    })));
    sup.reaped(100, ChildStatus::Signaled(TERM), t0 + ms(20));
    sup.reaped(200, ChildStatus::Signaled(TERM), t0 + ms(20));
    assert_eq!(sup.next_deadline(), None);
}

#[test]
fn resume_when_not_paused_is_refused_and_stop_while_paused_exits() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    assert_eq!(
        sup.reports(Event::Resume, t0),
        vec![Report::ReloadRefused {
            reason: "not paused (resume follows a pause; reload starts a new generation)".into()
        }]
    );
    sup.step(Event::Pause, t0);
    sup.reaped(100, ChildStatus::Signaled(TERM), t0 + ms(5));
    assert_eq!(
        sup.step(
            Event::Stop {
                signal: TERM,
                by: StopBy::Control
            },
            t0 + ms(10)
        ),
        vec![Action::Exit { status: 0 }]
    );
}

#[test]
fn a_crash_loop_paused_waits_no_more_to_restart() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.reaped(100, ChildStatus::Exited(1), t0 + ms(10));
    assert!(sup.next_deadline().is_some(), "a restart is due");
    assert_eq!(
        sup.reports(Event::Pause, t0 + ms(20)),
        vec![Report::Paused {
            what: "no generation was running".into()
        }]
    );
    assert_eq!(sup.next_deadline(), None);
    assert!(sup.step(Event::Tick, t0 + ms(60_000)).is_empty());
}

fn with_maintenance(after: Duration) -> SupervisorSettings {
    SupervisorSettings {
        maintenance_after: Some(after),
        ..settings()
    }
}

fn answering(why: &str) -> Action {
    Action::StartMaintenance { why: why.into() }
}

#[test]
fn maintenance_answers_once_a_paused_generation_has_exited_and_stops_before_resume_spawns() {
    let t0 = Instant::now();
    let mut sup = serving(with_maintenance(ms(10_000)), t0);
    // The stopping child may still accept: not yet.
    let actions = sup.step(Event::Pause, t0);
    assert!(!actions.contains(&answering("paused")), "{actions:?}");
    assert_eq!(
        sup.reaped(100, ChildStatus::Signaled(TERM), t0 + ms(50)),
        vec![Action::Forget { generation: 1 }, answering("paused")]
    );
    assert!(sup.maintenance);
    assert!(sup.step(Event::Tick, t0 + ms(60_000)).is_empty());
    // Answering stops first: the new child must find the queue its own.
    assert_eq!(
        sup.step(Event::Resume, t0 + ms(60_000)),
        vec![
            Action::StopMaintenance,
            Action::Spawn {
                generation: 2,
                slot: 0
            }
        ]
    );
    sup.started_as(2, 200, t0 + ms(60_000));
    sup.step(
        Event::Ready {
            generation: 2,
            slot: None,
        },
        t0 + ms(60_100),
    );
    assert!(!sup.maintenance);
}

#[test]
fn maintenance_answers_in_a_crash_loop_backoff_once_nobody_was_ready_for_the_delay() {
    let t0 = Instant::now();
    let mut s = with_maintenance(ms(1000));
    s.restart_max_delay = ms(800);
    let mut sup = Supervisor::new(s);
    assert_eq!(
        sup.step(Event::Start, t0),
        vec![Action::Spawn {
            generation: 1,
            slot: 0
        }]
    );
    // Exits at once, again and again: backoffs 100, 200, 400, 800 ms.
    let mut now = t0;
    let mut generation = 1;
    let mut started = Vec::new();
    let mut ticked_on = false;
    for delay in [100, 200, 400, 800, 800] {
        sup.started_as(generation, 100 + generation as i32, now);
        let actions = sup.reaped(100 + generation as i32, ChildStatus::Exited(1), now);
        started.push(
            actions
                .iter()
                .any(|a| matches!(a, Action::StartMaintenance { .. })),
        );
        let restart_at = now + ms(delay);
        if now < t0 + ms(1000) && restart_at > t0 + ms(1000) {
            // Answering begins 1 s after the first start, within the backoff.
            assert_eq!(sup.next_deadline(), Some(t0 + ms(1000)));
            assert_eq!(
                sup.step(Event::Tick, t0 + ms(1000)),
                vec![answering("no generation has been ready for 1s")]
            );
            ticked_on = true;
        }
        now = restart_at;
        let actions = sup.step(Event::Tick, now);
        generation += 1;
        if sup.maintenance {
            panic!("answering must stop before the restart: {actions:?}");
        }
        if actions.first() == Some(&Action::StopMaintenance) {
            assert_eq!(
                actions[1],
                Action::Spawn {
                    generation,
                    slot: 0
                }
            );
        } else {
            assert_eq!(
                actions,
                vec![Action::Spawn {
                    generation,
                    slot: 0
                }]
            );
        }
    }
    // 0-0.1 s, 0.1-0.3 s, 0.3-0.7 s: too early; 0.7-1.5 s from 1 s on
    // (the tick); from the crash at 1.5 s on at once.
    assert!(ticked_on);
    assert_eq!(started, vec![false, false, false, false, true]);
    // Fixed: ready, and a later crash waits the delay again.
    sup.started_as(generation, 900, now);
    sup.step(
        Event::Ready {
            generation,
            slot: None,
        },
        now,
    );
    let actions = sup.reaped(900, ChildStatus::Exited(1), now + ms(20_000));
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::StartMaintenance { .. })),
        "{actions:?}"
    );
    assert_eq!(sup.next_deadline(), Some(now + ms(20_100)), "the restart");
}

#[test]
fn maintenance_is_off_without_the_option_while_lazy_idle_and_when_stopping() {
    let t0 = Instant::now();
    // Without --maintenance, never.
    let mut sup = serving(settings(), t0);
    sup.step(Event::Pause, t0);
    let actions = sup.reaped(100, ChildStatus::Signaled(TERM), t0);
    assert_eq!(actions, vec![Action::Forget { generation: 1 }]);

    // --lazy waiting for a connection: the connection starts the server.
    let mut s = with_maintenance(ms(0));
    s.lazy = true;
    let mut sup = Supervisor::new(s);
    assert_eq!(sup.step(Event::Start, t0), vec![Action::WatchListeners]);
    assert!(!sup.maintenance);
    // Paused, it answers; a stop ends answering before the exit.
    let actions = sup.step(Event::Pause, t0);
    assert_eq!(actions, vec![Action::UnwatchListeners, answering("paused")]);
    let actions = sup.step(term(), t0);
    assert_eq!(
        actions,
        vec![Action::StopMaintenance, Action::Exit { status: 0 }]
    );
}

mod upgrade;
mod workers;
