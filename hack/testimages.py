#!/usr/bin/env python3
"""Build deterministic test images in memory and push them to a registry.

usage: hack/testimages.py --registry HOST:PORT [--user USER:PASS]
                          [--busybox PATH] push SET [SET...]

SET is "wharf" (Wharf's own test images), "critest" (stand-ins for the images
critest pulls; needs --busybox from hack/build-busybox.sh) or "bench" (one
big image, wharf-bench/big:latest).

Images are made from files on this machine (mainly a static busybox), never
pulled from anywhere, and pushed through the plain registry HTTP API v2. The
same inputs always give the same bytes, so the same digests: tar entries are
sorted, every mtime is fixed, owners are numeric and gzip headers carry no
time.

Prints a JSON object on stdout mapping every pushed reference to a digest:
  "HOST:PORT/repo:tag"                     manifest (or index/list) digest
  "HOST:PORT/repo:tag#config"              config digest (the image ID)
  "HOST:PORT/repo:tag#linux/arm/v7"        a platform's manifest in an index
  "HOST:PORT/repo:tag#linux/arm/v7#config" that manifest's config digest
"""

import argparse
import base64
import gzip
import hashlib
import io
import json
import pathlib
import struct
import subprocess
import sys
import tarfile
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field

FIXED_MTIME = 0
FIXED_CREATED = "1970-01-01T00:00:00Z"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def canonical_json(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), sort_keys=True).encode()


def as_list(tags) -> list:
    return [tags] if isinstance(tags, str) else list(tags)


# --- Layer contents ---------------------------------------------------------


@dataclass
class Entry:
    """One tar member: a header plus, for regular files, its content."""

    info: tarfile.TarInfo
    data: bytes = b""


def _header(path, kind, mode, uid=0, gid=0, mtime=FIXED_MTIME) -> tarfile.TarInfo:
    info = tarfile.TarInfo(path.lstrip("/"))
    info.type, info.mode, info.uid, info.gid, info.mtime = kind, mode, uid, gid, mtime
    return info


def file(path, data, mode=0o644, uid=0, gid=0, mtime=FIXED_MTIME, xattrs=None) -> Entry:
    if isinstance(data, str):
        data = data.encode()
    info = _header(path, tarfile.REGTYPE, mode, uid, gid, mtime)
    info.size = len(data)
    # Layers carry xattrs as PAX records, the way docker and containerd do.
    info.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in (xattrs or {}).items()}
    return Entry(info, data)


def directory(path, mode=0o755, uid=0, gid=0) -> Entry:
    return Entry(_header(path, tarfile.DIRTYPE, mode, uid, gid))


def symlink(path, target) -> Entry:
    info = _header(path, tarfile.SYMTYPE, 0o777)
    info.linkname = target
    return Entry(info)


def hardlink(path, target, mode=0o644) -> Entry:
    # Some extractors chmod the link with the header's mode (docker's does),
    # so it should repeat the target's mode.
    info = _header(path, tarfile.LNKTYPE, mode)
    info.linkname = target.lstrip("/")
    return Entry(info)


def block_device(path, major, minor, mode=0o660) -> Entry:
    info = _header(path, tarfile.BLKTYPE, mode)
    info.devmajor, info.devminor = major, minor
    return Entry(info)


def whiteout(path) -> Entry:
    """Hides `path` of the layers below (OCI whiteout file)."""
    parent, _, name = path.rpartition("/")
    return file(f"{parent}/.wh.{name}", b"")


def opaque_marker(dir_path) -> Entry:
    """Hides everything the layers below have under `dir_path`."""
    return file(f"{dir_path.rstrip('/')}/.wh..wh..opq", b"")


def hardlinked_files(paths, data, mode=0o755) -> list:
    """One file under many names. Since entries are written sorted, the name
    that sorts first holds the content and the others link to it (a link must
    follow its target in the tar)."""
    first, *others = sorted(p.lstrip("/") for p in paths)
    return [file(first, data, mode)] + [hardlink(p, first, mode) for p in others]


