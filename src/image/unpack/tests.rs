use super::attributes::{parse_pax_time, OVERLAY_OPAQUE_XATTR};
use super::Rejection::*;
use super::*;
use nix::libc;
use std::ffi::CString;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tar::{Builder, Header};

const MTIME: u64 = 1_500_000_000;

/// Builds layers entry by entry, writing names raw so that hostile ones
/// (which `tar::Header::set_path` refuses) survive.
struct Layer(Builder<Vec<u8>>);

fn layer() -> Layer {
    Layer(Builder::new(Vec::new()))
}

impl Layer {
    fn raw(
        mut self,
        kind: EntryType,
        name: &str,
        link: &str,
        data: &[u8],
        tweak: impl FnOnce(&mut Header),
    ) -> Layer {
        let mut header = Header::new_ustar();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.as_old_mut().linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(MTIME);
        header.set_size(data.len() as u64);
        tweak(&mut header);
        header.set_cksum();
        self.0.append(&header, data).unwrap();
        self
    }

    fn file(self, name: &str, data: &[u8]) -> Layer {
        self.raw(EntryType::Regular, name, "", data, |_| {})
    }

    fn dir(self, name: &str, mode: u32) -> Layer {
        self.raw(EntryType::Directory, name, "", b"", |h| h.set_mode(mode))
    }

    fn symlink(self, name: &str, target: &str) -> Layer {
        self.raw(EntryType::Symlink, name, target, b"", |_| {})
    }

    fn hardlink(self, name: &str, target: &str) -> Layer {
        self.raw(EntryType::Link, name, target, b"", |_| {})
    }

    /// A PAX extended header for the entry that follows.
    fn pax(self, records: &[(&str, &[u8])]) -> Layer {
        let mut body = Vec::new();
        for (key, value) in records {
            // "<length> key=value\n", where the length counts its own digits.
            let rest = key.len() + value.len() + 3;
            let mut len = rest + 1;
            while len != rest + len.to_string().len() {
                len = rest + len.to_string().len();
            }
            body.extend([format!("{len} {key}=").as_bytes(), value, b"\n"].concat());
        }
        self.raw(EntryType::XHeader, "PaxHeaders/x", "", &body, |_| {})
    }

    fn bytes(self) -> Vec<u8> {
        self.0.into_inner().unwrap()
    }
}

/// A scratch directory holding `dest` and, beside it, `outside`, which no
/// layer may touch.
struct Sandbox(tempfile::TempDir);

impl Sandbox {
    fn new() -> Sandbox {
        let sandbox = Sandbox(tempfile::TempDir::new().unwrap());
        fs::create_dir(sandbox.dest()).unwrap();
        fs::create_dir(sandbox.outside()).unwrap();
        sandbox
    }

    fn dest(&self) -> PathBuf {
        self.0.path().join("dest")
    }

    fn outside(&self) -> PathBuf {
        self.0.path().join("outside")
    }

    fn unpack(&self, layer: Layer, options: &UnpackOptions) -> Result<UnpackStats, UnpackError> {
        let bytes = layer.bytes();
        let control = options.standalone(bytes.len() as u64);
        unpack_layer(&bytes[..], &self.dest(), options, &control)
    }

    fn meta(&self, path: &str) -> fs::Metadata {
        fs::symlink_metadata(self.dest().join(path)).unwrap()
    }

    fn read(&self, path: &str) -> Vec<u8> {
        fs::read(self.dest().join(path)).unwrap()
    }

    #[allow(unsafe_code)]
    fn xattr(&self, path: &str, name: &str) -> Option<Vec<u8>> {
        let path = CString::new(self.dest().join(path).as_os_str().as_bytes()).unwrap();
        let name = CString::new(name).unwrap();
        let mut value = vec![0u8; 256];
        let (buffer, size) = (value.as_mut_ptr().cast(), value.len());
        // SAFETY: NUL-terminated strings and a writable buffer of `size`
        // bytes, all alive for the duration of the call.
        let len = unsafe { libc::lgetxattr(path.as_ptr(), name.as_ptr(), buffer, size) };
        value.truncate(usize::try_from(len).ok()?);
        Some(value)
    }
}

