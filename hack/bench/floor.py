#!/usr/bin/python3
"""The lifecycle benchmark's floor: raw runc and bare ip netns, no daemon.

usage: hack/bench/floor.py [--pods N] [--parallel P] [--runc PATH]
                           [--busybox PATH] [--cgroup-parent PATH]
                           [--pod-spec FILE] [--cni-conf FILE] [--cni-path DIR]
                           --work-dir DIR [--json FILE]

N containers of a busybox root filesystem running `sleep 3600`, each in its
own namespaces (runc spec's defaults: a new network namespace among them)
and cgroup below --cgroup-parent, P at a time:
  "runc run -d" for half the containers, "runc create" then "runc start"
  (and the two together) for the other half; then for half of them
  "runc delete -f" (runc polls for the container's death every 100 ms), for
  the other half what a runtime can do instead: "runc kill KILL + reap"
  (kill, wait for the init's exit) and "runc delete (exited)".
With --pod-spec (the config.json a runtime wrote for a container of a pod
that still runs), N more containers of that very bundle: "runc run -d
(pod bundle)", with its mounts, devices and masked paths, on its root
filesystem and joining its pod's namespaces as the runtime's own start
does; each then killed and deleted. One at a time, every other one runs
150 ms after the previous one ended: "runc run -d (pod bundle, paced)".
Then N times "ip netns add" and "ip netns del", P at a time; with
--cni-conf (a conflist), between the two the list's plugins run directly,
as a runtime runs them: "CNI ADD (bridge, portmap)" (each plugin's ADD,
the previous result passed on) and "CNI DEL (portmap, bridge)". Run it in
a network namespace of its own: the bridge plugin makes a host bridge.

Prints a table; --json writes {"label": "floor", "steps": {STEP:
{"samples_ms": [...]}}, "failures": [...], ...} as hack/bench/lifecycle_report.py
reads it. Every container, cgroup and namespace it makes is removed.
"""

import argparse
import concurrent.futures
import ctypes
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

from lifecycle_report import print_steps

PR_SET_CHILD_SUBREAPER = 36
# The pause before every other "(pod bundle)" run, one at a time.
PACE = 0.15


