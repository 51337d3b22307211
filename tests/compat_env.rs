//! `--compat-env`: servers written for Server::Starter or einhorn find the
//! sockets through their own variables. The child here is a small Python
//! server that knows only SERVER_STARTER_PORT: it serves on every fd named
//! there and answers with the entry it got the connection on.

use crate::harness::*;
use std::collections::HashMap;

/// Serves on each `KEY=FD` of SERVER_STARTER_PORT; answers
/// `key=KEY fd=FD generation=G einhorn=EINHORN_FDS count=EINHORN_FD_COUNT`.
const SERVER_STARTER_APP: &str = r#"
import os, selectors, socket
entries = [e.rsplit("=", 1) for e in os.environ["SERVER_STARTER_PORT"].split(";")]
selector = selectors.DefaultSelector()
for key, fd in entries:
    selector.register(socket.socket(fileno=int(fd)), selectors.EVENT_READ, (key, fd))
while True:
    for ready, _ in selector.select():
        key, fd = ready.data
        connection, _ = ready.fileobj.accept()
        connection.sendall(("key=%s fd=%s generation=%s einhorn=%s count=%s\n" % (
            key, fd, os.environ.get("SERVER_STARTER_GENERATION"),
            os.environ.get("EINHORN_FDS", "").replace(" ", ","),
            os.environ.get("EINHORN_FD_COUNT"))).encode())
        connection.close()
"#;

fn fields(answer: &str) -> HashMap<String, String> {
    answer
        .split_whitespace()
        .filter_map(|field| field.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn server_starter_app_finds_every_socket_by_its_address() {
    let dir = TempDir::new();
    let unix_path = dir.join("app.sock");
    let sockhold = Sockhold::command()
        .args(["-l", "127.0.0.1:0", "-l", "0", "-l"])
        .arg(&unix_path)
        .args(["--compat-env", "server-starter,einhorn", "--"])
        .args(["python3", "-c", SERVER_STARTER_APP])
        .start();
    // Seen accepting: the requests below wait for the answer, not for
    // python3 to start (which takes seconds on a loaded machine).
    sockhold.wait_for("generation 1 ready: accepting");
    let one_address = sockhold.tcp_address(0);
    let all_addresses = sockhold.tcp_address(1);

    let answer = fields(&request_tcp(one_address).unwrap());
    assert_eq!(answer["key"], one_address.to_string());
    assert_eq!(answer["fd"], "3");
    assert_eq!(answer["generation"], "1");
    assert_eq!(answer["einhorn"], "3,4,5");
    assert_eq!(answer["count"], "3");

    // A socket on every address is named by its port alone, as
    // start_server names `--port 8080`.
    let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], all_addresses.port()));
    let answer = fields(&request_tcp(loopback).unwrap());
    assert_eq!(answer["key"], all_addresses.port().to_string());
    assert_eq!(answer["fd"], "4");

    let answer = fields(&request_unix(&unix_path).unwrap());
    assert_eq!(answer["key"], unix_path.to_str().unwrap());
    assert_eq!(answer["fd"], "5");
}

/// Serves on LISTEN_FDS' fd 3; answers `NAME=VALUE` for the variables named
/// on its command line (`-` when unset).
const ENV_REPORTER: &str = r#"
import os, socket, sys
listener = socket.socket(fileno=3)
while True:
    connection, _ = listener.accept()
    connection.sendall(" ".join(
        "%s=%s" % (name, os.environ.get(name, "-").replace(" ", ","))
        for name in sys.argv[1:]).encode() + b"\n")
    connection.close()
"#;

#[test]
fn only_the_chosen_convention_is_set_and_it_replaces_inherited_values() {
    let sockhold = Sockhold::command()
        .env("SERVER_STARTER_PORT", "9999=9")
        .env("EINHORN_FD_7", "7")
        .args(["-l", "127.0.0.1:0", "--compat-env", "einhorn", "--"])
        .args(["python3", "-c", ENV_REPORTER])
        .args(["SERVER_STARTER_PORT", "SERVER_STARTER_GENERATION"])
        .args(["EINHORN_FDS", "EINHORN_FD_0", "EINHORN_FD_7", "LISTEN_FDS"])
        .start();
    let answer = fields(&request_tcp(sockhold.tcp_address(0)).unwrap());
    // Not asked for: an inherited value passes through untouched.
    assert_eq!(answer["SERVER_STARTER_PORT"], "9999=9");
    assert_eq!(answer["SERVER_STARTER_GENERATION"], "-");
    assert_eq!(answer["EINHORN_FDS"], "3");
    assert_eq!(answer["EINHORN_FD_0"], "3");
    assert_eq!(
        answer["EINHORN_FD_7"], "-",
        "an inherited einhorn fd is dropped"
    );
    assert_eq!(answer["LISTEN_FDS"], "1");
}
