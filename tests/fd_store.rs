//! The fd store (`--fd-store-max`): what a child stores with FDSTORE=1 on
//! its NOTIFY_SOCKET reaches the generations after it, by name, after the
//! held sockets, as the same open files; FDSTOREREMOVE=1 drops by name;
//! the limit holds; an fd whose peer hangs up is dropped (not with
//! FDPOLL=0); no child gets one open file twice.

use crate::harness::*;
use nix::sys::signal::Signal;
use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::process::Command;

/// The test's child. At start it reports what it got on one stderr line
/// (`child report`: LISTEN_FDS, LISTEN_FDNAMES, the inode of each passed
/// fd, every open fd); the first generation (given only the held socket)
/// then stores fds as `argv[1]` says and reports their inodes (`child
/// stored`). Then READY=1, and it waits to be stopped. Its notify
/// messages are read in order, so its fds are stored once it is ready.
const CHILD: &str = r#"import array, os, socket, sys, time
mode = sys.argv[1]
addr = os.environ['NOTIFY_SOCKET']
addr = '\0' + addr[1:] if addr.startswith('@') else addr
assert os.environ['LISTEN_PID'] == str(os.getpid())
n = int(os.environ['LISTEN_FDS'])
inos = ','.join('%d=%d' % (fd, os.fstat(fd).st_ino) for fd in range(3, 3 + n))
def is_open(fd):
    try:
        os.fstat(fd)
        return True
    except OSError:
        return False
# listdir's own fd is closed by the time the list is checked.
opened = [int(fd) for fd in os.listdir('/proc/self/fd')]
opened = sorted(fd for fd in opened if is_open(fd))
def say(line):
    # One write(2), so that no line of sockhold's lands in the middle.
    os.write(2, (line + '\n').encode())
say('child report pid=%d fds=%d names=%s inos=%s open=%s fdstore=%s' % (os.getpid(), n,
    os.environ['LISTEN_FDNAMES'], inos, ','.join(map(str, opened)),
    os.environ.get('FDSTORE', 'UNSET')))
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
def send(text, fds=()):
    if fds:
        # Not socket.send_fds: before Python 3.12 it drops the address.
        rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', fds))
        s.sendmsg([text.encode()], [rights], 0, addr)
    else:
        s.sendto(text.encode(), addr)
def ino(fd):
    return os.fstat(fd).st_ino
keep = []
stored = ''
if n == 1 and mode == 'reload':
    a, b = socket.socketpair()
    listener = socket.socket()
    listener.bind(('127.0.0.1', 0))
    listener.listen()
    send('FDSTORE=1\nFDNAME=pair', [a.fileno()])
    send('FDSTORE=1\nFDNAME=listen', [listener.fileno()])
    keep = [a, b, listener]
    stored = 'pair=%d listen=%d' % (ino(a.fileno()), ino(listener.fileno()))
elif n == 1 and mode == 'twice':
    a, b = socket.socketpair()
    m = os.memfd_create('m')
    send('FDSTORE=1\nFDNAME=held', [3])
    send('FDSTORE=1\nFDNAME=one', [a.fileno()])
    send('FDSTORE=1\nFDNAME=two', [os.dup(a.fileno())])
    send('FDSTORE=1\nFDNAME=three', [m, os.dup(m)])
    keep = [a, b]
    stored = 'one=%d three=%d' % (ino(a.fileno()), ino(m))
elif n == 1 and mode == 'remove':
    state, first, second = (os.memfd_create(name) for name in ('state', 'drop', 'drop'))
    send('FDSTORE=1\nFDNAME=state', [state])
    send('FDSTORE=1\nFDNAME=drop', [first, second])
    send('FDSTOREREMOVE=1\nFDNAME=drop')
    stored = 'state=%d' % ino(state)
elif n == 1 and mode == 'limit':
    memfds = [os.memfd_create('m') for _ in range(3)]
    send('FDSTORE=1\nFDNAME=m', memfds)
    stored = 'first=%d second=%d' % (ino(memfds[0]), ino(memfds[1]))
