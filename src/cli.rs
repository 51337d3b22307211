//! The command line: the only file that knows flag names. Raw arguments are
//! turned into a validated `Config`; value parsers reuse `addr`, `signals` and
//! `config` so every error reads the same.

use crate::addr::{self, ListenAddress, ListenSpec, Transport};
use crate::compat::CompatEnv;
use crate::config::{
    self, AcceptSettings, Config, DEFAULT_MAX_CONNECTIONS, MaintenanceSettings, ReadyMode,
    RestartPolicy, SupervisorSettings,
};
use crate::control::{ClientTarget, Request};
use crate::error::{Error, exit};
use crate::signals;
use clap::{ArgAction, Args, CommandFactory, Parser, Subcommand, ValueEnum};
use nix::sys::signal::Signal;
use std::ffi::{OsStr, OsString};
use std::path::PathBuf;
use std::time::Duration;

// A paragraph is one line (continued with `\`), so that clap wraps it to
// the width of --help (see `help_width_limit`); example lines stay short.
const AFTER_HELP: &str = "\
Signals: HUP reloads (new generation, then the old one stops once the new one is ready); \
TERM and INT stop every generation and exit with the child's status (0 for a stop \
that was asked for and honoured); the --forward-signals list (by default every other \
signal but XCPU, XFSZ, TSTP, TTIN, TTOU, PIPE and the faults) goes to the current child. \
With --accept, TERM and INT stop accepting and stop every running connection's child, \
HUP changes nothing (each connection runs the command afresh), and forwarded signals \
go to every running child.

Control: sockhold reload|status|stop --control PATH talks to a running sockhold.

Examples:
  sockhold -l 8080 -- ./server --flag
  sockhold -l http=127.0.0.1:8080 -l /run/app.sock --ready notify -- ./server
  sockhold -l dns=udp:5353 -l log=unix-dgram:/run/app/log.sock -- ./server
  sockhold --user nobody -l 80 --control /run/app.ctl -- ./server
  kill -HUP <sockhold pid>
  sockhold --accept --inetd -l 7000 -- cat
  sockhold --accept --max-connections 64 --max-per-source 4 -l 7000 -- ./handler
  sockhold --lazy -l 8080 -- ./server
  sockhold reload --control /run/app.ctl
  sockhold --control /run/app.ctl --maintenance 503.http -l 8080 -- ./server

See sockhold(1) for the child's environment and the exit status table.";

/// The widest `--help` may be. On a terminal, help is wrapped to its
/// width, up to 100 columns (longer lines are hard to read); otherwise
/// (piped, redirected) to 80 columns, or `COLUMNS` if narrower, whatever
/// terminal stderr or stdin may be.
fn help_width_limit() -> usize {
    if std::io::IsTerminal::is_terminal(&std::io::stdout()) {
        100
    } else {
        80
    }
}

