//! The client side of the control socket (`sockhold reload|status|stop
//! --control PATH`): one request, one reply, one exit status. It prints
//! only a successful answer, to stdout; every failure is an `Error`.
//!
//! Every step is bounded by the one `--timeout`: the connect (a full
//! queue makes connect(2) wait; SO_SNDTIMEO bounds that wait, see
//! unix(7)), the request and the reply, and for `stop` the wait for
//! sockhold's exit. A client that gives up says what it was waiting for
//! and exits `TIMED_OUT`: the outcome is unknown, not a failure.

use super::protocol::{self, Request};
use crate::config::format_duration;
use crate::error::{Error, errno_text, exit};
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use nix::sys::time::{TimeVal, TimeValLike};
use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// Where the client talks to, and how long it waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientTarget {
    /// The control socket (`--control`).
    pub path: PathBuf,
    /// The whole exchange must be over by then (`--timeout`).
    pub timeout: Duration,
}

/// The client: sends `request` to the control socket of `target`, prints
/// the answer, and returns the exit status (0 on success).
pub fn run_client(target: &ClientTarget, request: Request) -> Result<i32, Error> {
    let exchange = Exchange {
        text: target.path.display().to_string(),
        timeout: target.timeout,
        deadline: Instant::now() + target.timeout,
    };
    let mut stream = exchange.connect(target)?;
    // A refused write (sockhold already replied and closed) is not the
    // end: its reply may be waiting to be read.
    let _ = stream.set_write_timeout(Some(exchange.left()));
    let _ = stream.write_all(&protocol::line(&request.text()));
    let mut reply = Vec::new();
    let line = exchange.read_line(&mut stream, &mut reply, request.clone())?;
    if line.is_empty() {
        return Err(Error::new(
            exit::UNAVAILABLE,
            format!(
                "no answer from sockhold at '{}': it closed the connection (it may have exited; see its log)",
                exchange.text
            ),
        ));
    }
    // sockhold closes the connection once it has replied (after `stop`:
    // once it exits, waited for below). Waiting for that, the client
    // returns once sockhold holds no fd of the exchange any more.
    let closed = match request {
        Request::Stop => Ok(()),
        _ => exchange.wait_for_close(&mut stream),
    };
    if let Some(reason) = protocol::error_reason(&line) {
        let status = if protocol::is_permission_denied(reason) {
            exit::PERMISSION
        } else {
            exit::CLIENT_FAILED
        };
        // A reload that was tried and failed is not one that was refused.
        let message = match protocol::reload_failure(reason) {
            None if reason.starts_with(protocol::UPGRADE_FAILED) => format!(
                "upgrade failed at '{}': {} (the old binary serves on; see sockhold's log)",
                exchange.text,
                &reason[protocol::UPGRADE_FAILED.len()..]
            ),
            None if reason.starts_with(protocol::UPGRADE_REFUSED) => format!(
                "upgrade refused by sockhold at '{}': {} (see sockhold's log)",
                exchange.text,
                &reason[protocol::UPGRADE_REFUSED.len()..]
            ),
            Some(failure) => format!(
                "reload failed at '{}': {failure} (see sockhold's log)",
                exchange.text
            ),
            None => format!(
                "{} refused by sockhold at '{}': {reason} (see sockhold's log)",
                request.word(),
                exchange.text
            ),
        };
        return Err(Error::new(status, message));
    }
    match (request, protocol::ok_text(&line)) {
        (Request::Status, _) if line.starts_with('{') => {
            println!("{line}");
            Ok(exit::OK)
        }
        (Request::Upgrade { .. }, Some(text)) => {
            // The new binary closes the connection once it has answered.
            println!("{text}");
            if closed.is_err() {
                return Err(exchange.timed_out(Waiting::Reply(Request::Upgrade { target: None })));
            }
            Ok(exit::OK)
        }
        (
            Request::Reload | Request::Resume | Request::Pause | Request::Scale { .. },
            Some(text),
        ) => {
            println!("{text}");
            Ok(exit::OK)
        }
        (Request::Stop, _) if line == protocol::STOPPING => {
            // The connection closes when sockhold exits: wait for that, so
            // that `stop` returns once every generation is gone.
            exchange.wait_for_close(&mut stream)?;
            Ok(exit::OK)
        }
        _ => Err(Error::new(
            exit::PROTOCOL,
            format!(
                "unexpected answer from '{}': '{}' (is that a sockhold control socket?)",
                exchange.text,
                line.chars().take(80).collect::<String>()
            ),
        )),
    }
}

/// One request and its reply, within one deadline.
struct Exchange {
    /// The control socket's path, for messages.
    text: String,
    timeout: Duration,
    deadline: Instant,
}

/// What the client was waiting for when its time ran out.
enum Waiting {
    /// connect(2), on a full queue.
    Queue,
    /// The reply to this request.
    Reply(Request),
    /// The end of the connection after `ok stopping`.
    Exit,
}

