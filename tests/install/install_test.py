#!/usr/bin/env python3
"""The installed bidmesh, as an outside project sees it (issue 11, item 2).

1. `cmake --install BUILD --prefix TMP/prefix`, and a look at the tree: the programs, the client
   library with its headers, the CMake package, bidmesh.pc, the systemd unit naming the installed
   supervisor and config and running as user bidmesh, the config with its data dir; bidmesh-ctl
   loads the installed config.
2. tests/install/outside_project built against it twice: with find_package(bidmesh CONFIG) and
   CMAKE_PREFIX_PATH=TMP/prefix, and with `pkg-config --cflags --libs bidmesh` alone.
3. A mesh of the build's bidmesh-router and bidmesh-bid-node on free loopback ports, data in TMP;
   each outside program opens an item, bids and sees its bid's event on the feed.
Everything started is killed and TMP removed, also on failure (--keep keeps TMP). Every wait
has a deadline. Exit 0 when all holds; 1 with the reason and the nodes' logs otherwise.
"""
import argparse
import ctypes
import glob
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

PROGRAMS = ["bidmesh", "bidmesh-bench", "bidmesh-keygen", "bidmesh-router", "bidmesh-bid-node",
            "bidmesh-supervisor", "bidmesh-ctl", "bidmesh-wal"]
HEADERS = ["client/client.h", "client/curve_keys.h", "client/direct_client.h", "client/feed_watcher.h",
           "client/slot_table.h", "protocol/messages.h", "protocol/errors.h"]
INSTALL_TIMEOUT_S = 120
BUILD_TIMEOUT_S = 300   # one C++20 file on a loaded 2-core machine
CLIENT_TIMEOUT_S = 60   # the program's own deadline is 30 s
STOP_TIMEOUT_S = 5


class Failure(Exception):
    pass


_libc = ctypes.CDLL(None, use_errno=True)
PR_SET_PDEATHSIG = 1


