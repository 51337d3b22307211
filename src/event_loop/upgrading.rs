//! `upgrade` in the event loop: the target probed while the loop serves
//! on, the state gathered from the loop's parts and the exec
//! (`crate::upgrade`), and, in the new binary, everything taken over.

use super::{EventLoop, PROBE};
use crate::child;
use crate::control::{self, ControlSocket};
use crate::error::{Error, exit};
use crate::generations::supervisor::Supervisor;
use crate::pidfile::PidFile;
use crate::upgrade;
use mio::Interest;
use mio::unix::SourceFd;
use nix::unistd::Pid;
use std::os::fd::AsRawFd;
use std::time::Instant;

/// An `upgrade` request whose target is being probed.
pub(super) struct Probing {
    client: control::ClientId,
    pub(super) probe: upgrade::probe::Probe,
}

impl EventLoop {
    /// Takes over what an earlier binary of this pid handed over
    /// (`upgrade`): the children, the control socket, the pid file, the
    /// engine's state; then answers the client that asked.
    pub fn resume(
        mut self,
        incoming: upgrade::Incoming,
        supervisor: Supervisor,
        control_path: Option<&std::path::Path>,
        pid_path: Option<&std::path::Path>,
    ) -> Result<EventLoop, Error> {
        let clock = upgrade::clock();
        let state = &incoming.state;
        let fail = |what: String| {
            Error::new(
                exit::OS,
                format!("cannot take over after the upgrade: {what}"),
            )
        };
        self.started_at = clock.to_instant(state.started_at);
        for child in &state.children {
            let pidfd = child.pidfd.map(|fd| incoming.own(fd));
            self.children.insert(child::ChildHandle::adopted(
                Pid::from_raw(child.pid),
                pidfd,
                child.group,
                clock.to_instant(child.started_at),
            ));
        }
        let control = match (state.control, control_path) {
            (Some((fd, device, inode)), Some(path)) => {
                Some(ControlSocket::adopt(incoming.own(fd), path, device, inode))
            }
            _ => None,
        };
        let pid_file = match (state.pid_file, pid_path) {
            (Some(fd), Some(path)) => {
                Some(PidFile::adopt(path, std::fs::File::from(incoming.own(fd))).map_err(fail)?)
            }
            _ => None,
        };
        self = self.with_control(control, pid_file)?;
        self.service_manager.set_serving(
            state
                .serving
                .map(|(generation, pid)| (generation, Pid::from_raw(pid))),
        );
        let restored = incoming.take_engine_state(supervisor);
        self.with_engine(|engine, context| engine.restore(restored, context));
        for waiter in &state.waiters {
            let connection = incoming.own(waiter.fd);
            if let Some(control) = &mut self.control {
                control.adopt_waiter(connection, waiter.waits.clone(), clock);
            }
        }
        let binary = incoming.binary();
        self.exe = Some(binary.clone());
        self.resumed = true;
        let serving = match &state.per_connection {
            Some(accepting) => {
                let pids: Vec<String> = accepting
                    .connections
                    .iter()
                    .map(|c| c.pid.to_string())
                    .collect();
                format!(
                    "{} connection children (pids {})",
                    pids.len(),
                    pids.join(" ")
                )
            }
            None => {
                let pids: Vec<String> = state
                    .supervisor
                    .pids()
                    .iter()
                    .map(ToString::to_string)
                    .collect();
                let generation = state
                    .supervisor
                    .generations
                    .iter()
                    .find(|g| matches!(g.role, upgrade::state::Role::Current { .. }))
                    .map_or_else(
                        || {
                            match state.supervisor.phase {
                                upgrade::state::Phase::Paused { .. } => "none (paused)",
                                upgrade::state::Phase::WaitingToRestart { .. } => {
                                    "none (waiting to restart)"
                                }
                                upgrade::state::Phase::Idle { .. } => {
                                    "none (waiting for a connection)"
                                }
                                upgrade::state::Phase::Running => "none (starting)",
                            }
                            .to_string()
                        },
                        |g| g.id.to_string(),
                    );
                format!("generation {generation} (pids {})", pids.join(" "))
            }
        };
        let incoming_failed = incoming.failed.clone();
        let reply = match &incoming.failed {
            Some(reason) => {
                log::error!(
                    "upgrade failed: {reason}; pid {} runs {} again; holding {} sockets, {serving}",
                    std::process::id(),
                    binary.display(),
                    self.listeners.len(),
                );
                control::error(format_args!("{}{reason}", control::UPGRADE_FAILED))
            }
            None => {
                log::info!(
                    "upgraded: pid {} now runs {}; holding {} sockets, {serving}",
                    std::process::id(),
                    binary.display(),
                    self.listeners.len(),
                );
                control::upgraded(std::process::id(), binary.display())
            }
        };
        // The memfd and the fallback binary are closed before the client
        // hears of it: whoever counts sockhold's fds then finds them gone.
        let connection = state.client.map(|fd| incoming.own(fd));
        drop(incoming);
        if let Some(connection) = connection {
            upgrade::answer(connection, &reply);
        }
        self.service_manager.upgraded(incoming_failed.as_deref());
        Ok(self)
    }

    /// `upgrade` on the control socket: the target is probed first
    /// (`follow_probe` goes on once it has answered); refused at once when
    /// it cannot be carried now.
    pub(super) fn upgrade(&mut self, client: control::ClientId, target: Option<String>) {
        if let Err(reply) = self.start_probe(client, target) {
            if let Some(control) = &mut self.control {
                control.reply(client, &reply);
            }
        }
    }

