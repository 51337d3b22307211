//! `upgrade`: a supervisor carried through the state text and restored
//! goes on exactly as the original would. Each test brings a supervisor
//! into a state with something in flight, carries it, then feeds the
//! original and the restored one the same events and compares every
//! action, every deadline and, at the end, the whole state.
use super::*;
use crate::upgrade::state::{self, Clock};

/// The old binary's clock; the new one reads both clocks later, as it
/// does after the exec (both are CLOCK_MONOTONIC: they agree).
fn clocks(t0: Instant) -> (Clock, Clock) {
    let old = Clock {
        instant: t0,
        monotonic_ns: 1_000_000_000_000,
    };
    let new = Clock {
        instant: t0 + ms(40),
        monotonic_ns: 1_000_040_000_000,
    };
    (old, new)
}

/// What the new binary makes of `sup`: snapshot, written, read, restored.
fn carried(sup: &Supervisor, settings: SupervisorSettings, t0: Instant) -> Supervisor {
    let (old, new) = clocks(t0);
    let snapshot = sup.snapshot(old).expect("carried");
    let text = state::write(&state::State {
        supervisor: snapshot,
        ..state::State::default()
    });
    let read = state::read(&text).expect("read back").supervisor;
    Supervisor::restore(settings, &read, new).expect("restored")
}

/// Feeds both the same events; they must do the same, and end the same.
fn same_from_here(
    original: &mut Supervisor,
    restored: &mut Supervisor,
    events: &[(Event, Instant)],
) {
    let t0 = events.first().map_or_else(Instant::now, |(_, at)| *at);
    let (clock, _) = clocks(t0);
    assert_eq!(restored.snapshot(clock), original.snapshot(clock));
    assert_eq!(restored.next_deadline(), original.next_deadline());
    assert_eq!(restored.situation(), original.situation());
    assert_eq!(restored.workers(), original.workers());
    for (event, at) in events {
        let expected = original.handle(event.clone(), *at);
        assert_eq!(restored.handle(event.clone(), *at), expected, "{event:?}");
        assert_eq!(
            restored.next_deadline(),
            original.next_deadline(),
            "{event:?}"
        );
        assert_eq!(restored.phase(), original.phase(), "{event:?}");
    }
    assert_eq!(restored.snapshot(clock), original.snapshot(clock));
    assert_eq!(restored.generations(), original.generations());
}

fn spawned(generation: GenerationId, slot: Slot, pid_number: i32) -> Event {
    Event::Spawned {
        generation,
        slot,
        pid: pid(pid_number),
    }
}

fn exited(pid_number: i32, status: ChildStatus) -> Event {
    Event::Exited {
        pid: pid(pid_number),
        status,
    }
}

fn three_workers() -> SupervisorSettings {
    SupervisorSettings {
        workers: 3,
        ..settings()
    }
}

#[test]
fn a_rolling_reload_in_flight_goes_on_after_the_upgrade() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(three_workers());
    sup.step(Event::Start, t0);
    for slot in 0..3 {
        sup.step(spawned(1, slot, 100 + slot as i32), t0);
    }
    sup.step(Event::Tick, t0 + ms(1000));
    assert_eq!(sup.situation(), Situation::Serving);
    let t1 = t0 + ms(2000);
    sup.step(Event::Reload, t1);
    sup.step(spawned(2, 0, 200), t1);
    // Worker 0 ready: it takes over slot 0 (pid 100 leaves), worker 1
    // starts; worker 2 waits its turn.
    let actions = sup.step(Event::Tick, t1 + ms(1000));
    assert!(actions.contains(&Action::Stop {
        pid: pid(100),
        signal: TERM
    }));
    sup.step(spawned(2, 1, 201), t1 + ms(1000));
    // A reload and a scale wait for this one.
    sup.step(Event::Reload, t1 + ms(1100));
    assert!(sup.reload_queued());
    sup.step(Event::Scale { count: 3 }, t1 + ms(1100));
    let mut restored = carried(&sup, three_workers(), t0);
    let t2 = t1 + ms(2000);
    same_from_here(
        &mut sup,
        &mut restored,
        &[
            (Event::Tick, t2),
            (spawned(2, 2, 202), t2),
            (exited(100, ChildStatus::Signaled(TERM)), t2 + ms(10)),
            (Event::Tick, t2 + ms(1000)),
            (spawned(3, 0, 300), t2 + ms(1000)),
            (exited(101, ChildStatus::Exited(0)), t2 + ms(1100)),
            (Event::Tick, t2 + ms(11_000)),
            (
                exited(102, ChildStatus::Signaled(Signal::SIGKILL)),
                t2 + ms(11_010),
            ),
        ],
    );
}

