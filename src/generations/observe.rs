//! Looking at a starting generation's processes to see whether it takes
//! connections yet (`--ready auto`, `--ready accepting`). The observer in
//! `readiness/observer.rs` reads /proc; `judge` (pure) applies the `--ready`
//! rule to what it saw.
//!
//! Which processes belong to a generation: its child and every descendant,
//! and processes reparented to sockhold (daemons that double-forked) that
//! started after the generation's child and belong to no other generation.

use super::supervisor::Observation;
use crate::config::ReadyMode;
use crate::leftovers;
use crate::listen::Listener;
use crate::readiness::observer::{self, HeldSocket, Round};
use nix::unistd::Pid;
use std::cell::RefCell;
use std::collections::HashMap;

/// The held sockets as the observer knows them, in child fd order.
pub struct Watcher {
    /// None where a socket could not be identified (then nothing can be
    /// observed).
    sockets: Option<Vec<HeldSocket>>,
    /// Threads seen running, and how often each had blocked the last
    /// time it was.
    last_running: RefCell<HashMap<Pid, u64>>,
}

/// The most threads `last_running` keeps.
const MAX_THREADS_REMEMBERED: usize = 4096;

/// A running thread that has blocked at least this often since it was
/// last seen running keeps waking up: a server busy with connections, not
/// one computing its start-up.
const BUSY_SWITCHES: u64 = 2;

impl Watcher {
    pub fn new(listeners: &[Listener]) -> Watcher {
        let sockets = listeners
            .iter()
            .map(|listener| {
                let datagram = listener.transport == crate::addr::Transport::Datagram;
                HeldSocket::of(listener.fd(), datagram)
            })
            .collect::<Result<Vec<_>, _>>();
        match sockets {
            Ok(sockets) => Watcher {
                sockets: Some(sockets),
                last_running: RefCell::default(),
            },
            Err(error) => {
                log::warn!(
                    "cannot identify the held sockets ({error}): generations cannot be observed"
                );
                Watcher {
                    sockets: None,
                    last_running: RefCell::default(),
                }
            }
        }
    }

    /// One look at the generation whose child is `main`; `others` are the
    /// children of the other generations. `bound`: with `--intercept-bind`,
    /// the held sockets the generation's binds got (see `narrow`).
    pub fn look(
        &self,
        main: Pid,
        others: &[Pid],
        mode: ReadyMode,
        bound: Option<&[usize]>,
    ) -> Observation {
        let Some(sockets) = &self.sockets else {
            return Observation::Unobservable {
                why: "the held sockets cannot be identified".to_string(),
            };
        };
        let mut round = observer::observe(&generation_processes(main, others), sockets);
        if let Some(bound) = bound {
            narrow(&mut round, bound, sockets.len());
        }
        let busy = {
            let mut counts = self.last_running.borrow_mut();
            let busy = keeps_waking(&counts, &round.running);
            // The last count seen running, kept across looks that found
            // the thread waiting; bounded for trees that churn threads.
            if counts.len() > MAX_THREADS_REMEMBERED {
                counts.clear();
            }
            counts.extend(round.running.iter().copied());
            busy
        };
        match judge(&round, sockets, mode) {
            Observation::NotYet if busy => Observation::Busy,
            observation => observation,
        }
    }
}

/// Whether a thread running now has blocked at least BUSY_SWITCHES more
/// times than when it was last seen running (`last`: thread → count then).
fn keeps_waking(last: &HashMap<Pid, u64>, running: &[(Pid, u64)]) -> bool {
    running.iter().any(|(thread, count)| {
        last.get(thread)
            .is_some_and(|before| *count >= before + BUSY_SWITCHES)
    })
}

/// `--intercept-bind`: a server that binds its own address still has
/// every held socket open at fd 3 and up (passed as always), and never
/// accepts on those it did not bind. Once it has bound some, only those
/// count for `auto`: the others are taken as not held. (Before its first
/// bind, all count, as for a server that reads LISTEN_FDS.)
pub fn narrow(round: &mut Round, bound: &[usize], sockets: usize) {
    for index in 0..sockets {
        if !bound.contains(&index) && !round.not_held.contains(&index) {
            round.not_held.push(index);
        }
    }
}

/// `main`'s process tree, plus the orphans reparented to sockhold since it
/// started that are not another generation's.
fn generation_processes(main: Pid, others: &[Pid]) -> Vec<Pid> {
    let mut pids = observer::process_tree(main);
    let Some(born) = leftovers::start_ticks(main) else {
        return pids;
    };
    // sockhold's own children: cheap to list, unlike a scan of /proc,
    // which this runs every 10 ms while a generation starts.
    let me = Pid::this();
    let children = observer::direct_children(me).unwrap_or_else(|| leftovers::children_of(me));
    for orphan in children {
        let ours = orphan != main && !others.contains(&orphan) && !pids.contains(&orphan);
        if ours && leftovers::start_ticks(orphan).is_some_and(|at| at >= born) {
            pids.extend(observer::process_tree(orphan));
        }
    }
    pids
}