elif n == 1 and mode == 'hangup':
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    send('FDSTORE=1\nFDNAME=pair', [a.fileno()])
    send('FDSTORE=1\nFDNAME=nopoll\nFDPOLL=0', [c.fileno()])
    # The peers b and d close when this generation exits.
    keep = [b, d]
    a.close()
    c.close()
elif n == 1 and mode == 'names':
    send('FDSTORE=1\nFDNAME=a:b', [os.memfd_create('bad')])
    send('FDSTORE=1', [os.memfd_create('unnamed')])
    send('FDSTOREREMOVE=1\nFDNAME=a:b')
elif n == 1 and mode == 'crash':
    state = os.memfd_create('state')
    send('FDSTORE=1\nFDNAME=state', [state])
    stored = 'state=%d' % ino(state)
elif n == 1 and mode == 'untrusted':
    # A helper connects as root, then sends as nobody: the kernel passes
    # the sender's uid at the time of sending.
    m = os.memfd_create('untrusted')
    pid = os.fork()
    if pid == 0:
        u = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        u.connect(addr)
        os.setgroups([])
        os.setgid(65534)
        os.setuid(65534)
        rights = (socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [m]))
        u.sendmsg([b'FDSTORE=1\nFDNAME=untrusted'], [rights])
        os._exit(0)
    os.waitpid(pid, 0)
    os.close(m)
    stored = 'helper=%d' % pid
if stored:
    say('child stored ' + stored)
send('READY=1')
if n == 1 and mode == 'crash':
    # sd_notify_barrier(3): once sockhold has closed the write end, it has
    # acted on every message before; then crash.
    r, w = os.pipe()
    send('BARRIER=1', [w])
    os.close(w)
    os.read(r, 1)
    sys.exit(3)
while True:
    time.sleep(3600)
"#;

/// sockhold with one held TCP socket named `http`, `--ready notify`, and
/// the test child in `mode`.
fn start(mode: &str, extra: &[&str]) -> Sockhold {
    Sockhold::command()
        .args(["-l", "http=127.0.0.1:0", "--ready", "notify"])
        .args(extra)
        .args(["--", "python3", "-c", CHILD, mode])
        .start()
}

/// The `key=value` fields after `marker` on each line that has it.
fn lines_with(log: &str, marker: &str) -> Vec<HashMap<String, String>> {
    log.lines()
        .filter_map(|line| line.split(marker).nth(1))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|field| field.split_once('='))
                .map(|(key, value)| (key.to_string(), value.to_string()))
                .collect()
        })
        .collect()
}

/// The `child report` of the n-th child started (0: generation 1's).
fn report(sockhold: &Sockhold, index: usize) -> HashMap<String, String> {
    let log = sockhold.log_written_until_now();
    let reports = lines_with(&log, "child report ");
    reports
        .get(index)
        .cloned()
        .unwrap_or_else(|| panic!("no child report {index}; log:\n{log}"))
}

fn stored(sockhold: &Sockhold) -> HashMap<String, String> {
    let log = sockhold.log_written_until_now();
    lines_with(&log, "child stored ")
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("no child stored line; log:\n{log}"))
}

/// `fd=inode` pairs of a report, by fd.
fn inodes(report: &HashMap<String, String>) -> HashMap<u32, String> {
    report["inos"]
        .split(',')
        .filter_map(|pair| pair.split_once('='))
        .map(|(fd, ino)| (fd.parse().unwrap(), ino.to_string()))
        .collect()
}

/// Reloads to `generation` and waits until it is ready.
fn reload_to(sockhold: &Sockhold, generation: u32) {
    sockhold.signal(Signal::SIGHUP);
    sockhold.wait_for(&format!("generation {generation} ready"));
}

