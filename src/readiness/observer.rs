//! The "observed accepting" readiness observer: tells from outside, through
//! /proc, which of a generation's processes are taking connections (or
//! datagrams) from the sockets sockhold holds, for servers that never send
//! READY=1. One call to `observe` is one round: no threads, no sleeping, no
//! state kept from one round to the next.
//!
//! A thread takes from a held socket when it is blocked in a system call
//! that waits on it: accept on it (stream sockets), a receive on it
//! (datagram sockets), or epoll, poll or select with it among the fds
//! watched for reading. What each thread waits in comes from
//! /proc/P/task/T/syscall; fds are matched through /proc/P/fd and
//! /proc/P/fdinfo, and the fd sets of poll and select are read from the
//! waiting thread's own memory.
//!
//! Invariants:
//! - A socket is recognised by its inode on sockfs, never by fd number: the
//!   child's fds are its own, and may have been closed or reused.
//! - What cannot be read is reported (`Round::unobservable`), never guessed:
//!   a process that cannot be seen is not taking, and `Round::not_held`
//!   claims nothing while some process's fds could not be read.
//! - Another thread's memory is read while that thread may move on: the
//!   read counts only if the thread's syscall line is unchanged afterwards.
//! - Needs no `unsafe`: nix wraps process_vm_readv and fstat.

use super::proc_parse::{self, ThreadSyscall};
use crate::net::ListenerName;
use nix::errno::Errno;
use nix::libc;
use nix::sys::stat::SFlag;
use nix::sys::uio::RemoteIoVec;
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::fs;
use std::io::{self, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// The most `struct pollfd` entries read from one poll call (32 KiB): a
/// server polls its listeners among a few fds, not among thousands.
const MAX_POLL_ENTRIES: u64 = 4096;

/// The most fds of one select read set looked at (8 KiB of bitmap).
/// FD_SETSIZE is 1024, but a program may pass larger sets.
const MAX_SELECT_FDS: u64 = 65536;

/// `struct pollfd`: `int fd; short events; short revents;`.
// See: poll(2).
const POLLFD_SIZE: usize = 8;

/// One socket sockhold holds, as the kernel identifies it (fstat st_ino on
/// sockfs): the same in every process that has a copy of it, whatever the
/// fd number.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldSocket {
    /// The socket's inode, as /proc/P/fd/N shows it in `socket:[INODE]`.
    pub inode: u64,
    /// A datagram socket: taken by receiving on it, not by accept.
    pub datagram: bool,
    /// A stream socket's address, which the connections accepted from it
    /// carry; None for datagram sockets and unnamed ones.
    pub name: Option<ListenerName>,
}

impl HeldSocket {
    /// The held socket `fd` refers to. Anything but a socket is refused
    /// (`InvalidInput`): only a socket's inode appears as `socket:[...]`.
    pub fn of(fd: BorrowedFd<'_>, datagram: bool) -> io::Result<HeldSocket> {
        let stat = nix::sys::stat::fstat(fd)?;
        if SFlag::from_bits_truncate(stat.st_mode) & SFlag::S_IFMT != SFlag::S_IFSOCK {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
        }
        Ok(HeldSocket {
            // ino_t is 32 bits wide on 32-bit targets.
            #[allow(clippy::useless_conversion)]
            inode: u64::from(stat.st_ino),
            datagram,
            name: if datagram { None } else { ListenerName::of(fd) },
        })
    }
}

/// How a thread was seen waiting for the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Wait {
    /// In accept(2) or accept4(2) on it.
    Accept,
    /// In epoll_wait(2) (or epoll_pwait, epoll_pwait2) on an epoll instance
    /// where it is registered for EPOLLIN.
    Epoll,
    /// In poll(2) or ppoll with it in the array, for POLLIN.
    Poll,
    /// In select(2) or pselect6 with it in the read set.
    Select,
    /// In recvfrom, recvmsg, recvmmsg or read on it (datagram sockets).
    Receive,
    /// Not waiting, but holding a connection accepted from it: a busy
    /// server is found running, between two waits, more often than in one.
    Accepted,
}

impl Wait {
    /// The stable words the log uses.
    pub fn name(self) -> &'static str {
        match self {
            Wait::Accept => "accept",
            Wait::Epoll => "epoll",
            Wait::Poll => "poll",
            Wait::Select => "select",
            Wait::Receive => "recv",
            Wait::Accepted => "accepted",
        }
    }

    /// What a process seen so did, for the log: `pid 42 waits in poll on
    /// fd 3`, `pid 42 has accepted a connection on fd 3`.
    pub fn doing(self) -> &'static str {
        match self {
            Wait::Accept => "waits in accept",
            Wait::Epoll => "waits in epoll",
            Wait::Poll => "waits in poll",
            Wait::Select => "waits in select",
            Wait::Receive => "waits in recv",
            Wait::Accepted => "has accepted a connection",
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(self.name())
    }
}

/// A process seen taking from a held socket: one of its threads is blocked
/// waiting on it. Listed once per process, fd, socket and way of waiting,
/// however many threads wait so.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Taking {
    /// The process (thread group), not the thread.
    pub pid: Pid,
    /// The child's own fd number for the socket (for epoll, the fd it was
    /// registered under).
    pub fd: RawFd,
    /// Index into the `sockets` slice given to `observe`.
    pub socket: usize,
    pub how: Wait,
}

/// What one observation round saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Round {
    /// Every process seen taking, per socket and way of waiting.
    pub taking: Vec<Taking>,
    /// Processes that could not be read, with the reason (EACCES: another
    /// uid or not dumpable; EPERM: ptrace access denied, e.g. by Yama),
    /// once each.
    pub unobservable: Vec<(Pid, String)>,
    /// Held sockets (indices) that none of the processes has open at all.
    /// Empty when some process's fds could not be read: then nothing is
    /// known.
    pub not_held: Vec<usize>,
    /// Processes looked at: alive and readable, stopped ones included;
    /// vanished, zombie and unobservable ones not.
    pub processes_seen: usize,
}

/// `root` and every descendant, `root` first; empty once `root` is gone.
///
/// Walks /proc/P/task/T/children: that reads one small file per thread of
/// the tree's own processes, where a scan of every /proc/*/stat for parent
/// pids reads one per process on the host (hundreds or thousands). The
/// scan remains as the fallback for kernels built without
/// CONFIG_PROC_CHILDREN. Either way, a process forked during the walk may
/// be missed until the next round, and an orphan reparented away from the
/// tree is no longer in it.
// See: proc(5) /proc/pid/task/tid/children ("only reliable if all of the
// children are stopped or frozen").
pub fn process_tree(root: Pid) -> Vec<Pid> {
    if !Path::new(&format!("/proc/{root}/task")).exists() {
        return Vec::new();
    }
    if Path::new("/proc/thread-self/children").exists() {
        tree_by_children(root)
    } else {
        tree_by_parent_scan(root)
    }
}

