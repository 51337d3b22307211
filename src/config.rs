//! Validated settings: what the rest of sockhold runs on, built from the
//! command line by `cli.rs`. Pure; also home of the duration grammar.

use crate::addr::ListenSpec;
use crate::compat::CompatEnv;
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

/// When a new generation counts as ready to take over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadyMode {
    /// When it is seen taking connections from every held stream socket it
    /// keeps open (datagram sockets only: reading them). A `READY=1` alone
    /// counts where it cannot be seen, or after `NOTIFY_GRACE` without
    /// being seen; where nothing can be seen and no `READY=1` comes, the
    /// `AUTO_DELAY`.
    Auto,
    /// Only when one of its processes is seen taking connections (or
    /// datagrams) from a held socket.
    Accepting,
    /// Only when it sends `READY=1` on its NOTIFY_SOCKET.
    Notify,
    /// When it sends `READY=1`, or when it is still running after this long.
    Delay(Duration),
}

/// `--ready auto`: how long a generation that cannot be observed and sends
/// no `READY=1` must keep running to count as ready (the old default).
pub const AUTO_DELAY: Duration = Duration::from_secs(1);

/// `--ready auto`: how long after a `READY=1` sockhold waits to see the
/// generation accepting before it trusts the `READY=1` alone (a server
/// that accepts through io_uring is never seen).
pub const NOTIFY_GRACE: Duration = Duration::from_secs(5);

/// How often a starting generation's processes are looked at in /proc.
pub const OBSERVE_INTERVAL: Duration = Duration::from_millis(10);

/// How soon the next look comes when the last one found a thread that
/// runs and blocks again and again (a server busy with connections is
/// caught in its wait less often than an idle one).
pub const BUSY_OBSERVE_INTERVAL: Duration = Duration::from_millis(2);

/// What to do when the current child exits on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    /// Restart after a non-zero exit or death by signal; exit after a clean exit.
    OnFailure,
    /// Restart whatever the status.
    Always,
    /// Never restart: sockhold exits with the child's status.
    Never,
}

/// Settings of the generation state machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorSettings {
    pub ready: ReadyMode,
    pub ready_timeout: Duration,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
    pub restart: RestartPolicy,
    /// First restart delay; it doubles with every consecutive crash.
    pub restart_delay: Duration,
    pub restart_max_delay: Duration,
    /// A child that ran this long before it crashed resets the backoff.
    pub healthy_after: Duration,
    /// `--lazy`: start a generation only when a connection is waiting, and
    /// wait again after it exits on its own.
    pub lazy: bool,
    /// `--maintenance-after`, when `--maintenance` is given: how long no
    /// generation may have been ready before sockhold answers connections
    /// itself in a restart backoff.
    pub maintenance_after: Option<Duration>,
    /// `--workers`: the processes of each generation (1..=MAX_WORKERS),
    /// each in its own slot; `scale` changes it at run time.
    pub workers: usize,
    /// `--reload-surge`: in a reload next to a serving generation, how
    /// many new workers start at once (a rolling reload).
    pub reload_surge: usize,
}

/// The most `--workers` takes: more is a typo, not a server.
pub const MAX_WORKERS: usize = 1024;

