//! Other supervisors' conventions for the same sockets, for servers written
//! for them (opt-in with `--compat-env`). They come on top of LISTEN_FDS,
//! never instead of it:
//!
//! - Server::Starter (start_server): `SERVER_STARTER_PORT=KEY=FD;KEY=FD...`
//!   where KEY is `PORT` for a TCP socket on every address, `HOST:PORT` or
//!   `[HOST]:PORT` for one address, or the Unix socket path (as
//!   Server/Starter.pm writes it); and `SERVER_STARTER_GENERATION`.
//! - einhorn: `EINHORN_FD_COUNT`, `EINHORN_FD_<i>`, `EINHORN_FD_FAMILY_<i>`
//!   and the older space-separated `EINHORN_FDS`. There is no einhorn command
//!   socket, so `EINHORN_MASTER_PID`/`EINHORN_SOCK_PATH` are not set.
//!
//! Both describe listening stream sockets only (start_server and einhorn
//! bind nothing else, and programs written for them accept(2) on every fd
//! they list), so datagram sockets are left out of both: they stay at
//! their fd and in LISTEN_FDS, and the fds listed keep their real numbers.

use crate::generations::supervisor::GenerationId;
use crate::spawn::FIRST_PASSED_FD;
use std::ffi::OsString;
use std::net::SocketAddr;

/// A convention `--compat-env` can turn on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompatEnv {
    ServerStarter,
    Einhorn,
}

/// What a socket is, as far as the conventions care.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SocketKind {
    Tcp(SocketAddr),
    UnixPath(String),
    UnixAbstract(String),
    /// Unnamed, or a family the conventions have no words for.
    Other,
    /// Not a listening socket: neither convention lists it.
    Datagram,
}

/// The variables for every generation, from the sockets in child fd order.
pub fn environment(kinds: &[CompatEnv], sockets: &[SocketKind]) -> Vec<(OsString, OsString)> {
    let mut env = Vec::new();
    if kinds.contains(&CompatEnv::ServerStarter) {
        env.push(pair("SERVER_STARTER_PORT", server_starter_port(sockets)));
    }
    if kinds.contains(&CompatEnv::Einhorn) {
        env.extend(einhorn(sockets));
    }
    env
}

/// The variables that change with each generation.
pub fn generation_environment(
    kinds: &[CompatEnv],
    generation: GenerationId,
) -> Vec<(OsString, OsString)> {
    if kinds.contains(&CompatEnv::ServerStarter) {
        // start_server counts from 1 for the first worker too.
        vec![pair("SERVER_STARTER_GENERATION", generation.to_string())]
    } else {
        Vec::new()
    }
}

/// Whether an inherited variable must give way to ours (a sockhold run
/// under start_server or einhorn would otherwise pass theirs on, naming
/// fds the child does not have).
pub fn replaces(kinds: &[CompatEnv], key: &[u8]) -> bool {
    (kinds.contains(&CompatEnv::ServerStarter) && key.starts_with(b"SERVER_STARTER_"))
        || (kinds.contains(&CompatEnv::Einhorn) && key.starts_with(b"EINHORN_FD"))
}

fn pair(key: &str, value: String) -> (OsString, OsString) {
    (key.into(), value.into())
}

/// `8080=3;127.0.0.1:8081=4;/run/app.sock=5`, in fd order.
pub fn server_starter_port(sockets: &[SocketKind]) -> String {
    let entries: Vec<String> = sockets
        .iter()
        .enumerate()
        .filter_map(|(index, socket)| {
            let key = match socket {
                // start_server's bare PORT means every address.
                SocketKind::Tcp(address) if address.ip().is_unspecified() => {
                    address.port().to_string()
                }
                SocketKind::Tcp(address) => address.to_string(),
                SocketKind::UnixPath(path) => path.clone(),
                SocketKind::UnixAbstract(name) => format!("@{name}"),
                SocketKind::Other | SocketKind::Datagram => return None,
            };
            Some(format!("{key}={}", FIRST_PASSED_FD as usize + index))
        })
        .collect();
    entries.join(";")
}

