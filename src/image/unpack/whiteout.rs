//! OCI whiteouts (`.wh.name`, `.wh..wh..opq`) turned into overlayfs ones.

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{self, Mode, SFlag};
use nix::unistd::{self};

use super::attributes::{file_type, set_opaque, Attributes};
use super::{failed, Failure, Rejection, Unpacker};

pub(super) const WHITEOUT_PREFIX: &[u8] = b".wh.";
/// What follows [`WHITEOUT_PREFIX`] in `.wh..wh..opq`, the opaque-directory marker.
pub(super) const OPAQUE_MARKER: &[u8] = b".wh..opq";

impl Unpacker<'_> {
    pub(super) fn apply_whiteout(
        &mut self,
        parent_path: &Path,
        hidden: &OsStr,
        attributes: &Attributes,
    ) -> Result<(), Failure> {
        let parent = self.open_directory(parent_path, true)?;
        match hidden.as_bytes() {
            OPAQUE_MARKER => return set_opaque(&parent, OsStr::new(".")),
            aufs if aufs.starts_with(WHITEOUT_PREFIX) => {
                tracing::debug!(dir = %parent_path.display(), "ignoring AUFS metadata {hidden:?}");
                return Ok(());
            }
            b"" | b"." | b".." => return Err(Rejection::EmptyWhiteout.into()),
            _ => {}
        }
        // OCI: a whiteout hides lower layers only, never its own layer's
        // entries; over a directory of this layer that means "opaque".
        match stat::fstatat(&parent, hidden, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Ok(existing) if file_type(existing.st_mode) == SFlag::S_IFDIR => {
                return set_opaque(&parent, hidden);
            }
            Ok(_) => return Ok(()),
            Err(Errno::ENOENT) => {}
            Err(errno) => return Err(failed("inspecting whiteout target")(errno)),
        }
        let whiteout = stat::makedev(0, 0);
        stat::mknodat(&parent, hidden, SFlag::S_IFCHR, Mode::empty(), whiteout)
            .map_err(failed("creating whiteout device"))?;
        let (uid, gid) = (Some(attributes.uid), Some(attributes.gid));
        unistd::fchownat(&parent, hidden, uid, gid, AtFlags::AT_SYMLINK_NOFOLLOW)
            .map_err(failed("chown"))?;
        self.stats.inodes += 1;
        Ok(())
    }
}