/// Applies the `--ready` rule to one round:
/// - `auto`: every held stream socket that the generation still has open
///   is being taken from (with datagram sockets only: every one still
///   open is being read). A socket it closed does not count; one it keeps
///   open and never accepts on keeps it starting.
/// - `accepting`: any held socket is being taken from.
///
/// Where that is not met and some process could not be read, the
/// generation cannot be observed.
pub fn judge(round: &Round, sockets: &[HeldSocket], mode: ReadyMode) -> Observation {
    let held = |index: &usize| !round.not_held.contains(index);
    let taken = |index: usize| round.taking.iter().find(|t| t.socket == index);
    let streams: Vec<usize> = (0..sockets.len())
        .filter(|index| !sockets[*index].datagram)
        .filter(held)
        .collect();
    let required: Vec<usize> = if streams.is_empty() {
        (0..sockets.len()).filter(held).collect()
    } else {
        streams
    };
    let met = match mode {
        ReadyMode::Accepting => round.taking.first(),
        _ if required.is_empty() => None,
        _ => required
            .iter()
            .map(|index| taken(*index))
            .collect::<Option<Vec<_>>>()
            .and_then(|all| all.into_iter().next()),
    };
    if let Some(taking) = met {
        return Observation::Accepting {
            pid: taking.pid,
            fd: taking.fd,
            doing: taking.how.doing(),
        };
    }
    if let Some((pid, reason)) = round.unobservable.first() {
        return Observation::Unobservable {
            why: format!("cannot observe pid {pid}: {reason}"),
        };
    }
    if required.is_empty() && round.processes_seen > 0 && mode == ReadyMode::Auto {
        return Observation::HoldsNone;
    }
    Observation::NotYet
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::readiness::observer::{Taking, Wait};

    const STREAM: HeldSocket = HeldSocket {
        inode: 10,
        datagram: false,
        name: None,
    };
    const DATAGRAM: HeldSocket = HeldSocket {
        inode: 20,
        datagram: true,
        name: None,
    };

    fn taking(socket: usize) -> Taking {
        Taking {
            pid: Pid::from_raw(42),
            fd: 3 + socket as i32,
            socket,
            how: Wait::Accept,
        }
    }

    fn round(taking: Vec<Taking>, not_held: Vec<usize>) -> Round {
        Round {
            taking,
            unobservable: Vec::new(),
            not_held,
            processes_seen: 1,
            running: Vec::new(),
        }
    }

    fn is_accepting(observation: &Observation) -> bool {
        matches!(observation, Observation::Accepting { .. })
    }

    #[test]
    fn a_thread_is_busy_when_it_blocked_twice_since_the_last_look() {
        let thread = Pid::from_raw(42);
        let last = HashMap::from([(thread, 100)]);
        assert!(keeps_waking(&last, &[(thread, 102)]));
        // Computing (a CPU-bound start) or blocked once: not busy.
        assert!(!keeps_waking(&last, &[(thread, 100)]));
        assert!(!keeps_waking(&last, &[(thread, 101)]));
        // A thread not running at the last look has nothing to compare.
        assert!(!keeps_waking(&HashMap::new(), &[(thread, 5000)]));
        assert!(!keeps_waking(&last, &[(Pid::from_raw(43), 5000)]));
    }

    #[test]
    fn auto_wants_every_stream_socket_still_held_and_accepting_any() {
        let sockets = [STREAM, STREAM];
        let one = round(vec![taking(0)], vec![]);
        assert_eq!(judge(&one, &sockets, ReadyMode::Auto), Observation::NotYet);
        assert!(is_accepting(&judge(&one, &sockets, ReadyMode::Accepting)));
        let both = round(vec![taking(1), taking(0)], vec![]);
        assert!(is_accepting(&judge(&both, &sockets, ReadyMode::Auto)));
        // A socket the child closed does not count.
        let closed_second = round(vec![taking(0)], vec![1]);
        assert_eq!(
            judge(&closed_second, &sockets, ReadyMode::Auto),
            Observation::Accepting {
                pid: Pid::from_raw(42),
                fd: 3,
                doing: "waits in accept"
            }
        );
    }

    #[test]
    fn with_intercept_bind_auto_wants_only_the_sockets_the_server_bound() {
        let sockets = [STREAM, STREAM];
        // The server bound (and accepts on) the second socket only; the
        // first stays open at fd 3, unused.
        let mut second = round(vec![taking(1)], vec![]);
        assert_eq!(
            judge(&second, &sockets, ReadyMode::Auto),
            Observation::NotYet
        );
        narrow(&mut second, &[1], sockets.len());
        assert!(is_accepting(&judge(&second, &sockets, ReadyMode::Auto)));
        // Bound both, accepts on one: not yet.
        let mut one_of_two = round(vec![taking(1)], vec![]);
        narrow(&mut one_of_two, &[1, 0], sockets.len());
        assert_eq!(
            judge(&one_of_two, &sockets, ReadyMode::Auto),
            Observation::NotYet
        );
    }

    #[test]
    fn auto_ignores_datagram_sockets_next_to_stream_ones() {
        let sockets = [STREAM, DATAGRAM];
        let stream_only = round(vec![taking(0)], vec![]);
        assert!(is_accepting(&judge(
            &stream_only,
            &sockets,
            ReadyMode::Auto
        )));
        let datagrams = [DATAGRAM];
        assert_eq!(
            judge(&round(vec![], vec![]), &datagrams, ReadyMode::Auto),
            Observation::NotYet
        );
        assert!(is_accepting(&judge(
            &round(vec![taking(0)], vec![]),
            &datagrams,
            ReadyMode::Auto
        )));
    }

    #[test]
    fn what_cannot_be_read_or_holds_nothing_cannot_be_observed() {
        let sockets = [STREAM];
        let mut hidden = round(vec![], vec![]);
        hidden
            .unobservable
            .push((Pid::from_raw(7), "permission denied".into()));
        assert_eq!(
            judge(&hidden, &sockets, ReadyMode::Auto),
            Observation::Unobservable {
                why: "cannot observe pid 7: permission denied".into()
            }
        );
        let closed_all = round(vec![], vec![0]);
        assert_eq!(
            judge(&closed_all, &sockets, ReadyMode::Auto),
            Observation::HoldsNone
        );
        // Under accepting, a child that closed everything just never is.
        assert_eq!(
            judge(&closed_all, &sockets, ReadyMode::Accepting),
            Observation::NotYet
        );
    }
}
