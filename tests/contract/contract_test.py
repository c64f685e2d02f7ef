#!/usr/bin/python3
"""bidmesh wire-contract test: an outside client written from docs/protocol.md only.

It knows nothing of the C++ code. It starts its own mesh (one router with the feed forwarder,
two bid nodes) on free loopback ports and checks every promise of docs/protocol.md against it
with pyzmq + msgpack. The document is the authority: where the mesh does something else, the
check fails (or, for a known and reported discrepancy, is marked expectedFailure with a
comment naming it).

Every bid node also has a client endpoint (v1.2 direct clients). With --direct the whole
contract runs against bid-1's client endpoint instead of the router, with every item on bid-1's
slots (a direct client sends an item only to its owner); only the router's own answers
(`unavailable` for a node that is down) are left to the router run. DirectSlotsTest checks
`slots` and `moved` in both runs.

Run: /usr/bin/python3 tests/contract/contract_test.py --bin-dir build/bin [--direct]
"""

import argparse
import atexit
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import unittest

import msgpack
import zmq

BIN_DIR = None  # set from --bin-dir
DIRECT = False  # set from --direct: requests go to bid-1's client endpoint
READY_DEADLINE_S = 20.0
REPLY_TIMEOUT_S = 5.0  # generous: a loaded 2-core machine
REQUEST_TIMEOUT_MS = 500  # the mesh's request_timeout_ms in our config
SLOTS = 16384

_ALL_PROCS = []  # every process started, killed at exit whatever happens
_ALL_DIRS = []
_LOGS = []  # (name, text) captured before the temp dirs go, printed on failure


def _kill_everything():
    for p in _ALL_PROCS:
        if p.poll() is None:
            try:
                p.kill()
                p.wait(timeout=5)
            except Exception:
                pass
    for d in _ALL_DIRS:
        shutil.rmtree(d, ignore_errors=True)


atexit.register(_kill_everything)


# ---------------------------------------------------------------------------------------------
# The doc's pieces, in Python


def crc16_xmodem(data: bytes) -> int:
    """CRC-16/XMODEM: poly 0x1021, init 0, no reflection, no final xor (docs/protocol.md)."""
    crc = 0
    for b in data:
        crc ^= b << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def slot_of(item: str) -> int:
    return crc16_xmodem(item.encode()) % SLOTS


assert crc16_xmodem(b"123456789") == 0x31C3
assert slot_of("foo") == 12182


def now_ms() -> int:
    return int(time.time() * 1000)


class Raw:
    """A value already encoded as MessagePack (to choose the integer format by hand)."""

    def __init__(self, b: bytes):
        self.b = b


def enc_int(v: int, fmt: str) -> Raw:
    codes = {
        "u8": (0xCC, ">B"), "u16": (0xCD, ">H"), "u32": (0xCE, ">I"), "u64": (0xCF, ">Q"),
        "i8": (0xD0, ">b"), "i16": (0xD1, ">h"), "i32": (0xD2, ">i"), "i64": (0xD3, ">q"),
    }
    code, pat = codes[fmt]
    return Raw(bytes([code]) + struct.pack(pat, v))


def packmap(pairs) -> bytes:
    """Encode a map from a dict or a list of (key, value) pairs; Raw values go in as they are."""
    if isinstance(pairs, dict):
        pairs = list(pairs.items())
    n = len(pairs)
    if n < 16:
        out = bytes([0x80 | n])
    else:
        out = b"\xde" + struct.pack(">H", n)
    for k, v in pairs:
        out += msgpack.packb(k)
        out += v.b if isinstance(v, Raw) else msgpack.packb(v)
    return out


def decode_reply(raw: bytes) -> dict:
    d = msgpack.unpackb(raw, raw=False, strict_map_key=True)
    assert isinstance(d, dict), "reply is not a MessagePack map: %r" % (d,)
    for k in d:
        assert isinstance(k, str), "reply key is not a string: %r" % (k,)
    return d


def free_port() -> int:
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ---------------------------------------------------------------------------------------------
# The mesh under test


class Mesh:
    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bidmesh-contract-")
        _ALL_DIRS.append(self.dir)
        ports = set()
        while len(ports) < 7:
            ports.add(free_port())
        p1, p2, p3, p4, p5, p6, p7 = sorted(ports)
        self.feed_endpoint = "tcp://127.0.0.1:%d" % p1
        self.router_endpoint = "tcp://127.0.0.1:%d" % p3
        self.client_endpoints = {"bid-1": "tcp://127.0.0.1:%d" % p6, "bid-2": "tcp://127.0.0.1:%d" % p7}
        self.endpoint = self.client_endpoints["bid-1"] if DIRECT else self.router_endpoint
        self.config = os.path.join(self.dir, "mesh.toml")
        with open(self.config, "w") as f:
            f.write(
                'data_dir = "data"\n'
                "request_timeout_ms = %d\n"
                "[feed]\n"
                'publish = "tcp://127.0.0.1:%d"\n'
                'collect = "tcp://127.0.0.1:%d"\n'
                "[[node]]\n"
                'name = "router"\nkind = "router"\nlisten = "tcp://127.0.0.1:%d"\nfeed = true\n'
                "[[node]]\n"
                'name = "bid-1"\nkind = "bid"\nlisten = "tcp://127.0.0.1:%d"\nslots = ["0-8191"]\n'
                'client_listen = "tcp://127.0.0.1:%d"\n'
                "[[node]]\n"
                'name = "bid-2"\nkind = "bid"\nlisten = "tcp://127.0.0.1:%d"\nslots = ["8192-16383"]\n'
                'client_listen = "tcp://127.0.0.1:%d"\n'
                % (REQUEST_TIMEOUT_MS, p1, p2, p3, p4, p6, p5, p7)
            )
        self.procs = {}
        self.starts = {}
        self.ctx = zmq.Context()

    def start(self, name):
        prog = "bidmesh-router" if name == "router" else "bidmesh-bid-node"
        path = os.path.join(BIN_DIR, prog)
        if not os.access(path, os.X_OK):
            raise RuntimeError("no executable %s (build it, pass --bin-dir)" % path)
        n = self.starts.get(name, 0) + 1
        self.starts[name] = n
        out = open(os.path.join(self.dir, "%s.%d.out" % (name, n)), "w")
        err = open(os.path.join(self.dir, "%s.%d.err" % (name, n)), "w")
        p = subprocess.Popen([path, "--config", self.config, "--name", name],
                             stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.dir)
        out.close()
        err.close()
        _ALL_PROCS.append(p)
        self.procs[name] = p

    def kill(self, name):
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=10)

    def start_all(self):
        for name in ("bid-1", "bid-2", "router"):
            self.start(name)
        self.wait_ready()

    def wait_ready(self, nodes=("bid-1", "bid-2")):
        """Poll ping, then a get on one item of each node until the owner answers."""
        deadline = time.monotonic() + READY_DEADLINE_S
        probes = {"bid-1": item_on("bid-1", "ready"), "bid-2": item_on("bid-2", "ready")}
        pending = ["ping"] + [probes[n] for n in nodes]
        n = 0
        while pending:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError("%s exited with %s during start\n%s"
                                       % (name, p.returncode, self.logs()))
            if time.monotonic() > deadline:
                raise RuntimeError("mesh not ready in %ss (waiting for %s)\n%s"
                                   % (READY_DEADLINE_S, pending, self.logs()))
            what = pending[0]
            n += 1
            req = {"op": "ping", "id": "ready-%d" % n} if what == "ping" else \
                {"op": "get", "id": "ready-%d" % n, "item": what}
            s = self.ctx.socket(zmq.REQ)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(self.endpoint)
            s.send(msgpack.packb(req))
            if s.poll(500, zmq.POLLIN):
                rep = decode_reply(s.recv())
                if rep.get("ok") or rep.get("error") not in ("unavailable", "internal"):
                    pending.pop(0)
            s.close()
            if pending:
                time.sleep(0.05)  # poll interval, bounded by the deadline above

    def logs(self):
        out = []
        for f in sorted(os.listdir(self.dir)):
            if f.endswith(".out") or f.endswith(".err"):
                with open(os.path.join(self.dir, f), errors="replace") as fh:
                    text = fh.read()
                out.append("----- %s -----\n%s" % (f, text[-6000:]))
        return "\n".join(out)

    def stop(self):
        for p in self.procs.values():
            if p.poll() is None:
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        try:
            _LOGS.append((self.dir, self.logs()))
        except Exception:
            pass
        self.ctx.destroy(linger=0)
        shutil.rmtree(self.dir, ignore_errors=True)


_item_counter = [0]
RUN = "c%x" % (os.getpid() & 0xFFFF)


def item_on(node, tag="i"):
    """A fresh item whose slot is owned by `node` (bid-1: 0-8191, bid-2: 8192-16383).

    With --direct every item is bid-1's, the node whose client endpoint the tests use."""
    lo, hi = (0, 8191) if node == "bid-1" or DIRECT else (8192, 16383)
    while True:
        _item_counter[0] += 1
        name = "%s-%s-%d" % (RUN, tag, _item_counter[0])
        if lo <= slot_of(name) <= hi:
            return name


