#!/usr/bin/python3
"""The cost of crossing hosts (issue 12): bidmesh-bench against the same mesh across a lab and
on loopback, in one run. A measurement, not a test: it is not registered with ctest.

    tests/hosts/cost.py --bin-dir build/bin [--seconds 5] [--rounds 2]

Across the lab: the mesh of tests/hosts/lab.py on 3 hosts (router-a with the feed on a, bid-b1
and bid-b2 on b, bid-c1 on c), the bench in the root namespace. On loopback: the same nodes, slots
and security = "curve" with one supervisor on 127.0.0.1, inside host a's namespace, the bench
there too (so the machine's own ports are never touched). With curve both ways, the client's link
is CurveZMQ in both; what differs is the network path (veth and bridge instead of lo) and the
links between router and bid nodes and from the bid nodes to the feed, which are CurveZMQ across
hosts and plaintext on loopback (docs/security.md).

Per round, in alternation: 1 client (its p50 is the round trip), then 50 clients (throughput).
Prints one line per run and a table of medians. Exit code: 0 measured, 1 a run failed,
77 the lab cannot be made here.
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import lab as L  # noqa: E402
from lab import log, wait_until  # noqa: E402

LOOP_PORTS = {"router": 6555, "feed": 6556, "collect": 6557, "bid-b1": 6561, "bid-b2": 6562, "bid-c1": 6563}


class LoopMesh:
    """The lab mesh's nodes, all on 127.0.0.1 inside host a, under one supervisor."""

    def __init__(self, host_mesh):
        self.hm = host_mesh
        self.dir = os.path.join(host_mesh.dir, "loopback")
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "mesh.toml")
        self.endpoint = "tcp://127.0.0.1:%d" % LOOP_PORTS["router"]
        lines = ['security = "curve"', 'server_certificate = "../keys/mesh.key_secret"',
                 'clients_dir = "../clients"', 'data_dir = "data"',
                 'request_timeout_ms = %d' % L.REQUEST_TIMEOUT_MS, '', '[feed]',
                 'publish = "tcp://127.0.0.1:%d"' % LOOP_PORTS["feed"],
                 'collect = "tcp://127.0.0.1:%d"' % LOOP_PORTS["collect"], '', '[[node]]',
                 'name = "router"', 'kind = "router"', 'listen = "%s"' % self.endpoint, 'feed = true']
        for name, (_, _, first, last) in sorted(L.BID_NODES.items()):
            lines += ['', '[[node]]', 'name = "%s"' % name, 'kind = "bid"',
                      'listen = "tcp://127.0.0.1:%d"' % LOOP_PORTS[name], 'slots = ["%d-%d"]' % (first, last)]
        with open(self.config, "w") as f:
            f.write("\n".join(lines) + "\n")
        self.log = os.path.join(self.dir, "supervisor.log")
        self.proc = None

    def start(self):
        with open(self.log, "w") as out:
            self.proc = subprocess.Popen(self.hm.lab.exec_argv("a", [os.path.join(self.hm.bin_dir, "bidmesh-supervisor"),
                                                                      "--config", self.config]),
                                         stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)

        def ready():
            if self.proc.poll() is not None:
                raise RuntimeError("the loopback supervisor exited with %s" % self.proc.returncode)
            with open(self.log, errors="replace") as f:
                return "bidmesh: mesh ready" in f.read()
        wait_until(ready, 20.0, "the loopback mesh says mesh ready", 0.05)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def bench(hm, where, endpoint, clients, seconds, house):
    argv = [os.path.join(hm.bin_dir, "bidmesh-bench"), "--endpoint", endpoint, "--json",
            "--clients", str(clients), "--items", "1000", "--seconds", str(seconds), "--warmup", "1",
            "--cert", house, "--server-cert", hm.mesh_public]
    if where == "loopback":
        argv = hm.lab.exec_argv("a", argv)
    r = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                       text=True, timeout=seconds + 120)
    if r.returncode != 0:
        raise RuntimeError("bidmesh-bench (%s, %d clients) exited %d: %s" % (where, clients, r.returncode,
                                                                             r.stderr.strip()[-2000:]))
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    L.skip_unless_possible()
    run = L.Run(os.path.abspath(args.bin_dir), hosts=3, keep=args.keep)
    ok = False
    loop = None
    try:
        hm = run.mesh
        hm.client_key("house", "auctioneer,agent")
        house = os.path.join(hm.client_keys_dir, "house.key_secret")
        hm.start()
        loop = LoopMesh(hm)
        loop.start()
        results = {}
        for rnd in range(args.rounds):
            for clients in (1, 50):
                for where, ep in (("lab", hm.endpoint), ("loopback", loop.endpoint)):
                    j = bench(hm, where, ep, clients, args.seconds, house)
                    lat = j["latency_ms"]
                    log("round %d, %-8s %2d clients: %8.0f req/s, p50 %.3f ms, p99 %.3f ms, accepted %.3f, timeouts %d"
                        % (rnd + 1, where, clients, j["throughput"], lat["p50"], lat["p99"],
                           j["accepted_fraction"], j["timeouts"]))
                    results.setdefault((where, clients), []).append(j)
        med = {k: (statistics.median(x["throughput"] for x in v), statistics.median(x["latency_ms"]["p50"] for x in v))
               for k, v in results.items()}
        log("medians of %d rounds, %.0f s each:" % (args.rounds, args.seconds))
        log("  1 client p50:        lab %.3f ms, loopback %.3f ms (+%.3f ms across hosts)"
            % (med[("lab", 1)][1], med[("loopback", 1)][1], med[("lab", 1)][1] - med[("loopback", 1)][1]))
        log("  50 clients req/s:    lab %.0f, loopback %.0f (ratio %.2f)"
            % (med[("lab", 50)][0], med[("loopback", 50)][0], med[("lab", 50)][0] / med[("loopback", 50)][0]))
        ok = True
    except (AssertionError, RuntimeError) as e:
        log("FAILED: %s" % e)
    finally:
        if loop is not None:
            loop.stop()
        run.failed = not ok
        run.cleanup()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