#[derive(Debug, Parser)]
#[command(
    name = "sockhold",
    version,
    about = "Hold listening sockets and run a server on them, with zero-downtime reloads",
    after_help = AFTER_HELP,
    override_usage = "sockhold [OPTIONS] -l ADDR... -- COMMAND [ARGS]...",
    max_term_width = help_width_limit()
)]
pub struct Cli {
    /// Socket to hold and pass on (repeatable; order = fd order from 3):
    /// PORT, IP:PORT, [IPv6]:PORT, /path or ./path (Unix), @abstract (TCP and Unix stream);
    /// udp:PORT, udp:IP:PORT, udp:[IPv6]:PORT, unix-dgram:PATH, unix-dgram:@abstract (datagram);
    /// fd:N (inherited); NAME=ADDR names it
    #[arg(short = 'l', long = "listen", value_name = "ADDR", value_parser = parse_listen_arg,
          help_heading = "Sockets")]
    listen: Vec<ListenSpec>,

    /// Listen queue length of stream sockets [default: the system maximum, net.core.somaxconn]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..),
          allow_negative_numbers = true, help_heading = "Sockets")]
    backlog: Option<i32>,

    /// File mode of Unix socket files, in octal, set when the file is created [default: from the umask]
    #[arg(long, value_name = "MODE", value_parser = parse_mode, help_heading = "Sockets")]
    socket_mode: Option<u32>,

    /// Also describe the stream sockets the way other supervisors do, comma-separated:
    /// server-starter (SERVER_STARTER_PORT), einhorn (EINHORN_FDS, EINHORN_FD_*)
    #[arg(
        long,
        value_name = "NAME,...",
        value_enum,
        value_delimiter = ',',
        conflicts_with = "accept",
        help_heading = "Sockets"
    )]
    compat_env: Vec<CompatArg>,

    /// Owner of Unix socket files, as chown(1) writes it, set before the socket can be used [default: sockhold's user]
    #[arg(long, value_name = "USER[:GROUP]", help_heading = "Sockets")]
    socket_owner: Option<String>,

    /// After binding, run as this user (name or uid), sockhold and its children alike
    #[arg(long, value_name = "NAME|UID", help_heading = "Privileges")]
    user: Option<String>,

    /// Group to run as with --user [default: the user's primary group]
    #[arg(
        long,
        value_name = "NAME|GID",
        requires = "user",
        help_heading = "Privileges"
    )]
    group: Option<String>,

    /// Write sockhold's pid to this file (removed at exit)
    #[arg(long, value_name = "PATH", help_heading = "Control")]
    pid_file: Option<PathBuf>,

    /// Serve the control socket here (reload, status, stop), owner-only
    #[arg(long, value_name = "PATH", value_parser = parse_control_path, help_heading = "Control")]
    control: Option<PathBuf>,

    /// When a new child is ready: "auto" (seen accepting; else READY=1; else 1s), "accepting", "notify" (only READY=1) or a DURATION (then, or on an earlier READY=1)
    #[arg(long, value_name = "auto|accepting|notify|DURATION", default_value = "auto", value_parser = parse_ready,
          allow_negative_numbers = true, help_heading = "Generations")]
    ready: ReadyMode,

    /// Give up on a new child that is not ready after this long (stopped; a failed start)
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = config::parse_duration,
          allow_negative_numbers = true, help_heading = "Generations")]
    ready_timeout: Duration,

    /// Signal that asks a child to stop (SIGCONT follows it)
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", value_parser = signals::parse_signal,
          help_heading = "Generations")]
    stop_signal: Signal,

    /// SIGKILL a stopping child after this long
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = config::parse_duration,
          allow_negative_numbers = true, help_heading = "Generations")]
    stop_timeout: Duration,

    /// What to do when the current child exits on its own
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = RestartArg::OnFailure,
          help_heading = "Generations")]
    restart: RestartArg,

    /// Longest wait between restarts (the wait starts at 100ms and doubles per crash)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = config::parse_duration,
          allow_negative_numbers = true, help_heading = "Generations")]
    restart_max_delay: Duration,

    /// Start the child only when a connection or datagram is waiting, and wait again after it exits on its own
    #[arg(long, conflicts_with = "accept", help_heading = "Generations")]
    lazy: bool,

    /// Run N identical children per generation on the same sockets, each with its own LISTEN_PID and SOCKHOLD_WORKER slot (0..N-1); a crashed one is restarted alone; `sockhold scale` changes N (1..=1024)
    #[arg(long, value_name = "N", default_value_t = 1, conflicts_with = "accept",
          value_parser = clap::value_parser!(u16).range(1..=config::MAX_WORKERS as i64),
          help_heading = "Generations")]
    workers: u16,

    /// With --workers: a reload starts K new workers at a time, and stops an old one each time a new one is ready, so that N workers are ready throughout (K >= N: all at once)
    #[arg(long, value_name = "K", default_value_t = 1, conflicts_with = "accept",
          value_parser = clap::value_parser!(u16).range(1..=config::MAX_WORKERS as i64),
          help_heading = "Generations")]
    reload_surge: u16,

    /// Give each child the listening socket on stdin too (fd 0, as spawn-fcgi and inetd "wait" services do: FastCGI backends such as php-cgi); exactly one socket
    #[arg(long, conflicts_with = "accept", help_heading = "Generations")]
    stdin_socket: bool,
    /// For servers that bind their own port: trap the child's bind(2) (seccomp) and hand it the held socket for an address sockhold holds; other binds run as they are. Sets no_new_privs unless sockhold has CAP_SYS_ADMIN (Linux 5.9+)
    #[arg(long, conflicts_with = "accept", help_heading = "Generations")]
    intercept_bind: bool,

    /// While paused, or while no generation has been ready for --maintenance-after (a crash loop), answer connections on the stream sockets with FILE's bytes (e.g. a whole HTTP 503 response), after reading the request
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "accept",
        help_heading = "Generations"
    )]
    maintenance: Option<PathBuf>,

    /// With --maintenance: answer in a restart backoff once no generation has been ready for this long
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = config::parse_duration,
          allow_negative_numbers = true, requires = "maintenance", help_heading = "Generations")]
    maintenance_after: Duration,

    /// Keep up to N fds that children store with FDSTORE=1 on their NOTIFY_SOCKET (systemd's FileDescriptorStoreMax=), and pass them to every later child after the held sockets, named in LISTEN_FDNAMES; 0 keeps none (0..=4096)
    #[arg(long, value_name = "N", default_value_t = 0, conflicts_with = "accept",
          value_parser = parse_fd_store_max, allow_negative_numbers = true,
          help_heading = "Generations")]
    fd_store_max: usize,

    /// Run each child in a process group of its own and signal the whole group (stop, SIGKILL, forwarded signals)
    #[arg(long, help_heading = "Generations")]
    signal_group: bool,

    /// Signals passed on to the current child, comma-separated, in place of the default list ("default" in the list stands for it, "none" passes none on) [default: QUIT, ABRT, USR1, USR2, ALRM, STKFLT, CONT, URG, VTALRM, PROF, WINCH, IO, PWR]
    #[arg(long, value_name = "SIGNAL,...", default_value = "default", hide_default_value = true,
          value_delimiter = ',', value_parser = parse_forward_item, help_heading = "Generations")]
    forward_signals: Vec<ForwardItem>,

    /// Signal each child gets from the kernel when sockhold dies, even by SIGKILL (prctl PR_SET_PDEATHSIG; the child only, not its own children) [default: none]
    #[arg(long, value_name = "SIGNAL", value_parser = signals::parse_signal,
          help_heading = "Generations")]
    parent_death_signal: Option<Signal>,

    /// Run the command once per connection, with the connection on fd 3 (LISTEN_FDS=1); stream sockets only
    #[arg(long, help_heading = "Per-connection mode")]
    accept: bool,

    /// With --accept: the connection on stdin and stdout instead of fd 3
    #[arg(long, requires = "accept", help_heading = "Per-connection mode")]
    inetd: bool,

    /// With --accept: at N running children, stop accepting until one exits (the kernel queues) [default: 64]
    #[arg(long, value_name = "N", requires = "accept", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Per-connection mode")]
    max_connections: Option<u32>,

    /// With --accept: close at once a new connection from a source (IP address; uid on Unix sockets) that has N running [default: no limit]
    #[arg(long, value_name = "N", requires = "accept", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Per-connection mode")]
    max_per_source: Option<u32>,

    /// With --accept: start at most N children per second; over it, wait (the kernel queues) [default: no limit]
    #[arg(long, value_name = "N", requires = "accept", allow_negative_numbers = true,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Per-connection mode")]
    max_rate: Option<u32>,

    /// More log lines (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count, help_heading = "Logging")]
    verbose: u8,

    /// Fewer log lines (-q warnings and errors only, -qq errors only)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose",
          help_heading = "Logging")]
    quiet: u8,

    /// The server program and its arguments
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true)]
    command: Vec<OsString>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum CompatArg {
    ServerStarter,
    Einhorn,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum RestartArg {
    OnFailure,
    Always,
    Never,
}

/// Log level asked for on the command line, as a `log` filter.
pub fn log_level(cli: &Cli) -> log::LevelFilter {
    match (cli.quiet, cli.verbose) {
        (0, 0) => log::LevelFilter::Info,
        (0, 1) => log::LevelFilter::Debug,
        (0, _) => log::LevelFilter::Trace,
        (1, _) => log::LevelFilter::Warn,
        _ => log::LevelFilter::Error,
    }
}

fn parse_listen_arg(text: &str) -> Result<ListenSpec, String> {
    addr::parse_listen(text).map_err(|e| format!("{} ({})", e.reason, e.hint))
}

/// `--control PATH`: a Unix socket path, with `-l`'s limit and words.
fn parse_control_path(text: &str) -> Result<PathBuf, String> {
    addr::check_unix_path(text).map_err(|e| format!("{} ({})", e.reason, e.hint))
}

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("not an octal file mode (write e.g. 660 or 0600)".to_string()),
    }
}

