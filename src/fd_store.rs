//! The fd store (`--fd-store-max`): fds that a child hands sockhold with
//! `FDSTORE=1` on its NOTIFY_SOCKET (systemd's protocol, sd_notify(3)),
//! kept for every child started later (reloads, restarts, workers), which
//! gets them after the held sockets, counted in LISTEN_FDS and named in
//! LISTEN_FDNAMES. `FDSTOREREMOVE=1` drops them by name.
//!
//! Invariants:
//! - A stored fd is sockhold's alone and CLOEXEC (received with
//!   MSG_CMSG_CLOEXEC): a child gets its copy at its place only
//!   (`spawn.rs`).
//! - No open file is stored twice, and none that is a held socket: a child
//!   never gets one file at two numbers (`net::same_open_file`, the rule of
//!   systemd's `same_fd`).
//! - A stored fd that reports POLLHUP or POLLERR leaves the store (unless
//!   stored with `FDPOLL=0`), as in systemd. The stored fds are watched in
//!   an epoll set of their own with no events asked for (epoll(7) reports
//!   HUP and ERR always, and nothing else then), which the event loop
//!   watches as one source: a busy fd wakes nobody, and a reported fd is
//!   removed at once, so none is reported twice.

use crate::engine::Context;
use crate::net;
use crate::readiness::NotifyMessage;
use nix::errno::Errno;
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};

/// systemd's name for fds stored without a (valid) `FDNAME=`.
pub const DEFAULT_NAME: &str = "stored";
/// systemd's FDNAME_MAX.
pub const MAX_NAME_BYTES: usize = 255;
/// The largest `--fd-store-max`: the fds are passed to every child, which
/// has to have room for them all under its RLIMIT_NOFILE.
pub const MAX_FDS: usize = 4096;
/// The engine source key of the store's epoll set: a bit that no other
/// source key has (notify sockets use the generation id, far below it;
/// `--maintenance` connections 1 << 28 and up; `--intercept-bind` bit
/// 29), and that fits a 32-bit `usize` token (`engine::TOKEN_QUARTER`).
const KEY: u64 = 1 << 27;
/// Hang-ups read per `epoll_wait`; the set is read until it is empty.
const HANGUPS_PER_READ: usize = 64;

/// Why `name` is not a valid FDNAME= (systemd's `fdname_is_valid`:
/// printable ASCII without `:`, the LISTEN_FDNAMES separator, at most 255
/// bytes; empty is valid), or None.
pub fn name_problem(name: &str) -> Option<&'static str> {
    if name.len() > MAX_NAME_BYTES {
        Some("longer than 255 characters")
    } else if name.contains(':') {
        Some("':' separates the names in LISTEN_FDNAMES")
    } else if !name.bytes().all(|byte| (b' '..0x7f).contains(&byte)) {
        Some("only printable ASCII characters may be in a name")
    } else {
        None
    }
}

/// What a stored fd is, as `status` and the log say it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FdKind {
    Socket,
    Pipe,
    File,
    Directory,
    Device,
    Other,
}

impl FdKind {
    pub fn of(fd: BorrowedFd<'_>) -> FdKind {
        use nix::libc;
        let Ok(stat) = nix::sys::stat::fstat(fd) else {
            return FdKind::Other;
        };
        match stat.st_mode & libc::S_IFMT {
            libc::S_IFSOCK => FdKind::Socket,
            libc::S_IFIFO => FdKind::Pipe,
            libc::S_IFREG => FdKind::File,
            libc::S_IFDIR => FdKind::Directory,
            libc::S_IFCHR | libc::S_IFBLK => FdKind::Device,
            // eventfd, timerfd, epoll, pidfd: anonymous inodes.
            _ => FdKind::Other,
        }
    }

    pub fn word(self) -> &'static str {
        match self {
            FdKind::Socket => "socket",
            FdKind::Pipe => "pipe",
            FdKind::File => "file",
            FdKind::Directory => "directory",
            FdKind::Device => "device",
            FdKind::Other => "other",
        }
    }
}

