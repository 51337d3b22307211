//! Users and groups: resolving `--user`, `--group` and `--socket-owner`
//! names, and dropping sockhold's privileges for good once every socket is
//! bound (so a server can listen on port 80 and still run as `nobody`).
//!
//! The drop happens in sockhold itself, not in each child: children inherit
//! the dropped credentials, and sockhold, which lives as long as the
//! sockets, holds no root privilege that a bug could misuse. Order matters
//! (setgroups and setgid need root, so they come before setuid), and every
//! step is checked afterwards, including that root cannot be regained.

use crate::error::{Error, errno_text, exit};
use crate::listen::SocketOwner;
use nix::errno::Errno;
use nix::unistd::{Gid, Group, Uid, User};

/// Who sockhold becomes after binding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: Uid,
    pub gid: Gid,
    /// What the user wrote for `--user`, for messages.
    pub user_text: String,
}

/// Resolves `--user` (a name or a numeric uid) and `--group` (a name or a
/// numeric gid; default: the user's primary group from the user database).
pub fn resolve(user: &str, group: Option<&str>) -> Result<Credentials, Error> {
    let (uid, primary_gid) = resolve_user(user)?;
    let gid = match group {
        Some(group) => resolve_group(group)?,
        None => primary_gid.ok_or_else(|| {
            Error::usage(
                "cannot use --user",
                user,
                "that uid has no entry in the user database, so no primary group",
                "give --group too",
            )
        })?,
    };
    Ok(Credentials {
        uid,
        gid,
        user_text: user.to_string(),
    })
}

/// Parses `--socket-owner USER[:GROUP]` with chown(1)'s meaning: `USER`
/// changes the owner only, `USER:GROUP` both, `:GROUP` the group only.
pub fn resolve_socket_owner(text: &str) -> Result<SocketOwner, Error> {
    let (user, group) = match text.split_once(':') {
        Some((user, group)) => (user, Some(group)),
        None => (text, None),
    };
    let uid = match user {
        "" => None,
        user => Some(resolve_user(user)?.0),
    };
    let gid = match group {
        None | Some("") => None,
        Some(group) => Some(resolve_group(group)?),
    };
    if uid.is_none() && gid.is_none() {
        return Err(Error::usage(
            "cannot use --socket-owner",
            text,
            "names neither a user nor a group",
            "write USER, USER:GROUP or :GROUP",
        ));
    }
    Ok(SocketOwner { uid, gid })
}

/// A user name or number → its uid and, when the user database knows it,
/// its primary group.
fn resolve_user(text: &str) -> Result<(Uid, Option<Gid>), Error> {
    let lookup_failed = |errno: Errno| {
        Error::os(
            "cannot look up user",
            text,
            errno,
            "check /etc/passwd and nsswitch.conf",
        )
    };
    if let Ok(number) = text.parse::<u32>() {
        let uid = Uid::from_raw(number);
        let entry = User::from_uid(uid).map_err(lookup_failed)?;
        return Ok((uid, entry.map(|user| user.gid)));
    }
    match User::from_name(text).map_err(lookup_failed)? {
        Some(user) => Ok((user.uid, Some(user.gid))),
        None => Err(Error::usage(
            "unknown user",
            text,
            "no such user in the user database",
            "give an existing user name or a numeric uid",
        )),
    }
}

fn resolve_group(text: &str) -> Result<Gid, Error> {
    if let Ok(number) = text.parse::<u32>() {
        return Ok(Gid::from_raw(number));
    }
    let lookup_failed = |errno: Errno| {
        Error::os(
            "cannot look up group",
            text,
            errno,
            "check /etc/group and nsswitch.conf",
        )
    };
    match Group::from_name(text).map_err(lookup_failed)? {
        Some(group) => Ok(group.gid),
        None => Err(Error::usage(
            "unknown group",
            text,
            "no such group in the group database",
            "give an existing group name or a numeric gid",
        )),
    }
}

/// Becomes `target` for good: no supplementary groups, then real,
/// effective and saved gid, then real, effective and saved uid (setresuid,
/// so that no saved uid 0 lets root come back), then checks the result.
/// Any failure is fatal (exit 77): carrying on with more privilege than
/// asked for is worse than not starting.
pub fn drop_to(target: &Credentials) -> Result<(), Error> {
    let refuse = |step: &str, reason: String| {
        Error::new(
            exit::PERMISSION,
            format!(
                "cannot drop privileges to '{}': {step}: {reason} (run sockhold as root to use --user, or leave --user out)",
                target.user_text
            ),
        )
    };
    let (uid, gid) = (target.uid, target.gid);
    if already(target) {
        log::debug!("already running as uid {uid} gid {gid}; nothing to drop");
        return Ok(());
    }
    // The supplementary groups are root's until now (e.g. `disk`); they go
    // first, while we still may change them. The target user's own
    // supplementary groups from /etc/group are not taken on.
    nix::unistd::setgroups(&[]).map_err(|e| refuse("setgroups", errno_text(e)))?;
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| refuse("setresgid", errno_text(e)))?;
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| refuse("setresuid", errno_text(e)))?;
    if !already(target) {
        return Err(refuse(
            "check",
            "the process credentials are not the ones asked for".to_string(),
        ));
    }
    if !uid.is_root() {
        // The drop must be for good: regaining root has to fail now.
        if nix::unistd::setuid(Uid::from_raw(0)).is_ok() {
            return Err(refuse("check", "setuid(0) still succeeds".to_string()));
        }
        if gid.as_raw() != 0 && nix::unistd::setgid(Gid::from_raw(0)).is_ok() {
            return Err(refuse("check", "setgid(0) still succeeds".to_string()));
        }
    }
    log::info!("running as uid {uid} gid {gid} (no supplementary groups)");
    Ok(())
}

/// Whether every uid and gid of the process is the target's and there are
/// no supplementary groups.
fn already(target: &Credentials) -> bool {
    let uids = nix::unistd::getresuid();
    let gids = nix::unistd::getresgid();
    let groups = nix::unistd::getgroups();
    match (uids, gids, groups) {
        (Ok(uids), Ok(gids), Ok(groups)) => {
            [uids.real, uids.effective, uids.saved]
                .iter()
                .all(|id| *id == target.uid)
                && [gids.real, gids.effective, gids.saved]
                    .iter()
                    .all(|id| *id == target.gid)
                && groups.iter().all(|group| *group == target.gid)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numeric_and_named_users_resolve() {
        let root = resolve("root", None).unwrap();
        assert_eq!((root.uid.as_raw(), root.gid.as_raw()), (0, 0));
        let by_number = resolve("0", Some("0")).unwrap();
        assert_eq!(by_number.uid, root.uid);
        assert!(resolve("no-such-user-here", None).is_err());
        assert_eq!(
            resolve("root", Some("no-such-group-here"))
                .unwrap_err()
                .exit_status,
            64
        );
    }

    #[test]
    fn socket_owner_follows_chown_syntax() {
        let owner = resolve_socket_owner("root").unwrap();
        assert_eq!((owner.uid, owner.gid), (Some(Uid::from_raw(0)), None));
        let both = resolve_socket_owner("0:0").unwrap();
        assert_eq!(both.gid, Some(Gid::from_raw(0)));
        let group_only = resolve_socket_owner(":0").unwrap();
        assert_eq!(
            (group_only.uid, group_only.gid),
            (None, Some(Gid::from_raw(0)))
        );
        assert!(resolve_socket_owner(":").is_err());
    }
}
