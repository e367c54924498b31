//! The namespaces of a pod with a user namespace of its own.
//!
//! A container that joins the pod's user namespace can then join only
//! namespaces that user namespace owns (`setns` needs `CAP_SYS_ADMIN` over
//! the owner, and root in a child user namespace has none over the
//! host's), and can mount `/proc`, `/sys` and `mqueue` only for such
//! namespaces. So the network, IPC, UTS (and a shared PID) namespaces are
//! created together with the user namespace, by one `unshare` in a
//! single-threaded child ([`crate::idmap::with_new_userns`]), and pinned
//! from its `/proc/<pid>/ns` like the others. The host name and sysctls are
//! then set from a throw-away thread that enters them: the daemon's root
//! holds every capability in a user namespace it created.

use std::fs::File;
use std::path::Path;

use nix::sched::{setns, CloneFlags};
use nix::unistd::sethostname;

use super::{
    bind_pin, checked, create_dir, io_error, on_throwaway_thread, os_error, NamespaceError,
    NamespaceKind, PinRequest, PinnedNamespaces,
};
use crate::idmap::{with_new_userns, UsernsMappings};
use crate::undo::Undo;

/// The pin file of a pod's user namespace, beside the others.
pub const USER_FILE: &str = "user";

/// What [`pin_in_userns`] made.
#[derive(Debug)]
pub struct UsernsPins {
    /// With `user` set.
    pub pinned: PinnedNamespaces,
    /// The PID namespace the pod's PID holder must be born into (owned by
    /// the pod's user namespace, with no process yet); only when asked for.
    pub pid_namespace: Option<File>,
}

/// Creates the pod's user namespace with `mappings`, and in it the
/// namespaces of `request.kinds` (and a PID namespace for a shared one
/// when `shared_pid`), configures them and pins them under `request.dir`.
/// On failure nothing is left behind.
pub fn pin_in_userns(
    request: &PinRequest,
    mappings: &UsernsMappings,
    shared_pid: bool,
) -> Result<UsernsPins, NamespaceError> {
    let (kinds, sysctls) = checked(request)?;
    let mut flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |f, k| f | k.clone_flag());
    if shared_pid {
        flags |= CloneFlags::CLONE_NEWPID;
    }
    let mut undo = Undo::default();
    let result = create_dir(request.dir, &mut undo).and_then(|()| {
        let pins = with_new_userns(mappings, flags, |ns: &Path| {
            let mut pinned = PinnedNamespaces::default();
            let user = request.dir.join(USER_FILE);
            bind_pin(&ns.join("user"), &user, &mut undo)?;
            pinned.user = Some(user);
            for &kind in &kinds {
                let target = request.dir.join(kind.file_name());
                bind_pin(&ns.join(kind.file_name()), &target, &mut undo)?;
                pinned.set(kind, target);
            }
            let pid_namespace = if shared_pid {
                let path = ns.join("pid_for_children");
                Some(File::open(&path).map_err(io_error("opening", &path))?)
            } else {
                None
            };
            Ok::<_, NamespaceError>(UsernsPins {
                pinned,
                pid_namespace,
            })
        })?;
        configure(request, &pins.pinned, &kinds, &sysctls)?;
        Ok(pins)
    });
    undo.finish_now(result)
}

/// Sets the host name and sysctls from inside the pinned namespaces.
fn configure(
    request: &PinRequest,
    pinned: &PinnedNamespaces,
    kinds: &[NamespaceKind],
    sysctls: &[super::sysctl::Sysctl<'_>],
) -> Result<(), NamespaceError> {
    if request.hostname.is_none() && sysctls.is_empty() {
        return Ok(());
    }
    on_throwaway_thread(request.dir, || {
        for &kind in kinds {
            let Some(path) = pinned.path(kind) else {
                continue;
            };
            let file = File::open(path).map_err(io_error("opening", path))?;
            setns(file, kind.clone_flag()).map_err(os_error("entering", path))?;
        }
        if let Some(hostname) = request.hostname {
            sethostname(hostname).map_err(os_error("setting the host name of", request.dir))?;
        }
        sysctls.iter().try_for_each(super::sysctl::Sysctl::write)
    })
}
