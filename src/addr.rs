//! The `-l/--listen` grammar: what a user may write and what it means.
//! Pure: no sockets are made here (that is `listen.rs`).
//!
//! | text                          | meaning                                   |
//! |-------------------------------|-------------------------------------------|
//! | `8080`, `*:8080`, `:8080`     | TCP on every address, IPv6 dual-stack     |
//! | `127.0.0.1:8080`, `[::1]:80`  | TCP on one address                        |
//! | `/run/app.sock`, `./app.sock` | Unix stream socket (any text with a `/`)  |
//! | `@name`                       | Linux abstract Unix socket                |
//! | `fd:N`                        | an inherited, already listening socket    |
//! | `NAME=ADDR`                   | any of the above, named in LISTEN_FDNAMES |

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// Longest Unix socket path the kernel takes (sun_path is 108 bytes with NUL).
const UNIX_PATH_MAX: usize = 107;
/// systemd's limit for a file descriptor name.
const FDNAME_MAX: usize = 255;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddress {
    /// Every local address: `[::]:port` dual-stack, or `0.0.0.0:port`
    /// where the machine has no IPv6.
    TcpAll {
        port: u16,
    },
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// Linux abstract namespace, without the leading `@`.
    Abstract(String),
    /// A listening socket inherited from whoever started sockhold.
    Fd(i32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenSpec {
    /// The name given with `NAME=ADDR`, if any.
    pub name: Option<String>,
    pub address: ListenAddress,
    /// What the user wrote, for messages.
    pub text: String,
}

/// Why a listen address was refused, and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddrError {
    pub reason: String,
    pub hint: &'static str,
}

const FORMS_HINT: &str = "use a port (8080), IP:PORT (127.0.0.1:8080, [::1]:8080), a Unix socket path with a '/' (./app.sock), @abstract or fd:N";

fn refuse(reason: impl Into<String>, hint: &'static str) -> AddrError {
    AddrError {
        reason: reason.into(),
        hint,
    }
}

/// Checks a LISTEN_FDNAMES name: printable ASCII, no `:` (the list
/// separator), at most 255 bytes, as sd_listen_fds_with_names(3) expects.
pub fn check_name(name: &str) -> Result<(), AddrError> {
    const HINT: &str = "a name is 1 to 255 printable ASCII characters without ':' or spaces";
    if name.is_empty() {
        return Err(refuse("empty socket name", HINT));
    }
    if name.len() > FDNAME_MAX {
        return Err(refuse("socket name longer than 255 bytes", HINT));
    }
    if let Some(bad) = name.chars().find(|c| !c.is_ascii_graphic() || *c == ':') {
        return Err(refuse(format!("socket name contains {bad:?}"), HINT));
    }
    Ok(())
}

/// Parses one `-l` value.
pub fn parse_listen(text: &str) -> Result<ListenSpec, AddrError> {
    let (name, rest) = split_name(text);
    if let Some(name) = name {
        check_name(name)?;
    }
    Ok(ListenSpec {
        name: name.map(str::to_owned),
        address: parse_address(rest)?,
        text: text.to_owned(),
    })
}

/// `NAME=ADDR` when the part before `=` cannot itself be an address, so that
/// a path like `/srv/a=b.sock` stays a path.
fn split_name(text: &str) -> (Option<&str>, &str) {
    match text.split_once('=') {
        Some((name, rest)) if !name.contains(['/', '@', '[', ':']) => (Some(name), rest),
        _ => (None, text),
    }
}

fn parse_address(text: &str) -> Result<ListenAddress, AddrError> {
    if text.is_empty() {
        return Err(refuse("empty address", FORMS_HINT));
    }
    if let Some(abstract_name) = text.strip_prefix('@') {
        if abstract_name.is_empty() {
            return Err(refuse("empty abstract socket name", "write @name"));
        }
        if abstract_name.len() > UNIX_PATH_MAX - 1 {
            return Err(refuse(
                "abstract name too long (at most 106 bytes)",
                "use a shorter name",
            ));
        }
        return Ok(ListenAddress::Abstract(abstract_name.to_owned()));
    }
    if let Some(number) = text.strip_prefix("fd:") {
        return match number.parse::<i32>() {
            Ok(fd) if fd >= 3 => Ok(ListenAddress::Fd(fd)),
            _ => Err(refuse(
                "not an inherited file descriptor number",
                "write fd:N with N >= 3, the number of a listening socket sockhold inherits",
            )),
        };
    }
    if text.contains('/') {
        if text.len() > UNIX_PATH_MAX {
            return Err(refuse(
                format!(
                    "Unix socket path is {} bytes, the limit is {UNIX_PATH_MAX}",
                    text.len()
                ),
                "use a shorter path",
            ));
        }
        return Ok(ListenAddress::Unix(PathBuf::from(text)));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(ListenAddress::TcpAll {
            port: parse_port(text)?,
        });
    }
    if let Some(port) = text.strip_prefix("*:") {
        return Ok(ListenAddress::TcpAll {
            port: parse_port(port)?,
        });
    }
    if let Some(port) = text
        .strip_prefix(':')
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(ListenAddress::TcpAll {
            port: parse_port(port)?,
        });
    }
    parse_ip_port(text)
}

