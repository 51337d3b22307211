//! `--maintenance` answering in the upgrade state: the driver's
//! connections (`generations/maintenance/`) to the state's fields and back.

use super::state::{self, Clock};
use crate::generations::maintenance::conversation::{Parts, Phase};
use crate::generations::maintenance::{Carried, CarriedConnection};
use crate::per_connection::limits::Source;
use std::os::fd::{OwnedFd, RawFd};

pub fn to_state(carried: &Carried<RawFd>, clock: Clock) -> state::Maintenance {
    let ns = |at: Option<std::time::Instant>| at.map(|at| clock.to_ns(at));
    state::Maintenance {
        wanted: carried.wanted.as_ref().map(|w| w.as_bytes().to_vec()),
        answering: carried.answering,
        answering_since: ns(carried.answering_since),
        answered_this_time: carried.answered_this_time,
        answered: carried.answered,
        retry_at: ns(carried.retry_at),
        answers: carried.answers.clone(),
        connections: carried
            .connections
            .iter()
            .map(|c| {
                let parts = c.conversation;
                let (phase, bytes, quiet_at) = match parts.phase {
                    Phase::Reading { read, quiet_at } => ("reading", read, Some(quiet_at)),
                    Phase::Writing { written } => ("writing", written, None),
                    Phase::Draining { drained } => ("draining", drained, None),
                    Phase::Closed => ("closed", 0, None),
                };
                state::MaintenanceConnection {
                    slot: c.slot,
                    fd: c.fd,
                    source: source_text(c.source).into_bytes(),
                    phase: phase.as_bytes().to_vec(),
                    bytes: bytes as u64,
                    quiet_at: ns(quiet_at),
                    answer_len: parts.answer_len as u64,
                    read_until: clock.to_ns(parts.read_until),
                    give_up_at: clock.to_ns(parts.give_up_at),
                    answered: parts.answered,
                    answer: c.answer,
                }
            })
            .collect(),
    }
}

/// A connection's phase and source, or why the state is not a sockhold's.
fn parsed(c: &state::MaintenanceConnection, clock: Clock) -> Result<(Phase, Source), String> {
    let bytes = c.bytes as usize;
    let phase = match (&c.phase[..], c.quiet_at) {
        (b"reading", Some(quiet_at)) => Phase::Reading {
            read: bytes,
            quiet_at: clock.to_instant(quiet_at),
        },
        (b"writing", None) => Phase::Writing { written: bytes },
        (b"draining", None) => Phase::Draining { drained: bytes },
        (b"closed", None) => Phase::Closed,
        _ => {
            return Err(format!(
                "maintenance connection in slot {}: phase '{}' is not one sockhold writes",
                c.slot,
                String::from_utf8_lossy(&c.phase)
            ));
        }
    };
    let source = source_from_text(&String::from_utf8_lossy(&c.source)).ok_or_else(|| {
        format!(
            "maintenance connection in slot {}: source '{}' is not one sockhold writes",
            c.slot,
            String::from_utf8_lossy(&c.source)
        )
    })?;
    Ok((phase, source))
}

/// Whether the new binary can take the answering over (before any fd is
/// owned).
pub fn check(state: &state::Maintenance) -> Result<(), String> {
    let clock = super::clock();
    for c in &state.connections {
        parsed(c, clock)?;
        if c.answer >= state.answers.len() {
            return Err(format!(
                "maintenance connection in slot {}: answer {} is not in the state",
                c.slot, c.answer
            ));
        }
    }
    Ok(())
}