    fn start_probe(
        &mut self,
        client: control::ClientId,
        target: Option<String>,
    ) -> Result<(), String> {
        if let Some(probing) = &self.probing {
            return Err(upgrade_refused(format!(
                "an upgrade to {} is being tried; retry once it is done",
                probing.probe.target().display()
            )));
        }
        self.engine.carry().map_err(upgrade_refused)?;
        let target = target
            .map(std::path::PathBuf::from)
            .or_else(|| self.exe.clone())
            .ok_or_else(|| {
                upgrade_refused(
                    "sockhold's own binary could not be found at start-up (give --exec PATH)"
                        .to_string(),
                )
            })?;
        log::info!("upgrade: probing {}", target.display());
        let probe =
            upgrade::probe::Probe::start(&target, Instant::now()).map_err(upgrade_refused)?;
        let raw = probe.stdout().as_raw_fd();
        self.poll
            .registry()
            .register(&mut SourceFd(&raw), PROBE, Interest::READABLE)
            .map_err(|e| upgrade_refused(format!("cannot watch the probe: {e}")))?;
        self.probing = Some(Probing { client, probe });
        Ok(())
    }

    /// After every wakeup: once the probe has answered, the upgrade goes on
    /// (or is refused with the probe's verdict). Returns only if the exec
    /// did not happen.
    pub(super) fn follow_probe(&mut self) {
        let Some(probing) = &mut self.probing else {
            return;
        };
        let Some(verdict) = probing.probe.outcome(Instant::now()) else {
            return;
        };
        let Some(probing) = self.probing.take() else {
            return;
        };
        let raw = probing.probe.stdout().as_raw_fd();
        let _ = self.poll.registry().deregister(&mut SourceFd(&raw));
        let target = probing.probe.target().to_path_buf();
        drop(probing.probe);
        let reply = match verdict {
            Ok(()) => self.exec_upgrade(probing.client, &target),
            Err(reason) => upgrade_refused(reason),
        };
        if let Some(control) = &mut self.control {
            control.reply(probing.client, &reply);
        }
    }

    /// Writes the state and executes `target`; returns only if that did
    /// not happen, with the reply.
    fn exec_upgrade(&mut self, client: control::ClientId, target: &std::path::Path) -> String {
        // Asked again: things may have moved on while the probe ran.
        let carried = match self.engine.carry() {
            Ok(carried) => carried,
            Err(reason) => return upgrade_refused(reason),
        };
        let state = self.upgrade_state(client, carried, target);
        self.service_manager.upgrading();
        let reason = upgrade::exec(target, &state);
        self.service_manager.upgraded(Some(&reason));
        log::error!("upgrade failed: {reason}; sockhold carries on");
        control::error(format_args!("{}{reason}", control::UPGRADE_FAILED))
    }

    fn upgrade_state(
        &self,
        client: control::ClientId,
        carried: upgrade::Carried,
        target: &std::path::Path,
    ) -> upgrade::state::State {
        use std::os::unix::ffi::OsStrExt;
        use upgrade::state;
        let clock = upgrade::clock();
        let (control, client, waiters) = match &self.control {
            Some(server) => {
                let (fd, device, inode, connection) = server.carried(client);
                (Some((fd, device, inode)), connection, server.waiters(clock))
            }
            None => (None, None, Vec::new()),
        };
        state::State {
            exe: self
                .exe
                .as_ref()
                .map(|p| p.as_os_str().as_bytes().to_vec())
                .unwrap_or_default(),
            target: target.as_os_str().as_bytes().to_vec(),
            arguments: upgrade::own_arguments(),
            started_at: clock.to_ns(self.started_at),
            sockets: self
                .listeners
                .iter()
                .map(|l| state::HeldSocket {
                    fd: l.raw_fd(),
                    file: l.socket_file(),
                })
                .collect(),
            control,
            client,
            pid_file: self.pid_file.as_ref().map(PidFile::raw_fd),
            notify: carried
                .notify
                .iter()
                .map(|n| state::Notify {
                    generation: n.generation,
                    fd: n.fd,
                    owner: n.owner,
                    address: n.address.as_bytes().to_vec(),
                    directory: n
                        .directory
                        .as_ref()
                        .map(|d| d.as_os_str().as_bytes().to_vec()),
                })
                .collect(),
            children: self
                .children
                .iter()
                .map(|c| {
                    let (pidfd, group) = c.carried();
                    state::Child {
                        pid: c.pid().as_raw(),
                        pidfd,
                        group,
                        started_at: clock.to_ns(c.started_at()),
                    }
                })
                .collect(),
            stored: carried
                .stored
                .iter()
                .map(|(fd, polled, name)| state::Stored {
                    fd: *fd,
                    polled: *polled,
                    name: name.as_bytes().to_vec(),
                })
                .collect(),
            serving: self
                .service_manager
                .serving()
                .map(|(generation, pid)| (generation, pid.as_raw())),
            nonblocking: carried.nonblocking.clone(),
            intercept: carried.intercept.clone(),
            supervisor: carried.supervisor,
            maintenance: carried
                .maintenance
                .as_ref()
                .map(|m| upgrade::maintenance::to_state(m, clock)),
            per_connection: carried.per_connection.clone(),
            waiters,
        }
    }
}

/// The reply to an upgrade that was not tried, logged.
fn upgrade_refused(reason: String) -> String {
    log::warn!("upgrade refused: {reason}; sockhold carries on");
    control::error(format_args!("{}{reason}", control::UPGRADE_REFUSED))
}
