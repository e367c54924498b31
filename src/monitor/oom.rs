//! Finding the container's memory cgroup, to tell an OOM kill apart from
//! an ordinary SIGKILL when the container exits.

use std::path::{Path, PathBuf};

use nix::unistd::Pid;
use serde::Deserialize;

use crate::cgroup::{parse_proc_cgroup, Controller, Hierarchies, Version};

/// The fields of the bundle's `config.json` this needs.
#[derive(Deserialize)]
struct BundleConfig {
    linux: Option<BundleLinux>,
}

#[derive(Deserialize)]
struct BundleLinux {
    #[serde(rename = "cgroupsPath")]
    cgroups_path: Option<String>,
}

pub struct OomProbe {
    hierarchies: Hierarchies,
    cgroup: PathBuf,
}

impl OomProbe {
    /// The cgroup is the bundle's `linux.cgroupsPath` when it is an
    /// absolute (cgroupfs driver) path; otherwise the runtime chose it, so
    /// it is read from the container init's `/proc/<pid>/cgroup`.
    pub fn resolve(bundle: &Path, init: Pid) -> Result<Self, String> {
        let hierarchies = Hierarchies::detect().map_err(|e| crate::error::chain(&e))?;
        let config_path = bundle.join("config.json");
        let configured = std::fs::read(&config_path)
            .ok()
            .and_then(|data| serde_json::from_slice::<BundleConfig>(&data).ok())
            .and_then(|config| config.linux?.cgroups_path)
            .map(PathBuf::from)
            .filter(|path| path.is_absolute());
        let cgroup = match configured {
            Some(path) => path,
            None => {
                let proc_file = format!("/proc/{init}/cgroup");
                let text = std::fs::read_to_string(&proc_file)
                    .map_err(|e| format!("reading {proc_file}: {e}"))?;
                let memory_version = hierarchies
                    .locate(Controller::Memory, Path::new("/"))
                    .map(|dir| dir.version);
                let controller =
                    (memory_version == Some(Version::V1)).then_some(Controller::Memory);
                parse_proc_cgroup(&text, controller)
                    .ok_or_else(|| format!("{proc_file} names no memory cgroup"))?
            }
        };
        Ok(Self {
            hierarchies,
            cgroup,
        })
    }

    /// Whether a process of the cgroup was OOM-killed; errors count as no.
    pub fn oom_killed(&self) -> bool {
        match self.hierarchies.oom_killed(&self.cgroup) {
            Ok(killed) => killed,
            Err(e) => {
                eprintln!("wharf-monitor: {}", crate::error::chain(&e));
                false
            }
        }
    }
}