/// The answering as the state has it (`check`ed); `own` takes over each
/// connection's fd.
pub fn from_state(
    state: &state::Maintenance,
    clock: Clock,
    own: impl Fn(RawFd) -> OwnedFd,
) -> Carried<OwnedFd> {
    let at = |ns: Option<u64>| ns.map(|ns| clock.to_instant(ns));
    let mut connections = Vec::new();
    for c in &state.connections {
        let fd = own(c.fd);
        // Checked: a connection that is not valid is closed (`fd` dropped).
        let Ok((phase, source)) = parsed(c, clock) else {
            continue;
        };
        connections.push(CarriedConnection {
            slot: c.slot,
            fd,
            source,
            conversation: Parts {
                phase,
                answer_len: c.answer_len as usize,
                read_until: clock.to_instant(c.read_until),
                give_up_at: clock.to_instant(c.give_up_at),
                answered: c.answered,
            },
            answer: c.answer,
        });
    }
    Carried {
        wanted: state
            .wanted
            .as_ref()
            .map(|w| String::from_utf8_lossy(w).into_owned()),
        answering: state.answering,
        answering_since: at(state.answering_since),
        answered_this_time: state.answered_this_time,
        answered: state.answered,
        retry_at: at(state.retry_at),
        answers: state.answers.clone(),
        connections,
    }
}
/// `ip:ADDRESS`, `uid:N` or `unknown`.
pub fn source_text(source: Source) -> String {
    match source {
        Source::Ip(ip) => format!("ip:{ip}"),
        Source::Uid(uid) => format!("uid:{uid}"),
        Source::Unknown => "unknown".to_string(),
    }
}

pub fn source_from_text(text: &str) -> Option<Source> {
    if text == "unknown" {
        return Some(Source::Unknown);
    }
    if let Some(ip) = text.strip_prefix("ip:") {
        return ip.parse().ok().map(Source::Ip);
    }
    text.strip_prefix("uid:")?.parse().ok().map(Source::Uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn sources_read_back_as_written() {
        for source in [
            Source::Ip("127.0.0.1".parse().unwrap()),
            Source::Ip("::1".parse().unwrap()),
            Source::Uid(1000),
            Source::Unknown,
        ] {
            assert_eq!(source_from_text(&source_text(source)), Some(source));
        }
        assert_eq!(source_from_text("ip:nope"), None);
        assert_eq!(source_from_text("gid:3"), None);
    }

    #[test]
    fn every_phase_survives_the_state() {
        let now = Instant::now();
        let clock = Clock {
            instant: now,
            monotonic_ns: 50_000_000_000,
        };
        for phase in [
            Phase::Reading {
                read: 3,
                quiet_at: now + Duration::from_millis(10),
            },
            Phase::Writing { written: 5 },
            Phase::Draining { drained: 7 },
            Phase::Closed,
        ] {
            let parts = Parts {
                phase,
                answer_len: 9,
                read_until: now + Duration::from_secs(1),
                give_up_at: now + Duration::from_secs(3),
                answered: matches!(phase, Phase::Draining { .. }),
            };
            let carried = Carried {
                wanted: Some("paused".to_string()),
                answering: true,
                answering_since: Some(now),
                answered_this_time: 1,
                answered: 2,
                retry_at: None,
                answers: vec![b"answer".to_vec()],
                connections: vec![CarriedConnection {
                    slot: 3,
                    fd: 42,
                    source: Source::Uid(7),
                    conversation: parts,
                    answer: 0,
                }],
            };
            let state = to_state(&carried, clock);
            let text = state::write(&state::State {
                maintenance: Some(state.clone()),
                ..state::State::default()
            });
            let read = state::read(&text).unwrap().maintenance.unwrap();
            assert_eq!(read, state);
            assert_eq!(check(&read), Ok(()));
            let back = from_state(&read, clock, |fd| {
                assert_eq!(fd, 42);
                std::fs::File::open("/dev/null").unwrap().into()
            });
            assert_eq!(back.connections[0].conversation, parts);
            assert_eq!(back.connections[0].source, Source::Uid(7));
            assert_eq!(back.answering_since, Some(now));
            let mut bad = read.clone();
            bad.connections[0].phase = b"sleeping".to_vec();
            assert!(check(&bad).unwrap_err().contains("phase 'sleeping'"));
            bad = read.clone();
            bad.connections[0].answer = 1;
            assert!(
                check(&bad)
                    .unwrap_err()
                    .contains("answer 1 is not in the state")
            );
        }
    }
}