/// einhorn's index `i` counts the sockets it lists, so with a datagram
/// socket left out, `EINHORN_FD_<i>` is not always `3 + i`.
fn einhorn(sockets: &[SocketKind]) -> Vec<(OsString, OsString)> {
    let listed: Vec<(&SocketKind, String)> = sockets
        .iter()
        .enumerate()
        .filter(|(_, socket)| **socket != SocketKind::Datagram)
        .map(|(index, socket)| (socket, (FIRST_PASSED_FD as usize + index).to_string()))
        .collect();
    let fds: Vec<&str> = listed.iter().map(|(_, fd)| fd.as_str()).collect();
    let mut env = vec![
        pair("EINHORN_FDS", fds.join(" ")),
        pair("EINHORN_FD_COUNT", listed.len().to_string()),
    ];
    for (index, (socket, fd)) in listed.iter().enumerate() {
        env.push(pair(&format!("EINHORN_FD_{index}"), fd.clone()));
        let family = match socket {
            SocketKind::Tcp(SocketAddr::V4(_)) => "AF_INET",
            SocketKind::Tcp(SocketAddr::V6(_)) => "AF_INET6",
            SocketKind::UnixPath(_) | SocketKind::UnixAbstract(_) => "AF_UNIX",
            SocketKind::Other | SocketKind::Datagram => continue,
        };
        env.push(pair(&format!("EINHORN_FD_FAMILY_{index}"), family.into()));
    }
    env
}

/// The bound address of a socket sockhold holds.
#[cfg(test)]
mod tests {
    use super::*;

    /// einhorn's variables as plain strings, for comparing.
    fn einhorn_text(sockets: &[SocketKind]) -> Vec<(String, String)> {
        einhorn(sockets)
            .into_iter()
            .map(|(k, v)| (k.into_string().unwrap(), v.into_string().unwrap()))
            .collect()
    }

    fn sockets() -> Vec<SocketKind> {
        vec![
            SocketKind::Tcp("[::]:8080".parse().unwrap()),
            SocketKind::Tcp("127.0.0.1:8081".parse().unwrap()),
            SocketKind::Tcp("[::1]:8082".parse().unwrap()),
            SocketKind::UnixPath("/run/app.sock".into()),
            SocketKind::Tcp("0.0.0.0:8083".parse().unwrap()),
        ]
    }

    #[test]
    fn server_starter_port_reads_like_start_server() {
        assert_eq!(
            server_starter_port(&sockets()),
            "8080=3;127.0.0.1:8081=4;[::1]:8082=5;/run/app.sock=6;8083=7"
        );
        assert_eq!(server_starter_port(&[]), "");
        assert_eq!(
            server_starter_port(&[SocketKind::Other, SocketKind::UnixAbstract("x".into())]),
            "@x=4"
        );
    }

    #[test]
    fn einhorn_lists_every_fd_with_its_family() {
        let env = einhorn_text(&sockets()[2..4]);
        let expected = [
            ("EINHORN_FDS", "3 4"),
            ("EINHORN_FD_COUNT", "2"),
            ("EINHORN_FD_0", "3"),
            ("EINHORN_FD_FAMILY_0", "AF_INET6"),
            ("EINHORN_FD_1", "4"),
            ("EINHORN_FD_FAMILY_1", "AF_UNIX"),
        ];
        assert_eq!(env, expected.map(|(k, v)| (k.to_string(), v.to_string())));
    }

    #[test]
    fn datagram_sockets_are_left_out_and_the_rest_keep_their_fds() {
        let mixed = [
            SocketKind::Datagram,
            SocketKind::Tcp("127.0.0.1:8080".parse().unwrap()),
            SocketKind::Datagram,
            SocketKind::UnixPath("/run/app.sock".into()),
        ];
        assert_eq!(
            server_starter_port(&mixed),
            "127.0.0.1:8080=4;/run/app.sock=6"
        );
        let env = einhorn_text(&mixed);
        let expected = [
            ("EINHORN_FDS", "4 6"),
            ("EINHORN_FD_COUNT", "2"),
            ("EINHORN_FD_0", "4"),
            ("EINHORN_FD_FAMILY_0", "AF_INET"),
            ("EINHORN_FD_1", "6"),
            ("EINHORN_FD_FAMILY_1", "AF_UNIX"),
        ];
        assert_eq!(env, expected.map(|(k, v)| (k.to_string(), v.to_string())));
        assert_eq!(server_starter_port(&[SocketKind::Datagram]), "");
    }

    #[test]
    fn only_the_chosen_conventions_replace_inherited_variables() {
        let both = [CompatEnv::ServerStarter, CompatEnv::Einhorn];
        assert!(replaces(&both, b"SERVER_STARTER_PORT"));
        assert!(replaces(&both, b"EINHORN_FD_3"));
        assert!(!replaces(&both, b"EINHORN_MASTER_PID"));
        assert!(!replaces(&[CompatEnv::Einhorn], b"SERVER_STARTER_PORT"));
        assert!(!replaces(&[], b"EINHORN_FDS"));
        assert_eq!(
            generation_environment(&[CompatEnv::ServerStarter], 4),
            vec![pair("SERVER_STARTER_GENERATION", "4".into())]
        );
        assert!(generation_environment(&[CompatEnv::Einhorn], 4).is_empty());
    }
}
