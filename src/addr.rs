//! The `-l/--listen` grammar: what a user may write and what it means.
//! Pure: no sockets are made here (that is `listen.rs`).
//!
//! | text                              | meaning                                   |
//! |-----------------------------------|-------------------------------------------|
//! | `8080`, `*:8080`, `:8080`         | TCP on every address, IPv6 dual-stack     |
//! | `127.0.0.1:8080`, `[::1]:80`      | TCP on one address                        |
//! | `/run/app.sock`, `./app.sock`     | Unix stream socket (any text with a `/`)  |
//! | `@name`                           | Linux abstract Unix socket                |
//! | `udp:5353`, `udp:*:5353`          | UDP on every address, IPv6 dual-stack     |
//! | `udp:127.0.0.1:53`, `udp:[::1]:53`| UDP on one address                        |
//! | `unix-dgram:/run/app.sock`        | Unix datagram socket (any path)           |
//! | `unix-dgram:@name`                | Linux abstract Unix datagram socket       |
//! | `fd:N`                            | an inherited listening or bound datagram socket |
//! | `NAME=ADDR`                       | any of the above, named in LISTEN_FDNAMES |
//!
//! The stream forms are systemd's ListenStream=, the datagram forms its
//! ListenDatagram= (systemd.socket(5)).

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
    /// As `TcpAll`, for UDP.
    UdpAll {
        port: u16,
    },
    Udp(SocketAddr),
    UnixDatagram(PathBuf),
    /// Linux abstract namespace, without the leading `@`.
    AbstractDatagram(String),
    /// A listening stream or bound datagram socket inherited from whoever
    /// started sockhold.
    Fd(i32),
}

/// How a socket carries data: connections to accept, or datagrams to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Stream,
    Datagram,
}