impl Exchange {
    /// Time left until the deadline; never zero (a zero timeout means
    /// "none" to the socket calls), the deadline is checked after them.
    fn left(&self) -> Duration {
        self.deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(1))
    }

    fn timed_out(&self, waiting: Waiting) -> Error {
        let reason = match waiting {
            Waiting::Queue => "its control socket's queue is full",
            Waiting::Reply(Request::Reload) => "the reload may still be under way",
            Waiting::Reply(Request::Status) => "no reply to status",
            Waiting::Reply(Request::Stop) => "no reply to stop",
            Waiting::Reply(Request::Pause) => "the old generation may still be stopping",
            Waiting::Reply(Request::Resume) => "the new generation may still be starting",
            Waiting::Reply(Request::Scale { .. }) => "the new workers may still be starting",
            Waiting::Reply(Request::Upgrade { .. }) => "the upgrade may still be under way",
            Waiting::Exit => "it is stopping and has not exited yet",
        };
        Error::new(
            exit::TIMED_OUT,
            format!(
                "no answer from sockhold at '{}' within {}: {reason} (see sockhold's log, or raise --timeout)",
                self.text,
                format_duration(self.timeout)
            ),
        )
    }

    fn unreachable(&self, errno: Errno) -> Error {
        let (status, hint) = match errno {
            Errno::EACCES | Errno::EPERM => (
                exit::PERMISSION,
                "run it as the user sockhold runs as, or as root",
            ),
            Errno::ENOENT => (
                exit::UNAVAILABLE,
                "is sockhold running with --control at that path?",
            ),
            Errno::ECONNREFUSED => (
                exit::UNAVAILABLE,
                "nobody serves that socket: sockhold is not running",
            ),
            _ => (exit::UNAVAILABLE, "see sockhold's log"),
        };
        Error::new(
            status,
            format!(
                "cannot reach sockhold at '{}': {} ({hint})",
                self.text,
                errno_text(errno)
            ),
        )
    }

    /// connect(2) with the time left as its limit: a blocking connect to a
    /// Unix socket whose queue is full waits for room for up to
    /// SO_SNDTIMEO, then fails with EAGAIN.
    fn connect(&self, target: &ClientTarget) -> Result<UnixStream, Error> {
        let address = UnixAddr::new(&target.path).map_err(|errno| self.unreachable(errno))?;
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(|errno| self.unreachable(errno))?;
        let limit = TimeVal::microseconds(self.left().as_micros().min(i64::MAX as u128) as i64);
        socket::setsockopt(&fd, sockopt::SendTimeout, &limit)
            .map_err(|errno| self.unreachable(errno))?;
        loop {
            match socket::connect(fd.as_raw_fd(), &address) {
                Ok(()) => return Ok(UnixStream::from(fd)),
                Err(Errno::EINTR) if Instant::now() < self.deadline => {}
                Err(Errno::EAGAIN | Errno::EINTR) => return Err(self.timed_out(Waiting::Queue)),
                Err(errno) => return Err(self.unreachable(errno)),
            }
        }
    }

    /// Reads until the first newline (or the end), within the deadline.
    fn read_line(
        &self,
        stream: &mut UnixStream,
        buffer: &mut Vec<u8>,
        request: Request,
    ) -> Result<String, Error> {
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = buffer.iter().position(|b| *b == b'\n') {
                buffer.truncate(end);
                break;
            }
            match self.read_some(stream, &mut chunk) {
                Ok(0) => break,
                Ok(n) => buffer.extend_from_slice(&chunk[..n]),
                Err(None) => return Err(self.timed_out(Waiting::Reply(request))),
                Err(Some(errno)) => return Err(self.unreachable(errno)),
            }
        }
        let line = String::from_utf8_lossy(buffer);
        Ok(line.trim_end_matches('\r').to_string())
    }

    /// Reads until sockhold closes the connection (it exits), within the
    /// deadline.
    fn wait_for_close(&self, stream: &mut UnixStream) -> Result<(), Error> {
        let mut chunk = [0u8; 4096];
        loop {
            match self.read_some(stream, &mut chunk) {
                Ok(0) | Err(Some(_)) => return Ok(()),
                Ok(_) => {}
                Err(None) => return Err(self.timed_out(Waiting::Exit)),
            }
        }
    }

    /// One read within the time left; `Err(None)`: the deadline passed.
    fn read_some(&self, stream: &mut UnixStream, chunk: &mut [u8]) -> Result<usize, Option<Errno>> {
        loop {
            if Instant::now() >= self.deadline {
                return Err(None);
            }
            let _ = stream.set_read_timeout(Some(self.left()));
            match stream.read(chunk) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error)
                    if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(error) => {
                    return Err(Some(Errno::from_raw(
                        error.raw_os_error().unwrap_or(Errno::EIO as i32),
                    )));
                }
            }
        }
    }
}
