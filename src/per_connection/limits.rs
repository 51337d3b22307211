//! The bookkeeping of per-connection mode: running children, per-source
//! counts, the rate limit, and the stop sequence. Data in, actions out; no
//! system calls; unit-tested with a fake clock.
//!
//! Invariants:
//! - At most `max_connections` children run at once. At the limit the
//!   driver stops watching the listeners and the kernel queues new
//!   connections; nothing is refused for being one too many (s6-tcpserver,
//!   tcpserver).
//! - A flood cannot flood the log: repeated warnings are summarised.

use crate::child::ChildStatus;
use crate::config::{AcceptSettings, format_duration};
use crate::error::exit;
use crate::quiet_log::{LOG_INTERVAL, QuietLog};
use crate::signals::{self, StopBy};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// How long accepting pauses after the system ran out of something (fds,
/// memory, processes): long enough not to spin, short enough not to matter.
pub const RESOURCE_PAUSE: Duration = Duration::from_millis(100);

/// Where a connection comes from, as `--max-per-source` counts it: the IP
/// address (IPv4-mapped IPv6 as IPv4), or the peer's uid on a Unix socket,
/// as systemd's MaxConnectionsPerSource= does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Ip(IpAddr),
    Uid(u32),
    /// A Unix peer whose credentials could not be read.
    Unknown,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Ip(ip) => write!(f, "{ip}"),
            Source::Uid(uid) => write!(f, "uid {uid}"),
            Source::Unknown => f.write_str("an unknown peer"),
        }
    }
}

/// Whether sockhold may accept another connection now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Room {
    Open,
    /// `max_connections` children are running: wait for one to exit.
    Full,
    /// The rate limit, or a pause after running out of resources.
    WaitUntil(Instant),
    /// Stopping: never again.
    Closed,
}

/// What the driver must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Ask a child to stop: the stop signal, then SIGCONT (`child.rs`).
    Stop {
        pid: Pid,
        signal: Signal,
    },
    /// Any other signal: forwarded ones, SIGKILL.
    Signal {
        pid: Pid,
        signal: Signal,
    },
    Exit {
        status: i32,
    },
}

/// The limits, as the bookkeeping needs them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub max_connections: usize,
    pub max_per_source: Option<usize>,
    pub max_rate: Option<u32>,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
}

impl From<&AcceptSettings> for Limits {
    fn from(settings: &AcceptSettings) -> Limits {
        Limits {
            max_connections: settings.max_connections,
            max_per_source: settings.max_per_source,
            max_rate: settings.max_rate,
            stop_signal: settings.stop_signal,
            stop_timeout: settings.stop_timeout,
        }
    }
}

/// `--max-rate` as a GCRA (the "virtual scheduling" form of a token
/// bucket): starts are spaced by `interval` on average, with bursts of up
/// to one second's worth. One timestamp of state, no timer.
#[derive(Debug, Clone)]
struct RateLimit {
    interval: Duration,
    /// How far ahead of schedule a start may be: the burst allowance.
    tolerance: Duration,
    /// The theoretical time of the next start; None before the first.
    next: Option<Instant>,
}

impl RateLimit {
    fn new(per_second: u32) -> RateLimit {
        let interval = Duration::from_secs(1) / per_second.max(1);
        RateLimit {
            interval,
            tolerance: interval * (per_second.max(1) - 1),
            next: None,
        }
    }

    /// When the next start is allowed (None: now).
    fn allowed_at(&self) -> Option<Instant> {
        self.next.and_then(|next| next.checked_sub(self.tolerance))
    }

    fn take(&mut self, now: Instant) {
        let base = self.next.map_or(now, |next| next.max(now));
        self.next = Some(base + self.interval);
    }
}

/// What per-connection mode is doing, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Serving,
    /// The stop signal went to every child; SIGKILL at `kill_at` (None once
    /// it was sent).
    Stopping {
        kill_at: Option<Instant>,
        killed: bool,
    },
    Exited,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Phase::Serving => "running",
            Phase::Stopping { .. } => "stopping",
            Phase::Exited => "exited",
        })
    }
}