/// `--fd-store-max N`: 0 (off) up to `fd_store::MAX_FDS`.
fn parse_fd_store_max(text: &str) -> Result<usize, String> {
    let max = crate::fd_store::MAX_FDS;
    match text.trim().parse::<usize>() {
        Ok(count) if count <= max => Ok(count),
        Ok(_) => Err(format!(
            "more than {max} fds (every child gets them all; give at most {max})"
        )),
        Err(_) => Err(format!(
            "not a number of fds (write a count from 0 to {max}, e.g. 16; 0 keeps none)"
        )),
    }
}

fn parse_ready(text: &str) -> Result<ReadyMode, String> {
    match text {
        "auto" => return Ok(ReadyMode::Auto),
        "accepting" => return Ok(ReadyMode::Accepting),
        "notify" => return Ok(ReadyMode::Notify),
        _ => {}
    }
    config::parse_duration(text)
        .map(ReadyMode::Delay)
        .map_err(|reason| {
            format!("{reason} (write auto, accepting, notify, or a duration such as 500ms or 2s)")
        })
}

/// One entry of `--forward-signals`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ForwardItem {
    /// `default`: the default list (`signals::forwarded_by_default`).
    Default,
    /// `none`: no signal is passed on.
    None,
    Signal(Signal),
}

fn parse_forward_item(text: &str) -> Result<ForwardItem, String> {
    match text.trim().to_ascii_lowercase().as_str() {
        "default" => Ok(ForwardItem::Default),
        "none" => Ok(ForwardItem::None),
        _ => signals::parse_signal(text)
            .map(ForwardItem::Signal)
            .map_err(|reason| format!("{reason} (write a signal name, 'default' or 'none')")),
    }
}

