//! Crash-safe files: every write goes to a temporary file in the same
//! directory, is fsynced, renamed over the target, and the directory is
//! fsynced, so a reader (or a restart after `kill -9`) sees the old or the
//! new content, never a torn one.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::de::DeserializeOwned;

use crate::error::{IoError, IoResultExt};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("decoding {path}")]
    Decode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("encoding {path}")]
    Encode {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl crate::error::Classify for StoreError {
    fn kind(&self) -> crate::error::Kind {
        crate::error::Kind::Internal
    }
}

/// A name no other writer in this process or another uses at the same time.
pub fn unique_temp_name(prefix: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{prefix}{}-{n}-{nanos}", std::process::id())
}

/// Nanoseconds since the Unix epoch, the unit of every timestamp Wharf
/// records and CRI reports (0 before 1970, saturating in 2262).
pub fn unix_nanos(time: std::time::SystemTime) -> i64 {
    time.duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

pub fn now_nanos() -> i64 {
    unix_nanos(std::time::SystemTime::now())
}

/// Prefix of temporary files and directories: whatever carries it after a
/// crash is garbage and is removed at start-up.
pub const TEMP_PREFIX: &str = ".tmp-";

pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    replace_file(path, data, Durability::FileAndDir)
}

/// Like [`write_atomic`] but without the fsyncs: the new content survives
/// a crash of the process (it is in the page cache), not of the machine.
/// For intents that only matter while the machine is up, such as "a start
/// of this container is under way" (a reboot ends the container anyway).
pub fn write_atomic_unsynced(path: &Path, data: &[u8]) -> Result<(), StoreError> {
    replace_file(path, data, Durability::Nothing)
}

/// What [`replace_file`] makes durable.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Durability {
    Nothing,
    /// The content, not yet the rename: for a file whose directory is
    /// synced right after, with another file's rename.
    File,
    FileAndDir,
}

fn replace_file(path: &Path, data: &[u8], sync: Durability) -> Result<(), StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let temp = dir.join(unique_temp_name(TEMP_PREFIX));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&temp)
            .at("creating", &temp)?;
        file.write_all(data).at("writing", &temp)?;
        if sync != Durability::Nothing {
            file.sync_all().at("syncing", &temp)?;
        }
        fs::rename(&temp, path).at("renaming into place", path)?;
        if sync == Durability::FileAndDir {
            sync_dir(dir)?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&temp);
    }
    result
}

pub fn write_json_atomic<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    write_atomic(path, &encode_json(path, value)?)
}

pub fn write_json_atomic_unsynced<T: Serialize>(path: &Path, value: &T) -> Result<(), StoreError> {
    write_atomic_unsynced(path, &encode_json(path, value)?)
}

fn encode_json<T: Serialize>(path: &Path, value: &T) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec(value).map_err(|source| StoreError::Encode {
        path: path.to_path_buf(),
        source,
    })
}

/// `Ok(None)` when the file does not exist.
pub fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, StoreError> {
    let data = match fs::read(path) {
        Ok(data) => data,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::error::IoError::new("reading", path, e).into()),
    };
    serde_json::from_slice(&data)
        .map(Some)
        .map_err(|source| StoreError::Decode {
            path: path.to_path_buf(),
            source,
        })
}

/// Makes a rename or a new entry in `dir` durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .at("syncing directory", dir)?;
    Ok(())
}

/// Removes a directory tree by first renaming it to a temporary name, so
/// that a crash half-way leaves garbage that start-up collects, never a
/// half-removed entry under its real name.
pub fn remove_dir_atomic(path: &Path) -> Result<(), StoreError> {
    if let Some(doomed) = detach_dir(path)? {
        fs::remove_dir_all(&doomed).at("removing", &doomed)?;
    }
    Ok(())
}

/// The first half of [`remove_dir_atomic`]: `path` is gone, renamed to a
/// temporary beside it (returned; `None` if `path` did not exist) that the
/// caller deletes, and that [`remove_temporaries`] deletes if a crash
/// comes first.
pub fn detach_dir(path: &Path) -> Result<Option<PathBuf>, StoreError> {
    let doomed = detach_dir_unsynced(path)?;
    if doomed.is_some() {
        sync_dir(path.parent().unwrap_or(Path::new(".")))?;
    }
    Ok(doomed)
}

/// [`detach_dir`] without making the rename durable: after a crash of the
/// machine `path` may be back, whole (the journal orders the rename before
/// any deletion inside the temporary), as if never removed.
pub fn detach_dir_unsynced(path: &Path) -> Result<Option<PathBuf>, StoreError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let doomed = dir.join(unique_temp_name(TEMP_PREFIX));
    match fs::rename(path, &doomed) {
        Ok(()) => Ok(Some(doomed)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(crate::error::IoError::new("renaming for removal", path, e).into()),
    }
}

/// Deletes leftovers of interrupted writes in `dir`.
pub fn remove_temporaries(dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(crate::error::IoError::new("listing", dir, e).into()),
    };
    for entry in entries {
        let entry = entry.at("listing", dir)?;
        if !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        let result = if is_dir {
            fs::remove_dir_all(&path)
        } else {
            fs::remove_file(&path)
        };
        result.at("removing leftover", &path)?;
        removed += 1;
    }
    Ok(removed)
}

/// Name of the file holding the CRI config an object was made from,
/// protobuf-encoded exactly as kubelet sent it.
const CONFIG_FILE: &str = "config.pb";

