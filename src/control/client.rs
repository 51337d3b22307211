//! The client side of the control socket (`sockhold reload|status|stop
//! --control PATH`): one request, one reply, one exit status. It prints
//! only a successful answer, to stdout; every failure is an `Error`.

use super::protocol::{self, Request};
use crate::error::{Error, errno_text, exit};
use nix::errno::Errno;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;

/// The client: sends `request` to the control socket at `path`, prints the
/// answer, and returns the exit status (0 on success).
pub fn run_client(path: &Path, request: Request) -> Result<i32, Error> {
    let text = path.display().to_string();
    let unreachable = |error: std::io::Error| {
        let errno = Errno::from_raw(error.raw_os_error().unwrap_or(Errno::EIO as i32));
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
                "cannot reach sockhold at '{text}': {} ({hint})",
                errno_text(errno)
            ),
        )
    };
    let mut stream = std::os::unix::net::UnixStream::connect(path).map_err(unreachable)?;
    // A refused write (sockhold already replied and closed) is not the
    // end: its reply may be waiting to be read.
    let _ = stream.write_all(&protocol::line(request.word()));
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(unreachable)?;
    let line = line.trim_end_matches(['\n', '\r']);
    if line.is_empty() {
        return Err(Error::new(
            exit::UNAVAILABLE,
            format!(
                "no answer from sockhold at '{text}': it closed the connection (it may have exited; see its log)"
            ),
        ));
    }
    if let Some(reason) = protocol::error_reason(line) {
        let status = if protocol::is_permission_denied(reason) {
            exit::PERMISSION
        } else {
            exit::CLIENT_FAILED
        };
        return Err(Error::new(
            status,
            format!(
                "{} refused by sockhold at '{text}': {reason} (see sockhold's log)",
                request.word()
            ),
        ));
    }
    match (request, protocol::ok_text(line)) {
        (Request::Status, _) if line.starts_with('{') => {
            println!("{line}");
            Ok(exit::OK)
        }
        (Request::Reload, Some(text)) => {
            println!("{text}");
            Ok(exit::OK)
        }
        (Request::Stop, _) if line == protocol::STOPPING => {
            // The connection closes when sockhold exits: wait for that, so
            // that `stop` returns once every generation is gone.
            let mut rest = Vec::new();
            let _ = reader.read_to_end(&mut rest);
            Ok(exit::OK)
        }
        _ => Err(Error::new(
            exit::PROTOCOL,
            format!(
                "unexpected answer from '{text}': '{}' (is that a sockhold control socket?)",
                line.chars().take(80).collect::<String>()
            ),
        )),
    }
}
