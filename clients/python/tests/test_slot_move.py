#!/usr/bin/python3
"""A slot range moved with `bidmesh-ctl reload` while direct clients bid (issue 16, point 3).

A supervised mesh (bidmesh-supervisor: router with the feed, bid-1 and bid-2 each with a
client_listen) and 40 open items, 14 of them in slots 0-4095 (bid-1's, the range that moves).
Four DirectClient threads bid without pause, each bid with a fresh id and bidder name and an
amount from one rising counter; a call that gets no reply or `unavailable` is sent again with the
same id until answered (at most BID_DEADLINE_S). Meanwhile the operator procedure of
docs/deployment.md "Moving a slot range": `bidmesh-ctl stop bid-1`, `stop bid-2`,
`bidmesh-slots move --slots 0-4095 --from bid-1 --to bid-2`, mesh.toml.new copied over the
config, `bidmesh-ctl reload`, `start bid-1`, `start bid-2`; then the clients go on bidding.
A fifth client learns the map before the move and makes its next call only afterwards.

Checked: every answered bid (accepted or `too_low`) is in its item's history exactly as its reply
says (seq, bidder, amount) and a refused one is not; no bidder twice; every id sent again at the
end gets the reply it got first (so also the bids retried across the stop window, and those whose
records moved to bid-2); the clients answered direct after the move; a client calling while both
nodes are stopped is answered `unavailable` by the router; the old-map client is answered
`moved` and served by bid-2; `slots` at the router and a `get` at bid-1's endpoint say
the range is bid-2's.

Run: /usr/bin/python3 clients/python/tests/test_slot_move.py --bin-dir build/bin
"""

import itertools
import os
import random
import shutil
import subprocess
import sys
import threading
import time
import unittest

import zmq

import mesh
from mesh import bidmesh, item_on

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "tests", "support"))
from pymesh import SCALE, Supervised, log_tails, request, wait_for  # noqa: E402

MOVED_RANGE = (0, 4095)
BIDDERS = 4
BID_DEADLINE_S = 60 * SCALE  # one bid, retries included: longer than the whole stop window


def items_of(count, node, slot_ok):
    """`count` fresh items of `node` whose slot passes slot_ok."""
    out = []
    while len(out) < count:
        name = item_on(node, "mv")
        if slot_ok(bidmesh.slot_of(name)):
            out.append(name)
    return out


def in_moved_range(slot):
    return MOVED_RANGE[0] <= slot <= MOVED_RANGE[1]


class Bidder(threading.Thread):
    """Bids until `stop`; `answers`: (item, id, bidder, amount, reply dict, tries) of every answered
    bid. `direct_after` counts bids answered direct once `moved_done` is set."""

    def __init__(self, index, endpoint, items, amounts, stop, moved_done):
        super().__init__(name="bidder-%d" % index, daemon=True)
        self.index, self.items, self.amounts = index, items, amounts
        self.stop, self.moved_done = stop, moved_done
        # node_timeout/holdoff short enough that a bidder is back on the direct path soon after
        # the restart; connect_wait gives a reconnecting socket time before the router takes over.
        # retries=0: every retry of a bid is this thread's own, with the same id, and counted.
        # timeout above the mesh's request_timeout_ms, so that the router's `unavailable` comes back.
        self.client = bidmesh.DirectClient(endpoint, timeout=1.0 * SCALE, retries=0, node_timeout=0.3 * SCALE,
                                           connect_wait=0.25 * SCALE, holdoff=0.3)
        self.unanswered = 0  # tries that got no reply or `unavailable`/`internal`
        self.answers = []
        self.errors = []
        self.direct_after = 0

    def bid_until_answered(self, item, rid, bidder, amount):
        deadline = time.monotonic() + BID_DEADLINE_S
        tries = 0
        while True:
            tries += 1
            try:
                return self.client.bid(item, bidder, amount, id=rid), tries
            except bidmesh.RequestError as e:
                if not e.retryable:
                    return e.reply, tries
            except bidmesh.NoReply:
                pass
            self.unanswered += 1
            if time.monotonic() > deadline:
                raise AssertionError("bid %s on %s: no answer but unavailable within %.0f s (%d tries)"
                                     % (rid, item, BID_DEADLINE_S, tries))
            time.sleep(0.02)  # the router answers `unavailable` at once for a stopped node: no spinning

    def run(self):
        rng = random.Random(self.index)
        try:
            for n in itertools.count(1):
                if self.stop.is_set():
                    return
                item = rng.choice(self.items)
                rid = bidder = "t%d-%d" % (self.index, n)  # fresh id and bidder name per bid
                amount = next(self.amounts)
                after_move = self.moved_done.is_set()
                reply, tries = self.bid_until_answered(item, rid, bidder, amount)
                if not (reply.get("ok") or reply.get("error") == "too_low"):
                    self.errors.append("bid %s on %s: %r" % (rid, item, reply))
                self.answers.append((item, rid, bidder, amount, reply, tries))
                if after_move and self.client.last_path == "direct":
                    self.direct_after += 1
        except Exception as e:  # reported by the test, which joins this thread
            self.errors.append("%s: %r" % (self.name, e))


