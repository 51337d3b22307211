//! Pure parsers for the /proc text the accepting observer reads: a thread's
//! current system call, an epoll fd's registrations, a process's state and
//! parent, a socket fd's link target, a thread's children. No syscalls
//! here; every parser takes the text and returns `None` (or nothing) for
//! anything it does not recognise, so that a format it does not know makes
//! the observer see less, never something false.

use nix::libc;
use nix::unistd::Pid;
use std::os::fd::RawFd;

/// What /proc/P/task/T/syscall says a thread is doing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ThreadSyscall {
    /// On a CPU, or it could not be caught off one: nothing to see.
    Running,
    /// Blocked, but not in a system call (`-1 sp pc`).
    NotInSyscall,
    /// Blocked in system call `number` (the native ABI's numbering) with
    /// these six arguments.
    InSyscall {
        number: libc::c_long,
        args: [u64; 6],
    },
}

/// Parses /proc/P/task/T/syscall: `running`, `-1 SP PC`, or the decimal
/// syscall number, six arguments, SP and PC in `0x` hex.
// See: proc(5) /proc/pid/syscall; fs/proc/base.c proc_pid_syscall.
pub fn parse_syscall(text: &str) -> Option<ThreadSyscall> {
    let mut fields = text.split_whitespace();
    let first = fields.next()?;
    if first == "running" {
        return Some(ThreadSyscall::Running);
    }
    let number: libc::c_long = first.parse().ok()?;
    if number < 0 {
        return Some(ThreadSyscall::NotInSyscall);
    }
    let mut args = [0u64; 6];
    for arg in &mut args {
        *arg = parse_hex(fields.next()?)?;
    }
    Some(ThreadSyscall::InSyscall { number, args })
}

/// One fd registered in an epoll instance, as /proc/P/fdinfo/E lists it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EpollRegistration {
    /// The fd number it was registered under (it may have been closed since:
    /// the registration lives as long as the open file, not the fd).
    pub target_fd: RawFd,
    /// The event mask still armed (EPOLLONESHOT registrations that fired
    /// show no events).
    pub events: u32,
    /// The inode of the registered file.
    pub inode: u64,
}

/// The registrations in an epoll fd's fdinfo, one per line
/// `tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x`. The
/// header lines (`pos:`, `flags:`, `mnt_id:`, `ino:`) describe the epoll
/// file itself and are not registrations; lines without an `ino:` (older
/// kernels printed only tfd, events and data) cannot be matched to a socket
/// and are left out.
// See: fs/eventpoll.c ep_show_fdinfo.
pub fn parse_epoll_fdinfo(text: &str) -> Vec<EpollRegistration> {
    text.lines()
        .filter(|line| line.starts_with("tfd:"))
        .filter_map(parse_epoll_line)
        .collect()
}

fn parse_epoll_line(line: &str) -> Option<EpollRegistration> {
    let mut target_fd = None;
    let mut events = None;
    let mut inode = None;
    let mut tokens = line.split_whitespace();
    while let Some(token) = tokens.next() {
        // Both `key: value` (padded) and `key:value` appear on one line.
        let (key, value) = match token.split_once(':') {
            Some((key, "")) => (key, tokens.next()?),
            Some((key, value)) => (key, value),
            None => continue,
        };
        match key {
            "tfd" => target_fd = value.parse().ok(),
            "events" => events = u32::from_str_radix(value, 16).ok(),
            "ino" => inode = u64::from_str_radix(value, 16).ok(),
            _ => {}
        }
    }
    Some(EpollRegistration {
        target_fd: target_fd?,
        events: events?,
        inode: inode?,
    })
}

/// The fields of /proc/P/stat the observer uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessStat {
    /// `R`, `S`, `D`, `T`, `t`, `Z`, `X`, ...
    pub state: char,
    pub parent: Pid,
}

/// Parses /proc/P/stat. The command name (field 2) may contain spaces and
/// parentheses, so the fields after it start after the last `)`.
// See: proc(5) /proc/pid/stat.
pub fn parse_stat(text: &str) -> Option<ProcessStat> {
    let after_name = &text[text.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace();
    let mut state = fields.next()?.chars();
    let state_char = state.next()?;
    if state.next().is_some() {
        return None;
    }
    let parent: i32 = fields.next()?.parse().ok()?;
    Some(ProcessStat {
        state: state_char,
        parent: Pid::from_raw(parent),
    })
}

/// The inode in a /proc/P/fd/N link target `socket:[INODE]`; `None` for
/// anything that is not a socket.
// See: proc(5) /proc/pid/fd.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    let digits = link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?;
    std::str::from_utf8(digits).ok()?.parse().ok()
}

