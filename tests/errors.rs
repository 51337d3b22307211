//! Bad input: one clear error line naming the culprit, and the documented
//! exit status.

use crate::harness::*;

/// Runs sockhold, expects it to fail at once with `code`, and returns its
/// one error line.
fn fails_with(code: i32, args: &[&str]) -> String {
    let (got, log) = run_to_exit(args);
    assert_eq!(got, code, "exit status for {args:?}; log:\n{log}");
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.starts_with("sockhold: error: "))
        .collect();
    assert_eq!(
        errors.len(),
        1,
        "exactly one error line for {args:?}; log:\n{log}"
    );
    errors[0].to_string()
}

#[test]
fn invalid_address_is_a_usage_error() {
    let line = fails_with(64, &["-l", "example.com:80", "--", "true"]);
    assert!(
        line.contains("'example.com:80'") && line.contains("not an IP address"),
        "{line}"
    );
}

#[test]
fn port_out_of_range_is_a_usage_error() {
    let line = fails_with(64, &["-l", "127.0.0.1:65536", "--", "true"]);
    assert!(
        line.contains("'127.0.0.1:65536'") && line.contains("port out of range"),
        "{line}"
    );
}

#[test]
fn address_in_use_is_an_os_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = taken.local_addr().unwrap().to_string();
    let line = fails_with(71, &["-l", &address, "--", "true"]);
    assert!(
        line.contains(&format!(
            "cannot listen on '{address}': address already in use"
        )),
        "{line}"
    );
}

#[test]
#[ignore = "needs root"] // to run sockhold as another user
fn permission_denied_exits_77() {
    needs_root();
    // As nobody, a port below 1024 is refused by the kernel.
    let mut sockhold = Sockhold::command()
        .uid(65534, 65534)
        .args(["-l", "127.0.0.1:1", "--", "/bin/true"])
        .start();
    let status = sockhold.wait_exit();
    let log = sockhold.log_text();
    assert_eq!(status.code(), Some(77), "{log}");
    assert!(
        log.contains("cannot listen on '127.0.0.1:1': permission denied"),
        "{log}"
    );
}

#[test]
fn missing_command_exits_127() {
    let line = fails_with(
        127,
        &["-l", "127.0.0.1:0", "--", "no-such-command-sockhold-test"],
    );
    assert!(
        line.contains("'no-such-command-sockhold-test': command not found"),
        "{line}"
    );
}

#[test]
fn non_executable_command_exits_126() {
    let dir = TempDir::new();
    let script = dir.join("not-executable");
    std::fs::write(&script, "#!/bin/sh\n").unwrap();
    let line = fails_with(126, &["-l", "127.0.0.1:0", "--", script.to_str().unwrap()]);
    assert!(line.contains("no execute permission"), "{line}");
}

#[test]
fn command_the_kernel_cannot_execute_exits_at_once_even_with_restarts() {
    // Both pass the start-up check (executable regular files) and fail only
    // in execve: retrying them could never help.
    let dir = TempDir::new();
    let not_a_program = dir.join("not-a-program");
    std::fs::write(&not_a_program, b"\x7fELF garbage").unwrap();
    let bad_interpreter = dir.join("bad-interpreter");
    std::fs::write(&bad_interpreter, "#!/no/such/interpreter\n").unwrap();
    for file in [&not_a_program, &bad_interpreter] {
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
    }
    let path = not_a_program.to_str().unwrap();
    let line = fails_with(
        126,
        &["-l", "127.0.0.1:0", "--restart", "always", "--", path],
    );
    assert!(
        line.contains(&format!("'{path}': exec format error")),
        "{line}"
    );
    let path = bad_interpreter.to_str().unwrap();
    let line = fails_with(127, &["-l", "127.0.0.1:0", "--", path]);
    assert!(line.contains("#! interpreter"), "{line}");
}

#[test]
fn unknown_signal_name_is_a_usage_error() {
    let line = fails_with(
        64,
        &[
            "--stop-signal",
            "SIGNOPE",
            "-l",
            "127.0.0.1:0",
            "--",
            "true",
        ],
    );
    assert!(
        line.contains("'SIGNOPE'") && line.contains("unknown signal"),
        "{line}"
    );
    let line = fails_with(
        64,
        &[
            "--forward-signals",
            "USR1,BOGUS",
            "-l",
            "127.0.0.1:0",
            "--",
            "true",
        ],
    );
    assert!(line.contains("'BOGUS'"), "{line}");
}

#[test]
fn bad_duration_is_a_usage_error() {
    let line = fails_with(
        64,
        &["--stop-timeout", "soon", "-l", "127.0.0.1:0", "--", "true"],
    );
    assert!(
        line.contains("'soon'") && line.contains("not a duration"),
        "{line}"
    );
}

#[test]
fn missing_command_on_the_command_line_is_a_usage_error() {
    let line = fails_with(64, &["-l", "127.0.0.1:0"]);
    assert!(line.contains("COMMAND"), "{line}");
}

#[test]
fn unknown_option_is_a_usage_error_not_the_command() {
    // Before the command (with or without `--` after it), an unknown option
    // is a mistake in sockhold's own arguments, not a program to run.
    for args in [
        &["--bogus", "-l", "127.0.0.1:0", "--", "true"][..],
        &["-l", "127.0.0.1:0", "--bogus", "true"][..],
    ] {
        let line = fails_with(64, args);
        assert!(line.contains("'--bogus'"), "{line}");
    }
}

#[test]
fn options_after_the_command_belong_to_the_command() {
    // Everything after the first word of the command is the command's, even
    // without `--`; after `--` even a first word starting with '-' is one.
    let (code, log) = run_to_exit(&[
        "-l",
        "127.0.0.1:0",
        "--restart",
        "never",
        "sh",
        "-c",
        "exit 5",
        "-v",
    ]);
    assert_eq!(code, 5, "{log}");
    let line = fails_with(127, &["-l", "127.0.0.1:0", "--", "--not-an-option"]);
    assert!(line.contains("'--not-an-option'"), "{line}");
}

#[test]
fn help_and_version_exit_zero() {
    let (code, _) = run_to_exit(&["--help"]);
    assert_eq!(code, 0);
    let (code, _) = run_to_exit(&["--version"]);
    assert_eq!(code, 0);
}
