use super::Rejection::*;
use super::*;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
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
        unpack_layer(&layer.bytes()[..], &self.dest(), options)
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
    )
    .unwrap();
    assert_eq!(sandbox.read("hello"), b"world");
    let corrupt = decompressed(io::Cursor::new([&gzip(&tar)[..20], &[0xff; 64]].concat())).unwrap();
    let error = unpack_layer(corrupt, &Sandbox::new().dest(), &options).unwrap_err();
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
    let error = unpack_layer(&b""[..], &missing, &UnpackOptions::default()).unwrap_err();
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
