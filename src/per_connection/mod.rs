//! The per-connection engine (`--accept`, inetd style): one child per
//! accepted connection, within limits. `limits.rs` keeps the books (pure),
//! `server.rs` accepts and spawns; this file turns driver events into
//! their calls and carries out their actions.
//!
//! No child here gets a listening socket (only its connection), so none
//! can shut one down: the listening check of the generations engine
//! (`Context::check_listeners`) has nothing to find in this mode.

pub mod limits;
mod server;

use crate::config::Config;
use crate::control;
use crate::engine::{Context, Engine, Event, Origin};
use crate::error::Error;
use crate::generations::Report;
use crate::listen::Listener;
use crate::signals::StopBy;
use crate::upgrade::state::{self, ConnectionSource, QuietLogState};
use limits::{Action, Source};
use nix::unistd::Pid;
use server::AcceptServer;
use std::ffi::OsString;
use std::time::Instant;

pub struct PerConnection {
    server: AcceptServer,
    /// The command as given, resolved again before an upgrade.
    command: OsString,
}

impl PerConnection {
    pub fn new(config: &Config, listeners: &[Listener]) -> Result<PerConnection, Error> {
        let Some(settings) = &config.accept else {
            return Err(Error::new(
                crate::error::exit::INTERNAL,
                "per-connection mode without --accept settings",
            ));
        };
        let inherited_env = crate::spawn::inherited_environment();
        // Resolved once: every connection execs this path, so a new binary
        // installed there is picked up without a reload.
        let path_var = inherited_env
            .iter()
            .find(|(key, _)| key == "PATH")
            .map(|(_, value)| value.as_os_str());
        let program = match crate::spawn::resolve_command(&config.command[0], path_var) {
            Ok(program) => program,
            // Only after an upgrade (a start checks the command first, and
            // the old binary just before the exec): the children it hands
            // over must not be dropped for it. Each connection is closed
            // with the reason until the command can be run again.
            Err(error) => {
                log::error!(
                    "{}; each connection is closed until it can be run",
                    error.message
                );
                std::path::PathBuf::from(&config.command[0])
            }
        };
        // --compat-env is refused with --accept: its variables describe
        // listening sockets, which a per-connection child does not get.
        let server = AcceptServer::new(
            settings,
            &program,
            &config.command,
            &inherited_env,
            listeners,
        )?;
        Ok(PerConnection {
            server,
            command: config.command[0].clone(),
        })
    }

    fn carry_out(&mut self, actions: Vec<Action>, context: &mut Context<'_>) -> Option<i32> {
        for action in actions {
            match action {
                Action::Stop { pid, signal } => context.children.stop(pid, signal),
                Action::Signal { pid, signal } => context.children.signal(pid, signal),
                Action::Exit { status } => return Some(status),
            }
        }
        self.watch_if_room(context);
        None
    }

    /// Watches the listeners exactly while there is room for a connection.
    fn watch_if_room(&mut self, context: &mut Context<'_>) {
        let wanted = self.server.wants_listeners(Instant::now());
        if context.watch_listeners(wanted) {
            // Whatever is still queued is reported again on registration.
            self.server.forget_pending();
        }
    }

    fn status_json(&self, context: &Context<'_>) -> String {
        let state = self.server.connections.phase().to_string();
        let view = control::StatusView {
            pid: std::process::id(),
            state: &state,
            started_at: context.started_at,
            sockets: context.socket_infos(),
            generations: Vec::new(),
            workers: Vec::new(),
            restarts: 0,
            reload_queued: false,
            paused_since: None,
            maintenance: None,
            interceptions: None,
            // No notify sockets in accept mode: nothing to store.
            fd_store: Vec::new(),
        };
        control::status_json(&view, Instant::now(), std::time::SystemTime::now())
    }
}

/// The bookkeeping as the state writes it: instants as CLOCK_MONOTONIC ns.
fn to_state(carried: server::Carried, clock: state::Clock) -> state::PerConnection {
    let ns = |at: Option<Instant>| at.map(|at| clock.to_ns(at));
    let log = |(last, silenced): (Option<Instant>, u64)| QuietLogState {
        last_logged: ns(last),
        silenced,
    };
    let connections = carried.connections;
    state::PerConnection {
        started_total: connections.started_total,
        rate_next: ns(connections.rate_next),
        paused_until: ns(connections.paused_until),
        over_source_limit: log(connections.over_source_limit),
        at_limit: log(connections.at_limit),
        spawn_failures: log(carried.spawn_failures),
        accept_failures: log(carried.accept_failures),
        connections: connections
            .running
            .iter()
            .map(|&(pid, source)| state::Connection {
                pid: pid.as_raw(),
                source: match source {
                    Source::Ip(ip) => ConnectionSource::Ip(ip),
                    Source::Uid(uid) => ConnectionSource::Uid(uid),
                    Source::Unknown => ConnectionSource::Unknown,
                },
            })
            .collect(),
    }
}

