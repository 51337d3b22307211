//! sockhold: hold listening sockets and run a server on them, with
//! zero-downtime reloads. This file only parses, sets up logging, runs, and
//! maps the outcome to an exit status; it is the only place that exits.
//!
//! Every file sockhold creates at start-up (Unix socket files, the control
//! socket, the pid file) is owned by a value that removes it when dropped:
//! whichever way `run` returns, an error after binding included, nothing
//! is left behind.

mod activation;
mod addr;
mod child;
mod cli;
mod compat;
mod config;
mod control;
mod engine;
mod error;
mod event_loop;
mod fd_store;
mod generations;
mod intercept;
mod leftovers;
mod listen;
mod net;
mod per_connection;
mod pidfile;
mod privileges;
mod quiet_log;
mod readiness;
mod sd_notify;
mod seccomp;
mod signals;
mod spawn;
mod stdio;
mod upgrade;

use clap::Parser;
use error::{Error, exit};
use std::io::Write;

fn main() {
    // Before anything else: a new sockhold binary is asked, by the one it
    // is to replace, which state versions it reads (`upgrade/`).
    if upgrade::answer_probe() {
        std::process::exit(error::exit::OK);
    }
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
    // Before anything is opened: only these fds can be adopted (`fd:N`).
    let inherited = listen::InheritedFds::at_start();
    // An upgrade's state, taken (and its variables removed from the
    // environment) before anything can start a child.
    let incoming = upgrade::Incoming::take();
    // Resolved now: a package upgrade may replace the file at the path.
    let exe = std::env::current_exe().ok();
    stdio::ensure_standard_fds_open();
    stdio::ignore_terminal_stops();
    if std::env::args_os()
        .nth(1)
        .is_some_and(|first| cli::is_client_command(&first))
    {
        return run_client();
    }
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        // A new binary of an upgrade that reads the old arguments
        // differently goes back to the old binary, which reads them.
        Err(error) => match incoming {
            Some(Ok(incoming)) => {
                let reason = format!("the arguments do not parse: {}", usage_message(&error));
                return Err(Error::new(exit::OS, incoming.fall_back(&reason)));
            }
            _ => return Ok(report_usage_error(&error)),
        },
    };
    init_logging(cli::log_level(&cli));
    let config = match cli.into_config() {
        Ok(config) => config,
        Err(error) => match incoming {
            Some(Ok(incoming)) => {
                return Err(Error::new(exit::OS, incoming.fall_back(&error.message)));
            }
            _ => return Err(error),
        },
    };
    match incoming {
        Some(Ok(incoming)) => return run_upgraded(config, incoming),
        Some(Err(reason)) => {
            return Err(Error::new(
                exit::OS,
                format!("cannot take over after the upgrade: {reason}"),
            ));
        }
        None => {}
    }
    check_command(&config.command)?;
    if config.intercept_bind {
        intercept::check_support()?;
    }
    // Names are resolved before anything is bound, so that a typo leaves
    // nothing behind.
    let credentials = match &config.user {
        Some(user) => Some(privileges::resolve(user, config.group.as_deref())?),
        None => None,
    };
    let socket_owner = match &config.socket_owner {
        Some(owner) => Some(privileges::resolve_socket_owner(owner)?),
        None => None,
    };
    // Sockets passed to sockhold itself (systemd .socket units) come first.
    let listen = activation::listen_specs(
        &activation::PassedEnv::from_environment(),
        std::process::id(),
        &config.listen,
    )?;
    // Those that systemd kept in its fd store for us take their places.
    let activation::Sockets {
        specs: listen,
        stored,
        own_from,
    } = activation::take_back_stored(listen, config.listen.len(), |fd, address| {
        listen::is_bound_to(fd, address, &inherited)
    });
    // From here on, an early return drops what was made so far, and with
    // it the files it created.
    let mut listeners = listen::open_all(
        &listen,
        &stored,
        listen::SocketOptions {
            backlog: config.backlog,
            socket_mode: config.socket_mode,
            socket_owner,
        },
        &inherited,
    )?;
    // Inherited fds say what they are only once adopted.
    if config.accept.is_some() {
        let datagram = listen
            .iter()
            .zip(&listeners)
            .find(|(_, listener)| listener.transport == addr::Transport::Datagram);
        if let Some((spec, _)) = datagram {
            return Err(cli::accept_on_datagram(&spec.text));
        }
    }
    if config.stdin_socket && listeners.len() != 1 {
        return Err(cli::stdin_socket_count(listeners.len()));
    }
    store_own_sockets(&listen[own_from..], &mut listeners[own_from..]);
    // Everything that may need root happens before the privilege drop:
    // binding, the control socket (owned by the user sockhold becomes, so
    // that it can still be reached) and the pid file.
    let control = match &config.control {
        Some(path) => {
            let owner = credentials.as_ref().map(|c| listen::SocketOwner {
                uid: Some(c.uid),
                gid: Some(c.gid),
            });
            Some(control::ControlSocket::bind(path, owner)?)
        }
        None => None,
    };
    let pid_file = match &config.pid_file {
        Some(path) => Some(pidfile::PidFile::write(path)?),
        None => None,
    };
    if let Some(credentials) = &credentials {
        privileges::drop_to(credentials)?;
    }
    event_loop::EventLoop::new(config, listeners)?
        .with_control(control, pid_file)?
        .with_exe(exe)
        .run()
}