fn unpacked(layer: Layer) -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.unpack(layer, &UnpackOptions::default()).unwrap();
    sandbox
}

#[test]
fn preserves_entries_and_metadata() {
    let layer = layer()
        .dir("./", 0o750)
        .raw(EntryType::Directory, "./bin/", "", b"", |h| {
            h.set_mode(0o755);
            h.set_uid(1);
            h.set_gid(2);
            h.set_mtime(MTIME - 100);
        })
        .pax(&[
            ("SCHILY.xattr.user.origin", b"layer"),
            ("SCHILY.xattr.trusted.overlay.redirect", b"/x"),
            ("mtime", b"1600000000.5"),
        ])
        .raw(EntryType::Regular, "./bin/tool", "", b"hello", |h| {
            h.set_mode(0o4755);
            h.set_uid(3);
            h.set_gid(4);
        })
        .raw(EntryType::Symlink, "bin/sh", "/bin/tool", b"", |h| {
            h.set_uid(5)
        })
        .file("lib/data", b"1234")
        .hardlink("lib/alias", "lib/data")
        .raw(EntryType::Fifo, "run/pipe", "", b"", |h| h.set_mode(0o600));
    let sandbox = Sandbox::new();
    let stats = sandbox.unpack(layer, &UnpackOptions::default()).unwrap();
    // bin, tool, sh, lib (implicit), data, alias, run (implicit), pipe.
    assert_eq!(
        stats,
        UnpackStats {
            bytes: 9,
            inodes: 8
        }
    );

    let mode = |path| sandbox.meta(path).mode() & 0o7777;
    let owner = |path| (sandbox.meta(path).uid(), sandbox.meta(path).gid());
    assert_eq!((mode(""), sandbox.meta("").mtime()), (0o750, MTIME as i64));
    assert_eq!((mode("bin"), owner("bin")), (0o755, (1, 2)));
    assert_eq!(
        sandbox.meta("bin").mtime(),
        MTIME as i64 - 100,
        "set after its children"
    );
    assert_eq!(sandbox.read("bin/tool"), b"hello");
    assert_eq!((mode("bin/tool"), owner("bin/tool")), (0o4755, (3, 4)));
    let tool = sandbox.meta("bin/tool");
    assert_eq!(
        (tool.mtime(), tool.mtime_nsec()),
        (1_600_000_000, 500_000_000)
    );
    assert_eq!(
        sandbox.xattr("bin/tool", "user.origin"),
        Some(b"layer".to_vec())
    );
    assert_eq!(sandbox.xattr("bin/tool", "trusted.overlay.redirect"), None);
    assert!(sandbox.meta("bin/sh").file_type().is_symlink());
    assert_eq!(
        fs::read_link(sandbox.dest().join("bin/sh")).unwrap(),
        Path::new("/bin/tool")
    );
    assert_eq!(owner("bin/sh"), (5, 0));
    let (alias, data) = (sandbox.meta("lib/alias"), sandbox.meta("lib/data"));
    assert_eq!((alias.ino(), alias.nlink()), (data.ino(), 2));
    assert_eq!(mode("run"), 0o755);
    assert!(sandbox.meta("run/pipe").file_type().is_fifo());
    assert_eq!(mode("run/pipe"), 0o600);
}

#[test]
fn later_entries_replace_earlier_ones() {
    let sandbox = unpacked(
        layer()
            .file("a", b"file")
            .dir("a/", 0o700)
            .file("a/inner", b"kept")
            .dir("a/", 0o711)
            .dir("d/", 0o755)
            .file("d/f", b"gone")
            .file("d", b"now a file")
            .symlink("s", "/etc")
            .file("s", b"not written through the link"),
    );
    assert!(sandbox.meta("a").is_dir());
    assert_eq!(sandbox.meta("a").mode() & 0o7777, 0o711);
    assert_eq!(sandbox.read("a/inner"), b"kept");
    assert_eq!(sandbox.read("d"), b"now a file");
    assert!(sandbox.meta("s").is_file());
}