/// What an upgrade carries of the bookkeeping (`upgrade/`): everything
/// but the limits, which the new binary reads from the same arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Carried {
    /// Every running child and where its connection came from.
    pub running: Vec<(Pid, Source)>,
    /// `--max-rate`: the theoretical time of the next start.
    pub rate_next: Option<Instant>,
    pub paused_until: Option<Instant>,
    pub over_source_limit: (Option<Instant>, u64),
    pub at_limit: (Option<Instant>, u64),
    pub started_total: u64,
}

/// The bookkeeping of per-connection mode. No system calls.
#[derive(Debug)]
pub struct Connections {
    limits: Limits,
    /// Every running child and where its connection came from.
    running: HashMap<Pid, Source>,
    /// Running children per source; only kept with `--max-per-source`.
    per_source: HashMap<Source, usize>,
    rate: Option<RateLimit>,
    /// Accepting pauses until then after running out of resources.
    paused_until: Option<Instant>,
    phase: Phase,
    /// Connections closed for `--max-per-source`, for the log.
    over_source_limit: QuietLog,
    /// Times accepting stopped at `--max-connections`, for the log.
    at_limit: QuietLog,
    /// Children started over sockhold's life.
    pub started_total: u64,
}

impl Connections {
    pub fn new(limits: Limits) -> Connections {
        Connections {
            rate: limits.max_rate.map(RateLimit::new),
            limits,
            running: HashMap::new(),
            per_source: HashMap::new(),
            paused_until: None,
            phase: Phase::Serving,
            over_source_limit: QuietLog::default(),
            at_limit: QuietLog::default(),
            started_total: 0,
        }
    }

    /// What an upgrade carries, or why now is not the time: a stop in
    /// progress is not carried (its deadline and the client that asked
    /// for it would not be).
    pub fn carry(&self) -> Result<Carried, String> {
        if self.phase != Phase::Serving {
            return Err(format!(
                "sockhold is stopping ({} connection children left); it exits once they have",
                self.running.len()
            ));
        }
        let mut running: Vec<(Pid, Source)> = self
            .running
            .iter()
            .map(|(&pid, &source)| (pid, source))
            .collect();
        running.sort_by_key(|(pid, _)| pid.as_raw());
        Ok(Carried {
            running,
            rate_next: self.rate.as_ref().and_then(|rate| rate.next),
            paused_until: self.paused_until,
            over_source_limit: self.over_source_limit.carried(),
            at_limit: self.at_limit.carried(),
            started_total: self.started_total,
        })
    }

    /// The bookkeeping as the binary before an upgrade left it, under the
    /// same limits: the per-source counts are those of the running
    /// children.
    pub fn restore(limits: Limits, carried: Carried) -> Connections {
        let mut connections = Connections::new(limits);
        for (pid, source) in carried.running {
            connections.running.insert(pid, source);
            if connections.limits.max_per_source.is_some() {
                *connections.per_source.entry(source).or_insert(0) += 1;
            }
        }
        if let Some(rate) = &mut connections.rate {
            rate.next = carried.rate_next;
        }
        connections.paused_until = carried.paused_until;
        let (last, silenced) = carried.over_source_limit;
        connections.over_source_limit = QuietLog::restored(last, silenced);
        let (last, silenced) = carried.at_limit;
        connections.at_limit = QuietLog::restored(last, silenced);
        connections.started_total = carried.started_total;
        connections
    }

