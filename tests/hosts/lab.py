"""A mesh across the hosts of a tools/hosts lab: the harness of tests/hosts (docs/deployment.md).

Lab: `tools/hosts up` under a name of this run, so runs never share a lab, owned by this process;
`down` at exit, and `prune` first (the labs of runs that were killed before they could clean up).
HostMesh: ONE mesh config, the same bytes on every host, as an operator would copy it:
- host a: the router `router-a` with the feed; host d (if the lab has 4 hosts): `router-d`;
- host b: bid nodes `bid-b1` and `bid-b2`; host c: `bid-c1` (the slot ranges below);
- security = "curve" (every link between hosts leaves loopback, so it must be): the mesh's
  keypair and the clients' keys from bidmesh-keygen, paths relative to the config file.
Each host gets its own folder, <tmp>/hosts/<host>/, with its copy of the file: relative paths
are taken from the file's folder, so data_dir = "data" is that host's own disk, and
server_certificate / clients_dir ("../../keys/...") are shared, as one copy per machine would be.
Each host runs `bidmesh-supervisor --config <its copy> --host <host>` inside its namespace
(tools/hosts exec, which execs, so the Popen's pid is the supervisor's). Clients run in the
root namespace and reach the routers through the lab's bridge.

Cleanup, also on a failure or SIGTERM (atexit): supervisors SIGTERM (SIGKILL after 10 s), the
lab down (which ends anything left in its namespaces), the temp dir removed (kept with --keep).
Every wait has a deadline.
"""

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "clients", "python"))
sys.path.insert(0, os.path.join(ROOT, "clients", "python", "tests"))

import bidmesh  # noqa: E402  (the project's Python client, from the source tree)
from mesh import crc16_xmodem, wait_until  # noqa: E402,F401  (the Python client's test harness)

HOSTS_TOOL = os.path.join(ROOT, "tools", "hosts")
SKIP = 77  # ctest's SKIP_RETURN_CODE for this test

REQUEST_TIMEOUT_MS = 500
PORT_ROUTER, PORT_FEED, PORT_COLLECT = 5555, 5556, 5557  # each host has its own ports
BID_NODES = {  # name: (host, port, first slot, last slot)
    "bid-b1": ("b", 5561, 0, 5460),
    "bid-b2": ("b", 5562, 5461, 10922),
    "bid-c1": ("c", 5561, 10923, 16383),
}


def log(msg):
    sys.stdout.write("[%s] %s\n" % (time.strftime("%H:%M:%S"), msg))
    sys.stdout.flush()