/// The direct children of `parent`, from its own /proc children files:
/// a few small reads, where a scan of /proc reads every process on the
/// host. None where the kernel has no such files (no CONFIG_PROC_CHILDREN).
pub fn direct_children(parent: Pid) -> Option<Vec<Pid>> {
    if !Path::new("/proc/thread-self/children").exists() {
        return None;
    }
    let mut children = Vec::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{parent}/task")) else {
        return Some(children);
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("children")) {
            children.extend(proc_parse::parse_children(&text));
        }
    }
    Some(children)
}

fn tree_by_children(root: Pid) -> Vec<Pid> {
    let mut tree = vec![root];
    let mut known: HashSet<Pid> = HashSet::from([root]);
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        next += 1;
        // A process that is gone has no children left to find.
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        // A child belongs to the thread that forked it: every thread's
        // file is read.
        for task in tasks.flatten() {
            let Ok(text) = fs::read_to_string(task.path().join("children")) else {
                continue;
            };
            for child in proc_parse::parse_children(&text) {
                // `known` also stops a loop made of reused pids.
                if known.insert(child) {
                    tree.push(child);
                }
            }
        }
    }
    tree
}

fn tree_by_parent_scan(root: Pid) -> Vec<Pid> {
    let mut children_of: HashMap<Pid, Vec<Pid>> = HashMap::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = number_named(&entry.file_name()).map(Pid::from_raw) else {
                continue;
            };
            let Ok(text) = fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            if let Some(stat) = proc_parse::parse_stat(&text) {
                children_of.entry(stat.parent).or_default().push(pid);
            }
        }
    }
    let mut tree = vec![root];
    let mut known: HashSet<Pid> = HashSet::from([root]);
    let mut next = 0;
    while let Some(&pid) = tree.get(next) {
        next += 1;
        for &child in children_of.get(&pid).into_iter().flatten() {
            if known.insert(child) {
                tree.push(child);
            }
        }
    }
    tree
}

/// One observation round over these processes (a generation's
/// `process_tree`s) and these held sockets.
///
/// Stopped (`T`, `t`) processes are not taking, whatever their threads
/// were in when they stopped; zombies and dead processes are skipped; a
/// process that vanishes during the round is skipped silently. A pid
/// listed twice is looked at once.
pub fn observe(pids: &[Pid], sockets: &[HeldSocket]) -> Round {
    // Once each, even if two trees overlap.
    let mut listed = HashSet::with_capacity(pids.len());
    let pids: Vec<Pid> = pids
        .iter()
        .copied()
        .filter(|&pid| listed.insert(pid))
        .collect();
    let mut round = Round::default();
    let mut held = vec![false; sockets.len()];
    let mut holdings_known = true;
    // Pids are sockhold's; /proc may be another pid namespace's (a
    // container's PID 1 started with `unshare --pid --fork` and no
    // --mount-proc), where the same numbers are other processes.
    if let Some(reason) = proc_of_another_namespace() {
        round.unobservable = pids.iter().map(|&pid| (pid, reason.clone())).collect();
        return round;
    }
    for pid in pids {
        let mut process = Process {
            pid,
            sockets,
            resolved: HashMap::new(),
        };
        let state = match process.state() {
            Ok(state) => state,
            Err(Unreadable::Gone) => continue,
            Err(Unreadable::Unobservable(reason)) => {
                round.unobservable.push((pid, reason));
                holdings_known = false;
                continue;
            }
        };
        let stopped = match state {
            // A zombie has no threads and no fds left.
            'Z' | 'X' => continue,
            'T' | 't' => true,
            _ => false,
        };
        let threads = if stopped {
            Ok(())
        } else {
            process.observe_threads(&mut round.taking)
        };
        // A stopped process takes nothing, whatever it holds.
        let wanted: Vec<usize> = if stopped {
            Vec::new()
        } else {
            (0..sockets.len())
                .filter(|&index| sockets[index].name.is_some())
                .filter(|&index| !round.taking.iter().any(|t| t.socket == index))
                .collect()
        };
        // Looked at even when the threads could not be (Yama restricts
        // only the ptrace attach checks, not the read checks of /proc/P/fd).
        let fds = process.scan_fds(&mut held, &wanted, &mut round.taking);
        if let Err(Unreadable::Unobservable(_)) = fds {
            holdings_known = false;
        }
        match threads.and(fds) {
            Ok(()) => round.processes_seen += 1,
            Err(Unreadable::Gone) => {}
            Err(Unreadable::Unobservable(reason)) => round.unobservable.push((pid, reason)),
        }
    }
    if holdings_known {
        round.not_held = (0..sockets.len()).filter(|&index| !held[index]).collect();
    }
    round
}

/// Why the /proc mounted here cannot be read with sockhold's pids, if so.
// See: pid_namespaces(7) "/proc and PID namespaces".
fn proc_of_another_namespace() -> Option<String> {
    let own = nix::unistd::getpid();
    match fs::read_link("/proc/self") {
        Ok(link) if link.as_os_str().as_bytes() == own.to_string().as_bytes() => None,
        Ok(link) => Some(format!(
            "/proc belongs to another pid namespace (it calls pid {own} {}; mount a proc for this one)",
            link.display()
        )),
        Err(error) => Some(format!("cannot read /proc/self: {error}")),
    }
}

/// Why something about a process could not be read.
#[derive(Debug)]
enum Unreadable {
    /// It exited (ENOENT, ESRCH): nothing to report.
    Gone,
    /// Anything else, with the reason for the log.
    Unobservable(String),
}

fn unreadable(error: &io::Error, what: &str) -> Unreadable {
    match error.raw_os_error() {
        Some(libc::ENOENT | libc::ESRCH) => Unreadable::Gone,
        // The files of another uid's process, or of a non-dumpable one
        // (owned by root then), are mode 0400/0500: refused at open.
        Some(libc::EACCES) => Unreadable::Unobservable(format!(
            "permission denied reading {what} (another user, or not dumpable)"
        )),
        // Opened, but the ptrace access check failed on reading.
        // See: ptrace(2) "Ptrace access mode checking".
        Some(libc::EPERM) => Unreadable::Unobservable(format!(
            "permission denied reading {what} (ptrace access refused: Yama ptrace_scope or a security module)"
        )),
        _ => Unreadable::Unobservable(format!("cannot read {what}: {error}")),
    }
}

/// What a blocked thread waits in, with the arguments that matter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Blocked {
    Accept(RawFd),
    Receive(RawFd),
    Epoll(RawFd),
    /// `struct pollfd *fds, nfds_t nfds`.
    Poll {
        entries: u64,
        count: u64,
    },
    /// `int nfds, fd_set *readfds`.
    Select {
        count: u64,
        read_set: u64,
    },
}

