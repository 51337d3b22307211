//! The upgrade probe: the target is run with `SOCKHOLD_UPGRADE_PROBE=1`,
//! and a sockhold answers with the state versions it reads and exits 0.
//! Driven by the event loop (its stdout is watched, its exit comes from
//! the reaper, its deadline is one of the loop's), so that sockhold goes
//! on serving, reaping and answering while the target starts; `verdict`
//! decides, pure.

use super::{FAILED_VAR, FALLBACK_VAR, PROBE_ANSWER, PROBE_VAR, STATE_VAR, io_reason, state};
use crate::child::ChildStatus;
use nix::fcntl::{FcntlArg, OFlag};
use nix::sys::signal::Signal;
use nix::unistd::Pid;
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the probe may take before it is killed.
pub const TIMEOUT: Duration = Duration::from_secs(5);
/// The most of its answer that is read: one short line is expected.
const MAX_ANSWER_BYTES: usize = 4096;

pub struct Probe {
    target: PathBuf,
    pid: Pid,
    stdout: std::fs::File,
    /// Its stdout was read to its end.
    eof: bool,
    answer: Vec<u8>,
    status: Option<ChildStatus>,
    deadline: Instant,
    /// Killed at the deadline: the verdict waits for its exit, so that the
    /// probe is reaped as the probe.
    killed: bool,
}

impl Probe {
    /// Starts the target; the reason if it cannot be executed.
    pub fn start(target: &Path, now: Instant) -> Result<Probe, String> {
        use std::process::{Command, Stdio};
        let mut child = Command::new(target)
            .env(PROBE_VAR, "1")
            .env_remove(STATE_VAR)
            .env_remove(FALLBACK_VAR)
            .env_remove(FAILED_VAR)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot execute {}: {}", target.display(), io_reason(&e)))?;
        let pid = Pid::from_raw(child.id() as i32);
        // The handle is dropped without a wait: the event loop's reaper
        // reaps it, like every other child, and hands its status here.
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| format!("cannot read what {} answers", target.display()))?;
        let _ = nix::fcntl::fcntl(&stdout, FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        Ok(Probe {
            target: target.to_path_buf(),
            pid,
            stdout: std::fs::File::from(OwnedFd::from(stdout)),
            eof: false,
            answer: Vec::new(),
            status: None,
            deadline: now + TIMEOUT,
            killed: false,
        })
    }

    pub fn pid(&self) -> Pid {
        self.pid
    }

    pub fn target(&self) -> &Path {
        &self.target
    }

    /// Its stdout, to watch until `readable` says it is at its end.
    pub fn stdout(&self) -> BorrowedFd<'_> {
        self.stdout.as_fd()
    }

    /// When `outcome` has something to do without an event; None once
    /// killed (its exit is the event).
    pub fn deadline(&self) -> Option<Instant> {
        (!self.killed).then_some(self.deadline)
    }

    /// Its stdout is readable: reads what is there. Returns true once at
    /// its end (the caller stops watching it).
    pub fn readable(&mut self) -> bool {
        if self.eof {
            return true;
        }
        let mut chunk = [0u8; 512];
        loop {
            match self.stdout.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) if self.answer.len() < MAX_ANSWER_BYTES => {
                    self.answer.extend_from_slice(&chunk[..n]);
                }
                // Enough for a verdict: the rest is not read.
                Ok(_) => break,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return false,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        self.eof = true;
        true
    }

    /// The reaper found it ended.
    pub fn exited(&mut self, status: ChildStatus) {
        self.status = Some(status);
    }

    /// The verdict once it has ended and its stdout is read (a process
    /// it left behind may hold the pipe open: then at the deadline). At
    /// the deadline a probe still running is killed (not reaped yet, its
    /// pid is still its own) and refused once reaped. None: not decided
    /// yet.
    pub fn outcome(&mut self, now: Instant) -> Option<Result<(), String>> {
        if self.status.is_some() {
            // Ended: whatever it wrote is in the pipe now.
            self.readable();
        }
        let due = now >= self.deadline;
        match self.status {
            Some(_) if self.killed => Some(verdict(&self.target, &self.answer, None)),
            Some(status) if self.eof || due => {
                Some(verdict(&self.target, &self.answer, Some(status)))
            }
            None if due && !self.killed => {
                self.killed = true;
                let _ = nix::sys::signal::kill(self.pid, Signal::SIGKILL);
                None
            }
            _ => None,
        }
    }
}

/// The probe's answer and exit status (None: it did not end in time).
fn verdict(target: &Path, answer: &[u8], status: Option<ChildStatus>) -> Result<(), String> {
    let shown = target.display();
    let Some(status) = status else {
        return Err(format!(
            "{shown} did not answer the upgrade probe within {}s: is it sockhold?",
            TIMEOUT.as_secs()
        ));
    };
    let text = String::from_utf8_lossy(answer);
    let line = text.lines().next().unwrap_or("").trim();
    let Some(versions) = line
        .strip_prefix(PROBE_ANSWER)
        .filter(|rest| rest.starts_with(' '))
    else {
        return Err(format!(
            "{shown} did not answer the upgrade probe: is it sockhold?"
        ));
    };
    if !status.success() {
        return Err(format!(
            "{shown} answered the upgrade probe but did not exit 0 ({status}): is it sockhold?"
        ));
    }
    let read: Vec<u32> = versions
        .split_whitespace()
        .filter_map(|v| v.parse().ok())
        .collect();
    if !read.contains(&state::VERSION) {
        return Err(format!(
            "it reads state versions {}, this sockhold writes {}",
            versions.split_whitespace().collect::<Vec<_>>().join(", "),
            state::VERSION
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target() -> PathBuf {
        PathBuf::from("/opt/sockhold")
    }

    #[test]
    fn a_sockhold_that_reads_this_version_passes() {
        let answer = format!("{PROBE_ANSWER} 1 {}\n", state::VERSION);
        assert_eq!(
            verdict(&target(), answer.as_bytes(), Some(ChildStatus::Exited(0))),
            Ok(())
        );
    }

    #[test]
    fn anything_else_is_refused_with_the_reason() {
        let exited = Some(ChildStatus::Exited(0));
        let cases: [(&[u8], Option<ChildStatus>, &str); 5] = [
            (
                b"",
                exited,
                "did not answer the upgrade probe: is it sockhold?",
            ),
            (
                b"sockhold upgrade-stateful 2\n",
                exited,
                "did not answer the upgrade probe",
            ),
            (
                b"sockhold upgrade-state 99\n",
                exited,
                "it reads state versions 99, this sockhold writes",
            ),
            (
                b"sockhold upgrade-state 2\n",
                Some(ChildStatus::Exited(3)),
                "did not exit 0 (status 3)",
            ),
            (b"sockhold upgrade-state 2\n", None, "within 5s"),
        ];
        for (answer, status, reason) in cases {
            let verdict = verdict(&target(), answer, status).unwrap_err();
            assert!(verdict.contains(reason), "{verdict} / {reason}");
        }
    }
}
