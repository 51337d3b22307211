//! Integration tests: the real sockhold binary, real child processes,
//! loopback and Unix sockets. One test binary; one module per behaviour.

// Tests poke at processes and fds directly (pre_exec hooks, pidfds).
#![allow(unsafe_code)]

mod harness;

mod accept;
mod child_world;
mod compat_env;
mod control;
mod datagram;
mod docs;
mod errors;
mod exit_status;
mod fd_store;
mod hardening;
mod intercept;
mod leftovers;
mod maintenance;
mod notify;
mod pause;
mod pid1;
mod privileges;
mod readiness;
mod reload;
mod shutdown;
mod signal_group;
mod signals;
mod startup;
mod stdin_socket;
mod stopping;
mod systemd;
mod unix_sockets;
mod upgrade;
mod upgrade_accept;
mod upgrade_intercept;
mod upgrade_maintenance;
mod upgrade_target;
mod workers;
