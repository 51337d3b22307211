//! `--pid-file`: sockhold's pid in a file, for `kill -HUP $(cat ...)`, held
//! under an exclusive flock(2) for sockhold's whole life.
//!
//! - Nothing planted in the directory is written through or opened: the
//!   pid goes into a new file with a random name (`O_CREAT|O_EXCL`, which
//!   refuses any existing name, link or FIFO alike), which then takes the
//!   pid file's place whole (link(2) where there is none, rename(2) over
//!   one), so a reader never sees an empty or half-written file.
//! - The new file is locked before it takes the place. An existing pid file
//!   is replaced only while sockhold holds its lock, which it gets only if
//!   no running process holds it (a sockhold that was killed leaves an
//!   unlocked file): a second sockhold with the same path is refused,
//!   naming the holder, instead of taking over the first one's file.
//! - Removed when dropped (at exit, and on a failed start) only if the path
//!   still names that file and it still holds our pid, so that a file
//!   someone has since replaced or rewritten survives; removed before the
//!   lock is let go, so that no other process can lock the file just before
//!   it goes.

use crate::error::{Error, exit};
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::io::Write;
use std::os::linux::fs::MetadataExt;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// How many times the place is tried when another process changes the
/// path in between (each change means some other process made progress).
const ATTEMPTS: usize = 16;

#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
    /// The file at `path`, locked for as long as sockhold runs.
    locked: Flock<File>,
    /// Set once removal has been dealt with.
    done: std::cell::Cell<bool>,
}

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile, Error> {
        let pid = std::process::id();
        let text = path.display().to_string();
        if path.file_name().is_none() {
            return Err(Error::usage(
                "cannot write pid file",
                &text,
                "the path names no file",
                "give a file path such as /run/app.pid",
            ));
        }
        // Refused before anything is created (and checked again in
        // `take_place`, in case it changes meanwhile).
        if let Ok(existing) = std::fs::symlink_metadata(path) {
            refuse_unless_regular(&existing, &text)?;
        }
        let (temp_path, temp) = create_locked_temp(path, pid, &text)?;
        match take_place(path, &temp_path, &text) {
            // The temporary name is gone with the rename.
            Ok(Placed::Renamed) => {}
            // The temporary name is a second name of the pid file.
            Ok(Placed::Linked) => {
                let _ = std::fs::remove_file(&temp_path);
            }
            Err(error) => {
                let _ = std::fs::remove_file(&temp_path);
                return Err(error);
            }
        }
        log::debug!("pid {pid} written to {}", path.display());
        Ok(PidFile {
            path: path.to_owned(),
            pid,
            locked: temp,
            done: std::cell::Cell::new(false),
        })
    }

    /// The pid file an earlier sockhold of this pid wrote and locked
    /// (`upgrade/`): `file` is its open file, whose lock (flock(2) belongs
    /// to the open file, which execve keeps) is still held; taking it
    /// again on the same open file succeeds at once.
    pub fn adopt(path: &Path, file: File) -> Result<PidFile, String> {
        let locked = Flock::lock(file, nix::fcntl::FlockArg::LockExclusiveNonblock)
            .map_err(|(_, errno)| format!("cannot lock the pid file again: {errno}"))?;
        Ok(PidFile {
            path: path.to_owned(),
            pid: std::process::id(),
            locked,
            done: std::cell::Cell::new(false),
        })
    }

    /// Its locked open file, for an upgrade.
    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.locked.as_raw_fd()
    }

    /// Removes the file if the path still names it and it still holds our
    /// pid. After a privilege drop the directory may refuse: that is
    /// logged, not fatal. Only the first call acts.
    pub fn remove(&self) {
        if self.done.replace(true) {
            return;
        }
        let ours = match (
            std::fs::symlink_metadata(&self.path),
            self.locked.metadata(),
        ) {
            (Ok(now), Ok(locked)) => {
                now.st_dev() == locked.st_dev() && now.st_ino() == locked.st_ino()
            }
            _ => false,
        };
        if !ours {
            log::debug!(
                "{} is no longer our pid file; left in place",
                self.path.display()
            );
            return;
        }
        // Read through the fd sockhold holds: at the fd limit, opening the
        // file again would fail and leave it behind.
        let mut buffer = [0u8; 32];
        let content = std::os::unix::fs::FileExt::read_at(&*self.locked, &mut buffer, 0)
            .map(|length| String::from_utf8_lossy(&buffer[..length]).into_owned());
        match content {
            Ok(content) if content.trim() == self.pid.to_string() => {
                if let Err(error) = std::fs::remove_file(&self.path) {
                    crate::listen::log_cannot_remove(&self.path, &error);
                }
            }
            Ok(_) => log::debug!(
                "{} holds another pid now; left in place",
                self.path.display()
            ),
            Err(error) => log::debug!("{} not removed: {error}", self.path.display()),
        }
    }
}