def skip_unless_possible():
    """Exits SKIP with the reason when this machine cannot make a lab."""
    why = None
    if os.geteuid() != 0:
        why = "needs root (network namespaces)"
    elif shutil.which("ip") is None:
        why = "no ip command (iproute2)"
    else:
        probe = "bidmesh-probe-%d" % os.getpid()  # can this machine make a namespace at all?
        r = subprocess.run(["ip", "netns", "add", probe], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        subprocess.run(["ip", "netns", "del", probe], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30)
        if r.returncode != 0:
            why = "'ip netns add' does not work here: %s" % r.stdout.strip()
    if why:
        log("SKIPPED: %s" % why)
        sys.exit(SKIP)


class Lab:
    """A tools/hosts lab named for this run."""

    def __init__(self, hosts):
        self.name = "h%05x" % (os.getpid() & 0xFFFFF)
        self.up = False
        # Labs of runs that ended without cleaning up (SIGKILL) would each hold a /24 of the range.
        subprocess.run([HOSTS_TOOL, "prune"], stdin=subprocess.DEVNULL, timeout=120)
        r = subprocess.run([HOSTS_TOOL, "up", "--name", self.name, "--hosts", str(hosts), "--owner", str(os.getpid())],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=60)
        self.up = True  # also after a failed up: down is safe either way
        if r.returncode != 0:
            raise RuntimeError("tools/hosts up failed (%d): %s" % (r.returncode, r.stdout))
        log(r.stdout.strip())
        self.hosts = "abcd"[:hosts]
        self.addr = {h: self._addr(h) for h in list(self.hosts) + ["root"]}

    def _addr(self, host):
        return subprocess.run([HOSTS_TOOL, "addr", "--name", self.name, host], stdout=subprocess.PIPE,
                              text=True, check=True, timeout=10).stdout.strip()

    def exec_argv(self, host, argv):
        return [HOSTS_TOOL, "exec", "--name", self.name, host] + list(argv)

    def link(self, host, state):
        subprocess.run([HOSTS_TOOL, "link", "--name", self.name, host, state], check=True, timeout=10)

    def pids(self, host):
        r = subprocess.run(["ip", "netns", "pids", "bidmesh-%s-%s" % (self.name, host)],
                           stdout=subprocess.PIPE, text=True, timeout=10)
        return [int(p) for p in r.stdout.split()]

    def down(self):
        if self.up:
            r = subprocess.run([HOSTS_TOOL, "down", "--name", self.name], stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=60)
            log(r.stdout.strip())
            self.up = False


class HostMesh:
    """The mesh of the module doc over `lab` (4 hosts: a second router on d)."""

    def __init__(self, lab, bin_dir, keep=False):
        self.lab = lab
        self.bin_dir = bin_dir
        self.keep = keep
        self.dir = tempfile.mkdtemp(prefix="bidmesh-hosts-")
        self.supervisors = {}  # host: Popen
        self.keys_dir = os.path.join(self.dir, "keys")
        self.clients_dir = os.path.join(self.dir, "clients")
        self.client_keys_dir = os.path.join(self.dir, "client-keys")
        for d in (self.keys_dir, self.clients_dir, self.client_keys_dir):
            os.mkdir(d)
        self._keygen("mesh", self.keys_dir)
        self.mesh_public = os.path.join(self.keys_dir, "mesh.key")
        self.routers = {"a": "tcp://%s:%d" % (lab.addr["a"], PORT_ROUTER)}
        if "d" in lab.hosts:
            self.routers["d"] = "tcp://%s:%d" % (lab.addr["d"], PORT_ROUTER)
        self.endpoint = self.routers["a"]
        self.feed_endpoint = "tcp://%s:%d" % (lab.addr["a"], PORT_FEED)
        self.text = self._config_text()
        self.host_hosts = sorted({h for h, _, _, _ in BID_NODES.values()} | set(self.routers))
        for h in self.host_hosts:
            os.makedirs(os.path.join(self.dir, "hosts", h))
            with open(self.config(h), "w") as f:
                f.write(self.text)
        self._items = 0
        self.run_tag = "r%x" % (os.getpid() & 0xFFFF)

    def _config_text(self):
        a = self.lab.addr
        out = ['# One mesh over the lab: the same file on every host (tests/hosts/lab.py).',
               'security = "curve"',
               'server_certificate = "../../keys/mesh.key_secret"',
               'clients_dir = "../../clients"',
               'data_dir = "data"',
               'request_timeout_ms = %d' % REQUEST_TIMEOUT_MS,
               '',
               '[feed]',
               'publish = "tcp://%s:%d"' % (a["a"], PORT_FEED),
               'collect = "tcp://%s:%d"' % (a["a"], PORT_COLLECT)]
        for h, ep in sorted(self.routers.items()):
            out += ['', '[[node]]', 'name = "router-%s"' % h, 'kind = "router"', 'host = "%s"' % h,
                    'listen = "%s"' % ep, 'feed = %s' % ("true" if h == "a" else "false")]
        for name, (h, port, first, last) in sorted(BID_NODES.items()):
            out += ['', '[[node]]', 'name = "%s"' % name, 'kind = "bid"', 'host = "%s"' % h,
                    'listen = "tcp://%s:%d"' % (a[h], port), 'slots = ["%d-%d"]' % (first, last)]
        return "\n".join(out) + "\n"

    def config(self, host):
        return os.path.join(self.dir, "hosts", host, "mesh.toml")

    def data_dir(self, host):
        return os.path.join(self.dir, "hosts", host, "data")

    # --- keys ----------------------------------------------------------------------------------

    def _keygen(self, name, directory, roles=None):
        cmd = [os.path.join(self.bin_dir, "bidmesh-keygen"), name, "--dir", directory]
        if roles:
            cmd += ["--roles", roles]
        r = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("%s failed (%d): %s" % (" ".join(cmd), r.returncode, r.stdout))

    def client_key(self, name, roles):
        """A client keypair; its public half goes into clients_dir. Returns its CurveKeys."""
        self._keygen(name, self.client_keys_dir, roles)
        shutil.copy(os.path.join(self.client_keys_dir, name + ".key"), self.clients_dir)
        return bidmesh.load_curve_keys(os.path.join(self.client_keys_dir, name + ".key_secret"),
                                       self.mesh_public)

    # --- items ---------------------------------------------------------------------------------

    def item_on(self, node, tag="i"):
        """A fresh item whose slot `node` owns."""
        _, _, first, last = BID_NODES[node]
        while True:
            self._items += 1
            name = "%s-%s-%d" % (self.run_tag, tag, self._items)
            if first <= crc16_xmodem(name.encode()) % 16384 <= last:
                return name

    # --- supervisors ---------------------------------------------------------------------------

    def supervisor_log(self, host):
        return os.path.join(self.dir, "supervisor-%s.log" % host)

    def start_supervisor(self, host):
        """bidmesh-supervisor of `host` inside its namespace; its output appended to its log."""
        argv = self.lab.exec_argv(host, [os.path.join(self.bin_dir, "bidmesh-supervisor"),
                                         "--config", self.config(host), "--host", host])
        with open(self.supervisor_log(host), "a") as out:
            out.write("----- started %s -----\n" % time.strftime("%H:%M:%S"))
            out.flush()
            self.supervisors[host] = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                                      stderr=subprocess.STDOUT)

    def wait_supervisor_ready(self, host, timeout_s=20.0):
        """Until the supervisor's `mesh ready` line of its latest start."""
        p = self.supervisors[host]

        def ready():
            if p.poll() is not None:
                raise RuntimeError("the supervisor of host %s exited with %s\n%s"
                                   % (host, p.returncode, self.logs()))
            with open(self.supervisor_log(host), errors="replace") as f:
                text = f.read()
            return "bidmesh: mesh ready" in text[text.rfind("----- started"):]
        wait_until(ready, timeout_s, "the supervisor of host %s says mesh ready" % host, 0.05)

    def start(self):
        for h in self.host_hosts:
            self.start_supervisor(h)
        for h in self.host_hosts:
            self.wait_supervisor_ready(h)

    def stop_supervisor(self, host, sig=signal.SIGTERM, timeout_s=10.0):
        p = self.supervisors.get(host)
        if p is None or p.poll() is not None:
            return
        p.send_signal(sig)
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log("the supervisor of host %s did not stop in %.0f s: SIGKILL" % (host, timeout_s))
            p.kill()
            p.wait(timeout=10)

    def stop(self):
        for h in sorted(self.supervisors, key=lambda h: h != "a"):  # routers' host first
            try:
                self.stop_supervisor(h)
            except Exception as e:  # go on: the lab's down ends what is left
                log("stopping the supervisor of host %s: %s" % (h, e))

    def remove(self):
        if self.keep:
            log("kept %s" % self.dir)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- looking inside ------------------------------------------------------------------------

    def ctl_status(self, host):
        r = subprocess.run(self.lab.exec_argv(host, [os.path.join(self.bin_dir, "bidmesh-ctl"), "--config",
                                                      self.config(host), "status"]),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=20)
        return r.stdout

    def logs(self, tail=4000):
        out = []
        for h in self.host_hosts:
            paths = [self.supervisor_log(h)]
            logs_dir = os.path.join(self.data_dir(h), "logs")
            if os.path.isdir(logs_dir):
                paths += [os.path.join(logs_dir, f) for f in sorted(os.listdir(logs_dir))]
            for path in paths:
                try:
                    with open(path, errors="replace") as f:
                        out.append("----- host %s: %s -----\n%s" % (h, os.path.basename(path), f.read()[-tail:]))
                except OSError:
                    pass
        return "\n".join(out)

    # --- clients -------------------------------------------------------------------------------

    def client(self, keys, router="a", timeout=2.0, retries=0):
        return bidmesh.Client(self.routers[router], timeout=timeout, retries=retries, curve=keys)

    def wait_serving(self, keys, nodes=None, router="a", timeout_s=20.0):
        """Until `router` answers ping and a get on an item of each of `nodes` (default all) with
        anything but unavailable/internal: the router reaches those bid nodes."""
        c = self.client(keys, router, timeout=0.5)
        try:
            probes = [{"op": "ping"}] + [{"op": "get", "item": self.item_on(n, "probe")}
                                         for n in (nodes or sorted(BID_NODES))]

            def step():
                try:
                    rep = c.call(probes[0])
                    if rep.get("ok") or rep.get("error") not in bidmesh.errors.RETRYABLE_CODES:
                        probes.pop(0)
                except bidmesh.NoReply:
                    pass
                return not probes
            wait_until(step, timeout_s, "router %s serves %s" % (router, nodes or "every bid node"), 0.05)
        finally:
            c.shutdown()