#[test]
fn converts_whiteouts_to_overlay_format() {
    let sandbox = unpacked(
        layer()
            .file("etc/.wh.passwd", b"")
            .file("var/.wh..wh..opq", b"")
            .file(".wh..wh.plnk", b"")
            .dir("kept/", 0o755)
            .file(".wh.kept", b"")
            .file("usr/.wh.lib", b"")
            .dir("usr/lib/", 0o755)
            .file("home/f", b"mine")
            .file("home/.wh.f", b""),
    );
    let passwd = sandbox.meta("etc/passwd");
    assert!(passwd.file_type().is_char_device());
    assert_eq!(passwd.rdev(), 0);
    let opaque = |path| sandbox.xattr(path, OVERLAY_OPAQUE_XATTR);
    assert_eq!(opaque("var"), Some(b"y".to_vec()));
    // A whiteout hides lower layers only: over this layer's directory, or
    // followed by one, it makes that directory opaque.
    assert_eq!(opaque("kept"), Some(b"y".to_vec()));
    assert_eq!(opaque("usr/lib"), Some(b"y".to_vec()));
    assert_eq!(opaque("etc"), None);
    assert_eq!(sandbox.read("home/f"), b"mine");
    for name in fs::read_dir(sandbox.dest()).unwrap() {
        let name = name.unwrap().file_name();
        assert!(!name.as_bytes().starts_with(WHITEOUT_PREFIX), "{name:?}");
    }
}

#[test]
fn rejects_hostile_entries_without_escaping() {
    let out = Sandbox::new().outside().display().to_string();
    let linked = |problem| LinkTarget {
        target: String::new(),
        problem: Box::new(problem),
    };
    let symlink_in = |path: &str| SymlinkInPath(path.to_string());
    let absolute_escape = "/wharf-unpack-test-escaped";
    #[rustfmt::skip]
    let cases = [
        (layer().file("../escaped", b""), ParentComponent),
        (layer().file("a/../../escaped", b""), ParentComponent),
        (layer().file(absolute_escape, b""), AbsolutePath),
        (layer().symlink("l", &out).file("l/escaped", b""), symlink_in("l")),
        (layer().symlink("up", "..").file("up/escaped", b""), symlink_in("up")),
        (layer().symlink("a", &out).dir("a/b/c/", 0o755), symlink_in("a")),
        (layer().symlink("l", &out).file("l/.wh..wh..opq", b""), symlink_in("l")),
        (layer().symlink("l", &out).file("l/.wh.escaped", b""), symlink_in("l")),
        (layer().hardlink("h", "../../etc/passwd"), linked(ParentComponent)),
        (layer().hardlink("h", "/etc/passwd"), linked(AbsolutePath)),
        (layer().symlink("etc", "/etc").hardlink("h", "etc/passwd"), linked(symlink_in("etc"))),
        (layer().hardlink("h", "missing"), linked(NotFound)),
        (layer().dir("d/", 0o755).hardlink("h", "d"), linked(IsDirectory)),
        (layer().file("h", b"").hardlink("h", "h"), linked(LinksToItself)),
        (layer().raw(EntryType::Block, "sda", "", b"", |_| {}), DeviceNotAllowed),
        (layer().raw(EntryType::Char, "mem", "", b"", |_| {}), DeviceNotAllowed),
        (layer().file("f", b"").file("f/g", b""), NotADirectory("f".into())),
        (layer().file(".", b""), RootNotDirectory),
        (layer().raw(EntryType::new(b'V'), "v", "", b"", |_| {}), UnsupportedType(b'V')),
        (layer().pax(&[("path", b"a\0b")]).file("x", b""), NulByte),
        (layer().symlink("empty", ""), EmptySymlinkTarget),
        (layer().file("dir/.wh..", b""), EmptyWhiteout),
        (layer().pax(&[("mtime", b"soon")]).file("x", b""), bad_field("PAX mtime", "soon")),
    ];
    for (layer, expected) in cases {
        let sandbox = Sandbox::new();
        let error = sandbox
            .unpack(layer, &UnpackOptions::default())
            .unwrap_err();
        assert_eq!(error.kind(), Kind::InvalidArgument, "{error}");
        let UnpackError::Rejected { problem, .. } = error else {
            panic!("{error}")
        };
        // Hardlink rejections are compared by problem only.
        let problem = match problem {
            LinkTarget { problem, .. } => linked(*problem),
            other => other,
        };
        assert_eq!(problem, expected);
        assert_eq!(
            fs::read_dir(sandbox.outside()).unwrap().count(),
            0,
            "{expected:?}"
        );
        assert!(!sandbox.0.path().join("escaped").exists(), "{expected:?}");
    }
    assert!(!Path::new(absolute_escape).exists());
}

