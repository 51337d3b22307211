//! One connection that sockhold answers itself (`--maintenance`), as a
//! pure state machine: read what the client sends (bounded), write the
//! answer, shut down the write side, and read on until the client closes,
//! so that closing never finds unread data, which would make the kernel
//! send a reset in place of the answer (RFC 1122 4.2.2.13; an HTTP
//! client then loses the response). No system calls; every deadline comes
//! with `now`, and the driver asks `deadline()` when to come back.

use std::time::{Duration, Instant};

/// Read at most this much of the request before answering.
pub const MAX_REQUEST_BYTES: usize = 64 * 1024;
/// The client has stopped sending when nothing more came for this long
/// after its last bytes (a client that sends its request and waits for
/// the answer never closes). Short: what it sends after the answer is
/// read and dropped before the close anyway.
pub const QUIET: Duration = Duration::from_millis(10);
/// How long a client that has sent nothing yet is waited for.
pub const FIRST_BYTES_WAIT: Duration = Duration::from_millis(100);
/// Reading ends this long after the accept, whatever still comes: a
/// client that trickles cannot put off its answer.
pub const READ_TIMEOUT: Duration = Duration::from_secs(1);
/// After the answer, at most this much more is read (and dropped) while
/// waiting for the client to close; a client that keeps sending is cut off.
pub const MAX_DRAIN_BYTES: usize = 1024 * 1024;
/// The whole conversation ends this long after the accept, whatever its
/// state: a client that reads slowly, or never closes, cannot hold a slot.
pub const CONVERSATION_TIMEOUT: Duration = Duration::from_secs(3);

/// What the driver does next with the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Read the request (`received`).
    Read,
    /// Write the answer from this offset (`sent`).
    Write { from: usize },
    /// The whole answer is written: shutdown(SHUT_WR), then `shut_down`.
    ShutDownWrite,
    /// Read and drop what comes until EOF (`received`).
    Drain,
    /// Close the connection; the conversation is over.
    Close,
}

/// The outcome of one read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Received {
    Bytes(usize),
    /// The client shut down its side (read returned 0).
    Eof,
    /// A reset or another error: nothing more can be done.
    Failed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Reading { read: usize, quiet_at: Instant },
    Writing { written: usize },
    Draining { drained: usize },
    Closed,
}

#[derive(Debug, Clone)]
pub struct Conversation {
    phase: Phase,
    answer_len: usize,
    read_until: Instant,
    give_up_at: Instant,
    answered: bool,
}

/// A conversation as an upgrade carries it (`upgrade/`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parts {
    pub phase: Phase,
    pub answer_len: usize,
    pub read_until: Instant,
    pub give_up_at: Instant,
    pub answered: bool,
}

impl Conversation {
    pub fn parts(&self) -> Parts {
        Parts {
            phase: self.phase,
            answer_len: self.answer_len,
            read_until: self.read_until,
            give_up_at: self.give_up_at,
            answered: self.answered,
        }
    }

    pub fn from_parts(parts: Parts) -> Conversation {
        Conversation {
            phase: parts.phase,
            answer_len: parts.answer_len,
            read_until: parts.read_until,
            give_up_at: parts.give_up_at,
            answered: parts.answered,
        }
    }

    /// A connection accepted at `now`, to be answered with `answer_len`
    /// bytes.
    pub fn new(answer_len: usize, now: Instant) -> Conversation {
        Conversation {
            phase: Phase::Reading {
                read: 0,
                quiet_at: now + FIRST_BYTES_WAIT,
            },
            answer_len,
            read_until: now + READ_TIMEOUT,
            give_up_at: now + CONVERSATION_TIMEOUT,
            answered: false,
        }
    }

    pub fn step(&self) -> Step {
        match self.phase {
            Phase::Reading { .. } => Step::Read,
            Phase::Writing { written } if written >= self.answer_len => Step::ShutDownWrite,
            Phase::Writing { written } => Step::Write { from: written },
            Phase::Draining { .. } => Step::Drain,
            Phase::Closed => Step::Close,
        }
    }

    /// What one read (of the request, or while draining) brought.
    pub fn received(&mut self, received: Received, now: Instant) {
        self.phase = match (self.phase, received) {
            (_, Received::Failed) => Phase::Closed,
            (Phase::Reading { read, .. }, Received::Bytes(n)) => {
                let read = read.saturating_add(n);
                if read >= MAX_REQUEST_BYTES {
                    Phase::Writing { written: 0 }
                } else {
                    Phase::Reading {
                        read,
                        quiet_at: now + QUIET,
                    }
                }
            }
            // Half-closed: it waits for the answer.
            (Phase::Reading { .. }, Received::Eof) => Phase::Writing { written: 0 },
            (Phase::Draining { drained }, Received::Bytes(n)) => {
                let drained = drained.saturating_add(n);
                if drained > MAX_DRAIN_BYTES {
                    Phase::Closed
                } else {
                    Phase::Draining { drained }
                }
            }
            (Phase::Draining { .. }, Received::Eof) => Phase::Closed,
            (phase, _) => phase,
        };
    }

    /// `n` more bytes of the answer were written.
    pub fn sent(&mut self, n: usize) {
        if let Phase::Writing { written } = self.phase {
            self.phase = Phase::Writing {
                written: written.saturating_add(n).min(self.answer_len),
            };
        }
    }

