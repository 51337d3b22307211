//! The sd_notify protocol between sockhold and its children: one datagram
//! socket per generation, named in the child's NOTIFY_SOCKET. The socket is
//! a file in a private directory (mode 0700, a random name, see
//! `NotifySocket::new`), so that only sockhold's user and root can reach
//! it, and every message carries its sender's credentials (SO_PASSCRED):
//! a message counts when the kernel says it comes from sockhold's user or
//! root, whether or not the sender still runs. See sd_notify(3), unix(7).
//! `observer`: from /proc, whether a generation takes from the held sockets.

pub mod observer;
mod proc_parse;

use crate::error::errno_text;
use crate::quiet_log::QuietLog;
use nix::errno::Errno;
use nix::sys::socket::{self, AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
use nix::unistd::{Pid, Uid};
use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Largest datagram read; sd_notify messages are short text.
const MAX_MESSAGE: usize = 4096;

/// The most messages read from one notify socket per wakeup: a child that
/// sends without pause must not keep sockhold from its other work. What is
/// left is read on the next turn of the event loop.
pub const MESSAGES_PER_WAKEUP: usize = 64;

/// The private directory's name (mkdtemp(3) fills in the X's) and the
/// socket file in it.
const DIRECTORY_TEMPLATE: &str = "sockhold-XXXXXX";
const SOCKET_FILE: &str = "notify";

/// Set once the abstract fallback has been announced.
static ABSTRACT_FALLBACK_TOLD: AtomicBool = AtomicBool::new(false);

/// A generation's notify socket: a socket file in a directory of its own
/// that only sockhold's user (and root) may enter, removed with the socket.
/// Where no such directory can be made, an abstract socket instead (which
/// any local user can reach; their messages do not count).
#[derive(Debug)]
pub struct NotifySocket {
    fd: OwnedFd,
    /// The value for the child's NOTIFY_SOCKET: the socket file's path
    /// (or `@` + the abstract name).
    address: String,
    /// The private directory, removed (with the socket file) on drop.
    directory: Option<PathBuf>,
    /// sockhold's effective uid when the socket was made (after any
    /// `--user` drop): its messages count, as root's do.
    owner: Uid,
    /// Messages refused by their sender's uid, logged once per interval.
    refused: QuietLog,
    /// Set once an FDSTORE=1 with fds has been told about.
    fd_store_told: bool,
}

/// One datagram received.
#[derive(Debug)]
pub struct NotifyMessage {
    /// The sender's pid and uid as the kernel vouches for them.
    pub sender: Option<Pid>,
    pub sender_uid: Option<Uid>,
    pub ready: bool,
    pub stopping: bool,
    pub status: Option<String>,
    /// `FDSTORE=1`: the sender asks sockhold to keep `fds` (`fd_store.rs`).
    pub fd_store: bool,
    /// `FDSTOREREMOVE=1`: the sender asks sockhold to drop the stored fds
    /// named `fd_name`.
    pub fd_store_remove: bool,
    /// `FDNAME=`, as sent (checked by the fd store).
    pub fd_name: Option<String>,
    /// False with `FDPOLL=0`: the fds stored are not dropped on POLLHUP.
    pub fd_poll: bool,
    /// The fds that came with it (SCM_RIGHTS; CLOEXEC, so no child gets
    /// them): the write end of a pipe for `BARRIER=1`, fds to store for
    /// `FDSTORE=1`. What the fd store does not take is closed when the
    /// message is dropped, after its sender was checked and what it says
    /// was acted on (which is what answers a barrier).
    pub fds: Vec<OwnedFd>,
}

impl NotifySocket {
    /// A new notify socket in a private directory under the first of
    /// `$RUNTIME_DIRECTORY` (systemd's RuntimeDirectory=),
    /// `$XDG_RUNTIME_DIR`, `/run/user/UID`, `$TMPDIR` and `/tmp` where one
    /// can be made; an abstract socket, with a warning (once), where none
    /// can.
    pub fn new() -> Result<NotifySocket, Errno> {
        let owner = nix::unistd::geteuid();
        let bases = directory_bases(|name| std::env::var_os(name), owner);
        NotifySocket::in_first_of(&bases, owner)
    }

    fn in_first_of(bases: &[PathBuf], owner: Uid) -> Result<NotifySocket, Errno> {
        let fd = socket::socket(
            AddressFamily::Unix,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
            None,
        )?;
        // Ask the kernel for each sender's credentials with every message.
        socket::setsockopt(&fd, sockopt::PassCred, &true)?;
        let mut failures = Vec::new();
        for base in bases {
            match bind_in_private_directory(&fd, base, owner) {
                Ok((directory, address)) => {
                    return Ok(NotifySocket {
                        fd,
                        address,
                        directory: Some(directory),
                        owner,
                        refused: QuietLog::default(),
                        fd_store_told: false,
                    });
                }
                Err(reason) => failures.push(format!("{}: {reason}", base.display())),
            }
        }
        if !ABSTRACT_FALLBACK_TOLD.swap(true, Ordering::Relaxed) {
            log::warn!(
                "cannot make a private directory for the notify sockets ({}): using abstract sockets, which any local user can send to (only messages from sockhold's user and root count)",
                failures.join("; ")
            );
        }
        // An unnamed address makes the kernel choose a unique abstract name
        // (autobind, see unix(7)).
        socket::bind(fd.as_raw_fd(), &UnixAddr::new_unnamed())?;
        let bound: UnixAddr = socket::getsockname(fd.as_raw_fd())?;
        let name = bound.as_abstract().ok_or(Errno::EINVAL)?;
        let address = format!("@{}", String::from_utf8_lossy(name));
        Ok(NotifySocket {
            fd,
            address,
            directory: None,
            owner,
            refused: QuietLog::default(),
            fd_store_told: false,
        })
    }

    pub fn address(&self) -> &str {
        &self.address
    }

    /// The private directory, if any (an upgrade carries it).
    pub fn directory(&self) -> Option<&std::path::Path> {
        self.directory.as_deref()
    }

    /// A notify socket the sockhold this one replaced made (`upgrade/`):
    /// the same socket, file and directory, removed when dropped.
    pub fn adopt(
        fd: OwnedFd,
        address: String,
        directory: Option<PathBuf>,
        owner: Uid,
    ) -> NotifySocket {
        NotifySocket {
            fd,
            address,
            directory,
            owner,
            refused: QuietLog::default(),
            fd_store_told: false,
        }
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Whether a message counts: the kernel reports that its sender runs as
    /// sockhold's user or as root, the only users that can reach the
    /// socket file. Whether the sender is one of the generation's processes
    /// is not asked: a helper (`systemd-notify --ready` in a script) may
    /// have exited before it could be looked up.
    pub fn trusts(&self, message: &NotifyMessage) -> bool {
        is_trusted_uid(message.sender_uid, self.owner)
    }

    /// sockhold's uid, whose messages count (as root's do).
    pub fn owner(&self) -> Uid {
        self.owner
    }

    /// True the first time only: an FDSTORE=1 is told about once per
    /// generation.
    pub fn first_fd_store(&mut self) -> bool {
        !std::mem::replace(&mut self.fd_store_told, true)
    }

    /// The quiet log of refused messages.
    pub fn refusals(&mut self) -> &mut QuietLog {
        &mut self.refused
    }

    /// The next waiting message, or `None` when there is none left.
    pub fn receive(&self) -> Result<Option<NotifyMessage>, Errno> {
        let mut buffer = [0u8; MAX_MESSAGE];
        let Some(received) = crate::net::receive_with_credentials(self.fd.as_fd(), &mut buffer)?
        else {
            return Ok(None);
        };
        if received.truncated {
            // The kernel closed whatever did not fit.
            log::debug!("notify message with a truncated control part");
        }
        let text = String::from_utf8_lossy(&buffer[..received.bytes]);
        let mut message = parse_message(received.sender, &text);
        message.sender_uid = received.sender_uid;
        message.fds = received.fds;
        Ok(Some(message))
    }
}

impl Drop for NotifySocket {
    /// No file left behind: the socket file and its directory go with the
    /// socket (a generation forgotten, sockhold exiting). Only sockhold's
    /// user and root can write in the directory, so what is there is
    /// sockhold's.
    fn drop(&mut self) {
        let Some(directory) = &self.directory else {
            return;
        };
        let _ = std::fs::remove_file(directory.join(SOCKET_FILE));
        match std::fs::remove_dir(directory) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => log::warn!(
                "cannot remove the notify socket's directory '{}': {error}",
                directory.display()
            ),
        }
    }
}

/// Where a notify socket's private directory may go, in order of
/// preference: the service's runtime directory, the user's, then the
/// temporary directory. Absolute paths only (the XDG rule); `lookup` reads
/// the environment.
fn directory_bases(lookup: impl Fn(&str) -> Option<OsString>, owner: Uid) -> Vec<PathBuf> {
    let mut bases = Vec::new();
    // systemd joins several RuntimeDirectory= entries with ':'.
    if let Some(value) = lookup("RUNTIME_DIRECTORY") {
        bases.extend(std::env::split_paths(&value));
    }
    bases.extend(lookup("XDG_RUNTIME_DIR").map(PathBuf::from));
    bases.push(PathBuf::from(format!("/run/user/{owner}")));
    bases.extend(lookup("TMPDIR").map(PathBuf::from));
    bases.push(PathBuf::from("/tmp"));
    let mut unique: Vec<PathBuf> = Vec::new();
    for base in bases {
        if base.is_absolute() && !unique.contains(&base) {
            unique.push(base);
        }
    }
    unique
}

/// Makes a private directory under `base` and binds `fd` to a socket file
/// in it; returns the directory and the socket's path, or why not.
fn bind_in_private_directory(
    fd: &OwnedFd,
    base: &Path,
    owner: Uid,
) -> Result<(PathBuf, String), String> {
    // NOTIFY_SOCKET is text, and sun_path is short (108 bytes).
    let template = base.join(DIRECTORY_TEMPLATE);
    let Some(path) = template.join(SOCKET_FILE).to_str().map(str::to_owned) else {
        return Err("not valid UTF-8".into());
    };
    UnixAddr::new(path.as_str()).map_err(|_| "too long for a socket path".to_string())?;
    let found = nix::sys::stat::stat(base).map_err(errno_text)?;
    if found.st_mode & nix::libc::S_IFMT != nix::libc::S_IFDIR {
        return Err("not a directory".into());
    }
    // Whoever owns the base directory can rename what is in it: only
    // sockhold's user's or root's.
    if found.st_uid != owner.as_raw() && found.st_uid != 0 {
        return Err(format!("owned by uid {}", found.st_uid));
    }
    let directory = nix::unistd::mkdtemp(&template).map_err(errno_text)?;
    let bound = (|| {
        // mkdtemp(3) asks for 0700, which a umask may narrow further.
        std::fs::set_permissions(&directory, std::fs::Permissions::from_mode(0o700))
            .map_err(|error| error.to_string())?;
        let path = directory.join(SOCKET_FILE);
        let address = UnixAddr::new(&path).map_err(errno_text)?;
        socket::bind(fd.as_raw_fd(), &address).map_err(errno_text)?;
        // mkdtemp's name is as valid UTF-8 as its template.
        Ok(path.to_string_lossy().into_owned())
    })();
    match bound {
        Ok(path) => Ok((directory, path)),
        Err(reason) => {
            let _ = std::fs::remove_dir(&directory);
            Err(reason)
        }
    }
}

/// The trust rule (see `NotifySocket::trusts`).
fn is_trusted_uid(sender: Option<Uid>, owner: Uid) -> bool {
    sender.is_some_and(|uid| uid == owner || uid.is_root())
}

/// Reads the `KEY=VALUE` lines of one datagram.
pub fn parse_message(sender: Option<Pid>, text: &str) -> NotifyMessage {
    let mut message = NotifyMessage {
        sender,
        sender_uid: None,
        ready: false,
        stopping: false,
        status: None,
        fd_store: false,
        fd_store_remove: false,
        fd_name: None,
        fd_poll: true,
        fds: Vec::new(),
    };
    for line in text.lines() {
        match line.split_once('=') {
            Some(("READY", "1")) => message.ready = true,
            Some(("STOPPING", "1")) => message.stopping = true,
            Some(("FDSTORE", "1")) => message.fd_store = true,
            Some(("FDSTOREREMOVE", "1")) => message.fd_store_remove = true,
            Some(("FDNAME", name)) => message.fd_name = Some(name.to_owned()),
            Some(("FDPOLL", "0")) => message.fd_poll = false,
            Some(("STATUS", status)) => message.status = Some(status.to_owned()),
            _ => {}
        }
    }
    message
}

/// Whether `pid` is `ancestor` or one of its descendants, by walking parent
/// pids in /proc. A sender that has already exited cannot be checked: the
/// answer is then false. For debug notes only (see `NotifySocket::trusts`).
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
    fn parses_the_fd_store_fields() {
        let message = parse_message(None, "FDSTORE=1\nFDNAME=conn-7\nFDPOLL=0");
        assert!(message.fd_store && !message.fd_store_remove && !message.fd_poll);
        assert_eq!(message.fd_name.as_deref(), Some("conn-7"));
        let message = parse_message(None, "FDSTOREREMOVE=1\nFDNAME=");
        assert!(message.fd_store_remove && !message.fd_store && message.fd_poll);
        assert_eq!(message.fd_name.as_deref(), Some(""));
        let message = parse_message(None, "FDSTORE=1");
        assert_eq!(message.fd_name, None);
        assert!(message.fd_poll);
    }

    #[test]
    fn a_process_descends_from_its_parent_and_itself() {
        let me = nix::unistd::getpid();
        assert!(is_same_or_descendant(me, me));
        assert!(is_same_or_descendant(me, nix::unistd::getppid()));
        assert!(!is_same_or_descendant(nix::unistd::getppid(), me));
    }

    fn in_dir(dir: &Path) -> NotifySocket {
        NotifySocket::in_first_of(&[dir.to_path_buf()], nix::unistd::geteuid()).unwrap()
    }

    fn scratch_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("shn{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        dir
    }

    #[test]
    fn notify_socket_is_a_file_in_a_private_directory_gone_on_drop() {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        let base = scratch_dir("private");
        let notify = in_dir(&base);
        let path = PathBuf::from(notify.address());
        let directory = path.parent().unwrap().to_path_buf();
        assert_eq!(directory.parent(), Some(base.as_path()));
        let name = directory.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with("sockhold-") && name.len() == 15, "{name}");
        let meta = std::fs::metadata(&directory).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
        let other = in_dir(&base);
        assert_ne!(other.address(), notify.address(), "a random name each");
        drop(notify);
        assert!(!directory.exists());
        drop(other);
        assert_eq!(std::fs::read_dir(&base).unwrap().count(), 0);
        std::fs::remove_dir(&base).unwrap();
    }

    #[test]
    fn notify_socket_receives_with_sender_pid_and_uid() {
        let base = scratch_dir("receive");
        let notify = in_dir(&base);
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        sender.send_to(b"READY=1", notify.address()).unwrap();
        let message = notify.receive().unwrap().unwrap();
        assert!(message.ready);
        assert_eq!(message.sender, Some(nix::unistd::getpid()));
        assert_eq!(message.sender_uid, Some(nix::unistd::geteuid()));
        assert!(notify.trusts(&message));
        assert!(notify.receive().unwrap().is_none());
        drop(notify);
        std::fs::remove_dir(&base).unwrap();
    }

    #[test]
    fn passed_fds_are_cloexec_and_closed_once_the_message_is_dropped() {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use nix::sys::socket::{ControlMessage, MsgFlags, sendmsg};
        let base = scratch_dir("fds");
        let notify = in_dir(&base);
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let address = UnixAddr::new(notify.address()).unwrap();
        // BARRIER=1 as sd_notify_barrier(3) sends it: a pipe's write end.
        let (read, write) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let fds = [write.as_raw_fd()];
        let iov = [std::io::IoSlice::new(b"FDSTORE=1\nBARRIER=1")];
        sendmsg(
            sender.as_raw_fd(),
            &iov,
            &[ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            Some(&address),
        )
        .unwrap();
        drop(write);
        let hung_up = || {
            let mut fds = [PollFd::new(read.as_fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() > 0
        };
        let message = notify.receive().unwrap().unwrap();
        assert!(message.fd_store);
        assert_eq!(message.sender_uid, Some(nix::unistd::geteuid()));
        assert_eq!(message.fds.len(), 1);
        let flags = nix::fcntl::fcntl(&message.fds[0], nix::fcntl::FcntlArg::F_GETFD).unwrap();
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC)
        );
        // Held until the message is dealt with: the barrier is not answered yet.
        assert!(
            !hung_up(),
            "the passed fd was closed before the message was handled"
        );
        drop(message);
        assert!(hung_up(), "the passed fd is closed with the message");
        drop(notify);
        std::fs::remove_dir(&base).unwrap();
    }

    #[test]
    fn without_a_usable_directory_the_socket_is_abstract() {
        let missing = PathBuf::from("/nonexistent/sockhold-test");
        let too_long = PathBuf::from(format!("/tmp/{}", "x".repeat(100)));
        let notify =
            NotifySocket::in_first_of(&[missing, too_long], nix::unistd::geteuid()).unwrap();
        assert!(notify.address().starts_with('@'), "{}", notify.address());
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let address =
            <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(
                &notify.address()[1..],
            )
            .unwrap();
        sender.send_to_addr(b"READY=1", &address).unwrap();
        assert!(notify.receive().unwrap().unwrap().ready);
    }

    #[test]
    fn only_sockhold_s_user_and_root_are_trusted() {
        let me = Uid::from_raw(1000);
        assert!(is_trusted_uid(Some(me), me));
        assert!(is_trusted_uid(Some(Uid::from_raw(0)), me));
        assert!(!is_trusted_uid(Some(Uid::from_raw(65534)), me));
        assert!(!is_trusted_uid(None, me));
        assert!(is_trusted_uid(Some(Uid::from_raw(0)), Uid::from_raw(0)));
        assert!(!is_trusted_uid(Some(me), Uid::from_raw(0)));
    }

    #[test]
    fn directories_come_from_the_runtime_then_the_temporary_directory() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(key, _)| *key == name)
                    .map(|(_, value)| OsString::from(value))
            }
        };
        let uid = Uid::from_raw(1000);
        assert_eq!(
            directory_bases(env(&[]), uid),
            [PathBuf::from("/run/user/1000"), PathBuf::from("/tmp")]
        );
        assert_eq!(
            directory_bases(
                env(&[
                    ("RUNTIME_DIRECTORY", "/run/app:/run/app2"),
                    ("XDG_RUNTIME_DIR", "/run/user/1000"),
                    ("TMPDIR", "relative/tmp"),
                ]),
                uid
            ),
            [
                PathBuf::from("/run/app"),
                PathBuf::from("/run/app2"),
                PathBuf::from("/run/user/1000"),
                PathBuf::from("/tmp"),
            ]
        );
    }

    /// Why a notify socket left with messages after a wakeup's share is
    /// registered again: epoll reports it edge-triggered, so what is left
    /// would otherwise wait for the next datagram; registering it again
    /// reports what is queued at once.
    #[test]
    fn a_socket_left_with_messages_is_reported_again_once_registered_again() {
        use mio::unix::SourceFd;
        use mio::{Events, Interest, Poll, Token};
        use std::time::Duration;
        let base = scratch_dir("rearm");
        let notify = in_dir(&base);
        let mut poll = Poll::new().unwrap();
        let fd = notify.fd().as_raw_fd();
        let register = |poll: &Poll| {
            poll.registry()
                .register(&mut SourceFd(&fd), Token(1), Interest::READABLE)
                .unwrap()
        };
        register(&poll);
        let sender = std::os::unix::net::UnixDatagram::unbound().unwrap();
        for _ in 0..4 {
            sender.send_to(b"STATUS=x", notify.address()).unwrap();
        }
        let mut events = Events::with_capacity(4);
        poll.poll(&mut events, Some(Duration::from_secs(5)))
            .unwrap();
        assert_eq!(events.iter().count(), 1);
        // Read a share, leave the rest.
        assert!(notify.receive().unwrap().is_some());
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), 0, "edge-triggered: not again");
        poll.registry().deregister(&mut SourceFd(&fd)).unwrap();
        register(&poll);
        poll.poll(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(events.iter().count(), 1, "reported again once registered");
        drop(notify);
        std::fs::remove_dir(&base).unwrap();
    }
}