#[test]
fn creates_devices_only_when_allowed() {
    let layer = || {
        layer().raw(EntryType::Block, "dev/sda1", "", b"", |h| {
            h.set_device_major(8).unwrap();
            h.set_device_minor(1).unwrap();
        })
    };
    let allow = UnpackOptions {
        allow_devices: true,
        ..UnpackOptions::default()
    };
    let sandbox = Sandbox::new();
    sandbox.unpack(layer(), &allow).unwrap();
    let device = sandbox.meta("dev/sda1");
    assert!(device.file_type().is_block_device());
    assert_eq!(device.rdev(), stat::makedev(8, 1));
    assert!(Sandbox::new()
        .unpack(layer(), &UnpackOptions::default())
        .is_err());
}

#[test]
fn bounds_extension_headers() {
    let options = UnpackOptions {
        max_header_bytes: 64 * 1024,
        ..UnpackOptions::default()
    };
    let huge = vec![b'a'; 128 * 1024];
    let huge_pax = layer()
        .file("ok", b"")
        .pax(&[("comment", &huge)])
        .file("f", b"");
    let long_name = EntryType::GNULongName;
    let huge_long_name = layer()
        .raw(long_name, "././@LongLink", "", &huge, |_| {})
        .file("f", b"");
    for layer in [huge_pax, huge_long_name] {
        let error = Sandbox::new().unpack(layer, &options).unwrap_err();
        assert!(
            matches!(&error, UnpackError::HeaderTooLarge { limit: 65536, .. }),
            "{error}"
        );
        assert_eq!(error.kind(), Kind::InvalidArgument);
    }
    // Long names within the limit work.
    let long_path = format!("{}/{}", "d".repeat(200), "f".repeat(200));
    let sandbox = Sandbox::new();
    let layer = layer()
        .pax(&[("path", long_path.as_bytes())])
        .file("short", b"x");
    sandbox.unpack(layer, &options).unwrap();
    assert_eq!(sandbox.read(&long_path), b"x");
}

#[test]
fn detects_gzip_zstd_and_plain_tar() {
    use std::process::{Command, Stdio};
    let tar = layer().file("hello", b"world").bytes();
    let zstd = |data: &[u8]| {
        let (input, output) = (Stdio::piped(), Stdio::piped());
        let mut child = Command::new("zstd")
            .arg("-qc")
            .stdin(input)
            .stdout(output)
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(data).unwrap();
        child.wait_with_output().unwrap().stdout
    };
    let gzip = |data: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), Default::default());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    };
    let (head, tail) = tar.split_at(700);
    let skippable_frame = [
        &0x184D_2A50u32.to_le_bytes()[..],
        &3u32.to_le_bytes(),
        b"abc",
    ]
    .concat();
    let streams = [
        tar.clone(),
        gzip(&tar),
        [gzip(head), gzip(tail)].concat(),
        zstd(&tar),
        [zstd(head), skippable_frame, zstd(tail)].concat(),
    ];
    for (index, stream) in streams.into_iter().enumerate() {
        let mut plain = Vec::new();
        decompressed(io::Cursor::new(stream))
            .unwrap()
            .read_to_end(&mut plain)
            .unwrap();
        assert!(plain == tar, "stream {index} decodes differently");
    }
    let sandbox = Sandbox::new();
    let options = UnpackOptions::default();
    unpack_layer(
        decompressed(io::Cursor::new(zstd(&tar))).unwrap(),
        &sandbox.dest(),
        &options,
        &options.standalone(1024),
    )
    .unwrap();
    assert_eq!(sandbox.read("hello"), b"world");
    let corrupt = decompressed(io::Cursor::new([&gzip(&tar)[..20], &[0xff; 64]].concat())).unwrap();
    let control = options.standalone(1024);
    let error = unpack_layer(corrupt, &Sandbox::new().dest(), &options, &control).unwrap_err();
    assert!(matches!(error, UnpackError::Archive { .. }), "{error}");
    assert_eq!(error.kind(), Kind::InvalidArgument);
}