fn from_state(written: state::PerConnection, clock: state::Clock) -> server::Carried {
    let at = |ns: Option<u64>| ns.map(|ns| clock.to_instant(ns));
    let log = |log: QuietLogState| (at(log.last_logged), log.silenced);
    server::Carried {
        connections: limits::Carried {
            running: written
                .connections
                .iter()
                .map(|c| {
                    let source = match c.source {
                        ConnectionSource::Ip(ip) => Source::Ip(ip),
                        ConnectionSource::Uid(uid) => Source::Uid(uid),
                        ConnectionSource::Unknown => Source::Unknown,
                    };
                    (Pid::from_raw(c.pid), source)
                })
                .collect(),
            rate_next: at(written.rate_next),
            paused_until: at(written.paused_until),
            over_source_limit: log(written.over_source_limit),
            at_limit: log(written.at_limit),
            started_total: written.started_total,
        },
        spawn_failures: log(written.spawn_failures),
        accept_failures: log(written.accept_failures),
    }
}

impl Engine for PerConnection {
    /// Every running connection child (its pidfd goes with the driver's
    /// children), where it came from, and the limits' state: the rate,
    /// a pause after running out of resources, the summaries due.
    fn carry(&self) -> Result<crate::upgrade::Carried, String> {
        // The new binary resolves the command again, and could not start
        // without it: refused while this one still serves.
        let path = std::env::var_os("PATH");
        crate::spawn::resolve_command(&self.command, path.as_deref()).map_err(|e| e.message)?;
        let carried = self.server.carry()?;
        Ok(crate::upgrade::Carried {
            supervisor: Default::default(),
            notify: Vec::new(),
            stored: Vec::new(),
            nonblocking: None,
            maintenance: None,
            intercept: None,
            per_connection: Some(to_state(carried, crate::upgrade::clock())),
        })
    }

    /// Takes over the bookkeeping, then watches the listeners if there is
    /// room (registered afresh: epoll reports the connections that queued
    /// during the exec); a pause or the rate limit holds that back until
    /// its deadline, as before the upgrade.
    fn restore(&mut self, carried: crate::upgrade::Restored, context: &mut Context<'_>) {
        context.service_manager.set_waiting_for_connections();
        match carried.per_connection {
            Some(written) => {
                let carried = from_state(written, crate::upgrade::clock());
                for (pid, _) in &carried.connections.running {
                    if !context.children.iter().any(|child| child.pid() == *pid) {
                        log::debug!("connection child pid {pid} came without a pidfd");
                    }
                }
                self.server.restore(carried);
            }
            None => log::warn!(
                "the upgrade carried no per-connection state: the connection children started before it are not counted"
            ),
        }
        self.watch_if_room(context);
    }

    fn handle(&mut self, event: Event, context: &mut Context<'_>) -> Option<i32> {
        let now = Instant::now();
        let connections = &mut self.server.connections;
        let actions = match event {
            Event::Start => {
                log::info!(
                    "accepting connections: one child per connection, at most {} at once",
                    connections.limits().max_connections
                );
                Vec::new()
            }
            Event::Reload { by: Origin::Signal } => {
                log::info!(
                    "reload: nothing to reload in --accept mode; every new connection runs the command afresh"
                );
                Vec::new()
            }
            Event::Reload {
                by: Origin::Control(client),
            } => {
                if let Some(control) = context.control.as_deref_mut() {
                    control.reply(
                        client,
                        &control::nothing_to_reload(
                            " in --accept mode: every connection runs the command afresh",
                        ),
                    );
                }
                Vec::new()
            }
            Event::Pause { client } | Event::Resume { client } => {
                if let Some(control) = context.control.as_deref_mut() {
                    control.reply(
                        client,
                        &control::error(
                            "pause and resume need generations; --accept has none (stop ends every connection's child)",
                        ),
                    );
                }
                Vec::new()
            }
            Event::Scale { client, .. } => {
                if let Some(control) = context.control.as_deref_mut() {
                    control.reply(
                        client,
                        &control::error(
                            "scale needs generations of workers; --accept runs one child per connection (--max-connections limits them)",
                        ),
                    );
                }
                Vec::new()
            }
            Event::Stop { signal, by } => {
                context.service_manager.report(&Report::Stopping);
                let by = match by {
                    Origin::Signal => StopBy::Signal,
                    Origin::Control(_) => StopBy::Control,
                };
                connections.stop(signal, by, now)
            }
            Event::Forward { signal } => connections.forward(signal),
            Event::Exited(reaped) => connections.exited(reaped.pid, reaped.status),
            Event::ListenerReady { index } => {
                self.server.mark_ready(index);
                Vec::new()
            }
            Event::SourceReady { .. } => Vec::new(),
            Event::Status { client } => {
                let json = self.status_json(context);
                if let Some(control) = context.control.as_deref_mut() {
                    control.reply(client, &json);
                }
                Vec::new()
            }
            Event::Tick => self.server.tick(now),
        };
        self.carry_out(actions, context)
    }

    /// Accepting comes after reaping, so that children that exited
    /// meanwhile make room first.
    fn settle(&mut self, context: &mut Context<'_>) -> Option<i32> {
        self.server
            .accept_pending(context.children, context.spawner);
        self.watch_if_room(context);
        None
    }

    fn next_deadline(&self, now: Instant) -> Option<Instant> {
        if self.server.has_pending() {
            // Connections still queued: only look for other events.
            return Some(now);
        }
        self.server.next_deadline(now)
    }
}