/// The `--forward-signals` list as signals: `default` expanded, each signal
/// once, in the order given.
fn forward_list(items: &[ForwardItem]) -> Result<Vec<Signal>, Error> {
    if items.contains(&ForwardItem::None) && items.len() > 1 {
        return Err(Error::usage(
            "cannot use --forward-signals",
            "none",
            "'none' means no signal, so it cannot come with others",
            "give either 'none' or a list of signals",
        ));
    }
    let mut list = Vec::new();
    for item in items {
        let add = match item {
            ForwardItem::None => Vec::new(),
            ForwardItem::Default => signals::forwarded_by_default(),
            ForwardItem::Signal(signal) => {
                if let Some((reason, fix)) = signals::forwarding_refused(*signal) {
                    return Err(Error::usage(
                        "cannot forward",
                        signals::name(*signal),
                        reason,
                        fix,
                    ));
                }
                vec![*signal]
            }
        };
        for signal in add {
            if !list.contains(&signal) {
                list.push(signal);
            }
        }
    }
    Ok(list)
}

impl Cli {
    /// Checks what clap cannot check field by field and builds the `Config`.
    pub fn into_config(self) -> Result<Config, Error> {
        if matches!(self.stop_signal, Signal::SIGKILL | Signal::SIGSTOP) {
            // SIGKILL is what the stop timeout escalates to; stopping with it
            // leaves no graceful stop at all.
            return Err(Error::usage(
                "cannot use --stop-signal",
                signals::name(self.stop_signal),
                "it cannot be handled, so no stop would be graceful",
                "use TERM, INT or QUIT",
            ));
        }
        let forward_signals = forward_list(&self.forward_signals)?;
        if self.ready_timeout.is_zero() {
            return Err(Error::usage(
                "cannot use --ready-timeout",
                &config::format_duration(self.ready_timeout),
                "no generation could ever be ready in time",
                "give it a positive duration, e.g. 60s, the default",
            ));
        }
        refuse_overlapping_addresses(&self.listen)?;
        for (option, path, example) in [
            ("--pid-file", &self.pid_file, "sockhold.pid"),
            ("--control", &self.control, "sockhold.ctl"),
        ] {
            if let Some(path) = path.as_deref().filter(|path| path.is_dir()) {
                let text = path.display().to_string();
                let kind = if option == "--control" {
                    "a socket file"
                } else {
                    "a file"
                };
                return Err(Error::usage(
                    &format!("cannot use {option}"),
                    &text,
                    "it is a directory",
                    &format!("name {kind} in it, e.g. {}", path.join(example).display()),
                ));
            }
        }
        if self.ready == ReadyMode::Auto && self.ready_timeout <= config::AUTO_DELAY {
            // Not an error: a child that can be observed is ready in time.
            log::warn!(
                "--ready-timeout {} is not above the {} after which --ready auto takes a child it cannot observe (another user's, non-dumpable) for ready: such a child never is; raise --ready-timeout, or use --ready notify",
                config::format_duration(self.ready_timeout),
                config::format_duration(config::AUTO_DELAY)
            );
        }
        if let ReadyMode::Delay(delay) = self.ready {
            if delay > self.ready_timeout {
                return Err(Error::usage(
                    "cannot use --ready",
                    &config::format_duration(delay),
                    "longer than --ready-timeout",
                    "raise --ready-timeout or shorten --ready",
                ));
            }
        }
        if self.stdin_socket && self.listen.len() > 1 {
            return Err(stdin_socket_count(self.listen.len()));
        }
        if self.accept {
            let datagram = self
                .listen
                .iter()
                .find(|spec| spec.address.transport() == Some(Transport::Datagram));
            if let Some(spec) = datagram {
                return Err(accept_on_datagram(&spec.text));
            }
        }
        let restart = match self.restart {
            RestartArg::OnFailure => RestartPolicy::OnFailure,
            RestartArg::Always => RestartPolicy::Always,
            RestartArg::Never => RestartPolicy::Never,
        };
        let maintenance = match &self.maintenance {
            Some(file) => Some(MaintenanceSettings {
                file: file.clone(),
                answer: crate::generations::maintenance::read_answer(file)
                    .map_err(|reason| maintenance_file_error(file, &reason))?,
            }),
            None => None,
        };
        let accept = self.accept.then(|| AcceptSettings {
            inetd: self.inetd,
            max_connections: self
                .max_connections
                .map_or(DEFAULT_MAX_CONNECTIONS, |n| n as usize),
            max_per_source: self.max_per_source.map(|n| n as usize),
            max_rate: self.max_rate,
            signal_group: self.signal_group,
            stop_signal: self.stop_signal,
            stop_timeout: self.stop_timeout,
        });
        Ok(Config {
            listen: self.listen,
            backlog: self.backlog,
            socket_mode: self.socket_mode,
            socket_owner: self.socket_owner,
            user: self.user,
            group: self.group,
            pid_file: self.pid_file,
            control: self.control,
            command: self.command,
            supervisor: SupervisorSettings {
                ready: self.ready,
                ready_timeout: self.ready_timeout,
                stop_signal: self.stop_signal,
                stop_timeout: self.stop_timeout,
                restart,
                restart_max_delay: self.restart_max_delay,
                lazy: self.lazy,
                workers: usize::from(self.workers),
                reload_surge: usize::from(self.reload_surge),
                maintenance_after: maintenance.as_ref().map(|_| self.maintenance_after),
                ..SupervisorSettings::default()
            },
            forward_signals,
            parent_death_signal: self.parent_death_signal,
            signal_group: self.signal_group,
            stdin_socket: self.stdin_socket,
            intercept_bind: self.intercept_bind,
            compat_env: self
                .compat_env
                .iter()
                .map(|compat| match compat {
                    CompatArg::ServerStarter => CompatEnv::ServerStarter,
                    CompatArg::Einhorn => CompatEnv::Einhorn,
                })
                .collect(),
            accept,
            maintenance,
            fd_store_max: self.fd_store_max,
        })
    }
}