#[test]
fn stored_fds_reach_the_next_generation_by_name_after_the_held_sockets() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = start(
        "reload",
        &[
            "--fd-store-max",
            "8",
            "--control",
            control.to_str().unwrap(),
        ],
    );
    sockhold.wait_for("generation 1 ready");
    let first = report(&sockhold, 0);
    assert_eq!(
        (first["fds"].as_str(), first["names"].as_str()),
        ("1", "http")
    );
    assert_eq!(first["fdstore"], "8", "FDSTORE says how many may be stored");
    let status = Command::new(sockhold_bin())
        .args(["status", "--control"])
        .arg(&control)
        .output()
        .unwrap();
    let status = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.contains(
            r#""fd_store":[{"fd":4,"name":"pair","kind":"socket"},{"fd":5,"name":"listen","kind":"socket"}]"#
        ),
        "{status}"
    );
    reload_to(&sockhold, 2);
    let second = report(&sockhold, 1);
    assert_eq!(second["fds"], "3", "{second:?}");
    assert_eq!(second["names"], "http:pair:listen");
    assert_eq!(second["open"], "0,1,2,3,4,5", "no fd but these: {second:?}");
    let got = inodes(&second);
    let sent = stored(&sockhold);
    assert_eq!(got[&3], inodes(&first)[&3], "the held socket at 3");
    assert_eq!(got[&4], sent["pair"], "the stored socketpair end at 4");
    assert_eq!(got[&5], sent["listen"], "the stored listening socket at 5");
    let log = sockhold.log_written_until_now();
    assert!(
        log.contains(
            "fd store: kept 1 fd from generation 1 as 'pair' (socket); 1 of --fd-store-max 8 stored"
        ),
        "{log}"
    );
}

#[test]
fn the_store_is_carried_by_an_upgrade_to_the_next_generation() {
    let dir = TempDir::new();
    let control = dir.join("ctl");
    let sockhold = start(
        "reload",
        &[
            "--fd-store-max",
            "8",
            "--control",
            control.to_str().unwrap(),
        ],
    );
    sockhold.wait_for("generation 1 ready");
    let first = report(&sockhold, 0);
    let (code, out, err) = control_client(&["upgrade"], &control);
    assert_eq!(code, 0, "{out} {err}");
    let (_, status, _) = control_client(&["status"], &control);
    assert!(
        status.contains(
            r#""fd_store":[{"fd":4,"name":"pair","kind":"socket"},{"fd":5,"name":"listen","kind":"socket"}]"#
        ),
        "{status}"
    );
    reload_to(&sockhold, 2);
    let second = report(&sockhold, 1);
    assert_eq!(second["names"], "http:pair:listen", "{second:?}");
    assert_eq!(second["open"], "0,1,2,3,4,5", "no fd but these: {second:?}");
    let got = inodes(&second);
    let sent = stored(&sockhold);
    assert_eq!(got[&3], inodes(&first)[&3], "the held socket at 3");
    assert_eq!(got[&4], sent["pair"], "the stored socketpair end at 4");
    assert_eq!(got[&5], sent["listen"], "the stored listening socket at 5");
}

#[test]
fn a_stored_fd_is_never_passed_twice() {
    let sockhold = start("twice", &["--fd-store-max", "8"]);
    sockhold.wait_for("generation 1 ready");
    reload_to(&sockhold, 2);
    let second = report(&sockhold, 1);
    // The held socket stored again, a dup of a stored socket under
    // another name, and a memfd sent twice in one message: each once.
    assert_eq!(second["names"], "http:one:three", "{second:?}");
    assert_eq!(second["open"], "0,1,2,3,4,5", "{second:?}");
    let got = inodes(&second);
    let sent = stored(&sockhold);
    assert_eq!(got[&4], sent["one"]);
    assert_eq!(got[&5], sent["three"]);
    let log = sockhold.log_written_until_now();
    assert!(
        log.contains("fd store: not storing generation 1's fd 'held': it is held socket fd 3"),
        "{log}"
    );
}