class Reply:
    def __init__(self, frames):
        self.frames = frames
        self.raw = frames[-1]
        self.d = decode_reply(self.raw)

    def __getitem__(self, k):
        return self.d[k]

    def __repr__(self):
        return "Reply(%r)" % (self.d,)


class Client:
    """A REQ client; a REQ socket whose reply did not come is closed and reopened."""

    def __init__(self, ctx, endpoint):
        self.ctx = ctx
        self.endpoint = endpoint
        self.sock = None
        self._open()

    def _open(self):
        if self.sock is not None:
            self.sock.close(linger=0)
        self.sock = self.ctx.socket(zmq.REQ)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.connect(self.endpoint)

    def send_frames(self, frames, timeout=REPLY_TIMEOUT_S):
        """Send frames as one request; returns the reply frames or None on timeout."""
        self.sock.send_multipart(frames)
        if self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            return self.sock.recv_multipart()
        self._open()
        return None

    def call(self, req, timeout=REPLY_TIMEOUT_S):
        frame = req if isinstance(req, bytes) else msgpack.packb(req)
        frames = self.send_frames([frame], timeout)
        if frames is None:
            raise AssertionError("no reply within %ss to %r" % (timeout, frame[:200]))
        assert len(frames) == 1, "reply is %d frames, not one: %r" % (len(frames), frames)
        return Reply(frames)

    def close(self):
        self.sock.close(linger=0)


class Feed:
    """A SUB on the feed; keeps every event received, per item, with its checks."""

    def __init__(self, ctx, endpoint, topics=(b"item/",)):
        self.sock = ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.LINGER, 0)
        self.sock.setsockopt(zmq.RCVHWM, 200000)
        for t in topics:
            self.sock.setsockopt(zmq.SUBSCRIBE, t)
        self.sock.connect(endpoint)
        self.events = {}  # item -> [event]
        self.all = []
        self.errors = []

    def pump(self, timeout_s):
        """Read what arrives within timeout_s (returns at once after the first batch)."""
        got = 0
        if self.sock.poll(int(timeout_s * 1000), zmq.POLLIN):
            while True:
                try:
                    frames = self.sock.recv_multipart(zmq.NOBLOCK)
                except zmq.Again:
                    break
                got += 1
                self._take(frames)
        return got

    def _take(self, frames):
        if len(frames) != 2:
            self.errors.append("feed message of %d frames: %r" % (len(frames), frames))
            return
        topic, body = frames
        try:
            ev = decode_reply(body)
        except Exception as e:  # noqa
            self.errors.append("feed body not a map with string keys: %r (%s)" % (body, e))
            return
        item = ev.get("item")
        if topic != ("item/%s/" % item).encode():
            self.errors.append("topic %r for event of item %r" % (topic, item))
        self.events.setdefault(item, []).append(ev)
        self.all.append((topic, ev))

    def wait_for(self, item, pred=lambda e: True, timeout_s=REPLY_TIMEOUT_S):
        deadline = time.monotonic() + timeout_s
        while True:
            for ev in self.events.get(item, []):
                if pred(ev):
                    return ev
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError("no feed event for %s matching within %ss; got %r"
                                     % (item, timeout_s, self.events.get(item)))
            self.pump(min(left, 0.2))

    def close(self):
        self.sock.close(linger=0)


ANY = object()


class MeshTestCase(unittest.TestCase):
    """Base: a mesh per class, a REQ client, a feed subscriber to all items."""

    mesh = None

    @classmethod
    def setUpClass(cls):
        cls.mesh = Mesh()
        try:
            cls.mesh.start_all()
            cls.client = Client(cls.mesh.ctx, cls.mesh.endpoint)
            cls.feed = Feed(cls.mesh.ctx, cls.mesh.feed_endpoint)
            cls._ids = 0
            # Late-joiner rule: our subscription is live once an event of each node arrives.
            for node in ("bid-1", "bid-2"):
                cls.warm_feed(node)
        except Exception:
            cls.mesh.stop()
            raise

    @classmethod
    def warm_feed(cls, node, feed=None):
        feed = feed or cls.feed
        item = item_on(node, "warm")
        r = cls.client.call({"op": "open", "id": cls.next_id(), "item": item})
        assert r["ok"], r
        deadline = time.monotonic() + READY_DEADLINE_S
        amount = 0
        while not feed.events.get(item):
            if time.monotonic() > deadline:
                raise RuntimeError("feed never delivered an event of %s\n%s" % (node, cls.mesh.logs()))
            amount += 1
            r = cls.client.call({"op": "bid", "id": cls.next_id(), "item": item,
                                 "bidder": "w", "amount": amount})
            assert r["ok"], r
            feed.pump(0.2)
        return item

    @classmethod
    def tearDownClass(cls):
        for o in ("client", "feed"):
            if hasattr(cls, o):
                getattr(cls, o).close()
        cls.mesh.stop()

    @classmethod
    def next_id(cls):
        cls._ids += 1
        return "%s-id-%d" % (RUN, cls._ids)

    # --- helpers -----------------------------------------------------------------------------

    def call(self, req, **kw):
        return self.client.call(req, **kw)

    def ok(self, rep, rid, fields):
        """A success reply: ok true, the id, and exactly the doc's fields for the op."""
        self.assertIs(rep.d.get("ok"), True, rep)
        self.assertEqual(rep.d.get("id"), rid, rep)
        self.assertEqual(set(rep.d), {"ok", "id"} | set(fields), rep)
        self.assertNotIn("error", rep.d)

    def err(self, rep, code, rid=ANY):
        self.assertIs(rep.d.get("ok"), False, rep)
        self.assertEqual(rep.d.get("error"), code, rep)
        self.assertIn("id", rep.d, rep)
        if rid is not ANY:
            self.assertEqual(rep.d["id"], rid, rep)
        msg = rep.d.get("message")
        self.assertIsInstance(msg, str, rep)
        self.assertTrue(msg, rep)

    def open(self, item, **fields):
        rid = self.next_id()
        req = {"op": "open", "id": rid, "item": item}
        req.update(fields)
        rep = self.call(req)
        self.ok(rep, rid, ["item", "seq"])
        self.assertEqual(rep["item"], item)
        self.assertEqual(rep["seq"], 1)
        return rep

    def bid(self, item, bidder, amount, rid=None):
        rid = rid or self.next_id()
        return rid, self.call({"op": "bid", "id": rid, "item": item, "bidder": bidder,
                               "amount": amount})

    def bid_ok(self, item, bidder, amount, seq=None):
        rid, rep = self.bid(item, bidder, amount)
        self.ok(rep, rid, ["item", "bidder", "amount", "seq"])
        self.assertEqual((rep["item"], rep["bidder"], rep["amount"]), (item, bidder, amount))
        if seq is not None:
            self.assertEqual(rep["seq"], seq)
        return rep

    def get(self, item):
        rid = self.next_id()
        rep = self.call({"op": "get", "id": rid, "item": item})
        self.ok(rep, rid, ["item", "status", "max", "bidder", "seq", "bids", "start",
                           "increment", "closes_at"])
        self.assertEqual(rep["item"], item)
        return rep.d

    def history(self, item, **fields):
        rid = self.next_id()
        req = {"op": "history", "id": rid, "item": item}
        req.update(fields)
        rep = self.call(req)
        self.ok(rep, rid, ["item", "events"])
        self.assertEqual(rep["item"], item)
        self.assertIsInstance(rep["events"], list)
        return rep["events"]

    def bad(self, req, rid=ANY, code="bad_request"):
        rep = self.call(req)
        self.err(rep, code, rid)
        return rep

    def check_ts(self, ts):
        self.assertIsInstance(ts, int)
        self.assertLess(abs(ts - now_ms()), 120000, "ts %r is not unix ms of now" % ts)

    def check_event(self, ev, item, event, seq, **fields):
        common = {"event", "item", "seq", "ts"}
        extra = {"open": set(), "max": {"amount", "bidder"}, "closed": {"winner", "amount"}}[event]
        self.assertEqual(set(ev), common | extra, ev)
        self.assertEqual((ev["event"], ev["item"], ev["seq"]), (event, item, seq), ev)
        self.check_ts(ev["ts"])
        for k, v in fields.items():
            self.assertEqual(ev[k], v, ev)

    def assert_feed_consistent(self, item):
        """Events of one item arrive in seq order, without duplicates."""
        self.assertEqual(self.feed.errors, [])
        seqs = [e["seq"] for e in self.feed.events.get(item, [])]
        self.assertEqual(seqs, sorted(set(seqs)), "feed seqs of %s: %r" % (item, seqs))


# ---------------------------------------------------------------------------------------------