struct Entry {
    /// The epoll set's data for it.
    id: u64,
    name: String,
    kind: FdKind,
    fd: OwnedFd,
    /// In the epoll set (not with `FDPOLL=0`, nor for a file epoll cannot
    /// watch: regular files and directories).
    polled: bool,
}

/// What one offer of fds came to.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Offered {
    /// The kinds of the fds stored.
    pub stored: Vec<FdKind>,
    /// Not stored: already in the store (by any name).
    pub duplicates: usize,
    /// Not stored: a held socket, by its index among them.
    pub held: Vec<usize>,
    /// Not stored: over the limit.
    pub over_limit: usize,
}

/// One stored fd, as `status` shows it.
pub struct StoredFd<'a> {
    pub name: &'a str,
    pub kind: FdKind,
}

pub struct FdStore {
    /// `--fd-store-max`: 0 keeps nothing.
    max: usize,
    /// In the order stored, which is the order children get them in.
    entries: Vec<Entry>,
    next_id: u64,
    /// The epoll set of the polled entries, made with the first one.
    watch: Option<Epoll>,
}

impl FdStore {
    pub fn new(max: usize) -> FdStore {
        FdStore {
            max,
            entries: Vec::new(),
            next_id: 0,
            watch: None,
        }
    }

    pub fn is_off(&self) -> bool {
        self.max == 0
    }

    /// `--fd-store-max`, which children find in `FDSTORE` when it is on
    /// (as systemd sets it to FileDescriptorStoreMax=, systemd.exec(5)).
    pub fn max(&self) -> usize {
        self.max
    }

    /// Whether an engine source key is the store's.
    pub fn owns(key: u64) -> bool {
        key == KEY
    }

