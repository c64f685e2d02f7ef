"""The test harness of the Python client: a mesh of the real binaries on free loopback ports.

The approach of tests/contract/contract_test.py: one router with the feed forwarder and two bid
nodes (bid-1 owns slots 0-8191, bid-2 8192-16383), started from --bin-dir in a temp dir, every
wait bounded by a deadline, every process killed and the temp dir removed at exit (also on a
failure, or on ctest's SIGTERM). Readiness is probed with the client under test. With
security="curve" the mesh's keypair and the clients' keys come from bidmesh-keygen.
"""

import argparse
import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # clients/python

import bidmesh  # noqa: E402  (the package under test, from the source tree)

BIN_DIR = None  # set by main() from --bin-dir
READY_DEADLINE_S = 20.0
REQUEST_TIMEOUT_MS = 500  # the mesh's request_timeout_ms: `unavailable` after this

_PROCS = []
_DIRS = []
_LOGS = []  # (dir, text) kept for a failure report


def _kill(p):
    if p.poll() is None:
        p.kill()
        try:
            p.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def _cleanup():
    for p in _PROCS:
        _kill(p)
    for d in _DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_cleanup)


def free_ports(n):
    ports = set()
    while len(ports) < n:
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        ports.add(s.getsockname()[1])
        s.close()
    return sorted(ports)


def crc16_xmodem(data):
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


_items = [0]
RUN = "py%x" % (os.getpid() & 0xFFFF)


def item_on(node, tag="i"):
    """A fresh item whose slot bid-1 (0-8191) or bid-2 (8192-16383) owns."""
    lo, hi = (0, 8191) if node == "bid-1" else (8192, 16383)
    while True:
        _items[0] += 1
        name = "%s-%s-%d" % (RUN, tag, _items[0])
        if lo <= crc16_xmodem(name.encode()) % 16384 <= hi:
            return name