def die_with_parent():
    """In the child before exec: SIGKILL when this driver dies, even by SIGKILL (ctest's timeout)."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def on_term(signum, frame):
    raise Failure("stopped by signal %d" % signum)


def run(argv, timeout, env=None, cwd=None):
    """Runs argv to completion within timeout; returns its output, raises Failure otherwise."""
    try:
        p = subprocess.run(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           timeout=timeout, env=env, cwd=cwd)
    except subprocess.TimeoutExpired as e:
        raise Failure("%s: no exit within %s s\n%s" % (" ".join(argv), timeout, e.output or ""))
    if p.returncode != 0:
        raise Failure("%s: exit %d\n%s" % (" ".join(argv), p.returncode, p.stdout))
    return p.stdout


def check(cond, what):
    if not cond:
        raise Failure(what)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one(pattern):
    found = glob.glob(pattern, recursive=True)
    check(len(found) == 1, "expected one %s, found %s" % (pattern, found))
    return found[0]


def check_tree(prefix):
    for program in PROGRAMS:
        path = os.path.join(prefix, "bin", program)
        check(os.access(path, os.X_OK), "not installed: bin/" + program)
    lib = one(os.path.join(prefix, "lib*", "**", "libbidmesh_client.a"))
    for header in HEADERS:
        check(os.path.isfile(os.path.join(prefix, "include", "bidmesh", header)),
              "not installed: include/bidmesh/" + header)
    one(os.path.join(prefix, "lib*", "**", "cmake", "bidmesh", "bidmeshConfig.cmake"))
    one(os.path.join(prefix, "lib*", "**", "cmake", "bidmesh", "bidmeshConfigVersion.cmake"))
    pc = one(os.path.join(prefix, "lib*", "**", "pkgconfig", "bidmesh.pc"))

    config = os.path.join(prefix, "etc", "bidmesh", "mesh.toml")
    data_dir = os.path.join(prefix, "var", "lib", "bidmesh")
    check(os.path.isfile(config), "not installed: etc/bidmesh/mesh.toml")
    check(os.path.isdir(data_dir), "not installed: var/lib/bidmesh/")
    with open(config) as f:
        text = f.read()
    check('data_dir = "%s"' % data_dir in text, "mesh.toml: data_dir is not %s:\n%s" % (data_dir, text))

    unit = os.path.join(prefix, "lib", "systemd", "system", "bidmesh-supervisor.service")
    check(os.path.isfile(unit), "not installed: lib/systemd/system/bidmesh-supervisor.service")
    with open(unit) as f:
        unit_lines = f.read().splitlines()
    want = ["ExecStart=%s --config %s" % (os.path.join(prefix, "bin", "bidmesh-supervisor"), config),
            "User=bidmesh", "Group=bidmesh", "ReadWritePaths=" + data_dir, "Type=notify"]
    for line in want:
        check(line in unit_lines, "unit: no line %r" % line)
    # A configure_file placeholder is @NAME@; a lone @ is systemd's (SystemCallFilter=@system-service).
    check(not any(re.search(r"@[A-Z0-9_]+@", l) for l in unit_lines), "unit: a placeholder left")

    # The installed config loads: bidmesh-ctl gets as far as the (absent) supervisor's socket.
    p = subprocess.run([os.path.join(prefix, "bin", "bidmesh-ctl"), "--config", config, "status"],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=30)
    check(p.returncode == 111 and "not running" in p.stdout,
          "bidmesh-ctl --config %s status: exit %d (want 111, supervisor not running)\n%s"
          % (config, p.returncode, p.stdout))
    return lib, pc


def build_with_cmake(args, prefix, tmp):
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "outside_project")
    build = os.path.join(tmp, "outside-cmake")
    # Only the prefix is given: the outside project must find bidmesh as any project would.
    run([args.cmake, "-S", source, "-B", build, "-DCMAKE_BUILD_TYPE=Release",
         "-DCMAKE_PREFIX_PATH=" + prefix, "-DCMAKE_CXX_COMPILER=" + args.cxx], BUILD_TIMEOUT_S)
    run([args.cmake, "--build", build], BUILD_TIMEOUT_S)
    return os.path.join(build, "outside_client")


def build_with_pkg_config(args, pc, tmp):
    env = dict(os.environ, PKG_CONFIG_PATH=os.path.dirname(pc))
    flags = run(["pkg-config", "--cflags", "--libs", "bidmesh"], 30, env=env).split()
    check("-lbidmesh_client" in flags, "pkg-config --libs bidmesh: no -lbidmesh_client in %s" % flags)
    check(any(f.startswith("-I") and f.endswith("include/bidmesh") for f in flags),
          "pkg-config --cflags bidmesh: no -I.../include/bidmesh in %s" % flags)
    source = os.path.join(os.path.dirname(os.path.abspath(__file__)), "outside_project", "main.cc")
    out = os.path.join(tmp, "outside_client_pc")
    run([args.cxx, "-std=c++20", "-O1", source, "-o", out] + flags, BUILD_TIMEOUT_S)
    return out


class Mesh:
    """bidmesh-router (with the feed) and one bid node owning every slot, from the build."""

    def __init__(self, bin_dir, tmp):
        self.bin_dir, self.dir = bin_dir, os.path.join(tmp, "mesh")
        os.makedirs(os.path.join(self.dir, "data", "logs"))
        self.request = "tcp://127.0.0.1:%d" % free_port()
        self.feed = "tcp://127.0.0.1:%d" % free_port()
        self.config = os.path.join(self.dir, "mesh.toml")
        with open(self.config, "w") as f:
            f.write('data_dir = "data"\nmap_size_mb = 64\n'
                    '[feed]\npublish = "%s"\ncollect = "tcp://127.0.0.1:%d"\n'
                    '[[node]]\nname = "router"\nkind = "router"\nlisten = "%s"\nfeed = true\n'
                    '[[node]]\nname = "bid-1"\nkind = "bid"\nlisten = "tcp://127.0.0.1:%d"\n'
                    'slots = ["0-16383"]\n' % (self.feed, free_port(), self.request, free_port()))
        self.processes = {}

    def start(self):
        for name, program in (("bid-1", "bidmesh-bid-node"), ("router", "bidmesh-router")):
            log = open(os.path.join(self.dir, "data", "logs", name + ".out"), "w")
            self.processes[name] = subprocess.Popen(
                [os.path.join(self.bin_dir, program), "--config", self.config, "--name", name],
                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True,
                preexec_fn=die_with_parent)
            log.close()

    def check_running(self):
        for name, p in self.processes.items():
            check(p.poll() is None, "%s exited with %s" % (name, p.returncode))

    def stop(self):
        for p in self.processes.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes.values():
            try:
                p.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()

    def logs(self):
        text = []
        for path in sorted(glob.glob(os.path.join(self.dir, "data", "logs", "*"))):
            with open(path, errors="replace") as f:
                text.append("--- %s (last lines)\n%s" % (path, "".join(f.readlines()[-30:])))
        return "\n".join(text)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build-dir", required=True, help="the build tree to install (built)")
    ap.add_argument("--cmake", default="cmake")
    ap.add_argument("--cxx", default="c++")
    ap.add_argument("--keep", action="store_true", help="keep the temp dir")
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    started = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="bidmesh-install-")
    prefix = os.path.join(tmp, "prefix")
    mesh = None
    try:
        run([args.cmake, "--install", args.build_dir, "--prefix", prefix], INSTALL_TIMEOUT_S)
        _, pc = check_tree(prefix)
        print("install tree: ok (%.1f s)" % (time.monotonic() - started), flush=True)
        programs = {"find_package": build_with_cmake(args, prefix, tmp)}
        print("outside project built with find_package (%.1f s)" % (time.monotonic() - started), flush=True)
        programs["pkg-config"] = build_with_pkg_config(args, pc, tmp)
        print("outside program built with pkg-config (%.1f s)" % (time.monotonic() - started), flush=True)

        mesh = Mesh(os.path.join(args.build_dir, "bin"), tmp)
        mesh.start()
        for how, program in programs.items():
            item = "outside-" + how.replace("_", "-")
            out = run([program, mesh.request, mesh.feed, item], CLIENT_TIMEOUT_S)
            check("ok: the bid's event came on the feed" in out, "%s: %s" % (program, out))
            print("%s build: %s" % (how, out.strip().replace("\n", "\n  ")), flush=True)
        mesh.check_running()
        print("PASS (%.1f s)" % (time.monotonic() - started))
        return 0
    except Failure as e:
        print("FAIL: %s" % e, file=sys.stderr)
        if mesh:
            print(mesh.logs(), file=sys.stderr)
        return 1
    finally:
        if mesh:
            mesh.stop()
        if args.keep:
            print("kept " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
