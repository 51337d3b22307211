//! The child's world: exactly the fds, environment and signal state that
//! DESIGN.md §1 promises, whatever sockhold itself inherited.

use crate::harness::*;

#[test]
fn child_gets_sockets_at_3_and_nothing_else_with_listen_env_and_clean_signals() {
    let dir = TempDir::new();
    let unix_path = dir.join("world.sock");
    // sockhold itself inherits a stray fd, a NOTIFY_SOCKET and LISTEN_*
    // meant for someone else, and an ignored SIGPIPE... none of which may
    // reach the child.
    let stray_fd_and_ignored_sigpipe = || {
        // SAFETY: dup2 is async-signal-safe; it runs in the forked child only.
        if unsafe { nix::libc::dup2(2, 9) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: signal is async-signal-safe; it runs in the forked child only.
        unsafe { nix::libc::signal(nix::libc::SIGPIPE, nix::libc::SIG_IGN) };
        Ok(())
    };
    // SAFETY: the hook makes only async-signal-safe calls (see above).
    let builder = unsafe { Sockhold::command().pre_exec(stray_fd_and_ignored_sigpipe) };
    let sockhold = builder
        .env("NOTIFY_SOCKET", "/run/systemd/notify")
        .env("LISTEN_FDS", "7")
        .env("LISTEN_PID", "1")
        .env("LISTEN_FDNAMES", "bogus")
        .args(["-l", "web=127.0.0.1:0", "-l"])
        .arg(&unix_path)
        .args(["--", test_child_bin(), "--report"])
        .start();
    sockhold.wait_for("generation 1 started");
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    let report = report_fields(&answer);
    let child_pid = report["pid"].clone();
    assert_eq!(report["fds"], "0 1 2 3 4", "{answer}");
    assert_eq!(report["LISTEN_FDS"], "2");
    assert_eq!(
        report["LISTEN_PID"], child_pid,
        "LISTEN_PID is the child's own pid"
    );
    assert_eq!(report["LISTEN_FDNAMES"], "web:fd4");
    assert!(report["NOTIFY_SOCKET"].starts_with('/'), "{answer}");
    assert_ne!(report["NOTIFY_SOCKET"], "/run/systemd/notify");
    assert_eq!(
        report["SigIgn"], "0000000000000000",
        "no inherited SIG_IGN: {answer}"
    );
    assert_eq!(
        report["SigBlk"], "0000000000000000",
        "empty signal mask: {answer}"
    );
    // The same world on the Unix socket, from the same child.
    let over_unix = report_fields(&request_unix(&unix_path).unwrap());
    assert_eq!(over_unix["pid"], child_pid);
}

#[test]
fn listen_pid_is_the_exec_d_program_even_through_a_shell() {
    // `sh -c 'exec ...'` keeps the pid; LISTEN_PID must match what runs.
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--",
            "sh",
            "-c",
            "exec \"$0\" --report",
        ])
        .arg(test_child_bin())
        .start();
    sockhold.wait_for("generation 1 started");
    let report = report_fields(&request_tcp(sockhold.tcp_address(0)).unwrap());
    assert_eq!(report["LISTEN_PID"], report["pid"]);
    assert_eq!(report["fds"], "0 1 2 3");
}

#[test]
fn python_child_serves_from_fd_3() {
    let script = "import os, socket\n\
        assert os.environ['LISTEN_PID'] == str(os.getpid())\n\
        s = socket.socket(fileno=3)\n\
        while True:\n\
        \x20   c, _ = s.accept()\n\
        \x20   c.sendall(('pid=%d fds=%s\\n' % (os.getpid(), os.environ['LISTEN_FDS'])).encode())\n\
        \x20   c.close()\n";
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--", "python3", "-c", script])
        .start();
    let started = sockhold.wait_for("generation 1 started: pid ");
    let answer = request_tcp(sockhold.tcp_address(0)).unwrap();
    assert!(
        started.ends_with(&format!("pid {}", answer_pid(&answer))),
        "{started} vs {answer}"
    );
    assert!(answer.contains("fds=1"));
}

#[test]
fn every_socket_kind_is_passed_in_order_with_its_name() {
    let dir = TempDir::new();
    let abstract_name = format!("@sockhold-test-{}", std::process::id());
    let sockhold = Sockhold::command()
        .args(["-l", "a=127.0.0.1:0", "-l", "b=[::1]:0", "-l"])
        .arg(format!("c={}", dir.join("c.sock").display()))
        .args([
            "-l",
            &format!("d={abstract_name}"),
            "--",
            test_child_bin(),
            "--report",
        ])
        .start();
    sockhold.wait_for("generation 1 started");
    let v4 = sockhold.tcp_address(0);
    let v6 = sockhold.tcp_address(1);
    assert!(v4.is_ipv4() && v6.is_ipv6() && v4.port() != 0 && v6.port() != 0);
    let report = report_fields(&request_tcp(v6).unwrap());
    assert_eq!(report["LISTEN_FDNAMES"], "a:b:c:d");
    assert_eq!(report["fds"], "0 1 2 3 4 5 6");
    let over_abstract = {
        use std::os::linux::net::SocketAddrExt;
        let address =
            std::os::unix::net::SocketAddr::from_abstract_name(&abstract_name[1..]).unwrap();
        let mut stream = std::os::unix::net::UnixStream::connect_addr(&address).unwrap();
        let mut answer = String::new();
        std::io::Read::read_to_string(&mut stream, &mut answer).unwrap();
        answer
    };
    assert_eq!(
        report_fields(&over_abstract)["pid"],
        report["pid"],
        "{over_abstract}"
    );
}

