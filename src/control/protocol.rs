//! The control protocol, pure (no syscalls): the requests and their
//! words, the limits a request must keep, the reply lines, and the
//! `status` reply's JSON. Both the server and the client take the wire's
//! words from here, so that what one writes is what the other expects.

use crate::config::MAX_WORKERS;
use crate::generations::supervisor::{GenerationId, GenerationInfo, WorkerInfo};
use nix::unistd::Pid;
use std::fmt::Display;
use std::time::{Duration, Instant, SystemTime};

/// Longest request line, newline included; requests are single words.
pub const MAX_REQUEST: usize = 256;
/// A connection that has not sent its request by then is closed.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// What a client may ask.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Reload,
    Status,
    Stop,
    Pause,
    Resume,
    /// `scale N`: run `count` workers per generation from now on.
    Scale {
        count: usize,
    },
    /// `upgrade [PATH]`: sockhold executes PATH (absolute; None: its own
    /// binary) in its place (`upgrade/`).
    Upgrade {
        target: Option<String>,
    },
}

impl Request {
    /// The request line's first word.
    pub fn word(&self) -> &'static str {
        match self {
            Request::Reload => "reload",
            Request::Status => "status",
            Request::Stop => "stop",
            Request::Pause => "pause",
            Request::Resume => "resume",
            Request::Scale { .. } => "scale",
            Request::Upgrade { .. } => "upgrade",
        }
    }

    /// The request line as sent, without its newline.
    pub fn text(&self) -> String {
        match self {
            Request::Scale { count } => format!("scale {count}"),
            Request::Upgrade {
                target: Some(target),
            } => format!("upgrade {target}"),
            request => request.word().to_string(),
        }
    }

    /// The request whose line is `line` (surrounding blanks ignored).
    pub fn parse(line: &str) -> Option<Request> {
        match line.trim() {
            "reload" => Some(Request::Reload),
            "status" => Some(Request::Status),
            "stop" => Some(Request::Stop),
            "pause" => Some(Request::Pause),
            "resume" => Some(Request::Resume),
            "upgrade" => Some(Request::Upgrade { target: None }),
            other if other.starts_with("upgrade ") => {
                let target = other.strip_prefix("upgrade ")?.trim();
                upgrade_target_problem(target)
                    .is_none()
                    .then(|| Request::Upgrade {
                        target: Some(target.to_string()),
                    })
            }
            other => {
                let count = other.strip_prefix("scale ")?.trim().parse().ok()?;
                (1..=MAX_WORKERS)
                    .contains(&count)
                    .then_some(Request::Scale { count })
            }
        }
    }
}

/// Why `target` cannot be an `upgrade` request's path, if it cannot: the
/// request is one line, and sockhold's working directory is not the
/// client's.
pub fn upgrade_target_problem(target: &str) -> Option<&'static str> {
    if target.contains(['\n', '\r']) {
        Some("it contains a line break")
    } else if target.trim() != target {
        Some("it begins or ends with a blank, which the request line drops")
    } else if !target.starts_with('/') {
        Some("it is not an absolute path")
    } else if "upgrade ".len() + target.len() + 1 > MAX_REQUEST {
        Some("it is longer than a request line allows (256 bytes with 'upgrade ')")
    } else {
        None
    }
}

/// The reply to an upgrade that is done: sockhold `pid` now runs `binary`.
pub fn upgraded(pid: u32, binary: impl Display) -> String {
    format!("{OK}upgraded: pid {pid} runs {binary}")
}

/// An upgrade that was not tried (`UPGRADE_REFUSED`) or that failed.
pub const UPGRADE_REFUSED: &str = "upgrade refused: ";
pub const UPGRADE_FAILED: &str = "upgrade failed: ";

/// The reply to a `scale` that is done: `what` says what runs now.
pub fn scaled(what: impl Display) -> String {
    format!("{OK}scaled: {what}")
}

/// A request or reply as sent: one line, ended by a newline.
pub fn line(text: &str) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(text.len() + 1);
    bytes.extend_from_slice(text.as_bytes());
    bytes.push(b'\n');
    bytes
}

/// What a successful reply starts with (`status` replies with JSON instead).
const OK: &str = "ok ";
/// What a failed request's reply starts with, before its reason.
const ERROR: &str = "error ";
/// How a refused peer's reason starts; the client exits 77 on it.
const PERMISSION_DENIED: &str = "permission denied";
/// The reply to `stop`; the connection then stays open until sockhold exits.
pub const STOPPING: &str = "ok stopping";

/// The reply to a `reload` whose generation became ready.
pub fn reloaded(generation: GenerationId, pid: Pid) -> String {
    format!("{OK}generation {generation} pid {pid}")
}