class Run:
    """The lab and the mesh of one run, cleaned up at exit whatever happens."""

    def __init__(self, bin_dir, hosts, keep=False):
        self.lab = None
        self.mesh = None
        self.failed = False
        self._cleaned = False
        atexit.register(self.cleanup)
        signal.signal(signal.SIGTERM, self._terminate)
        self.lab = Lab(hosts)
        self.mesh = HostMesh(self.lab, bin_dir, keep)

    @staticmethod
    def _terminate(*_):
        log("SIGTERM: stopping")
        sys.exit(143)  # SystemExit in the main thread; atexit cleans up

    def cleanup(self):
        if self._cleaned:
            return
        self._cleaned = True
        if self.mesh is not None:
            if self.failed:
                sys.stdout.write("===== logs =====\n%s\n" % self.mesh.logs())
                for h in self.mesh.host_hosts:
                    try:
                        sys.stdout.write("----- bidmesh-ctl status on host %s -----\n%s" % (h, self.mesh.ctl_status(h)))
                    except Exception as e:
                        sys.stdout.write("(bidmesh-ctl status on host %s: %s)\n" % (h, e))
            self.mesh.stop()
        if self.lab is not None:
            self.lab.down()
        if self.mesh is not None:
            self.mesh.remove()


class Recorder(threading.Thread):
    """A feed subscriber in the root namespace: every event of every item, as it came, in
    self.events[item] (no gap repair: the test checks what the feed delivered)."""

    def __init__(self, endpoint, keys):
        super().__init__(daemon=True)
        self.endpoint = endpoint
        self.keys = keys
        self.lock = threading.Lock()
        self.events = {}
        self.count = 0
        self.stopping = False
        self.error = None

    def run(self):
        import msgpack
        import zmq
        s = zmq.Context.instance().socket(zmq.SUB)
        try:
            s.setsockopt(zmq.LINGER, 0)
            self.keys.apply(s)
            s.setsockopt(zmq.SUBSCRIBE, b"item/")
            s.connect(self.endpoint)
            while not self.stopping:
                if not s.poll(50):
                    continue
                frames = s.recv_multipart()
                body = msgpack.unpackb(frames[1], raw=False)
                with self.lock:
                    self.events.setdefault(body["item"], []).append(body)
                    self.count += 1
        except Exception as e:  # reported by the test thread
            self.error = e
        finally:
            s.close(linger=0)

    def of(self, item):
        with self.lock:
            return list(self.events.get(item, []))

    def stop(self):
        self.stopping = True
        self.join(timeout=5)
