//! sockhold's own sd_notify client: what it tells the service manager that
//! started it through NOTIFY_SOCKET (sd_notify(3); systemd.service(5),
//! Type=notify and Type=notify-reload):
//!
//! - `READY=1` once a generation is ready (the first one, and after a crash),
//!   or at once when sockhold itself waits for connections (`--accept`,
//!   `--lazy`);
//! - `RELOADING=1` with `MONOTONIC_USEC=` when a reload starts, and `READY=1`
//!   when it is over, whether it succeeded or failed (systemd waits for
//!   READY=1 either way);
//! - `STOPPING=1` when sockhold stops;
//! - `STATUS=` with a short line naming the serving generation and its pid;
//! - `WATCHDOG=1` every half `WATCHDOG_USEC`, when that is set for us. The
//!   ping time is a deadline of the event loop, so a stuck loop stops the
//!   pings and the service manager notices.
//! - at start, when systemd says it keeps an fd store for sockhold
//!   (`$FDSTORE`, FileDescriptorStoreMax=), its own `-l` sockets with
//!   `FDSTORE=1` and `FDNAME=` their names (`store_sockets`), which systemd
//!   passes back to the next sockhold (`activation::take_back_stored`).
//!
//! Children never talk to the service manager: their NOTIFY_SOCKET is
//! sockhold's per-generation socket (`readiness.rs`).
//! The messages are built by pure functions; sending is one non-blocking
//! sendto(2) per message, so the event loop never waits on it.

use crate::generations::supervisor::{GenerationId, Report};
use nix::sys::socket::{self, AddressFamily, MsgFlags, SockFlag, SockType, UnixAddr};
use nix::unistd::Pid;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd};
use std::time::{Duration, Instant};

/// The variables that configure this client, as sockhold found them.
#[derive(Debug, Clone, Default)]
pub struct NotifyEnv {
    pub notify_socket: Option<String>,
    pub watchdog_usec: Option<String>,
    pub watchdog_pid: Option<String>,
    /// `$FDSTORE` (systemd 254 and later): FileDescriptorStoreMax= of
    /// sockhold's unit, set only when it is above 0.
    pub fd_store: Option<String>,
}

impl NotifyEnv {
    pub fn from_environment() -> NotifyEnv {
        let var = |name| std::env::var(name).ok();
        NotifyEnv {
            notify_socket: var("NOTIFY_SOCKET"),
            watchdog_usec: var("WATCHDOG_USEC"),
            watchdog_pid: var("WATCHDOG_PID"),
            fd_store: var("FDSTORE"),
        }
    }
}

/// The service manager's notify socket, or nothing when none was given.
pub struct ServiceManager {
    target: Option<Target>,
    watchdog: Option<Watchdog>,
    /// The generation serving now, for STATUS lines.
    serving: Option<(GenerationId, Pid)>,
    /// sockhold accepts connections itself (`--accept`, `--lazy`): what
    /// STATUS says while no generation serves.
    waits_for_connections: bool,
}

struct Target {
    fd: OwnedFd,
    address: UnixAddr,
    /// NOTIFY_SOCKET as given, for messages.
    text: String,
    /// A send failed and was logged; later failures are quiet until one
    /// succeeds, so that a vanished socket does not flood the log.
    failing: bool,
}

struct Watchdog {
    interval: Duration,
    next_ping: Instant,
}

impl ServiceManager {
    /// Reads NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID. Problems are
    /// warnings: sockhold serves without notifying rather than not at all.
    pub fn new(env: &NotifyEnv, our_pid: u32, now: Instant) -> ServiceManager {
        let mut manager = ServiceManager {
            target: None,
            watchdog: None,
            serving: None,
            waits_for_connections: false,
        };
        let Some(text) = env.notify_socket.as_deref().filter(|t| !t.is_empty()) else {
            return manager;
        };
        match open_target(text) {
            Ok(target) => manager.target = Some(target),
            Err(reason) => {
                log::warn!("cannot notify the service manager at '{text}': {reason}");
                return manager;
            }
        }
        log::debug!("notifying the service manager at {text}");
        if let Some(interval) = watchdog_interval(
            env.watchdog_usec.as_deref(),
            env.watchdog_pid.as_deref(),
            our_pid,
        ) {
            log::debug!(
                "watchdog: WATCHDOG=1 every {}",
                crate::config::format_duration(interval)
            );
            manager.watchdog = Some(Watchdog {
                interval,
                next_ping: now + interval,
            });
        }
        manager
    }