#[test]
fn a_worker_waiting_for_its_backoff_is_restarted_at_the_same_time() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(three_workers());
    sup.step(Event::Start, t0);
    for slot in 0..3 {
        sup.step(spawned(1, slot, 100 + slot as i32), t0);
    }
    sup.step(Event::Tick, t0 + ms(1000));
    sup.step(exited(101, ChildStatus::Exited(1)), t0 + ms(1500));
    assert!(
        sup.workers()
            .iter()
            .any(|w| w.state == "waiting to restart")
    );
    let mut restored = carried(&sup, three_workers(), t0);
    let due = sup.next_deadline().expect("the slot's backoff");
    same_from_here(
        &mut sup,
        &mut restored,
        &[
            (Event::Tick, due - ms(1)),
            (Event::Tick, due),
            (spawned(1, 1, 111), due),
            (Event::Tick, due + ms(1000)),
        ],
    );
}

#[test]
fn a_restart_backoff_with_nobody_serving_ends_at_the_same_time() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.reaped(100, ChildStatus::Exited(1), t0 + ms(50));
    assert_eq!(sup.situation(), Situation::WaitingToRestart);
    let mut restored = carried(&sup, settings(), t0);
    let due = sup.next_deadline().expect("the backoff");
    same_from_here(
        &mut sup,
        &mut restored,
        &[
            (Event::Tick, due - ms(1)),
            (Event::Tick, due),
            (spawned(2, 0, 200), due),
            (exited(200, ChildStatus::Exited(1)), due + ms(10)),
            (Event::Tick, due + ms(5000)),
        ],
    );
}

#[test]
fn processes_still_stopping_are_killed_at_the_same_deadline() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Reload, t0 + ms(10));
    sup.started_as(2, 200, t0 + ms(10));
    let stop = sup.step(Event::Tick, t0 + ms(1010));
    assert_eq!(
        stop,
        vec![Action::Stop {
            pid: pid(100),
            signal: TERM
        }]
    );
    let mut restored = carried(&sup, settings(), t0);
    let kill = t0 + ms(1010) + Duration::from_secs(10);
    assert_eq!(restored.next_deadline(), Some(kill));
    same_from_here(
        &mut sup,
        &mut restored,
        &[
            (Event::Tick, kill - ms(1)),
            (Event::Tick, kill),
            (exited(100, ChildStatus::Signaled(Signal::SIGKILL)), kill),
        ],
    );
}

#[test]
fn a_first_generation_that_never_got_ready_still_applies_the_policy() {
    let t0 = Instant::now();
    let mut sup = never_ready_and_stopping(RestartPolicy::OnFailure, t0);
    let mut s = settings();
    s.ready = ReadyMode::Notify;
    s.ready_timeout = ms(100);
    let mut restored = carried(&sup, s, t0);
    same_from_here(
        &mut sup,
        &mut restored,
        &[
            (exited(100, ChildStatus::Exited(0)), t0 + ms(200)),
            (Event::Tick, t0 + ms(400)),
        ],
    );
}