impl ListenAddress {
    /// The transport the text asks for; `None` for `fd:N`, whose socket
    /// says for itself once adopted.
    pub fn transport(&self) -> Option<Transport> {
        match self {
            ListenAddress::TcpAll { .. }
            | ListenAddress::Tcp(_)
            | ListenAddress::Unix(_)
            | ListenAddress::Abstract(_) => Some(Transport::Stream),
            ListenAddress::UdpAll { .. }
            | ListenAddress::Udp(_)
            | ListenAddress::UnixDatagram(_)
            | ListenAddress::AbstractDatagram(_) => Some(Transport::Datagram),
            ListenAddress::Fd(_) => None,
        }
    }
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

const FORMS_HINT: &str = "use a port (8080), IP:PORT (127.0.0.1:8080, [::1]:8080), a Unix socket path with a '/' (./app.sock), @abstract, udp:PORT, udp:IP:PORT, unix-dgram:PATH, unix-dgram:@abstract or fd:N";
const UDP_HINT: &str =
    "write udp:PORT, udp:IP:PORT or udp:[IPv6]:PORT, e.g. udp:5353 or udp:127.0.0.1:5353";
const UNIX_DGRAM_HINT: &str = "write unix-dgram:PATH or unix-dgram:@name";

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
    if let Some(name) = name_with_a_colon(text) {
        // Say what is wrong with the name, not with an "address" that
        // starts with it.
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

/// `NAME=ADDR` whose name has a `:` (which `split_name` cannot take for
/// a name): `web:1=8080`. Not a `udp:`, `unix-dgram:` or `fd:` address,
/// whose own text may hold a `=`, and only when what follows `=` is an
/// address.
fn name_with_a_colon(text: &str) -> Option<&str> {
    let (name, rest) = text.split_once('=')?;
    let prefixed = ["udp:", "unix-dgram:", "fd:"]
        .iter()
        .any(|prefix| name.starts_with(prefix));
    (name.contains(':') && !name.contains(['/', '@', '[']) && !prefixed)
        .then_some(name)
        .filter(|_| parse_address(rest).is_ok())
}

impl ListenAddress {
    /// Whether `self` and `other` cannot both be bound: the same address,
    /// or IP addresses of one protocol on one port (not 0) where one
    /// covers the other (`[::]` and every address, dual-stack, cover
    /// IPv4 as well; `0.0.0.0` covers IPv4). Unix paths are compared as
    /// written; abstract names per socket type (the kernel keeps stream
    /// and datagram names apart), paths not (one file either way).
    pub fn overlaps(&self, other: &ListenAddress) -> bool {
        use ListenAddress as A;
        match (self, other) {
            (A::Fd(_), _) | (_, A::Fd(_)) => false,
            (A::Unix(a) | A::UnixDatagram(a), A::Unix(b) | A::UnixDatagram(b)) => a == b,
            (A::Abstract(a), A::Abstract(b)) | (A::AbstractDatagram(a), A::AbstractDatagram(b)) => {
                a == b
            }
            _ => match (self.inet(), other.inet()) {
                (Some((a_udp, a)), Some((b_udp, b))) => {
                    a_udp == b_udp
                        && a.port() != 0
                        && a.port() == b.port()
                        && (covers(a.ip(), b.ip()) || covers(b.ip(), a.ip()))
                }
                _ => false,
            },
        }
    }

    /// An IP address as (is UDP, address); every address is `[::]`.
    fn inet(&self) -> Option<(bool, SocketAddr)> {
        let every = |port| SocketAddr::new(IpAddr::from(std::net::Ipv6Addr::UNSPECIFIED), port);
        match self {
            ListenAddress::TcpAll { port } => Some((false, every(*port))),
            ListenAddress::Tcp(address) => Some((false, *address)),
            ListenAddress::UdpAll { port } => Some((true, every(*port))),
            ListenAddress::Udp(address) => Some((true, *address)),
            _ => None,
        }
    }
}

/// Whether binding `wide` takes `narrow` too.
fn covers(wide: IpAddr, narrow: IpAddr) -> bool {
    match wide {
        _ if wide == narrow => true,
        IpAddr::V6(v6) if v6.is_unspecified() => true,
        IpAddr::V4(v4) if v4.is_unspecified() => narrow.is_ipv4(),
        _ => false,
    }
}

/// A Unix socket path as `-l` takes it (at most 107 bytes), for the other
/// options that name a socket file (`--control`).
pub fn check_unix_path(path: &str) -> Result<PathBuf, AddrError> {
    check_path(path)
}

fn parse_address(text: &str) -> Result<ListenAddress, AddrError> {
    if text.is_empty() {
        return Err(refuse("empty address", FORMS_HINT));
    }
    if let Some(rest) = text.strip_prefix("udp:") {
        return parse_udp(rest);
    }
    if let Some(rest) = text.strip_prefix("unix-dgram:") {
        return parse_unix_datagram(rest);
    }
    if let Some(abstract_name) = text.strip_prefix('@') {
        return Ok(ListenAddress::Abstract(check_abstract(abstract_name)?));
    }
    if let Some(number) = text.strip_prefix("fd:") {
        return match number.parse::<i32>() {
            Ok(fd) if fd >= 3 => Ok(ListenAddress::Fd(fd)),
            _ => Err(refuse(
                "not an inherited file descriptor number",
                "write fd:N with N >= 3, the number of a listening or bound datagram socket sockhold inherits",
            )),
        };
    }
    if text.contains('/') {
        return Ok(ListenAddress::Unix(check_path(text)?));
    }
    match parse_inet(text, Protocol::Tcp)? {
        Inet::All { port } => Ok(ListenAddress::TcpAll { port }),
        Inet::One(address) => Ok(ListenAddress::Tcp(address)),
    }
}

/// What follows `udp:`: the same port and IP:PORT forms as TCP.
fn parse_udp(text: &str) -> Result<ListenAddress, AddrError> {
    if text.is_empty() {
        return Err(refuse("missing port after 'udp:'", UDP_HINT));
    }
    if text.contains('/') || text.starts_with('@') {
        return Err(refuse(
            "udp: takes a port or IP:PORT, not a Unix socket",
            "for a Unix datagram socket write unix-dgram:PATH or unix-dgram:@name",
        ));
    }
    match parse_inet(text, Protocol::Udp)? {
        Inet::All { port } => Ok(ListenAddress::UdpAll { port }),
        Inet::One(address) => Ok(ListenAddress::Udp(address)),
    }
}

/// What follows `unix-dgram:`: a path (any, the prefix leaves no doubt) or
/// `@name`.
fn parse_unix_datagram(text: &str) -> Result<ListenAddress, AddrError> {
    if text.is_empty() {
        return Err(refuse("missing path after 'unix-dgram:'", UNIX_DGRAM_HINT));
    }
    if let Some(abstract_name) = text.strip_prefix('@') {
        return Ok(ListenAddress::AbstractDatagram(check_abstract(
            abstract_name,
        )?));
    }
    Ok(ListenAddress::UnixDatagram(check_path(text)?))
}

fn check_abstract(name: &str) -> Result<String, AddrError> {
    if name.is_empty() {
        return Err(refuse("empty abstract socket name", "write @name"));
    }
    if name.len() > UNIX_PATH_MAX - 1 {
        return Err(refuse(
            "abstract name too long (at most 106 bytes)",
            "use a shorter name",
        ));
    }
    Ok(name.to_owned())
}

fn check_path(path: &str) -> Result<PathBuf, AddrError> {
    if path.len() > UNIX_PATH_MAX {
        return Err(refuse(
            format!(
                "Unix socket path is {} bytes, the limit is {UNIX_PATH_MAX}",
                path.len()
            ),
            "use a shorter path",
        ));
    }
    Ok(PathBuf::from(path))
}

/// Which IP form is being parsed, so that hints show how to write it.
#[derive(Clone, Copy)]
enum Protocol {
    Tcp,
    Udp,
}

impl Protocol {
    /// `tcp_hint` for TCP; for UDP the one hint that shows every `udp:` form.
    fn hint(self, tcp_hint: &'static str) -> &'static str {
        match self {
            Protocol::Tcp => tcp_hint,
            Protocol::Udp => UDP_HINT,
        }
    }
}

/// An IP socket address as written for TCP or after `udp:`.
enum Inet {
    /// Every address (`PORT`, `*:PORT`, `:PORT`).
    All {
        port: u16,
    },
    One(SocketAddr),
}

fn parse_inet(text: &str, protocol: Protocol) -> Result<Inet, AddrError> {
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(Inet::All {
            port: parse_port(text)?,
        });
    }
    if let Some(port) = text.strip_prefix("*:") {
        return Ok(Inet::All {
            port: parse_port(port)?,
        });
    }
    if let Some(port) = text
        .strip_prefix(':')
        .filter(|p| p.bytes().all(|b| b.is_ascii_digit()))
    {
        return Ok(Inet::All {
            port: parse_port(port)?,
        });
    }
    parse_ip_port(text, protocol).map(Inet::One)
}

fn parse_ip_port(text: &str, protocol: Protocol) -> Result<SocketAddr, AddrError> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let Some((host, port)) = rest.split_once("]:") else {
            return Err(refuse(
                "missing port after an IPv6 address",
                protocol.hint("write [::1]:8080"),
            ));
        };
        (host, port)
    } else {
        match text.rsplit_once(':') {
            Some((host, _)) if host.contains(':') => {
                return Err(refuse(
                    "IPv6 address without brackets",
                    protocol.hint("write [::1]:8080 for IPv6"),
                ));
            }
            Some((host, port)) => (host, port),
            None if text.parse::<IpAddr>().is_ok() => {
                return Err(refuse(
                    "missing port",
                    protocol.hint("write IP:PORT, e.g. 127.0.0.1:8080"),
                ));
            }
            None => {
                let reason = match protocol {
                    Protocol::Tcp => "not a port, an IP address or a Unix socket path",
                    Protocol::Udp => "not a port or IP:PORT",
                };
                return Err(refuse(reason, protocol.hint(FORMS_HINT)));
            }
        }
    };
    let ip: IpAddr = host.parse().map_err(|_| {
        refuse(
            format!("'{host}' is not an IP address (host names are not resolved)"),
            protocol.hint(FORMS_HINT),
        )
    })?;
    Ok(SocketAddr::new(ip, parse_port(port)?))
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
    fn udp_takes_the_tcp_forms_after_its_prefix() {
        assert_eq!(address("udp:5353"), ListenAddress::UdpAll { port: 5353 });
        assert_eq!(address("udp:0"), ListenAddress::UdpAll { port: 0 });
        assert_eq!(address("udp:*:53"), ListenAddress::UdpAll { port: 53 });
        assert_eq!(
            address("udp:127.0.0.1:0"),
            ListenAddress::Udp("127.0.0.1:0".parse().unwrap())
        );
        assert_eq!(
            address("udp:[::1]:53"),
            ListenAddress::Udp("[::1]:53".parse().unwrap())
        );
        assert_eq!(
            address("udp:[::1]:53").transport(),
            Some(Transport::Datagram)
        );
        assert_eq!(address("8080").transport(), Some(Transport::Stream));
        assert_eq!(address("fd:3").transport(), None);
    }

