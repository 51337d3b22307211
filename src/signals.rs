//! Signal names (parsing `TERM`, `SIGTERM`, `15`; printing `SIGTERM`) and
//! the one table of what sockhold does with each signal it can receive.
//! Pure; shared by the command line, the driver and the log so that all
//! use the same words.
//!
//! Invariant (DESIGN.md §3): every catchable asynchronous signal is acted
//! on, passed on or ignored; none can end sockhold by its default action
//! and orphan the children that hold its sockets. The man page's SIGNALS
//! section is this table in words.

use nix::libc::{self, c_int};
use nix::sys::signal::Signal;
use std::str::FromStr;

/// Who asked sockhold to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBy {
    /// SIGTERM or SIGINT: asked again while stopping, it means "now".
    Signal,
    /// A `stop` request on the control socket: asked again, it just waits.
    Control,
}

/// What sockhold does with a signal sent to it, before `--forward-signals`
/// has a say (see `Handling::caught`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handling {
    /// HUP: reload.
    Reload,
    /// INT, TERM: stop every generation and exit.
    Stop,
    /// CHLD: reap.
    Reap,
    /// Passed on to the current generation (every connection's child with
    /// `--accept`), unless `--forward-signals` leaves it out.
    Forward,
    /// Caught and logged, passed on only if `--forward-signals` names it:
    /// XCPU and XFSZ, which the kernel sends a process that went over its
    /// own CPU time or file size limit; here that process is sockhold, and
    /// the child is not to pay for it.
    Logged,
    /// TSTP: left at its default action, so that job control works as for
    /// any command (Ctrl-Z stops sockhold and, in its process group, the
    /// child); it stops, never ends, sockhold. Passed on instead if
    /// `--forward-signals` names it.
    JobControl,
    /// Ignored (SIG_IGN): PIPE (Rust's runtime ignores it; sockhold's own
    /// writes to a closed pipe or socket raise it, so it says nothing about
    /// the child), TTIN and TTOU (a background sockhold that writes its log
    /// to the terminal would otherwise be stopped; with a handler instead,
    /// the write would be retried and raise it again forever).
    Ignored,
    /// Left at its default action, never caught: the kernel sends SEGV,
    /// BUS, ILL, FPE, TRAP and SYS for a fault of sockhold's own (a bad
    /// access, a breakpoint or trap instruction, a system call refused by a
    /// seccomp filter), and a handler that returns would loop on the
    /// faulting instruction or let a refused system call seem to succeed.
    Fault,
    /// KILL and STOP cannot be caught.
    Uncatchable,
}

impl Handling {
    pub fn of(signal: Signal) -> Handling {
        use Signal::*;
        match signal {
            SIGHUP => Handling::Reload,
            SIGINT | SIGTERM => Handling::Stop,
            SIGCHLD => Handling::Reap,
            SIGXCPU | SIGXFSZ => Handling::Logged,
            SIGTSTP => Handling::JobControl,
            SIGPIPE | SIGTTIN | SIGTTOU => Handling::Ignored,
            SIGSEGV | SIGBUS | SIGILL | SIGFPE | SIGTRAP | SIGSYS => Handling::Fault,
            SIGKILL | SIGSTOP => Handling::Uncatchable,
            _ => Handling::Forward,
        }
    }
}

/// The signals passed on when `--forward-signals` is not given (or says
/// `default`): every one sockhold does not act on itself, except those
/// that `Handling` explains. In signal-number order.
pub fn forwarded_by_default() -> Vec<Signal> {
    Signal::iterator()
        .filter(|&signal| Handling::of(signal) == Handling::Forward)
        .collect()
}

/// Why `signal` cannot be in `--forward-signals`, if it cannot; as the
/// reason and the fix of a usage error.
pub fn forwarding_refused(signal: Signal) -> Option<(&'static str, &'static str)> {
    match Handling::of(signal) {
        Handling::Forward | Handling::Logged | Handling::JobControl => None,
        Handling::Reload | Handling::Stop | Handling::Reap => Some((
            "sockhold acts on this signal itself",
            "remove it from --forward-signals; HUP reloads, TERM and INT stop, CHLD reaps",
        )),
        Handling::Ignored => Some((
            "sockhold ignores this signal: it raises it itself (PIPE) or must never stop on it (TTIN, TTOU)",
            "remove it from --forward-signals",
        )),
        Handling::Fault => Some((
            "sockhold leaves this fault signal to the kernel",
            "remove it from --forward-signals",
        )),
        Handling::Uncatchable => Some((
            "no process can catch this signal",
            "remove it from --forward-signals",
        )),
    }
}

/// Every signal number sockhold installs a handler for, given what is
/// passed on: the standard signals that are acted on, passed on or logged,
/// and the real-time signals (`real_time_signals`).
pub fn caught(forward: &[Signal]) -> Vec<c_int> {
    let standard = Signal::iterator().filter(|&signal| match Handling::of(signal) {
        Handling::Reload | Handling::Stop | Handling::Reap => true,
        Handling::Forward | Handling::Logged => true,
        Handling::JobControl => forward.contains(&signal),
        Handling::Ignored | Handling::Fault | Handling::Uncatchable => false,
    });
    standard
        .map(|signal| signal as c_int)
        .chain(real_time_signals())
        .collect()
}