fn parse_ip_port(text: &str) -> Result<ListenAddress, AddrError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, port)) = rest.split_once("]:") else {
            return Err(refuse(
                "missing port after an IPv6 address",
                "write [::1]:8080",
            ));
        };
        (host, port)
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(refuse(
                    "IPv6 address without brackets",
                    "write [::1]:8080 for IPv6",
                ));
            }
            Some((host, port)) => (host, port),
            None if text.parse::<IpAddr>().is_ok() => {
                return Err(refuse("missing port", "write IP:PORT, e.g. 127.0.0.1:8080"));
            }
            None => {
                return Err(refuse(
                    "not a port, an IP address or a Unix socket path",
                    FORMS_HINT,
                ));
            }
        }
    };
    let ip: IpAddr = host.parse().map_err(|_| {
        refuse(
            format!("'{host}' is not an IP address (host names are not resolved)"),
            FORMS_HINT,
        )
    })?;
    Ok(ListenAddress::Tcp(SocketAddr::new(ip, parse_port(port)?)))
}

fn parse_port(text: &str) -> Result<u16, AddrError> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err(refuse(
            format!("'{text}' is not a port number"),
            "a port is a number from 0 to 65535; 0 lets the kernel choose",
        ));
    }
    text.parse::<u16>().map_err(|_| {
        refuse(
            "port out of range",
            "a port is a number from 0 to 65535; 0 lets the kernel choose",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(text: &str) -> ListenAddress {
        parse_listen(text).unwrap().address
    }

    #[test]
    fn bare_port_means_every_address() {
        assert_eq!(address("8080"), ListenAddress::TcpAll { port: 8080 });
        assert_eq!(address("*:0"), ListenAddress::TcpAll { port: 0 });
        assert_eq!(address(":443"), ListenAddress::TcpAll { port: 443 });
    }

    #[test]
    fn ip_and_port() {
        assert_eq!(
            address("127.0.0.1:0"),
            ListenAddress::Tcp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            address("[::1]:8080"),
            ListenAddress::Tcp("[::1]:8080".parse().unwrap())
        );
        assert_eq!(
            address("[::]:8080"),
            ListenAddress::Tcp("[::]:8080".parse().unwrap())
        );
    }

    #[test]
    fn unix_abstract_and_fd() {
        assert_eq!(
            address("/tmp/a.sock"),
            ListenAddress::Unix("/tmp/a.sock".into())
        );
        assert_eq!(address("./a.sock"), ListenAddress::Unix("./a.sock".into()));
        assert_eq!(address("@app"), ListenAddress::Abstract("app".into()));
        assert_eq!(address("fd:3"), ListenAddress::Fd(3));
    }

    #[test]
    fn names_are_split_only_when_they_cannot_be_addresses() {
        let spec = parse_listen("http=[::]:8080").unwrap();
        assert_eq!(spec.name.as_deref(), Some("http"));
        assert_eq!(
            spec.address,
            ListenAddress::Tcp("[::]:8080".parse().unwrap())
        );
        let path = parse_listen("/srv/a=b.sock").unwrap();
        assert_eq!(path.name, None);
        assert_eq!(path.address, ListenAddress::Unix("/srv/a=b.sock".into()));
        assert_eq!(
            parse_listen("api=/run/a.sock").unwrap().name.as_deref(),
            Some("api")
        );
    }

    #[test]
    fn bad_addresses_say_why() {
        assert_eq!(
            parse_listen("70000").unwrap_err().reason,
            "port out of range"
        );
        assert_eq!(
            parse_listen("127.0.0.1:99999").unwrap_err().reason,
            "port out of range"
        );
        assert_eq!(
            parse_listen("127.0.0.1").unwrap_err().reason,
            "missing port"
        );
        assert!(
            parse_listen("example.com:80")
                .unwrap_err()
                .reason
                .contains("not an IP address")
        );
        assert!(
            parse_listen("::1:80")
                .unwrap_err()
                .reason
                .contains("brackets")
        );
        assert!(
            parse_listen("app.sock")
                .unwrap_err()
                .reason
                .contains("not a port")
        );
        assert!(parse_listen("").is_err());
        assert!(parse_listen("fd:1").is_err());
        assert!(parse_listen(&format!("/{}", "x".repeat(120))).is_err());
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(parse_listen("=8080").is_err());
        assert!(parse_listen("a b=8080").is_err());
        assert!(check_name("a:b").is_err());
        assert!(check_name("web").is_ok());
    }
}