def _with_parent_dirs(entries) -> list:
    """Adds a 0755 directory entry for every parent the entries lack, as image
    builders do, so extraction never has to invent one."""
    names = {e.info.name.rstrip("/") for e in entries}
    parents = set()
    for name in names:
        parts = name.split("/")[:-1]
        parents.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    return entries + [directory(p) for p in sorted(parents - names)]


class Layer:
    """A compressed layer blob, built from entries.

    compression: "gzip", "zstd" or None. verbatim=True writes the entries
    exactly as given (order, names, no parent directories) for hostile layers.
    """

    def __init__(self, entries, compression="gzip", verbatim=False, gzip_level=9):
        if not verbatim:
            entries = sorted(_with_parent_dirs(list(entries)), key=lambda e: e.info.name)
        tar = _tar_bytes(entries)
        self.diff_id = sha256_digest(tar)
        self.compression = compression
        if compression == "gzip":
            self.blob = gzip.compress(tar, compresslevel=gzip_level, mtime=0)
        elif compression == "zstd":
            self.blob = subprocess.run(
                ["zstd", "-q", "-c", "-3"], input=tar, capture_output=True, check=True
            ).stdout
        elif compression is None:
            self.blob = tar
        else:
            raise ValueError(f"unknown compression {compression!r}")
        self.digest = sha256_digest(self.blob)

    def media_type(self, oci: bool) -> str:
        base = OCI_LAYER if oci else DOCKER_LAYER
        if self.compression is None:
            return base
        if not oci and self.compression != "gzip":
            raise ValueError("Docker schema2 layers are gzip or uncompressed")
        # Docker spells the gzip suffix ".gzip", OCI "+gzip".
        return base + ("+" if oci else ".") + self.compression


def _tar_bytes(entries) -> bytes:
    out = io.BytesIO()
    # PAX keeps long names and xattrs; tarfile writes header names as given,
    # so hostile names ("../x", "/etc/x") survive into the blob.
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for entry in entries:
            tar.addfile(entry.info, io.BytesIO(entry.data) if entry.info.isreg() else None)
    return out.getvalue()


# --- Images and indexes -----------------------------------------------------


@dataclass(frozen=True)
class Platform:
    os: str = "linux"
    architecture: str = "amd64"
    variant: str = ""

    def descriptor(self) -> dict:
        fields = {"os": self.os, "architecture": self.architecture}
        return fields | ({"variant": self.variant} if self.variant else {})

    def __str__(self):
        return "/".join(filter(None, (self.os, self.architecture, self.variant)))


@dataclass
class Image:
    """An image: layers plus the runtime config (the config file's "config")."""

    layers: list
    config: dict = field(default_factory=dict)
    oci: bool = False
    platform: Platform = Platform()

    def __post_init__(self):
        self.config_blob = canonical_json(
            self.platform.descriptor()
            | {
                "created": FIXED_CREATED,
                "config": self.config,
                "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in self.layers]},
                "history": [{"created": FIXED_CREATED, "created_by": "hack/testimages.py"}]
                * len(self.layers),
            }
        )
        self.media_type = OCI_MANIFEST if self.oci else DOCKER_MANIFEST
        self.manifest = canonical_json(
            {
                "schemaVersion": 2,
                "mediaType": self.media_type,
                "config": descriptor(OCI_CONFIG if self.oci else DOCKER_CONFIG, self.config_blob),
                "layers": [
                    {"mediaType": l.media_type(self.oci), "size": len(l.blob), "digest": l.digest}
                    for l in self.layers
                ],
            }
        )
        self.digest = sha256_digest(self.manifest)
        self.config_digest = sha256_digest(self.config_blob)


def descriptor(media_type, blob) -> dict:
    return {"mediaType": media_type, "size": len(blob), "digest": sha256_digest(blob)}


def index_manifest(images, docker: bool) -> bytes:
    """An OCI image index, or with docker=True a Docker manifest list."""
    media_type = DOCKER_LIST if docker else OCI_INDEX
    return canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                descriptor(i.media_type, i.manifest) | {"platform": i.platform.descriptor()}
                for i in images
            ],
        }
    )