#[test]
fn requires_an_empty_destination() {
    let sandbox = Sandbox::new();
    fs::write(sandbox.dest().join("existing"), b"").unwrap();
    let error = sandbox
        .unpack(layer(), &UnpackOptions::default())
        .unwrap_err();
    assert!(
        matches!(error, UnpackError::DestinationNotEmpty(_)),
        "{error}"
    );
    let missing = sandbox.0.path().join("missing");
    let options = UnpackOptions::default();
    let control = options.standalone(0);
    let error = unpack_layer(&b""[..], &missing, &options, &control).unwrap_err();
    assert!(matches!(error, UnpackError::Destination { .. }), "{error}");
    assert_eq!(error.kind(), Kind::Internal);
}

#[test]
fn parses_pax_times() {
    let parse = |s: &str| parse_pax_time(s.as_bytes()).map(|t| (t.tv_sec(), t.tv_nsec()));
    assert_eq!(parse("1600000000"), Some((1_600_000_000, 0)));
    assert_eq!(parse("1.000000001999"), Some((1, 1)));
    assert_eq!(parse("-1.25"), Some((-2, 750_000_000)));
    assert_eq!(parse("1.5x"), None);
    assert_eq!(parse(""), None);
}

const MIB: u64 = 1024 * 1024;

/// A tar header for a regular file `name` of `size` bytes.
fn file_header(name: &str, size: u64) -> Header {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(EntryType::Regular);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(size);
    header.set_cksum();
    header
}

/// A gzip layer holding one file of `size` zeros (a multiple of 1 MiB): a
/// few KiB for many MiB. Built from gzip members, which may be concatenated,
/// so that one MiB of zeros is compressed only once.
fn gzip_bomb(size: u64) -> Vec<u8> {
    let gzip = |data: &[u8]| {
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(data).unwrap();
        encoder.finish().unwrap()
    };
    assert_eq!(size % MIB, 0);
    let mebibyte = gzip(&vec![0u8; MIB as usize]);
    let mut layer = gzip(file_header("zeros", size).as_bytes());
    for _ in 0..size / MIB {
        layer.extend_from_slice(&mebibyte);
    }
    // The end-of-archive marker.
    layer.extend(gzip(&[0u8; 1024]));
    layer
}

/// Disk space `path` takes, as opposed to its length.
fn allocated(path: &Path) -> u64 {
    fs::symlink_metadata(path).unwrap().blocks() * 512
}

/// Unpacks a compressed layer as a pull does.
fn unpack_compressed(
    sandbox: &Sandbox,
    layer: &[u8],
    options: &UnpackOptions,
    control: &LayerControl,
) -> Result<UnpackStats, UnpackError> {
    let stream = decompressed(io::Cursor::new(layer.to_vec())).unwrap();
    unpack_layer(stream, &sandbox.dest(), options, control)
}