/// The syscalls that wait for a socket, by the native ABI's numbers. The
/// asm-generic table of the newer architectures (aarch64, riscv64, ...)
/// has no epoll_wait, poll or select: there the C library calls
/// epoll_pwait, ppoll and pselect6. Elsewhere than x86_64 the old calls
/// are not recognised (a thread in them is not seen, never misread).
// See: syscall(2), syscalls(2).
fn classify(number: libc::c_long, args: &[u64; 6]) -> Option<Blocked> {
    let fd = fd_argument(args[0]);
    Some(match number {
        // i386 has no accept(2) syscall: its C library calls accept4 (or
        // socketcall(2), whose arguments are in memory: not recognised).
        #[cfg(not(target_arch = "x86"))]
        libc::SYS_accept => Blocked::Accept(fd),
        libc::SYS_accept4 => Blocked::Accept(fd),
        libc::SYS_recvfrom | libc::SYS_recvmsg | libc::SYS_recvmmsg | libc::SYS_read => {
            Blocked::Receive(fd)
        }
        #[cfg(target_arch = "x86_64")]
        libc::SYS_epoll_wait => Blocked::Epoll(fd),
        libc::SYS_epoll_pwait | libc::SYS_epoll_pwait2 => Blocked::Epoll(fd),
        #[cfg(target_arch = "x86_64")]
        libc::SYS_poll => Blocked::Poll {
            entries: args[0],
            count: args[1],
        },
        libc::SYS_ppoll => Blocked::Poll {
            entries: args[0],
            count: args[1],
        },
        #[cfg(target_arch = "x86_64")]
        libc::SYS_select => Blocked::Select {
            count: args[0],
            read_set: args[1],
        },
        libc::SYS_pselect6 => Blocked::Select {
            count: args[0],
            read_set: args[1],
        },
        _ => return None,
    })
}

/// An `int fd` argument: the kernel reads the low 32 bits of the register.
fn fd_argument(arg: u64) -> RawFd {
    arg as u32 as RawFd
}

/// The number a /proc directory entry is named by (a pid, tid or fd).
fn number_named(name: &std::ffi::OsStr) -> Option<i32> {
    std::str::from_utf8(name.as_bytes()).ok()?.parse().ok()
}

/// The most of one process's other sockets looked at in one round for a
/// connection accepted from a held socket: four system calls each.
const MAX_CONNECTIONS_LOOKED_AT: usize = 64;

/// What one of a process's fds is, read from /proc/P/fd/N.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FdIs {
    /// The held socket with this index.
    Held(usize),
    /// Another socket (`socket:[INODE]`).
    OtherSocket(u64),
    /// Not a socket, or not open.
    Other,
}

/// One process during one round.
struct Process<'a> {
    pid: Pid,
    sockets: &'a [HeldSocket],
    /// What each fd is; each fd is read once a round.
    resolved: HashMap<RawFd, FdIs>,
}