/// `--maintenance FILE` that cannot be read at start: sockhold would have
/// nothing to answer with.
fn maintenance_file_error(file: &std::path::Path, reason: &str) -> Error {
    Error::new(
        exit::NO_INPUT,
        format!(
            "cannot read --maintenance file '{}': {reason} (write the whole answer into that file, e.g. an HTTP 503 response, or drop --maintenance)",
            file.display()
        ),
    )
}

/// `--stdin-socket` with other than one socket (counted after inherited
/// sockets are adopted, too): stdin can be only one of them.
pub fn stdin_socket_count(count: usize) -> Error {
    Error::new(
        exit::USAGE,
        format!(
            "cannot use --stdin-socket with {count} sockets: stdin is one socket (give exactly one -l, or pass sockhold exactly one socket)"
        ),
    )
}

/// `--accept` with a datagram socket, which has no connections to accept
/// (systemd refuses Accept=yes on ListenDatagram= likewise). Also used for
/// inherited fds, whose type is known only once adopted.
pub fn accept_on_datagram(text: &str) -> Error {
    Error::usage(
        "cannot use --accept with",
        text,
        "a datagram socket has no connections to accept",
        "drop --accept: the command then gets the socket and reads the datagrams itself; --lazy starts it on the first datagram",
    )
}

/// Two `-l` addresses that cannot both be bound would fail as "in use by
/// another process" when the second is bound: say what it is instead.
/// (`fd:N` given twice is refused in `activation.rs`.)
fn refuse_overlapping_addresses(listen: &[ListenSpec]) -> Result<(), Error> {
    for (index, spec) in listen.iter().enumerate() {
        let Some(earlier) = listen[..index]
            .iter()
            .find(|earlier| earlier.address.overlaps(&spec.address))
        else {
            continue;
        };
        let reason = if earlier.text == spec.text {
            "given twice".to_string()
        } else if earlier.address == spec.address {
            format!("the same address as '{}'", earlier.text)
        } else {
            match earlier.address {
                ListenAddress::TcpAll { port } | ListenAddress::UdpAll { port } => format!(
                    "it overlaps '{}', which takes port {port} on every address",
                    earlier.text
                ),
                _ => format!("it overlaps '{}'", earlier.text),
            }
        };
        return Err(Error::usage(
            "cannot listen on",
            &spec.text,
            &reason,
            "give each address once",
        ));
    }
    Ok(())
}

/// `sockhold reload|status|stop --control PATH`: the control socket's client.
#[derive(Debug, Parser)]
#[command(
    name = "sockhold",
    version,
    about = "Talk to a running sockhold through its control socket (--control)",
    max_term_width = help_width_limit()
)]
pub struct ClientCli {
    #[command(subcommand)]
    command: ClientCommand,
}

#[derive(Debug, Subcommand)]
enum ClientCommand {
    /// Start a new generation; exit 0 once it is ready, non-zero with the reason if it fails
    Reload(ControlArgs),
    /// Print sockhold's sockets, generations, pids and states as one JSON object
    Status(ControlArgs),
    /// Stop every generation and wait until sockhold has exited
    Stop(ControlArgs),
    /// Stop the server but keep its sockets: connections wait in the queue until resume
    Pause(ControlArgs),
    /// After pause: start a new generation; exit 0 once it is ready, non-zero with the reason if it fails
    Resume(ControlArgs),
    /// Run COUNT workers per generation (--workers) from now on; exit 0 once that many are ready, non-zero with the reason if a new one fails
    Scale {
        /// How many workers (1..=1024); the surplus stops, highest slots first
        #[arg(value_name = "COUNT",
              value_parser = clap::value_parser!(u16).range(1..=config::MAX_WORKERS as i64))]
        count: u16,
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Replace sockhold's own binary in place (same pid, children and sockets kept); exit 0 once the new binary runs, non-zero with the reason if it was refused or failed
    Upgrade {
        /// The binary to run instead of the one sockhold was started from (absolute path; it must answer sockhold's upgrade probe)
        #[arg(long = "exec", value_name = "PATH",
              value_parser = clap::builder::TypedValueParser::try_map(clap::builder::OsStringValueParser::new(), parse_upgrade_target))]
        exec: Option<String>,
        #[command(flatten)]
        args: ControlArgs,
    },
    /// Print a shell completion script (bash, zsh or fish)
    #[command(hide = true)]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

