#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (committed, small).

Run from anywhere: python3 fuzz/seeds.py. Deterministic, so re-running it
changes nothing unless this file changed. Each target's input format is
described at the top of its fuzz_targets/<target>.rs.
"""

import gzip
import hashlib
import io
import json
import os
import tarfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def write(target, name, data):
    directory = os.path.join(CORPUS, target)
    os.makedirs(directory, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(directory, name), "wb") as f:
        f.write(data)


def digest(seed):
    return "sha256:" + hashlib.sha256(seed.encode()).hexdigest()


# --- image_reference: the text of a reference -------------------------------
REFERENCES = [
    "busybox",
    "busybox:1.36",
    "library/busybox:latest",
    "docker.io/library/busybox",
    "index.docker.io/library/busybox:latest",
    "registry.k8s.io/pause:3.10",
    "ghcr.io/org/team/app:v1.2.3-rc.1",
    "localhost:5000/a/b@" + digest("x"),
    "quay.io/x/y:v2@" + digest("y"),
    "[::1]:5000/app:dev",
    "127.0.0.1:5000/test/img__a.b-c:tag_1",
    "Foo.Example.com/x",
    digest("id"),
    hashlib.sha256(b"bare").hexdigest(),
    "UPPER/case",
    "a:b:c",
    ":tag",
    "name@sha256:short",
]
for i, reference in enumerate(REFERENCES):
    write("image_reference", "ref-%02d" % i, reference)


# --- manifest: one Content-Type byte, then the document ---------------------
# Content-Type index as in fuzz_targets/manifest.rs: 0 none, 1 OCI manifest,
# 2 OCI index, 3 Docker manifest, 4 Docker list, 5 application/json.
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"


def manifest(media_type, config_type, layer_type, layers):
    doc = {
        "schemaVersion": 2,
        "config": {"mediaType": config_type, "digest": digest("config"), "size": 1469},
        "layers": [
            {"mediaType": layer_type, "digest": digest("layer%d" % i), "size": 1000 * (i + 1)}
            for i in range(layers)
        ],
    }
    if media_type:
        doc["mediaType"] = media_type
    return json.dumps(doc, separators=(",", ":"))


def index(media_type, platforms):
    entries = []
    for i, platform in enumerate(platforms):
        entry = {"mediaType": OCI_MANIFEST, "digest": digest("m%d" % i), "size": 500 + i}
        if platform:
            entry["platform"] = platform
        entries.append(entry)
    return json.dumps({"schemaVersion": 2, "mediaType": media_type, "manifests": entries},
                      separators=(",", ":"))


write("manifest", "oci-manifest", b"\x01" + manifest(OCI_MANIFEST, OCI_CONFIG,
      "application/vnd.oci.image.layer.v1.tar+gzip", 2).encode())
write("manifest", "docker-manifest", b"\x03" + manifest(None, DOCKER_CONFIG,
      "application/vnd.docker.image.rootfs.diff.tar.gzip", 1).encode())
write("manifest", "untyped-manifest", b"\x00" + manifest(None, OCI_CONFIG,
      "application/vnd.oci.image.layer.v1.tar+zstd", 3).encode())
write("manifest", "oci-index", b"\x02" + index(OCI_INDEX, [
    {"architecture": "amd64", "os": "linux"},
    {"architecture": "arm64", "os": "linux", "variant": "v8"},
    {"architecture": "arm", "os": "linux", "variant": "v7"},
    None,
]).encode())
write("manifest", "docker-list-json", b"\x05" + index(DOCKER_LIST, [
    {"architecture": "arm64", "os": "linux"},
    {"architecture": "amd64", "os": "linux"},
]).encode())
write("manifest", "schema1", b"\x00" + b'{"schemaVersion":1,"fsLayers":[]}')
write("manifest", "image-config", b"\x05" + json.dumps({
    "architecture": "amd64", "os": "linux",
    "config": {"User": "1000:1000", "Env": ["PATH=/bin"], "Cmd": ["/bin/sh"],
               "StopSignal": "SIGQUIT", "ExposedPorts": {"80/tcp": {}}},
    "rootfs": {"type": "layers", "diff_ids": [digest("d0"), digest("d1")]},
    "history": [{"created_by": "x"}],
}, separators=(",", ":")).encode())


# --- unpack_layer: one flag byte, then the blob -----------------------------
def ustar(entries):
    """entries: (name, type, data, linkname, mode, extra pax dict or None)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data, link, mode, pax in entries:
            info = tarfile.TarInfo(name)
            info.type = kind
            info.mode = mode
            info.mtime = 1500000000
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.linkname = link
            if pax:
                info.pax_headers = pax
            if kind == tarfile.CHRTYPE:
                info.devmajor, info.devminor = 1, 3
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)
    return out.getvalue()