# --- Registry client --------------------------------------------------------


class Registry:
    """Just enough of the distribution API v2 to push blobs and manifests."""

    def __init__(self, address, user=None):
        self.base = f"http://{address}"
        self.address = address
        self.auth = "Basic " + base64.b64encode(user.encode()).decode() if user else None

    def _request(self, method, url, body=None, headers=None):
        request = urllib.request.Request(
            urllib.parse.urljoin(self.base, url), data=body, method=method, headers=headers or {}
        )
        if self.auth:
            request.add_header("Authorization", self.auth)
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                return response.status, response.headers
        except urllib.error.HTTPError as error:
            if method == "HEAD" and error.code == 404:
                return 404, error.headers
            detail = error.read().decode(errors="replace")
            raise SystemExit(f"{method} {url}: HTTP {error.code}: {detail}") from None

    def push_blob(self, repo, blob: bytes):
        digest = sha256_digest(blob)
        status, _ = self._request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return
        # Monolithic upload: open an upload session, then PUT all the bytes.
        _, headers = self._request("POST", f"/v2/{repo}/blobs/uploads/", b"")
        location = headers["Location"]
        separator = "&" if "?" in location else "?"
        self._request(
            "PUT",
            f"{location}{separator}digest={digest}",
            blob,
            {"Content-Type": "application/octet-stream"},
        )

    def push_manifest(self, repo, reference, media_type, body: bytes):
        _, headers = self._request(
            "PUT", f"/v2/{repo}/manifests/{reference}", body, {"Content-Type": media_type}
        )
        digest = sha256_digest(body)
        if headers.get("Docker-Content-Digest", digest) != digest:
            raise SystemExit(f"registry stored {repo}:{reference} under another digest")


class Pusher:
    """Pushes images and indexes, recording the digests of every reference."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.digests = {}

    def _push_image(self, repo, reference, image: Image):
        for blob in [l.blob for l in image.layers] + [image.config_blob]:
            self.registry.push_blob(repo, blob)
        self.registry.push_manifest(repo, reference, image.media_type, image.manifest)

    def image(self, repo, tags, image: Image):
        for tag in as_list(tags):
            self._push_image(repo, tag, image)
            ref = f"{self.registry.address}/{repo}:{tag}"
            self.digests[ref] = image.digest
            self.digests[f"{ref}#config"] = image.config_digest

    def index(self, repo, tags, images, docker=False):
        """Pushes `images` by digest, then an index (or Docker list) of them."""
        for image in images:
            if image.oci == docker:
                raise ValueError("Docker lists hold Docker manifests, OCI indexes OCI ones")
            self._push_image(repo, image.digest, image)
        body = index_manifest(images, docker)
        for tag in as_list(tags):
            self.registry.push_manifest(repo, tag, DOCKER_LIST if docker else OCI_INDEX, body)
            ref = f"{self.registry.address}/{repo}:{tag}"
            self.digests[ref] = sha256_digest(body)
            for image in images:
                self.digests[f"{ref}#{image.platform}"] = image.digest
                self.digests[f"{ref}#{image.platform}#config"] = image.config_digest


# --- Image sets -------------------------------------------------------------

HACK_DIR = pathlib.Path(__file__).resolve().parent

# /etc/passwd and /etc/group as in the official busybox image.
BUSYBOX_PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
bin:x:2:2:bin:/bin:/bin/false
sys:x:3:3:sys:/dev:/bin/false
sync:x:4:100:sync:/bin:/bin/sync
mail:x:8:8:mail:/var/spool/mail:/bin/false
www-data:x:33:33:www-data:/var/www:/bin/false
operator:x:37:37:Operator:/var:/bin/false
nobody:x:65534:65534:nobody:/home:/bin/false
"""
BUSYBOX_GROUP = """\
root:x:0:
daemon:x:1:
bin:x:2:
sys:x:3:
adm:x:4:
tty:x:5:
disk:x:6:
lp:x:7:
mail:x:8:
kmem:x:9:
wheel:x:10:root
cdrom:x:11:
dialout:x:18:
floppy:x:19:
video:x:28:
audio:x:29:
tape:x:32:
www-data:x:33:
operator:x:37:
utmp:x:43:
plugdev:x:46:
staff:x:50:
lock:x:54:
netdev:x:82:
users:x:100:
nogroup:x:65534:
"""
# wharfuser has a primary group of its own and one supplementary group.
WHARF_PASSWD = BUSYBOX_PASSWD + "wharfuser:x:1234:1234:wharf test user:/home/wharfuser:/bin/sh\n"
WHARF_GROUP = BUSYBOX_GROUP + "wharfuser:x:1234:\nwharfextra:x:5678:wharfuser\n"