#[test]
fn fdstoreremove_drops_every_fd_of_that_name() {
    let sockhold = start("remove", &["--fd-store-max", "8"]);
    sockhold.wait_for(
        "fd store: dropped 2 fds named 'drop' (FDSTOREREMOVE=1 from generation 1; 1 stored)",
    );
    sockhold.wait_for("generation 1 ready");
    reload_to(&sockhold, 2);
    let second = report(&sockhold, 1);
    assert_eq!(second["names"], "http:state", "{second:?}");
    assert_eq!(inodes(&second)[&4], stored(&sockhold)["state"]);
}

#[test]
fn a_restarted_child_gets_the_stored_fds() {
    let sockhold = start("crash", &["--fd-store-max", "8"]);
    sockhold.wait_for("generation 1 ready");
    sockhold.wait_for("exited on its own with status 3");
    sockhold.wait_for("generation 2 ready");
    let restarted = report(&sockhold, 1);
    assert_eq!(restarted["names"], "http:state", "{restarted:?}");
    assert_eq!(inodes(&restarted)[&4], stored(&sockhold)["state"]);
}

#[test]
fn fds_without_a_valid_name_are_stored_as_stored_as_systemd_does() {
    let sockhold = start("names", &["--fd-store-max", "8"]);
    sockhold.wait_for(
        "fd store: generation 1 sent FDNAME='a:b' with FDSTORE=1: ':' separates the names in LISTEN_FDNAMES; its fds are stored as 'stored', as systemd does",
    );
    sockhold
        .wait_for("fd store: generation 1 sent FDSTOREREMOVE=1 without a valid FDNAME=: ignored");
    sockhold.wait_for("generation 1 ready");
    reload_to(&sockhold, 2);
    assert_eq!(report(&sockhold, 1)["names"], "http:stored:stored");
}

#[test]
fn a_bad_fd_store_max_is_one_usage_error_line() {
    for (value, reason) in [
        ("4097", "more than 4096 fds"),
        ("lots", "not a number of fds"),
        ("-1", "not a number of fds"),
    ] {
        let (code, log) = run_to_exit(&["--fd-store-max", value, "--", "true"]);
        assert_eq!(code, 64, "{value}: {log}");
        let errors: Vec<&str> = log
            .lines()
            .filter(|line| line.starts_with("sockhold: error: "))
            .collect();
        assert_eq!(errors.len(), 1, "{log}");
        assert!(
            errors[0].contains(&format!("'{value}'"))
                && errors[0].contains("--fd-store-max")
                && errors[0].contains(reason),
            "{}",
            errors[0]
        );
    }
    let (code, log) = run_to_exit(&["--fd-store-max", "4", "--accept", "-l", "0", "--", "cat"]);
    assert_eq!(code, 64, "{log}");
}

/// The memfds named `name` that process `pid` holds.
fn memfds_held_by(pid: nix::unistd::Pid, name: &str) -> usize {
    let prefix = format!("/memfd:{name} ");
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter(|target| target.to_string_lossy().starts_with(&prefix))
        .count()
}

#[test]
fn over_the_limit_the_extra_fds_are_closed_with_a_warning() {
    let sockhold = start("limit", &["--fd-store-max", "2"]);
    sockhold.wait_for(
        "fd store full: closing 1 of the 3 fds generation 1 sent as 'm' (--fd-store-max 2; raise it to keep more)",
    );
    sockhold.wait_for("generation 1 ready");
    reload_to(&sockhold, 2);
    let second = report(&sockhold, 1);
    assert_eq!(second["names"], "http:m:m", "{second:?}");
    let got = inodes(&second);
    let sent = stored(&sockhold);
    assert_eq!((&got[&4], &got[&5]), (&sent["first"], &sent["second"]));
    // The third was closed when its message had been handled, long before
    // generation 2 was ready.
    assert_eq!(memfds_held_by(sockhold.pid, "m"), 2);
}

