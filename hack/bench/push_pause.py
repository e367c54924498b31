#!/usr/bin/python3
"""Push a pause image, the sandbox image containerd needs for its pods.

usage: hack/bench/push_pause.py --registry HOST:PORT REPO:TAG

The image holds one file, /pause, built statically from hack/bench/pause.c
(needs gcc and libc6-dev), and runs it as its entrypoint, like
registry.k8s.io/pause. Built with hack/testimages.py's deterministic image
code, so the same inputs give the same digest. Prints the pushed reference.
"""

import argparse
import pathlib
import sys
import tempfile

BENCH_DIR = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR.parent))

import testimages  # noqa: E402  (found through the path set just above)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--registry", required=True, help="HOST:PORT of a plain-HTTP registry")
    parser.add_argument("reference", help="REPO:TAG to push, e.g. wharf-bench/pause:3.6")
    args = parser.parse_args()
    repo, _, tag = args.reference.rpartition(":")
    if not repo or "/" in tag:
        parser.error(f"{args.reference!r} is not REPO:TAG")

    with tempfile.TemporaryDirectory() as tmp:
        pause = testimages.compile_static(BENCH_DIR / "pause.c", f"{tmp}/pause")
    layer = testimages.Layer([testimages.file("/pause", pause, 0o755)])
    config = testimages.runtime_config([], Entrypoint=["/pause"])
    pusher = testimages.Pusher(testimages.Registry(args.registry))
    pusher.image(repo, tag, testimages.Image([layer], config))
    print(f"{args.registry}/{args.reference}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