#[test]
fn a_gzip_bomb_stops_at_the_layer_limit() {
    let bomb = gzip_bomb(16 * MIB);
    assert!(bomb.len() < 64 * 1024, "{} bytes", bomb.len());
    let options = UnpackOptions {
        max_layer_bytes: 4 * MIB,
        ..UnpackOptions::default()
    };
    let sandbox = Sandbox::new();
    let control = options.standalone(bomb.len() as u64);
    assert_eq!(control.limit.setting, LimitSetting::Layer);
    let error = unpack_compressed(&sandbox, &bomb, &options, &control).unwrap_err();
    assert_eq!(error.kind(), Kind::ResourceExhausted, "{error}");
    let UnpackError::TooLarge { limit, last_entry } = &error else {
        panic!("{error}")
    };
    assert_eq!((limit.bytes, limit.setting), (4 * MIB, LimitSetting::Layer));
    assert_eq!(last_entry.as_deref(), Some("zeros"));
    let message = error.to_string();
    assert!(
        message.contains("[image] max_layer_unpacked_bytes") && message.contains("4194304"),
        "{message}"
    );
    // Stopped at the limit: at most one more buffer was written.
    let written = fs::symlink_metadata(sandbox.dest().join("zeros")).unwrap();
    assert!(
        written.len() <= 4 * MIB + COPY_BUFFER_SIZE as u64,
        "{}",
        written.len()
    );

    // The ratio to the compressed size, with its allowance, is tighter here.
    let options = UnpackOptions {
        max_ratio: 10,
        ratio_allowance: MIB,
        ..UnpackOptions::default()
    };
    let control = options.standalone(bomb.len() as u64);
    let expected = bomb.len() as u64 * 10 + MIB;
    let error = unpack_compressed(&Sandbox::new(), &bomb, &options, &control).unwrap_err();
    assert_eq!(error.kind(), Kind::ResourceExhausted);
    let UnpackError::TooLarge { limit, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!(limit.bytes, expected);
    assert!(matches!(
        limit.setting,
        LimitSetting::Ratio { ratio: 10, .. }
    ));
    assert!(error.to_string().contains("max_unpack_ratio"), "{error}");

    // Within the limits the same layer unpacks, its zeros left as holes.
    let sandbox = Sandbox::new();
    let stats = unpack_compressed(
        &sandbox,
        &bomb,
        &UnpackOptions::default(),
        &control_for(&bomb),
    )
    .unwrap();
    let zeros = sandbox.dest().join("zeros");
    assert_eq!(fs::metadata(&zeros).unwrap().len(), 16 * MIB);
    assert!(
        allocated(&zeros) < MIB,
        "{} bytes allocated",
        allocated(&zeros)
    );
    assert_eq!(stats.bytes, 0, "nothing but holes written");
}

fn control_for(layer: &[u8]) -> LayerControl {
    UnpackOptions::default().standalone(layer.len() as u64)
}

#[test]
fn zero_runs_become_holes_and_data_stays_intact() {
    // Data, a long zero run, data not aligned to a block, then zeros at the end.
    let mut data = vec![0u8; 3 * MIB as usize];
    data[..100].fill(b'a');
    data[MIB as usize + 4000..MIB as usize + 4200].fill(b'b');
    data[2 * MIB as usize - 1] = b'c';
    let sandbox = unpacked(layer().file("mixed", &data));
    assert_eq!(sandbox.read("mixed"), data);
    let path = sandbox.dest().join("mixed");
    assert!(allocated(&path) <= 64 * 1024, "{}", allocated(&path));
}

/// A GNU sparse entry: `data` at `offset`, in a file of `real_size` bytes.
fn sparse_layer(name: &str, offset: u64, data: &[u8; 512], real_size: u64) -> Layer {
    let mut header = Header::new_gnu();
    header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
    header.set_entry_type(EntryType::GNUSparse);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(MTIME);
    header.set_size(data.len() as u64);
    let gnu = header.as_gnu_mut().unwrap();
    gnu.set_real_size(real_size);
    gnu.sparse[0].set_offset(offset);
    gnu.sparse[0].set_length(data.len() as u64);
    // A last, empty block marks the end of the file.
    gnu.sparse[1].set_offset(real_size);
    gnu.sparse[1].set_length(0);
    header.set_cksum();
    let mut builder = Builder::new(Vec::new());
    builder.append(&header, &data[..]).unwrap();
    Layer(builder)
}

#[test]
fn sparse_entries_count_their_holes_and_stay_sparse() {
    // 16 GiB declared in a layer of a few KiB: beyond the ratio allowance,
    // refused before any time or disk is spent on it.
    let huge = sparse_layer("huge", 4096, &[b'x'; 512], 16 << 30);
    let sandbox = Sandbox::new();
    let started = Instant::now();
    let error = sandbox.unpack(huge, &UnpackOptions::default()).unwrap_err();
    assert_eq!(error.kind(), Kind::ResourceExhausted, "{error}");
    assert!(matches!(
        error,
        UnpackError::TooLarge {
            limit: ByteLimit {
                setting: LimitSetting::Ratio { .. },
                ..
            },
            ..
        }
    ));
    assert!(started.elapsed() < Duration::from_secs(5));
    let path = sandbox.dest().join("huge");
    assert!(!path.exists() || allocated(&path) < MIB);

    // Within the limits: the right content, allocated only where data is.
    let size = 256 * MIB;
    let sandbox = Sandbox::new();
    let stats = sandbox
        .unpack(
            sparse_layer("sparse", 100 * MIB, &[b'y'; 512], size),
            &UnpackOptions::default(),
        )
        .unwrap();
    assert_eq!(stats.bytes, 512);
    let path = sandbox.dest().join("sparse");
    assert_eq!(fs::metadata(&path).unwrap().len(), size);
    assert!(allocated(&path) < MIB, "{}", allocated(&path));
    let mut file = File::open(&path).unwrap();
    let mut around = vec![0u8; 1024];
    std::io::Seek::seek(&mut file, io::SeekFrom::Start(100 * MIB - 256)).unwrap();
    file.read_exact(&mut around).unwrap();
    assert_eq!(around[..256], [0; 256]);
    assert_eq!(around[256..768], [b'y'; 512]);
    assert_eq!(around[768..], [0; 256]);
}

#[test]
fn the_image_limit_spans_its_layers() {
    let options = UnpackOptions {
        max_image_bytes: 3 * MIB,
        ..UnpackOptions::default()
    };
    let budget = options.image_budget();
    let control = LayerControl {
        limit: options.layer_limit(4 * MIB),
        image: Arc::clone(&budget),
        cancel: Cancel::default(),
    };
    let data = vec![b'd'; 2 * MIB as usize];
    let first = Sandbox::new();
    let bytes = layer().file("one", &data).bytes();
    unpack_layer(&bytes[..], &first.dest(), &options, &control).unwrap();
    let second = Sandbox::new();
    let bytes = layer().file("two", &data).bytes();
    let error = unpack_layer(&bytes[..], &second.dest(), &options, &control).unwrap_err();
    assert_eq!(error.kind(), Kind::ResourceExhausted);
    let UnpackError::TooLarge { limit, .. } = &error else {
        panic!("{error}")
    };
    assert_eq!((limit.bytes, limit.setting), (3 * MIB, LimitSetting::Image));
    assert!(
        error.to_string().contains("max_image_unpacked_bytes"),
        "{error}"
    );
    // Another image has its own budget.
    let third = Sandbox::new();
    let control = options.standalone(4 * MIB);
    unpack_layer(&bytes[..], &third.dest(), &options, &control).unwrap();
}

/// A tar stream that never ends: one file header declaring 1 TiB, then an
/// endless supply of data.
struct Endless {
    header: Vec<u8>,
    sent: usize,
}

impl Read for Endless {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.sent < self.header.len() {
            let n = buf.len().min(self.header.len() - self.sent);
            buf[..n].copy_from_slice(&self.header[self.sent..self.sent + n]);
            self.sent += n;
            return Ok(n);
        }
        buf.fill(b'e');
        Ok(buf.len())
    }
}

