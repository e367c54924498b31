//! Cgroup hierarchies: which layout the host uses (v1, hybrid, v2), where a
//! container's cgroup lives for each controller, and readers for its files.
//!
//! Everything that parses kernel text is a pure function, and every reader
//! takes the mount points found in a mountinfo text, so tests run on
//! temporary directories filled with fixture files. Stats readers (memory,
//! cpu, pids) belong next to [`Hierarchies::oom_killed`]: locate the
//! controller directory with [`Hierarchies::locate`], then parse its files
//! with [`parse_flat_keyed`] or [`parse_single_value`].

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::error::{IoError, IoResultExt};

const MOUNTINFO: &str = "/proc/self/mountinfo";

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("no cgroup filesystem is mounted (according to {0})")]
    NotMounted(PathBuf),
    #[error("{path}: no integer value for {key:?}")]
    BadValue { path: PathBuf, key: String },
}

impl crate::error::Classify for CgroupError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Internal
    }
}

/// How the host mounts cgroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Only v1 hierarchies, one per controller (or co-mounted group).
    V1,
    /// v1 controllers plus a controller-less v2 hierarchy at `unified`
    /// (systemd's "hybrid" mode): limits and stats come from v1.
    Hybrid { unified: PathBuf },
    /// A single v2 hierarchy.
    V2,
}

/// Which cgroup version a located directory belongs to; decides which
/// file names and formats apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    V1,
    V2,
}

/// The controllers Wharf reads or writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Cpu,
    Cpuacct,
    Cpuset,
    Pids,
    Blkio,
    Hugetlb,
}

impl Controller {
    /// Name in v1 mount options and in `cgroup.controllers` (v2 calls
    /// blkio "io"; cpuacct has no v2 counterpart).
    fn v1_name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
            Controller::Cpuacct => "cpuacct",
            Controller::Cpuset => "cpuset",
            Controller::Pids => "pids",
            Controller::Blkio => "blkio",
            Controller::Hugetlb => "hugetlb",
        }
    }
}

/// Controller names that may appear among a v1 mount's super options.
const V1_CONTROLLERS: &[&str] = &[
    "blkio",
    "cpu",
    "cpuacct",
    "cpuset",
    "devices",
    "freezer",
    "hugetlb",
    "memory",
    "misc",
    "net_cls",
    "net_prio",
    "perf_event",
    "pids",
    "rdma",
];

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// Where it is mounted.
    mount_point: PathBuf,
    /// Which cgroup of the hierarchy the mount shows (not `/` inside a
    /// cgroup namespace or for a bind mount of a sub-tree).
    root: PathBuf,
    /// v1 controllers bound to it; empty for v2 and named v1 hierarchies.
    controllers: Vec<String>,
}

impl Mount {
    /// The directory of the hierarchy's cgroup `cgroup` (an absolute path
    /// from the hierarchy root, as the cgroupfs driver writes it).
    fn dir_of(&self, cgroup: &Path) -> PathBuf {
        let relative = cgroup.strip_prefix(&self.root).unwrap_or(cgroup);
        let mut dir = self.mount_point.clone();
        for part in relative.components() {
            if let Component::Normal(name) = part {
                dir.push(name);
            }
        }
        dir
    }
}

/// A controller's directory for one cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupDir {
    pub path: PathBuf,
    pub version: Version,
}

/// The cgroup hierarchies mounted on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchies {
    layout: Layout,
    v1: Vec<Mount>,
    v2: Option<Mount>,
}

impl Hierarchies {
    /// Reads `/proc/self/mountinfo`.
    pub fn detect() -> Result<Self, CgroupError> {
        let path = Path::new(MOUNTINFO);
        let text = fs::read_to_string(path).at("reading", path)?;
        Self::from_mountinfo(&text).ok_or_else(|| CgroupError::NotMounted(path.to_path_buf()))
    }

