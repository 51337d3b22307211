//! Processes that children leave behind. As child subreaper (or PID 1),
//! sockhold inherits every process orphaned below it: a server's workers
//! whose master exited, a daemonized helper. While sockhold runs it only
//! reaps them; when it exits it stops them the way it stops a generation,
//! so that nothing it started outlives it (as systemd does for a unit's
//! control group, and the kernel for a PID namespace's init).

use nix::unistd::Pid;

/// The live children of `parent`, found in /proc (each process's parent
/// pid): the ones to signal. Zombies are left out: they are gone already
/// and only wait to be reaped. Unreaped children cannot have their pids
/// reused, so signalling what this returns never hits a stranger.
pub fn children_of(parent: Pid) -> Vec<Pid> {
    children_where(parent, |state| state != 'Z')
}

/// Every unreaped child of `parent`, zombies included: what must be gone
/// before sockhold may say that nothing it started is left. (A zombie
/// that sockhold exits without reaping is handed to the next reaper up,
/// which in a container may never reap it.)
pub fn unreaped_children_of(parent: Pid) -> Vec<Pid> {
    children_where(parent, |_| true)
}

fn children_where(parent: Pid, keep: impl Fn(char) -> bool) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut children: Vec<Pid> = entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name();
            let pid: i32 = name.to_str()?.parse().ok()?;
            let stat = crate::readiness::observer::read_proc(format!("/proc/{pid}/stat")).ok()?;
            let (state, ppid) = parse_stat(&stat)?;
            (ppid == parent.as_raw() && keep(state)).then(|| Pid::from_raw(pid))
        })
        .collect();
    children.sort();
    children
}

/// State and parent pid from /proc/PID/stat: `pid (comm) S ppid ...`,
/// where comm may itself contain spaces and parentheses.
fn parse_stat(stat: &str) -> Option<(char, i32)> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_comm.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let ppid = fields.next()?.parse().ok()?;
    Some((state, ppid))
}

/// When a process started, in clock ticks since boot (/proc/PID/stat field
/// 22): to tell processes born after a generation from older ones.
pub fn start_ticks(pid: Pid) -> Option<u64> {
    let stat = crate::readiness::observer::read_proc(format!("/proc/{pid}/stat")).ok()?;
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Fields after comm start at field 3 (state); 22 is the 20th of them.
    after_comm.split_whitespace().nth(19)?.parse().ok()
}

/// `pids 12 34 56` for a log line.
pub fn describe(pids: &[Pid]) -> String {
    let list: Vec<String> = pids.iter().map(|pid| pid.to_string()).collect();
    let noun = if pids.len() == 1 { "pid" } else { "pids" };
    format!("{noun} {}", list.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_with_parentheses_and_spaces_in_the_name() {
        let stat = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 ...";
        assert_eq!(parse_stat(stat), Some(('S', 17)));
        assert_eq!(parse_stat("1 (init) Z 0 1 1"), Some(('Z', 0)));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn finds_its_own_child_and_not_others() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("run sleep");
        let pid = Pid::from_raw(child.id() as i32);
        assert!(children_of(Pid::this()).contains(&pid));
        assert!(!children_of(Pid::from_raw(1)).contains(&pid));
        child.kill().unwrap();
        // Waits for its end without reaping it (WNOWAIT): a zombie now.
        use nix::sys::wait::{Id, WaitPidFlag, waitid};
        waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT).unwrap();
        assert!(!children_of(Pid::this()).contains(&pid));
        assert!(unreaped_children_of(Pid::this()).contains(&pid));
        child.wait().unwrap();
        assert!(!unreaped_children_of(Pid::this()).contains(&pid));
    }

    #[test]
    fn a_child_starts_no_earlier_than_its_parent() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .expect("run sleep");
        let pid = Pid::from_raw(child.id() as i32);
        let parent = start_ticks(Pid::this()).unwrap();
        assert!(start_ticks(pid).unwrap() >= parent);
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn describes_pids_for_the_log() {
        assert_eq!(describe(&[Pid::from_raw(7)]), "pid 7");
        assert_eq!(describe(&[Pid::from_raw(7), Pid::from_raw(9)]), "pids 7 9");
    }
}