/// The standard signals sockhold leaves at their default action (faults,
/// KILL and STOP, and TSTP unless passed on): the ones it does not unblock
/// at start either.
pub fn left_at_default(signal: Signal, forward: &[Signal]) -> bool {
    match Handling::of(signal) {
        Handling::Fault | Handling::Uncatchable => true,
        Handling::JobControl => !forward.contains(&signal),
        _ => false,
    }
}

/// The real-time signals a program can handle: SIGRTMIN to SIGRTMAX as the
/// C library reports them. The kernel's first two (32 and 33) are glibc's
/// own (thread cancellation and set*id across threads): sigaction(2)
/// through glibc refuses them with EINVAL, so neither signal-hook nor any
/// program can set a handler for them. They are not in this range.
/// Caught, logged and ignored: the path that passes signals on carries only
/// the standard ones.
pub fn real_time_signals() -> std::ops::RangeInclusive<c_int> {
    libc::SIGRTMIN()..=libc::SIGRTMAX()
}

/// Parses a signal given as `TERM`, `SIGTERM`, `term` or a number.
pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let trimmed = text.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("no signal has number {number}"));
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    // SIGPOLL is Linux's other name for SIGIO.
    let name = if name == "SIGPOLL" {
        "SIGIO".into()
    } else {
        name
    };
    Signal::from_str(&name).map_err(|_| "unknown signal name".to_string())
}

/// `SIGTERM`, as the log and messages print it.
pub fn name(signal: Signal) -> &'static str {
    signal.as_str()
}

/// A signal by number, as the log prints it: `SIGTERM`; for a real-time
/// signal `SIGRTMIN`, `SIGRTMIN+6`, `SIGRTMAX`, the names that kill(1)
/// takes too.
pub fn describe_number(number: c_int) -> String {
    match Signal::try_from(number) {
        Ok(signal) => name(signal).to_string(),
        Err(_) if number == libc::SIGRTMIN() => "SIGRTMIN".to_string(),
        Err(_) if number == libc::SIGRTMAX() => "SIGRTMAX".to_string(),
        Err(_) if real_time_signals().contains(&number) => {
            format!("SIGRTMIN+{}", number - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {number}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_with_and_without_prefix_and_numbers() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigusr1"), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal("SIGQUIT"), Ok(Signal::SIGQUIT));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
        assert_eq!(parse_signal("POLL"), Ok(Signal::SIGIO));
    }

    #[test]
    fn rejects_unknown_names_and_numbers() {
        assert!(parse_signal("TREM").is_err());
        assert!(parse_signal("99").is_err());
    }

    #[test]
    fn every_catchable_signal_is_acted_on_passed_on_logged_or_ignored() {
        let caught = caught(&forwarded_by_default());
        for signal in Signal::iterator() {
            let accounted_for = match Handling::of(signal) {
                Handling::Reload
                | Handling::Stop
                | Handling::Reap
                | Handling::Forward
                | Handling::Logged => caught.contains(&(signal as c_int)),
                // Stops, never ends; ignored; not catchable in earnest.
                Handling::JobControl
                | Handling::Ignored
                | Handling::Fault
                | Handling::Uncatchable => true,
            };
            assert!(accounted_for, "{signal} is not caught");
        }
        for number in real_time_signals() {
            assert!(caught.contains(&number), "signal {number}");
        }
    }

    #[test]
    fn the_default_forward_list_is_what_the_man_page_says() {
        use Signal::*;
        let mut expected = vec![
            SIGQUIT, SIGABRT, SIGUSR1, SIGUSR2, SIGALRM, SIGCONT, SIGURG, SIGVTALRM, SIGPROF,
            SIGWINCH, SIGIO, SIGPWR,
        ];
        #[cfg(not(any(target_arch = "mips", target_arch = "mips64", target_arch = "sparc64")))]
        expected.insert(5, SIGSTKFLT);
        assert_eq!(forwarded_by_default(), expected);
    }

    #[test]
    fn only_signals_that_mean_nothing_to_sockhold_can_be_forwarded() {
        for signal in [Signal::SIGQUIT, Signal::SIGXCPU, Signal::SIGTSTP] {
            assert_eq!(forwarding_refused(signal), None, "{signal}");
        }
        for signal in [
            Signal::SIGHUP,
            Signal::SIGCHLD,
            Signal::SIGKILL,
            Signal::SIGSEGV,
            Signal::SIGTRAP,
            Signal::SIGPIPE,
            Signal::SIGTTOU,
        ] {
            assert!(forwarding_refused(signal).is_some(), "{signal}");
        }
    }

    #[test]
    fn tstp_is_caught_only_when_passed_on() {
        let tstp = Signal::SIGTSTP as c_int;
        assert!(!caught(&[]).contains(&tstp));
        assert!(left_at_default(Signal::SIGTSTP, &[]));
        assert!(caught(&[Signal::SIGTSTP]).contains(&tstp));
        assert!(!left_at_default(Signal::SIGTSTP, &[Signal::SIGTSTP]));
    }

    #[test]
    fn real_time_signals_are_named_from_sigrtmin() {
        let first = libc::SIGRTMIN();
        assert!(first >= 34, "glibc keeps 32 and 33");
        assert_eq!(describe_number(first), "SIGRTMIN");
        assert_eq!(describe_number(first + 6), "SIGRTMIN+6");
        assert_eq!(describe_number(libc::SIGRTMAX()), "SIGRTMAX");
        assert_eq!(describe_number(15), "SIGTERM");
    }
}
