//! sockhold: hold listening sockets and run a server on them, with
//! zero-downtime reloads. This file only parses, sets up logging, runs, and
//! maps the outcome to an exit status; it is the only place that exits.

mod accept;
mod addr;
mod cli;
mod config;
mod error;
mod event_loop;
mod listen;
mod readiness;
mod signals;
mod spawn;
mod supervisor;

use clap::Parser;
use error::{Error, exit};
use std::io::Write;

fn main() {
    let status = match run() {
        Ok(status) => status,
        Err(error) => {
            eprintln!("sockhold: error: {error}");
            error.exit_status
        }
    };
    std::process::exit(status);
}

fn run() -> Result<i32, Error> {
    ensure_standard_fds_open();
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return Ok(report_usage_error(&error)),
    };
    init_logging(cli::log_level(&cli));
    let config = cli.into_config()?;
    check_command(&config.command)?;
    let listeners = listen::open_all(
        &config.listen,
        listen::SocketOptions {
            backlog: config.backlog,
            socket_mode: config.socket_mode,
        },
    )?;
    event_loop::EventLoop::new(config, listeners)?.run()
}

/// clap's help and version go to stdout with status 0; a usage error is
/// one line on stderr and status 64 (clap itself would exit 2).
fn report_usage_error(error: &clap::Error) -> i32 {
    use clap::error::ErrorKind;
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            exit::OK
        }
        _ => {
            // clap's message runs until the first blank line (a missing
            // argument is named on the line after the sentence); fold it
            // into one line.
            let rendered = error.to_string();
            let message: Vec<&str> = rendered
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            let message = message.join(" ");
            let message = message.strip_prefix("error: ").unwrap_or(&message);
            eprintln!("sockhold: error: {message} (see sockhold --help)");
            exit::USAGE
        }
    }
}

/// Refuses at once a command that cannot run, with the shell's statuses.
fn check_command(command: &[std::ffi::OsString]) -> Result<(), Error> {
    let name = command[0].to_string_lossy();
    let path = std::env::var_os("PATH");
    match spawn::resolve_program(&command[0], path.as_deref()) {
        Ok(_) => Ok(()),
        Err(spawn::ResolveError::NotFound) => Err(Error::new(
            exit::NOT_FOUND,
            format!("cannot run '{name}': command not found (check the name, or give a path)"),
        )),
        Err(spawn::ResolveError::NotExecutable(why)) => Err(Error::new(
            exit::CANNOT_EXECUTE,
            format!("cannot run '{name}': {why} (make it an executable file: chmod +x)"),
        )),
    }
}

fn init_logging(level: log::LevelFilter) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    if let Ok(spec) = std::env::var("RUST_LOG") {
        builder.parse_filters(&spec);
    }
    builder.format(|out, record| {
        let prefix = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug => "debug: ",
            log::Level::Trace => "trace: ",
        };
        writeln!(out, "sockhold: {prefix}{}", record.args())
    });
    builder.init();
}

/// If sockhold was started with fd 0, 1 or 2 closed, the first socket would
/// land there and reach the child as stdin/stdout/stderr. Fill the gaps with
/// /dev/null first.
fn ensure_standard_fds_open() {
    use nix::fcntl::{FcntlArg, OFlag, fcntl, open};
    use std::os::fd::{BorrowedFd, IntoRawFd};
    for fd in 0..3 {
        // SAFETY: only asks whether the fd is open; nothing is closed or owned.
        let open_already = fcntl(unsafe { BorrowedFd::borrow_raw(fd) }, FcntlArg::F_GETFD).is_ok();
        if !open_already {
            // open(2) returns the lowest free fd, which is this one; it is
            // left open for the rest of sockhold's life (and inherited).
            if let Ok(null) = open("/dev/null", OFlag::O_RDWR, nix::sys::stat::Mode::empty()) {
                let _ = null.into_raw_fd();
            }
        }
    }
}