impl Drop for PidFile {
    /// Runs before the fields are dropped: the file goes while it is still
    /// locked.
    fn drop(&mut self) {
        self.remove();
    }
}

/// A new file next to `path` with a random name, locked and holding
/// "PID\n". The name cannot be guessed in advance, and O_EXCL refuses any
/// name that exists, whatever is there: a name taken is tried again.
fn create_locked_temp(path: &Path, pid: u32, text: &str) -> Result<(PathBuf, Flock<File>), Error> {
    let name = path.file_name().unwrap_or_default();
    for attempt in 0..ATTEMPTS {
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{:016x}.tmp", random(attempt)));
        let temp_path = path.with_file_name(temp_name);
        // Readable too: the file is read back at exit (`remove`).
        let created = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temp_path);
        let file = match created {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(error) => return Err(cannot_write(text, io_errno(&error))),
        };
        let fail = |errno: Errno| {
            let _ = std::fs::remove_file(&temp_path);
            cannot_write(text, errno)
        };
        // Nobody else can hold it: it was created just now.
        let mut locked =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| fail(errno))?;
        locked
            .write_all(format!("{pid}\n").as_bytes())
            .and_then(|()| locked.sync_all())
            .map_err(|error| fail(io_errno(&error)))?;
        return Ok((temp_path, locked));
    }
    Err(cannot_write(text, Errno::EEXIST))
}

/// How the new file took the pid file's place.
enum Placed {
    /// As a second name (there was no pid file).
    Linked,
    /// Under its only name (over a pid file nobody held).
    Renamed,
}

/// Puts the file at `temp_path` in the place of `path`, unless a running
/// process holds the file there.
fn take_place(path: &Path, temp_path: &Path, text: &str) -> Result<Placed, Error> {
    for _ in 0..ATTEMPTS {
        let existing = match std::fs::symlink_metadata(path) {
            Ok(meta) => meta,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                // link(2), unlike rename(2), fails if a file has appeared
                // since: then that one is looked at.
                match std::fs::hard_link(temp_path, path) {
                    Ok(()) => return Ok(Placed::Linked),
                    Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => continue,
                    // A filesystem without hard links: rename, which leaves
                    // a moment in which a second sockhold could do the same.
                    Err(error)
                        if matches!(
                            io_errno(&error),
                            Errno::EPERM | Errno::EOPNOTSUPP | Errno::ENOSYS
                        ) =>
                    {
                        return std::fs::rename(temp_path, path)
                            .map(|()| Placed::Renamed)
                            .map_err(|error| cannot_write(text, io_errno(&error)));
                    }
                    Err(error) => return Err(cannot_write(text, io_errno(&error))),
                }
            }
            Err(error) => return Err(cannot_write(text, io_errno(&error))),
        };
        refuse_unless_regular(&existing, text)?;
        // O_NONBLOCK and O_NOFOLLOW: if the path has changed into a FIFO or
        // a link since it was looked at, the open neither hangs nor follows.
        let opened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
            .open(path);
        let file = match opened {
            Ok(file) => file,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => continue,
            Err(error) => return Err(cannot_write(text, io_errno(&error))),
        };
        let meta = file
            .metadata()
            .map_err(|error| cannot_write(text, io_errno(&error)))?;
        if meta.st_dev() != existing.st_dev() || meta.st_ino() != existing.st_ino() {
            continue;
        }
        let old = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(old) => old,
            Err((file, Errno::EWOULDBLOCK)) => return Err(held(path, &file, &meta, text)),
            Err((_, errno)) => return Err(cannot_write(text, errno)),
        };
        // Locked; but if the path names another file by now (its holder
        // removed it at exit, and a new one was made), this lock is on a
        // file that is no longer the pid file.
        match std::fs::symlink_metadata(path) {
            Ok(now) if now.st_dev() == meta.st_dev() && now.st_ino() == meta.st_ino() => {}
            _ => continue,
        }
        log::debug!(
            "replacing the pid file {} that nobody holds",
            path.display()
        );
        let renamed = std::fs::rename(temp_path, path);
        // The old file, now without a name, is let go only after the rename.
        drop(old);
        return renamed
            .map(|()| Placed::Renamed)
            .map_err(|error| cannot_write(text, io_errno(&error)));
    }
    Err(Error::new(
        exit::OS,
        format!(
            "cannot write pid file '{text}': the file kept changing while sockhold tried to replace it (is another sockhold starting with this --pid-file?)"
        ),
    ))
}

