#!/usr/bin/env python3
"""docs/deployment.md, "Three machines from nothing", run as written over a tools/hosts lab.

- The mesh.toml of that section, taken from the page itself (its only ```toml block after the
  heading), with the page's addresses 10.0.0.11-13 replaced by the lab's hosts a, b and c.
- The keys made by the page's bidmesh-keygen commands, with its modes.
- Each host sees its own /etc/bidmesh (that config, byte-identical, the mesh's secret, the
  clients' public keys) and /var/lib/bidmesh: overlays in a mount namespace of its own, so
  nothing is written to this machine's /etc or /var.
- Each host runs the ExecStart line of the installed bidmesh@.service (cmake --install
  --prefix /usr into a temp DESTDIR) with %i = its name, then the page's bidmesh-ctl status.
- From the root namespace, the page's first session with the bidmesh CLI; then host c dies
  (SIGKILL to everything of its supervisor): c's items answer `unavailable`, b's are served;
  c starts again and serves its acknowledged bid.

Needs root and `ip netns` (exit 77, skipped, otherwise). Runs as root, not as bidmesh: the
user and modes of a package install are tests/package's. Cleanup on any exit: supervisors,
lab, temp dir.
Usage: three_hosts_test.py --build-dir DIR [--cmake CMAKE] [--keep] [--strace DIR]
  --strace DIR: run each supervisor under strace -f into DIR/<host>.trace (by hand: the system
  calls of every process, to compare with the unit's SystemCallFilter=).
"""
import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "hosts"))
from lab import Lab, crc16_xmodem, log, skip_unless_possible, wait_until  # noqa: E402

DOC = os.path.join(ROOT, "docs", "deployment.md")
DOC_ADDR = {"a": "10.0.0.11", "b": "10.0.0.12", "c": "10.0.0.13"}
SCALE = float(os.environ.get("BIDMESH_TEST_TIME_SCALE", "1"))


def doc_config():
    text = open(DOC).read()
    at = text.find("## Three machines from nothing")
    m = re.search(r"```toml\n(.*?)```", text[at:], re.S) if at >= 0 else None
    if m is None:
        raise AssertionError("docs/deployment.md: no ```toml block under 'Three machines from nothing'")
    return m.group(1)


def run(argv, **kw):
    return subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True, timeout=kw.pop("timeout", 60 * SCALE), **kw)


def must(argv, **kw):
    r = run(argv, **kw)
    if r.returncode != 0:
        raise AssertionError("%s: exit %d\n%s" % (" ".join(argv), r.returncode, r.stdout))
    return r.stdout