    #[test]
    fn unix_dgram_takes_a_path_or_an_abstract_name() {
        assert_eq!(
            address("unix-dgram:/run/log.sock"),
            ListenAddress::UnixDatagram("/run/log.sock".into())
        );
        // The prefix leaves no doubt: a path without '/' is still a path.
        assert_eq!(
            address("unix-dgram:log.sock"),
            ListenAddress::UnixDatagram("log.sock".into())
        );
        assert_eq!(
            address("unix-dgram:@log"),
            ListenAddress::AbstractDatagram("log".into())
        );
        assert_eq!(
            address("unix-dgram:@log").transport(),
            Some(Transport::Datagram)
        );
    }

    #[test]
    fn datagram_sockets_take_names() {
        let spec = parse_listen("dns=udp:[::1]:0").unwrap();
        assert_eq!(spec.name.as_deref(), Some("dns"));
        assert_eq!(spec.address, ListenAddress::Udp("[::1]:0".parse().unwrap()));
        assert_eq!(spec.text, "dns=udp:[::1]:0");
        let spec = parse_listen("log=unix-dgram:/run/a=b.sock").unwrap();
        assert_eq!(spec.name.as_deref(), Some("log"));
        assert_eq!(
            spec.address,
            ListenAddress::UnixDatagram("/run/a=b.sock".into())
        );
        // Without a name, '=' in the path stays in the path.
        let spec = parse_listen("unix-dgram:/run/a=b.sock").unwrap();
        assert_eq!(spec.name, None);
    }

