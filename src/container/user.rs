//! The user a container runs as, with containerd's CRI precedence:
//! `run_as_username`, else `run_as_user` (plus `run_as_group`), else the
//! image's `User`, else root. Names are looked up in the image's own
//! /etc/passwd and /etc/group.
//!
//! The rootfs is untrusted: its /etc/passwd may be a symlink to the host's
//! /etc/shadow, or a FIFO that would block a read forever. Both files are
//! opened with `openat2(RESOLVE_IN_ROOT)`, so every symlink resolves inside
//! the rootfs, and only regular files are read, up to a size cap.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{open, openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;

use crate::api;
use crate::container::spec::SpecError;

/// Far larger than any real passwd or group file.
const MAX_USER_DB_BYTES: u64 = 16 << 20;
/// runc refuses ids above `i32::MAX`.
const MAX_ID: u32 = i32::MAX as u32;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    /// Sorted, without duplicates, including `gid` (as containerd does).
    pub additional_gids: Vec<u32>,
    /// From /etc/passwd when the user has an entry there.
    pub home: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// Resolves who the container's process runs as. An unknown user or group
/// *name* is an error naming it; an unknown numeric uid is fine (gid 0).
pub fn resolve_user(
    rootfs: &Path,
    image_user: &str,
    security: Option<&api::LinuxContainerSecurityContext>,
) -> Result<ResolvedUser, SpecError> {
    let user_string = requested_user(image_user, security)?;
    let (user_part, group_part) = match user_string.split(':').collect::<Vec<_>>()[..] {
        [user] => (user, None),
        [user, group] => (user, Some(group)),
        _ => {
            return Err(invalid_user(
                &user_string,
                "use user, uid, user:group or uid:gid",
            ))
        }
    };
    if user_part.is_empty() || group_part == Some("") {
        return Err(invalid_user(&user_string, "empty user or group"));
    }

    let database = UserDatabase::new(rootfs);
    let passwd = database.passwd()?;
    let entry = match parse_id(user_part, &user_string)? {
        Some(uid) => passwd.iter().find(|entry| entry.uid == uid).cloned(),
        None => Some(
            passwd
                .iter()
                .find(|entry| entry.name == user_part)
                .cloned()
                .ok_or_else(|| SpecError::UnknownUser(user_part.to_string()))?,
        ),
    };
    let uid = match &entry {
        Some(entry) => entry.uid,
        None => parse_id(user_part, &user_string)?.unwrap_or(0),
    };

    let groups = database.group()?;
    let gid = match group_part {
        None => entry.as_ref().map_or(0, |entry| entry.gid),
        Some(group) => match parse_id(group, &user_string)? {
            Some(gid) => gid,
            None => groups
                .iter()
                .find(|entry| entry.name == group)
                .map(|entry| entry.gid)
                .ok_or_else(|| SpecError::UnknownGroup(group.to_string()))?,
        },
    };

    let mut additional_gids = vec![gid];
    if merges_image_groups(security)? {
        if let Some(name) = entry.as_ref().map(|entry| &entry.name) {
            // Groups listing the user as a member, but not one named after
            // the user (containerd's rule).
            additional_gids.extend(
                groups
                    .iter()
                    .filter(|group| &group.name != name && group.members.contains(name))
                    .map(|group| group.gid),
            );
        }
    }
    for &group in security.map_or(&[][..], |s| &s.supplemental_groups[..]) {
        additional_gids.push(
            u32::try_from(group)
                .ok()
                .filter(|gid| *gid <= MAX_ID)
                .ok_or_else(|| {
                    invalid_user(&group.to_string(), "supplemental group out of range")
                })?,
        );
    }
    additional_gids.sort_unstable();
    additional_gids.dedup();

    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids,
        home: entry.map(|entry| entry.home),
    })
}

/// The user string in image-config syntax, from the security context first.
fn requested_user(
    image_user: &str,
    security: Option<&api::LinuxContainerSecurityContext>,
) -> Result<String, SpecError> {
    let Some(security) = security else {
        return Ok(default_user(image_user));
    };
    let user = if !security.run_as_username.is_empty() {
        Some(security.run_as_username.clone())
    } else {
        security
            .run_as_user
            .as_ref()
            .map(|uid| uid.value.to_string())
    };
    let group = security
        .run_as_group
        .as_ref()
        .map(|gid| gid.value.to_string());
    match (user, group) {
        (Some(user), Some(group)) => Ok(format!("{user}:{group}")),
        (Some(user), None) => Ok(user),
        (None, Some(group)) => Err(invalid_user(
            &group,
            "run_as_group needs run_as_user or run_as_username",
        )),
        (None, None) => Ok(default_user(image_user)),
    }
}