REG, DIR, SYM, LNK = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
basic = ustar([
    ("./", DIR, b"", "", 0o755, None),
    ("etc/", DIR, b"", "", 0o755, None),
    ("etc/passwd", REG, b"root:x:0:0:root:/root:/bin/sh\n", "", 0o644, None),
    ("bin/sh", REG, b"#!fake\n", "", 0o755, None),
    ("bin/ash", LNK, b"", "bin/sh", 0o755, None),
    ("usr/bin/env", SYM, b"", "../../bin/sh", 0o777, None),
    ("tmp/", DIR, b"", "", 0o1777, None),
])
whiteouts = ustar([
    ("a/", DIR, b"", "", 0o755, None),
    ("a/.wh..wh..opq", REG, b"", "", 0o644, None),
    ("a/.wh.gone", REG, b"", "", 0o644, None),
    ("b/file", REG, b"x", "", 0o600, {"SCHILY.xattr.user.note": "hello",
                                       "SCHILY.xattr.security.capability": "\x01"}),
    ("long/" + "d" * 120 + "/" + "f" * 90, REG, b"long name", "", 0o644,
     {"mtime": "1500000000.123456789"}),
    ("dev/null", tarfile.CHRTYPE, b"", "", 0o666, None),
    ("fifo", tarfile.FIFOTYPE, b"", "", 0o644, None),
])
hostile = ustar([
    ("link", SYM, b"", "/etc", 0o777, None),
    ("link/passwd", REG, b"escape through a symlink", "", 0o644, None),
    ("up", SYM, b"", "..", 0o777, None),
    ("up/escaped", REG, b"escape", "", 0o644, None),
    ("../escaped", REG, b"escape", "", 0o644, None),
    ("/abs", REG, b"absolute", "", 0o644, None),
    ("hard", LNK, b"", "../../outer/canary", 0o644, None),
    ("dir/", DIR, b"", "", 0o755, None),
    ("dir", REG, b"replaces the directory", "", 0o644, None),
    ("self", LNK, b"", "self", 0o644, None),
])
write("unpack_layer", "basic.tar", b"\x00" + basic)
write("unpack_layer", "whiteouts-devices.tar", b"\x02" + whiteouts)
write("unpack_layer", "hostile.tar", b"\x00" + hostile)
write("unpack_layer", "basic.tar.gz", b"\x01" + gzip.compress(basic, mtime=0))
# A raw zstd frame of the basic layer would need the zstd module; a
# skippable frame followed by nothing exercises the zstd path's framing.
write("unpack_layer", "zstd-skippable", b"\x01" + bytes.fromhex("28b52ffd") + b"\x00" * 8
      + bytes.fromhex("505f2a18") + (4).to_bytes(4, "little") + b"skip")
write("unpack_layer", "small-header-limit.tar", b"\x04" + whiteouts)


# --- hosts_toml: one host byte, then the file ------------------------------
# Host index as in fuzz_targets/hosts_toml.rs: 0 docker.io, 1 registry.k8s.io,
# 2 localhost:5000, ..., 6 the first line of the text.
README_EXAMPLE = '''server = "https://registry.k8s.io"

[host."http://127.0.0.1:5000"]
  capabilities = ["pull", "resolve"]

[host."https://mirror.example.com"]
  capabilities = ["pull"]
  ca = "mirror-ca.pem"
  skip_verify = false
  [host."https://mirror.example.com".header]
    x-custom = "value"
'''
write("hosts_toml", "readme-example", b"\x01" + README_EXAMPLE.encode())
write("hosts_toml", "docker-hub-mirror", b"\x00" + b'''[host."https://mirror.gcr.io"]
  capabilities = ["pull", "resolve"]
  dial_timeout = "1m30s"
  override_path = false
  header = { authorization = ["Bearer x", "Basic y"] }
''')
write("hosts_toml", "local-server", b"\x02" + b'''server = "http://localhost:5000/prefix/v2"
override_path = true
ca = ["a.pem", "b.pem"]
proxy = "http://proxy.example.com:3128"
dial_timeout = "500ms"
[host."localhost:5001"]
  skip_verify = true
  client = [["cert.pem", "key.pem"]]
''')
write("hosts_toml", "host-from-text", b"\x06" + b"[fe80::1]:443\nserver = \"https://[fe80::1]\"\n")
write("hosts_toml", "bad-capability", b"\x05" + b'[host."https://x"]\ncapabilities = ["push", "fly"]\n')