/// Saves an object's record as `dir/<record_file>`; with `config`, first the
/// CRI config it was made from (it never changes). The config goes first:
/// a record without its config is incomplete and dropped at start-up.
pub fn save_record<T: Serialize, C: prost::Message>(
    dir: &Path,
    record_file: &str,
    record: &T,
    config: Option<&C>,
) -> Result<(), StoreError> {
    create_dir_all(dir)?;
    if let Some(config) = config {
        // The directory sync after the record's rename covers this
        // rename too: one directory sync instead of two.
        save_config(dir, config)?;
    }
    write_json_atomic(&dir.join(record_file), record)
}

/// Saves the CRI config alone (durable content, not yet durable name): the
/// first half of [`save_record`], for a caller that writes it while other
/// work goes on, then calls `save_record` without it, whose directory sync
/// makes both names durable.
pub fn save_config<C: prost::Message>(dir: &Path, config: &C) -> Result<(), StoreError> {
    replace_file(
        &dir.join(CONFIG_FILE),
        &config.encode_to_vec(),
        Durability::File,
    )
}

/// Loads what [`save_record`] wrote; `Ok(None)` when incomplete.
pub fn load_record<T: DeserializeOwned, C: prost::Message + Default>(
    dir: &Path,
    record_file: &str,
) -> Result<Option<(T, C)>, StoreError> {
    let Some(record) = read_json::<T>(&dir.join(record_file))? else {
        return Ok(None);
    };
    let config_path = dir.join(CONFIG_FILE);
    let bytes = match fs::read(&config_path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::error::IoError::new("reading", &config_path, e).into()),
    };
    match C::decode(bytes.as_slice()) {
        Ok(config) => Ok(Some((record, config))),
        Err(e) => {
            tracing::warn!(path = %config_path.display(), error = %e, "undecodable CRI config");
            Ok(None)
        }
    }
}

/// The subdirectories of `dir` (one per object), temporaries excluded.
pub fn list_subdirs(dir: &Path) -> Result<Vec<PathBuf>, StoreError> {
    let mut dirs = Vec::new();
    for entry in fs::read_dir(dir).at("listing", dir)? {
        let entry = entry.at("listing", dir)?;
        let is_dir = entry.file_type().map(|t| t.is_dir()).unwrap_or(false);
        if is_dir && !entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            dirs.push(entry.path());
        }
    }
    Ok(dirs)
}

/// Mode of every directory Wharf keeps its data in: only root may enter.
/// Layers keep setuid binaries and file capabilities, and containers write
/// into their upper dirs; a directory other users could traverse would hand
/// them those binaries (containerd's CVE-2021-41103).
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Mode of the state directory: others may pass through to the socket
/// (when its group is granted), but not list it.
pub const TRAVERSE_ONLY_DIR_MODE: u32 = 0o711;

/// Creates `path` and any missing parents, each only root may enter.
pub fn create_dir_all(path: &Path) -> Result<(), StoreError> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(path)
        .at("creating directory", path)?;
    Ok(())
}

/// Creates `path` if missing, then gives it exactly `mode` (whatever the
/// umask, and also when an older Wharf or an operator left it wider).
pub fn ensure_dir_mode(path: &Path, mode: u32) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    create_dir_all(path)?;
    let current = fs::symlink_metadata(path).at("inspecting", path)?;
    if !current.is_dir() {
        return Err(StoreError::Io(crate::error::IoError::new(
            "using as a directory",
            path.to_path_buf(),
            io::Error::from(io::ErrorKind::NotADirectory),
        )));
    }
    if current.permissions().mode() & 0o7777 != mode {
        fs::set_permissions(path, fs::Permissions::from_mode(mode))
            .at("restricting permissions of", path)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporaries() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_json_atomic(&path, &vec![1, 2, 3]).unwrap();
        write_json_atomic(&path, &vec![4]).unwrap();
        assert_eq!(read_json::<Vec<i32>>(&path).unwrap(), Some(vec![4]));
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        assert_eq!(
            read_json::<Vec<i32>>(&dir.path().join("missing")).unwrap(),
            None
        );
    }

    #[test]
    fn directories_are_private_whatever_existed_before() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b");
        create_dir_all(&nested).unwrap();
        for path in [dir.path().join("a"), nested.clone()] {
            let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode & 0o077, 0, "{} is {mode:o}", path.display());
        }
        // An installation made before the fix: wide open, fixed in place.
        let old = dir.path().join("old");
        fs::create_dir(&old).unwrap();
        fs::set_permissions(&old, fs::Permissions::from_mode(0o755)).unwrap();
        ensure_dir_mode(&old, TRAVERSE_ONLY_DIR_MODE).unwrap();
        assert_eq!(
            fs::metadata(&old).unwrap().permissions().mode() & 0o7777,
            0o711
        );
        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        assert!(ensure_dir_mode(&file, PRIVATE_DIR_MODE).is_err());
    }

    #[test]
    fn leftovers_are_collected() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(format!("{TEMP_PREFIX}a"))).unwrap();
        fs::write(dir.path().join(format!("{TEMP_PREFIX}b")), b"x").unwrap();
        fs::write(dir.path().join("keep"), b"x").unwrap();
        assert_eq!(remove_temporaries(dir.path()).unwrap(), 2);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn remove_dir_atomic_is_idempotent() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("layer");
        fs::create_dir_all(victim.join("fs/etc")).unwrap();
        remove_dir_atomic(&victim).unwrap();
        remove_dir_atomic(&victim).unwrap();
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
