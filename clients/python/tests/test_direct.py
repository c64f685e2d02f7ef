#!/usr/bin/python3
"""Direct clients (wire contract v1.2) with bidmesh.DirectClient, through real processes: the
slot map, requests answered by the owning bid node, `moved` followed by a client with a stale
map, fallback to the router while a node is down and back to direct when it returns, and CURVE on
the direct path. A slot range moved while clients bid: test_slot_move.py.

Run: /usr/bin/python3 clients/python/tests/test_direct.py --bin-dir build/bin
"""

import os
import subprocess
import time

import mesh
from mesh import bidmesh, item_on, wait_until


class DirectTest(mesh.MeshTest):
    direct = True

    def client(self, **kw):
        kw.setdefault("timeout", 1.0)
        c = bidmesh.DirectClient(self.mesh.endpoint, curve=self.mesh.curve, **kw)
        self.addCleanup(c.shutdown)
        return c

    def test_crc16_and_map(self):
        self.assertEqual(bidmesh.crc16_xmodem(b"123456789"), 0x31C3)
        c = self.client()
        self.assertTrue(c.refresh_slots())
        eps = self.mesh.client_endpoints
        self.assertEqual([(r["first"], r["last"], r["node"], r["endpoint"]) for r in c.slot_map.ranges],
                         [(0, 8191, "bid-1", eps["bid-1"]), (8192, 16383, "bid-2", eps["bid-2"])])
        self.assertTrue(c.slot_map.digest)

    def test_every_op_direct(self):
        c = self.client()
        closed_items = set()
        for node in ("bid-1", "bid-2"):
            item = item_on(node, "ops")
            closed_items.add(item)
            self.assertEqual(c.open(item, start=10)["seq"], 1)
            self.assertEqual(c.last_path, "direct")
            self.assertEqual(c.bid(item, "alice", 10)["seq"], 2)
            self.assertEqual(c.get(item)["max"], 10)
            self.assertEqual([e["seq"] for e in c.history(item)["events"]], [1, 2])
            with self.assertRaises(bidmesh.RequestError) as e:
                c.bid(item, "bob", 10)
            self.assertEqual(e.exception.code, "too_low")
            self.assertEqual(c.close(item)["winner"], "alice")
            self.assertEqual(c.last_path, "direct")
        c.ping()
        self.assertEqual(c.last_path, "router")  # ping names no item
        self.assertEqual(c.stats["router"], 1)
        self.assertEqual(c.stats["fallbacks"], 0)
        # list names no item either: the router merges both nodes' items, none missing.
        listed, cursor = set(), None
        while True:
            page = c.list_items("closed", limit=100, cursor=cursor)
            self.assertEqual(c.last_path, "router")
            self.assertEqual((page["partial"], page["missing"]), (False, []))
            listed |= {e["item"] for e in page["items"]}
            cursor = page["cursor"]
            if cursor is None:
                break
        self.assertTrue(closed_items <= listed)

    def test_moved_with_a_stale_map(self):
        c = self.client()
        item = item_on("bid-2", "moved")
        c.open(item, start=1)
        # A client that knew another map: every slot at bid-1's endpoint.
        c.slot_map = bidmesh.SlotMap({"ok": True, "digest": "old", "slots": [
            {"first": 0, "last": 16383, "node": "bid-1", "endpoint": self.mesh.client_endpoints["bid-1"]}]})
        r = c.bid(item, "alice", 5, id="moved-1")
        self.assertEqual(c.stats["moved"], 1)
        self.assertEqual(c.last_path, "direct")
        self.assertNotEqual(c.slot_map.digest, "old")  # refreshed
        # The same id again, now straight at the owner: the remembered reply, nothing applied twice.
        self.assertEqual(c.bid(item, "alice", 5, id="moved-1"), r)
        self.assertEqual(c.get(item)["bids"], 1)

    def test_fallback_while_a_node_is_down_then_direct_again(self):
        c = self.client(retries=1, holdoff=0.5)
        down, up = item_on("bid-2", "fb"), item_on("bid-1", "fb")
        c.open(down)
        c.open(up)
        self.mesh.kill9("bid-2")
        # bid-2's items: through the router, which answers `unavailable` while its owner is down.
        with self.assertRaises(bidmesh.RequestError) as e:
            c.bid(down, "alice", 1, id="fb-1")
        self.assertEqual(e.exception.code, "unavailable")
        self.assertEqual(c.last_path, "router")
        self.assertGreaterEqual(c.stats["fallbacks"], 1)
        # bid-1's items stay direct.
        c.bid(up, "alice", 1)
        self.assertEqual(c.last_path, "direct")
        self.mesh.start("bid-2")
        returned = time.monotonic()
        # The same write, same id, goes direct again once bid-2 listens: exactly one bid stored.
        wait_until(lambda: self._answered_direct(c, down), 20, "direct again after bid-2's restart")
        sys_note("back to direct %.2f s after bid-2 was started" % (time.monotonic() - returned))
        self.assertEqual(c.get(down)["bids"], 1)

    def test_cli_direct(self):
        item = item_on("bid-1", "cli")
        cli = [os.path.join(mesh.BIN_DIR, "bidmesh"), "--endpoint", self.mesh.endpoint, "--direct"]
        for args, want in ((["open", item, "--start", "5"], "opened: item %s (seq 1)" % item),
                           (["bid", item, "alice", "7"], "accepted: item %s bid 7 by alice (seq 2)" % item)):
            r = subprocess.run(cli + args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=30, text=True)
            self.assertEqual((r.returncode, r.stdout.strip()), (0, want))
        r = subprocess.run(cli[:-1] + ["slots"], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, timeout=30, text=True)
        eps = self.mesh.client_endpoints
        self.assertEqual((r.returncode, r.stdout.splitlines()[1:]),
                         (0, ["slots 0-8191: bid-1 at %s" % eps["bid-1"], "slots 8192-16383: bid-2 at %s" % eps["bid-2"]]))

    @staticmethod
    def _answered_direct(c, item):
        try:
            c.bid(item, "alice", 1, id="fb-1")
        except bidmesh.RequestError as e:
            if e.code != "unavailable":
                raise
            return False
        return c.last_path == "direct"


class DirectCurveTest(mesh.MeshTest):
    """security = "curve": a DirectClient uses its keys and the mesh's server key on the node sockets too."""

    security = "curve"
    direct = True

    @classmethod
    def prepare_mesh(cls):
        cls.house = bidmesh.load_curve_keys(cls.mesh.client_key("house", "auctioneer"), cls.mesh.mesh_public)
        cls.stranger = bidmesh.load_curve_keys(cls.mesh.client_key("mallory", "auctioneer", allow=False),
                                               cls.mesh.mesh_public)

    def test_direct_with_keys(self):
        c = bidmesh.DirectClient(self.mesh.endpoint, timeout=1.0, curve=self.house)
        self.addCleanup(c.shutdown)
        item = item_on("bid-2", "curve")
        self.assertEqual(c.open(item)["seq"], 1)
        self.assertEqual(c.last_path, "direct")

    def test_refused_key_gets_nothing(self):
        c = bidmesh.DirectClient(self.mesh.endpoint, timeout=0.3, retries=0, curve=self.stranger)
        self.addCleanup(c.shutdown)
        with self.assertRaises(bidmesh.NoReply):
            c.get(item_on("bid-1", "curve"))
        self.assertIsNone(c.slot_map)  # not even the map


def sys_note(text):
    import sys
    sys.stderr.write("  note: %s\n" % text)


if __name__ == "__main__":
    mesh.main()