#[test]
fn cancel_stops_a_running_unpack() {
    let sandbox = Sandbox::new();
    let options = UnpackOptions {
        max_layer_bytes: u64::MAX,
        max_image_bytes: u64::MAX,
        max_ratio: u64::MAX,
        ..UnpackOptions::default()
    };
    let control = options.standalone(1);
    let cancel = control.cancel.clone();
    let (done, finished) = std::sync::mpsc::channel();
    let dest = sandbox.dest();
    let endless = Endless {
        header: file_header("endless", 1 << 40).as_bytes().to_vec(),
        sent: 0,
    };
    std::thread::spawn(move || {
        let _ = done.send(unpack_layer(endless, &dest, &options, &control));
    });
    let file = sandbox.dest().join("endless");
    let deadline = Instant::now() + Duration::from_secs(20);
    while fs::metadata(&file).map(|m| m.len()).unwrap_or(0) < MIB {
        assert!(
            Instant::now() < deadline,
            "the unpack never started writing"
        );
        std::thread::yield_now();
    }
    // As when the future waiting for a pull's layer is dropped.
    drop(cancel.on_drop());
    // Returned, so the thread writes no more.
    let result = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("the unpack stops soon after a cancel");
    let error = result.unwrap_err();
    assert!(matches!(error, UnpackError::Cancelled), "{error}");
}