#[test]
fn lazy_idle_and_lazy_backing_off_are_carried() {
    let t0 = Instant::now();
    let mut idle = Supervisor::new(lazy());
    idle.step(Event::Start, t0);
    let mut restored = carried(&idle, lazy(), t0);
    assert_eq!(restored.situation(), Situation::Idle);
    same_from_here(
        &mut idle,
        &mut restored,
        &[
            (Event::ConnectionWaiting, t0 + ms(5)),
            (spawned(1, 0, 100), t0 + ms(5)),
        ],
    );
    let mut backing_off = lazy_serving(lazy(), t0);
    backing_off.reaped(100, ChildStatus::Exited(1), t0 + ms(50));
    assert_eq!(backing_off.situation(), Situation::IdleBackingOff);
    let mut restored = carried(&backing_off, lazy(), t0);
    let due = backing_off.next_deadline().expect("the backoff");
    same_from_here(
        &mut backing_off,
        &mut restored,
        &[
            (Event::ConnectionWaiting, due - ms(1)),
            (Event::Tick, due),
            (Event::ConnectionWaiting, due + ms(1)),
        ],
    );
}

#[test]
fn a_worker_seen_and_notified_keeps_its_observation_deadlines() {
    let t0 = Instant::now();
    let mut sup = Supervisor::new(observing(ReadyMode::Auto));
    sup.step(Event::Start, t0);
    sup.started_as(1, 100, t0);
    let ready = Event::Ready {
        generation: 1,
        slot: None,
    };
    sup.step(ready, t0 + ms(5));
    sup.step(Event::Tick, t0 + ms(6));
    let mut restored = carried(&sup, observing(ReadyMode::Auto), t0);
    let next = sup.next_deadline().expect("a look or the grace");
    same_from_here(
        &mut sup,
        &mut restored,
        &[
            (Event::Tick, next),
            (
                Event::Observed {
                    generation: 1,
                    slot: 0,
                    observation: Observation::NotYet,
                },
                next,
            ),
            (Event::Tick, t0 + ms(5) + NOTIFY_GRACE),
        ],
    );
}

#[test]
fn a_paused_supervisor_resumes_the_same() {
    let t0 = Instant::now();
    let mut sup = serving(settings(), t0);
    sup.step(Event::Pause, t0 + ms(10));
    let mut restored = carried(&sup, settings(), t0);
    same_from_here(
        &mut sup,
        &mut restored,
        &[
            (exited(100, ChildStatus::Exited(0)), t0 + ms(20)),
            (Event::Resume, t0 + ms(30)),
            (spawned(2, 0, 200), t0 + ms(30)),
        ],
    );
}

#[test]
fn only_a_stopping_sockhold_is_not_carried() {
    let t0 = Instant::now();
    let (clock, _) = clocks(t0);
    let mut sup = serving(settings(), t0);
    sup.step(term(), t0);
    assert_eq!(sup.snapshot(clock), Err("sockhold is stopping".to_string()));
    // A spawn is over within its event; one caught between events is an
    // internal error, never carried.
    let mut spawning = Supervisor::new(settings());
    spawning.step(Event::Start, t0);
    let refused = spawning.snapshot(clock).unwrap_err();
    assert!(refused.contains("being spawned"), "{refused}");
}

#[test]
fn a_state_that_makes_no_sense_is_refused_with_what() {
    let t0 = Instant::now();
    let (clock, _) = clocks(t0);
    let sup = serving(settings(), t0);
    let mut snapshot = sup.snapshot(clock).unwrap();
    snapshot.generations[0].cause = b"whim".to_vec();
    let refused = Supervisor::restore(settings(), &snapshot, clock).err();
    assert_eq!(
        refused.as_deref(),
        Some("generation 1: unknown cause 'whim'")
    );
    let mut snapshot = sup.snapshot(clock).unwrap();
    snapshot.generations[0].first_failure = Some(state::Status::Signaled(99));
    let refused = Supervisor::restore(settings(), &snapshot, clock).err();
    assert_eq!(refused.as_deref(), Some("'99' is not a signal"));
}
