//! What the driver and the engines say to each other. An engine runs one
//! mode (generations, or one child per connection); the driver
//! (`event_loop.rs`) turns everything that happens into an `Event`, hands
//! it to the engine with a `Context` of what the engine may use, and knows
//! nothing about the mode itself.

use crate::child::{Children, Reaped};
use crate::control::{self, ClientId};
use crate::listen::{Check, Listener};
use crate::sd_notify::ServiceManager;
use crate::spawn::Spawner;
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};
use nix::sys::signal::Signal;
use std::os::fd::RawFd;
use std::time::Instant;

/// The poll's tokens come in quarters of `usize`, so that they fit a
/// 32-bit `usize` as well: signals (0) in the first, then the engine's
/// sources, the listening sockets, the control socket (`event_loop.rs`).
pub const TOKEN_QUARTER: usize = 1 << (usize::BITS - 2);
/// Tokens an engine registers its own sources with (notify sockets):
/// `ENGINE_BASE + key`. (On 32-bit, keys wrap after 2^30 generations.)
pub const ENGINE_BASE: usize = TOKEN_QUARTER;
/// Listening sockets, when watched: `LISTENER_BASE + index`.
pub const LISTENER_BASE: usize = 2 * TOKEN_QUARTER;

/// Who asked for a reload or a stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A signal to sockhold (SIGHUP, SIGTERM, SIGINT).
    Signal,
    /// A request on the control socket, from this client.
    Control(ClientId),
}

/// Everything that happens, as the driver hands it to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// sockhold is up.
    Start,
    /// SIGHUP or `reload`.
    Reload { by: Origin },
    /// SIGTERM, SIGINT or `stop` (as SIGTERM).
    Stop { signal: Signal, by: Origin },
    /// A signal from the `--forward-signals` list.
    Forward { signal: Signal },
    /// A process was reaped: one of the engine's children, or an orphan.
    /// Exits come before every other event of the same wakeup.
    Exited(Reaped),
    /// A watched listening socket has something queued.
    ListenerReady { index: usize },
    /// One of the engine's own sources (registered with `Context::watch`)
    /// is readable.
    SourceReady { key: u64 },
    /// `status` on the control socket.
    Status { client: ClientId },
    /// `pause` on the control socket.
    Pause { client: ClientId },
    /// `resume` on the control socket.
    Resume { client: ClientId },
    /// `scale N` on the control socket.
    Scale { client: ClientId, count: usize },
    /// Time passed; deadlines may be due. Comes last in every wakeup.
    Tick,
}

/// A mode of sockhold.
pub trait Engine {
    /// Handles one event to completion; `Some(status)`: exit with it.
    fn handle(&mut self, event: Event, context: &mut Context<'_>) -> Option<i32>;

    /// After every wakeup's events: work that must come after reaping
    /// (per-connection mode accepts here, so exits make room first).
    fn settle(&mut self, _context: &mut Context<'_>) -> Option<i32> {
        None
    }

    /// The earliest time the engine wants a `Tick`; None: events only.
    fn next_deadline(&self, now: Instant) -> Option<Instant>;

    /// What an upgrade carries of the engine (`upgrade/`), or why it cannot
    /// upgrade now.
    fn carry(&self) -> Result<crate::upgrade::Carried, String>;

    /// Takes over what the sockhold this one replaced carried.
    fn restore(&mut self, carried: crate::upgrade::Restored, context: &mut Context<'_>);
}

/// What an engine may use while it handles an event.
pub struct Context<'a> {
    pub registry: &'a Registry,
    pub children: &'a mut Children,
    /// The one stack children are started on (`spawn.rs`).
    pub spawner: &'a mut Spawner,
    /// Mutable only so that a socket a child shut down can be restored
    /// (`check_listeners`).
    pub listeners: &'a mut [Listener],
    pub listener_watch: &'a mut ListenerWatch,
    pub control: Option<&'a mut control::Server>,
    pub service_manager: &'a mut ServiceManager,
    /// When sockhold started, for `status`.
    pub started_at: Instant,
}

impl Context<'_> {
    /// Watches one of the engine's own fds; it comes back as
    /// `Event::SourceReady { key }`.
    pub fn watch(&self, fd: RawFd, key: u64, what: &str) {
        self.watch_for(fd, key, Interest::READABLE, what);
    }