#[test]
fn long_paths_get_xattrs_opaque_markers_and_replacements() {
    let component = "d".repeat(200);
    let deep_dir = vec![component.as_str(); 25].join("/");
    assert!(deep_dir.len() > 4096);
    let file = format!("{deep_dir}/file");
    let layer = layer()
        .pax(&[
            ("path", file.as_bytes()),
            ("SCHILY.xattr.user.deep", b"yes"),
        ])
        .file("placeholder", b"data")
        .pax(&[("path", format!("{deep_dir}/.wh..wh..opq").as_bytes())])
        .file("placeholder", b"")
        .pax(&[("path", format!("{deep_dir}/old/inner").as_bytes())])
        .file("placeholder", b"")
        // Replaces the directory "old" and what it holds.
        .pax(&[("path", format!("{deep_dir}/old").as_bytes())])
        .file("placeholder", b"now a file");
    let sandbox = unpacked(layer);
    // Walk down with descriptors: the full path is too long for one call.
    let mut directory = fcntl::open(
        &sandbox.dest(),
        OFlag::O_RDONLY | OFlag::O_DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    for _ in 0..25 {
        directory = fcntl::openat(
            &directory,
            component.as_str(),
            OFlag::O_RDONLY | OFlag::O_DIRECTORY,
            Mode::empty(),
        )
        .unwrap();
    }
    assert_eq!(
        fgetxattr(&directory, OVERLAY_OPAQUE_XATTR),
        Some(b"y".to_vec())
    );
    let file = fcntl::openat(&directory, "file", OFlag::O_RDONLY, Mode::empty()).unwrap();
    assert_eq!(fgetxattr(&file, "user.deep"), Some(b"yes".to_vec()));
    let old = fcntl::openat(&directory, "old", OFlag::O_RDONLY, Mode::empty()).unwrap();
    let mut content = String::new();
    File::from(old).read_to_string(&mut content).unwrap();
    assert_eq!(content, "now a file");
}

#[allow(unsafe_code)]
fn fgetxattr(fd: &OwnedFd, name: &str) -> Option<Vec<u8>> {
    let name = CString::new(name).unwrap();
    let mut value = vec![0u8; 256];
    let (buffer, size) = (value.as_mut_ptr().cast(), value.len());
    // SAFETY: an open descriptor, a NUL-terminated name and a writable
    // buffer of `size` bytes, all alive for the duration of the call.
    let len = unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), buffer, size) };
    value.truncate(usize::try_from(len).ok()?);
    Some(value)
}

/// A 58-byte zstd blob the fuzzer found that made ruzstd 0.8 index out of
/// bounds: with `panic = "abort"` one layer could kill the daemon. It must
/// be an error, never a panic.
#[test]
fn a_hostile_zstd_frame_is_an_error_not_a_panic() {
    let input = include_bytes!("../../../fuzz/regressions/unpack_layer/zstd-fse-table-index-panic");
    let blob = input[1..].to_vec();
    let dest = tempfile::tempdir().unwrap();
    let result = std::panic::catch_unwind(|| {
        let mut reader = super::decompressed(std::io::Cursor::new(blob.clone())).unwrap();
        let control = control_for(&blob);
        let unpacked = unpack_layer(
            &mut reader,
            dest.path(),
            &UnpackOptions::default(),
            &control,
        );
        let drained = std::io::copy(&mut reader, &mut std::io::sink());
        (unpacked.is_err(), drained.is_err())
    });
    let (unpack_failed, drain_failed) = result.expect("decompression must not panic");
    assert!(unpack_failed || drain_failed, "a corrupt frame is an error");
}
