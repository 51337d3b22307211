//! Sockets handed to sockhold itself by its service manager, by the
//! socket-activation protocol (sd_listen_fds(3)): `LISTEN_FDS=N` and
//! `LISTEN_PID=<our pid>` mean fds 3 .. 3+N-1 are ours, named by
//! `LISTEN_FDNAMES`. They are adopted like `-l fd:N` (checked to be
//! listening stream sockets or bound datagram sockets, as ListenStream= and
//! ListenDatagram= make them) and come first, in their order, before the
//! `-l` sockets. Variables addressed to another pid are ignored; either way
//! they never reach a child (see `spawn::ENV_ADDRESSED_TO_SOCKHOLD`).
//!
//! Under systemd with an fd store (FileDescriptorStoreMax=), sockhold
//! stores its own `-l` sockets there by name (`sd_notify::store_sockets`),
//! and systemd passes them back to the next sockhold by LISTEN_FDS: a
//! passed socket named as an `-l` socket and bound to its address takes
//! that socket's place (`take_back_stored`) instead of a new bind, which
//! would find the address in use.
//!
//! Pure: the environment, our pid, and what a passed fd is bound to are
//! parameters.

use crate::addr::{self, ListenAddress, ListenSpec};
use crate::error::Error;
use crate::spawn::FIRST_PASSED_FD;
use std::os::fd::RawFd;

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

/// The sockets to hold, once the ones systemd passed back from its fd
/// store have taken the places of their `-l` sockets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sockets {
    pub specs: Vec<ListenSpec>,
    /// Per spec: the passed fd that is that `-l` socket, adopted in place
    /// of a new bind.
    pub stored: Vec<Option<RawFd>>,
    /// The `-l` sockets are `specs[own_from..]`; before them, the passed
    /// sockets that are not sockhold's own (a `.socket` unit's).
    pub own_from: usize,
}

/// `specs` as `listen_specs` made them (the passed sockets, then the
/// `own_count` `-l` ones), with each passed socket that sockhold stored
/// (`sd_notify::store_sockets`) moved into the place of its `-l` socket:
/// the same name, and bound to that address (`is_bound_to`). A socket of
/// an `-l` without `NAME=` is named by its fd number (`fd4`), which counts
/// the passed sockets that stay in front of it: the count that is
/// consistent with the names is taken, the smallest first.
pub fn take_back_stored(
    specs: Vec<ListenSpec>,
    own_count: usize,
    is_bound_to: impl Fn(RawFd, &ListenAddress) -> bool,
) -> Sockets {
    let passed_count = specs.len() - own_count;
    let (passed, own) = specs.split_at(passed_count);
    for kept in 0..=passed_count {
        let names: Vec<String> = own
            .iter()
            .enumerate()
            .map(|(index, spec)| {
                spec.name
                    .clone()
                    .unwrap_or_else(|| crate::listen::default_name(kept + index))
            })
            .collect();
        let mut stored: Vec<Option<RawFd>> = vec![None; own.len()];
        let mut staying = Vec::new();
        for spec in passed {
            let found = match (&spec.address, spec.name.as_deref()) {
                (ListenAddress::Fd(fd), Some(name)) => (0..own.len()).find(|&index| {
                    stored[index].is_none()
                        && names[index] == name
                        && !matches!(own[index].address, ListenAddress::Fd(_))
                        && is_bound_to(*fd, &own[index].address)
                }),
                _ => None,
            };
            match (found, &spec.address) {
                (Some(index), ListenAddress::Fd(fd)) => stored[index] = Some(*fd),
                _ => staying.push(spec.clone()),
            }
        }
        if staying.len() == kept {
            let own_from = staying.len();
            let mut all_stored = vec![None; own_from];
            all_stored.extend(stored);
            staying.extend(own.iter().cloned());
            return Sockets {
                specs: staying,
                stored: all_stored,
                own_from,
            };
        }
    }
    Sockets {
        stored: vec![None; specs.len()],
        own_from: passed_count,
        specs,
    }
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
    fn a_stored_socket_takes_the_place_of_its_l_socket_by_name_and_address() {
        // fd 3: a .socket unit's; fd 4: stored as "web" (bound to port
        // 8080); fd 5: stored as "fd5", the default name of the second -l
        // once fd 3 stays in front; fd 6: named "api" but bound elsewhere.
        let specs = listen_specs(
            &env("42", "4", Some("unit:web:fd5:api")),
            42,
            &cli(&["web=8080", "/run/app.sock", "api=127.0.0.1:9000"]),
        )
        .unwrap();
        let bound = |fd: RawFd, address: &ListenAddress| match fd {
            4 => *address == ListenAddress::TcpAll { port: 8080 },
            5 => matches!(address, ListenAddress::Unix(_)),
            _ => false,
        };
        let sockets = take_back_stored(specs, 3, bound);
        let summary: Vec<(Option<&str>, &ListenAddress)> = sockets
            .specs
            .iter()
            .map(|s| (s.name.as_deref(), &s.address))
            .collect();
        assert_eq!(
            summary,
            vec![
                (Some("unit"), &ListenAddress::Fd(3)),
                (Some("fd5"), &ListenAddress::Fd(5)),
                (Some("api"), &ListenAddress::Fd(6)),
                (Some("web"), &ListenAddress::TcpAll { port: 8080 }),
                (None, &ListenAddress::Unix("/run/app.sock".into())),
                (
                    Some("api"),
                    &ListenAddress::Tcp("127.0.0.1:9000".parse().unwrap())
                ),
            ]
        );
        // With fd 3 and fd 6 in front, the unnamed -l would be fd 6, not
        // fd 5: fd 5 is not it, and stays in front too (so it is fd 7).
        assert_eq!(sockets.stored, vec![None, None, None, Some(4), None, None]);
        assert_eq!(sockets.own_from, 3);
        // Where the names fit: fd 3 and fd 4 stored, nothing in front.
        let specs = listen_specs(
            &env("42", "2", Some("web:fd4")),
            42,
            &cli(&["web=8080", "/run/app.sock"]),
        )
        .unwrap();
        let bound = |fd: RawFd, address: &ListenAddress| match fd {
            3 => *address == ListenAddress::TcpAll { port: 8080 },
            4 => matches!(address, ListenAddress::Unix(_)),
            _ => false,
        };
        let sockets = take_back_stored(specs, 2, bound);
        assert_eq!(sockets.stored, vec![Some(3), Some(4)]);
        assert_eq!(sockets.own_from, 0);
        // Nothing stored: as listen_specs made them.
        let specs = listen_specs(&env("42", "1", Some("web")), 42, &cli(&["8080"])).unwrap();
        let sockets = take_back_stored(specs.clone(), 1, |_, _| false);
        assert_eq!(sockets.specs, specs);
        assert_eq!(sockets.stored, vec![None, None]);
        assert_eq!(sockets.own_from, 1);
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