/// The new binary of an upgrade: the same argv, parsed again into
/// `config`; everything else adopted from the state instead of made (no
/// bind, no new control socket or pid file, no privilege drop: done
/// already). What this binary cannot take sends it back to the old one.
fn run_upgraded(config: config::Config, incoming: upgrade::Incoming) -> Result<i32, Error> {
    let prepared = (|| {
        incoming.check()?;
        // The same argv on both sides; a state that disagrees is not ours.
        if config.intercept_bind != incoming.state.intercept.is_some() {
            return Err(if config.intercept_bind {
                "the arguments have --intercept-bind, the state carries no interceptor"
            } else {
                "the state carries --intercept-bind's interceptor, the arguments do not have --intercept-bind"
            }
            .to_string());
        }
        if config.accept.is_some() != incoming.state.per_connection.is_some() {
            return Err(if config.accept.is_some() {
                "the arguments have --accept, the state carries no connection children"
            } else {
                "the state carries --accept's connection children, the arguments do not have --accept"
            }
            .to_string());
        }
        let listen = activation::listen_specs(
            &activation::PassedEnv::from_environment(),
            std::process::id(),
            &config.listen,
        )
        .map_err(|e| e.message)?;
        if listen.len() != incoming.state.sockets.len() {
            return Err(format!(
                "the state holds {} sockets, the arguments name {}",
                incoming.state.sockets.len(),
                listen.len()
            ));
        }
        let socket_owner = match &config.socket_owner {
            Some(owner) => Some(privileges::resolve_socket_owner(owner).map_err(|e| e.message)?),
            None => None,
        };
        let supervisor = generations::supervisor::Supervisor::restore(
            config.supervisor.clone(),
            &incoming.state.supervisor,
            upgrade::clock(),
        )
        .map_err(|e| format!("cannot take the supervisor's state: {e}"))?;
        Ok((listen, socket_owner, supervisor))
    })();
    let (listen, socket_owner, supervisor) = match prepared {
        Ok(prepared) => prepared,
        Err(reason) => return Err(Error::new(exit::OS, incoming.fall_back(&reason))),
    };
    let held: Vec<_> = incoming
        .state
        .sockets
        .iter()
        .map(|socket| (socket.fd, socket.file))
        .collect();
    let options = listen::SocketOptions {
        backlog: config.backlog,
        socket_mode: config.socket_mode,
        socket_owner,
    };
    let listeners = match listen::adopt_all(&listen, &held, options) {
        Ok(listeners) => listeners,
        Err(reason) => return Err(Error::new(exit::OS, incoming.fall_back(&reason))),
    };
    let control = config.control.clone();
    let pid_file = config.pid_file.clone();
    event_loop::EventLoop::new(config, listeners)?
        .resume(
            incoming,
            supervisor,
            control.as_deref(),
            pid_file.as_deref(),
        )?
        .run()
}