    /// The stored fds, in the order children get them (after the held
    /// sockets).
    pub fn fds(&self) -> impl Iterator<Item = RawFd> + '_ {
        self.entries.iter().map(|entry| entry.fd.as_raw_fd())
    }

    /// Their LISTEN_FDNAMES names, in the same order.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        self.entries.iter().map(|entry| entry.name.as_str())
    }

    /// Each stored fd with whether it is polled and its name, for an
    /// upgrade (`upgrade/`).
    pub fn carried(&self) -> impl Iterator<Item = (RawFd, bool, &str)> + '_ {
        self.entries
            .iter()
            .map(|entry| (entry.fd.as_raw_fd(), entry.polled, entry.name.as_str()))
    }

    /// The store the sockhold this one replaced kept (`upgrade/`), in its
    /// order, watched for hang-ups again.
    pub fn restore(&mut self, fds: Vec<(OwnedFd, bool, String)>, context: &Context<'_>) {
        let mut made_watch = false;
        for (fd, poll, name) in fds {
            let id = self.next_id;
            self.next_id += 1;
            let polled = poll && {
                let (polled, made) = self.watch_entry(fd.as_fd(), id);
                made_watch |= made;
                polled
            };
            let kind = FdKind::of(fd.as_fd());
            self.entries.push(Entry {
                id,
                name,
                kind,
                fd,
                polled,
            });
        }
        if made_watch {
            if let Some(epoll) = &self.watch {
                context.watch(epoll.0.as_raw_fd(), KEY, "the fd store");
            }
        }
    }

    pub fn stored(&self) -> impl Iterator<Item = StoredFd<'_>> + '_ {
        self.entries.iter().map(|entry| StoredFd {
            name: &entry.name,
            kind: entry.kind,
        })
    }

    /// Stores `fds` as `name` where they fit: none twice, no held socket,
    /// at most `max` in all (in the order given; the rest are closed).
    /// `poll`: dropped again on POLLHUP/POLLERR. Returns what was done and
    /// whether the epoll set was just made (for the caller to watch).
    pub fn offer(
        &mut self,
        fds: Vec<OwnedFd>,
        name: &str,
        poll: bool,
        held: &[BorrowedFd<'_>],
    ) -> (Offered, bool) {
        let mut offered = Offered::default();
        let mut made_watch = false;
        for fd in fds {
            if let Some(index) = held
                .iter()
                .position(|socket| net::same_open_file(socket.as_fd(), fd.as_fd()))
            {
                offered.held.push(index);
                continue;
            }
            if self
                .entries
                .iter()
                .any(|entry| net::same_open_file(entry.fd.as_fd(), fd.as_fd()))
            {
                offered.duplicates += 1;
                continue;
            }
            if self.entries.len() >= self.max {
                offered.over_limit += 1;
                continue;
            }
            let id = self.next_id;
            self.next_id += 1;
            let polled = poll && {
                let (polled, made) = self.watch_entry(fd.as_fd(), id);
                made_watch |= made;
                polled
            };
            let kind = FdKind::of(fd.as_fd());
            offered.stored.push(kind);
            self.entries.push(Entry {
                id,
                name: name.to_owned(),
                kind,
                fd,
                polled,
            });
        }
        (offered, made_watch)
    }

    /// Adds `fd` to the epoll set (made now if there is none yet); returns
    /// whether it is watched and whether the set was just made.
    fn watch_entry(&mut self, fd: BorrowedFd<'_>, id: u64) -> (bool, bool) {
        let mut made = false;
        if self.watch.is_none() {
            match Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC) {
                Ok(epoll) => {
                    self.watch = Some(epoll);
                    made = true;
                }
                Err(errno) => {
                    log::warn!(
                        "fd store: cannot watch the stored fds for hang-ups: {}",
                        crate::error::errno_text(errno)
                    );
                    return (false, false);
                }
            }
        }
        let Some(epoll) = &self.watch else {
            return (false, made);
        };
        // No events asked for: epoll reports EPOLLHUP and EPOLLERR anyway.
        match epoll.add(fd, EpollEvent::new(EpollFlags::empty(), id)) {
            Ok(()) => (true, made),
            // Regular files and directories cannot be polled; systemd
            // keeps them all the same.
            Err(Errno::EPERM) => (false, made),
            Err(errno) => {
                log::warn!(
                    "fd store: cannot watch a stored fd for hang-ups: {}",
                    crate::error::errno_text(errno)
                );
                (false, made)
            }
        }
    }

    /// Drops every stored fd named `name`; returns how many.
    pub fn remove_named(&mut self, name: &str) -> usize {
        let before = self.entries.len();
        let (dropped, kept): (Vec<Entry>, Vec<Entry>) = std::mem::take(&mut self.entries)
            .into_iter()
            .partition(|entry| entry.name == name);
        self.entries = kept;
        for entry in dropped {
            self.unwatch(&entry);
        }
        before - self.entries.len()
    }

    fn unwatch(&self, entry: &Entry) {
        if let (true, Some(epoll)) = (entry.polled, &self.watch) {
            let _ = epoll.delete(entry.fd.as_fd());
        }
    }

    /// Drops the stored fds that hung up (POLLHUP or POLLERR), each with
    /// one log line; `first_fd` is where the first one is in a child.
    pub fn take_hangups(&mut self, first_fd: usize) {
        let Some(epoll) = &self.watch else {
            return;
        };
        let mut events = [EpollEvent::empty(); HANGUPS_PER_READ];
        let mut hung_up = Vec::new();
        loop {
            let count = match epoll.wait(&mut events, EpollTimeout::ZERO) {
                Ok(count) => count,
                Err(Errno::EINTR) => continue,
                Err(errno) => {
                    log::warn!(
                        "fd store: cannot read which stored fds hung up: {}",
                        crate::error::errno_text(errno)
                    );
                    break;
                }
            };
            for event in &events[..count] {
                let Some(index) = self.entries.iter().position(|e| e.id == event.data()) else {
                    continue;
                };
                // Out of the set at once: level-triggered, it would be
                // reported again by the next read.
                let _ = epoll.delete(self.entries[index].fd.as_fd());
                let what = if event.events().contains(EpollFlags::EPOLLERR) {
                    "POLLERR"
                } else {
                    "POLLHUP"
                };
                hung_up.push(index);
                let entry = &self.entries[index];
                log::info!(
                    "fd store: dropped fd {} '{}' ({}): {what} (systemd's rule; FDPOLL=0 keeps an fd that hangs up)",
                    first_fd + index,
                    entry.name.escape_debug(),
                    entry.kind.word()
                );
            }
            if count < events.len() {
                break;
            }
        }
        // Highest first, so that the indexes of those left stay right.
        hung_up.sort_unstable_by_key(|&index| std::cmp::Reverse(index));
        for index in hung_up {
            self.entries.remove(index);
        }
    }

    /// Acts on a trusted message's FDSTORE=1 or FDSTOREREMOVE=1 (as
    /// systemd does: a removal wins, and its fds are closed), taking from
    /// `message.fds` what it stores, with one log line for each outcome.
    /// `held` are the held sockets. Not for a store that is off.
    pub fn take(
        &mut self,
        generation: u64,
        message: &mut NotifyMessage,
        held: &[BorrowedFd<'_>],
        context: &Context<'_>,
    ) {
        if message.fd_store_remove {
            self.take_removal(generation, message.fd_name.as_deref());
            return;
        }
        if !message.fd_store || message.fds.is_empty() {
            return;
        }
        let name = match message.fd_name.as_deref() {
            None => DEFAULT_NAME,
            Some(name) => match name_problem(name) {
                None => name,
                Some(problem) => {
                    log::warn!(
                        "fd store: generation {generation} sent FDNAME='{}' with FDSTORE=1: {problem}; its fds are stored as '{DEFAULT_NAME}', as systemd does (give a name of printable ASCII without ':', at most {MAX_NAME_BYTES} characters)",
                        name.escape_debug()
                    );
                    DEFAULT_NAME
                }
            },
        };
        let sent = message.fds.len();
        let (offered, made_watch) = self.offer(
            std::mem::take(&mut message.fds),
            name,
            message.fd_poll,
            held,
        );
        if made_watch {
            if let Some(epoll) = &self.watch {
                context.watch(epoll.0.as_raw_fd(), KEY, "the fd store");
            }
        }
        self.log_offer(generation, name, sent, &offered);
    }

    fn take_removal(&mut self, generation: u64, name: Option<&str>) {
        match name.filter(|name| name_problem(name).is_none()) {
            None => log::warn!(
                "fd store: generation {generation} sent FDSTOREREMOVE=1 without a valid FDNAME=: ignored, as systemd does (name the fds to drop as they were stored)"
            ),
            Some(name) => {
                let removed = self.remove_named(name);
                log::info!(
                    "fd store: dropped {} named '{}' (FDSTOREREMOVE=1 from generation {generation}; {} stored)",
                    fds(removed),
                    name.escape_debug(),
                    self.entries.len()
                );
            }
        }
    }

    fn log_offer(&self, generation: u64, name: &str, sent: usize, offered: &Offered) {
        let name = name.escape_debug();
        if !offered.stored.is_empty() {
            let kinds: Vec<&str> = offered.stored.iter().map(|kind| kind.word()).collect();
            log::info!(
                "fd store: kept {} from generation {generation} as '{name}' ({}); {} of --fd-store-max {} stored",
                fds(offered.stored.len()),
                kinds.join(", "),
                self.entries.len(),
                self.max
            );
        }
        for index in &offered.held {
            log::info!(
                "fd store: not storing generation {generation}'s fd '{name}': it is held socket fd {}, which every child gets already",
                crate::spawn::FIRST_PASSED_FD as usize + index
            );
        }
        if offered.duplicates > 0 {
            log::debug!(
                "fd store: {} of generation {generation}'s fds '{name}' are stored already; not stored twice",
                offered.duplicates
            );
        }
        if offered.over_limit > 0 {
            log::warn!(
                "fd store full: closing {} of the {} generation {generation} sent as '{name}' (--fd-store-max {}; raise it to keep more)",
                offered.over_limit,
                fds(sent),
                self.max
            );
        }
    }
}