/// The reply to `pause`: `what` it stopped (or how long it has been
/// paused).
pub fn paused(what: impl Display) -> String {
    format!("{OK}paused: {what}")
}

/// The reply to a `reload` that has nothing to do (`--accept`, an idle
/// `--lazy`): a success, `why` says why.
pub fn nothing_to_reload(why: impl Display) -> String {
    format!("{OK}nothing to reload{why}")
}

/// How the reason of a reload that was tried and failed starts, so that
/// the client can tell it from a refusal.
const RELOAD_FAILED: &str = "reload failed: ";

/// The reply to a reload that was tried and failed (the new generation
/// exited or timed out before ready, or sockhold stopped meanwhile).
pub fn reload_failed(reason: impl Display) -> String {
    error(format_args!("{RELOAD_FAILED}{reason}"))
}

/// The reason of a failed reload, from an `error` reply's reason.
pub fn reload_failure(reason: &str) -> Option<&str> {
    reason.strip_prefix(RELOAD_FAILED)
}

/// The reply to a request that failed or was refused.
pub fn error(reason: impl Display) -> String {
    format!("{ERROR}{reason}")
}

/// The reply to a peer that may not control sockhold.
pub fn permission_denied(why: &str) -> String {
    error(format_args!("{PERMISSION_DENIED}: {why}"))
}

/// The reply to a line that is no request (shown shortened and escaped:
/// it is whatever the peer sent).
pub fn unknown_request(line: &str) -> String {
    let shown: String = line.trim().chars().take(40).collect();
    error(format_args!(
        "unknown request '{}' (send reload, status, stop, pause, resume, scale N with N from 1 to {MAX_WORKERS}, or upgrade [PATH])",
        shown.escape_debug()
    ))
}

/// The reply to a request line longer than `MAX_REQUEST`.
pub fn request_too_long() -> String {
    error(format_args!("request longer than {MAX_REQUEST} bytes"))
}

/// The reply to a peer that sent no request within `REQUEST_TIMEOUT`.
pub fn no_request_in_time() -> String {
    error(format_args!(
        "no request within {}",
        crate::config::format_duration(REQUEST_TIMEOUT)
    ))
}

/// The text after `ok ` of a successful reply.
pub fn ok_text(reply: &str) -> Option<&str> {
    reply.strip_prefix(OK)
}

/// The reason of an `error` reply.
pub fn error_reason(reply: &str) -> Option<&str> {
    reply.strip_prefix(ERROR)
}

/// Whether an `error` reply's reason is a refused peer.
pub fn is_permission_denied(reason: &str) -> bool {
    reason.starts_with(PERMISSION_DENIED)
}

/// One socket as `status` shows it.
pub struct SocketInfo<'a> {
    pub fd: usize,
    pub name: &'a str,
    /// `tcp 127.0.0.1:8080`, `unix /run/app.sock`: the real address.
    pub address: &'a str,
}

/// One fd of the fd store (`--fd-store-max`) as `status` shows it.
pub struct StoredFdInfo<'a> {
    /// Where the next child gets it: after the held sockets.
    pub fd: usize,
    /// Its name in LISTEN_FDNAMES (FDNAME=).
    pub name: &'a str,
    /// `socket`, `pipe`, `file`, `directory`, `device` or `other`.
    pub kind: &'a str,
}

/// Everything `status` reports.
pub struct StatusView<'a> {
    pub pid: u32,
    /// The supervisor's phase: `running`, `waiting to restart`, `stopping`.
    pub state: &'a str,
    pub started_at: Instant,
    pub sockets: Vec<SocketInfo<'a>>,
    pub generations: Vec<GenerationInfo>,
    /// Every worker of every generation (one per generation without
    /// `--workers`).
    pub workers: Vec<WorkerInfo>,
    pub restarts: u64,
    pub reload_queued: bool,
    /// Since when sockhold is paused (`pause`), if it is.
    pub paused_since: Option<Instant>,
    /// `--maintenance`, if given.
    pub maintenance: Option<MaintenanceView>,
    /// `--intercept-bind`: each live generation's intercepted calls
    /// (generation, what the log says), None without the option.
    pub interceptions: Option<Vec<(GenerationId, String)>>,
    /// The fd store, in the order children get it (empty when off).
    pub fd_store: Vec<StoredFdInfo<'a>>,
}

/// `--maintenance` as `status` shows it.
pub struct MaintenanceView {
    /// Whether sockhold answers connections itself now.
    pub answering: bool,
    /// Connections it answered over its life.
    pub answered: u64,
}