    #[cfg(test)]
    fn running(&self) -> usize {
        self.running.len()
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether another connection may be accepted now.
    pub fn room(&self, now: Instant) -> Room {
        if self.phase != Phase::Serving {
            return Room::Closed;
        }
        if self.running.len() >= self.limits.max_connections {
            return Room::Full;
        }
        let rate_at = self.rate.as_ref().and_then(RateLimit::allowed_at);
        let wait = [self.paused_until, rate_at]
            .into_iter()
            .flatten()
            .filter(|at| *at > now)
            .max();
        match wait {
            Some(at) => Room::WaitUntil(at),
            None => Room::Open,
        }
    }

    /// Notes (for the log) that accepting stopped at the connection limit.
    pub fn note_full(&mut self, now: Instant) {
        if self.at_limit.should_log(now) {
            log::info!(
                "{} connections running (--max-connections): new connections wait in the queue",
                self.running.len()
            );
        }
    }

    /// Whether a connection from `source` may start. Over `--max-per-source`
    /// it must be closed; that is logged here, quietly under a flood.
    pub fn admit(&mut self, source: Source, now: Instant) -> bool {
        let Some(max) = self.limits.max_per_source else {
            return true;
        };
        let from_source = self.per_source.get(&source).copied().unwrap_or(0);
        if from_source < max {
            return true;
        }
        if self.over_source_limit.should_log(now) {
            log::warn!(
                "connection from {source} closed: {from_source} already running from there (--max-per-source {max})"
            );
        }
        false
    }

    /// A child was started for a connection from `source`.
    pub fn started(&mut self, pid: Pid, source: Source, now: Instant) {
        self.running.insert(pid, source);
        if self.limits.max_per_source.is_some() {
            *self.per_source.entry(source).or_insert(0) += 1;
        }
        if let Some(rate) = &mut self.rate {
            rate.take(now);
        }
        self.started_total += 1;
    }

    /// The system is out of fds, memory or processes: stop accepting for a
    /// moment instead of spinning on a connection that cannot be served.
    pub fn pause(&mut self, now: Instant) {
        self.paused_until = Some(now + RESOURCE_PAUSE);
    }

    /// A child was reaped. Exits of processes that are not ours (orphans
    /// reparented to sockhold as a subreaper) change nothing.
    pub fn exited(&mut self, pid: Pid, status: ChildStatus) -> Vec<Action> {
        let Some(source) = self.running.remove(&pid) else {
            log::debug!("reaped pid {pid} ({status}), not a connection's child");
            return Vec::new();
        };
        log::debug!("connection child pid {pid} from {source} exited with {status}");
        if let Some(count) = self.per_source.get_mut(&source) {
            *count -= 1;
            if *count == 0 {
                self.per_source.remove(&source);
            }
        }
        self.exit_if_done()
    }

    /// SIGTERM/SIGINT: stop accepting and stop every child; a second
    /// request kills them at once.
    pub fn stop(&mut self, signal: Signal, by: StopBy, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        match (self.phase, by) {
            (Phase::Serving, _) => {
                let asked = match by {
                    StopBy::Signal => format!("{} received", signals::name(signal)),
                    StopBy::Control => "stop requested on the control socket".to_string(),
                };
                log::info!(
                    "{asked}: stopping; {} to {} running connection children",
                    signals::name(self.limits.stop_signal),
                    self.running.len()
                );
                self.phase = Phase::Stopping {
                    kill_at: Some(now + self.limits.stop_timeout),
                    killed: false,
                };
                let stop_signal = self.limits.stop_signal;
                actions.extend(self.running.keys().map(|&pid| Action::Stop {
                    pid,
                    signal: stop_signal,
                }));
            }
            // A second `stop` request is not the impatient second Ctrl-C:
            // the client just waits for the children to end.
            (Phase::Stopping { .. }, StopBy::Control) => {
                log::debug!("stop requested again: already stopping");
            }
            (Phase::Stopping { .. }, StopBy::Signal) => {
                log::warn!(
                    "{} again while stopping: SIGKILL to every child",
                    signals::name(signal)
                );
                self.phase = Phase::Stopping {
                    kill_at: None,
                    killed: true,
                };
                actions.extend(self.signal_all(Signal::SIGKILL));
            }
            (Phase::Exited, _) => {}
        }
        actions.extend(self.exit_if_done());
        actions
    }

    /// A signal from the `--forward-signals` list: to every running child.
    pub fn forward(&self, signal: Signal) -> Vec<Action> {
        if self.running.is_empty() {
            log::debug!("no connection child to pass {} to", signals::name(signal));
        }
        self.signal_all(signal)
    }

    /// Deadlines: SIGKILL after the stop timeout, log summaries.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        if let Phase::Stopping {
            kill_at: Some(at), ..
        } = self.phase
        {
            if at <= now {
                log::warn!(
                    "{} connection children did not stop within {}: SIGKILL",
                    self.running.len(),
                    format_duration(self.limits.stop_timeout)
                );
                self.phase = Phase::Stopping {
                    kill_at: None,
                    killed: true,
                };
                actions.extend(self.signal_all(Signal::SIGKILL));
            }
        }
        if let Some(count) = self.over_source_limit.take_summary(now) {
            log::warn!(
                "{count} more connections closed for --max-per-source in the last {}",
                format_duration(LOG_INTERVAL)
            );
        }
        if let Some(count) = self.at_limit.take_summary(now) {
            log::info!(
                "connection limit reached {count} more times in the last {}",
                format_duration(LOG_INTERVAL)
            );
        }
        if self.paused_until.is_some_and(|at| at <= now) {
            self.paused_until = None;
        }
        actions
    }

    /// The earliest time `tick` (or the accept loop) has work to do.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        let kill = match self.phase {
            Phase::Stopping { kill_at, .. } => kill_at,
            _ => None,
        };
        let resume = match self.room(now) {
            Room::WaitUntil(at) => Some(at),
            _ => None,
        };
        [
            kill,
            resume,
            self.over_source_limit.summary_due(),
            self.at_limit.summary_due(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    fn signal_all(&self, signal: Signal) -> Vec<Action> {
        self.running
            .keys()
            .map(|&pid| Action::Signal { pid, signal })
            .collect()
    }

    /// Stopping and nobody left: exit 0, or 128+9 when some child had to
    /// be killed (as a generation that ignores its stop signal would).
    fn exit_if_done(&mut self) -> Vec<Action> {
        match self.phase {
            Phase::Stopping { killed, .. } if self.running.is_empty() => {
                self.phase = Phase::Exited;
                let status = if killed {
                    exit::SIGNAL_BASE + Signal::SIGKILL as i32
                } else {
                    exit::OK
                };
                log::info!("every connection child has exited; exiting with status {status}");
                vec![Action::Exit { status }]
            }
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TERM: Signal = Signal::SIGTERM;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    fn ip(text: &str) -> Source {
        Source::Ip(text.parse().unwrap())
    }

    fn limits(max_connections: usize) -> Limits {
        Limits {
            max_connections,
            max_per_source: None,
            max_rate: None,
            stop_signal: TERM,
            stop_timeout: Duration::from_secs(10),
        }
    }

    #[test]
    fn at_the_connection_limit_there_is_no_room_until_a_child_exits() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(2));
        assert_eq!(connections.room(t0), Room::Open);
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.started(pid(2), ip("10.0.0.2"), t0);
        assert_eq!(connections.room(t0), Room::Full);
        assert!(
            connections
                .exited(pid(99), ChildStatus::Exited(0))
                .is_empty(),
            "an orphan's exit frees nothing"
        );
        assert_eq!(connections.room(t0), Room::Full);
        connections.exited(pid(1), ChildStatus::Exited(0));
        assert_eq!(connections.room(t0), Room::Open);
        assert_eq!(connections.running(), 1);
        assert_eq!(connections.next_deadline(t0), None, "no timer while idle");
    }

    #[test]
    fn per_source_limit_counts_running_children_of_each_source() {
        let t0 = Instant::now();
        let mut l = limits(10);
        l.max_per_source = Some(2);
        let mut connections = Connections::new(l);
        let a = ip("10.0.0.1");
        let b = ip("10.0.0.2");
        assert!(connections.admit(a, t0));
        connections.started(pid(1), a, t0);
        connections.started(pid(2), a, t0);
        assert!(!connections.admit(a, t0), "a third from the same address");
        assert!(connections.admit(b, t0), "others are not affected");
        assert!(connections.admit(Source::Uid(1000), t0));
        connections.exited(pid(1), ChildStatus::Exited(0));
        assert!(connections.admit(a, t0));
        connections.exited(pid(2), ChildStatus::Signaled(TERM));
        assert!(connections.per_source.is_empty(), "no entry left behind");
    }

    #[test]
    fn rate_limit_allows_a_burst_then_spaces_starts() {
        let t0 = Instant::now();
        let mut l = limits(100);
        l.max_rate = Some(4);
        let mut connections = Connections::new(l);
        for n in 0..4 {
            assert_eq!(connections.room(t0), Room::Open, "burst start {n}");
            connections.started(pid(n + 1), ip("10.0.0.1"), t0);
        }
        let Room::WaitUntil(at) = connections.room(t0) else {
            panic!("expected a wait, got {:?}", connections.room(t0))
        };
        assert_eq!(at, t0 + ms(250));
        assert_eq!(connections.next_deadline(t0), Some(at));
        assert_eq!(connections.room(at), Room::Open);
        connections.started(pid(10), ip("10.0.0.1"), at);
        assert_eq!(connections.room(at), Room::WaitUntil(at + ms(250)));
        // After a quiet second the whole burst is available again.
        let later = at + Duration::from_secs(2);
        for n in 0..4 {
            assert_eq!(connections.room(later), Room::Open);
            connections.started(pid(20 + n), ip("10.0.0.1"), later);
        }
        assert!(matches!(connections.room(later), Room::WaitUntil(_)));
    }

    #[test]
    fn running_out_of_resources_pauses_accepting_briefly() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.pause(t0);
        assert_eq!(connections.room(t0), Room::WaitUntil(t0 + RESOURCE_PAUSE));
        assert_eq!(connections.next_deadline(t0), Some(t0 + RESOURCE_PAUSE));
        connections.tick(t0 + RESOURCE_PAUSE);
        assert_eq!(connections.room(t0 + RESOURCE_PAUSE), Room::Open);
        assert_eq!(connections.next_deadline(t0 + RESOURCE_PAUSE), None);
    }

    #[test]
    fn stop_signals_every_child_and_exits_zero_when_they_end() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.started(pid(2), ip("10.0.0.1"), t0);
        let mut actions = connections.stop(TERM, StopBy::Signal, t0);
        actions.sort_by_key(|a| format!("{a:?}"));
        assert_eq!(
            actions,
            vec![
                Action::Stop {
                    pid: pid(1),
                    signal: TERM
                },
                Action::Stop {
                    pid: pid(2),
                    signal: TERM
                }
            ]
        );
        assert_eq!(connections.room(t0), Room::Closed);
        assert_eq!(
            connections.next_deadline(t0),
            Some(t0 + Duration::from_secs(10))
        );
        assert!(
            connections
                .exited(pid(1), ChildStatus::Signaled(TERM))
                .is_empty()
        );
        assert_eq!(
            connections.exited(pid(2), ChildStatus::Exited(3)),
            vec![Action::Exit { status: 0 }]
        );
    }

    #[test]
    fn stop_with_nothing_running_exits_at_once() {
        let mut connections = Connections::new(limits(10));
        assert_eq!(
            connections.stop(Signal::SIGINT, StopBy::Signal, Instant::now()),
            vec![Action::Exit { status: 0 }]
        );
    }

    #[test]
    fn children_that_outlive_the_stop_timeout_are_killed_and_reported() {
        let t0 = Instant::now();
        let mut l = limits(10);
        l.stop_timeout = ms(300);
        let mut connections = Connections::new(l);
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.stop(TERM, StopBy::Signal, t0);
        assert!(connections.tick(t0 + ms(299)).is_empty());
        assert_eq!(
            connections.tick(t0 + ms(300)),
            vec![Action::Signal {
                pid: pid(1),
                signal: Signal::SIGKILL
            }]
        );
        assert_eq!(connections.next_deadline(t0 + ms(300)), None);
        assert_eq!(
            connections.exited(pid(1), ChildStatus::Signaled(Signal::SIGKILL)),
            vec![Action::Exit { status: 137 }]
        );
    }

    #[test]
    fn second_stop_request_kills_at_once() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.stop(TERM, StopBy::Signal, t0);
        assert_eq!(
            connections.stop(Signal::SIGINT, StopBy::Signal, t0),
            vec![Action::Signal {
                pid: pid(1),
                signal: Signal::SIGKILL
            }]
        );
    }

    #[test]
    fn second_stop_from_the_control_socket_waits_instead_of_killing() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.stop(TERM, StopBy::Control, t0);
        assert!(connections.stop(TERM, StopBy::Control, t0).is_empty());
        assert_eq!(
            connections.exited(pid(1), ChildStatus::Exited(0)),
            vec![Action::Exit { status: 0 }],
            "nothing was killed"
        );
    }

    /// Carried and restored, as an upgrade does.
    fn upgraded(connections: &Connections) -> Connections {
        let carried = connections.carry().expect("carried");
        Connections::restore(connections.limits().clone(), carried)
    }

    #[test]
    fn an_upgrade_keeps_the_connection_limit_counted() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(2));
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.started(pid(2), ip("10.0.0.2"), t0);
        let mut after = upgraded(&connections);
        assert_eq!(after.room(t0), Room::Full);
        assert_eq!(after.started_total, 2);
        assert!(after.exited(pid(99), ChildStatus::Exited(0)).is_empty());
        assert_eq!(after.room(t0), Room::Full, "an orphan frees nothing");
        after.exited(pid(2), ChildStatus::Exited(0));
        assert_eq!(after.room(t0), Room::Open);
        assert_eq!(after.running(), 1);
        // Stopping after the upgrade stops the child the old binary started.
        assert_eq!(
            after.stop(TERM, StopBy::Signal, t0),
            vec![Action::Stop {
                pid: pid(1),
                signal: TERM
            }]
        );
    }

    #[test]
    fn an_upgrade_keeps_the_per_source_counts() {
        let t0 = Instant::now();
        let mut l = limits(10);
        l.max_per_source = Some(1);
        let mut connections = Connections::new(l);
        let a = ip("10.0.0.1");
        connections.started(pid(1), a, t0);
        connections.started(pid(2), Source::Uid(1000), t0);
        connections.started(pid(3), Source::Unknown, t0);
        let mut after = upgraded(&connections);
        assert!(!after.admit(a, t0));
        assert!(!after.admit(Source::Uid(1000), t0));
        assert!(!after.admit(Source::Unknown, t0));
        assert!(after.admit(ip("10.0.0.2"), t0));
        after.exited(pid(1), ChildStatus::Exited(0));
        assert!(after.admit(a, t0), "the exit freed its source");
        after.exited(pid(2), ChildStatus::Exited(0));
        after.exited(pid(3), ChildStatus::Exited(0));
        assert!(after.per_source.is_empty(), "no entry left behind");
    }

    #[test]
    fn an_upgrade_keeps_the_pause_the_rate_and_the_summaries_due() {
        let t0 = Instant::now();
        let mut l = limits(10);
        l.max_rate = Some(2);
        l.max_per_source = Some(1);
        let mut connections = Connections::new(l);
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.started(pid(2), ip("10.0.0.2"), t0);
        assert!(!connections.admit(ip("10.0.0.1"), t0));
        assert!(!connections.admit(ip("10.0.0.1"), t0), "silenced");
        connections.pause(t0);
        let after = upgraded(&connections);
        assert_eq!(after.room(t0), Room::WaitUntil(t0 + ms(500)), "the rate");
        assert_eq!(after.paused_until, Some(t0 + RESOURCE_PAUSE));
        assert_eq!(
            after.over_source_limit.summary_due(),
            Some(t0 + LOG_INTERVAL)
        );
        assert_eq!(after.next_deadline(t0), Some(t0 + ms(500)));
        // Only the pause: it alone holds accepting back, until its end.
        let mut paused = Connections::new(limits(10));
        paused.pause(t0);
        let mut after = upgraded(&paused);
        assert_eq!(after.room(t0), Room::WaitUntil(t0 + RESOURCE_PAUSE));
        after.tick(t0 + RESOURCE_PAUSE);
        assert_eq!(after.room(t0 + RESOURCE_PAUSE), Room::Open);
    }

    #[test]
    fn an_upgrade_while_stopping_is_refused() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        connections.started(pid(1), ip("10.0.0.1"), t0);
        connections.stop(TERM, StopBy::Control, t0);
        assert_eq!(
            connections.carry(),
            Err(
                "sockhold is stopping (1 connection children left); it exits once they have"
                    .to_string()
            )
        );
    }

    #[test]
    fn forwarded_signals_reach_every_running_child() {
        let t0 = Instant::now();
        let mut connections = Connections::new(limits(10));
        assert!(connections.forward(Signal::SIGUSR1).is_empty());
        connections.started(pid(1), ip("10.0.0.1"), t0);
        assert_eq!(
            connections.forward(Signal::SIGUSR1),
            vec![Action::Signal {
                pid: pid(1),
                signal: Signal::SIGUSR1
            }]
        );
    }
}