    /// The error a bad `-l` value gets, as `reason (hint)`.
    fn refused(text: &str) -> String {
        let error = parse_listen(text).unwrap_err();
        format!("{} ({})", error.reason, error.hint)
    }

    #[test]
    fn bad_datagram_addresses_say_why_and_how_to_write_them() {
        let udp_forms = format!("({UDP_HINT})");
        let cases = [
            ("udp:", "missing port after 'udp:'"),
            ("udp:70000", "port out of range"),
            ("udp:127.0.0.1", "missing port"),
            ("udp:[::1]", "missing port after an IPv6 address"),
            ("udp:::1:53", "IPv6 address without brackets"),
            ("udp:example.com:53", "'example.com' is not an IP address"),
            ("udp:dns", "not a port or IP:PORT"),
        ];
        for (text, reason) in cases {
            let line = refused(text);
            assert!(line.starts_with(reason), "{text}: {line}");
            if reason != "port out of range" {
                assert!(line.ends_with(&udp_forms), "{text}: {line}");
            }
        }
        assert_eq!(
            refused("udp:/run/a.sock"),
            "udp: takes a port or IP:PORT, not a Unix socket (for a Unix datagram socket write unix-dgram:PATH or unix-dgram:@name)"
        );
        assert_eq!(
            refused("unix-dgram:"),
            "missing path after 'unix-dgram:' (write unix-dgram:PATH or unix-dgram:@name)"
        );
        assert_eq!(
            refused("unix-dgram:@"),
            "empty abstract socket name (write @name)"
        );
        assert!(
            refused(&format!("unix-dgram:/{}", "x".repeat(120)))
                .starts_with("Unix socket path is 121 bytes")
        );
        assert!(
            refused(&format!("unix-dgram:@{}", "x".repeat(107)))
                .starts_with("abstract name too long")
        );
        assert!(parse_listen("bad name=udp:53").is_err());
    }

    #[test]
    fn the_forms_hint_names_the_datagram_forms() {
        let line = refused("app.sock");
        assert!(
            line.contains("udp:PORT") && line.contains("unix-dgram:PATH"),
            "{line}"
        );
    }

    #[test]
    fn bad_names_are_refused() {
        assert!(parse_listen("=8080").is_err());
        assert!(parse_listen("a b=8080").is_err());
        assert!(check_name("a:b").is_err());
        assert!(check_name("web").is_ok());
    }

    #[test]
    fn a_name_with_a_colon_is_refused_as_a_name() {
        let hint = "(a name is 1 to 255 printable ASCII characters without ':' or spaces)";
        for text in [
            "web:1=8080",
            "a:b=127.0.0.1:80",
            "x:y=./a.sock",
            "d:n=udp:53",
        ] {
            assert_eq!(
                refused(text),
                format!("socket name contains ':' {hint}"),
                "{text}"
            );
        }
        // Addresses that hold '=' themselves are still addresses.
        assert!(parse_listen("unix-dgram:a=b").is_ok());
        assert!(parse_listen("/srv/a:b=c.sock").is_ok());
        assert!(refused("::1=8080").starts_with("socket name contains ':'"));
    }

    #[test]
    fn addresses_that_cannot_both_be_bound_overlap() {
        let overlap = |a: &str, b: &str| address(a).overlaps(&address(b));
        for (a, b) in [
            ("8080", "8080"),
            ("8080", "127.0.0.1:8080"),
            ("8080", "[::1]:8080"),
            ("[::]:8080", "0.0.0.0:8080"),
            ("0.0.0.0:8080", "127.0.0.1:8080"),
            ("127.0.0.1:8080", "127.0.0.1:8080"),
            ("udp:53", "udp:127.0.0.1:53"),
            ("./a.sock", "./a.sock"),
            ("./a.sock", "unix-dgram:./a.sock"),
            ("@name", "@name"),
        ] {
            assert!(overlap(a, b) && overlap(b, a), "{a} {b}");
        }
        for (a, b) in [
            ("127.0.0.1:0", "127.0.0.1:0"),
            ("0", "0"),
            ("8080", "8081"),
            ("8080", "udp:8080"),
            ("127.0.0.1:8080", "127.0.0.2:8080"),
            ("0.0.0.0:8080", "[::1]:8080"),
            ("127.0.0.1:8080", "[::1]:8080"),
            ("./a.sock", "./b.sock"),
            ("@name", "unix-dgram:@name"),
            ("fd:3", "fd:3"),
        ] {
            assert!(!overlap(a, b) && !overlap(b, a), "{a} {b}");
        }
    }
}