def wait_until(pred, timeout_s, what, interval_s=0.02):
    """Polls pred() until true; AssertionError naming `what` after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.1f s" % (what, timeout_s))
        time.sleep(interval_s)


class Mesh:
    def __init__(self, security=None, feed_ipc=False, direct=False):
        self.dir = tempfile.mkdtemp(prefix="bidmesh-pyclient-")
        _DIRS.append(self.dir)
        p_pub, p_col, p_req, p_b1, p_b2, p_d1, p_d2 = free_ports(7)
        # direct: each bid node also serves direct clients on a client_listen of its own (v1.2).
        self.client_endpoints = {"bid-1": "tcp://127.0.0.1:%d" % p_d1, "bid-2": "tcp://127.0.0.1:%d" % p_d2}
        direct_lines = {n: ('client_listen = "%s"\n' % e) if direct else "" for n, e in self.client_endpoints.items()}
        self.endpoint = "tcp://127.0.0.1:%d" % p_req
        # feed_ipc: the feed's XPUB on an ipc socket, whose kernel buffer is small and fixed
        # (a TCP one grows to megabytes), so that a stalled subscriber overflows soon.
        self.feed_endpoint = ("ipc://%s/feed.ipc" % self.dir) if feed_ipc else "tcp://127.0.0.1:%d" % p_pub
        self.config = os.path.join(self.dir, "mesh.toml")
        self.curve = None  # the probe's CurveKeys with security curve
        top = ""
        if security == "curve":
            self.keys_dir = os.path.join(self.dir, "keys")
            self.clients_dir = os.path.join(self.dir, "clients")
            self.client_keys_dir = os.path.join(self.dir, "client-keys")
            for d in (self.keys_dir, self.clients_dir, self.client_keys_dir):
                os.mkdir(d)
            self.keygen("mesh", self.keys_dir)
            self.mesh_public = os.path.join(self.keys_dir, "mesh.key")
            self.curve = bidmesh.load_curve_keys(self.client_key("probe"), self.mesh_public)
            top = ('security = "curve"\nserver_certificate = "keys/mesh.key_secret"\n'
                   'clients_dir = "clients"\n')
        with open(self.config, "w") as f:
            f.write(top +
                    'data_dir = "data"\nrequest_timeout_ms = %d\n'
                    '[feed]\npublish = "%s"\ncollect = "tcp://127.0.0.1:%d"\n'
                    '[[node]]\nname = "router"\nkind = "router"\nlisten = "%s"\nfeed = true\n'
                    '[[node]]\nname = "bid-1"\nkind = "bid"\nlisten = "tcp://127.0.0.1:%d"\nslots = ["0-8191"]\n%s'
                    '[[node]]\nname = "bid-2"\nkind = "bid"\nlisten = "tcp://127.0.0.1:%d"\nslots = ["8192-16383"]\n%s'
                    % (REQUEST_TIMEOUT_MS, self.feed_endpoint, p_col, self.endpoint, p_b1, direct_lines["bid-1"],
                       p_b2, direct_lines["bid-2"]))
        self.procs = {}
        self.starts = {}

    # --- keys (security curve) -----------------------------------------------------------------

    def keygen(self, name, directory, roles=None):
        cmd = [os.path.join(BIN_DIR, "bidmesh-keygen"), name, "--dir", directory]
        if roles:
            cmd += ["--roles", roles]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stdout))

    def client_key(self, name, roles=None, allow=True):
        """bidmesh-keygen NAME; its public file goes into clients_dir when allowed. Returns the
        secret file."""
        self.keygen(name, self.client_keys_dir, roles)
        if allow:
            shutil.copy(os.path.join(self.client_keys_dir, name + ".key"), self.clients_dir)
        return os.path.join(self.client_keys_dir, name + ".key_secret")

    # --- processes -----------------------------------------------------------------------------

    def start(self, name):
        prog = "bidmesh-router" if name == "router" else "bidmesh-bid-node"
        path = os.path.join(BIN_DIR, prog)
        if not os.access(path, os.X_OK):
            raise RuntimeError("no executable %s (build it, pass --bin-dir)" % path)
        n = self.starts[name] = self.starts.get(name, 0) + 1
        with open(os.path.join(self.dir, "%s.%d.log" % (name, n)), "w") as log:
            p = subprocess.Popen([path, "--config", self.config, "--name", name], cwd=self.dir,
                                 stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        _PROCS.append(p)
        self.procs[name] = p

    def kill9(self, name):
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def start_all(self):
        for name in ("bid-1", "bid-2", "router"):
            self.start(name)
        self.wait_ready()

    def wait_ready(self, nodes=("bid-1", "bid-2")):
        """Until ping is answered, then a get on an item of each node (any answer but
        unavailable/internal shows the owner is connected)."""
        deadline = time.monotonic() + READY_DEADLINE_S
        probes = [{"op": "ping"}] + [{"op": "get", "item": item_on(n, "ready")} for n in nodes]
        c = bidmesh.Client(self.endpoint, timeout=0.5, retries=0, curve=self.curve)
        try:
            while probes:
                for name, p in self.procs.items():
                    if p.poll() is not None:
                        raise RuntimeError("%s exited with %s during start\n%s" % (name, p.returncode, self.logs()))
                if time.monotonic() > deadline:
                    raise RuntimeError("mesh not ready in %.0f s (waiting for %r)\n%s"
                                       % (READY_DEADLINE_S, probes[0], self.logs()))
                try:
                    rep = c.call(probes[0])
                    if rep.get("ok") or rep.get("error") not in bidmesh.errors.RETRYABLE_CODES:
                        probes.pop(0)
                        continue
                except bidmesh.NoReply:
                    pass
                time.sleep(0.05)
        finally:
            c.shutdown()

    def logs(self):
        out = []
        for f in sorted(os.listdir(self.dir)):
            if f.endswith(".log"):
                with open(os.path.join(self.dir, f), errors="replace") as fh:
                    out.append("----- %s -----\n%s" % (f, fh.read()[-6000:]))
        return "\n".join(out)

    def stop(self):
        for p in self.procs.values():
            _kill(p)
        try:
            _LOGS.append((self.dir, self.logs()))
        except OSError:
            pass
        shutil.rmtree(self.dir, ignore_errors=True)


class MeshTest(unittest.TestCase):
    """A mesh per test class (security = cls.security), a Client `c` on it."""

    security = None
    feed_ipc = False
    direct = False  # a client_listen on each bid node

    @classmethod
    def setUpClass(cls):
        cls.mesh = Mesh(cls.security, cls.feed_ipc, cls.direct)
        try:
            cls.prepare_mesh()
            cls.mesh.start_all()
        except Exception:
            cls.mesh.stop()
            raise

    @classmethod
    def prepare_mesh(cls):
        """Before the mesh starts (keys, for instance)."""

    @classmethod
    def tearDownClass(cls):
        cls.mesh.stop()


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the main thread is."""


def _terminate(*_):
    raise Terminated()


def main():
    """unittest.main with --bin-dir; prints the mesh logs on a failure."""
    global BIN_DIR
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args, rest = ap.parse_known_args()
    BIN_DIR = os.path.abspath(args.bin_dir)
    # ctest's timeout sends SIGTERM: stop the run (unittest would take a SystemExit for a test's
    # error and go on; a KeyboardInterrupt it lets through) and exit through atexit, which kills
    # the mesh and removes its dir.
    signal.signal(signal.SIGTERM, _terminate)
    started = time.monotonic()
    try:
        prog = unittest.main(module="__main__", argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    except Terminated:
        sys.stderr.write("%s: stopped by SIGTERM\n" % os.path.basename(sys.argv[0]))
        sys.exit(143)
    ok = prog.result.wasSuccessful()
    if not ok:
        for d, text in _LOGS:
            sys.stderr.write("===== mesh logs from %s =====\n%s\n" % (d, text))
    sys.stderr.write("%s: %s in %.1f s\n" % (os.path.basename(sys.argv[0]), "ok" if ok else "FAILED",
                                             time.monotonic() - started))
    sys.exit(0 if ok else 1)