    /// `None` when the text lists no cgroup mount at all.
    pub fn from_mountinfo(mountinfo: &str) -> Option<Self> {
        let mut v1 = Vec::new();
        let mut v2: Option<Mount> = None;
        for line in mountinfo.lines() {
            let Some(entry) = MountInfoLine::parse(line) else {
                continue;
            };
            let mount = Mount {
                mount_point: PathBuf::from(unescape_mountinfo(entry.mount_point)),
                root: PathBuf::from(unescape_mountinfo(entry.root)),
                controllers: Vec::new(),
            };
            match entry.fs_type {
                "cgroup" => {
                    let controllers = entry
                        .super_options
                        .split(',')
                        .filter(|option| V1_CONTROLLERS.contains(option))
                        .map(str::to_owned)
                        .collect();
                    v1.push(Mount {
                        controllers,
                        ..mount
                    });
                }
                // The first cgroup2 mount wins: later ones are usually bind
                // mounts of it into containers.
                "cgroup2" if v2.is_none() => v2 = Some(mount),
                _ => {}
            }
        }
        let has_v1_controllers = v1.iter().any(|m| !m.controllers.is_empty());
        let layout = match &v2 {
            Some(unified) if has_v1_controllers => Layout::Hybrid {
                unified: unified.mount_point.clone(),
            },
            Some(_) => Layout::V2,
            None if v1.is_empty() => return None,
            None => Layout::V1,
        };
        Some(Self { layout, v1, v2 })
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Where `controller`'s files for `cgroup` are. On v1 and hybrid hosts
    /// a controller bound to a v1 hierarchy is served there; any other one
    /// is looked for in the v2 hierarchy.
    pub fn locate(&self, controller: Controller, cgroup: &Path) -> Option<CgroupDir> {
        let name = controller.v1_name();
        if let Some(mount) = self
            .v1
            .iter()
            .find(|m| m.controllers.iter().any(|c| c == name))
        {
            return Some(CgroupDir {
                path: mount.dir_of(cgroup),
                version: Version::V1,
            });
        }
        self.unified_dir(cgroup).map(|path| CgroupDir {
            path,
            version: Version::V2,
        })
    }

    /// The cgroup's directory in the v2 hierarchy (hybrid and v2 hosts).
    pub fn unified_dir(&self, cgroup: &Path) -> Option<PathBuf> {
        self.v2.as_ref().map(|mount| mount.dir_of(cgroup))
    }

    /// Whether the kernel OOM-killed a process of `cgroup`: the `oom_kill`
    /// counter of v2 `memory.events` or v1 `memory.oom_control`. A cgroup
    /// that no longer exists reports `false`.
    pub fn oom_killed(&self, cgroup: &Path) -> Result<bool, CgroupError> {
        let Some(dir) = self.locate(Controller::Memory, cgroup) else {
            return Ok(false);
        };
        let file = match dir.version {
            Version::V1 => dir.path.join("memory.oom_control"),
            Version::V2 => dir.path.join("memory.events"),
        };
        Ok(read_keyed_value(&file, "oom_kill")?.unwrap_or(0) > 0)
    }
}

/// The fields of one `/proc/<pid>/mountinfo` line Wharf needs.
struct MountInfoLine<'a> {
    root: &'a str,
    mount_point: &'a str,
    fs_type: &'a str,
    super_options: &'a str,
}

impl<'a> MountInfoLine<'a> {
    /// `id parent major:minor root mount-point options [optional...] - type source super-options`
    fn parse(line: &'a str) -> Option<Self> {
        let (before, after) = line.split_once(" - ")?;
        let mut fields = before.split(' ');
        let root = fields.nth(3)?;
        let mount_point = fields.next()?;
        let mut after = after.split(' ');
        let fs_type = after.next()?;
        let _source = after.next()?;
        let super_options = after.next().unwrap_or("");
        Some(Self {
            root,
            mount_point,
            fs_type,
            super_options,
        })
    }
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|digits| {
            let text = std::str::from_utf8(digits).ok()?;
            u8::from_str_radix(text, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The cgroup of a process for the hierarchy that binds `controller`
/// (v1), or its v2 cgroup when `controller` is `None`, from the text of
/// `/proc/<pid>/cgroup` (`id:controllers:path` lines).
pub fn parse_proc_cgroup(text: &str, controller: Option<Controller>) -> Option<PathBuf> {
    text.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let _id = fields.next()?;
        let controllers = fields.next()?;
        let path = fields.next()?;
        let matches = match controller {
            None => controllers.is_empty(),
            Some(c) => controllers.split(',').any(|name| name == c.v1_name()),
        };
        matches.then(|| PathBuf::from(path))
    })
}

/// Parses "key value" lines (`memory.stat`, `memory.events`,
/// `memory.oom_control`, `cpu.stat`); lines that do not parse are skipped.
pub fn parse_flat_keyed(text: &str) -> HashMap<&str, u64> {
    text.lines()
        .filter_map(|line| {
            let (key, value) = line.split_once(' ')?;
            Some((key, value.trim().parse().ok()?))
        })
        .collect()
}

/// Parses a file holding one number (`memory.usage_in_bytes`,
/// `pids.current`); `max` (no limit) is `None`.
pub fn parse_single_value(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// `Ok(None)` when the file does not exist (the cgroup is gone) or has no
/// such key.
fn read_keyed_value(path: &Path, key: &str) -> Result<Option<u64>, CgroupError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => return Err(IoError::new("reading", path, source).into()),
    };
    Ok(parse_flat_keyed(&text).get(key).copied())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Mount lines of a hybrid host like the CI machine, rooted at `base`.
    fn hybrid_mountinfo(base: &Path) -> String {
        let b = base.display();
        format!(
            "25 1 0:23 / / rw,relatime - ext4 /dev/vda rw\n\
             31 23 0:28 / {b} rw,relatime - tmpfs tmpfs rw,mode=755\n\
             32 31 0:29 / {b}/cpu rw,relatime - cgroup cgroup rw,cpu\n\
             35 31 0:32 / {b}/memory rw,relatime - cgroup cgroup rw,memory\n\
             39 31 0:36 / {b}/pids rw,relatime shared:5 - cgroup cgroup rw,pids\n\
             40 31 0:37 / {b}/systemd rw,relatime - cgroup cgroup rw,xattr,name=systemd\n\
             41 31 0:38 / {b}/unified rw,relatime - cgroup2 cgroup2 rw,nsdelegate\n"
        )
    }