#[test]
fn bare_port_listens_dual_stack() {
    // Port 0 on every address: one socket that answers on IPv4 and IPv6.
    let sockhold = Sockhold::command()
        .args(["-l", "0", "--", test_child_bin()])
        .start();
    sockhold.wait_for("generation 1 started");
    let address = sockhold.tcp_address(0);
    let port = address.port();
    assert!(address.ip().is_unspecified(), "{address}");
    let v4 = request_tcp(format!("127.0.0.1:{port}").parse().unwrap()).unwrap();
    let v6 = request_tcp(format!("[::1]:{port}").parse().unwrap()).unwrap();
    assert_eq!(answer_pid(&v4), answer_pid(&v6));
}

#[test]
fn forwarded_signals_reach_the_current_child() {
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--forward-signals",
            "USR1,WINCH",
            "--",
            test_child_bin(),
            "--log-signals",
        ])
        .start();
    sockhold.wait_for("generation 1 started");
    request_tcp(sockhold.tcp_address(0)).unwrap();
    sockhold.signal(nix::sys::signal::Signal::SIGUSR1);
    sockhold.wait_for("test_child: got SIGUSR1");
    sockhold.signal(nix::sys::signal::Signal::SIGWINCH);
    sockhold.wait_for("test_child: got SIGWINCH");
}

#[test]
fn fds_passed_with_notify_messages_are_closed_so_a_barrier_completes() {
    // sd_notify_barrier(3): the child passes the write end of a pipe with
    // BARRIER=1 and waits for the read end to hang up, which only happens
    // once sockhold has closed its copy. Only then does it say READY=1.
    let script = "import array, os, select, socket\n\
        addr = os.environ['NOTIFY_SOCKET']\n\
        addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
        r, w = os.pipe()\n\
        s.sendmsg([b'BARRIER=1'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [w]))], 0, addr)\n\
        os.close(w)\n\
        p = select.poll()\n\
        p.register(r, select.POLLHUP)\n\
        if p.poll(10000):\n\
        \x20   s.sendto(b'READY=1', addr)\n\
        select.select([], [], [])\n";
    let sockhold = Sockhold::command()
        .args([
            "-l",
            "127.0.0.1:0",
            "--ready",
            "notify",
            "--ready-timeout",
            "20s",
        ])
        .args(["--", "python3", "-c", script])
        .start();
    sockhold.wait_for("generation 1 ready: READY=1");
    let log = sockhold.log_text();
    assert!(!log.contains("ignoring notify message"), "{log}");
}

#[test]
fn a_barrier_is_answered_after_the_messages_before_it_are_acted_on_and_fd_store_is_told() {
    // READY=1, then BARRIER=1 with a pipe's write end (sd_notify_barrier(3)):
    // the barrier is answered (the write end closed) only once READY=1 has
    // made the generation ready. Then FDSTORE=1 with an fd: told once, and
    // the fd is closed (sockhold keeps no fd store).
    let script = "import array, os, select, socket, sys\n\
        addr = os.environ['NOTIFY_SOCKET']\n\
        addr = '\\0' + addr[1:] if addr.startswith('@') else addr\n\
        s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)\n\
        s.sendto(b'READY=1', addr)\n\
        r, w = os.pipe()\n\
        s.sendmsg([b'BARRIER=1'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [w]))], 0, addr)\n\
        os.close(w)\n\
        p = select.poll()\n\
        p.register(r, select.POLLHUP)\n\
        if p.poll(10000):\n\
        \x20   print('child: barrier answered', file=sys.stderr, flush=True)\n\
        s.sendmsg([b'FDSTORE=1\\nFDNAME=pipe'], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array('i', [r]))], 0, addr)\n\
        select.select([], [], [])\n";
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "--ready", "notify"])
        .args(["--", "python3", "-c", script])
        .start();
    sockhold.wait_for("child: barrier answered");
    let log = sockhold.log_written_until_now();
    let ready = log.find("generation 1 ready: READY=1");
    let answered = log.find("child: barrier answered");
    assert!(
        ready.is_some() && ready < answered,
        "the barrier was answered before READY=1 was acted on:\n{log}"
    );
    sockhold.wait_for("generation 1 sent FDSTORE=1 with 1 fds: sockhold keeps no fd store");
}
