//! Integration tests: the real sockhold binary, real child processes,
//! loopback and Unix sockets. One test binary; one module per behaviour.

mod harness;

mod accept;
mod child_world;
mod control;
mod docs;
mod errors;
mod exit_status;
mod privileges;
mod reload;
mod unix_sockets;
