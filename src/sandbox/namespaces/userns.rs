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

use super::pid_holder::adopt_holder;
use super::{
    bind_pin, checked, create_dir, io_error, on_throwaway_thread, os_error, NamespaceError,
    NamespaceKind, PidHolder, PinRequest, PinnedNamespaces,
};
use crate::idmap::{with_new_userns, PidInit, UsernsMappings};
use crate::undo::Undo;

/// The pin file of a pod's user namespace, beside the others.
pub const USER_FILE: &str = "user";

/// What [`pin_in_userns`] made.
#[derive(Debug)]
pub struct UsernsPins {
    /// With `user` set.
    pub pinned: PinnedNamespaces,
    /// The init of the pod's shared PID namespace, when asked for.
    pub pid_holder: Option<PidHolder>,
}

/// Creates the pod's user namespace with `mappings`, and in it the
/// namespaces of `request.kinds`, configures them and pins them under
/// `request.dir`. With `pid_holder` (which must end up in
/// [`super::run_pid_holder`]), also a shared PID namespace with it as init.
/// On failure nothing is left behind.
pub fn pin_in_userns(
    request: &PinRequest,
    mappings: &UsernsMappings,
    pid_holder: Option<&PidInit>,
) -> Result<UsernsPins, NamespaceError> {
    let (kinds, sysctls) = checked(request)?;
    let flags = kinds
        .iter()
        .fold(CloneFlags::empty(), |f, k| f | k.clone_flag());
    let mut undo = Undo::default();
    let result = create_dir(request.dir, &mut undo).and_then(|()| {
        let pins = with_new_userns(mappings, flags, pid_holder, |ns: &Path, init| {
            let mut pinned = PinnedNamespaces::default();
            let holder = match (init, pid_holder) {
                (Some(started), Some(program)) => {
                    let holder = adopt_holder(request.dir, &program.program, started, &mut undo)?;
                    let stop = holder.clone();
                    undo.push("stopping the PID namespace holder", move || stop.stop());
                    Some(holder)
                }
                _ => None,
            };
            let user = request.dir.join(USER_FILE);
            bind_pin(&ns.join("user"), &user, &mut undo)?;
            pinned.user = Some(user);
            for &kind in &kinds {
                let target = request.dir.join(kind.file_name());
                bind_pin(&ns.join(kind.file_name()), &target, &mut undo)?;
                pinned.set(kind, target);
            }
            Ok::<_, NamespaceError>(UsernsPins {
                pinned,
                pid_holder: holder,
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