    /// As `watch`, for reading and writing both (a connection that is
    /// answered): reported when either becomes possible.
    pub fn watch_read_write(&self, fd: RawFd, key: u64, what: &str) {
        self.watch_for(fd, key, Interest::READABLE | Interest::WRITABLE, what);
    }

    fn watch_for(&self, fd: RawFd, key: u64, interest: Interest, what: &str) {
        let token = Token(ENGINE_BASE + key as usize);
        if let Err(error) = self.registry.register(&mut SourceFd(&fd), token, interest) {
            log::warn!("cannot watch {what}: {error}");
        }
    }

    pub fn unwatch(&self, fd: RawFd) {
        let _ = self.registry.deregister(&mut SourceFd(&fd));
    }

    /// Starts or stops watching every listening socket; true if that
    /// changed anything.
    pub fn watch_listeners(&mut self, on: bool) -> bool {
        self.listener_watch.set(self.registry, self.listeners, on)
    }

    /// Checks that every held stream socket still listens, and restores
    /// each one a child shut down, with one error line naming it; `seen`
    /// says when that was noticed (`seen when pid 42 exited`). Returns
    /// whether a socket was replaced by a new one (which only the children
    /// started from now on get).
    pub fn check_listeners(&mut self, seen: &str) -> bool {
        let mut replaced = false;
        for index in 0..self.listeners.len() {
            if !self.listeners[index].is_shut_down() {
                continue;
            }
            // A replaced socket is closed here: epoll would keep reporting
            // it while children still have it, so it leaves the poll first.
            let watched = self.listener_watch.is_on();
            if watched {
                let _ = self
                    .registry
                    .deregister(&mut SourceFd(&self.listeners[index].raw_fd()));
            }
            let check = self.listeners[index].check();
            let listener = &self.listeners[index];
            if watched {
                ListenerWatch::register(self.registry, listener, index);
            }
            let fd = crate::spawn::FIRST_PASSED_FD as usize + index;
            let what = format!(
                "listening socket fd {fd} ({}) was shut down by a child ({seen}; a server must close(2) a listening socket it shares with sockhold, never shutdown(2) it)",
                listener.description
            );
            match check {
                Check::Listening => {}
                Check::ListeningAgain => log::error!("{what}: listening on it again"),
                Check::Replaced => {
                    replaced = true;
                    log::error!(
                        "{what}: replaced by a new socket on the same path, which the children started from now on get"
                    );
                }
                Check::Lost(reason) => log::error!("{what}: {reason}"),
            }
        }
        replaced
    }

    /// The sockets as `status` shows them.
    pub fn socket_infos(&self) -> Vec<control::SocketInfo<'_>> {
        self.listeners
            .iter()
            .enumerate()
            .map(|(index, listener)| control::SocketInfo {
                fd: crate::spawn::FIRST_PASSED_FD as usize + index,
                name: &listener.name,
                address: &listener.description,
            })
            .collect()
    }
}

/// Whether the listening sockets are registered with the poll.
#[derive(Debug, Default)]
pub struct ListenerWatch {
    on: bool,
}

impl ListenerWatch {
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// Registers or deregisters every listener. Edge-triggered: on
    /// registration epoll reports a connection already queued, so a
    /// listener that was not drained is picked up again.
    fn set(&mut self, registry: &Registry, listeners: &[Listener], on: bool) -> bool {
        if on == self.on {
            return false;
        }
        self.on = on;
        for (index, listener) in listeners.iter().enumerate() {
            if on {
                ListenerWatch::register(registry, listener, index);
            } else if let Err(error) = registry.deregister(&mut SourceFd(&listener.raw_fd())) {
                log::warn!("cannot watch {}: {error}", listener.description);
            }
        }
        true
    }

    fn register(registry: &Registry, listener: &Listener, index: usize) {
        let token = Token(LISTENER_BASE + index);
        if let Err(error) =
            registry.register(&mut SourceFd(&listener.raw_fd()), token, Interest::READABLE)
        {
            log::warn!("cannot watch {}: {error}", listener.description);
        }
    }
}