impl Process<'_> {
    /// The state letter from /proc/P/stat.
    // See: proc(5) /proc/pid/stat, field 3.
    fn state(&self) -> Result<char, Unreadable> {
        let path = format!("/proc/{}/stat", self.pid);
        let text = fs::read_to_string(&path).map_err(|error| unreadable(&error, &path))?;
        proc_parse::parse_stat(&text)
            .map(|stat| stat.state)
            .ok_or_else(|| Unreadable::Unobservable(format!("cannot parse {path}")))
    }

    /// Which held socket the process's `fd` is, if any.
    fn held_socket(&mut self, fd: RawFd) -> Result<Option<usize>, Unreadable> {
        Ok(match self.fd_is(fd)? {
            FdIs::Held(socket) => Some(socket),
            FdIs::OtherSocket(_) | FdIs::Other => None,
        })
    }

    /// What the process's `fd` is.
    fn fd_is(&mut self, fd: RawFd) -> Result<FdIs, Unreadable> {
        if let Some(&known) = self.resolved.get(&fd) {
            return Ok(known);
        }
        let path = format!("/proc/{}/fd/{fd}", self.pid);
        let is = match fs::read_link(&path) {
            Ok(target) => match proc_parse::socket_inode(target.as_os_str().as_bytes()) {
                Some(inode) => match self.sockets.iter().position(|s| s.inode == inode) {
                    Some(socket) => FdIs::Held(socket),
                    None => FdIs::OtherSocket(inode),
                },
                None => FdIs::Other,
            },
            Err(error) => match unreadable(&error, &path) {
                // Not open (any more), or the process is gone: either way
                // not one of ours.
                Unreadable::Gone => FdIs::Other,
                unobservable => return Err(unobservable),
            },
        };
        self.resolved.insert(fd, is);
        Ok(is)
    }

    /// Adds what every thread of the process is taking.
    fn observe_threads(&mut self, taking: &mut Vec<Taking>) -> Result<(), Unreadable> {
        let task_dir = format!("/proc/{}/task", self.pid);
        let tasks = fs::read_dir(&task_dir).map_err(|error| unreadable(&error, &task_dir))?;
        for task in tasks.flatten() {
            let Some(tid) = number_named(&task.file_name()) else {
                continue;
            };
            let path = format!("{task_dir}/{tid}/syscall");
            let line = match fs::read_to_string(&path) {
                Ok(line) => line,
                Err(error) => match unreadable(&error, &path) {
                    // A kernel without the file (no
                    // CONFIG_HAVE_ARCH_TRACEHOOK) shows no thread waiting:
                    // said, not mistaken for a thread that has exited.
                    Unreadable::Gone if task.path().exists() => {
                        return Err(Unreadable::Unobservable(format!(
                            "this kernel has no {path} (needs CONFIG_HAVE_ARCH_TRACEHOOK)"
                        )));
                    }
                    // That thread has exited; the others may not have.
                    Unreadable::Gone => continue,
                    unobservable => return Err(unobservable),
                },
            };
            self.observe_thread(&path, &line, taking)?;
        }
        Ok(())
    }

    /// Adds what one thread, whose syscall file at `path` read `line`, is
    /// taking.
    // See: proc(5) /proc/pid/syscall.
    fn observe_thread(
        &mut self,
        path: &str,
        line: &str,
        taking: &mut Vec<Taking>,
    ) -> Result<(), Unreadable> {
        let Some(ThreadSyscall::InSyscall { number, args }) = proc_parse::parse_syscall(line)
        else {
            return Ok(());
        };
        let Some(blocked) = classify(number, &args) else {
            return Ok(());
        };
        let mut seen = Vec::new();
        match blocked {
            Blocked::Accept(fd) => {
                if let Some(socket) = self.held_socket(fd)? {
                    if !self.sockets[socket].datagram {
                        seen.push((fd, socket, Wait::Accept));
                    }
                }
            }
            Blocked::Receive(fd) => {
                if let Some(socket) = self.held_socket(fd)? {
                    if self.sockets[socket].datagram {
                        seen.push((fd, socket, Wait::Receive));
                    }
                }
            }
            Blocked::Epoll(epoll_fd) => self.epoll_takes(epoll_fd, &mut seen)?,
            Blocked::Poll { entries, count } => {
                self.poll_takes(path, line, entries, count, &mut seen)?;
            }
            Blocked::Select { count, read_set } => {
                self.select_takes(path, line, count, read_set, &mut seen)?;
            }
        }
        for (fd, socket, how) in seen {
            let found = Taking {
                pid: self.pid,
                fd,
                socket,
                how,
            };
            if !taking.contains(&found) {
                taking.push(found);
            }
        }
        Ok(())
    }

    /// The held sockets an epoll instance waits on for reading: registered
    /// with EPOLLIN still armed, under an fd that is still that socket (a
    /// registration outlives its fd while the file stays open elsewhere,
    /// e.g. in sockhold).
    // See: epoll(7) "Will closing a file descriptor cause it to be removed
    // from all epoll interest lists?"; fs/eventpoll.c ep_show_fdinfo.
    fn epoll_takes(
        &mut self,
        epoll_fd: RawFd,
        seen: &mut Vec<(RawFd, usize, Wait)>,
    ) -> Result<(), Unreadable> {
        let path = format!("/proc/{}/fdinfo/{epoll_fd}", self.pid);
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            Err(error) => match unreadable(&error, &path) {
                // Closed since the syscall line was read: moved on.
                Unreadable::Gone => return Ok(()),
                unobservable => return Err(unobservable),
            },
        };
        for registration in proc_parse::parse_epoll_fdinfo(&text) {
            if registration.events & libc::EPOLLIN as u32 == 0 {
                continue;
            }
            let Some(socket) = self
                .sockets
                .iter()
                .position(|s| s.inode == registration.inode)
            else {
                continue;
            };
            if self.held_socket(registration.target_fd)? == Some(socket) {
                seen.push((registration.target_fd, socket, Wait::Epoll));
            }
        }
        Ok(())
    }

    /// The held sockets a poll call waits on for reading, from the
    /// thread's own `struct pollfd` array.
    fn poll_takes(
        &mut self,
        path: &str,
        line: &str,
        entries: u64,
        count: u64,
        seen: &mut Vec<(RawFd, usize, Wait)>,
    ) -> Result<(), Unreadable> {
        let count = count.min(MAX_POLL_ENTRIES) as usize;
        let mut array = vec![0u8; count * POLLFD_SIZE];
        if !self.read_still_waiting(path, line, entries, &mut array)? {
            return Ok(());
        }
        for entry in array.chunks_exact(POLLFD_SIZE) {
            let fd = RawFd::from_ne_bytes([entry[0], entry[1], entry[2], entry[3]]);
            let events = i16::from_ne_bytes([entry[4], entry[5]]);
            // poll ignores negative fds.
            if fd < 0 || events & libc::POLLIN == 0 {
                continue;
            }
            if let Some(socket) = self.held_socket(fd)? {
                seen.push((fd, socket, Wait::Poll));
            }
        }
        Ok(())
    }

    /// The held sockets a select call has in its read set, from the
    /// thread's own bitmap.
    fn select_takes(
        &mut self,
        path: &str,
        line: &str,
        count: u64,
        read_set: u64,
        seen: &mut Vec<(RawFd, usize, Wait)>,
    ) -> Result<(), Unreadable> {
        // A select for writing or exceptions only.
        if read_set == 0 {
            return Ok(());
        }
        // An fd_set is an array of longs, fd N at bit N % bits of long
        // N / bits; the kernel reads whole longs, and so does this (which
        // keeps the bit order right on either endianness).
        // See: fs/select.c get_fd_set, FDS_BYTES.
        const WORD: usize = std::mem::size_of::<libc::c_ulong>();
        const BITS: usize = WORD * 8;
        let count = count.min(MAX_SELECT_FDS) as usize;
        let mut bitmap = vec![0u8; count.div_ceil(BITS) * WORD];
        if !self.read_still_waiting(path, line, read_set, &mut bitmap)? {
            return Ok(());
        }
        for (index, word) in bitmap.chunks_exact(WORD).enumerate() {
            let mut bytes = [0u8; WORD];
            bytes.copy_from_slice(word);
            let mut bits = libc::c_ulong::from_ne_bytes(bytes);
            while bits != 0 {
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                let fd = index * BITS + bit;
                // Bits at or above nfds are not part of the set.
                if fd >= count {
                    break;
                }
                let fd = fd as RawFd;
                if let Some(socket) = self.held_socket(fd)? {
                    seen.push((fd, socket, Wait::Select));
                }
            }
        }
        Ok(())
    }

    /// Fills `buffer` from the process's memory at `address`, and says
    /// whether the thread is still in the same call (its syscall file at
    /// `path` still reads `line`); if it has moved on, or the memory cannot
    /// be read whole, it is not seen waiting this round.
    // See: process_vm_readv(2).
    fn read_still_waiting(
        &self,
        path: &str,
        line: &str,
        address: u64,
        buffer: &mut [u8],
    ) -> Result<bool, Unreadable> {
        let Ok(base) = usize::try_from(address) else {
            return Ok(false);
        };
        if base == 0 || buffer.is_empty() {
            return Ok(false);
        }
        let remote = [RemoteIoVec {
            base,
            len: buffer.len(),
        }];
        let wanted = buffer.len();
        let mut local = [IoSliceMut::new(buffer)];
        match nix::sys::uio::process_vm_readv(self.pid, &mut local, &remote) {
            Ok(read) if read == wanted => {}
            // Partly unmapped, or gone: the call is over, or never pointed
            // at a whole array.
            Ok(_) | Err(Errno::EFAULT | Errno::ESRCH | Errno::ENOMEM) => return Ok(false),
            Err(errno @ (Errno::EPERM | Errno::EACCES)) => {
                return Err(Unreadable::Unobservable(format!(
                    "permission denied reading the memory of pid {} (process_vm_readv: {})",
                    self.pid,
                    errno.desc()
                )));
            }
            Err(errno) => {
                return Err(Unreadable::Unobservable(format!(
                    "cannot read the memory of pid {}: {}",
                    self.pid,
                    errno.desc()
                )));
            }
        }
        match fs::read_to_string(path) {
            Ok(again) => Ok(again == line),
            Err(error) => match unreadable(&error, path) {
                Unreadable::Gone => Ok(false),
                unobservable => Err(unobservable),
            },
        }
    }

    /// Marks the held sockets this process has open and adds the `wanted`
    /// held stream sockets it holds a connection accepted from. Reads
    /// /proc/P/fd only while some held socket is still unaccounted for or
    /// some socket is wanted.
    // See: proc(5) /proc/pid/fd.
    fn scan_fds(
        &mut self,
        held: &mut [bool],
        wanted: &[usize],
        taking: &mut Vec<Taking>,
    ) -> Result<(), Unreadable> {
        for is in self.resolved.values() {
            if let FdIs::Held(socket) = *is {
                held[socket] = true;
            }
        }
        if wanted.is_empty() && held.iter().all(|&found| found) {
            return Ok(());
        }
        let path = format!("/proc/{}/fd", self.pid);
        let fds = fs::read_dir(&path).map_err(|error| unreadable(&error, &path))?;
        let mut connections = Vec::new();
        for entry in fds.flatten() {
            let Some(fd) = number_named(&entry.file_name()) else {
                continue;
            };
            match self.fd_is(fd)? {
                FdIs::Held(socket) => held[socket] = true,
                FdIs::OtherSocket(inode) if !wanted.is_empty() => connections.push((fd, inode)),
                _ => {}
            }
            if wanted.is_empty() && held.iter().all(|&found| found) {
                break;
            }
        }
        // The newest fds first: a server's connections come after the
        // sockets it opened at start.
        connections.sort_unstable_by_key(|&(fd, _)| std::cmp::Reverse(fd));
        let mut missing = wanted.to_vec();
        for (fd, inode) in connections.into_iter().take(MAX_CONNECTIONS_LOOKED_AT) {
            if missing.is_empty() {
                break;
            }
            for socket in self.accepted_from(fd, inode, &missing) {
                missing.retain(|&index| index != socket);
                taking.push(Taking {
                    pid: self.pid,
                    fd: self.fd_of(socket),
                    socket,
                    how: Wait::Accepted,
                });
            }
        }
        Ok(())
    }

    /// Which of the `candidates` (held stream sockets) the connection at
    /// the process's `fd`, socket `inode`, was accepted from: looked at
    /// through a copy of it (pidfd_getfd), closed at once. A copy that
    /// cannot be made (no ptrace access, Linux < 5.6, fd closed since) or
    /// is another socket by now shows nothing.
    fn accepted_from(&self, fd: RawFd, inode: u64, candidates: &[usize]) -> Vec<usize> {
        let Ok(copy) = crate::child::copy_fd_of(self.pid, fd) else {
            return Vec::new();
        };
        #[allow(clippy::useless_conversion)]
        let same = nix::sys::stat::fstat(&copy).is_ok_and(|stat| u64::from(stat.st_ino) == inode);
        if !same {
            return Vec::new();
        }
        candidates
            .iter()
            .copied()
            .filter(|&index| {
                self.sockets[index]
                    .name
                    .as_ref()
                    .is_some_and(|name| name.accepted(copy.as_fd()))
            })
            .collect()
    }

    /// The process's own fd for held socket `socket`: the one seen this
    /// round, else the one it was passed at (LISTEN_FDS order).
    fn fd_of(&self, socket: usize) -> RawFd {
        self.resolved
            .iter()
            .filter(|(_, is)| **is == FdIs::Held(socket))
            .map(|(&fd, _)| fd)
            .min()
            .unwrap_or(crate::spawn::FIRST_PASSED_FD + socket as RawFd)
    }
}