class Deployment:
    def __init__(self, args):
        self.args = args
        self.dir = tempfile.mkdtemp(prefix="bidmesh-3hosts-")
        self.supervisors = {}
        self.lab = None

    # Each host's /etc and /var/lib: overlays over the machine's, in the host's own mount namespace.
    def host_argv(self, host, argv):
        layers = []
        for target in ("/etc", "/var/lib"):
            base = os.path.join(self.dir, host, target.strip("/").replace("/", "-"))
            layers.append("mount -t overlay overlay -o lowerdir=%s,upperdir=%s/up,workdir=%s/work %s"
                          % (target, base, base, target))
        script = " && ".join(layers) + ' && exec "$@"'
        return self.lab.exec_argv(host, ["unshare", "--mount", "--propagation", "private",
                                         "sh", "-c", script, "sh"] + argv)

    def host_path(self, host, path):  # where `path` of host's view is written
        top, rest = ("etc", path[len("/etc/"):]) if path.startswith("/etc/") else ("var-lib", path[len("/var/lib/"):])
        return os.path.join(self.dir, host, top, "up", rest)

    def setup(self):
        a = self.args
        stage = os.path.join(self.dir, "install")
        must([a.cmake, "--install", a.build_dir, "--prefix", "/usr", "--component", "runtime"],
             env=dict(os.environ, DESTDIR=stage), timeout=120 * SCALE)
        self.bin = os.path.join(stage, "usr", "bin")
        unit = open(os.path.join(stage, "usr", "lib", "systemd", "system", "bidmesh@.service")).read()
        self.exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
        assert self.exec_start[0] == "/usr/bin/bidmesh-supervisor", self.exec_start

        # Keys, as the page makes them on a.
        keys, clients_keys = os.path.join(self.dir, "keys"), os.path.join(self.dir, "client-keys")
        os.makedirs(keys)
        os.makedirs(clients_keys, mode=0o700)
        keygen = os.path.join(self.bin, "bidmesh-keygen")
        must([keygen, "mesh", "--dir", keys])
        for name, roles in (("house", "auctioneer"), ("alice", "bidder"), ("board", "reader")):
            must([keygen, name, "--dir", clients_keys, "--roles", roles])
        self.keys, self.client_keys = keys, clients_keys

        self.lab = Lab(3)
        config = doc_config()
        for h, addr in DOC_ADDR.items():
            config = config.replace(addr, self.lab.addr[h])
        assert "10.0.0." not in config, "an address of the page was not mapped to the lab"
        for h in "abc":
            for top in ("etc", "var-lib"):
                for sub in ("up", "work"):
                    os.makedirs(os.path.join(self.dir, h, top, sub))
            etc = self.host_path(h, "/etc/bidmesh/")
            os.makedirs(os.path.join(etc, "clients"))
            for f in ("mesh.key", "mesh.key_secret"):
                shutil.copy2(os.path.join(keys, f), etc)
            for f in os.listdir(clients_keys):
                if f.endswith(".key"):
                    shutil.copy2(os.path.join(clients_keys, f), os.path.join(etc, "clients"))
            with open(os.path.join(etc, "mesh.toml"), "w") as f:
                f.write(config)
            os.chmod(os.path.join(etc, "mesh.toml"), 0o644)
            os.makedirs(self.host_path(h, "/var/lib/bidmesh"), mode=0o750)
        assert oct(os.stat(os.path.join(keys, "mesh.key_secret")).st_mode & 0o777) == "0o600"

    def start(self, host):
        argv = [os.path.join(self.bin, "bidmesh-supervisor")] + [
            w.replace("%i", host) for w in self.exec_start[1:]]
        if self.args.strace:
            argv = ["strace", "-f", "-qq", "-o", os.path.join(self.args.strace, "%s.trace" % host)] + argv
        out = open(os.path.join(self.dir, "supervisor-%s.log" % host), "a")
        out.write("----- started -----\n")
        out.flush()
        self.supervisors[host] = subprocess.Popen(self.host_argv(host, argv), stdin=subprocess.DEVNULL,
                                                  stdout=out, stderr=subprocess.STDOUT, start_new_session=True)

    def log_of(self, host):
        with open(os.path.join(self.dir, "supervisor-%s.log" % host), errors="replace") as f:
            return f.read()

    def wait_ready(self, host):
        p = self.supervisors[host]

        def ready():
            if p.poll() is not None:
                raise AssertionError("supervisor of %s exited %s:\n%s" % (host, p.returncode, self.log_of(host)))
            text = self.log_of(host)
            return "bidmesh: mesh ready" in text[text.rfind("----- started"):]
        wait_until(ready, 30 * SCALE, "bidmesh@%s says mesh ready" % host, 0.05)

    def kill(self, host, sig):
        p = self.supervisors.get(host)
        if p is None or p.poll() is not None:
            return
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            return
        try:
            p.wait(timeout=15 * SCALE)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait(timeout=15)

    def supervisor_pid(self, host):
        """The supervisor in the process group of host's start (its mount namespace is the host's
        view; a second overlay over the same folders would not reach its socket)."""
        group = self.supervisors[host].pid
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open("/proc/%s/stat" % pid) as f:
                    stat = f.read()
            except OSError:
                continue
            comm, rest = stat[stat.find("(") + 1:stat.rfind(")")], stat[stat.rfind(")") + 2:].split()
            if comm.startswith("bidmesh-supervi") and int(rest[2]) == group:
                return int(pid)
        raise AssertionError("no supervisor process of host %s" % host)

    def ctl_status(self, host):
        return must(["nsenter", "--mount", "--target", str(self.supervisor_pid(host)),
                     os.path.join(self.bin, "bidmesh-ctl"), "--config", "/etc/bidmesh/mesh.toml", "status"])

    def cli(self, key, *argv, expect=0):
        env = dict(os.environ, BIDMESH_ENDPOINT="tcp://%s:5555" % self.lab.addr["a"],
                   BIDMESH_FEED="tcp://%s:5556" % self.lab.addr["a"],
                   BIDMESH_SERVER_CERT=os.path.join(self.keys, "mesh.key"))
        r = run([os.path.join(self.bin, "bidmesh"), "--cert", os.path.join(self.client_keys, key + ".key_secret"),
                 "--timeout", "1000", "--retries", "1"] + list(argv), env=env)
        if r.returncode != expect:
            raise AssertionError("bidmesh %s: exit %d, expected %d\n%s" % (" ".join(argv), r.returncode, expect, r.stdout))
        return r.stdout

    def cleanup(self, failed):
        if failed and self.lab is not None:
            for h in sorted(self.supervisors):
                sys.stdout.write("----- supervisor of %s -----\n%s\n" % (h, self.log_of(h)[-4000:]))
        for h in sorted(self.supervisors, key=lambda h: h != "a"):
            self.kill(h, signal.SIGTERM)
        if self.lab is not None:
            self.lab.down()
        if self.args.keep:
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)


