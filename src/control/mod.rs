//! The control socket (`--control PATH`): its server, run by the event
//! loop, and its client, run by `sockhold reload|status|stop`.
//! `protocol` (pure: requests, reply lines, the status JSON) is what both
//! sides agree on; `server` and `client` are the two sides.
//!
//! Protocol: the client sends one request line, sockhold sends one reply
//! line.
//!
//! | request  | reply                                                     |
//! |----------|-----------------------------------------------------------|
//! | `reload` | `ok generation N pid P` or `error REASON`, once known     |
//! | `status` | one JSON object                                           |
//! | `stop`   | `ok stopping`; the connection then stays open until sockhold exits |
//! | `upgrade [PATH]` | `ok upgraded: pid P runs BINARY` or `error upgrade refused|failed: REASON` |
//!
//! Anything else gets `error REASON`. A peer whose uid is neither
//! sockhold's nor root's gets `error permission denied: ...` (checked with
//! SO_PEERCRED, on top of the file's mode 0600).
//!
//! The server never blocks: the listener and every connection are
//! non-blocking in the one event loop; a request is at most `MAX_REQUEST`
//! bytes and must arrive within `REQUEST_TIMEOUT`; at most `MAX_CLIENTS`
//! connections are served at once and further ones wait in the kernel's
//! backlog; replies are buffered and written as the peer takes them.

mod client;
mod protocol;
mod server;

pub use client::{ClientTarget, run_client};
pub use protocol::line as reply_line;
pub use protocol::{
    MaintenanceView, Request, STOPPING, SocketInfo, StatusView, StoredFdInfo, UPGRADE_FAILED,
    UPGRADE_REFUSED, error, nothing_to_reload, status_json, upgrade_target_problem, upgraded,
};
pub use server::{ClientId, ControlSocket, Server};