impl Default for SupervisorSettings {
    fn default() -> Self {
        SupervisorSettings {
            ready: ReadyMode::Auto,
            ready_timeout: Duration::from_secs(60),
            stop_signal: Signal::SIGTERM,
            stop_timeout: Duration::from_secs(10),
            restart: RestartPolicy::OnFailure,
            restart_delay: Duration::from_millis(100),
            restart_max_delay: Duration::from_secs(30),
            healthy_after: Duration::from_secs(10),
            lazy: false,
            maintenance_after: None,
            workers: 1,
            reload_surge: 1,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub listen: Vec<ListenSpec>,
    /// `None`: the system maximum (net.core.somaxconn).
    pub backlog: Option<i32>,
    /// Mode of Unix socket files; `None`: as the umask makes it.
    pub socket_mode: Option<u32>,
    /// `--socket-owner USER[:GROUP]`, resolved at start.
    pub socket_owner: Option<String>,
    /// `--user`/`--group`: who sockhold becomes after binding.
    pub user: Option<String>,
    pub group: Option<String>,
    pub pid_file: Option<PathBuf>,
    /// Where to serve the control socket.
    pub control: Option<PathBuf>,
    pub command: Vec<OsString>,
    pub supervisor: SupervisorSettings,
    /// Signals passed on to the current generation.
    pub forward_signals: Vec<Signal>,
    /// `--parent-death-signal`: what each child gets from the kernel when
    /// sockhold dies (PR_SET_PDEATHSIG).
    pub parent_death_signal: Option<Signal>,
    /// `--signal-group`: each child leads a process group, and signals go
    /// to the whole group.
    pub signal_group: bool,
    /// `--intercept-bind`: each child's bind(2) to a held address gets the
    /// held socket (seccomp user notification, `intercept.rs`).
    pub intercept_bind: bool,
    /// Other supervisors' variables to set for the child as well.
    pub compat_env: Vec<CompatEnv>,
    /// `--stdin-socket`: the one held socket is each child's stdin too.
    pub stdin_socket: bool,
    /// `--accept`: per-connection mode instead of generations.
    pub accept: Option<AcceptSettings>,
    /// `--maintenance FILE`: what sockhold answers while nobody serves.
    pub maintenance: Option<MaintenanceSettings>,
    /// `--fd-store-max`: how many fds children may store (`fd_store.rs`);
    /// 0 stores none.
    pub fd_store_max: usize,
}

/// `--maintenance FILE`: while paused, or while no generation has been
/// ready for `--maintenance-after` (kept in `SupervisorSettings`), sockhold
/// answers connections itself with FILE's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MaintenanceSettings {
    pub file: PathBuf,
    /// FILE's bytes as read at start (read again on reload and resume).
    pub answer: Vec<u8>,
}

/// Per-connection (inetd) mode: one child per accepted connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcceptSettings {
    /// `--inetd`: the connection on stdin and stdout instead of fd 3.
    pub inetd: bool,
    /// At this many running children sockhold stops accepting.
    pub max_connections: usize,
    /// Running children per source (IP address, or uid for Unix sockets)
    /// above which a new connection from it is closed at once.
    pub max_per_source: Option<usize>,
    /// New children per second; over it sockhold waits (the kernel queues).
    pub max_rate: Option<u32>,
    /// `--signal-group`, as in `Config`.
    pub signal_group: bool,
    pub stop_signal: Signal,
    pub stop_timeout: Duration,
}

/// systemd's default for MaxConnections= (systemd.socket(5)).
pub const DEFAULT_MAX_CONNECTIONS: usize = 64;

/// Parses `500ms`, `1.5s`, `2m`, `1h` or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if text
        .strip_prefix('-')
        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit() || c == '.'))
    {
        return Err("a duration cannot be negative".to_string());
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| "not a duration".to_string())?;
    let unit = unit.trim();
    let seconds_per_unit = match unit {
        "" | "s" | "sec" => 1.0,
        "ms" => 0.001,
        "us" => 0.000_001,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        _ => return Err(format!("unknown unit '{unit}'")),
    };
    let seconds = value * seconds_per_unit;
    if !seconds.is_finite() || seconds > 1e9 {
        return Err("duration too long".to_string());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Prints a duration the way the log uses it: `250ms`, `1.5s`.
pub fn format_duration(duration: Duration) -> String {
    let millis = duration.as_millis();
    if millis < 1000 {
        format!("{millis}ms")
    } else if millis % 1000 == 0 {
        format!("{}s", millis / 1000)
    } else {
        // Centiseconds: a 3 s boot reads "2.98s", not "3.0s".
        let text = format!("{:.2}", millis as f64 / 1000.0);
        format!("{}s", text.trim_end_matches('0').trim_end_matches('.'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_with_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").is_err());
        assert!(parse_duration("fast").is_err());
        assert_eq!(parse_duration("--"), Err("not a duration".to_string()));
        assert_eq!(
            parse_duration("-1s"),
            Err("a duration cannot be negative".to_string())
        );
        assert_eq!(
            parse_duration("3 weeks"),
            Err("unknown unit 'weeks'".to_string())
        );
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(format_duration(Duration::from_millis(212)), "212ms");
        assert_eq!(format_duration(Duration::from_secs(10)), "10s");
        assert_eq!(format_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(format_duration(Duration::from_millis(2980)), "2.98s");
        assert_eq!(format_duration(Duration::from_millis(1001)), "1s");
    }
}
