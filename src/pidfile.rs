//! `--pid-file`: sockhold's pid in a file, for `kill -HUP $(cat ...)`.
//!
//! Written atomically (a temporary file in the same directory, then
//! rename(2)), so a reader never sees an empty or half-written file; removed
//! at exit only if it still holds our pid, so that a newer sockhold's file
//! survives an older one's exit.

use crate::error::Error;
use nix::errno::Errno;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    pid: u32,
}

impl PidFile {
    pub fn write(path: &Path) -> Result<PidFile, Error> {
        let pid = std::process::id();
        let text = path.display().to_string();
        let fail = |error: std::io::Error| {
            let errno = Errno::from_raw(error.raw_os_error().unwrap_or(Errno::EIO as i32));
            let hint = match errno {
                Errno::ENOENT => "the directory does not exist; create it first",
                Errno::EACCES | Errno::EPERM => "check the permissions of the directory",
                _ => "",
            };
            Error::os("cannot write pid file", &text, errno, hint)
        };
        let Some(name) = path.file_name() else {
            return Err(Error::usage(
                "cannot write pid file",
                &text,
                "the path names no file",
                "give a file path such as /run/app.pid",
            ));
        };
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{pid}.tmp"));
        let temp = path.with_file_name(temp_name);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o644)
            // Never write through a link planted at our temporary name.
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(&temp)
            .and_then(|mut file| {
                file.write_all(format!("{pid}\n").as_bytes())?;
                file.sync_all()
            })
            .and_then(|()| std::fs::rename(&temp, path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(fail(error));
        }
        log::debug!("pid {pid} written to {}", path.display());
        Ok(PidFile {
            path: path.to_owned(),
            pid,
        })
    }

    /// Removes the file if it still holds our pid. After a privilege drop
    /// the directory may refuse: that is logged, not fatal.
    pub fn remove(&self) {
        match std::fs::read_to_string(&self.path) {
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