    fn set_fixture(dir: &Path, file: &str, content: &str) {
        fs::create_dir_all(dir).unwrap();
        fs::write(dir.join(file), content).unwrap();
    }

    #[test]
    fn detects_hybrid_and_resolves_per_controller() {
        let base = Path::new("/sys/fs/cgroup");
        let h = Hierarchies::from_mountinfo(&hybrid_mountinfo(base)).unwrap();
        assert_eq!(
            h.layout(),
            &Layout::Hybrid {
                unified: base.join("unified")
            }
        );
        let cgroup = Path::new("/kubepods/pod1/ctr");
        assert_eq!(
            h.locate(Controller::Memory, cgroup),
            Some(CgroupDir {
                path: base.join("memory/kubepods/pod1/ctr"),
                version: Version::V1
            })
        );
        // Not bound to v1 on this host: the unified hierarchy is next.
        assert_eq!(
            h.locate(Controller::Hugetlb, cgroup).unwrap().path,
            base.join("unified/kubepods/pod1/ctr")
        );
    }

    #[test]
    fn detects_pure_v1_and_v2() {
        let v1 = "32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let h = Hierarchies::from_mountinfo(v1).unwrap();
        assert_eq!(h.layout(), &Layout::V1);
        assert_eq!(
            h.locate(Controller::Cpuacct, Path::new("/a")).unwrap().path,
            Path::new("/sys/fs/cgroup/cpu,cpuacct/a")
        );
        assert_eq!(h.locate(Controller::Memory, Path::new("/a")), None);

        let v2 = "30 23 0:26 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw,nsdelegate\n";
        let h = Hierarchies::from_mountinfo(v2).unwrap();
        assert_eq!(h.layout(), &Layout::V2);
        assert_eq!(
            h.locate(Controller::Memory, Path::new("/kubepods/x")),
            Some(CgroupDir {
                path: PathBuf::from("/sys/fs/cgroup/kubepods/x"),
                version: Version::V2
            })
        );
        assert_eq!(
            Hierarchies::from_mountinfo("1 0 0:1 / / rw - ext4 x rw"),
            None
        );
    }

    #[test]
    fn mount_root_and_escapes_are_honoured() {
        let text = "30 23 0:26 /kubepods /mnt/my\\040cg rw - cgroup2 cgroup2 rw\n";
        let h = Hierarchies::from_mountinfo(text).unwrap();
        assert_eq!(
            h.unified_dir(Path::new("/kubepods/pod/ctr")).unwrap(),
            Path::new("/mnt/my cg/pod/ctr")
        );
        // `..` cannot climb out of the mount.
        assert_eq!(
            h.unified_dir(Path::new("/x/../../etc")).unwrap(),
            Path::new("/mnt/my cg/x/etc")
        );
    }

    #[test]
    fn oom_kill_counters_v1_and_v2() {
        let tmp = tempfile::tempdir().unwrap();
        let h = Hierarchies::from_mountinfo(&hybrid_mountinfo(tmp.path())).unwrap();
        let cgroup = Path::new("/wharf/ctr");
        assert!(!h.oom_killed(cgroup).unwrap(), "missing cgroup: no OOM");

        let memory = tmp.path().join("memory/wharf/ctr");
        set_fixture(
            &memory,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        );
        assert!(!h.oom_killed(cgroup).unwrap());
        set_fixture(
            &memory,
            "memory.oom_control",
            "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n",
        );
        assert!(h.oom_killed(cgroup).unwrap());

        let v2_text = format!(
            "30 23 0:26 / {} rw - cgroup2 cgroup2 rw\n",
            tmp.path().display()
        );
        let v2 = Hierarchies::from_mountinfo(&v2_text).unwrap();
        let dir = tmp.path().join("wharf/ctr");
        set_fixture(
            &dir,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\noom_group_kill 0\n",
        );
        assert!(v2.oom_killed(cgroup).unwrap());
    }

    #[test]
    fn proc_cgroup_lines() {
        let text = "9:name=systemd:/\n4:memory:/wharf/c1\n2:cpu,cpuacct:/wharf/c1\n0::/wharf/c1u\n";
        assert_eq!(
            parse_proc_cgroup(text, Some(Controller::Memory)),
            Some(PathBuf::from("/wharf/c1"))
        );
        assert_eq!(
            parse_proc_cgroup(text, Some(Controller::Cpuacct)),
            Some(PathBuf::from("/wharf/c1"))
        );
        assert_eq!(
            parse_proc_cgroup(text, None),
            Some(PathBuf::from("/wharf/c1u"))
        );
        assert_eq!(parse_proc_cgroup(text, Some(Controller::Pids)), None);
    }

    #[test]
    fn value_parsers() {
        let stats = parse_flat_keyed("cache 4096\nrss 8192\nbogus\nhuge x\n");
        assert_eq!(stats.get("rss"), Some(&8192));
        assert_eq!(stats.len(), 2);
        assert_eq!(parse_single_value("123\n"), Some(123));
        assert_eq!(parse_single_value("max\n"), None);
    }
}