# --- cri_convert: request kind byte, host-features byte, protobuf ------------
def varint(n):
    if n < 0:
        n += 1 << 64
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def field(number, value):
    """A protobuf field: int/bool as varint, str/bytes as length-delimited."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        return varint(number << 3) + varint(value)
    if isinstance(value, str):
        value = value.encode()
    return varint(number << 3 | 2) + varint(len(value)) + value


def msg(*fields):
    return b"".join(fields)


def kv_map(number, mapping):
    return b"".join(field(number, msg(field(1, k), field(2, v))) for k, v in mapping.items())


pod_metadata = msg(field(1, "nginx"), field(2, "0f4a-uid"), field(3, "default"), field(4, 0))
pod_dns = msg(field(1, "10.96.0.10"), field(1, "fe80::1%eth0"),
              field(2, "default.svc.cluster.local"), field(2, "cluster.local"),
              field(3, "ndots:5"))
pod_linux = msg(
    field(1, "/kubepods/besteffort/pod0f4a"),
    field(2, msg(field(1, msg(field(1, 0), field(2, 1), field(3, 0))))),
    kv_map(3, {"net.ipv4.ip_unprivileged_port_start": "0", "kernel.shm_rmid_forced": "1"}),
)
sandbox = msg(field(1, pod_metadata), field(2, "nginx-7d9"), field(3, "/var/log/pods/x"),
              field(4, pod_dns), kv_map(6, {"app": "nginx"}), field(8, pod_linux))
privileged_sandbox = msg(field(1, pod_metadata), field(2, "host"),
                         field(8, msg(field(2, msg(field(1, msg(field(1, 2), field(3, 2))),
                                                   field(6, True))))))

resources = msg(field(1, 100000), field(2, 50000), field(3, 512), field(4, 256 << 20),
                field(5, 500), field(6, "0-1"), field(7, "0"),
                field(8, msg(field(1, "2MB"), field(2, 4 << 20))),
                kv_map(9, {"memory.high": "200000000"}), field(10, 512 << 20))
security = msg(
    field(1, msg(field(1, "NET_ADMIN"), field(2, "CAP_MKNOD"), field(3, "NET_RAW"))),
    field(5, msg(field(1, 1000))),
    field(12, msg(field(1, 1000))),
    field(7, True),
    field(8, 29), field(8, 10),
    field(11, True),
    field(15, msg(field(1, 0))),
    field(16, msg(field(1, 1))),
)
container = msg(
    field(1, msg(field(1, "app"), field(2, 1))),
    field(2, msg(field(1, "docker.io/library/nginx:1.27"))),
    field(3, "/bin/sh"), field(4, "-c"), field(4, "echo $(HOME) && sleep 1"),
    field(5, "/work"),
    field(6, msg(field(1, "HOME"), field(2, "/root"))), field(6, msg(field(1, "X"), field(2, "y=z"))),
    field(7, msg(field(1, "/data"), field(2, "/var/lib/data"), field(3, True), field(5, 2))),
    field(7, msg(field(1, "/etc/config"), field(2, "/etc/kube/cm"), field(8, True), field(3, True))),
    field(8, msg(field(1, "/dev/fuse"), field(2, "/dev/null"), field(3, "rwm"))),
    kv_map(10, {"io.kubernetes.container.hash": "abc"}),
    field(11, "app/1.log"),
    field(14, True),
    field(15, msg(field(1, resources), field(2, security))),
    field(18, 3),
)
privileged_container = msg(
    field(1, msg(field(1, "debug"))),
    field(15, msg(field(2, msg(field(2, True), field(6, "app"),
                               field(10, "localhost//etc/seccomp/x.json"))))),
)
localhost_seccomp = msg(
    field(1, msg(field(1, "app"))),
    field(3, "run"),
    field(15, msg(field(2, msg(field(15, msg(field(1, 2), field(2, "/var/lib/kubelet/seccomp/p.json"))),
                               field(16, msg(field(1, 2), field(2, "my-profile"))),
                               field(13, "/proc/kcore"), field(14, "/sys"))))),
)

write("cri_convert", "create-container", b"\x00\x00" + msg(
    field(1, "fedcba9876543210"), field(2, container), field(3, sandbox)))
write("cri_convert", "create-privileged", b"\x03\x04" + msg(
    field(2, privileged_container), field(3, privileged_sandbox)))
write("cri_convert", "create-localhost-seccomp", b"\x06\x06" + msg(
    field(2, localhost_seccomp), field(3, sandbox)))
write("cri_convert", "create-detected-host", b"\x09\x80" + msg(
    field(2, container), field(3, sandbox)))
write("cri_convert", "run-pod-sandbox", b"\x01\x00" + msg(field(1, sandbox), field(2, "runc")))
write("cri_convert", "run-host-network", b"\x01\x1f" + msg(field(1, privileged_sandbox)))
write("cri_convert", "update-resources", b"\x02\x18" + msg(field(1, "0123"), field(2, resources)))