class ContractTest(MeshTestCase):

    # --- ping, open, bid, close, get, history: the success shapes ------------------------------

    def test_ping(self):
        rid = self.next_id()
        rep = self.call({"op": "ping", "id": rid})
        self.ok(rep, rid, [])
        # An id is any string of 1 to 64 bytes (not an identifier): spaces, '/', UTF-8.
        for rid in ("a", "client 7/ü #1", "x" * 64, "é" * 32):
            self.ok(self.call({"op": "ping", "id": rid}), rid, [])

    def test_open_get_defaults_and_feed(self):
        for node in ("bid-1", "bid-2"):
            item = item_on(node)
            self.open(item)
            g = self.get(item)
            self.assertEqual(g["status"], "open")
            self.assertIsNone(g["max"])
            self.assertIsNone(g["bidder"])
            self.assertIsNone(g["closes_at"])
            self.assertEqual((g["seq"], g["bids"], g["start"], g["increment"]), (1, 0, 1, 1))
            ev = self.feed.wait_for(item, lambda e: e["seq"] == 1)
            self.check_event(ev, item, "open", 1)

    def test_open_with_fields(self):
        item = item_on("bid-2")
        closes = now_ms() + 3600 * 1000
        self.open(item, start=250, increment=25, closes_at=closes)
        g = self.get(item)
        self.assertEqual((g["status"], g["start"], g["increment"], g["closes_at"]),
                         ("open", 250, 25, closes))
        self.assertIsNone(g["max"])

    def test_bid_rules_too_low_and_get(self):
        item = item_on("bid-1")
        self.open(item, start=100, increment=10)
        # Below start: too_low, carrying max (nil: no bid yet).
        rid, rep = self.bid(item, "alice", 99)
        self.err(rep, "too_low", rid)
        self.assertIn("max", rep.d)
        self.assertIsNone(rep["max"])
        # At start: accepted, seq 2.
        r = self.bid_ok(item, "alice", 100, seq=2)
        ev = self.feed.wait_for(item, lambda e: e["seq"] == 2)
        self.check_event(ev, item, "max", 2, amount=100, bidder="alice")
        # Below max + increment: too_low with max 100.
        rid, rep = self.bid(item, "bob", 109)
        self.err(rep, "too_low", rid)
        self.assertEqual(rep["max"], 100)
        # At max + increment: accepted.
        self.bid_ok(item, "bob", 110, seq=3)
        rid, rep = self.bid(item, "carol", 50)
        self.err(rep, "too_low", rid)
        self.assertEqual(rep["max"], 110)
        self.bid_ok(item, "carol", 1000, seq=4)
        g = self.get(item)
        self.assertEqual((g["status"], g["max"], g["bidder"], g["seq"], g["bids"]),
                         ("open", 1000, "carol", 4, 3))
        self.assertEqual((g["start"], g["increment"]), (100, 10))
        ev = self.feed.wait_for(item, lambda e: e["seq"] == 4)
        self.check_event(ev, item, "max", 4, amount=1000, bidder="carol")
        self.assert_feed_consistent(item)
        # Refusals did not move seq.
        self.assertEqual([e["seq"] for e in self.feed.events[item]], [1, 2, 3, 4])

    def test_close_with_winner(self):
        item = item_on("bid-2")
        self.open(item)
        self.bid_ok(item, "alice", 5)
        self.bid_ok(item, "bob", 7)
        rid = self.next_id()
        rep = self.call({"op": "close", "id": rid, "item": item})
        self.ok(rep, rid, ["item", "seq", "winner", "amount"])
        self.assertEqual((rep["item"], rep["seq"], rep["winner"], rep["amount"]),
                         (item, 4, "bob", 7))
        ev = self.feed.wait_for(item, lambda e: e["event"] == "closed")
        self.check_event(ev, item, "closed", 4, winner="bob", amount=7)
        g = self.get(item)
        self.assertEqual((g["status"], g["max"], g["bidder"], g["seq"], g["bids"]),
                         ("closed", 7, "bob", 4, 2))
        # Bid and close on a closed item: closed.
        rid, rep = self.bid(item, "carol", 100)
        self.err(rep, "closed", rid)
        rid = self.next_id()
        self.err(self.call({"op": "close", "id": rid, "item": item}), "closed", rid)
        # Open of a closed item: exists.
        rid = self.next_id()
        self.err(self.call({"op": "open", "id": rid, "item": item}), "exists", rid)
        self.assertEqual(self.get(item)["seq"], 4)
        self.assert_feed_consistent(item)

    def test_close_without_bids(self):
        item = item_on("bid-1")
        self.open(item)
        rid = self.next_id()
        rep = self.call({"op": "close", "id": rid, "item": item})
        self.ok(rep, rid, ["item", "seq", "winner", "amount"])
        self.assertEqual(rep["seq"], 2)
        self.assertIsNone(rep["winner"])
        self.assertIsNone(rep["amount"])
        ev = self.feed.wait_for(item, lambda e: e["event"] == "closed")
        self.check_event(ev, item, "closed", 2, winner=None, amount=None)
        g = self.get(item)
        self.assertEqual(g["status"], "closed")
        self.assertIsNone(g["max"])
        self.assertIsNone(g["bidder"])

    def test_exists(self):
        item = item_on("bid-2")
        self.open(item)
        rid = self.next_id()
        rep = self.call({"op": "open", "id": rid, "item": item, "start": 5})
        self.err(rep, "exists", rid)
        g = self.get(item)
        self.assertEqual((g["seq"], g["start"]), (1, 1))

    def test_unknown_item(self):
        item = item_on("bid-1")
        for req in ({"op": "bid", "item": item, "bidder": "a", "amount": 1},
                    {"op": "close", "item": item},
                    {"op": "get", "item": item},
                    {"op": "history", "item": item}):
            rid = self.next_id()
            req["id"] = rid
            self.err(self.call(req), "unknown_item", rid)

    def test_history_and_paging(self):
        item = item_on("bid-2")
        self.open(item, start=10)
        self.bid_ok(item, "alice", 10)
        self.bid_ok(item, "bob", 11)
        self.bid_ok(item, "alice", 20)
        self.call({"op": "close", "id": self.next_id(), "item": item})
        feed = [self.feed.wait_for(item, lambda e, s=s: e["seq"] == s) for s in range(1, 6)]
        events = self.history(item)
        self.assertEqual([e["seq"] for e in events], [1, 2, 3, 4, 5])
        self.assertEqual([e["event"] for e in events], ["open", "max", "max", "max", "closed"])
        for h, f in zip(events, feed):
            # each with seq, event, and its fields as on the feed
            specific = {"open": [], "max": ["amount", "bidder"], "closed": ["winner", "amount"]}
            for k in ["seq", "event"] + specific[h["event"]]:
                self.assertIn(k, h, h)
                self.assertEqual(h[k], f[k], (h, f))
            for k in h:  # whatever else it carries is the feed's value too
                self.assertIn(k, f, (h, f))
                self.assertEqual(h[k], f[k], (h, f))
        self.assertEqual((events[2]["bidder"], events[2]["amount"]), ("bob", 11))
        self.assertEqual((events[4]["winner"], events[4]["amount"]), ("alice", 20))
        # Paging with after / limit.
        self.assertEqual([e["seq"] for e in self.history(item, after=0, limit=2)], [1, 2])
        self.assertEqual([e["seq"] for e in self.history(item, after=2, limit=2)], [3, 4])
        self.assertEqual([e["seq"] for e in self.history(item, after=4, limit=2)], [5])
        self.assertEqual(self.history(item, after=5), [])
        self.assertEqual(self.history(item, after=500), [])
        self.assertEqual([e["seq"] for e in self.history(item, after=3)], [4, 5])
        self.assertEqual([e["seq"] for e in self.history(item, limit=1)], [1])
        self.assertEqual(self.history(item, limit=0), [])
        self.assertEqual(len(self.history(item, limit=5000)), 5)
        # Optional fields given as nil are absent.
        self.assertEqual([e["seq"] for e in self.history(item, after=None, limit=None)],
                         [1, 2, 3, 4, 5])

    def test_history_limit_default_100_and_cap_1000(self):
        item = item_on("bid-1")
        self.open(item)
        dealer = self.mesh.ctx.socket(zmq.DEALER)
        dealer.setsockopt(zmq.LINGER, 0)
        dealer.connect(self.mesh.endpoint)
        try:
            amount = 0
            accepted = 0
            n = 1050
            window = 100
            while amount < n:
                ids = set()
                for _ in range(min(window, n - amount)):
                    amount += 1
                    rid = self.next_id()
                    ids.add(rid)
                    dealer.send_multipart([b"", msgpack.packb(
                        {"op": "bid", "id": rid, "item": item, "bidder": "b%d" % (amount % 2),
                         "amount": amount})])
                while ids:
                    self.assertTrue(dealer.poll(int(REPLY_TIMEOUT_S * 1000)), "no reply")
                    frames = dealer.recv_multipart()
                    self.assertEqual(len(frames), 2)
                    rep = decode_reply(frames[1])
                    ids.discard(rep["id"])
                    if rep["ok"]:
                        accepted += 1
                    else:
                        self.assertEqual(rep["error"], "too_low", rep)
        finally:
            dealer.close(linger=0)
        total = 1 + accepted
        self.assertGreater(total, 1000)
        self.assertEqual(self.get(item)["seq"], total)
        self.assertEqual([e["seq"] for e in self.history(item)], list(range(1, 101)))
        capped = self.history(item, limit=5000)
        self.assertEqual([e["seq"] for e in capped], list(range(1, 1001)))
        self.assertEqual([e["seq"] for e in self.history(item, after=1000, limit=1000)],
                         list(range(1001, total + 1)))

    # --- retries, remembered replies, conflict -------------------------------------------------

    def test_retry_same_id_identical_reply_changes_nothing(self):
        item = item_on("bid-1")
        open_frame = msgpack.packb({"op": "open", "id": self.next_id(), "item": item, "start": 3})
        first = self.call(open_frame)
        self.assertTrue(first["ok"], first)
        bid_frame = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                                   "bidder": "alice", "amount": 5})
        b1 = self.call(bid_frame)
        self.assertTrue(b1["ok"], b1)
        low_frame = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                                   "bidder": "bob", "amount": 5})
        l1 = self.call(low_frame)
        self.err(l1, "too_low")
        before = self.get(item)
        for frame, r1 in ((open_frame, first), (bid_frame, b1), (low_frame, l1)):
            for _ in range(2):
                r2 = self.call(frame)
                self.assertEqual(r2.raw, r1.raw, "retry reply differs: %r vs %r" % (r2.d, r1.d))
        after = self.get(item)
        before.pop("id"), after.pop("id")
        self.assertEqual(after, before)
        self.assertEqual((after["seq"], after["bids"], after["max"]), (2, 1, 5))
        # A new write still gets the next seq: the retries added no event.
        self.bid_ok(item, "carol", 6, seq=3)
        self.feed.wait_for(item, lambda e: e["seq"] == 3)
        self.assertEqual([e["seq"] for e in self.feed.events[item]], [1, 2, 3])
        # A success is remembered also once the state has moved on: retry after close.
        close_frame = msgpack.packb({"op": "close", "id": self.next_id(), "item": item})
        c1 = self.call(close_frame)
        self.assertTrue(c1["ok"], c1)
        self.assertEqual(self.call(bid_frame).raw, b1.raw)
        self.assertEqual(self.call(close_frame).raw, c1.raw)
        self.assertEqual(self.call(open_frame).raw, first.raw)
        self.assertEqual(self.get(item)["seq"], 4)

    def test_retry_with_defaults_applied_is_the_same_write(self):
        # "other values of the op's fields once defaults are applied": start absent == start 1.
        item = item_on("bid-2")
        rid = self.next_id()
        r1 = self.call({"op": "open", "id": rid, "item": item})
        self.assertTrue(r1["ok"], r1)
        for variant in ({"start": 1}, {"increment": 1}, {"start": None, "closes_at": None},
                        {"zzz_unknown": [1, 2]}):
            req = {"op": "open", "id": rid, "item": item}
            req.update(variant)
            r2 = self.call(req)
            self.assertEqual(r2.raw, r1.raw, (variant, r2))
        self.err(self.call({"op": "open", "id": rid, "item": item, "start": 2}), "conflict", rid)
        self.assertEqual(self.get(item)["seq"], 1)

    def test_remembered_refusals(self):
        # unknown_item is remembered: after the item is opened, the retry still gets it.
        item = item_on("bid-1")
        bid_frame = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                                   "bidder": "alice", "amount": 5})
        close_frame = msgpack.packb({"op": "close", "id": self.next_id(), "item": item})
        u1 = self.call(bid_frame)
        self.err(u1, "unknown_item")
        c1 = self.call(close_frame)
        self.err(c1, "unknown_item")
        self.open(item)
        self.assertEqual(self.call(bid_frame).raw, u1.raw)
        self.assertEqual(self.call(close_frame).raw, c1.raw)
        g = self.get(item)
        self.assertEqual((g["status"], g["seq"], g["bids"]), ("open", 1, 0))
        # exists is remembered.
        ex = msgpack.packb({"op": "open", "id": self.next_id(), "item": item})
        e1 = self.call(ex)
        self.err(e1, "exists")
        self.assertEqual(self.call(ex).raw, e1.raw)
        # closed is remembered.
        self.bid_ok(item, "bob", 3)
        self.assertTrue(self.call({"op": "close", "id": self.next_id(), "item": item})["ok"])
        cl = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item, "bidder": "x",
                            "amount": 100})
        k1 = self.call(cl)
        self.err(k1, "closed")
        self.assertEqual(self.call(cl).raw, k1.raw)

    def test_bad_request_not_remembered(self):
        item = item_on("bid-2")
        self.open(item)
        rid = self.next_id()
        self.bad({"op": "bid", "id": rid, "item": item, "bidder": "alice", "amount": 0}, rid)
        # The same id with valid content is a new write, not a conflict.
        rid2, rep = self.bid(item, "alice", 4, rid=rid)
        self.ok(rep, rid, ["item", "bidder", "amount", "seq"])
        self.assertEqual(rep["seq"], 2)

    def test_conflict(self):
        item = item_on("bid-1")
        self.open(item)
        rid = self.next_id()
        r1 = self.call({"op": "bid", "id": rid, "item": item, "bidder": "alice", "amount": 5})
        self.assertTrue(r1["ok"], r1)
        # Other amount, other bidder, other op: conflict.
        for req in ({"op": "bid", "item": item, "bidder": "alice", "amount": 6},
                    {"op": "bid", "item": item, "bidder": "bob", "amount": 5},
                    {"op": "close", "item": item},
                    {"op": "open", "item": item}):
            req["id"] = rid
            self.err(self.call(req), "conflict", rid)
        # Nothing changed, and the original retry is still answered with its reply.
        g = self.get(item)
        self.assertEqual((g["status"], g["seq"], g["bids"]), ("open", 2, 1))
        self.assertEqual(self.call({"op": "bid", "id": rid, "item": item, "bidder": "alice",
                                    "amount": 5}).raw, r1.raw)
        # The pair is (item, id): the same id on another item is another write.
        other = item_on("bid-2")
        rep = self.call({"op": "open", "id": rid, "item": other})
        self.ok(rep, rid, ["item", "seq"])
        # Order: fields' rules before conflict; conflict before the item's state.
        self.bad({"op": "bid", "id": rid, "item": item, "bidder": "alice", "amount": 0}, rid)
        self.assertTrue(self.call({"op": "close", "id": self.next_id(), "item": item})["ok"])
        self.err(self.call({"op": "bid", "id": rid, "item": item, "bidder": "alice",
                            "amount": 99}), "conflict", rid)
        # A read with a write's id is not remembered and not a conflict.
        rep = self.call({"op": "get", "id": rid, "item": item})
        self.assertTrue(rep["ok"], rep)
        self.assertEqual(rep["status"], "closed")

    # --- closes_at -----------------------------------------------------------------------------

    def test_auto_close_with_bid(self):
        item = item_on("bid-2")
        closes = now_ms() + 800
        self.open(item, closes_at=closes)
        self.assertEqual(self.get(item)["closes_at"], closes)
        bid_frame = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                                   "bidder": "alice", "amount": 10})
        b1 = self.call(bid_frame)
        self.assertTrue(b1["ok"], b1)
        ev = self.feed.wait_for(item, lambda e: e["event"] == "closed", timeout_s=6)
        seen = now_ms()
        self.check_event(ev, item, "closed", 3, winner="alice", amount=10)
        self.assertGreaterEqual(ev["ts"], closes)
        # Within one second of closes_at (300 ms of slack for a loaded test machine).
        self.assertLessEqual(ev["ts"], closes + 1000 + 300, "closed %d ms late" % (ev["ts"] - closes))
        self.assertLessEqual(seen, closes + 1000 + 2000)
        g = self.get(item)
        self.assertEqual((g["status"], g["seq"], g["max"], g["bidder"]), ("closed", 3, 10, "alice"))
        h = self.history(item)
        self.assertEqual(h[-1]["event"], "closed")
        self.assertEqual((h[-1]["seq"], h[-1]["winner"], h[-1]["amount"]), (3, "alice", 10))
        rid = self.next_id()
        self.err(self.call({"op": "close", "id": rid, "item": item}), "closed", rid)
        # The bid made before the deadline is still remembered.
        self.assertEqual(self.call(bid_frame).raw, b1.raw)

    def test_auto_close_without_bid(self):
        item = item_on("bid-1")
        closes = now_ms() + 600
        self.open(item, closes_at=closes)
        ev = self.feed.wait_for(item, lambda e: e["event"] == "closed", timeout_s=6)
        self.check_event(ev, item, "closed", 2, winner=None, amount=None)
        self.assertLessEqual(ev["ts"], closes + 1000 + 300)
        g = self.get(item)
        self.assertEqual((g["status"], g["seq"]), ("closed", 2))
        self.assertIsNone(g["max"])

    def test_bid_after_closes_at_is_closed(self):
        item = item_on("bid-1")
        closes = now_ms() + 400
        self.open(item, closes_at=closes)
        while now_ms() <= closes + 5:  # wait for the deadline itself to pass
            time.sleep(0.01)
        rid, rep = self.bid(item, "alice", 50)
        self.err(rep, "closed", rid)
        ev = self.feed.wait_for(item, lambda e: e["event"] == "closed", timeout_s=6)
        self.check_event(ev, item, "closed", 2, winner=None, amount=None)
        self.assertEqual(self.get(item)["bids"], 0)

    def test_closes_at_in_past_or_bad(self):
        for v in (now_ms() - 1000, 0, 1, -5, 1.0e13, "soon", True):
            item = item_on("bid-2")
            rid = self.next_id()
            self.bad({"op": "open", "id": rid, "item": item, "closes_at": v}, rid)
            self.err(self.call({"op": "get", "id": self.next_id(), "item": item}), "unknown_item")

    def test_closes_at_far_future_u64(self):
        # Integers are unsigned 64-bit: a far deadline is a valid one.
        for v in (10 ** 15, 2 ** 63, 2 ** 64 - 1):
            item = item_on("bid-1")
            self.open(item, closes_at=v)
            self.assertEqual(self.get(item)["closes_at"], v)
            self.bid_ok(item, "alice", 1, seq=2)

    # --- bad_request ---------------------------------------------------------------------------

    def test_not_a_map(self):
        for frame in (b"", msgpack.packb([1, 2]), msgpack.packb("ping"), msgpack.packb(7),
                      msgpack.packb(None), b"\xc1", b"\xff\xff\xff", b"not msgpack at all",
                      b"\x82\xa2op",  # truncated map
                      msgpack.packb([{"op": "ping", "id": "x"}])):
            rep = self.call(frame)
            self.err(rep, "bad_request", None)

    def test_trailing_bytes(self):
        for tail in (b"\x00", b"\xc0", msgpack.packb({"op": "ping", "id": "y"})):
            rep = self.call(msgpack.packb({"op": "ping", "id": "tb"}) + tail)
            self.err(rep, "bad_request")
            self.assertIn(rep["id"], (None, "tb"))
        item = item_on("bid-1")
        self.open(item)
        rep = self.call(msgpack.packb({"op": "bid", "id": "tb2", "item": item, "bidder": "a",
                                       "amount": 1}) + b"\x01")
        self.err(rep, "bad_request")
        self.assertEqual(self.get(item)["bids"], 0)

    def test_keys_must_be_strings_and_once(self):
        rep = self.call(packmap([("op", "ping"), ("id", "k1"), (1, "x")]))
        self.err(rep, "bad_request")
        rep = self.call(packmap([("op", "ping"), ("id", "k2"), ("op", "ping")]))
        self.err(rep, "bad_request")
        item = item_on("bid-2")
        self.open(item)
        rep = self.call(packmap([("op", "bid"), ("id", self.next_id()), ("item", item),
                                 ("bidder", "a"), ("amount", 5), ("amount", 9)]))
        self.err(rep, "bad_request")
        self.assertEqual(self.get(item)["bids"], 0)

    def test_op_and_id_rules(self):
        rid = self.next_id()
        self.bad({"op": "bids", "id": rid}, rid)  # unknown op, id readable
        self.bad({"op": "PING", "id": rid}, rid)
        self.bad({"op": "", "id": rid}, rid)
        self.bad({"op": 1, "id": rid})
        self.bad({"id": rid})  # no op
        self.bad({"op": None, "id": rid})
        for bad_id in (None, 5, "", "x" * 65, ["a"], b"bin-id", True):
            req = {"op": "ping"}
            if bad_id is not None:
                req["id"] = bad_id
            rep = self.bad(req)
            if not isinstance(bad_id, str):
                self.assertIsNone(rep["id"], (bad_id, rep))  # could not be read
        self.bad({"op": "ping"}, None)
        item = item_on("bid-1")
        self.bad({"op": "open", "item": item}, None)
        self.bad({"op": "open", "id": "", "item": item})
        self.bad({"op": "open", "id": "z" * 65, "item": item})
        self.err(self.call({"op": "get", "id": self.next_id(), "item": item}), "unknown_item")

    def test_identifier_rules(self):
        # The longest name, with every allowed character class; padding moves the slot, so with
        # --direct the padded name itself must still be bid-1's.
        while True:
            ok_item = item_on("bid-1") + "_AZaz09-"
            ok_item = ok_item + "x" * (64 - len(ok_item))
            if not DIRECT or slot_of(ok_item) <= 8191:
                break
        self.open(ok_item)
        self.bid_ok(ok_item, "A_z-9" + "b" * 59, 1)
        for bad_item in ("", "a b", "a/b", "a.b", "é", "x" * 65, "a\x00b", "item/", 5, None,
                         ["a"]):
            for op in ("open", "get", "history", "close"):
                req = {"op": op, "id": self.next_id()}
                if bad_item is not None:
                    req["item"] = bad_item
                self.bad(req, req["id"])
        for bad_bidder in ("", "a b", "a/b", "ü", "y" * 65, 7, None):
            req = {"op": "bid", "id": self.next_id(), "item": ok_item, "amount": 100}
            if bad_bidder is not None:
                req["bidder"] = bad_bidder
            self.bad(req, req["id"])
        self.assertEqual(self.get(ok_item)["bids"], 1)

    def test_amount_rules(self):
        item = item_on("bid-2")
        self.open(item)
        for v in (0, -1, -100, 5.0, 5.5, "5", True, None, [5], {"v": 5}, b"\x05"):
            req = {"op": "bid", "id": self.next_id(), "item": item, "bidder": "a"}
            if v is not None:
                req["amount"] = v
            self.bad(req, req["id"])
        # Fields' rules come before the item's state.
        self.bad({"op": "bid", "id": self.next_id(), "item": item_on("bid-1"), "bidder": "a",
                  "amount": 0})
        self.bad({"op": "bid", "id": self.next_id(), "item": item_on("bid-1"), "bidder": "a"})
        g = self.get(item)
        self.assertEqual((g["seq"], g["bids"]), (1, 0))

    def test_start_increment_rules(self):
        for field in ("start", "increment"):
            for v in (0, -1, 2.0, "3", False):
                item = item_on("bid-1")
                rid = self.next_id()
                self.bad({"op": "open", "id": rid, "item": item, field: v}, rid)
                self.err(self.call({"op": "get", "id": self.next_id(), "item": item}),
                         "unknown_item")

    def test_history_field_rules(self):
        item = item_on("bid-2")
        self.open(item)
        for field in ("after", "limit"):
            for v in (-1, 1.0, "2", True):
                rid = self.next_id()
                self.bad({"op": "history", "id": rid, "item": item, field: v}, rid)

    def test_optional_nil_is_absent(self):
        item = item_on("bid-1")
        self.open(item, start=None, increment=None, closes_at=None)
        g = self.get(item)
        self.assertEqual((g["start"], g["increment"], g["closes_at"]), (1, 1, None))
        # nil for a required field is a missing field.
        self.bad({"op": "bid", "id": self.next_id(), "item": item, "bidder": "a", "amount": None})
        self.bad({"op": "get", "id": self.next_id(), "item": None})

    def test_unknown_keys_ignored(self):
        extra = {"zz": 1, "version": "v2", "meta": {"a": [1, 2]}, "tags": ["x"]}
        rid = self.next_id()
        req = {"op": "ping", "id": rid}
        req.update(extra)
        self.ok(self.call(req), rid, [])
        item = item_on("bid-2")
        rid = self.next_id()
        req = {"op": "open", "id": rid, "item": item, "bidder": "ignored-here"}
        req.update(extra)
        self.ok(self.call(req), rid, ["item", "seq"])
        rid = self.next_id()
        req = {"op": "bid", "id": rid, "item": item, "bidder": "a", "amount": 3, "start": 99}
        req.update(extra)
        self.ok(self.call(req), rid, ["item", "bidder", "amount", "seq"])
        rid = self.next_id()
        req = {"op": "get", "id": rid, "item": item, "amount": 1}
        req.update(extra)
        rep = self.call(req)
        self.assertTrue(rep["ok"], rep)
        self.assertEqual((rep["max"], rep["start"]), (3, 1))

    def test_signed_integer_formats(self):
        item = item_on("bid-1")
        rid = self.next_id()
        rep = self.call(packmap([("op", "open"), ("id", rid), ("item", item),
                                 ("start", enc_int(2, "i16")), ("increment", enc_int(1, "i64")),
                                 ("closes_at", enc_int(now_ms() + 3600 * 1000, "i64"))]))
        self.ok(rep, rid, ["item", "seq"])
        seq = 1
        for value, fmt in ((2, "i8"), (300, "i16"), (70000, "i32"), (5000000000, "i64"),
                           (5000000001, "u64"), (5000000002, "i64"), (5000000003, "u64")):
            seq += 1
            rid = self.next_id()
            rep = self.call(packmap([("op", "bid"), ("id", rid), ("item", item),
                                     ("bidder", "a"), ("amount", enc_int(value, fmt))]))
            self.ok(rep, rid, ["item", "bidder", "amount", "seq"])
            self.assertEqual((rep["amount"], rep["seq"]), (value, seq))
        # A small value in a wide unsigned format, and u8 / u16 / u32.
        item2 = item_on("bid-2")
        self.open(item2)
        for value, fmt in ((1, "u64"), (2, "u8"), (300, "u16"), (70000, "u32")):
            rid = self.next_id()
            rep = self.call(packmap([("op", "bid"), ("id", rid), ("item", item2),
                                     ("bidder", "b"), ("amount", enc_int(value, fmt))]))
            self.ok(rep, rid, ["item", "bidder", "amount", "seq"])
        # Negative values in signed formats are out of range.
        for fmt in ("i8", "i16", "i32", "i64"):
            rid = self.next_id()
            rep = self.call(packmap([("op", "bid"), ("id", rid), ("item", item2),
                                     ("bidder", "b"), ("amount", enc_int(-1, fmt))]))
            self.err(rep, "bad_request", rid)
        rid = self.next_id()
        rep = self.call(packmap([("op", "history"), ("id", rid), ("item", item2),
                                 ("after", enc_int(1, "i8")), ("limit", enc_int(2, "i32"))]))
        self.ok(rep, rid, ["item", "events"])
        self.assertEqual([e["seq"] for e in rep["events"]], [2, 3])
        # Zero in any format is not an amount.
        rid = self.next_id()
        rep = self.call(packmap([("op", "bid"), ("id", rid), ("item", item2),
                                 ("bidder", "b"), ("amount", enc_int(0, "u32"))]))
        self.err(rep, "bad_request", rid)

    def test_u64_max_amount(self):
        item = item_on("bid-2")
        top = 2 ** 64 - 1
        self.open(item, start=top - 1, increment=1)
        self.bid_ok(item, "alice", top - 1, seq=2)
        self.bid_ok(item, "bob", top, seq=3)
        # max + increment is 2^64, above any amount: too_low, carrying max.
        rid, rep = self.bid(item, "carol", top)
        self.err(rep, "too_low", rid)
        self.assertEqual(rep["max"], top)
        g = self.get(item)
        self.assertEqual((g["max"], g["bidder"], g["start"]), (top, "bob", top - 1))

    # --- size ----------------------------------------------------------------------------------

    def _sized_ping(self, size, rid):
        pad = ""
        while True:
            frame = msgpack.packb({"op": "ping", "id": rid, "pad": pad})
            if len(frame) == size:
                return frame
            if len(frame) > size:
                raise AssertionError("cannot build a frame of %d bytes" % size)
            pad += "p" * max(1, min(size - len(frame), 1000))

    def test_too_large(self):
        rep = self.call(self._sized_ping(4096, "sz-ok"))
        self.ok(rep, "sz-ok", [])
        rep = self.call(self._sized_ping(4097, "sz-big"))
        self.err(rep, "too_large", None)  # its id is nil
        # size is judged before decoding
        self.err(self.call(b"\xff" * 5000), "too_large", None)
        item = item_on("bid-1")
        self.open(item)
        rep = self.call(msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                                       "bidder": "a", "amount": 5, "pad": "q" * 5000}))
        self.err(rep, "too_large", None)
        self.assertEqual(self.get(item)["bids"], 0)
        # 60 KiB: still too_large.
        self.err(self.call(self._sized_ping(60 * 1024, "sz-60k")), "too_large", None)

    def test_over_64k_no_harm(self):
        # Past 64 KiB the transport may drop the frame and the connection: too_large or nothing.
        c = Client(self.mesh.ctx, self.mesh.endpoint)
        try:
            frames = c.send_frames([self._sized_ping(70000, "sz-70k")], timeout=1.5)
            if frames is not None:
                self.assertEqual(len(frames), 1)
                self.err(Reply(frames), "too_large", None)
        finally:
            c.close()
        self.ok(self.call({"op": "ping", "id": "after-70k"}), "after-70k", [])

    def test_unpack_limits(self):
        deep = 1
        for _ in range(20):
            deep = [deep]
        self.bad({"op": "ping", "id": "deep", "x": deep})
        wide = {"op": "ping", "id": "wide"}
        for i in range(100):
            wide["k%d" % i] = i
        self.bad(wide)
        self.bad({"op": "ping", "id": "long", "x": list(range(100))})

    def test_unpack_limit_boundaries(self):
        # "at most 64 map entries and 64 array elements"
        req = {"op": "ping", "id": "e64"}
        for i in range(62):
            req["k%d" % i] = i
        self.ok(self.call(req), "e64", [])
        req["k62"] = 62
        req["id"] = "e65"
        self.bad(req)
        self.ok(self.call({"op": "ping", "id": "a64", "x": list(range(64))}), "a64", [])
        self.bad({"op": "ping", "id": "a65", "x": list(range(65))})

    def test_reads_not_remembered(self):
        item = item_on("bid-2")
        self.open(item)
        rid = self.next_id()
        g1 = self.call({"op": "get", "id": rid, "item": item})
        h1 = self.call({"op": "history", "id": rid + "h", "item": item})
        self.bid_ok(item, "alice", 8)
        g2 = self.call({"op": "get", "id": rid, "item": item})
        h2 = self.call({"op": "history", "id": rid + "h", "item": item})
        self.assertEqual((g1["max"], g1["seq"]), (None, 1))
        self.assertEqual((g2["max"], g2["seq"]), (8, 2))
        self.assertEqual((len(h1["events"]), len(h2["events"])), (1, 2))

    def test_close_before_deadline_then_no_second_close(self):
        item = item_on("bid-1")
        closes = now_ms() + 500
        self.open(item, closes_at=closes)
        self.bid_ok(item, "alice", 2)
        rid = self.next_id()
        rep = self.call({"op": "close", "id": rid, "item": item})
        self.ok(rep, rid, ["item", "seq", "winner", "amount"])
        self.assertEqual((rep["seq"], rep["winner"], rep["amount"]), (3, "alice", 2))
        # Past the deadline and its one second: no other close, no other event.
        while now_ms() < closes + 1300:
            self.feed.pump(0.1)
        g = self.get(item)
        self.assertEqual((g["status"], g["seq"], g["closes_at"]), ("closed", 3, closes))
        self.assertEqual([e["seq"] for e in self.feed.events[item]], [1, 2, 3])

    # --- sockets -------------------------------------------------------------------------------

    def test_req_multiframe_request(self):
        c = Client(self.mesh.ctx, self.mesh.endpoint)
        try:
            frames = c.send_frames([msgpack.packb({"op": "ping", "id": "mf"}),
                                    msgpack.packb({"op": "ping", "id": "mf2"})])
            self.assertIsNotNone(frames, "no reply to a two-frame request")
            self.assertEqual(len(frames), 1, frames)
            self.err(Reply(frames), "bad_request", None)
        finally:
            c.close()

    def test_dealer_in_flight(self):
        item1, item2 = item_on("bid-1"), item_on("bid-2")
        self.open(item1)
        self.open(item2)
        d = self.mesh.ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(self.mesh.endpoint)
        try:
            sent = {}
            for i in range(30):
                rid = "dl-%s-%d" % (RUN, i)
                item = (item1, item2)[i % 2]
                if i % 3 == 0:
                    req = {"op": "get", "id": rid, "item": item}
                elif i % 3 == 1:
                    req = {"op": "bid", "id": rid, "item": item, "bidder": "d",
                           "amount": 1000 + i}
                else:
                    req = {"op": "ping", "id": rid}
                sent[rid] = req
                d.send_multipart([b"", msgpack.packb(req)])
            got = {}
            deadline = time.monotonic() + REPLY_TIMEOUT_S * 2
            while len(got) < len(sent):
                left = deadline - time.monotonic()
                self.assertTrue(left > 0 and d.poll(int(left * 1000)),
                                "missing replies: %r" % (set(sent) - set(got)))
                frames = d.recv_multipart()
                self.assertEqual(len(frames), 2, frames)
                self.assertEqual(frames[0], b"")
                rep = decode_reply(frames[1])
                self.assertIn(rep["id"], sent)
                self.assertNotIn(rep["id"], got, "two replies to one request")
                got[rep["id"]] = rep
            for rid, rep in got.items():
                req = sent[rid]
                self.assertTrue(rep["ok"], (req, rep))
                if req["op"] == "bid":
                    self.assertEqual(rep["amount"], req["amount"])
                if req["op"] == "get":
                    self.assertEqual(rep["item"], req["item"])
            self.assertFalse(d.poll(200), "an extra reply came")
            # A DEALER that leaves out the delimiter: bad_request, nil id, as [empty, reply].
            d.send(msgpack.packb({"op": "ping", "id": "nodelim"}))
            self.assertTrue(d.poll(int(REPLY_TIMEOUT_S * 1000)), "no reply without delimiter")
            frames = d.recv_multipart()
            self.assertEqual(len(frames), 2, frames)
            self.assertEqual(frames[0], b"")
            rep = decode_reply(frames[1])
            self.assertEqual((rep["ok"], rep["error"], rep["id"]), (False, "bad_request", None))
            # Several body frames after the delimiter: bad_request, nil id.
            d.send_multipart([b"", msgpack.packb({"op": "ping", "id": "m1"}), b"extra"])
            self.assertTrue(d.poll(int(REPLY_TIMEOUT_S * 1000)), "no reply to 2 body frames")
            frames = d.recv_multipart()
            self.assertEqual(len(frames), 2, frames)
            rep = decode_reply(frames[1])
            self.assertEqual((rep["ok"], rep["error"], rep["id"]), (False, "bad_request", None))
        finally:
            d.close(linger=0)

    # --- feed ----------------------------------------------------------------------------------

    def test_feed_topic_exact(self):
        # x4 and x41 on the same node, so their events leave it in order.
        while True:
            base = item_on("bid-1", "t")
            if slot_of(base + "1") <= 8191:
                break
        x4, x41 = base, base + "1"
        self.open(x4)
        self.open(x41)
        sub = Feed(self.mesh.ctx, self.mesh.feed_endpoint, topics=[("item/%s/" % x4).encode()])
        try:
            deadline = time.monotonic() + READY_DEADLINE_S
            amount = 0
            while not sub.events.get(x4):  # wait until the subscription is live
                self.assertLess(time.monotonic(), deadline, "subscription never live")
                amount += 1
                self.bid_ok(x4, "a", amount)
                sub.pump(0.2)
            self.bid_ok(x41, "b", 1)
            amount += 1
            last = self.bid_ok(x4, "a", amount)["seq"]
            sub.wait_for(x4, lambda e: e["seq"] == last)
            sub.pump(0.2)
            self.assertEqual(sub.errors, [])
            self.assertEqual(set(sub.events), {x4}, "subscription to item/%s/ saw %r"
                             % (x4, set(sub.events)))
            for topic, _ in sub.all:
                self.assertEqual(topic, ("item/%s/" % x4).encode())
            # The all-items subscription saw both.
            self.feed.wait_for(x41, lambda e: e["seq"] == 2)
        finally:
            sub.close()

    def test_feed_seq_order(self):
        item = item_on("bid-2")
        self.open(item)
        for i in range(1, 21):
            self.bid_ok(item, "b%d" % (i % 3), i, seq=i + 1)
        self.call({"op": "close", "id": self.next_id(), "item": item})
        self.feed.wait_for(item, lambda e: e["seq"] == 22)
        evs = self.feed.events[item]
        self.assertEqual([e["seq"] for e in evs], list(range(1, 23)))
        self.check_event(evs[0], item, "open", 1)
        for i in range(1, 21):
            self.check_event(evs[i], item, "max", i + 1, amount=i, bidder="b%d" % (i % 3))
        self.check_event(evs[21], item, "closed", 22, winner="b2", amount=20)
        ts = [e["ts"] for e in evs]
        self.assertEqual(ts, sorted(ts))

    def test_feed_late_joiner(self):
        item = item_on("bid-1")
        self.open(item)
        for a in range(1, 6):
            self.bid_ok(item, "early", a)
        sub = Feed(self.mesh.ctx, self.mesh.feed_endpoint, topics=[("item/%s/" % item).encode()])
        try:
            deadline = time.monotonic() + READY_DEADLINE_S
            amount = 5
            while not sub.events.get(item):  # subscribe, wait for the first event
                self.assertLess(time.monotonic(), deadline)
                amount += 1
                self.bid_ok(item, "late", amount)
                sub.pump(0.2)
            first = sub.events[item][0]
            state = self.get(item)  # then read the state
            self.assertGreaterEqual(state["seq"], first["seq"])
            self.assertEqual(state["max"], amount)
            amount += 1
            nxt = self.bid_ok(item, "late", amount)["seq"]
            self.assertEqual(nxt, state["seq"] + 1)
            sub.wait_for(item, lambda e: e["seq"] == nxt)
            kept = [e for e in sub.events[item] if e["seq"] > state["seq"]]
            self.assertEqual([e["seq"] for e in kept], [nxt])
            self.check_event(kept[0], item, "max", nxt, amount=amount, bidder="late")
            seqs = [e["seq"] for e in sub.events[item]]
            self.assertEqual(seqs, sorted(set(seqs)))
        finally:
            sub.close()

    def test_zz_feed_no_errors(self):
        self.feed.pump(0.1)
        self.assertEqual(self.feed.errors, [])
        for item, evs in self.feed.events.items():
            seqs = [e["seq"] for e in evs]
            self.assertEqual(seqs, sorted(set(seqs)), item)