class Recorder:
    """Samples per step and failures, shared by the worker threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.samples = {}
        self.failures = []

    def sample(self, step, seconds):
        with self.lock:
            self.samples.setdefault(step, []).append(seconds * 1e3)

    def fail(self, step, subject, message):
        print(f"floor: {step} {subject}: {message}", file=sys.stderr)
        with self.lock:
            self.failures.append({"step": step, "subject": subject, "message": message})


def timed(recorder, step, subject, command, stderr=None) -> bool:
    """Runs `command`; records its wall time under `step`, or a failure."""
    start = time.perf_counter()
    result = subprocess.run(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=stderr or subprocess.PIPE)
    elapsed = time.perf_counter() - start
    if result.returncode == 0:
        recorder.sample(step, elapsed)
        return True
    if stderr:
        stderr.seek(0)
    detail = stderr.read() if stderr else result.stderr or b""
    message = detail.decode(errors="replace").strip()
    recorder.fail(step, subject, f"exit {result.returncode}: {message}")
    return False


class Bundles:
    """A busybox root filesystem shared read-only by every container, and a
    `runc spec` template for their bundles."""

    def __init__(self, args):
        self.runc = [args.runc, "--root", str(args.work_dir / "runc")]
        self.dir = args.work_dir / "bundles"
        self.cgroup_parent = args.cgroup_parent
        rootfs = args.work_dir / "rootfs"
        for name in ["bin", "proc", "dev", "sys", "tmp", "etc"]:
            (rootfs / name).mkdir(parents=True, exist_ok=True)
        shutil.copy(args.busybox, rootfs / "bin/busybox")
        for applet in ["sh", "sleep"]:
            (rootfs / "bin" / applet).symlink_to("busybox")
        template = args.work_dir / "template"
        template.mkdir(parents=True, exist_ok=True)
        subprocess.run([args.runc, "spec", "--bundle", str(template)], check=True)
        self.spec = json.loads((template / "config.json").read_text())
        self.spec["process"] |= {"terminal": False, "args": ["sleep", "3600"]}
        self.spec["root"] = {"path": str(rootfs), "readonly": True}

    def run_and_delete(self, i, recorder):
        cid = f"wharf-bench-floor-{os.getpid()}-{i}"
        bundle = self.dir / cid
        bundle.mkdir(parents=True)
        spec = json.loads(json.dumps(self.spec))
        spec["hostname"] = cid
        spec["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        pid_file = bundle / "pid"
        # The container inherits runc's stderr: a file, not a pipe that
        # would stay open as long as the container runs.
        with open(bundle / "runc.stderr", "w+b") as stderr:
            made = ["--bundle", str(bundle), "--pid-file", str(pid_file), cid]
            if i % 4 < 2:
                ok = timed(recorder, "runc run -d", cid, self.runc + ["run", "-d"] + made, stderr)
            else:
                begin = time.perf_counter()
                ok = (timed(recorder, "runc create", cid, self.runc + ["create"] + made, stderr)
                      and timed(recorder, "runc start", cid, self.runc + ["start", cid]))
                if ok:
                    recorder.sample("runc create + start", time.perf_counter() - begin)
            init = int(pid_file.read_text()) if pid_file.exists() else None
            if ok and i % 2 == 0:
                ok = timed(recorder, "runc delete -f", cid, self.runc + ["delete", "-f", cid])
            elif ok:
                start = time.perf_counter()
                ok = subprocess.run(self.runc + ["kill", cid, "KILL"], capture_output=True).returncode == 0
                if ok and init:
                    os.waitpid(init, 0)
                    recorder.sample("runc kill KILL + reap", time.perf_counter() - start)
                ok = ok and timed(recorder, "runc delete (exited)", cid, self.runc + ["delete", cid])
        if not ok:
            subprocess.run(self.runc + ["delete", "-f", cid], capture_output=True)
        if init:
            try:
                os.waitpid(init, 0)
            except ChildProcessError:
                pass  # reaped above
        shutil.rmtree(bundle, ignore_errors=True)

    def run_pod_bundle(self, i, spec, recorder, paced):
        """`runc run -d` of a copy of a pod container's bundle: its own
        cgroup below the parent, everything else as the runtime wrote it."""
        cid = f"wharf-bench-floor-pod-{os.getpid()}-{i}"
        bundle = self.dir / cid
        bundle.mkdir(parents=True)
        spec = json.loads(json.dumps(spec))
        spec["linux"]["cgroupsPath"] = f"{self.cgroup_parent}/{cid}"
        (bundle / "config.json").write_text(json.dumps(spec))
        pid_file = bundle / "pid"
        step = "runc run -d (pod bundle)"
        if paced and i % 2:
            # As a runtime's start comes: after other work, not straight
            # after the previous runc (caches and idle CPUs make that one
            # faster than any start in a pod's life).
            time.sleep(PACE)
            step = "runc run -d (pod bundle, paced)"
        with open(bundle / "runc.stderr", "w+b") as stderr:
            made = ["--bundle", str(bundle), "--pid-file", str(pid_file), cid]
            timed(recorder, step, cid, self.runc + ["run", "-d"] + made, stderr)
        subprocess.run(self.runc + ["kill", cid, "KILL"], capture_output=True)
        if pid_file.exists():
            try:
                os.waitpid(int(pid_file.read_text()), 0)
            except ChildProcessError:
                pass
        subprocess.run(self.runc + ["delete", "-f", cid], capture_output=True)
        shutil.rmtree(bundle, ignore_errors=True)


def cni_exec(conflist, cni_path, command, cid, netns, recorder):
    """Runs the list's plugins for `command` (ADD in order, passing each
    result on; DEL in reverse); False after a failure, recorded."""
    plugins = conflist["plugins"] if command == "ADD" else conflist["plugins"][::-1]
    env = {"CNI_COMMAND": command, "CNI_CONTAINERID": cid, "CNI_NETNS": netns,
           "CNI_IFNAME": "eth0", "CNI_PATH": cni_path, "PATH": os.environ.get("PATH", "")}
    previous = None
    for plugin in plugins:
        conf = dict(plugin, cniVersion=conflist["cniVersion"], name=conflist["name"])
        if previous is not None:
            conf["prevResult"] = previous
        result = subprocess.run([os.path.join(cni_path, plugin["type"])], input=json.dumps(conf).encode(),
                                env=env, capture_output=True)
        if result.returncode != 0:
            recorder.fail(f"CNI {command}", cid, (result.stdout + result.stderr).decode(errors="replace"))
            return False
        if command == "ADD":
            previous = json.loads(result.stdout)
    return True


def netns_add_del(i, recorder, conflist, cni_path):
    name = f"wharf-bench-floor-{os.getpid()}-{i}"
    if not timed(recorder, "ip netns add", name, ["ip", "netns", "add", name]):
        return
    if conflist:
        netns = f"/run/netns/{name}"
        start = time.perf_counter()
        if cni_exec(conflist, cni_path, "ADD", name, netns, recorder):
            recorder.sample("CNI ADD (bridge, portmap)", time.perf_counter() - start)
        start = time.perf_counter()
        if cni_exec(conflist, cni_path, "DEL", name, netns, recorder):
            recorder.sample("CNI DEL (portmap, bridge)", time.perf_counter() - start)
    timed(recorder, "ip netns del", name, ["ip", "netns", "del", name])


def on_threads(n, parallel, job):
    with concurrent.futures.ThreadPoolExecutor(max_workers=min(parallel, n)) as pool:
        for future in [pool.submit(job, i) for i in range(n)]:
            future.result()


def remove_cgroup_parent(parent):
    """runc removes each container's cgroup, not the parent made up here."""
    root = pathlib.Path("/sys/fs/cgroup")
    for hierarchy in [root, *root.iterdir()]:
        try:
            (hierarchy / parent.lstrip("/")).rmdir()
        except OSError:
            pass


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--parallel", type=int, default=1)
    parser.add_argument("--runc", default="runc")
    parser.add_argument("--busybox", default="/bin/busybox")
    parser.add_argument("--cgroup-parent", default="/wharf-bench-floor")
    parser.add_argument("--work-dir", type=pathlib.Path, required=True)
    parser.add_argument("--pod-spec", type=pathlib.Path)
    parser.add_argument("--cni-conf", type=pathlib.Path)
    parser.add_argument("--cni-path", default="/usr/lib/cni")
    parser.add_argument("--json", type=pathlib.Path)
    args = parser.parse_args()
    if args.pods < 1 or args.parallel < 1:
        parser.error("--pods and --parallel must be at least 1")

    # `runc run -d` leaves the container's init to the nearest subreaper:
    # as that, this process reaps the killed inits at once.
    if ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise SystemExit(f"prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}")
    recorder = Recorder()
    bundles = Bundles(args)
    start = time.perf_counter()
    try:
        on_threads(args.pods, args.parallel, lambda i: bundles.run_and_delete(i, recorder))
        if args.pod_spec:
            spec = json.loads(args.pod_spec.read_text())
            on_threads(args.pods, args.parallel, lambda i: bundles.run_pod_bundle(i, spec, recorder, args.parallel == 1))
    finally:
        remove_cgroup_parent(args.cgroup_parent)
    runc_wall = time.perf_counter() - start
    start = time.perf_counter()
    conflist = json.loads(args.cni_conf.read_text()) if args.cni_conf else None
    on_threads(args.pods, args.parallel, lambda i: netns_add_del(i, recorder, conflist, args.cni_path))
    netns_wall = time.perf_counter() - start

    result = {
        "label": "floor", "pods": args.pods, "parallel": args.parallel,
        "wall_secs": {"runc": runc_wall, "netns": netns_wall},
        "steps": {step: {"samples_ms": samples} for step, samples in sorted(recorder.samples.items())},
        "failures": recorder.failures,
    }
    print_steps(f"floor: {args.pods} containers and {args.pods} netns, {args.parallel} at a time", result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if recorder.failures else 0


if __name__ == "__main__":
    sys.exit(main())