fn default_user(image_user: &str) -> String {
    if image_user.is_empty() {
        "0".to_string()
    } else {
        image_user.to_string()
    }
}

fn merges_image_groups(
    security: Option<&api::LinuxContainerSecurityContext>,
) -> Result<bool, SpecError> {
    let policy = security.map_or(0, |s| s.supplemental_groups_policy);
    match api::SupplementalGroupsPolicy::try_from(policy) {
        Ok(api::SupplementalGroupsPolicy::Merge) => Ok(true),
        Ok(api::SupplementalGroupsPolicy::Strict) => Ok(false),
        Err(_) => Err(SpecError::InvalidValue {
            field: "supplemental_groups_policy",
            value: policy.to_string(),
            reason: "use Merge or Strict".to_string(),
        }),
    }
}

/// `Some(id)` for a number, `None` for a name.
fn parse_id(text: &str, whole: &str) -> Result<Option<u32>, SpecError> {
    if !text.bytes().all(|b| b.is_ascii_digit()) {
        if text.starts_with('-') && text[1..].bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid_user(whole, "ids must not be negative"));
        }
        return Ok(None);
    }
    match text.parse::<u32>() {
        Ok(id) if id <= MAX_ID => Ok(Some(id)),
        _ => Err(invalid_user(whole, "id out of range")),
    }
}

fn invalid_user(value: &str, reason: &str) -> SpecError {
    SpecError::InvalidValue {
        field: "user",
        value: value.to_string(),
        reason: reason.to_string(),
    }
}

/// /etc/passwd and /etc/group of one rootfs, read on demand.
struct UserDatabase<'a> {
    rootfs: &'a Path,
}

