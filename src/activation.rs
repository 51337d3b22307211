//! Sockets handed to sockhold itself by its service manager, by the
//! socket-activation protocol (sd_listen_fds(3)): `LISTEN_FDS=N` and
//! `LISTEN_PID=<our pid>` mean fds 3 .. 3+N-1 are ours, named by
//! `LISTEN_FDNAMES`. They are adopted like `-l fd:N` (checked to be
//! listening stream sockets or bound datagram sockets, as ListenStream= and
//! ListenDatagram= make them) and come first, in their order, before the
//! `-l` sockets. Variables addressed to another pid are ignored; either way
//! they never reach a child (see `spawn::ENV_ADDRESSED_TO_SOCKHOLD`).
//!
//! Pure: the environment and our pid are parameters.

use crate::addr::{self, ListenAddress, ListenSpec};
use crate::error::Error;
use crate::spawn::FIRST_PASSED_FD;

/// The most sockets sockhold takes by LISTEN_FDS. Every one of them is an
/// open fd numbered from 3 up, so a count like this is already absurd; a
/// larger one is refused before anything is allocated for it.
const MAX_PASSED_FDS: usize = 4096;

/// The three variables as sockhold found them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PassedEnv {
    pub listen_pid: Option<String>,
    pub listen_fds: Option<String>,
    pub listen_fdnames: Option<String>,
}

impl PassedEnv {
    pub fn from_environment() -> PassedEnv {
        let var = |name| std::env::var(name).ok();
        PassedEnv {
            listen_pid: var("LISTEN_PID"),
            listen_fds: var("LISTEN_FDS"),
            listen_fdnames: var("LISTEN_FDNAMES"),
        }
    }
}

/// The sockets to hold: the ones passed to `our_pid` first, then `cli`.
pub fn listen_specs(
    passed: &PassedEnv,
    our_pid: u32,
    cli: &[ListenSpec],
) -> Result<Vec<ListenSpec>, Error> {
    let mut specs = passed_specs(passed, our_pid)?;
    specs.extend(cli.iter().cloned());
    refuse_fd_taken_twice(&specs)?;
    Ok(specs)
}

/// What sd_listen_fds_with_names(3) would return to us, as `fd:N` specs.
fn passed_specs(passed: &PassedEnv, our_pid: u32) -> Result<Vec<ListenSpec>, Error> {
    let Some(fds) = passed.listen_fds.as_deref() else {
        return Ok(Vec::new());
    };
    // Like libsystemd: without LISTEN_PID naming us, the fds are not ours
    // (a parent's variables that leaked through, or meant for a child).
    match passed.listen_pid.as_deref().map(str::parse::<u32>) {
        Some(Ok(pid)) if pid == our_pid => {}
        _ => {
            log::debug!(
                "LISTEN_FDS is addressed to pid {}, not to us: ignored",
                passed.listen_pid.as_deref().unwrap_or("(unset)")
            );
            return Ok(Vec::new());
        }
    }
    let refuse = |reason: &str| {
        Error::usage(
            "cannot adopt sockets from",
            &format!("LISTEN_FDS={fds}"),
            reason,
            "the service manager should set LISTEN_FDS to the number of sockets it passes",
        )
    };
    let count: usize = fds.trim().parse().map_err(|_| refuse("not a number"))?;
    if count > MAX_PASSED_FDS {
        return Err(refuse(&format!("more than {MAX_PASSED_FDS} sockets")));
    }
    let names: Vec<&str> = match passed.listen_fdnames.as_deref() {
        Some(names) => names.split(':').collect(),
        None => Vec::new(),
    };
    if passed.listen_fdnames.is_some() && names.len() != count {
        log::warn!(
            "LISTEN_FDNAMES has {} names for {count} sockets: using default names",
            names.len()
        );
    }
    let names_usable = names.len() == count;
    let specs = (0..count)
        .map(|index| {
            let fd = FIRST_PASSED_FD + index as i32;
            let name = names_usable
                .then(|| names[index])
                .filter(|name| match addr::check_name(name) {
                    Ok(()) => true,
                    Err(error) => {
                        log::warn!(
                            "LISTEN_FDNAMES name '{name}' for fd {fd} not usable ({}): using the default name",
                            error.reason
                        );
                        false
                    }
                })
                .map(str::to_owned);
            ListenSpec {
                name,
                address: ListenAddress::Fd(fd),
                text: format!("fd:{fd} (LISTEN_FDS)"),
            }
        })
        .collect();
    Ok(specs)
}

