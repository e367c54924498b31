//! Layer unpacking (src/image/unpack), fed as the pull path feeds it: the
//! blob through `decompressed` (gzip, zstd or plain tar by magic bytes),
//! then `unpack_layer` into a fresh empty directory. Layers are hostile
//! input: besides never panicking, the unpacker must not touch anything
//! outside its destination. Each run unpacks into `<top>/outer/inner/root`
//! and checks that `top`, `outer` and `inner` (and a file `outer/canary`)
//! are exactly as before: same entries, owner, mode, mtime, link count and
//! extended attributes, same content.
//!
//! Input: one byte of flags, then the blob.
//! - bit 0 clear: the blob is a plain tar whose header checksums are
//!   recomputed before unpacking (so that mutations reach the unpacker
//!   instead of failing the checksum); set: the bytes go in as they are,
//!   which is how gzip and zstd blobs are fuzzed.
//! - bit 1: `allow_devices`.
//! - bit 2: a 4 KiB `max_header_bytes` instead of the default 1 MiB.
//!
//! The work directory is under /dev/shm (a tmpfs: fast, and it takes the
//! `trusted.*` extended attributes whiteouts need), or `$WHARF_FUZZ_TMP`.

#![no_main]

use std::ffi::CString;
use std::fs;
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use wharf::image::unpack::{decompressed, unpack_layer, UnpackOptions};

/// Bound on the decompressed stream, so a small zstd or gzip bomb cannot
/// fill the disk or take seconds per run.
const MAX_DECOMPRESSED: u64 = 16 << 20;
const CANARY: &[u8] = b"outside the layer root\n";

struct Work {
    top: PathBuf,
    outer: PathBuf,
    inner: PathBuf,
    canary: PathBuf,
    root: PathBuf,
}

fn work() -> &'static Work {
    static WORK: OnceLock<Work> = OnceLock::new();
    WORK.get_or_init(|| {
        let base = std::env::var_os("WHARF_FUZZ_TMP")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                let shm = Path::new("/dev/shm");
                if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                }
            });
        let top = base.join(format!("wharf-fuzz-unpack-{}", std::process::id()));
        let _ = fs::remove_dir_all(&top);
        let outer = top.join("outer");
        let inner = outer.join("inner");
        fs::create_dir_all(&inner).expect("creating the work directory");
        let canary = outer.join("canary");
        fs::write(&canary, CANARY).expect("writing the canary");
        let root = inner.join("root");
        Work {
            top,
            outer,
            inner,
            canary,
            root,
        }
    })
}

/// What must not change outside the layer root.
#[derive(Debug, PartialEq, Eq)]
struct Snapshot {
    entries: Vec<(PathBuf, Vec<String>, Stat)>,
    canary: (Stat, Vec<u8>, Vec<String>),
}

#[derive(Debug, PartialEq, Eq)]
struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    nlink: u64,
    mtime: (i64, i64),
    size: u64,
}

fn stat(path: &Path) -> Stat {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    Stat {
        mode: m.mode(),
        uid: m.uid(),
        gid: m.gid(),
        nlink: m.nlink(),
        mtime: (m.mtime(), m.mtime_nsec()),
        size: m.size(),
    }
}

fn xattr_names(path: &Path) -> Vec<String> {
    let c_path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut buffer = vec![0u8; 64 * 1024];
    // SAFETY: the buffer is valid for its length and the path NUL-terminated.
    let len =
        unsafe { libc::llistxattr(c_path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) };
    assert!(
        len >= 0,
        "llistxattr {}: {}",
        path.display(),
        io::Error::last_os_error()
    );
    buffer.truncate(len as usize);
    let mut names: Vec<String> = buffer
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    names.sort();
    names
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn snapshot(work: &Work) -> Snapshot {
    let entries = [&work.top, &work.outer, &work.inner]
        .into_iter()
        .map(|dir| {
            let mut listed = listing(dir);
            listed.extend(xattr_names(dir).into_iter().map(|x| format!("xattr:{x}")));
            (dir.clone(), listed, stat(dir))
        })
        .collect();
    let canary = (
        stat(&work.canary),
        fs::read(&work.canary).unwrap(),
        xattr_names(&work.canary),
    );
    Snapshot { entries, canary }
}

/// Recomputes the checksum of each header in a plain tar (following the
/// size fields from header to header), so mutated headers stay valid.
fn fix_checksums(tar: &mut [u8]) {
    let mut offset = 0usize;
    while let Some(header) = tar.get_mut(offset..offset + 512) {
        if header.iter().all(|&b| b == 0) {
            break;
        }
        let sum: u32 = header
            .iter()
            .enumerate()
            .map(|(i, &b)| {
                if (148..156).contains(&i) {
                    32
                } else {
                    u32::from(b)
                }
            })
            .sum();
        let field = format!("{sum:06o}\0 ");
        header[148..156].copy_from_slice(&field.as_bytes()[..8]);
        let Some(size) = entry_size(&header[124..136]) else {
            break;
        };
        let Some(next) = size
            .checked_add(511)
            .map(|s| s / 512 * 512)
            .and_then(|s| usize::try_from(s).ok())
            .and_then(|s| s.checked_add(offset + 512))
        else {
            break;
        };
        offset = next;
    }
}

/// The tar size field: octal text, or base-256 when the high bit is set.
fn entry_size(field: &[u8]) -> Option<u64> {
    if field[0] & 0x80 != 0 {
        return field[4..]
            .iter()
            .try_fold(0u64, |n, &b| n.checked_mul(256).map(|n| n + u64::from(b)));
    }
    let text = std::str::from_utf8(field).ok()?;
    let text = text.trim_matches(|c| c == ' ' || c == '\0');
    if text.is_empty() {
        return Some(0);
    }
    u64::from_str_radix(text, 8).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, blob)) = data.split_first() else {
        return;
    };
    let mut blob = blob.to_vec();
    if flags & 1 == 0 {
        fix_checksums(&mut blob);
    }
    let options = UnpackOptions {
        allow_devices: flags & 2 != 0,
        max_header_bytes: if flags & 4 != 0 {
            4096
        } else {
            UnpackOptions::default().max_header_bytes
        },
        ..UnpackOptions::default()
    };
    let control = options.standalone(blob.len() as u64);

    let work = work();
    if work.root.exists() {
        fs::remove_dir_all(&work.root).expect("clearing the layer root");
    }
    fs::create_dir(&work.root).expect("creating the layer root");
    let before = snapshot(work);

    // As pull.rs's unpacker thread does, minus the digest.
    let result = decompressed(io::Cursor::new(blob)).and_then(|reader| {
        let mut reader = reader.take(MAX_DECOMPRESSED);
        let stats = unpack_layer(&mut reader, &work.root, &options, &control);
        io::copy(&mut reader, &mut io::sink())?;
        Ok(stats)
    });
    match result {
        Ok(Ok(stats)) => assert!(stats.bytes <= MAX_DECOMPRESSED),
        Ok(Err(error)) => {
            let _ = error.to_string();
        }
        Err(_) => {}
    }

    let after = snapshot(work);
    assert_eq!(
        before, after,
        "unpacking changed something outside the layer root"
    );
    fs::remove_dir_all(&work.root).expect("removing the layer root");
});