impl UserDatabase<'_> {
    fn new(rootfs: &Path) -> UserDatabase<'_> {
        UserDatabase { rootfs }
    }

    fn passwd(&self) -> Result<Vec<PasswdEntry>, SpecError> {
        Ok(parse_passwd(&self.read("etc/passwd")?))
    }

    fn group(&self) -> Result<Vec<GroupEntry>, SpecError> {
        Ok(parse_group(&self.read("etc/group")?))
    }

    /// The file's text, or "" when the image has none.
    fn read(&self, relative: &str) -> Result<String, SpecError> {
        let path = self.rootfs.join(relative);
        let error = |source: io::Error| SpecError::ReadImageFile {
            path: path.clone(),
            source,
        };
        let root = open(
            self.rootfs,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|errno| error(errno.into()))?;
        let how = OpenHow::new()
            // O_NONBLOCK: opening a FIFO must not wait for a writer.
            .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        let fd: OwnedFd = match openat2(&root, relative, how) {
            Ok(fd) => fd,
            Err(Errno::ENOENT | Errno::ENOTDIR) => return Ok(String::new()),
            Err(errno) => return Err(error(errno.into())),
        };
        let file = File::from(fd);
        let metadata = file.metadata().map_err(error)?;
        if !metadata.is_file() {
            return Err(error(io::Error::new(
                io::ErrorKind::InvalidData,
                "not a regular file",
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_USER_DB_BYTES)
            .read_to_end(&mut bytes)
            .map_err(error)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }
}

/// `name:password:uid:gid:gecos:home:shell`; malformed lines are skipped,
/// as libc does.
fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    records(text)
        .filter_map(|fields| {
            Some(PasswdEntry {
                name: fields.first()?.to_string(),
                uid: fields.get(2)?.parse().ok()?,
                gid: fields.get(3)?.parse().ok()?,
                home: fields.get(5).map_or(String::new(), |home| home.to_string()),
            })
        })
        .collect()
}

/// `name:password:gid:member,member`.
fn parse_group(text: &str) -> Vec<GroupEntry> {
    records(text)
        .filter_map(|fields| {
            Some(GroupEntry {
                name: fields.first()?.to_string(),
                gid: fields.get(2)?.parse().ok()?,
                members: fields
                    .get(3)
                    .map(|members| {
                        members
                            .split(',')
                            .map(str::trim)
                            .filter(|member| !member.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

fn records(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| line.split(':').collect::<Vec<_>>())
        .filter(|fields| !fields[0].is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\n\
        # comment\n\
        daemon:x:1:1::/usr/sbin:/usr/sbin/nologin\n\
        broken line\n\
        app:x:1000:1000:App:/home/app:/bin/sh\n\
        web:x:33:33::/var/www:/bin/sh\n";
    const GROUP: &str = "root:x:0:\n\
        wheel:x:10:root,app\n\
        audio:x:29:app , web\n\
        app:x:1000:app\n\
        staff:x:50:\n";

    fn rootfs() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("etc")).unwrap();
        fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        fs::write(dir.path().join("etc/group"), GROUP).unwrap();
        dir
    }

    fn context(
        user: Option<i64>,
        username: &str,
        group: Option<i64>,
        supplemental: &[i64],
        strict: bool,
    ) -> api::LinuxContainerSecurityContext {
        api::LinuxContainerSecurityContext {
            run_as_user: user.map(|value| api::Int64Value { value }),
            run_as_username: username.into(),
            run_as_group: group.map(|value| api::Int64Value { value }),
            supplemental_groups: supplemental.to_vec(),
            supplemental_groups_policy: if strict {
                api::SupplementalGroupsPolicy::Strict as i32
            } else {
                api::SupplementalGroupsPolicy::Merge as i32
            },
            ..Default::default()
        }
    }

    fn resolved(uid: u32, gid: u32, additional: &[u32], home: Option<&str>) -> ResolvedUser {
        ResolvedUser {
            uid,
            gid,
            additional_gids: additional.to_vec(),
            home: home.map(str::to_string),
        }
    }

    #[test]
    fn precedence_and_lookups() {
        let root = rootfs();
        let cases: Vec<(
            &str,
            &str,
            Option<api::LinuxContainerSecurityContext>,
            ResolvedUser,
        )> = vec![
            (
                "no user at all",
                "",
                None,
                resolved(0, 0, &[0, 10], Some("/root")),
            ),
            (
                "image user name",
                "app",
                None,
                resolved(1000, 1000, &[10, 29, 1000], Some("/home/app")),
            ),
            (
                "image uid",
                "33",
                None,
                resolved(33, 33, &[29, 33], Some("/var/www")),
            ),
            (
                "image uid:gid",
                "1000:50",
                None,
                resolved(1000, 50, &[10, 29, 50], Some("/home/app")),
            ),
            (
                "image name:group",
                "web:staff",
                None,
                resolved(33, 50, &[29, 50], Some("/var/www")),
            ),
            ("unknown uid", "4242", None, resolved(4242, 0, &[0], None)),
            (
                "unknown uid:gid",
                "4242:7",
                None,
                resolved(4242, 7, &[7], None),
            ),
            (
                "run_as_user beats the image",
                "app",
                Some(context(Some(33), "", None, &[], false)),
                resolved(33, 33, &[29, 33], Some("/var/www")),
            ),
            (
                "run_as_username beats run_as_user",
                "",
                Some(context(Some(33), "app", None, &[], false)),
                resolved(1000, 1000, &[10, 29, 1000], Some("/home/app")),
            ),
            (
                "run_as_group",
                "",
                Some(context(Some(1000), "", Some(5), &[], false)),
                resolved(1000, 5, &[5, 10, 29], Some("/home/app")),
            ),
            (
                "supplemental groups merge",
                "",
                Some(context(Some(1000), "", None, &[2000, 10], false)),
                resolved(1000, 1000, &[10, 29, 1000, 2000], Some("/home/app")),
            ),
            (
                "strict policy ignores /etc/group",
                "",
                Some(context(Some(1000), "", None, &[2000], true)),
                resolved(1000, 1000, &[1000, 2000], Some("/home/app")),
            ),
        ];
        for (name, image_user, security, expected) in cases {
            let got = resolve_user(root.path(), image_user, security.as_ref());
            assert_eq!(got.as_ref().ok(), Some(&expected), "{name}: {got:?}");
        }
    }

    #[test]
    fn invalid_users_are_rejected() {
        let root = rootfs();
        let unknown = resolve_user(root.path(), "nobody-here", None).unwrap_err();
        assert!(matches!(&unknown, SpecError::UnknownUser(n) if n == "nobody-here"));
        assert!(unknown.to_string().contains("nobody-here"));
        assert_eq!(
            crate::error::Classify::kind(&unknown),
            crate::error::Kind::InvalidArgument
        );
        let by_username = context(None, "ghost", None, &[], false);
        assert!(matches!(
            resolve_user(root.path(), "", Some(&by_username)),
            Err(SpecError::UnknownUser(n)) if n == "ghost"
        ));
        assert!(matches!(
            resolve_user(root.path(), "app:nogroup", None),
            Err(SpecError::UnknownGroup(g)) if g == "nogroup"
        ));
        let group_only = context(None, "", Some(5), &[], false);
        assert!(resolve_user(root.path(), "app", Some(&group_only)).is_err());
        let negative = context(Some(-1), "", None, &[], false);
        assert!(resolve_user(root.path(), "", Some(&negative)).is_err());
        for bad in ["a:b:c", ":5", "app:", "4294967296", "2147483648"] {
            assert!(resolve_user(root.path(), bad, None).is_err(), "{bad}");
        }
        let bad_policy = api::LinuxContainerSecurityContext {
            supplemental_groups_policy: 7,
            ..Default::default()
        };
        assert!(resolve_user(root.path(), "", Some(&bad_policy)).is_err());
    }

    #[test]
    fn image_without_user_files() {
        let empty = tempfile::tempdir().unwrap();
        assert_eq!(
            resolve_user(empty.path(), "", None).unwrap(),
            resolved(0, 0, &[0], None)
        );
        assert_eq!(
            resolve_user(empty.path(), "99:98", None).unwrap(),
            resolved(99, 98, &[98], None)
        );
        assert!(matches!(
            resolve_user(empty.path(), "app", None),
            Err(SpecError::UnknownUser(_))
        ));
    }

    #[test]
    fn symlinks_resolve_inside_the_rootfs() {
        // An absolute symlink to a host file must be read inside the rootfs.
        let host = tempfile::tempdir().unwrap();
        let host_secret = host.path().join("shadow");
        fs::write(&host_secret, "evil:x:0:0::/:/bin/sh\n").unwrap();

        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        std::os::unix::fs::symlink(&host_secret, root.path().join("etc/passwd")).unwrap();
        // Not found inside the rootfs: like an image without /etc/passwd.
        assert!(matches!(
            resolve_user(root.path(), "evil", None),
            Err(SpecError::UnknownUser(_))
        ));

        // The same absolute target, present inside the rootfs, is what is read.
        let inside = root.path().join(host_secret.strip_prefix("/").unwrap());
        fs::create_dir_all(inside.parent().unwrap()).unwrap();
        fs::write(&inside, "app:x:1234:1234::/home/app:/bin/sh\n").unwrap();
        assert_eq!(resolve_user(root.path(), "app", None).unwrap().uid, 1234);
        assert!(resolve_user(root.path(), "evil", None).is_err());

        // Climbing with ../ stops at the rootfs too.
        fs::remove_file(root.path().join("etc/passwd")).unwrap();
        let climbing = format!("../../../../../../../..{}", host_secret.display());
        std::os::unix::fs::symlink(climbing, root.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve_user(root.path(), "app", None).unwrap().uid, 1234);
        assert!(resolve_user(root.path(), "evil", None).is_err());
    }

    #[test]
    fn special_files_are_not_read() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("etc")).unwrap();
        nix::unistd::mkfifo(
            &root.path().join("etc/passwd"),
            Mode::from_bits_truncate(0o644),
        )
        .unwrap();
        let err = resolve_user(root.path(), "app", None).unwrap_err();
        assert!(matches!(err, SpecError::ReadImageFile { .. }), "{err:?}");
        assert_eq!(
            crate::error::Classify::kind(&err),
            crate::error::Kind::InvalidArgument
        );
    }

    #[test]
    fn parsers_skip_malformed_lines() {
        let entries = parse_passwd("a:x:1:2::/h:/s\n:x:3:3::/:\nb:x:notanumber:1::/:\nc:x:5:6\n");
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[1].home, "");
        let groups = parse_group("g:x:7:\nh:x:8\n");
        assert_eq!(groups[0].members, Vec::<String>::new());
        assert_eq!(groups[1].gid, 8);
    }
}