class DirectSlotsTest(MeshTestCase):
    """v1.2: `slots` from the router and every bid node; `moved` for every op that names an item."""

    def owned(self, node):
        """An item of `node` whatever the run (item_on gives only bid-1's with --direct)."""
        lo, hi = (0, 8191) if node == "bid-1" else (8192, 16383)
        while True:
            name = "%s-own-%d" % (RUN, self.next_id_num())
            if lo <= slot_of(name) <= hi:
                return name

    @classmethod
    def next_id_num(cls):
        cls._ids += 1
        return cls._ids

    def at(self, endpoint, req):
        c = Client(self.mesh.ctx, endpoint)
        try:
            return c.call(req)
        finally:
            c.close()

    def test_slots_agree_and_cover(self):
        replies = {}
        for name, ep in [("router", self.mesh.router_endpoint)] + sorted(self.mesh.client_endpoints.items()):
            rid = self.next_id()
            rep = self.at(ep, {"op": "slots", "id": rid})
            self.ok(rep, rid, ["digest", "slots"])
            replies[name] = rep
        first = replies["router"]
        self.assertIsInstance(first["digest"], str)
        for name, rep in replies.items():
            self.assertEqual((rep["digest"], rep["slots"]), (first["digest"], first["slots"]), name)
        want = [{"first": 0, "last": 8191, "node": "bid-1", "endpoint": self.mesh.client_endpoints["bid-1"]},
                {"first": 8192, "last": 16383, "node": "bid-2", "endpoint": self.mesh.client_endpoints["bid-2"]}]
        self.assertEqual(first["slots"], want)
        # Every slot exactly once, in order.
        nxt = 0
        for r in first["slots"]:
            self.assertEqual(sorted(r), ["endpoint", "first", "last", "node"])
            self.assertEqual(r["first"], nxt)
            nxt = r["last"] + 1
        self.assertEqual(nxt, SLOTS)
        # slots takes no fields; unknown ones are ignored as for every op.
        rid = self.next_id()
        self.ok(self.at(self.mesh.client_endpoints["bid-2"], {"op": "slots", "id": rid, "x": 1}), rid,
                ["digest", "slots"])
        self.ok(self.at(self.mesh.client_endpoints["bid-2"], {"op": "ping", "id": "direct-ping"}), "direct-ping", [])

    def test_moved_for_every_op(self):
        for here, there in (("bid-1", "bid-2"), ("bid-2", "bid-1")):
            item = self.owned(there)
            reqs = [{"op": "open", "item": item, "start": 5},
                    {"op": "bid", "item": item, "bidder": "m", "amount": 7},
                    {"op": "get", "item": item},
                    {"op": "history", "item": item},
                    {"op": "close", "item": item}]
            for req in reqs:
                req["id"] = self.next_id()
                rep = self.at(self.mesh.client_endpoints[here], req)
                self.err(rep, "moved", req["id"])
                self.assertEqual(sorted(rep.d), ["endpoint", "error", "id", "message", "node", "ok"], rep.d)
                self.assertEqual((rep["node"], rep["endpoint"]), (there, self.mesh.client_endpoints[there]))
                # Not remembered, nothing applied: the same request, same id, at the owner succeeds.
                again = self.at(rep["endpoint"], req)
                self.assertTrue(again["ok"], (req, again.d))
            # The judging order: the fields before `moved`.
            rid = self.next_id()
            self.err(self.at(self.mesh.client_endpoints[here],
                             {"op": "bid", "id": rid, "item": self.owned(there), "bidder": "m", "amount": 0}),
                     "bad_request", rid)
            rid = self.next_id()
            self.err(self.at(self.mesh.client_endpoints[here], {"op": "get", "id": rid, "item": "no/slash"}),
                     "bad_request", rid)