/// The pids in /proc/P/task/T/children: space-separated, decimal.
// See: proc(5) /proc/pid/task/tid/children.
pub fn parse_children(text: &str) -> Vec<Pid> {
    text.split_whitespace()
        .filter_map(|pid| pid.parse().ok())
        .map(Pid::from_raw)
        .collect()
}

fn parse_hex(text: &str) -> Option<u64> {
    u64::from_str_radix(text.strip_prefix("0x")?, 16).ok()
}

/// The `voluntary_ctxt_switches` count of /proc/P/task/T/status: how
/// often the thread has blocked.
// See: proc(5) /proc/pid/status.
pub fn voluntary_switches(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|count| count.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blocked_thread_gives_its_syscall_number_and_six_arguments() {
        let line =
            "43 0x3 0x7ffd4c0c5a40 0x7ffd4c0c5a3c 0x80000 0x0 0x0 0x7ffd4c0c5a08 0x7f7a1c2f1b8e\n";
        assert_eq!(
            parse_syscall(line),
            Some(ThreadSyscall::InSyscall {
                number: 43,
                args: [3, 0x7ffd4c0c5a40, 0x7ffd4c0c5a3c, 0x80000, 0, 0],
            })
        );
    }

    #[test]
    fn running_and_not_in_a_syscall_are_told_apart_from_blocked() {
        assert_eq!(parse_syscall("running\n"), Some(ThreadSyscall::Running));
        assert_eq!(
            parse_syscall("-1 0x7ffd4c0c5a08 0x7f7a1c2f1b8e\n"),
            Some(ThreadSyscall::NotInSyscall)
        );
    }

    #[test]
    fn a_syscall_line_it_does_not_know_is_not_guessed_at() {
        assert_eq!(parse_syscall(""), None);
        assert_eq!(parse_syscall("43 0x3 0x0\n"), None, "too few arguments");
        assert_eq!(parse_syscall("43 3 0 0 0 0 0 0 0\n"), None, "no 0x");
        assert_eq!(parse_syscall("sleeping\n"), None);
    }

    #[test]
    fn epoll_fdinfo_lists_every_registration_and_not_the_header() {
        let text = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t20\n\
            tfd:        3 events:       19 data:                3  pos:0 ino:13c107 sdev:9\n\
            tfd:       12 events: 80000001 data:     7f00deadbeef  pos:0 ino:abc sdev:8\n\
            tfd:        4 events:       1c data:                4  pos:0 ino:13c108 sdev:9\n";
        assert_eq!(
            parse_epoll_fdinfo(text),
            [
                EpollRegistration {
                    target_fd: 3,
                    events: 0x19,
                    inode: 0x13c107
                },
                EpollRegistration {
                    target_fd: 12,
                    events: 0x8000_0001,
                    inode: 0xabc
                },
                EpollRegistration {
                    target_fd: 4,
                    events: 0x1c,
                    inode: 0x13c108
                },
            ]
        );
    }

    #[test]
    fn an_epoll_line_without_an_inode_is_left_out() {
        let text = "tfd:        3 events:       19 data:                3\n";
        assert_eq!(parse_epoll_fdinfo(text), []);
        assert_eq!(parse_epoll_fdinfo("pos:\t0\nflags:\t02\n"), []);
    }

    #[test]
    fn stat_state_is_read_after_the_last_parenthesis_of_the_name() {
        let text = "4242 (we (ird) name) ) T 4100 4242 4100 0 -1 4194560 107 0 0 0\n";
        assert_eq!(
            parse_stat(text),
            Some(ProcessStat {
                state: 'T',
                parent: Pid::from_raw(4100)
            })
        );
        assert_eq!(parse_stat("7 (sh) S 1 7 7").map(|s| s.state), Some('S'));
        assert_eq!(parse_stat("7 (sh"), None);
    }

    #[test]
    fn only_socket_links_give_an_inode() {
        assert_eq!(socket_inode(b"socket:[1294599]"), Some(1_294_599));
        assert_eq!(socket_inode(b"pipe:[1294599]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"anon_inode:[eventpoll]"), None);
    }

    #[test]
    fn children_are_space_separated_pids() {
        assert_eq!(
            parse_children("101 205 \n"),
            [Pid::from_raw(101), Pid::from_raw(205)]
        );
        assert_eq!(parse_children(""), []);
    }

    #[test]
    fn voluntary_switches_come_from_their_own_line() {
        let status = "Name:\tpython3\nState:\tR (running)\nvoluntary_ctxt_switches:\t1234\nnonvoluntary_ctxt_switches:\t7\n";
        assert_eq!(voluntary_switches(status), Some(1234));
        assert_eq!(voluntary_switches("Name:\tx\n"), None);
    }
}