/// The `status` reply: one JSON object on one line. Times are given both
/// as Unix time (`started`) and as seconds since (`uptime_seconds`,
/// `age_seconds`), in seconds with millisecond precision.
pub fn status_json(view: &StatusView, now: Instant, unix_now: SystemTime) -> String {
    let unix_time = |at: Instant| {
        let ago = now.saturating_duration_since(at);
        unix_now
            .checked_sub(ago)
            .and_then(|time| time.duration_since(SystemTime::UNIX_EPOCH).ok())
            .map_or(0.0, |since| since.as_secs_f64())
    };
    let seconds_since = |at: Instant| now.saturating_duration_since(at).as_secs_f64();
    let sockets: Vec<String> = view
        .sockets
        .iter()
        .map(|socket| {
            format!(
                "{{\"fd\":{},\"name\":{},\"address\":{}}}",
                socket.fd,
                json_string(socket.name),
                json_string(socket.address)
            )
        })
        .collect();
    let generations: Vec<String> = view
        .generations
        .iter()
        .map(|g| {
            format!(
                "{{\"id\":{},\"pid\":{},\"state\":{},\"cause\":{},\"started\":{:.3},\"age_seconds\":{:.3},\"ready_by\":{}}}",
                g.id,
                g.pid.map_or_else(|| "null".to_string(), |pid| pid.to_string()),
                json_string(g.state.name()),
                json_string(g.cause.name()),
                unix_time(g.started_at),
                seconds_since(g.started_at),
                g.ready_by
                    .as_deref()
                    .map_or_else(|| "null".to_string(), json_string)
            )
        })
        .collect();
    let workers: Vec<String> = view
        .workers
        .iter()
        .map(|w| {
            format!(
                "{{\"slot\":{},\"pid\":{},\"generation\":{},\"state\":{},\"restarts\":{},\"ready_by\":{}}}",
                w.slot,
                w.pid
                    .map_or_else(|| "null".to_string(), |pid| pid.to_string()),
                w.generation,
                json_string(w.state),
                w.restarts,
                w.ready_by
                    .as_deref()
                    .map_or_else(|| "null".to_string(), json_string)
            )
        })
        .collect();
    let fd_store: Vec<String> = view
        .fd_store
        .iter()
        .map(|stored| {
            format!(
                "{{\"fd\":{},\"name\":{},\"kind\":{}}}",
                stored.fd,
                json_string(stored.name),
                json_string(stored.kind)
            )
        })
        .collect();
    format!(
        "{{\"pid\":{},\"state\":{},\"started\":{:.3},\"uptime_seconds\":{:.3},\"restarts\":{},\"reload_queued\":{},\"paused_seconds\":{},\"maintenance\":{},\"interceptions\":{},\"sockets\":[{}],\"generations\":[{}],\"workers\":[{}],\"fd_store\":[{}]}}",
        view.pid,
        json_string(view.state),
        unix_time(view.started_at),
        seconds_since(view.started_at),
        view.restarts,
        view.reload_queued,
        view.paused_since.map_or_else(
            || "null".to_string(),
            |at| format!("{:.3}", seconds_since(at))
        ),
        view.maintenance.as_ref().map_or_else(
            || "null".to_string(),
            |m| format!(
                "{{\"answering\":{},\"answered\":{}}}",
                m.answering, m.answered
            )
        ),
        view.interceptions.as_ref().map_or_else(
            || "null".to_string(),
            |list| format!(
                "[{}]",
                list.iter()
                    .map(|(generation, what)| format!(
                        "{{\"generation\":{generation},\"what\":{}}}",
                        json_string(what)
                    ))
                    .collect::<Vec<_>>()
                    .join(",")
            )
        ),
        sockets.join(","),
        generations.join(","),
        workers.join(","),
        fd_store.join(",")
    )
}