class UnavailableRestartTest(MeshTestCase):
    """A bid node killed with SIGKILL: unavailable; restarted: its data intact, service normal."""

    @classmethod
    def setUpClass(cls):
        if DIRECT:
            raise unittest.SkipTest("`unavailable` for a node that is down is the router's answer: "
                                    "a direct client falls back to the router (docs/protocol.md)")
        super().setUpClass()

    def list_pages(self, status, limit):
        """Every page of `list` for `status`: (entries, pages' partial flags, missing names)."""
        entries, partial, missing, cursor = [], [], set(), None
        for _ in range(1000):
            rid = self.next_id()
            req = {"op": "list", "id": rid, "status": status, "limit": limit}
            if cursor is not None:
                req["cursor"] = cursor
            rep = self.call(req)
            self.ok(rep, rid, ["items", "cursor", "partial", "missing"])
            self.assertLessEqual(len(rep["items"]), limit)
            self.assertEqual(rep["partial"], bool(rep["missing"]), rep)
            partial.append(rep["partial"])
            missing.update(rep["missing"])
            entries += rep["items"]
            cursor = rep["cursor"]
            if cursor is None:
                return entries, partial, missing
        self.fail("the cursor never ended")

    def test_list_order_pages_and_a_node_down(self):
        far = now_ms() + 7 * 86_400_000
        mine = {}
        for i, node in enumerate(["bid-1", "bid-2"] * 4):
            item = item_on(node, "list")
            fields = {} if i == 7 else {"closes_at": far + (i % 3) * 1000}
            if i == 0:
                fields["title"] = "Lot zero"
                fields["description"] = "only in get"
            self.open(item, **fields)
            mine[item] = (node, fields.get("closes_at"))
        key = lambda e: (e["closes_at"] is None, e["closes_at"] or 0, e["item"].encode())
        entries, partial, missing = self.list_pages("open", 3)
        # The whole order holds (every open item of the mesh), and each item is there once.
        self.assertEqual(entries, sorted(entries, key=key))
        self.assertEqual(len({e["item"] for e in entries}), len(entries))
        listed = {e["item"]: e for e in entries if e["item"] in mine}
        self.assertEqual(set(listed), set(mine))
        get_fields = {"item", "status", "max", "bidder", "seq", "bids", "start", "increment", "closes_at"}
        for item, e in listed.items():
            self.assertTrue(get_fields <= set(e), e)
            self.assertEqual((e["status"], e["closes_at"]), ("open", mine[item][1]))
        first = listed[next(iter(mine))]
        self.assertEqual(first["title"], "Lot zero")
        self.assertNotIn("description", first)
        self.assertEqual((any(partial), missing), (False, set()))

        rid = self.next_id()
        self.bad({"op": "list", "id": rid, "status": "sold"}, rid)
        self.bad({"op": "list", "id": rid, "status": "open", "limit": 101}, rid)
        self.bad({"op": "list", "id": rid, "status": "open", "cursor": "not-a-cursor"}, rid)

        self.mesh.kill("bid-2")
        try:
            entries, partial, missing = self.list_pages("open", 3)
            self.assertTrue(all(partial))
            self.assertEqual(missing, {"bid-2"})
            self.assertEqual({e["item"] for e in entries if e["item"] in mine},
                             {item for item, (node, _) in mine.items() if node == "bid-1"})
            self.assertEqual(entries, sorted(entries, key=key))
        finally:
            self.mesh.start("bid-2")
            self.mesh.wait_ready(nodes=("bid-2",))
        entries, partial, missing = self.list_pages("open", 3)
        self.assertEqual((any(partial), missing), (False, set()))
        self.assertTrue(set(mine) <= {e["item"] for e in entries})

    def test_kill_and_restart_bid_node(self):
        item = item_on("bid-2")
        live = item_on("bid-1")
        self.open(item, start=10, increment=5)
        self.open(live)
        b1_frame = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                                  "bidder": "alice", "amount": 10})
        b1 = self.call(b1_frame)
        self.assertTrue(b1["ok"], b1)
        self.bid_ok(item, "bob", 20, seq=3)
        before = self.get(item)
        hist_before = self.history(item)
        self.feed.wait_for(item, lambda e: e["seq"] == 3)
        timed = item_on("bid-2")
        timed_closes = now_ms() + 400
        self.open(timed, closes_at=timed_closes)
        self.bid_ok(timed, "tom", 7, seq=2)

        self.mesh.kill("bid-2")
        # Requests for its items: unavailable (in time), with the id; others are served.
        for req in ({"op": "get", "item": item},
                    {"op": "bid", "item": item, "bidder": "carol", "amount": 30},
                    {"op": "open", "item": item_on("bid-2")}):
            rid = self.next_id()
            req["id"] = rid
            t0 = time.monotonic()
            rep = self.call(req)
            elapsed = time.monotonic() - t0
            self.err(rep, "unavailable", rid)
            self.assertLess(elapsed, REQUEST_TIMEOUT_MS / 1000.0 + 2.5)
        pending_frame = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                                       "bidder": "dave", "amount": 40})
        self.err(self.call(pending_frame), "unavailable")
        self.ok(self.call({"op": "ping", "id": "while-down"}), "while-down", [])
        self.bid_ok(live, "x", 1, seq=2)

        while now_ms() <= timed_closes + 50:  # the deadline passes while the owner is down
            time.sleep(0.01)
        self.mesh.start("bid-2")
        self.mesh.wait_ready(nodes=("bid-2",))
        # After the restart, a bid after closes_at is closed, and the item closes by itself.
        rid, rep = self.bid(timed, "uma", 100)
        self.err(rep, "closed", rid)
        deadline = time.monotonic() + 3.0
        while True:
            g = self.get(timed)
            if g["status"] == "closed" or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        self.assertEqual((g["status"], g["seq"], g["max"], g["bidder"], g["bids"]),
                         ("closed", 3, 7, "tom", 1))
        closed_ev = self.history(timed)[-1]
        self.assertEqual((closed_ev["event"], closed_ev["seq"], closed_ev["winner"],
                          closed_ev["amount"]), ("closed", 3, "tom", 7))
        after = self.get(item)
        before.pop("id"), after.pop("id")
        self.assertEqual(after, before)
        self.assertEqual(self.history(item), hist_before)
        # A write remembered before the crash is still remembered.
        self.assertEqual(self.call(b1_frame).raw, b1.raw)
        # unavailable is not remembered: the retry is applied now, seq goes on from 3.
        self.warm_feed("bid-2")  # the restarted node's publisher reaches our subscription
        rep = self.call(pending_frame)
        self.assertTrue(rep["ok"], rep)
        self.assertEqual((rep["seq"], rep["amount"]), (4, 40))
        self.assertEqual(self.call(pending_frame).raw, rep.raw)
        ev = self.feed.wait_for(item, lambda e: e["seq"] == 4)
        self.check_event(ev, item, "max", 4, amount=40, bidder="dave")
        self.bid_ok(item, "erin", 45, seq=5)
        g = self.get(item)
        self.assertEqual((g["max"], g["bidder"], g["bids"], g["seq"]), (45, "erin", 4, 5))

    def test_stopped_node_times_out_and_late_reply_dropped(self):
        item = item_on("bid-2")
        self.open(item)
        d = self.mesh.ctx.socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(self.mesh.endpoint)
        p = self.mesh.procs["bid-2"]
        frame = msgpack.packb({"op": "bid", "id": self.next_id(), "item": item,
                               "bidder": "slow", "amount": 9})
        p.send_signal(signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            d.send_multipart([b"", frame])
            self.assertTrue(d.poll(int(REPLY_TIMEOUT_S * 1000)), "no reply from a stopped owner")
            elapsed = time.monotonic() - t0
            frames = d.recv_multipart()
            rep = decode_reply(frames[1])
            self.assertEqual((rep["ok"], rep["error"]), (False, "unavailable"), rep)
            # It waited for request_timeout_ms (the owner is connected), not much longer.
            self.assertGreaterEqual(elapsed, REQUEST_TIMEOUT_MS / 1000.0 * 0.8)
            self.assertLess(elapsed, REQUEST_TIMEOUT_MS / 1000.0 + 2.5)
        finally:
            p.send_signal(signal.SIGCONT)
        try:
            # The owner now answers; the router drops it: never two replies to one request.
            self.mesh.wait_ready(nodes=("bid-2",))
            self.get(item)
            if d.poll(500):
                self.fail("a second reply to one request came: %r" % (d.recv_multipart(),))
        finally:
            d.close(linger=0)
        # The write may have been applied; a retry gets its (remembered) reply.
        r1 = self.call(frame)
        self.ok(r1, msgpack.unpackb(frame)["id"], ["item", "bidder", "amount", "seq"])
        self.assertEqual(r1["seq"], 2)
        self.assertEqual(self.call(frame).raw, r1.raw)
        self.assertEqual(self.get(item)["bids"], 1)


def main():
    global BIN_DIR, DIRECT
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ap.add_argument("--direct", action="store_true", help="test bid-1's client endpoint, not the router")
    args, rest = ap.parse_known_args()
    BIN_DIR = os.path.abspath(args.bin_dir)
    DIRECT = args.direct
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    ok = prog.result.wasSuccessful()
    if not ok:
        for d, text in _LOGS:
            sys.stderr.write("===== mesh logs from %s =====\n%s\n" % (d, text))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
