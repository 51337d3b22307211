//! The command line: the only file that knows flag names. Raw arguments are
//! turned into a validated `Config`; value parsers reuse `addr`, `signals` and
//! `config` so every error reads the same.

use crate::addr::{self, ListenSpec};
use crate::compat::CompatEnv;
use crate::config::{self, Config, ReadyMode, RestartPolicy, SupervisorSettings};
use crate::error::Error;
use crate::signals;
use clap::{ArgAction, Parser, ValueEnum};
use nix::sys::signal::Signal;
use std::ffi::OsString;
use std::time::Duration;

const AFTER_HELP: &str = "\
Signals: HUP reloads (new generation, then the old one stops once the new one is ready);
TERM and INT stop every generation and exit with the child's status (0 for a stop
that was asked for and honoured); the --forward-signals list goes to the current child.

Examples:
  sockhold -l 8080 -- ./server --flag
  sockhold -l http=127.0.0.1:8080 -l /run/app.sock --ready notify -- ./server
  kill -HUP <sockhold pid>

See sockhold(1) for the child's environment and the exit status table.";

#[derive(Debug, Parser)]
#[command(
    name = "sockhold",
    version,
    about = "Hold listening sockets and run a server on them, with zero-downtime reloads",
    after_help = AFTER_HELP,
    override_usage = "sockhold [OPTIONS] -l ADDR... -- COMMAND [ARGS]..."
)]
pub struct Cli {
    /// Socket to hold and pass on (repeatable; order = fd order from 3):
    /// PORT, IP:PORT, [IPv6]:PORT, /path or ./path (Unix), @abstract, fd:N; NAME=ADDR names it
    #[arg(short = 'l', long = "listen", value_name = "ADDR", value_parser = parse_listen_arg,
          help_heading = "Sockets")]
    listen: Vec<ListenSpec>,

    /// Listen queue length [default: the system maximum, net.core.somaxconn]
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(i32).range(1..),
          help_heading = "Sockets")]
    backlog: Option<i32>,

    /// File mode of Unix socket files, in octal, set when the file is created [default: from the umask]
    #[arg(long, value_name = "MODE", value_parser = parse_mode, help_heading = "Sockets")]
    socket_mode: Option<u32>,

    /// Also describe the sockets the way other supervisors do, comma-separated:
    /// server-starter (SERVER_STARTER_PORT), einhorn (EINHORN_FDS, EINHORN_FD_*)
    #[arg(
        long,
        value_name = "NAME,...",
        value_enum,
        value_delimiter = ',',
        help_heading = "Sockets"
    )]
    compat_env: Vec<CompatArg>,

    /// When a new child is ready: "notify" (only on READY=1) or a DURATION (then, or on an earlier READY=1)
    #[arg(long, value_name = "notify|DURATION", default_value = "1s", value_parser = parse_ready,
          help_heading = "Generations")]
    ready: ReadyMode,

    /// Give up on a new child that is not ready after this long
    #[arg(long, value_name = "DURATION", default_value = "60s", value_parser = config::parse_duration,
          help_heading = "Generations")]
    ready_timeout: Duration,

    /// Signal that asks a child to stop
    #[arg(long, value_name = "SIGNAL", default_value = "TERM", value_parser = signals::parse_signal,
          help_heading = "Generations")]
    stop_signal: Signal,

    /// SIGKILL a stopping child after this long
    #[arg(long, value_name = "DURATION", default_value = "10s", value_parser = config::parse_duration,
          help_heading = "Generations")]
    stop_timeout: Duration,

    /// What to do when the current child exits on its own
    #[arg(long, value_name = "POLICY", value_enum, default_value_t = RestartArg::OnFailure,
          help_heading = "Generations")]
    restart: RestartArg,

    /// Longest wait between restarts (the wait starts at 100ms and doubles per crash)
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = config::parse_duration,
          help_heading = "Generations")]
    restart_max_delay: Duration,

    /// Signals passed on to the current child, comma-separated
    #[arg(long, value_name = "SIGNAL,...", default_value = "USR1,USR2", value_delimiter = ',',
          value_parser = signals::parse_signal, help_heading = "Generations")]
    forward_signals: Vec<Signal>,

    /// More log lines (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = ArgAction::Count, help_heading = "Logging")]
    verbose: u8,

    /// Fewer log lines (-q warnings and errors only, -qq errors only)
    #[arg(short, long, action = ArgAction::Count, conflicts_with = "verbose",
          help_heading = "Logging")]
    quiet: u8,

    /// The server program and its arguments
    #[arg(value_name = "COMMAND", required = true, num_args = 1.., trailing_var_arg = true,
          allow_hyphen_values = true)]
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

fn parse_mode(text: &str) -> Result<u32, String> {
    match u32::from_str_radix(text.trim_start_matches("0o"), 8) {
        Ok(mode) if mode <= 0o777 => Ok(mode),
        _ => Err("not an octal file mode (write e.g. 660 or 0600)".to_string()),
    }
}

fn parse_ready(text: &str) -> Result<ReadyMode, String> {
    if text == "notify" {
        return Ok(ReadyMode::Notify);
    }
    config::parse_duration(text)
        .map(ReadyMode::Delay)
        .map_err(|reason| format!("{reason} (write notify, or a duration such as 500ms or 2s)"))
}

/// Signals sockhold handles itself, or that cannot be caught at all.
const NOT_FORWARDABLE: [Signal; 10] = [
    Signal::SIGHUP,
    Signal::SIGTERM,
    Signal::SIGINT,
    Signal::SIGCHLD,
    Signal::SIGKILL,
    Signal::SIGSTOP,
    Signal::SIGILL,
    Signal::SIGFPE,
    Signal::SIGSEGV,
    Signal::SIGBUS,
];

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
        for signal in &self.forward_signals {
            if NOT_FORWARDABLE.contains(signal) {
                return Err(Error::usage(
                    "cannot forward",
                    signals::name(*signal),
                    "sockhold handles this signal itself or cannot catch it",
                    "remove it from --forward-signals; HUP reloads, TERM and INT stop",
                ));
            }
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
        let restart = match self.restart {
            RestartArg::OnFailure => RestartPolicy::OnFailure,
            RestartArg::Always => RestartPolicy::Always,
            RestartArg::Never => RestartPolicy::Never,
        };
        Ok(Config {
            listen: self.listen,
            backlog: self.backlog,
            socket_mode: self.socket_mode,
            command: self.command,
            supervisor: SupervisorSettings {
                ready: self.ready,
                ready_timeout: self.ready_timeout,
                stop_signal: self.stop_signal,
                stop_timeout: self.stop_timeout,
                restart,
                restart_max_delay: self.restart_max_delay,
                ..SupervisorSettings::default()
            },
            forward_signals: self.forward_signals,
            compat_env: self
                .compat_env
                .iter()
                .map(|compat| match compat {
                    CompatArg::ServerStarter => CompatEnv::ServerStarter,
                    CompatArg::Einhorn => CompatEnv::Einhorn,
                })
                .collect(),
        })
    }
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
        assert_eq!(
            config.forward_signals,
            vec![Signal::SIGUSR1, Signal::SIGUSR2]
        );
        assert_eq!(config.backlog, None);
        assert!(config.compat_env.is_empty());
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
    fn ready_accepts_notify_or_a_duration() {
        assert_eq!(parse_ready("notify"), Ok(ReadyMode::Notify));
        assert_eq!(
            parse_ready("250ms"),
            Ok(ReadyMode::Delay(Duration::from_millis(250)))
        );
        assert!(parse_ready("later").is_err());
    }
}