/// A JSON string literal (RFC 8259 §7): quotes, backslashes and control
/// characters escaped; everything else passes as UTF-8.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generations::supervisor::Cause;

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(json_string("x\ny\u{1}"), r#""x\ny\u0001""#);
        assert_eq!(json_string("é"), "\"é\"");
    }

    #[test]
    fn status_lists_sockets_and_generations() {
        let now = Instant::now();
        let unix_now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let view = StatusView {
            pid: 42,
            state: "running",
            started_at: now - Duration::from_secs(10),
            sockets: vec![SocketInfo {
                fd: 3,
                name: "http",
                address: "tcp 127.0.0.1:8080",
            }],
            generations: vec![GenerationInfo {
                id: 2,
                pid: Some(Pid::from_raw(4242)),
                pids: vec![Pid::from_raw(4242)],
                state: crate::generations::supervisor::GenerationState::Current,
                cause: Cause::Reload,
                started_at: now - Duration::from_millis(1500),
                ready_by: Some("accepting on fd 3 (pid 4242) after 2.98s".into()),
            }],
            workers: vec![WorkerInfo {
                slot: 0,
                generation: 2,
                pid: Some(Pid::from_raw(4242)),
                state: "ready",
                restarts: 0,
                ready_by: Some("accepting on fd 3 (pid 4242) after 2.98s".into()),
            }],
            restarts: 1,
            reload_queued: false,
            paused_since: None,
            interceptions: Some(vec![(
                2,
                "pid 4242 bind 127.0.0.1:8080 -> held fd 3".into(),
            )]),
            maintenance: Some(MaintenanceView {
                answering: true,
                answered: 7,
            }),
            fd_store: vec![StoredFdInfo {
                fd: 4,
                name: "conn",
                kind: "socket",
            }],
        };
        assert_eq!(
            status_json(&view, now, unix_now),
            concat!(
                r#"{"pid":42,"state":"running","started":999990.000,"uptime_seconds":10.000,"#,
                r#""restarts":1,"reload_queued":false,"paused_seconds":null,"#,
                r#""maintenance":{"answering":true,"answered":7},"#,
                r#""interceptions":[{"generation":2,"what":"pid 4242 bind 127.0.0.1:8080 -> held fd 3"}],"#,
                r#""sockets":[{"fd":3,"name":"http","address":"tcp 127.0.0.1:8080"}],"#,
                r#""generations":[{"id":2,"pid":4242,"state":"current","cause":"reload","#,
                r#""started":999998.500,"age_seconds":1.500,"#,
                r#""ready_by":"accepting on fd 3 (pid 4242) after 2.98s"}],"#,
                r#""workers":[{"slot":0,"pid":4242,"generation":2,"state":"ready","restarts":0,"#,
                r#""ready_by":"accepting on fd 3 (pid 4242) after 2.98s"}],"#,
                r#""fd_store":[{"fd":4,"name":"conn","kind":"socket"}]}"#
            )
        );
    }

    #[test]
    fn every_request_reads_back_from_its_word() {
        for request in [
            Request::Reload,
            Request::Status,
            Request::Stop,
            Request::Pause,
            Request::Resume,
            Request::Scale { count: 4 },
        ] {
            assert_eq!(
                Request::parse(&format!(" {}\n", request.text())),
                Some(request)
            );
        }
        assert_eq!(scaled("4 workers"), "ok scaled: 4 workers");
        assert_eq!(
            paused("generation 3 stopping"),
            "ok paused: generation 3 stopping"
        );
    }

    #[test]
    fn replies_read_back_as_they_were_written() {
        let reloaded = reloaded(3, Pid::from_raw(4242));
        assert_eq!(reloaded, "ok generation 3 pid 4242");
        assert_eq!(ok_text(&reloaded), Some("generation 3 pid 4242"));
        assert_eq!(ok_text(STOPPING), Some("stopping"));
        let refused = permission_denied("uid 65534 is neither sockhold's uid 0 nor root");
        assert_eq!(
            refused,
            "error permission denied: uid 65534 is neither sockhold's uid 0 nor root"
        );
        assert!(error_reason(&refused).is_some_and(is_permission_denied));
        assert_eq!(error_reason(&error("no")), Some("no"));
        let failed = reload_failed("generation 3 exited with status 1 before ready");
        assert_eq!(
            failed,
            "error reload failed: generation 3 exited with status 1 before ready"
        );
        assert_eq!(
            error_reason(&failed).and_then(reload_failure),
            Some("generation 3 exited with status 1 before ready")
        );
        assert_eq!(reload_failure("sockhold is stopping"), None);
        assert_eq!(
            nothing_to_reload(": no child is running"),
            "ok nothing to reload: no child is running"
        );
        assert_eq!(error_reason(&reloaded), None);
        assert_eq!(
            unknown_request("re\tstart\n"),
            "error unknown request 're\\tstart' (send reload, status, stop, pause, resume, scale N with N from 1 to 1024, or upgrade [PATH])"
        );
        assert_eq!(request_too_long(), "error request longer than 256 bytes");
        assert_eq!(no_request_in_time(), "error no request within 10s");
        assert_eq!(line("stop"), b"stop\n");
    }

    #[test]
    fn requests_are_single_words() {
        assert_eq!(Request::parse("reload"), Some(Request::Reload));
        assert_eq!(Request::parse("status\r"), Some(Request::Status));
        assert_eq!(Request::parse("stop"), Some(Request::Stop));
        assert_eq!(Request::parse("reload now"), None);
        assert_eq!(
            Request::parse("scale 1024"),
            Some(Request::Scale { count: 1024 })
        );
        for bad in [
            "scale",
            "scale 0",
            "scale 1025",
            "scale -1",
            "scale 2x",
            "scale4",
        ] {
            assert_eq!(Request::parse(bad), None, "{bad}");
        }
    }
}