    /// The write side is shut down: the answer is on its way, whole.
    pub fn shut_down(&mut self) {
        if let Phase::Writing { written } = self.phase {
            if written >= self.answer_len {
                self.answered = true;
                self.phase = Phase::Draining { drained: 0 };
            }
        }
    }

    /// A write or shutdown failed (a reset): close.
    pub fn failed(&mut self) {
        self.phase = Phase::Closed;
    }

    /// Time passed: the quiet time and the deadlines.
    pub fn tick(&mut self, now: Instant) {
        if now >= self.give_up_at {
            self.phase = Phase::Closed;
            return;
        }
        if let Phase::Reading { quiet_at, .. } = self.phase {
            if now >= quiet_at || now >= self.read_until {
                self.phase = Phase::Writing { written: 0 };
            }
        }
    }

    /// When `tick` has something to do; None once closed.
    pub fn deadline(&self) -> Option<Instant> {
        match self.phase {
            Phase::Reading { quiet_at, .. } => {
                Some(quiet_at.min(self.read_until).min(self.give_up_at))
            }
            Phase::Writing { .. } | Phase::Draining { .. } => Some(self.give_up_at),
            Phase::Closed => None,
        }
    }

    /// Whether the whole answer was written (counted as answered).
    pub fn answered(&self) -> bool {
        self.answered
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_request_then_quiet_is_answered_shut_down_and_drained_to_eof() {
        let t0 = Instant::now();
        let mut c = Conversation::new(10, t0);
        assert_eq!(c.step(), Step::Read);
        assert_eq!(c.deadline(), Some(t0 + FIRST_BYTES_WAIT));
        c.received(Received::Bytes(100), t0 + ms(10));
        assert_eq!(c.deadline(), Some(t0 + ms(10) + QUIET));
        // Nothing more comes: still reading until the quiet time is over.
        c.tick(t0 + ms(15));
        assert_eq!(c.step(), Step::Read);
        c.tick(t0 + ms(10) + QUIET);
        assert_eq!(c.step(), Step::Write { from: 0 });
        c.sent(4);
        assert_eq!(c.step(), Step::Write { from: 4 });
        c.sent(6);
        assert_eq!(c.step(), Step::ShutDownWrite);
        assert!(!c.answered());
        c.shut_down();
        assert!(c.answered());
        assert_eq!(c.step(), Step::Drain);
        assert_eq!(c.deadline(), Some(t0 + CONVERSATION_TIMEOUT));
        c.received(Received::Bytes(5), t0 + ms(200));
        assert_eq!(c.step(), Step::Drain);
        c.received(Received::Eof, t0 + ms(210));
        assert_eq!(c.step(), Step::Close);
        assert_eq!(c.deadline(), None);
    }

    #[test]
    fn reading_stops_at_64_kib_or_at_eof() {
        let t0 = Instant::now();
        let mut c = Conversation::new(1, t0);
        c.received(Received::Bytes(MAX_REQUEST_BYTES - 1), t0);
        assert_eq!(c.step(), Step::Read);
        c.received(Received::Bytes(1), t0);
        assert_eq!(c.step(), Step::Write { from: 0 });
        let mut c = Conversation::new(1, t0);
        c.received(Received::Eof, t0);
        assert_eq!(c.step(), Step::Write { from: 0 });
    }

    #[test]
    fn a_trickling_client_is_answered_after_the_read_timeout() {
        let t0 = Instant::now();
        let mut c = Conversation::new(1, t0);
        let mut now = t0;
        while now < t0 + READ_TIMEOUT {
            c.received(Received::Bytes(1), now);
            now += ms(5);
            c.tick(now);
        }
        assert_eq!(c.step(), Step::Write { from: 0 });
    }

    #[test]
    fn an_empty_answer_only_shuts_down() {
        let t0 = Instant::now();
        let mut c = Conversation::new(0, t0);
        c.tick(t0 + FIRST_BYTES_WAIT);
        assert_eq!(c.step(), Step::ShutDownWrite);
        c.shut_down();
        assert!(c.answered());
    }

    #[test]
    fn resets_deadlines_and_floods_close() {
        let t0 = Instant::now();
        let mut c = Conversation::new(1, t0);
        c.received(Received::Failed, t0);
        assert_eq!(c.step(), Step::Close);
        assert!(!c.answered());

        // A client that never reads the answer nor closes.
        let mut c = Conversation::new(1_000_000, t0);
        c.tick(t0 + FIRST_BYTES_WAIT);
        c.sent(10);
        c.tick(t0 + CONVERSATION_TIMEOUT);
        assert_eq!(c.step(), Step::Close);
        assert!(!c.answered());

        // One that keeps sending after the answer.
        let mut c = Conversation::new(1, t0);
        c.received(Received::Eof, t0);
        c.sent(1);
        c.shut_down();
        c.received(Received::Bytes(MAX_DRAIN_BYTES), t0);
        assert_eq!(c.step(), Step::Drain);
        c.received(Received::Bytes(1), t0);
        assert_eq!(c.step(), Step::Close);
        assert!(c.answered(), "it got its answer all the same");

        let mut c = Conversation::new(1, t0);
        c.received(Received::Eof, t0);
        c.failed();
        assert_eq!(c.step(), Step::Close);
    }
}
