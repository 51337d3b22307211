//! The one error type of sockhold and the exit statuses it maps to.
//!
//! Every failure that ends sockhold is one `Error`: a single line that names
//! the culprit and the fix, and the sysexits-style status it exits with. The
//! table here is the one the man page and README print.

use std::fmt;

/// Exit statuses that sockhold itself chooses. A child's own status passes
/// through unchanged (0..=125), and death by signal N becomes 128+N.
pub mod exit {
    /// Success, or a stop that was asked for and honoured.
    pub const OK: i32 = 0;
    /// The command exists but cannot be executed (permission, not a file).
    pub const CANNOT_EXECUTE: i32 = 126;
    /// The command was not found.
    pub const NOT_FOUND: i32 = 127;
    /// Death by signal N is reported as `SIGNAL_BASE + N`.
    pub const SIGNAL_BASE: i32 = 128;
    /// A first generation that never became ready, stopped with status 0,
    /// and not restarted (`--restart never`): a failed start all the same.
    pub const GENERAL_FAILURE: i32 = 1;
    /// Bad command line (EX_USAGE).
    pub const USAGE: i32 = 64;
    /// A file named on the command line cannot be read (EX_NOINPUT):
    /// `--maintenance FILE`.
    pub const NO_INPUT: i32 = 66;
    /// A bug in sockhold (EX_SOFTWARE).
    pub const INTERNAL: i32 = 70;
    /// The operating system refused: bind, socket, fork (EX_OSERR).
    pub const OS: i32 = 71;
    /// Permission denied (EX_NOPERM).
    pub const PERMISSION: i32 = 77;
    /// Client (`sockhold reload|status|stop`): sockhold answered with an
    /// error, e.g. the reload failed.
    pub const CLIENT_FAILED: i32 = 1;
    /// Client: no sockhold answers at that control socket (EX_UNAVAILABLE).
    pub const UNAVAILABLE: i32 = 69;
    /// Client: the answer was not in the control protocol (EX_PROTOCOL).
    pub const PROTOCOL: i32 = 76;
    /// Client: no answer within `--timeout`; the outcome is unknown, and
    /// asking again may work (EX_TEMPFAIL).
    pub const TIMED_OUT: i32 = 75;
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Exit status sockhold ends with when this error is fatal.
    pub exit_status: i32,
    /// One line, without the `sockhold: error: ` prefix.
    pub message: String,
}

impl Error {
    pub fn new(exit_status: i32, message: impl Into<String>) -> Self {
        Error {
            exit_status,
            message: message.into(),
        }
    }

    /// A bad value on the command line: `what '<culprit>': <reason> (<hint>)`.
    pub fn usage(what: &str, culprit: &str, reason: &str, hint: &str) -> Self {
        Error::new(exit::USAGE, format_line(what, culprit, reason, hint))
    }

    /// An operating-system failure; permission problems get their own status
    /// so that scripts can tell "run as root" from "port taken".
    pub fn os(what: &str, culprit: &str, errno: nix::errno::Errno, hint: &str) -> Self {
        let status = match errno {
            nix::errno::Errno::EACCES | nix::errno::Errno::EPERM => exit::PERMISSION,
            _ => exit::OS,
        };
        Error::new(status, format_line(what, culprit, &errno_text(errno), hint))
    }
}

fn format_line(what: &str, culprit: &str, reason: &str, hint: &str) -> String {
    if hint.is_empty() {
        format!("{what} '{culprit}': {reason}")
    } else {
        format!("{what} '{culprit}': {reason} ({hint})")
    }
}

/// The lower-case strerror text ("address already in use").
pub fn errno_text(errno: nix::errno::Errno) -> String {
    let text = errno.desc();
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::errno::Errno;

    #[test]
    fn permission_errors_exit_77_and_others_71() {
        assert_eq!(
            Error::os("cannot listen on", "x", Errno::EACCES, "").exit_status,
            77
        );
        assert_eq!(
            Error::os("cannot listen on", "x", Errno::EPERM, "").exit_status,
            77
        );
        assert_eq!(
            Error::os("cannot listen on", "x", Errno::EADDRINUSE, "").exit_status,
            71
        );
    }

    #[test]
    fn message_names_culprit_reason_and_hint() {
        let e = Error::os(
            "cannot listen on",
            "127.0.0.1:80",
            Errno::EADDRINUSE,
            "choose another port",
        );
        assert_eq!(
            e.message,
            "cannot listen on '127.0.0.1:80': address already in use (choose another port)"
        );
    }
}