/// Under systemd with an fd store for sockhold: stores the `-l` sockets
/// there (not `fd:N` ones, which are someone else's), so that a restarted
/// sockhold takes them back and no connection is refused meanwhile. Their
/// socket files then stay at exit, with the sockets in the store.
fn store_own_sockets(specs: &[addr::ListenSpec], listeners: &mut [listen::Listener]) {
    let own: Vec<usize> = specs
        .iter()
        .enumerate()
        .filter(|(_, spec)| !matches!(spec.address, addr::ListenAddress::Fd(_)))
        .map(|(index, _)| index)
        .collect();
    let sockets: Vec<(&str, std::os::fd::BorrowedFd<'_>)> = own
        .iter()
        .map(|&index| (listeners[index].name.as_str(), listeners[index].fd()))
        .collect();
    if sd_notify::store_sockets(&sd_notify::NotifyEnv::from_environment(), &sockets) {
        for index in own {
            listeners[index].keep_socket_file();
        }
    }
}

/// `sockhold reload|status|stop --control PATH` (and the hidden
/// `completions SHELL`).
fn run_client() -> Result<i32, Error> {
    let cli = match cli::ClientCli::try_parse() {
        Ok(cli) => cli,
        Err(error) => return Ok(report_usage_error(&error)),
    };
    match cli.into_action() {
        cli::ClientAction::Completions(script) => {
            let mut stdout = std::io::stdout();
            stdout
                .write_all(&script)
                .and_then(|()| stdout.flush())
                .map_err(|e| Error::new(exit::OS, format!("cannot write the completions: {e}")))?;
            Ok(exit::OK)
        }
        cli::ClientAction::Request { request, control } => control::run_client(&control, request),
    }
}

/// clap's help and version go to stdout with status 0; a usage error is
/// one line on stderr and status 64 (clap itself would exit 2), with
/// clap's suggestion of a similar argument, value or subcommand kept on
/// that line.
fn report_usage_error(error: &clap::Error) -> i32 {
    use clap::error::{ContextKind, ContextValue, ErrorKind};
    match error.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = error.print();
            exit::OK
        }
        _ => {
            // clap's tips come after its message's blank line: the
            // suggestions are taken from the error's context instead, and
            // the "use -- VALUE" tip is dropped (after `--` comes the
            // command, not a value).
            let message = usage_message(error);
            let suggested: Vec<String> = [
                ContextKind::SuggestedArg,
                ContextKind::SuggestedValue,
                ContextKind::SuggestedSubcommand,
            ]
            .into_iter()
            .filter_map(|kind| error.get(kind))
            .flat_map(|value| match value {
                ContextValue::String(one) => vec![one.clone()],
                ContextValue::Strings(many) => many.clone(),
                _ => Vec::new(),
            })
            .map(|suggestion| format!("'{suggestion}'"))
            .collect();
            let hint = match suggested.as_slice() {
                [] => String::new(),
                some => format!("did you mean {}? ", some.join(" or ")),
            };
            eprintln!("sockhold: error: {message} ({hint}see sockhold --help)");
            exit::USAGE
        }
    }
}

/// clap's message folded into one line: it runs until the first blank
/// line (a missing argument is named on the line after the sentence).
fn usage_message(error: &clap::Error) -> String {
    let rendered = error.to_string();
    let message: Vec<&str> = rendered
        .lines()
        .take_while(|line| !line.trim().is_empty())
        .map(str::trim)
        .collect();
    let message = message.join(" ");
    message
        .strip_prefix("error: ")
        .unwrap_or(&message)
        .to_string()
}

/// Refuses at once a command that cannot run, with the shell's statuses.
fn check_command(command: &[std::ffi::OsString]) -> Result<(), Error> {
    let path = std::env::var_os("PATH");
    spawn::resolve_command(&command[0], path.as_deref()).map(|_| ())
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