#[derive(Debug, Args)]
struct ControlArgs {
    /// The control socket of the sockhold to talk to
    #[arg(long, value_name = "PATH", value_parser = parse_control_path)]
    control: PathBuf,

    /// Give up after this long without sockhold's answer (exit 75); for a reload, keep it above sockhold's --ready-timeout
    #[arg(long, value_name = "DURATION", default_value = "90s", value_parser = parse_client_timeout,
          allow_negative_numbers = true)]
    timeout: Duration,
}

/// `upgrade --exec PATH`: one absolute path that fits the request line
/// (which is text: a path that is not UTF-8 cannot be sent).
fn parse_upgrade_target(path: std::ffi::OsString) -> Result<String, String> {
    let Some(text) = path.to_str() else {
        return Err(
            "it is not UTF-8, which the control protocol needs (link the binary at a UTF-8 path and give that)"
                .to_string(),
        );
    };
    match crate::control::upgrade_target_problem(text) {
        Some(problem) => Err(format!(
            "{problem} (give the new binary's absolute path, e.g. /usr/local/bin/sockhold)"
        )),
        None => Ok(text.to_string()),
    }
}

/// `--timeout` of the client: a duration above zero.
fn parse_client_timeout(text: &str) -> Result<Duration, String> {
    match config::parse_duration(text)? {
        Duration::ZERO => {
            Err("the client needs some time for an answer (write e.g. 90s)".to_string())
        }
        timeout => Ok(timeout),
    }
}

/// What `sockhold <subcommand>` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientAction {
    Request {
        request: Request,
        control: ClientTarget,
    },
    /// The completion script for a shell, ready to print.
    Completions(Vec<u8>),
}

/// The first argument that selects the client instead of the supervisor.
/// `sockhold -- reload` still runs a program called `reload`.
pub fn is_client_command(first: &OsStr) -> bool {
    [
        "reload",
        "status",
        "stop",
        "pause",
        "resume",
        "scale",
        "upgrade",
        "completions",
    ]
    .iter()
    .any(|word| first == *word)
}

impl ClientCli {
    pub fn into_action(self) -> ClientAction {
        let (request, args) = match self.command {
            ClientCommand::Reload(args) => (Request::Reload, args),
            ClientCommand::Status(args) => (Request::Status, args),
            ClientCommand::Stop(args) => (Request::Stop, args),
            ClientCommand::Pause(args) => (Request::Pause, args),
            ClientCommand::Resume(args) => (Request::Resume, args),
            ClientCommand::Scale { count, args } => (
                Request::Scale {
                    count: usize::from(count),
                },
                args,
            ),
            ClientCommand::Upgrade { exec, args } => (Request::Upgrade { target: exec }, args),
            ClientCommand::Completions { shell } => {
                return ClientAction::Completions(completions(shell));
            }
        };
        ClientAction::Request {
            request,
            control: ClientTarget {
                path: args.control,
                timeout: args.timeout,
            },
        }
    }
}