/// An fd adopted twice would be owned (and closed) twice.
fn refuse_fd_taken_twice(specs: &[ListenSpec]) -> Result<(), Error> {
    for (index, spec) in specs.iter().enumerate() {
        let ListenAddress::Fd(fd) = spec.address else {
            continue;
        };
        let earlier = specs[..index]
            .iter()
            .find(|other| other.address == ListenAddress::Fd(fd));
        if let Some(earlier) = earlier {
            return Err(Error::usage(
                "cannot adopt",
                &spec.text,
                &format!("fd {fd} is already adopted as '{}'", earlier.text),
                "give each inherited fd once; sockets passed by LISTEN_FDS are adopted without -l",
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pid: &str, fds: &str, names: Option<&str>) -> PassedEnv {
        PassedEnv {
            listen_pid: Some(pid.to_string()),
            listen_fds: Some(fds.to_string()),
            listen_fdnames: names.map(str::to_string),
        }
    }

    fn cli(texts: &[&str]) -> Vec<ListenSpec> {
        texts
            .iter()
            .map(|t| addr::parse_listen(t).unwrap())
            .collect()
    }

    #[test]
    fn passed_sockets_come_first_with_their_names() {
        let specs = listen_specs(&env("42", "2", Some("web:admin")), 42, &cli(&["8080"])).unwrap();
        let summary: Vec<(Option<&str>, &ListenAddress)> = specs
            .iter()
            .map(|s| (s.name.as_deref(), &s.address))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("web"), &ListenAddress::Fd(3)),
                (Some("admin"), &ListenAddress::Fd(4)),
                (None, &ListenAddress::TcpAll { port: 8080 }),
            ]
        );
    }

    #[test]
    fn sockets_for_another_pid_or_without_pid_are_ignored() {
        assert_eq!(listen_specs(&env("1", "2", None), 42, &[]).unwrap(), vec![]);
        let no_pid = PassedEnv {
            listen_fds: Some("1".into()),
            ..PassedEnv::default()
        };
        assert_eq!(listen_specs(&no_pid, 42, &[]).unwrap(), vec![]);
        assert_eq!(
            listen_specs(&PassedEnv::default(), 42, &[]).unwrap(),
            vec![]
        );
    }

    #[test]
    fn missing_or_miscounted_names_fall_back_to_defaults() {
        for names in [None, Some("only-one"), Some("bad name:ok")] {
            let specs = listen_specs(&env("42", "2", names), 42, &[]).unwrap();
            assert_eq!(specs.len(), 2);
            assert_eq!(specs[0].name, None, "{names:?}");
        }
        let specs = listen_specs(&env("42", "2", Some("bad name:ok")), 42, &[]).unwrap();
        assert_eq!(specs[1].name.as_deref(), Some("ok"));
    }

    #[test]
    fn bad_count_is_an_error_and_zero_is_none() {
        let error = listen_specs(&env("42", "two", None), 42, &[]).unwrap_err();
        assert_eq!(error.exit_status, 64);
        assert!(
            error.message.contains("LISTEN_FDS=two"),
            "{}",
            error.message
        );
        assert_eq!(
            listen_specs(&env("42", "0", None), 42, &[]).unwrap(),
            vec![]
        );
    }

    #[test]
    fn an_absurd_count_is_refused_before_anything_is_allocated() {
        let error = listen_specs(&env("42", "18446744073709551615", None), 42, &[]).unwrap_err();
        assert_eq!(error.exit_status, 64);
        assert_eq!(
            error.message,
            "cannot adopt sockets from 'LISTEN_FDS=18446744073709551615': more than 4096 sockets (the service manager should set LISTEN_FDS to the number of sockets it passes)"
        );
        assert_eq!(
            listen_specs(&env("42", "4096", None), 42, &[])
                .unwrap()
                .len(),
            4096
        );
        assert!(listen_specs(&env("42", "4097", None), 42, &[]).is_err());
    }

    #[test]
    fn an_fd_cannot_be_adopted_twice() {
        let error = listen_specs(&env("42", "1", None), 42, &cli(&["fd:3"])).unwrap_err();
        assert_eq!(error.exit_status, 64);
        assert!(
            error
                .message
                .contains("fd 3 is already adopted as 'fd:3 (LISTEN_FDS)'"),
            "{}",
            error.message
        );
        assert!(listen_specs(&PassedEnv::default(), 42, &cli(&["fd:5", "fd:5"])).is_err());
        assert!(listen_specs(&env("42", "1", None), 42, &cli(&["fd:4"])).is_ok());
    }
}
