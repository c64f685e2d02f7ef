"""Helpers of the Python tests that start real processes (tests/observability, ...): free
loopback ports, polling with a deadline, the tail of every log of a temp dir.

BIDMESH_TEST_TIME_SCALE stretches deadlines (sanitizer builds): SCALE.
"""

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