    /// Tells the service manager about a supervisor report.
    pub fn report(&mut self, report: &Report) {
        if self.target.is_none() {
            return;
        }
        let (message, serving) = message_for(report, self.serving, monotonic_usec());
        self.serving = serving;
        if let Some(message) = message {
            self.send(&message);
        }
    }

    /// The generation serving now, as last told (an upgrade carries it).
    pub fn serving(&self) -> Option<(GenerationId, Pid)> {
        self.serving
    }

    /// After an upgrade: who serves, as the old binary knew it.
    pub fn set_serving(&mut self, serving: Option<(GenerationId, Pid)>) {
        self.serving = serving;
    }

    /// An upgrade begins: systemd waits for READY=1 (`upgraded`).
    pub fn upgrading(&mut self) {
        let message = format!(
            "RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=upgrading sockhold",
            monotonic_usec()
        );
        self.send(&message);
    }

    /// An upgrade ended, done or not (`failed`: why not): sockhold serves
    /// as before.
    pub fn upgraded(&mut self, failed: Option<&str>) {
        let serving = match self.serving {
            None if self.waits_for_connections => "waiting for connections".to_string(),
            serving => serving_text(serving),
        };
        let status = match failed {
            Some(reason) => format!("upgrade failed: {}; {serving}", one_line(reason)),
            None => serving,
        };
        self.send(&format!("READY=1\nSTATUS={status}"));
    }

    /// sockhold waits for connections itself (`--accept`, `--lazy`): it is
    /// ready before any child runs.
    pub fn waiting_for_connections(&mut self) {
        self.waits_for_connections = true;
        self.send("READY=1\nSTATUS=waiting for connections");
    }

    /// As `waiting_for_connections`, without a message: after an upgrade,
    /// which says READY=1 itself (`upgraded`).
    pub fn set_waiting_for_connections(&mut self) {
        self.waits_for_connections = true;
    }

    /// When the next watchdog ping is due; None: no watchdog.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.watchdog.as_ref().map(|w| w.next_ping)
    }

    /// Sends the watchdog ping if it is due.
    pub fn tick(&mut self, now: Instant) {
        let Some(watchdog) = &mut self.watchdog else {
            return;
        };
        if watchdog.next_ping > now {
            return;
        }
        watchdog.next_ping = now + watchdog.interval;
        self.send("WATCHDOG=1");
    }

    fn send(&mut self, message: &str) {
        let Some(target) = &mut self.target else {
            return;
        };
        // MSG_NOSIGNAL: harmless for datagrams, and keeps a future socket
        // type from raising SIGPIPE.
        match socket::sendto(
            target.fd.as_raw_fd(),
            message.as_bytes(),
            &target.address,
            MsgFlags::MSG_NOSIGNAL,
        ) {
            Ok(_) => {
                log::trace!("told the service manager: {}", message.replace('\n', " "));
                target.failing = false;
            }
            Err(errno) if target.failing => {
                log::debug!("cannot notify the service manager: {errno}");
            }
            Err(errno) => {
                target.failing = true;
                log::warn!(
                    "cannot notify the service manager at '{}': {}",
                    target.text,
                    crate::error::errno_text(errno)
                );
            }
        }
    }
}