class SlotMoveReloadTest(unittest.TestCase):

    def setUp(self):
        self.mesh = mesh.Mesh(direct=True)  # the config; the supervisor runs its nodes
        self.sup = Supervised(mesh.BIN_DIR, self.mesh.config, self.mesh.dir)

    def tearDown(self):
        self.sup.stop()
        if self.mesh.dir and os.path.isdir(self.mesh.dir):
            mesh._LOGS.append((self.mesh.dir, log_tails(self.mesh.dir)))
        self.mesh.stop()

    def client(self, **kw):
        c = bidmesh.DirectClient(self.mesh.endpoint, timeout=1.0, **kw)
        self.addCleanup(c.shutdown)
        return c

    def call_until_answered(self, c, what, fn):
        """fn() until it returns without NoReply or a retryable error (the mesh may be starting)."""
        def answered():
            try:
                return fn() or True
            except bidmesh.NoReply:
                return None
            except bidmesh.RequestError as e:
                if e.retryable:
                    return None
                raise
        return wait_for(what, 30 * SCALE, answered, 0.05)

    def history(self, c, item):
        events, after = [], 0
        while True:
            page = self.call_until_answered(c, "history " + item, lambda: c.history(item, after=after, limit=1000))
            if not page["events"]:
                return events
            events += page["events"]
            after = page["events"][-1]["seq"]

    def wait_state(self, name, state):
        wait_for("%s %s" % (name, state), 30 * SCALE, lambda: self.sup.node(name)["state"] == state)

    def test_move_a_range_while_clients_bid(self):
        m, sup = self.mesh, self.sup
        sup.start(60 * SCALE)
        mesh._PROCS.append(sup.proc)  # killed at exit even if tearDown never runs
        moving = items_of(14, "bid-1", in_moved_range)
        items = moving + items_of(12, "bid-1", lambda s: not in_moved_range(s)) + items_of(14, "bid-2", lambda s: True)
        admin = self.client()
        for it in items:
            self.call_until_answered(admin, "open " + it, lambda: admin.open(it, start=1, id="open-" + it))
        # A client that knew the old map: its next call comes after the move.
        old_map = self.client(connect_wait=2.0 * SCALE)
        old_map.get(moving[0])
        self.assertEqual(old_map.last_path, "direct")
        bid1_endpoint, bid2_endpoint = m.client_endpoints["bid-1"], m.client_endpoints["bid-2"]
        self.assertEqual(old_map.slot_map.endpoint_of(moving[0]), bid1_endpoint)
        # Another, which calls while both nodes are stopped.
        in_window = self.client()
        in_window.get(moving[0])
        self.assertEqual(in_window.last_path, "direct")

        stop, moved_done = threading.Event(), threading.Event()
        amounts = itertools.count(1000)  # one rising counter: most bids beat the max
        bidders = [Bidder(k, m.endpoint, items, amounts, stop, moved_done) for k in range(BIDDERS)]
        for b in bidders:
            b.start()
        try:
            wait_for("100 bids before the move", 30 * SCALE, lambda: sum(len(b.answers) for b in bidders) >= 100)
            started = time.monotonic()
            sup.ctl("stop", "bid-1")
            sup.ctl("stop", "bid-2")
            # `stop` returns once SIGTERM is sent; the node then drains. bidmesh-slots needs both
            # stores closed (it refuses a store in use), so wait for `stopped`.
            self.wait_state("bid-1", "stopped")
            self.wait_state("bid-2", "stopped")
            # Its direct try finds no node; the router, asked next, answers `unavailable`.
            with self.assertRaises(bidmesh.RequestError) as caught:
                in_window.get(moving[0])
            self.assertEqual(caught.exception.code, "unavailable")
            # Every client meets the stop window: a bid of each is unanswered twice (it retries).
            unanswered = [b.unanswered for b in bidders]
            wait_for("each client's bid unanswered while both nodes are stopped", 30 * SCALE,
                     lambda: all(b.unanswered >= n + 2 or b.errors for b, n in zip(bidders, unanswered)))
            r = subprocess.run([os.path.join(mesh.BIN_DIR, "bidmesh-slots"), "move", "--config", m.config,
                                "--slots", "%d-%d" % MOVED_RANGE, "--from", "bid-1", "--to", "bid-2"],
                               cwd=m.dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=120 * SCALE, text=True)
            self.assertEqual(r.returncode, 0, r.stdout)
            shutil.copy(m.config + ".new", m.config)
            sup.ctl("reload")
            sup.ctl("start", "bid-1")
            sup.ctl("start", "bid-2")
            moved_done.set()
            self.wait_state("bid-1", "running")
            self.wait_state("bid-2", "running")
            sys.stderr.write("  note: stop to both nodes running again: %.2f s\n" % (time.monotonic() - started))
            # A few more seconds of bidding: each client answered direct at least 20 times.
            wait_for("20 direct answers per client after the move", 30 * SCALE,
                     lambda: all(b.direct_after >= 20 or b.errors for b in bidders))
            time.sleep(2)  # and some more bids on the new map, any path
        finally:
            stop.set()
            for b in bidders:
                b.join(timeout=BID_DEADLINE_S + 10)
                b.client.shutdown()
        for b in bidders:
            self.assertFalse(b.is_alive(), "%s is stuck" % b.name)
            self.assertEqual(b.errors, [])

        # The old-map client's bid: sent to bid-1, answered `moved`, accepted by bid-2.
        amount = next(amounts)
        got = old_map.bid(moving[0], "old-map", amount, id="old-map-1")
        self.assertEqual((old_map.stats["moved"], old_map.last_path), (1, "direct"))
        self.assertEqual(old_map.slot_map.endpoint_of(moving[0]), bid2_endpoint)
        answers = [a for b in bidders for a in b.answers] + [(moving[0], "old-map-1", "old-map", amount, got, 1)]
        # The router's map and bid-1 itself say the range is bid-2's.
        slots = self.call_until_answered(admin, "slots", lambda: admin.request("slots"))["slots"]
        self.assertIn({"first": MOVED_RANGE[0], "last": MOVED_RANGE[1], "node": "bid-2", "endpoint": bid2_endpoint},
                      [{k: r.get(k) for k in ("first", "last", "node", "endpoint")} for r in slots])
        ctx = zmq.Context()
        try:
            for it in moving:
                rep = request(ctx, bid1_endpoint, {"op": "get", "id": "at-bid-1", "item": it}, 5 * SCALE)
                self.assertEqual((rep["ok"], rep["error"], rep["node"], rep["endpoint"]),
                                 (False, "moved", "bid-2", bid2_endpoint), it)
        finally:
            ctx.term()

        stats = {k: sum(b.client.stats[k] for b in bidders) for k in bidders[0].client.stats}
        retried = [a for a in answers if a[5] > 1]
        accepted = [a for a in answers if a[4].get("ok")]
        sys.stderr.write("  note: %d bids answered (%d accepted, %d retried across the stop window); "
                              "bidders' stats %r\n" % (len(answers), len(accepted), len(retried), stats))
        self.assertGreater(len(retried), 0, "no bid met the stop window")
        self.assertGreater(len([a for a in accepted if in_moved_range(bidmesh.slot_of(a[0]))]), 0)

        # History: every accepted bid exactly as its reply says, refused ones absent, nobody twice.
        by_item, bidders_of = {}, {}
        for it in items:
            events = self.history(admin, it)
            self.assertEqual([e["seq"] for e in events], list(range(1, len(events) + 1)), it)
            by_item[it] = {e["seq"]: e for e in events}
            bidders_seen = [e["bidder"] for e in events if e["event"] == "max"]
            self.assertEqual(len(bidders_seen), len(set(bidders_seen)), "a bid stored twice on %s" % it)
            bidders_of[it] = set(bidders_seen)
        for item, rid, bidder, amount, reply, tries in answers:
            if reply.get("ok"):
                e = by_item[item].get(reply["seq"])
                self.assertIsNotNone(e, (item, rid))
                self.assertEqual((e["event"], e["bidder"], e["amount"]), ("max", bidder, amount), (item, rid))
            else:
                self.assertNotIn(bidder, bidders_of[item], (item, rid, reply))
        stored = sum(len(b) for b in bidders_of.values())
        self.assertEqual(stored, len(accepted), "bids stored that no client saw accepted")

        # Every id sent again: the reply it got first (those retried across the stop window, and
        # the records of the moved range now at bid-2), nothing applied twice.
        again = self.client()
        for item, rid, bidder, amount, reply, tries in answers:
            try:
                second = again.bid(item, bidder, amount, id=rid)
            except bidmesh.RequestError as e:
                second = e.reply
            self.assertEqual({k: v for k, v in second.items() if k != "message"},
                             {k: v for k, v in reply.items() if k != "message"}, (item, rid, tries))
        for it in moving[:3]:
            self.assertEqual(len(self.history(admin, it)), len(by_item[it]))


if __name__ == "__main__":
    mesh.main()