/// Only a regular file is a pid file; anything else at the path is refused
/// untouched.
fn refuse_unless_regular(meta: &std::fs::Metadata, text: &str) -> Result<(), Error> {
    let file_type = meta.file_type();
    if file_type.is_file() {
        return Ok(());
    }
    if file_type.is_dir() {
        return Err(Error::usage(
            "cannot write pid file",
            text,
            "it is a directory",
            "give a file path such as /run/app.pid",
        ));
    }
    let what = if file_type.is_symlink() {
        "is a symbolic link"
    } else if file_type.is_fifo() {
        "is a FIFO"
    } else if file_type.is_socket() {
        "is a socket"
    } else {
        "is not a regular file"
    };
    Err(Error::new(
        exit::OS,
        format!(
            "cannot write pid file '{text}': the file exists and {what} (remove it or choose another path)"
        ),
    ))
}

/// The line for a pid file that a running process holds locked.
fn held(path: &Path, file: &File, meta: &std::fs::Metadata, text: &str) -> Error {
    let holder = std::fs::read_to_string("/proc/locks")
        .ok()
        .and_then(|locks| flock_holder(&locks, meta.st_dev(), meta.st_ino()))
        .or_else(|| {
            // Where /proc/locks does not say: a sockhold holding it wrote
            // its pid in it.
            let mut content = String::new();
            std::io::Read::read_to_string(&mut &*file, &mut content).ok()?;
            content.trim().parse::<u32>().ok()
        });
    let holder = match holder {
        Some(pid) => format!("pid {pid}"),
        None => "another process".to_string(),
    };
    log::debug!("{} is locked by {holder}", path.display());
    Error::new(
        exit::OS,
        format!(
            "cannot write pid file '{text}': in use by running {holder} (another sockhold with this --pid-file? stop it first, or choose another path)"
        ),
    )
}

/// The pid holding a flock(2) on the file `device`:`inode`, from the text
/// of /proc/locks (proc(5)): `1: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF`,
/// the device as hexadecimal major:minor. Lines with `->` are processes
/// waiting for a lock, not holding one.
fn flock_holder(locks: &str, device: u64, inode: u64) -> Option<u32> {
    let file = format!(
        "{:02x}:{:02x}:{inode}",
        nix::libc::major(device),
        nix::libc::minor(device)
    );
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        match fields.as_slice() {
            [_, "FLOCK", _, _, pid, id, ..] if *id == file => pid.parse().ok(),
            _ => None,
        }
    })
}

/// An unpredictable number for a temporary name: std's hash keys are
/// seeded from the kernel's random source.
fn random(attempt: usize) -> u64 {
    use std::hash::BuildHasher;
    std::hash::RandomState::new().hash_one((attempt, std::time::SystemTime::now()))
}

fn cannot_write(text: &str, errno: Errno) -> Error {
    let hint = match errno {
        Errno::ENOENT => "the directory does not exist; create it first",
        Errno::EACCES | Errno::EPERM => "check the permissions of the directory",
        Errno::EISDIR => "give a file path such as /run/app.pid",
        _ => "",
    };
    Error::os("cannot write pid file", text, errno, hint)
}

fn io_errno(error: &std::io::Error) -> Errno {
    Errno::from_raw(error.raw_os_error().unwrap_or(Errno::EIO as i32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_flock_holder_is_read_from_proc_locks() {
        let device = nix::libc::makedev(8, 1);
        let locks = "\
1: POSIX  ADVISORY  WRITE 111 08:01:1234 0 EOF
2: FLOCK  ADVISORY  WRITE 4242 08:01:1234 0 EOF
2: -> FLOCK  ADVISORY  WRITE 5151 08:01:1234 0 EOF
3: FLOCK  ADVISORY  WRITE 77 08:01:99 0 EOF
";
        assert_eq!(flock_holder(locks, device, 1234), Some(4242));
        assert_eq!(flock_holder(locks, device, 99), Some(77));
        assert_eq!(flock_holder(locks, device, 5), None);
        assert_eq!(flock_holder(locks, nix::libc::makedev(8, 2), 1234), None);
    }

    #[test]
    fn temporary_names_differ() {
        assert_ne!(random(0), random(0));
    }
}