def is_static_elf(binary: bytes) -> bool:
    """True for an ELF64 little-endian executable without an interpreter
    (PT_INTERP): one that runs in an image with no libc."""
    if binary[:6] != b"\x7fELF\x02\x01":
        return False
    phoff, = struct.unpack_from("<Q", binary, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", binary, 0x36)
    return all(struct.unpack_from("<I", binary, phoff + i * phentsize)[0] != 3 for i in range(phnum))


def busybox_applets(busybox) -> list:
    listing = subprocess.run([busybox, "--list"], capture_output=True, check=True, text=True)
    return sorted(set(listing.stdout.split()) - {"busybox"})


def busybox_rootfs(busybox, passwd, group) -> list:
    """A busybox root filesystem: every applet a hard link in /bin, since with
    symlinks, hiding /bin/ls (say) would hide busybox itself."""
    with open(busybox, "rb") as f:
        binary = f.read()
    if not is_static_elf(binary):
        raise SystemExit(f"{busybox} is not a static ELF64 binary (install busybox-static)")
    applet_paths = ["/bin/busybox"] + [f"/bin/{a}" for a in busybox_applets(busybox)]
    return hardlinked_files(applet_paths, binary) + [
        file("/etc/passwd", passwd),
        file("/etc/group", group),
        directory("/tmp", 0o1777),
        directory("/root", 0o700),
        directory("/home"),
        directory("/var"),
    ]


def runtime_config(cmd=("sh",), **extra) -> dict:
    """Config with a PATH; an empty cmd leaves Cmd out (for Entrypoint-only images)."""
    config = {"Env": [f"PATH={DEFAULT_PATH}"], "WorkingDir": "/"} | ({"Cmd": list(cmd)} if cmd else {})
    return config | extra


def wharf_set(push: Pusher, busybox):
    base = busybox_rootfs(busybox, WHARF_PASSWD, WHARF_GROUP)
    data = [
        file("/data/keep", "keep\n"),
        file("/data/gone", "gone\n"),
        file("/data/opaque/old", "old\n"),
        symlink("/data/link", "keep"),
        file("/data/xattr", "xattr\n", xattrs={"user.wharf": "test"}),
        file("/data/owned", "owned\n", mode=0o640, uid=1234, gid=1234),
        file("/data/mtime", "mtime\n", mtime=1234567890),  # 2009-02-13T23:31:30Z
        directory("/home/wharfuser", 0o755, uid=1234, gid=1234),
    ]
    deletions = [whiteout("/data/gone"), opaque_marker("/data/opaque"), file("/data/opaque/new", "new\n")]
    contents = [base, data, deletions]
    config = runtime_config(Labels={"wharf.test": "busybox"})

    gzip_layers = [Layer(c) for c in contents]
    busybox_image = Image(gzip_layers, config)
    push.image("wharf-test/busybox", ["latest", "v2"], busybox_image)
    push.image("wharf-test/user", "latest", Image(gzip_layers, config | {"User": "wharfuser"}))
    push.image("wharf-test/user", "uid", Image(gzip_layers, config | {"User": "1234:1234"}))
    push.image("wharf-test/oci", "latest", Image(gzip_layers, config, oci=True))
    push.image("wharf-test/zstd", "latest", Image([Layer(c, "zstd") for c in contents], config, oci=True))
    push.image("wharf-test/plain", "latest", Image([Layer(c, None) for c in contents], config, oci=True))

    for docker, repo in [(False, "wharf-test/multiarch"), (True, "wharf-test/multiarch-docker")]:
        oci = not docker
        images = [
            Image([Layer([file("/arch", "arm64\n")])], {"Labels": {"arch": "arm64"}}, oci,
                  Platform("linux", "arm64")),
            Image(gzip_layers, config | {"Labels": {"wharf.test": "busybox", "arch": "amd64"}}, oci),
            Image([Layer([file("/arch", "arm/v7\n")])], {"Labels": {"arch": "arm/v7"}}, oci,
                  Platform("linux", "arm", "v7")),
        ]
        push.index(repo, "latest", images, docker=docker)

    # A setuid-root shell in a layer: what host users must never reach.
    with open(busybox, "rb") as f:
        suid = [file("/bin/suid-sh", f.read(), mode=0o4755)]
    push.image("wharf-test/setuid", "latest", Image([Layer(c) for c in [base, suid]], config))
    # An Env far beyond what any process could exec (the kernel's argument
    # space is a few MiB): CreateContainer must refuse it quickly.
    huge_env = config | {"Env": config["Env"] + [f"V{i}=x" for i in range(300_000)]}
    push.image("wharf-test/huge-env", "latest", Image(gzip_layers, huge_env))

    absolute = file("/etc/evil", "evil\n")
    absolute.info.name = "/etc/evil"  # file() made it relative; keep the leading "/"
    hostile_layers = {
        "dotdot": [file("../escape", "escaped\n")],
        "absolute": [absolute],
        "symlink": [symlink("link", "/"), file("link/evil", "evil\n")],
        "hardlink": [hardlink("passwd", "../../etc/passwd")],
        "device": [directory("dev"), block_device("dev/sda", 8, 0)],
    }
    for kind, entries in hostile_layers.items():
        image = Image([Layer(entries, verbatim=True)], runtime_config(Labels={"wharf.test": f"evil-{kind}"}))
        push.image(f"wharf-test/evil-{kind}", "latest", image)


def compile_static(source, output):
    subprocess.run(["gcc", "-static", "-Os", "-s", "-Wall", "-o", output, source], check=True)
    with open(output, "rb") as f:
        return f.read()


def critest_set(push: Pusher, busybox):
    missing = {"pgrep", "ipcs", "netstat", "nslookup", "wget", "top"} - set(busybox_applets(busybox))
    if missing:
        raise SystemExit(
            f"{busybox} lacks applets {sorted(missing)}; build one with hack/build-busybox.sh"
        )
    with tempfile.TemporaryDirectory() as tmp:
        webserver = compile_static(HACK_DIR / "critest-images/webserver.c", f"{tmp}/webserver")
        nnp = compile_static(HACK_DIR / "critest-images/nnp.c", f"{tmp}/nnp")

    base = Layer(busybox_rootfs(busybox, BUSYBOX_PASSWD, BUSYBOX_GROUP))
    config = runtime_config()

    def amd64_list(repo, tags, extra_contents=(), image_config=config):
        """critest's images are Docker manifest lists holding one linux/amd64 image."""
        image = Image([base] + [Layer(c) for c in extra_contents], image_config)
        push.index(repo, tags, [image], docker=True)

    e2e, cri = "e2e-test-images", "k8s-staging-cri-tools"
    amd64_list(f"{e2e}/busybox", "1.29-2")

    nginx = [file("/usr/sbin/nginx", webserver, 0o755), directory("/var/run")]
    nginx_config = runtime_config(["nginx", "-g", "daemon off;"], ExposedPorts={"80/tcp": {}})
    amd64_list(f"{e2e}/nginx", "1.14-2", [nginx], nginx_config)
    hostnet_config = nginx_config | {"Env": nginx_config["Env"] + ["LISTEN_PORT=12003"]}
    push.image(f"{cri}/hostnet-nginx-amd64", "latest", Image([base, Layer(nginx)], hostnet_config))

    httpd = [file("/usr/local/bin/httpd-foreground", webserver, 0o755)]
    amd64_list(f"{e2e}/httpd", "2.4.39-4", [httpd], runtime_config(["httpd-foreground"]))
    nonewprivs = [file("/usr/local/bin/nnp", nnp, 0o4755)]  # setuid root
    amd64_list(f"{e2e}/nonewprivs", "1.3", [nonewprivs],
               runtime_config([], Entrypoint=["/usr/local/bin/nnp"]))

    # Like cri-tools' image-test Dockerfile: an empty marker file per image.
    for name in ["test-image-latest", "test-image-1", "test-image-2", "test-image-3"]:
        amd64_list(f"{cri}/{name}", "latest", [[file(f"/{name}", "")]])
    for tag in ["test", "all"]:
        amd64_list(f"{cri}/test-image-tag", tag, [[file(f"/{tag}", "")]])
    amd64_list(f"{cri}/test-image-tags", ["1", "2", "3"], [[file("/same-image", "")]])

    users = {"uid": "1002", "username": "www-data", "uid-group": "1003:1004",
             "username-group": "www-data:1004"}
    for suffix, user in users.items():
        amd64_list(f"{cri}/test-image-user-{suffix}", "latest", image_config=config | {"User": user})
    predefined_group = [
        file("/etc/passwd", BUSYBOX_PASSWD + "default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh\n"),
        file("/etc/group", BUSYBOX_GROUP + "default-user:x:1000:\ngroup-defined-in-image:x:50000:default-user\n"),
        directory("/home/default-user", 0o755, uid=1000, gid=1000),
    ]
    amd64_list(f"{cri}/test-image-predefined-group", "latest", [predefined_group],
               config | {"User": "1000"})

    # The benchmark's busybox flavours; a label per tag keeps their IDs apart.
    for tag in ["1.35.0-glibc", "1-uclibc", "1", "1-glibc", "1-musl", "latest"]:
        flavour = config | {"Labels": {"busybox.flavour": tag}}
        for repo in ["docker/library/busybox", "library/busybox"]:
            if repo.startswith("docker/") and tag == "latest":
                continue
            amd64_list(repo, tag, image_config=flavour)


def bench_set(push: Pusher, busybox):
    """A big image: a busybox base plus 5 layers of 44 MiB each of data that
    does not compress, generated from a fixed seed (SHAKE-256 as a stream)."""
    layers = [Layer(busybox_rootfs(busybox, BUSYBOX_PASSWD, BUSYBOX_GROUP))]
    file_size = 11 << 20
    for layer in range(5):
        entries = [
            file(f"/bench/layer{layer}/file{n}.bin",
                 hashlib.shake_256(f"wharf-bench/{layer}/{n}".encode()).digest(file_size))
            for n in range(4)
        ]
        # Level 1: the data is incompressible anyway, and level 9 is 10x slower.
        layers.append(Layer(entries, gzip_level=1))
    push.image("wharf-bench/big", "latest", Image(layers, runtime_config()))


IMAGE_SETS = {"wharf": wharf_set, "critest": critest_set, "bench": bench_set}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True, help="HOST:PORT of a plain-HTTP registry")
    parser.add_argument("--user", help="USER:PASS for basic auth")
    parser.add_argument("--busybox", default="/bin/busybox",
                        help="static busybox binary to build images from (default: %(default)s)")
    commands = parser.add_subparsers(dest="command", required=True)
    push_command = commands.add_parser("push", help="build and push image sets")
    push_command.add_argument("sets", nargs="+", choices=sorted(IMAGE_SETS), metavar="SET",
                              help="one or more of: " + ", ".join(IMAGE_SETS))
    args = parser.parse_args()

    push = Pusher(Registry(args.registry, args.user))
    for name in args.sets:
        IMAGE_SETS[name](push, args.busybox)
    json.dump(push.digests, sys.stdout, indent=2, sort_keys=True)
    print()


if __name__ == "__main__":
    main()