/// `1 fd`, `2 fds`.
fn fds(count: usize) -> String {
    if count == 1 {
        "1 fd".to_string()
    } else {
        format!("{count} fds")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    #[test]
    fn names_follow_systemd_s_rules() {
        assert_eq!(name_problem("conn-7.state"), None);
        assert_eq!(name_problem(""), None);
        assert_eq!(name_problem("with space"), None);
        assert_eq!(name_problem(&"x".repeat(255)), None);
        assert!(name_problem(&"x".repeat(256)).is_some());
        assert!(name_problem("a:b").is_some());
        assert!(name_problem("tab\there").is_some());
        assert!(name_problem("del\u{7f}").is_some());
        assert!(name_problem("caf\u{e9}").is_some());
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap()
    }

    #[test]
    fn fds_are_kept_in_order_with_their_names_up_to_the_limit() {
        let mut store = FdStore::new(3);
        let (read, write) = pipe();
        let (offered, made) = store.offer(vec![read, write], "pipe", false, &[]);
        assert_eq!(offered.stored, vec![FdKind::Pipe, FdKind::Pipe]);
        assert!(!made, "no epoll set for unpolled fds");
        let (one, two) = UnixStream::pair().unwrap();
        let (offered, _) = store.offer(vec![one.into(), two.into()], "pair", false, &[]);
        assert_eq!(offered.stored, vec![FdKind::Socket]);
        assert_eq!(offered.over_limit, 1);
        assert_eq!(store.names().collect::<Vec<_>>(), ["pipe", "pipe", "pair"]);
        assert_eq!(store.fds().count(), 3);
        assert_eq!(store.remove_named("pipe"), 2);
        assert_eq!(store.remove_named("pipe"), 0);
        assert_eq!(store.names().collect::<Vec<_>>(), ["pair"]);
    }

    #[test]
    fn the_same_open_file_is_stored_once_and_a_held_socket_not_at_all() {
        let dir = std::env::temp_dir().join(format!("sockhold-fdstore-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let held = UnixListener::bind(dir.join("held.sock")).unwrap();
        let mut store = FdStore::new(8);
        let (read, _write) = pipe();
        let copy = read.try_clone().unwrap();
        let held_copy: OwnedFd = held.try_clone().unwrap().into();
        let (offered, _) = store.offer(vec![read, copy, held_copy], "x", false, &[held.as_fd()]);
        assert_eq!(offered.stored, vec![FdKind::Pipe]);
        assert_eq!(offered.duplicates, 1);
        assert_eq!(offered.held, vec![0]);
        // A copy offered later under another name is a duplicate too.
        let again = OwnedFd::from(std::fs::File::open("/dev/null").unwrap());
        let again_copy = again.try_clone().unwrap();
        store.offer(vec![again], "a", false, &[]);
        let (offered, _) = store.offer(vec![again_copy], "b", false, &[]);
        assert_eq!(offered.duplicates, 1);
        assert_eq!(store.names().collect::<Vec<_>>(), ["x", "a"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_polled_fd_that_hangs_up_is_dropped_once_and_an_unpolled_one_kept() {
        let mut store = FdStore::new(8);
        let (kept, kept_peer) = UnixStream::pair().unwrap();
        let (polled, polled_peer) = UnixStream::pair().unwrap();
        let file = OwnedFd::from(std::fs::File::open("/proc/self/exe").unwrap());
        store.offer(vec![kept.into()], "nopoll", false, &[]);
        let (_, made) = store.offer(vec![polled.into()], "poll", true, &[]);
        assert!(made, "the first polled fd makes the epoll set");
        let (offered, made) = store.offer(vec![file], "file", true, &[]);
        assert_eq!(offered.stored, vec![FdKind::File]);
        assert!(!made);
        let watch = store.watch.as_ref().unwrap().0.as_fd();
        let readable = |fd: BorrowedFd<'_>| {
            use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::ZERO).unwrap() > 0
        };
        assert!(!readable(watch), "nothing hung up yet");
        store.take_hangups(3);
        assert_eq!(store.fds().count(), 3);
        drop(kept_peer);
        drop(polled_peer);
        let watch = store.watch.as_ref().unwrap().0.as_fd();
        assert!(readable(watch), "the hang-up makes the set readable");
        store.take_hangups(3);
        assert_eq!(store.names().collect::<Vec<_>>(), ["nopoll", "file"]);
        let watch = store.watch.as_ref().unwrap().0.as_fd();
        assert!(!readable(watch), "a dropped fd is not reported again");
    }
}
