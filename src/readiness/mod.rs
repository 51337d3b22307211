//! The sd_notify protocol between sockhold and its children: one datagram
//! socket per generation, named in the child's NOTIFY_SOCKET, whose messages
//! carry the sender's pid (SO_PASSCRED) so that only that generation's
//! processes can declare it ready. See sd_notify(3).
//! `observer`: from /proc, whether a generation takes from the held sockets.

pub mod observer;
mod proc_parse;

use nix::errno::Errno;
use nix::sys::socket::{
    self, AddressFamily, ControlMessageOwned, MsgFlags, SockFlag, SockType, UnixAddr, sockopt,
};
use nix::unistd::Pid;
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// Largest datagram read; sd_notify messages are short text.
const MAX_MESSAGE: usize = 4096;

/// The most fds one datagram can carry (the kernel's SCM_MAX_FD). Room for
/// all of them keeps the credentials readable when a sender passes fds
/// (`BARRIER=1`, `FDSTORE=1`): a truncated control buffer loses them all.
const MAX_PASSED_FDS: usize = 253;

/// A generation's notify socket, in the abstract namespace with a name the
/// kernel picks (autobind), so that two sockholds sharing a network
/// namespace (containers in one pod) never collide and nothing is left on
/// disk.
#[derive(Debug)]
pub struct NotifySocket {
    fd: OwnedFd,
    /// The value for the child's NOTIFY_SOCKET (`@` + abstract name).
    address: String,
}

/// One datagram received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotifyMessage {
    /// The sender's pid as the kernel vouches for it.
    pub sender: Option<Pid>,
    pub ready: bool,
    pub stopping: bool,
    pub status: Option<String>,
}

impl NotifySocket {
    pub fn new() -> Result<NotifySocket, Errno> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        // Ask the kernel for each sender's credentials with every message.
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        // An unnamed address makes the kernel choose a unique abstract name
        // (autobind, see unix(7)).
        socket::bind(fd.as_raw_fd(), &UnixAddr::new_unnamed())?;
        let bound: UnixAddr = socket::getsockname(fd.as_raw_fd())?;
        let name = bound.as_abstract().ok_or(Errno::EINVAL)?;
        let address = format!("@{}", String::from_utf8_lossy(name));
        Ok(NotifySocket { fd, address })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The next waiting message, or `None` when there is none left.
    pub fn receive(&self) -> Result<Option<NotifyMessage>, Errno> {
        let mut buffer = [0u8; MAX_MESSAGE];
        let mut control = nix::cmsg_space!(socket::UnixCredentials, [RawFd; MAX_PASSED_FDS]);
        let mut iov = [IoSliceMut::new(&mut buffer)];
        let message = match socket::recvmsg::<()>(
            self.fd.as_raw_fd(),
            &mut iov,
            Some(&mut control),
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Ok(message) => message,
            Err(Errno::EAGAIN) => return Ok(None),
            Err(errno) => return Err(errno),
        };
        let mut sender = None;
        match message.cmsgs() {
            Ok(cmsgs) => {
                for cmsg in cmsgs {
                    match cmsg {
                        ControlMessageOwned::ScmCredentials(credentials) => {
                            sender = Some(Pid::from_raw(credentials.pid()));
                        }
                        // sockhold keeps no fd store: passed fds are closed
                        // at once, which is also what completes a sender's
                        // BARRIER=1 (every earlier message was read).
                        ControlMessageOwned::ScmRights(fds) => {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                        _ => {}
                    }
                }
            }
            // The kernel closed whatever did not fit.
            Err(errno) => log::debug!("notify message with a truncated control part: {errno}"),
        }
        let length = message.bytes;
        let text = String::from_utf8_lossy(&buffer[..length]);
        Ok(Some(parse_message(sender, &text)))
    }
}

/// Reads the `KEY=VALUE` lines of one datagram.
pub fn parse_message(sender: Option<Pid>, text: &str) -> NotifyMessage {
    let mut message = NotifyMessage {
        sender,
        ready: false,
        stopping: false,
        status: None,
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => message.ready = true,
            Some(("STOPPING", "1")) => message.stopping = true,
            Some(("STATUS", status)) => message.status = Some(status.to_owned()),
            _ => {}
        }
    }
    message
}

/// Whether `pid` is `ancestor` or one of its descendants, by walking parent
/// pids in /proc. A sender that has already exited cannot be checked and
/// does not count.
pub fn is_same_or_descendant(pid: Pid, ancestor: Pid) -> bool {
    let mut current = pid;
    // A process tree deeper than this is not a server's.
    for _ in 0..64 {
        if current == ancestor {
            return true;
        }
        match parent_of(current) {
            Some(parent) if parent.as_raw() > 1 => current = parent,
            _ => return false,
        }
    }
    false
}

fn parent_of(pid: Pid) -> Option<Pid> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: the fields that
    // follow start after the last ')'. Field 4 is the parent pid.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let parent: i32 = after_name.split_whitespace().nth(1)?.parse().ok()?;
    Some(Pid::from_raw(parent))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ready_status_and_stopping() {
        let message = parse_message(None, "READY=1\nSTATUS=serving 3 clients\nMAINPID=7\n");
        assert!(message.ready);
        assert!(!message.stopping);
        assert_eq!(message.status.as_deref(), Some("serving 3 clients"));
        assert!(parse_message(None, "STOPPING=1").stopping);
        assert!(!parse_message(None, "READY=0").ready);
    }

    #[test]
    fn a_process_descends_from_its_parent_and_itself() {
        let me = nix::unistd::getpid();
        assert!(is_same_or_descendant(me, me));
        assert!(is_same_or_descendant(me, nix::unistd::getppid()));
        assert!(!is_same_or_descendant(nix::unistd::getppid(), me));
    }

    #[test]
    fn notify_socket_receives_with_sender_pid() {
        let notify = NotifySocket::new().unwrap();
        assert!(notify.address().starts_with('@'));
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let name = &notify.address()[1..];
        let address =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name)
                .unwrap();
        sender.send_to_addr(b"READY=1", &address).unwrap();
        let message = notify.receive().unwrap().unwrap();
        assert!(message.ready);
        assert_eq!(message.sender, Some(nix::unistd::getpid()));
        assert_eq!(notify.receive().unwrap(), None);
    }
}
