"""Helpers of the Python tests that start real processes (tests/observability, ...): free
loopback ports, the mesh config file, polling with a deadline, the tail of every log of a temp dir.

BIDMESH_TEST_TIME_SCALE stretches deadlines (sanitizer builds): SCALE.
"""

import json
import os
import socket
import time

SCALE = float(os.environ.get("BIDMESH_TEST_TIME_SCALE", "1") or "1")


def free_ports(n):
    """n loopback TCP ports that were free a moment ago (held together, so distinct)."""
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def toml_value(v):
    """One TOML value: a string (quoted and escaped), a bool, an int, or a list of those."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)  # a JSON string of str is a TOML basic string
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    raise TypeError("no TOML value for %r" % (v,))


def write_mesh_toml(path, top, feed, nodes):
    """Writes a mesh config (docs/configuration.md) to `path`: the top-level keys of the dict `top`,
    then [feed] with the keys of `feed`, then one [[node]] per dict of `nodes`, every key in the
    order given. Values as toml_value takes them. Returns path."""
    lines = ["%s = %s" % (k, toml_value(v)) for k, v in top.items()]
    lines.append("[feed]")
    lines += ["%s = %s" % (k, toml_value(v)) for k, v in feed.items()]
    for node in nodes:
        lines.append("[[node]]")
        lines += ["%s = %s" % (k, toml_value(v)) for k, v in node.items()]
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path


def router_and_two_bid_nodes(router_listen, bid_1_listen, bid_2_listen):
    """The nodes most tests run, for write_mesh_toml: the router (with the feed) and two bid nodes
    that split the slots, bid-1 the lower half. Add keys to a node's dict as needed."""
    return [{"name": "router", "kind": "router", "listen": router_listen, "feed": True},
            {"name": "bid-1", "kind": "bid", "listen": bid_1_listen, "slots": ["0-8191"]},
            {"name": "bid-2", "kind": "bid", "listen": bid_2_listen, "slots": ["8192-16383"]}]


def wait_for(what, deadline_s, check, interval=0.1):
    """Calls check() until it returns something true, or fails naming `what` at the deadline.
    An AssertionError from check() fails at once; other exceptions mean "not there yet"."""
    deadline = time.monotonic() + deadline_s
    last = None
    while True:
        try:
            got = check()
            if got:
                return got
        except AssertionError:
            raise
        except Exception as e:
            last = e
        if time.monotonic() > deadline:
            raise AssertionError("%s: not within %.0f s (last error: %r)" % (what, deadline_s, last))
        time.sleep(interval)  # poll interval, bounded by the deadline above


def log_tails(folder, max_chars=3000):
    """The end of every *.log and *.out file below `folder`, for a failure's report."""
    out = []
    for root, _, files in os.walk(folder):
        for f in sorted(files):
            if f.endswith(".log") or f.endswith(".out"):
                with open(os.path.join(root, f), errors="replace") as fh:
                    out.append("----- %s -----\n%s" % (f, fh.read()[-max_chars:]))
    return "\n".join(out)


def request(ctx, endpoint, req, timeout_s):
    """One request over a fresh REQ socket: the reply as a dict, or None after timeout_s."""
    import msgpack
    import zmq
    s = ctx.socket(zmq.REQ)
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    try:
        s.send(msgpack.packb(req))
        if not s.poll(int(timeout_s * 1000), zmq.POLLIN):
            return None
        return msgpack.unpackb(s.recv(), raw=False)
    finally:
        s.close()


def bid_until(send, items, stop, ready_s, on_reply):
    """Opens `items` (an `exists` is fine), then bids on them in turn as alice, each bid 1 more,
    until the Event `stop` is set. send(req) returns the reply or None (no reply in time: the
    owner may be restarting, so the next bid goes after a short pause); on_reply(reply) sees each."""
    for i, item in enumerate(items):
        rep = wait_for("open " + item, ready_s, lambda: send({"op": "open", "id": "o%d" % i, "item": item}))
        if not (rep.get("ok") or rep.get("error") == "exists"):
            raise AssertionError("open %s: %r" % (item, rep))
    n = 0
    while not stop.is_set():
        n += 1
        rep = send({"op": "bid", "id": "b%d" % n, "item": items[n % len(items)], "bidder": "alice", "amount": n + 1})
        on_reply(rep)
        if not rep:
            time.sleep(0.01)  # retry soon, without spinning


class Supervised:
    """A bidmesh-supervisor on `config` (run in `folder`, output in folder/supervisor.out, with
    `env` added to the environment): start() waits for its `mesh ready` line, ctl() runs
    bidmesh-ctl, pid_of() reads a node's pid from `bidmesh-ctl --json status`, stop() ends it
    with SIGTERM (SIGKILL after 30 s) and returns its exit status (-9 when it had to be killed)."""

    def __init__(self, bin_dir, config, folder, env=None):
        self.bin_dir, self.config, self.folder = bin_dir, config, folder
        self.env = dict(os.environ, **env) if env else None
        self.out = os.path.join(folder, "supervisor.out")
        self.proc = None

    def start(self, ready_s):
        import subprocess
        with open(self.out, "w") as out:
            self.proc = subprocess.Popen(
                [os.path.join(self.bin_dir, "bidmesh-supervisor"), "--config", self.config],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.folder, env=self.env)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("supervisor exited with %s\n%s" % (self.proc.returncode, log_tails(self.folder)))
            with open(self.out) as f:
                return "mesh ready" in f.read()
        wait_for("the mesh's ready line", ready_s, ready, 0.05)

    def ctl(self, *args):
        import subprocess
        r = subprocess.run([os.path.join(self.bin_dir, "bidmesh-ctl"), "--config", self.config] + list(args),
                           capture_output=True, text=True, timeout=60 * SCALE)
        if r.returncode != 0:
            raise AssertionError("bidmesh-ctl %s: exit %d: %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r.stdout

    def node(self, name):
        """The node's entry of `bidmesh-ctl --json status` (name, state, pid, restarts...)."""
        import json
        for node in json.loads(self.ctl("--json", "status")):
            if node["name"] == name:
                return node
        raise AssertionError("no node %s in bidmesh-ctl status" % name)

    def pid_of(self, name):
        pid = self.node(name).get("pid")
        if not pid:
            raise AssertionError("no process of node %s" % name)
        return pid

    def stop(self):
        import signal
        import subprocess
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30 * SCALE)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        return self.proc.returncode