/// Completions for both modes: the supervisor's options and the client's
/// subcommands.
fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut command = Cli::command();
    for sub in ClientCli::command().get_subcommands() {
        if !sub.is_hide_set() {
            command = command.subcommand(sub.clone());
        }
    }
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "sockhold", &mut script);
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("sockhold").chain(args.iter().copied()))
    }

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
        ClientCli::command().debug_assert();
    }

    #[test]
    fn client_subcommands_parse() {
        let cli =
            ClientCli::try_parse_from(["sockhold", "reload", "--control", "/run/a.ctl"]).unwrap();
        assert_eq!(
            cli.into_action(),
            ClientAction::Request {
                request: Request::Reload,
                control: ClientTarget {
                    path: PathBuf::from("/run/a.ctl"),
                    timeout: Duration::from_secs(90),
                },
            }
        );
        assert!(ClientCli::try_parse_from(["sockhold", "status"]).is_err());
        assert!(is_client_command(OsStr::new("stop")));
        assert!(!is_client_command(OsStr::new("-l")));
    }

    #[test]
    fn completions_cover_options_and_subcommands() {
        for shell in [
            clap_complete::Shell::Bash,
            clap_complete::Shell::Zsh,
            clap_complete::Shell::Fish,
        ] {
            let script = String::from_utf8(completions(shell)).unwrap();
            assert!(script.contains("socket-owner"), "{shell}");
            assert!(script.contains("reload"), "{shell}");
        }
    }

    #[test]
    fn group_needs_user() {
        assert!(parse(&["--group", "nogroup", "--", "true"]).is_err());
        assert!(parse(&["--user", "nobody", "--group", "nogroup", "--", "true"]).is_ok());
    }

    #[test]
    fn command_after_double_dash_keeps_its_flags() {
        let cli = parse(&["-l", "8080", "--", "./server", "-l", "--flag"]).unwrap();
        assert_eq!(cli.command, vec!["./server", "-l", "--flag"]);
        assert_eq!(cli.listen.len(), 1);
    }

    #[test]
    fn defaults_match_the_man_page() {
        let config = parse(&["-l", "8080", "--", "true"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.supervisor, SupervisorSettings::default());
        assert_eq!(config.forward_signals, signals::forwarded_by_default());
        assert_eq!(config.parent_death_signal, None);
        assert_eq!(config.backlog, None);
        assert!(config.compat_env.is_empty());
        assert!(!config.signal_group);
    }

    #[test]
    fn forward_signals_replaces_the_default_list_or_extends_it_by_name() {
        let forward = |list: &str| {
            parse(&["--forward-signals", list, "--", "true"])
                .unwrap()
                .into_config()
                .map(|config| config.forward_signals)
        };
        assert_eq!(
            forward("USR1,QUIT").unwrap(),
            vec![Signal::SIGUSR1, Signal::SIGQUIT]
        );
        assert_eq!(forward("none").unwrap(), vec![]);
        let mut extended = signals::forwarded_by_default();
        extended.push(Signal::SIGXCPU);
        assert_eq!(forward("default,XCPU,QUIT").unwrap(), extended);
        for refused in ["none,USR1", "TTOU", "PIPE", "SEGV", "CHLD", "KILL"] {
            assert_eq!(forward(refused).unwrap_err().exit_status, 64, "{refused}");
        }
        assert!(parse(&["--forward-signals", "sometimes", "--", "true"]).is_err());
    }

    #[test]
    fn the_help_names_the_default_forward_list() {
        let names: Vec<&str> = signals::forwarded_by_default()
            .iter()
            .map(|signal| &signals::name(*signal)[3..])
            .collect();
        let command = Cli::command();
        let help = command
            .get_arguments()
            .find(|arg| arg.get_id() == "forward_signals")
            .and_then(|arg| arg.get_help())
            .unwrap()
            .to_string();
        assert!(
            help.contains(&format!("[default: {}]", names.join(", "))),
            "{help}"
        );
    }

    #[test]
    fn parent_death_signal_takes_a_signal() {
        let config = parse(&["--parent-death-signal", "KILL", "--", "true"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.parent_death_signal, Some(Signal::SIGKILL));
        assert!(parse(&["--parent-death-signal", "NOPE", "--", "true"]).is_err());
    }

    #[test]
    fn compat_env_takes_a_list() {
        let config = parse(&["--compat-env", "server-starter,einhorn", "--", "true"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(
            config.compat_env,
            vec![CompatEnv::ServerStarter, CompatEnv::Einhorn]
        );
        assert!(parse(&["--compat-env", "inetd", "--", "true"]).is_err());
        assert!(parse(&["--compat-env", "einhorn", "--accept", "--", "cat"]).is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        assert!(parse(&["-l", "70000", "--", "true"]).is_err());
        assert!(parse(&["--stop-signal", "NOPE", "--", "true"]).is_err());
        assert!(parse(&["--stop-timeout", "soon", "--", "true"]).is_err());
        assert!(parse(&["--socket-mode", "999", "--", "true"]).is_err());
        assert!(parse(&["-l", "8080"]).is_err());
        let hup = parse(&["--forward-signals", "HUP", "--", "true"]).unwrap();
        assert_eq!(hup.into_config().unwrap_err().exit_status, 64);
        let kill = parse(&["--stop-signal", "KILL", "--", "true"]).unwrap();
        assert_eq!(kill.into_config().unwrap_err().exit_status, 64);
        let ready = parse(&["--ready", "2m", "--", "true"]).unwrap();
        assert!(ready.into_config().is_err());
    }

    #[test]
    fn workers_take_1_to_1024_and_exclude_accept() {
        let config = parse(&["--workers", "3", "--", "true"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.supervisor.workers, 3);
        let default = parse(&["--", "true"]).unwrap().into_config().unwrap();
        assert_eq!(default.supervisor.workers, 1);
        assert!(parse(&["--workers", "1024", "--", "true"]).is_ok());
        for bad in ["0", "1025", "-1", "two"] {
            assert!(parse(&["--workers", bad, "--", "true"]).is_err(), "{bad}");
        }
        assert!(parse(&["--workers", "2", "--accept", "--", "cat"]).is_err());
        let surge = parse(&["--workers", "4", "--reload-surge", "2", "--", "true"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(surge.supervisor.reload_surge, 2);
        assert_eq!(default.supervisor.reload_surge, 1);
        for bad in ["0", "1025", "-1", "x"] {
            assert!(
                parse(&["--reload-surge", bad, "--", "true"]).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn accept_options_need_accept_and_lazy_excludes_it() {
        let config = parse(&["--accept", "-l", "7000", "--", "cat"])
            .unwrap()
            .into_config()
            .unwrap();
        let accept = config.accept.unwrap();
        assert_eq!(accept.max_connections, DEFAULT_MAX_CONNECTIONS);
        assert_eq!(accept.max_per_source, None);
        assert!(!accept.inetd);
        let config = parse(&[
            "--accept",
            "--inetd",
            "--max-connections",
            "8",
            "--max-per-source",
            "2",
            "--max-rate",
            "100",
            "-l",
            "7000",
            "--",
            "cat",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        let accept = config.accept.unwrap();
        assert!(accept.inetd);
        assert_eq!(accept.max_connections, 8);
        assert_eq!(accept.max_per_source, Some(2));
        assert_eq!(accept.max_rate, Some(100));
        assert!(parse(&["--inetd", "-l", "7000", "--", "cat"]).is_err());
        assert!(parse(&["--max-connections", "8", "--", "cat"]).is_err());
        assert!(parse(&["--accept", "--max-connections", "0", "--", "cat"]).is_err());
        assert!(parse(&["--accept", "--lazy", "--", "cat"]).is_err());
        let lazy = parse(&["--lazy", "-l", "8080", "--", "true"]).unwrap();
        let config = lazy.into_config().unwrap();
        assert!(config.supervisor.lazy);
        assert!(config.accept.is_none());
    }

    #[test]
    fn accept_is_refused_on_datagram_sockets() {
        for address in ["udp:0", "unix-dgram:@log", "web=8080"] {
            let config = parse(&["--accept", "-l", "7000", "-l", address, "--", "cat"])
                .unwrap()
                .into_config();
            if address == "web=8080" {
                assert!(config.is_ok());
                continue;
            }
            let error = config.unwrap_err();
            assert_eq!(error.exit_status, 64);
            assert_eq!(
                error.message,
                format!(
                    "cannot use --accept with '{address}': a datagram socket has no connections to accept (drop --accept: the command then gets the socket and reads the datagrams itself; --lazy starts it on the first datagram)"
                )
            );
        }
        let lazy = parse(&["--lazy", "-l", "udp:0", "--", "cat"]).unwrap();
        assert!(lazy.into_config().is_ok());
    }

    #[test]
    fn maintenance_reads_its_file_and_excludes_accept() {
        let dir = std::env::temp_dir().join(format!("sockhold-cli-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("503");
        std::fs::write(&file, b"busy\n").unwrap();
        let path = file.to_str().unwrap();
        let config = parse(&["--maintenance", path, "-l", "8080", "--", "true"])
            .unwrap()
            .into_config()
            .unwrap();
        assert_eq!(config.maintenance.unwrap().answer, b"busy\n");
        assert_eq!(
            config.supervisor.maintenance_after,
            Some(Duration::from_secs(10))
        );
        let config = parse(&[
            "--maintenance",
            path,
            "--maintenance-after",
            "1s",
            "--",
            "true",
        ])
        .unwrap()
        .into_config()
        .unwrap();
        assert_eq!(
            config.supervisor.maintenance_after,
            Some(Duration::from_secs(1))
        );
        assert!(parse(&["--maintenance", path, "--accept", "--", "cat"]).is_err());
        assert!(parse(&["--maintenance-after", "1s", "--", "true"]).is_err());
        let missing = dir.join("missing");
        let error = parse(&["--maintenance", missing.to_str().unwrap(), "--", "true"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert_eq!(error.exit_status, exit::NO_INPUT);
        let error = parse(&["--maintenance", dir.to_str().unwrap(), "--", "true"])
            .unwrap()
            .into_config()
            .unwrap_err();
        assert!(error.message.contains("not a regular file"), "{error}");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fd_store_max_takes_0_to_4096_and_excludes_accept() {
        let max = |value: &str| {
            parse(&["--fd-store-max", value, "--", "true"])
                .map(|cli| cli.into_config().unwrap().fd_store_max)
        };
        assert_eq!(max("0").unwrap(), 0);
        assert_eq!(max("16").unwrap(), 16);
        assert_eq!(max("4096").unwrap(), 4096);
        for bad in ["4097", "-1", "many", ""] {
            assert!(max(bad).is_err(), "{bad}");
        }
        let default = parse(&["--", "true"]).unwrap().into_config().unwrap();
        assert_eq!(default.fd_store_max, 0);
        assert!(parse(&["--fd-store-max", "4", "--accept", "--", "cat"]).is_err());
        assert!(
            parse_fd_store_max("5000")
                .unwrap_err()
                .contains("at most 4096")
        );
    }

    #[test]
    fn ready_accepts_notify_or_a_duration() {
        assert_eq!(parse_ready("notify"), Ok(ReadyMode::Notify));
        assert_eq!(parse_ready("auto"), Ok(ReadyMode::Auto));
        assert_eq!(parse_ready("accepting"), Ok(ReadyMode::Accepting));
        assert_eq!(
            parse_ready("250ms"),
            Ok(ReadyMode::Delay(Duration::from_millis(250)))
        );
        assert!(parse_ready("later").is_err());
    }
}
