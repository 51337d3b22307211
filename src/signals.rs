//! Signal names: parsing `TERM`, `SIGTERM`, `15` and printing `SIGTERM`.
//! Pure; shared by the command line and the log so both use the same words.

use nix::sys::signal::Signal;
use std::str::FromStr;

/// Parses a signal given as `TERM`, `SIGTERM`, `term` or a number.
/// Who asked sockhold to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopBy {
    /// SIGTERM or SIGINT: asked again while stopping, it means "now".
    Signal,
    /// A `stop` request on the control socket: asked again, it just waits.
    Control,
}

pub fn parse_signal(text: &str) -> Result<Signal, String> {
    let trimmed = text.trim();
    if let Ok(number) = trimmed.parse::<i32>() {
        return Signal::try_from(number).map_err(|_| format!("no signal has number {number}"));
    }
    let upper = trimmed.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    Signal::from_str(&name).map_err(|_| "unknown signal name".to_string())
}

/// `SIGTERM`, as the log and messages print it.
pub fn name(signal: Signal) -> &'static str {
    signal.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_names_with_and_without_prefix_and_numbers() {
        assert_eq!(parse_signal("TERM"), Ok(Signal::SIGTERM));
        assert_eq!(parse_signal("sigusr1"), Ok(Signal::SIGUSR1));
        assert_eq!(parse_signal("SIGQUIT"), Ok(Signal::SIGQUIT));
        assert_eq!(parse_signal("9"), Ok(Signal::SIGKILL));
    }

    #[test]
    fn rejects_unknown_names_and_numbers() {
        assert!(parse_signal("TREM").is_err());
        assert!(parse_signal("99").is_err());
    }
}