#[cfg(test)]
// The tests put a socket at fd 3 of a child (pre_exec) and change one
// thread's credentials; the observer itself needs no unsafe.
#[allow(unsafe_code)]
mod tests {
    use super::*;
    use nix::sys::signal::{self, Signal};
    use std::net::{TcpListener, UdpSocket};
    use std::os::fd::{AsFd, AsRawFd};
    use std::os::unix::process::CommandExt;
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    #[test]
    fn direct_children_lists_a_child_of_this_process() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        if let Some(children) = direct_children(Pid::this()) {
            assert!(children.contains(&pid), "{children:?}");
        }
        child.kill().unwrap();
        child.wait().unwrap();
    }

    /// Python starts in tens of milliseconds; this is for a loaded machine.
    const PATIENCE: Duration = Duration::from_secs(20);

    /// A python3 child running `script` with `socket` at its fd 3, in a
    /// process group of its own; killed (with the group) and reaped when
    /// dropped.
    struct Python {
        child: Child,
    }

    impl Python {
        fn start(script: &str, socket: BorrowedFd<'_>) -> Python {
            let source = socket.as_raw_fd();
            let mut command = Command::new("python3");
            command
                .arg("-c")
                .arg(script)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .process_group(0);
            let place_at_3 = move || {
                if source == 3 {
                    // dup2 onto itself would keep CLOEXEC.
                    // SAFETY: fcntl is async-signal-safe; fd 3 is open.
                    if unsafe { libc::fcntl(3, libc::F_SETFD, 0) } != 0 {
                        return Err(io::Error::last_os_error());
                    }
                // SAFETY: dup2 is async-signal-safe; the copy it makes at 3
                // is born without CLOEXEC, so it survives exec.
                } else if unsafe { libc::dup2(source, 3) } != 3 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            };
            // SAFETY: the hook makes only async-signal-safe calls.
            unsafe { command.pre_exec(place_at_3) };
            Python {
                child: command.spawn().expect("start python3"),
            }
        }

        fn pid(&self) -> Pid {
            Pid::from_raw(self.child.id() as i32)
        }

        /// Waits until it exits on its own.
        fn wait_for_exit(&mut self) {
            let deadline = Instant::now() + PATIENCE;
            while self.child.try_wait().unwrap().is_none() {
                assert!(Instant::now() < deadline, "python3 did not exit");
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    }

    impl Drop for Python {
        fn drop(&mut self) {
            let _ = signal::killpg(self.pid(), Signal::SIGKILL);
            let _ = self.child.wait();
        }
    }

    fn listener() -> TcpListener {
        TcpListener::bind("127.0.0.1:0").unwrap()
    }

    fn held(socket: &impl AsFd, datagram: bool) -> HeldSocket {
        HeldSocket::of(socket.as_fd(), datagram).unwrap()
    }

    /// Observes the processes `pids` names until a round satisfies
    /// `wanted`, and returns that round. Observing is the event waited
    /// for: a child is seen once it blocks.
    fn observe_until(
        pids: impl Fn() -> Vec<Pid>,
        sockets: &[HeldSocket],
        wanted: impl Fn(&Round) -> bool,
    ) -> Round {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let round = observe(&pids(), sockets);
            if wanted(&round) {
                return round;
            }
            assert!(
                Instant::now() < deadline,
                "never seen; last round: {round:?}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn taking_by(round: &Round, how: Wait) -> bool {
        round.taking.iter().any(|taking| taking.how == how)
    }

    /// The syscall each thread of `pid` is blocked in.
    fn blocked_in(pid: Pid) -> Vec<libc::c_long> {
        let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
            return Vec::new();
        };
        tasks
            .flatten()
            .filter_map(|task| fs::read_to_string(task.path().join("syscall")).ok())
            .filter_map(|line| match proc_parse::parse_syscall(&line) {
                Some(ThreadSyscall::InSyscall { number, .. }) => Some(number),
                _ => None,
            })
            .collect()
    }

    /// Waits until a thread of `pid` blocks in one of `calls`: the point a
    /// child that takes nothing has reached once it is settled.
    fn wait_until_blocked_in(pid: Pid, calls: &[libc::c_long]) {
        let deadline = Instant::now() + PATIENCE;
        while !blocked_in(pid).iter().any(|call| calls.contains(call)) {
            assert!(
                !matches!(state_of(pid), None | Some('Z')),
                "pid {pid} exited before blocking"
            );
            assert!(
                Instant::now() < deadline,
                "pid {pid} never blocked in {calls:?}; in {:?}",
                blocked_in(pid)
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn state_of(pid: Pid) -> Option<char> {
        let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        proc_parse::parse_stat(&text).map(|stat| stat.state)
    }

    const SLEEP_CALLS: &[libc::c_long] = &[libc::SYS_clock_nanosleep, libc::SYS_nanosleep];
    #[cfg(target_arch = "x86_64")]
    const EPOLL_CALLS: &[libc::c_long] = &[libc::SYS_epoll_wait, libc::SYS_epoll_pwait];
    #[cfg(not(target_arch = "x86_64"))]
    const EPOLL_CALLS: &[libc::c_long] = &[libc::SYS_epoll_pwait];
    #[cfg(target_arch = "x86_64")]
    const POLL_CALLS: &[libc::c_long] = &[libc::SYS_poll, libc::SYS_ppoll];
    #[cfg(not(target_arch = "x86_64"))]
    const POLL_CALLS: &[libc::c_long] = &[libc::SYS_ppoll];

    #[test]
    fn a_held_socket_is_known_by_its_inode_and_a_pipe_is_refused() {
        let listener = listener();
        let socket = held(&listener, false);
        let link = fs::read_link(format!("/proc/self/fd/{}", listener.as_raw_fd())).unwrap();
        assert_eq!(
            proc_parse::socket_inode(link.as_os_str().as_bytes()),
            Some(socket.inode)
        );
        let (reader, _writer) = nix::unistd::pipe().unwrap();
        let error = HeldSocket::of(reader.as_fd(), false).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn ways_of_waiting_read_as_the_log_words() {
        let words: Vec<String> = [
            Wait::Accept,
            Wait::Epoll,
            Wait::Poll,
            Wait::Select,
            Wait::Receive,
            Wait::Accepted,
        ]
        .iter()
        .map(ToString::to_string)
        .collect();
        assert_eq!(
            words,
            ["accept", "epoll", "poll", "select", "recv", "accepted"]
        );
        assert_eq!(Wait::Poll.doing(), "waits in poll");
        assert_eq!(Wait::Accepted.doing(), "has accepted a connection");
    }

    #[test]
    fn the_syscalls_that_wait_are_told_apart_by_number() {
        let args = [7, 0x1000, 3, 0, 0, 0];
        assert_eq!(classify(libc::SYS_accept4, &args), Some(Blocked::Accept(7)));
        assert_eq!(
            classify(libc::SYS_recvmsg, &args),
            Some(Blocked::Receive(7))
        );
        assert_eq!(
            classify(libc::SYS_epoll_pwait, &args),
            Some(Blocked::Epoll(7))
        );
        assert_eq!(
            classify(libc::SYS_ppoll, &args),
            Some(Blocked::Poll {
                entries: 7,
                count: 0x1000
            })
        );
        assert_eq!(
            classify(libc::SYS_pselect6, &args),
            Some(Blocked::Select {
                count: 7,
                read_set: 0x1000
            })
        );
        assert_eq!(classify(libc::SYS_futex, &args), None);
        // A 32-bit int argument, whatever the upper half of the register.
        assert_eq!(
            classify(libc::SYS_accept4, &[0xffff_ffff_0000_0004, 0, 0, 0, 0, 0]),
            Some(Blocked::Accept(4))
        );
    }

    #[test]
    fn a_blocking_accept_is_taking() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import socket\nsocket.socket(fileno=3).accept()",
            listener.as_fd(),
        );
        let round = observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        assert_eq!(
            round.taking,
            [Taking {
                pid: child.pid(),
                fd: 3,
                socket: 0,
                how: Wait::Accept
            }]
        );
        assert_eq!(round.not_held, Vec::<usize>::new());
        assert_eq!(round.unobservable, []);
        assert_eq!(round.processes_seen, 1);
    }

    #[test]
    fn an_epoll_selector_is_taking() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import selectors, socket\n\
             s = socket.socket(fileno=3)\n\
             s.setblocking(False)\n\
             selector = selectors.EpollSelector()\n\
             selector.register(s, selectors.EVENT_READ)\n\
             selector.select()",
            listener.as_fd(),
        );
        let round = observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        assert_eq!(
            round.taking,
            [Taking {
                pid: child.pid(),
                fd: 3,
                socket: 0,
                how: Wait::Epoll
            }]
        );
    }

    #[test]
    fn an_asyncio_server_is_taking_through_epoll() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import asyncio, socket\n\
             async def main():\n\
             \x20   server = await asyncio.start_server(lambda r, w: None, sock=socket.socket(fileno=3))\n\
             \x20   await server.serve_forever()\n\
             asyncio.run(main())",
            listener.as_fd(),
        );
        let round = observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        assert_eq!(round.taking.len(), 1, "{round:?}");
        assert_eq!(round.taking[0].how, Wait::Epoll);
        assert_eq!(round.taking[0].socket, 0);
    }

    #[test]
    fn poll_for_reading_is_taking_and_the_index_is_the_held_sockets() {
        // A socket that no child has comes first: the one taken is index 1.
        let other = listener();
        let listener = listener();
        let sockets = [held(&other, false), held(&listener, false)];
        let child = Python::start(
            "import os, select\n\
             r, w = os.pipe()\n\
             p = select.poll()\n\
             p.register(r, select.POLLIN)\n\
             p.register(3, select.POLLIN)\n\
             p.poll()",
            listener.as_fd(),
        );
        let round = observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        assert_eq!(
            round.taking,
            [Taking {
                pid: child.pid(),
                fd: 3,
                socket: 1,
                how: Wait::Poll
            }]
        );
        assert_eq!(round.not_held, [0]);
    }

    #[test]
    fn poll_for_writing_only_is_not_taking() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import select\n\
             p = select.poll()\n\
             p.register(3, select.POLLOUT)\n\
             p.poll()",
            listener.as_fd(),
        );
        wait_until_blocked_in(child.pid(), POLL_CALLS);
        let round = observe(&[child.pid()], &sockets);
        assert_eq!(round.taking, []);
        assert_eq!(round.processes_seen, 1);
    }

    #[test]
    fn select_for_reading_is_taking() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import select, socket\n\
             select.select([socket.socket(fileno=3)], [], [])",
            listener.as_fd(),
        );
        let round = observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        assert_eq!(
            round.taking,
            [Taking {
                pid: child.pid(),
                fd: 3,
                socket: 0,
                how: Wait::Select
            }]
        );
    }

    #[test]
    fn an_accepting_thread_that_is_not_the_main_one_is_taking() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import socket, threading\n\
             s = socket.socket(fileno=3)\n\
             threading.Thread(target=s.accept).start()\n\
             threading.Event().wait()",
            listener.as_fd(),
        );
        // The main thread only ever waits on its event (a futex): the
        // accept seen is the other thread's.
        let main_thread = format!("/proc/{0}/task/{0}/syscall", child.pid());
        let main_waits_on_its_event = || {
            let line = fs::read_to_string(&main_thread).unwrap_or_default();
            matches!(
                proc_parse::parse_syscall(&line),
                Some(ThreadSyscall::InSyscall { number, .. }) if number == libc::SYS_futex
            )
        };
        let round = observe_until(
            || vec![child.pid()],
            &sockets,
            |r| !r.taking.is_empty() && main_waits_on_its_event(),
        );
        assert_eq!(
            round.taking,
            [Taking {
                pid: child.pid(),
                fd: 3,
                socket: 0,
                how: Wait::Accept
            }]
        );
        assert_eq!(
            fs::read_dir(format!("/proc/{}/task", child.pid()))
                .unwrap()
                .count(),
            2
        );
    }

    #[test]
    fn a_child_that_sleeps_holding_the_socket_takes_nothing() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start("import time\ntime.sleep(600)", listener.as_fd());
        wait_until_blocked_in(child.pid(), SLEEP_CALLS);
        let round = observe(&[child.pid()], &sockets);
        assert_eq!(
            round,
            Round {
                processes_seen: 1,
                ..Round::default()
            }
        );
    }

    #[test]
    fn a_child_holding_a_connection_it_accepted_is_taking_while_not_waiting() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        // Accepts one connection, then is busy (sleeping here, so that the
        // round below sees it out of any wait on the socket).
        let child = Python::start(
            "import socket, time\nc = socket.socket(fileno=3).accept()\ntime.sleep(600)",
            listener.as_fd(),
        );
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        wait_until_blocked_in(child.pid(), SLEEP_CALLS);
        let round = observe(&[child.pid()], &sockets);
        assert_eq!(
            round.taking,
            [Taking {
                pid: child.pid(),
                fd: 3,
                socket: 0,
                how: Wait::Accepted
            }]
        );
        // Stopped, it takes nothing, whatever it holds.
        signal::kill(child.pid(), Signal::SIGSTOP).unwrap();
        let stopped = observe_until(|| vec![child.pid()], &sockets, |r| r.taking.is_empty());
        assert_eq!(stopped.processes_seen, 1);
        signal::kill(child.pid(), Signal::SIGCONT).unwrap();
    }

    #[test]
    fn a_child_holding_its_own_connection_to_the_socket_takes_nothing() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let port = listener.local_addr().unwrap().port();
        // The connecting end has an ephemeral local port, and a listener
        // of the child's own is no connection.
        let child = Python::start(
            &format!(
                "import socket, time\nc = socket.create_connection(('127.0.0.1', {port}))\n\
                 own = socket.socket()\nown.bind(('127.0.0.1', 0))\nown.listen()\n\
                 time.sleep(600)"
            ),
            listener.as_fd(),
        );
        wait_until_blocked_in(child.pid(), SLEEP_CALLS);
        let round = observe(&[child.pid()], &sockets);
        assert_eq!(round.taking, []);
        assert_eq!(round.processes_seen, 1);
    }

    #[test]
    fn a_child_that_closed_the_socket_does_not_hold_it() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import os, time\nos.close(3)\ntime.sleep(600)",
            listener.as_fd(),
        );
        wait_until_blocked_in(child.pid(), SLEEP_CALLS);
        let round = observe(&[child.pid()], &sockets);
        assert_eq!(round.not_held, [0]);
        assert_eq!(round.taking, []);
    }

    #[test]
    fn a_stopped_child_is_not_taking_until_it_continues() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import socket\nsocket.socket(fileno=3).accept()",
            listener.as_fd(),
        );
        observe_until(
            || vec![child.pid()],
            &sockets,
            |r| taking_by(r, Wait::Accept),
        );
        signal::kill(child.pid(), Signal::SIGSTOP).unwrap();
        let deadline = Instant::now() + PATIENCE;
        while state_of(child.pid()) != Some('T') {
            assert!(Instant::now() < deadline, "never stopped");
            std::thread::sleep(Duration::from_millis(5));
        }
        let round = observe(&[child.pid()], &sockets);
        assert_eq!(round.taking, []);
        assert_eq!(round.processes_seen, 1);
        assert_eq!(
            round.not_held,
            Vec::<usize>::new(),
            "a stopped child still holds it"
        );
        signal::kill(child.pid(), Signal::SIGCONT).unwrap();
        observe_until(
            || vec![child.pid()],
            &sockets,
            |r| taking_by(r, Wait::Accept),
        );
    }

    #[test]
    fn an_epoll_registration_outliving_its_fd_is_not_taking() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        // Registered under fd 3, which is then closed and reused for
        // /dev/null; the registration stays because the test still has
        // the socket open. The child then waits in that epoll for a pipe.
        let child = Python::start(
            "import os, select, socket\n\
             e = select.epoll()\n\
             assert e.fileno() == 4\n\
             e.register(3, select.EPOLLIN)\n\
             os.close(3)\n\
             assert os.open('/dev/null', os.O_RDONLY) == 3\n\
             r, w = os.pipe()\n\
             e.register(r, select.EPOLLIN)\n\
             e.poll()",
            listener.as_fd(),
        );
        wait_until_blocked_in(child.pid(), EPOLL_CALLS);
        // The stale registration is there to be rejected.
        let epoll_fd = 4;
        let fdinfo =
            fs::read_to_string(format!("/proc/{}/fdinfo/{epoll_fd}", child.pid())).unwrap();
        assert!(
            proc_parse::parse_epoll_fdinfo(&fdinfo)
                .iter()
                .any(|r| r.target_fd == 3 && r.inode == sockets[0].inode),
            "{fdinfo}"
        );
        let round = observe(&[child.pid()], &sockets);
        assert_eq!(round.taking, []);
        assert_eq!(round.not_held, [0]);
    }

    #[test]
    fn receiving_on_a_datagram_socket_is_taking() {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        let sockets = [held(&socket, true)];
        let child = Python::start(
            "import socket\nsocket.socket(fileno=3).recvfrom(100)",
            socket.as_fd(),
        );
        let round = observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        assert_eq!(
            round.taking,
            [Taking {
                pid: child.pid(),
                fd: 3,
                socket: 0,
                how: Wait::Receive
            }]
        );
    }

    #[test]
    fn a_grandchild_accepting_is_found_through_the_process_tree() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let mut child = Python::start(
            "import os, socket\n\
             pid = os.fork()\n\
             if pid == 0:\n\
             \x20   socket.socket(fileno=3).accept()\n\
             \x20   os._exit(0)\n\
             os.close(3)\n\
             os.waitpid(pid, 0)",
            listener.as_fd(),
        );
        let round = observe_until(
            || process_tree(child.pid()),
            &sockets,
            |r| !r.taking.is_empty(),
        );
        let tree = process_tree(child.pid());
        assert_eq!(tree.len(), 2, "{tree:?}");
        assert_eq!(tree[0], child.pid());
        assert_eq!(round.taking.len(), 1);
        let grandchild = round.taking[0].pid;
        assert_eq!(grandchild, tree[1]);
        assert_eq!(round.taking[0].how, Wait::Accept);
        assert_eq!(round.processes_seen, 2);
        // Its parent reaps it, then exits: both waited for.
        signal::kill(grandchild, Signal::SIGKILL).unwrap();
        child.wait_for_exit();
        assert_eq!(process_tree(child.pid()), []);
    }

    #[test]
    fn the_parent_scan_finds_the_same_tree() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let mut child = Python::start(
            "import os, socket\n\
             if os.fork() == 0:\n\
             \x20   socket.socket(fileno=3).accept()\n\
             \x20   os._exit(0)\n\
             os.wait()",
            listener.as_fd(),
        );
        let round = observe_until(
            || process_tree(child.pid()),
            &sockets,
            |r| !r.taking.is_empty(),
        );
        let tree = tree_by_parent_scan(child.pid());
        assert_eq!(tree, [child.pid(), round.taking[0].pid]);
        assert_eq!(tree, tree_by_children(child.pid()));
        signal::kill(round.taking[0].pid, Signal::SIGKILL).unwrap();
        child.wait_for_exit();
    }

    #[test]
    fn this_proc_is_this_pid_namespace_s() {
        assert_eq!(proc_of_another_namespace(), None);
    }

    #[test]
    fn a_pid_listed_twice_is_looked_at_once() {
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import socket\nsocket.socket(fileno=3).accept()",
            listener.as_fd(),
        );
        let round = observe_until(
            || vec![child.pid(), child.pid()],
            &sockets,
            |r| !r.taking.is_empty(),
        );
        assert_eq!(round.taking.len(), 1);
        assert_eq!(round.processes_seen, 1);
    }

    #[test]
    fn a_process_that_is_gone_is_skipped_silently() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = Pid::from_raw(child.id() as i32);
        child.wait().unwrap();
        let listener = listener();
        let round = observe(&[pid], &[held(&listener, false)]);
        assert_eq!(round.unobservable, []);
        assert_eq!(round.processes_seen, 0);
        assert_eq!(process_tree(pid), []);
    }

    #[test]
    fn root_observes_a_child_that_dropped_to_nobody_and_is_not_dumpable() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import ctypes, os, socket\n\
             os.setgid(65534)\n\
             os.setuid(65534)\n\
             PR_SET_DUMPABLE = 4\n\
             assert ctypes.CDLL(None).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) == 0\n\
             socket.socket(fileno=3).accept()",
            listener.as_fd(),
        );
        // CAP_SYS_PTRACE overrides both the owner and the dumpable checks.
        let round = observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        assert_eq!(round.taking[0].how, Wait::Accept);
        assert_eq!(round.unobservable, []);
    }

    #[test]
    fn an_observer_without_privileges_reports_a_root_child_as_unobservable() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root (to run a child of another user)");
            return;
        }
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import socket\nsocket.socket(fileno=3).accept()",
            listener.as_fd(),
        );
        observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        let pid = child.pid();
        // The raw system call changes the credentials of this one thread
        // (glibc's setresuid would change every thread's): the observer
        // runs as nobody, without CAP_SYS_PTRACE, and the test's other
        // threads stay root. The thread ends with its credentials.
        let round = std::thread::spawn(move || {
            // SAFETY: setresuid takes three integers and touches no memory.
            let status = unsafe { libc::syscall(libc::SYS_setresuid, 65534, 65534, 65534) };
            assert_eq!(status, 0, "{}", io::Error::last_os_error());
            observe(&[pid], &sockets)
        })
        .join()
        .unwrap();
        assert_eq!(round.taking, []);
        assert_eq!(round.processes_seen, 0);
        assert_eq!(
            round.not_held,
            Vec::<usize>::new(),
            "nothing known: {round:?}"
        );
        assert_eq!(round.unobservable.len(), 1, "{round:?}");
        assert_eq!(round.unobservable[0].0, pid);
        assert!(
            round.unobservable[0].1.starts_with(&format!(
                "permission denied reading /proc/{pid}/task/{pid}/syscall"
            )),
            "{round:?}"
        );
    }

    #[test]
    fn observer_round_time() {
        // A measurement, not an assertion: see the figure with --nocapture.
        const ROUNDS: u32 = 200;
        let listener = listener();
        let sockets = [held(&listener, false)];
        let child = Python::start(
            "import socket, threading\n\
             s = socket.socket(fileno=3)\n\
             threading.Thread(target=s.accept).start()\n\
             s.accept()",
            listener.as_fd(),
        );
        observe_until(|| vec![child.pid()], &sockets, |r| !r.taking.is_empty());
        let started = Instant::now();
        for _ in 0..ROUNDS {
            assert!(!observe(&[child.pid()], &sockets).taking.is_empty());
        }
        let observe_only = started.elapsed() / ROUNDS;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            assert!(
                !observe(&process_tree(child.pid()), &sockets)
                    .taking
                    .is_empty()
            );
        }
        let with_tree = started.elapsed() / ROUNDS;
        let started = Instant::now();
        for _ in 0..ROUNDS {
            assert_eq!(process_tree(child.pid()).len(), 1);
        }
        let tree_only = started.elapsed() / ROUNDS;
        eprintln!(
            "observer round (1 process, 2 threads accepting): observe {observe_only:?}, \
             process_tree {tree_only:?}, process_tree + observe {with_tree:?}"
        );
    }
}
