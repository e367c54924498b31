//! The identity a container's process really has, read from the kernel
//! (`/proc/<pid>/status`) rather than from the spec, as containerd 2.x
//! reports it in `ContainerStatus.user`: what runc made of the user, the
//! group and the supplementary groups is what kubelet shows.

use serde::{Deserialize, Serialize};

/// `/proc/<pid>/status` is a few kilobytes; more is not a status file.
const MAX_STATUS_BYTES: usize = 64 << 10;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessIdentity {
    pub uid: u32,
    pub gid: u32,
    /// As the kernel lists them (sorted, since setgroups sorts them).
    pub supplemental_groups: Vec<u32>,
}

impl ProcessIdentity {
    /// Parses `/proc/<pid>/status`: the real IDs of the `Uid:` and `Gid:`
    /// lines and the `Groups:` line.
    pub fn parse_status(status: &str) -> Option<Self> {
        if status.len() > MAX_STATUS_BYTES {
            return None;
        }
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        };
        let first_id = |name: &str| field(name)?.split_whitespace().next()?.parse().ok();
        let supplemental_groups = field("Groups")?
            .split_whitespace()
            .map(|gid| gid.parse().ok())
            .collect::<Option<Vec<u32>>>()?;
        Some(Self {
            uid: first_id("Uid")?,
            gid: first_id("Gid")?,
            supplemental_groups,
        })
    }

    /// The identity as a process in a pod's user namespace sees it (the
    /// kernel shows the reader's view: host IDs, to the daemon).
    pub fn in_userns(self, mappings: &crate::idmap::UsernsMappings) -> Self {
        let gid = |g: u32| mappings.gids.container_of(g);
        Self {
            uid: mappings.uids.container_of(self.uid),
            gid: gid(self.gid),
            supplemental_groups: self.supplemental_groups.into_iter().map(gid).collect(),
        }
    }

    /// [`Self::in_userns`] for a process of a pod with a user namespace;
    /// the identity as it is otherwise.
    pub fn seen_from(self, userns: Option<&crate::idmap::UsernsMappings>) -> Self {
        match userns {
            Some(mappings) => self.in_userns(mappings),
            None => self,
        }
    }

    /// The identity of process `pid`; `None` when it is gone or its status
    /// does not parse.
    pub async fn of_process(pid: i32) -> Option<Self> {
        let status = tokio::fs::read_to_string(format!("/proc/{pid}/status"))
            .await
            .ok()?;
        Self::parse_status(&status)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn real_ids_and_groups_are_read() {
        let status = "Name:\tsh\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1002\t1003\nGid:\t50\t51\t52\t53\nFDSize:\t64\nGroups:\t50 1234 50000 \nNStgid:\t1\n";
        assert_eq!(
            ProcessIdentity::parse_status(status),
            Some(ProcessIdentity {
                uid: 1000,
                gid: 50,
                supplemental_groups: vec![50, 1234, 50000],
            })
        );
        let no_groups = "Uid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
        assert_eq!(
            ProcessIdentity::parse_status(no_groups)
                .unwrap()
                .supplemental_groups,
            Vec::<u32>::new()
        );
        assert_eq!(ProcessIdentity::parse_status("Uid:\tx\n"), None);
        assert_eq!(ProcessIdentity::parse_status(""), None);
    }

    #[tokio::test]
    async fn this_process_is_read() {
        let me = ProcessIdentity::of_process(std::process::id() as i32)
            .await
            .unwrap();
        assert_eq!(me.uid, nix::unistd::getuid().as_raw());
        assert_eq!(me.gid, nix::unistd::getgid().as_raw());
    }
}