/// sockhold's CPU time so far, in clock ticks (utime + stime).
fn cpu_ticks(pid: nix::unistd::Pid) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 1..];
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Fields 14 and 15 of proc(5), counted from the state (field 3).
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

#[test]
fn a_stored_fd_whose_peer_hangs_up_is_dropped_unless_stored_with_fdpoll_0() {
    let sockhold = start("hangup", &["--fd-store-max", "8"]);
    sockhold.wait_for("generation 1 ready");
    // Generation 1 holds the peers; once it has stopped, they are closed.
    reload_to(&sockhold, 2);
    sockhold.wait_for("fd store: dropped fd 4 'pair' (socket): POLLHUP");
    assert_eq!(report(&sockhold, 1)["names"], "http:pair:nopoll");
    reload_to(&sockhold, 3);
    assert_eq!(report(&sockhold, 2)["names"], "http:nopoll");
    sockhold.wait_for("generation 2 exited");
    // Idle now, with a hung-up fd in the store (FDPOLL=0) and one dropped:
    // neither wakes sockhold again and again.
    let before = cpu_ticks(sockhold.pid);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let spent = cpu_ticks(sockhold.pid) - before;
    assert!(spent < 10, "sockhold spent {spent} ticks of CPU while idle");
    let log = sockhold.log_written_until_now();
    assert_eq!(
        log.matches("fd store: dropped fd").count(),
        1,
        "dropped once, and only that one:\n{log}"
    );
}

#[test]
#[ignore = "needs root"] // to send from another uid
fn only_a_trusted_sender_may_store() {
    needs_root();
    let sockhold = start("untrusted", &["--fd-store-max", "8"]);
    sockhold.wait_for("generation 1 ready");
    let helper = stored(&sockhold)["helper"].clone();
    let log = sockhold.log_written_until_now();
    assert!(
        log.contains(&format!(
            "ignoring notify message from pid {helper} (uid 65534)"
        )),
        "{log}"
    );
    reload_to(&sockhold, 2);
    assert_eq!(report(&sockhold, 1)["names"], "http");
    assert_eq!(memfds_held_by(sockhold.pid, "untrusted"), 0);
    assert!(!sockhold.log_written_until_now().contains("fd store: kept"));
}