/// Stores `sockets` (name, socket) in the service manager's fd store, when
/// it keeps one for sockhold (`$FDSTORE` above 0): for each, the fds
/// stored by that name before are dropped (`FDSTOREREMOVE=1`, as
/// systemd's own `notify_push_fd` does), then the socket is stored
/// (`FDSTORE=1`); systemd keeps each open file once. Returns whether they
/// were sent; problems are warnings, as the sockets serve either way.
pub fn store_sockets(env: &NotifyEnv, sockets: &[(&str, BorrowedFd<'_>)]) -> bool {
    let Some(text) = env.notify_socket.as_deref().filter(|t| !t.is_empty()) else {
        return false;
    };
    let max = match env
        .fd_store
        .as_deref()
        .map(|max| max.trim().parse::<usize>())
    {
        Some(Ok(max)) if max > 0 => max,
        _ => {
            log::debug!(
                "not storing the sockets in the service manager's fd store: FDSTORE is unset (FileDescriptorStoreMax= is 0, or systemd is older than 254)"
            );
            return false;
        }
    };
    if sockets.is_empty() {
        return false;
    }
    let target = match open_target(text) {
        Ok(target) => target,
        Err(reason) => {
            log::warn!("cannot store the sockets in the fd store at '{text}': {reason}");
            return false;
        }
    };
    if max < sockets.len() {
        log::warn!(
            "the service manager's fd store takes {max} fds (FileDescriptorStoreMax=), fewer than the {} sockets sockhold holds: the others are bound anew after a restart (raise FileDescriptorStoreMax=)",
            sockets.len()
        );
    }
    for (name, fd) in sockets {
        let remove = format!("FDSTOREREMOVE=1\nFDNAME={name}");
        let store = format!("FDSTORE=1\nFDNAME={name}");
        let fds = [fd.as_raw_fd()];
        let sent = socket::sendto(
            target.fd.as_raw_fd(),
            remove.as_bytes(),
            &target.address,
            MsgFlags::MSG_NOSIGNAL,
        )
        .and_then(|_| {
            socket::sendmsg(
                target.fd.as_raw_fd(),
                &[std::io::IoSlice::new(store.as_bytes())],
                &[socket::ControlMessage::ScmRights(&fds)],
                MsgFlags::MSG_NOSIGNAL,
                Some(&target.address),
            )
        });
        if let Err(errno) = sent {
            log::warn!(
                "cannot store socket '{name}' in the fd store at '{text}': {}",
                crate::error::errno_text(errno)
            );
            return false;
        }
    }
    let names: Vec<&str> = sockets.iter().map(|(name, _)| *name).collect();
    log::info!(
        "stored the sockets {} in the service manager's fd store: a restarted sockhold takes them back",
        names.join(", ")
    );
    true
}

fn open_target(text: &str) -> Result<Target, String> {
    let address = if let Some(name) = text.strip_prefix('@') {
        UnixAddr::new_abstract(name.as_bytes())
    } else if text.starts_with('/') {
        UnixAddr::new(text)
    } else {
        // systemd also knows vsock:CID:PORT (for virtual machines).
        return Err("only Unix socket paths and @abstract names are supported".to_string());
    }
    .map_err(crate::error::errno_text)?;
    let fd = socket::socket(
        AddressFamily::Unix,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .map_err(crate::error::errno_text)?;
    Ok(Target {
        fd,
        address,
        text: text.to_string(),
        failing: false,
    })
}

/// The shortest watchdog interval: pings at most 100 times a second, so
/// that a tiny WATCHDOG_USEC (1, say) cannot turn the event loop into a
/// busy loop (a ping due "now" after every ping).
pub const MIN_WATCHDOG_INTERVAL: Duration = Duration::from_millis(10);

/// Half of WATCHDOG_USEC, as sd_watchdog_enabled(3) advises, when the
/// watchdog is meant for us: WATCHDOG_PID unset or equal to our pid; never
/// below `MIN_WATCHDOG_INTERVAL` (said once in the log).
pub fn watchdog_interval(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok().filter(|&usec| usec > 0)?;
    if let Some(pid) = pid {
        if pid.trim().parse::<u32>().ok() != Some(our_pid) {
            return None;
        }
    }
    let half = Duration::from_micros(usec / 2);
    if half < MIN_WATCHDOG_INTERVAL {
        log::warn!(
            "watchdog: WATCHDOG_USEC={usec} asks for a ping every {}us; pinging every {} instead, as often as sockhold pings (raise WatchdogSec=)",
            usec / 2,
            crate::config::format_duration(MIN_WATCHDOG_INTERVAL)
        );
        return Some(MIN_WATCHDOG_INTERVAL);
    }
    Some(half)
}

/// CLOCK_MONOTONIC in microseconds, the clock systemd compares
/// MONOTONIC_USEC with.
fn monotonic_usec() -> u64 {
    match nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
        Ok(now) => now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000,
        Err(_) => 0,
    }
}

/// The datagram for one report and who serves afterwards.
fn message_for(
    report: &Report,
    serving: Option<(GenerationId, Pid)>,
    monotonic_usec: u64,
) -> (Option<String>, Option<(GenerationId, Pid)>) {
    match report {
        Report::Ready { generation, pid } | Report::ReloadSucceeded { generation, pid } => {
            let serving = Some((*generation, *pid));
            let message = format!("READY=1\nSTATUS={}", serving_text(serving));
            (Some(message), serving)
        }
        Report::ReloadStarted { generation } => {
            let message = format!(
                "RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading: generation {generation} starting; {}",
                serving_text(serving)
            );
            (Some(message), serving)
        }
        Report::ReloadFailed { reason, .. } => {
            let message = format!(
                "READY=1\nSTATUS=reload failed: {}; {}",
                one_line(reason),
                serving_text(serving)
            );
            (Some(message), serving)
        }
        // While stopping (STOPPING=1 has been said already), paused, or a
        // resume when not paused: nothing changed.
        Report::ReloadRefused { .. } | Report::PauseRefused { .. } => (None, serving),
        // The service stays up (its sockets do); it says it is paused.
        Report::Paused { what } => (Some(format!("STATUS=paused: {}", one_line(what))), None),
        // No RELOADING=1 was said: nothing to take back.
        Report::NothingToReload { .. } => (None, serving),
        Report::Stopping => (Some("STOPPING=1\nSTATUS=stopping".to_string()), serving),
        Report::Scaled { count, .. } => {
            let message = format!("STATUS={count} workers; {}", serving_text(serving));
            (Some(message), serving)
        }
        Report::ScaleFailed { .. } => (None, serving),
    }
}

/// What STATUS= says of who serves.
fn serving_text(serving: Option<(GenerationId, Pid)>) -> String {
    match serving {
        Some((generation, pid)) => format!("generation {generation} serving (pid {pid})"),
        None => "no generation serving".to_string(),
    }
}

/// A STATUS= value ends at the first newline.
fn one_line(text: &str) -> String {
    text.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid(n: i32) -> Pid {
        Pid::from_raw(n)
    }

    #[test]
    fn ready_reload_and_stop_messages() {
        let (message, serving) = message_for(
            &Report::Ready {
                generation: 1,
                pid: pid(100),
            },
            None,
            7,
        );
        assert_eq!(
            message.as_deref(),
            Some("READY=1\nSTATUS=generation 1 serving (pid 100)")
        );
        let (message, serving) =
            message_for(&Report::ReloadStarted { generation: 2 }, serving, 123_456);
        assert_eq!(
            message.as_deref(),
            Some(
                "RELOADING=1\nMONOTONIC_USEC=123456\nSTATUS=reloading: generation 2 starting; generation 1 serving (pid 100)"
            )
        );
        let (message, serving) = message_for(
            &Report::ReloadFailed {
                generation: 2,
                reason: "generation 2 exited with status 1\nbefore ready".into(),
            },
            serving,
            0,
        );
        assert_eq!(
            message.as_deref(),
            Some(
                "READY=1\nSTATUS=reload failed: generation 2 exited with status 1 before ready; generation 1 serving (pid 100)"
            )
        );
        let (message, serving) = message_for(
            &Report::ReloadSucceeded {
                generation: 3,
                pid: pid(300),
            },
            serving,
            0,
        );
        assert_eq!(
            message.as_deref(),
            Some("READY=1\nSTATUS=generation 3 serving (pid 300)")
        );
        assert_eq!(serving, Some((3, pid(300))));
        let (message, _) = message_for(&Report::Stopping, serving, 0);
        assert_eq!(message.as_deref(), Some("STOPPING=1\nSTATUS=stopping"));
        let (message, _) = message_for(
            &Report::ReloadRefused {
                reason: "stopping".into(),
            },
            serving,
            0,
        );
        assert_eq!(message, None);
    }

    #[test]
    fn watchdog_is_half_the_timeout_and_only_for_us() {
        assert_eq!(
            watchdog_interval(Some("2000000"), None, 42),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            watchdog_interval(Some("2000000"), Some("42"), 42),
            Some(Duration::from_secs(1))
        );
        assert_eq!(watchdog_interval(Some("2000000"), Some("41"), 42), None);
        assert_eq!(watchdog_interval(Some("0"), None, 42), None);
        // Tiny values are raised to the floor instead of a ping every 0us.
        assert_eq!(
            watchdog_interval(Some("1"), None, 42),
            Some(MIN_WATCHDOG_INTERVAL)
        );
        assert_eq!(
            watchdog_interval(Some("19999"), None, 42),
            Some(MIN_WATCHDOG_INTERVAL)
        );
        assert_eq!(
            watchdog_interval(Some("20000"), None, 42),
            Some(Duration::from_millis(10))
        );
        assert_eq!(
            watchdog_interval(Some("30000"), None, 42),
            Some(Duration::from_millis(15))
        );
        assert_eq!(watchdog_interval(Some("soon"), None, 42), None);
        assert_eq!(watchdog_interval(None, None, 42), None);
    }

    #[test]
    fn sends_to_a_path_socket_and_pings_when_due() {
        let dir = std::env::temp_dir().join(format!("sockhold-sdn-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let listener = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        let t0 = Instant::now();
        let env = NotifyEnv {
            notify_socket: Some(path.to_str().unwrap().to_string()),
            watchdog_usec: Some("200000".into()),
            watchdog_pid: None,
            fd_store: None,
        };
        let mut manager = ServiceManager::new(&env, std::process::id(), t0);
        assert_eq!(
            manager.next_deadline(),
            Some(t0 + Duration::from_millis(100))
        );
        manager.tick(t0 + Duration::from_millis(50));
        manager.report(&Report::Stopping);
        manager.tick(t0 + Duration::from_millis(100));
        let mut buffer = [0u8; 256];
        let mut received = Vec::new();
        while let Ok(n) = listener.recv(&mut buffer) {
            received.push(String::from_utf8_lossy(&buffer[..n]).into_owned());
        }
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(received, vec!["STOPPING=1\nSTATUS=stopping", "WATCHDOG=1"]);
        assert_eq!(
            manager.next_deadline(),
            Some(t0 + Duration::from_millis(200))
        );
    }

    #[test]
    fn unsupported_or_missing_socket_disables_notifying() {
        let env = NotifyEnv {
            notify_socket: Some("vsock:2:1234".into()),
            watchdog_usec: Some("1000000".into()),
            watchdog_pid: None,
            fd_store: None,
        };
        let manager = ServiceManager::new(&env, 1, Instant::now());
        assert!(manager.target.is_none());
        assert_eq!(manager.next_deadline(), None);
    }

    #[test]
    fn sockets_go_to_the_fd_store_by_name_only_when_systemd_keeps_one() {
        use std::os::fd::AsFd;
        let dir = std::env::temp_dir().join(format!("sockhold-sdn-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let manager = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        manager.set_nonblocking(true).unwrap();
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let sockets = [("web", held.as_fd())];
        let env = |fd_store: Option<&str>| NotifyEnv {
            notify_socket: Some(path.to_str().unwrap().to_string()),
            fd_store: fd_store.map(str::to_string),
            ..NotifyEnv::default()
        };
        for refused in [None, Some("0"), Some("many")] {
            assert!(!store_sockets(&env(refused), &sockets), "{refused:?}");
        }
        assert!(!store_sockets(&env(Some("4")), &[]));
        let mut buffer = [0u8; 256];
        assert!(manager.recv(&mut buffer).is_err(), "nothing sent");
        assert!(store_sockets(&env(Some("4")), &sockets));
        let n = manager.recv(&mut buffer).unwrap();
        assert_eq!(&buffer[..n], b"FDSTOREREMOVE=1\nFDNAME=web");
        let received = crate::net::receive_with_credentials(manager.as_fd(), &mut buffer)
            .unwrap()
            .unwrap();
        assert_eq!(&buffer[..received.bytes], b"FDSTORE=1\nFDNAME=web");
        assert_eq!(received.fds.len(), 1);
        assert!(crate::net::same_open_file(
            received.fds[0].as_fd(),
            held.as_fd()
        ));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