def item_on(first, last, tag):
    n = 0
    while True:
        name = "%s-%d" % (tag, n)
        if first <= crc16_xmodem(name.encode()) % 16384 <= last:
            return name
        n += 1


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build-dir", required=True)
    ap.add_argument("--cmake", default="cmake")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--strace")
    args = ap.parse_args()
    skip_unless_possible()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    d = Deployment(args)
    failed = True
    try:
        d.setup()
        t0 = time.monotonic()
        for h in "abc":
            d.start(h)
        for h in "abc":
            d.wait_ready(h)
        log("three hosts ready in %.1f s" % (time.monotonic() - t0))
        for h, nodes in (("a", ["router-a"]), ("b", ["bid-b1", "bid-b2"]), ("c", ["bid-c1"])):
            status = d.ctl_status(h)
            for n in nodes:
                assert re.search(r"^%s\s+\S+\s+running" % n, status, re.M), "bidmesh-ctl status on %s:\n%s" % (h, status)
        log("bidmesh-ctl status: every node of a, b and c running")

        on_b, on_c = item_on(0, 5460, "lamp"), item_on(10923, 16383, "lamp")
        for item in (on_b, on_c):
            d.cli("house", "open", item, "--start", "100", "--increment", "10")
            out = d.cli("alice", "bid", item, "alice", "150")
            assert "accepted" in out, out
            assert "max 150 by alice" in d.cli("board", "get", item)
        d.cli("alice", "open", "lamp-x", expect=1)  # a bidder may not open: forbidden
        log("first session: open, bid, get on b's %s and c's %s" % (on_b, on_c))

        d.kill("c", signal.SIGKILL)
        out = run([os.path.join(d.bin, "bidmesh"), "--cert", os.path.join(d.client_keys, "board.key_secret"),
                   "--endpoint", "tcp://%s:5555" % d.lab.addr["a"], "--server-cert", os.path.join(d.keys, "mesh.key"),
                   "--retries", "0", "--timeout", "3000", "get", on_c])
        assert out.returncode == 1 and "unavailable" in out.stdout, out.stdout
        assert "max 150 by alice" in d.cli("board", "get", on_b)
        log("host c down: %s unavailable, %s served" % (on_c, on_b))
        d.start("c")
        d.wait_ready("c")
        wait_until(lambda: run([os.path.join(d.bin, "bidmesh"), "--cert", os.path.join(d.client_keys, "board.key_secret"),
                                "--endpoint", "tcp://%s:5555" % d.lab.addr["a"],
                                "--server-cert", os.path.join(d.keys, "mesh.key"), "--retries", "0", "get", on_c]
                               ).returncode == 0, 20 * SCALE, "c's item served again")
        assert "max 150 by alice" in d.cli("board", "get", on_c)
        out = d.cli("alice", "bid", on_c, "alice", "170")
        assert "accepted" in out, out
        log("host c back: its acknowledged bid is there, and it takes new ones")
        failed = False
    finally:
        d.cleanup(failed)
    log("PASSED")


if __name__ == "__main__":
    main()