/// What sockhold sent to a stand-in for systemd's notify socket: one
/// datagram's text and the fds that came with it.
fn receive_with_fds(socket: &UnixDatagram) -> (String, Vec<OwnedFd>) {
    use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
    use std::os::fd::FromRawFd;
    // A blocking read, bounded: EAGAIN after the wait limit.
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut buffer = [0u8; 4096];
    let mut control = nix::cmsg_space!([RawFd; 8]);
    let mut iov = [std::io::IoSliceMut::new(&mut buffer)];
    let message = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut control),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )
    .expect("a notify message within the wait limit");
    let bytes = message.bytes;
    let mut fds = Vec::new();
    for cmsg in message.cmsgs().unwrap() {
        if let ControlMessageOwned::ScmRights(passed) = cmsg {
            // SAFETY: recvmsg just installed these fds in this process.
            fds.extend(
                passed
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    (String::from_utf8_lossy(&buffer[..bytes]).into_owned(), fds)
}

/// The messages up to and including the first `READY=1`, with their fds.
fn messages_until_ready(socket: &UnixDatagram) -> Vec<(String, Vec<OwnedFd>)> {
    let mut messages = Vec::new();
    loop {
        let (text, fds) = receive_with_fds(socket);
        let ready = text.starts_with("READY=1");
        messages.push((text, fds));
        if ready {
            return messages;
        }
    }
}

#[test]
fn under_systemd_the_held_sockets_go_to_its_fd_store_and_come_back_after_a_restart() {
    let dir = TempDir::new();
    let notify_path = dir.join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    let api = dir.join("api.sock");
    let mut first = Sockhold::command()
        .env("NOTIFY_SOCKET", &notify_path)
        .env("FDSTORE", "4")
        .args(["-l", "web=127.0.0.1:0", "-l"])
        .arg(format!("api={}", api.display()))
        .args(["--ready", "notify", "--", "python3", "-c", CHILD, "none"])
        .start();
    let messages = messages_until_ready(&notify);
    let texts: Vec<&str> = messages.iter().map(|(text, _)| text.as_str()).collect();
    assert_eq!(
        texts[..4],
        [
            "FDSTOREREMOVE=1\nFDNAME=web",
            "FDSTORE=1\nFDNAME=web",
            "FDSTOREREMOVE=1\nFDNAME=api",
            "FDSTORE=1\nFDNAME=api",
        ],
        "{texts:?}"
    );
    let fd_counts: Vec<usize> = messages.iter().map(|(_, fds)| fds.len()).collect();
    assert_eq!(fd_counts[..4], [0, 1, 0, 1]);
    let web_address = first.tcp_address(0);
    let stored_web = std::net::TcpListener::from(messages[1].1[0].try_clone().unwrap());
    assert_eq!(stored_web.local_addr().unwrap(), web_address);
    drop(stored_web);
    // The child gets no FDSTORE: systemd's store is sockhold's, not its.
    first.wait_for("generation 1 ready");
    assert_eq!(report(&first, 0)["fdstore"], "UNSET");
    first.signal(Signal::SIGTERM);
    first.exits_with(0);
    assert!(
        api.exists(),
        "the stored socket's file stays for the next sockhold"
    );
    // systemd passes its store to the next sockhold by LISTEN_FDS, named.
    // The test holds the sockets where systemd would; the hook puts them
    // at 3 and 4 (copies at 100 and up, clear of what it overwrites).
    let high = |fd: &OwnedFd| {
        let copy = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(100)).unwrap();
        // SAFETY: fcntl just made this fd for this test, which owns it.
        unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(copy) }
    };
    let (web_copy, api_copy) = (high(&messages[1].1[0]), high(&messages[3].1[0]));
    let (web, api_fd) = (web_copy.as_raw_fd(), api_copy.as_raw_fd());
    let hook = move || {
        // SAFETY: dup2(2) on fd numbers touches no memory and is
        // async-signal-safe.
        if unsafe { nix::libc::dup2(web, 3) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { nix::libc::dup2(api_fd, 4) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    };
    let notify_again = dir.join("notify-again");
    let _notify_again = UnixDatagram::bind(&notify_again).unwrap();
    // SAFETY: the hook makes only async-signal-safe calls.
    let second = unsafe {
        Sockhold::launched_by(&[
            "sh",
            "-c",
            r#"LISTEN_PID=$$ LISTEN_FDS=2 LISTEN_FDNAMES=web:api exec "$0" "$@""#,
        ])
        .pre_exec(hook)
    }
    .env("NOTIFY_SOCKET", &notify_again)
    .env("FDSTORE", "4")
    .args(["-l", "web=127.0.0.1:0", "-l"])
    .arg(format!("api={}", api.display()))
    .args(["--ready", "notify", "--", "python3", "-c", CHILD, "none"])
    .start();
    let line = second.wait_for("listening on tcp");
    assert!(
        line.contains(&format!(
            "{web_address} (from the fd store) (fd 3, name web)"
        )),
        "{line}"
    );
    second.wait_for("generation 1 ready");
    let child = report(&second, 0);
    assert_eq!(
        child["names"], "web:api",
        "the stored sockets in their -l places: {child:?}"
    );
    let inos = inodes(&child);
    let inode = |fd: RawFd| {
        use std::os::linux::fs::MetadataExt;
        std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .unwrap()
            .st_ino()
            .to_string()
    };
    assert_eq!(inos[&3], inode(web), "the same web socket");
    assert_eq!(inos[&4], inode(api_fd), "the same api socket");
    drop((web_copy, api_copy));
}
