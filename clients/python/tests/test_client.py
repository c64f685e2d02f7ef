#!/usr/bin/python3
"""bidmesh.Client against a real mesh: the operations, refusals as RequestError, and retries by
id (Lazy Pirate) across kill -9 of a bid node and of the router, with nothing doubled.

Run: /usr/bin/python3 clients/python/tests/test_client.py --bin-dir build/bin
"""

import threading
import time

import mesh
from mesh import bidmesh, item_on, wait_until


class ClientTest(mesh.MeshTest):

    def setUp(self):
        self.c = bidmesh.Client(self.mesh.endpoint, timeout=2.0, retries=5)

    def tearDown(self):
        self.c.shutdown()

    def test_operations(self):
        c = self.c
        self.assertEqual(set(c.ping()), {"ok", "id"})
        item = item_on("bid-2", "ops")
        r = c.open(item, start=100, increment=10)
        self.assertEqual((r["ok"], r["id"], r["item"], r["seq"]), (True, c.last_id, item, 1))
        r = c.bid(item, "alice", 100)
        self.assertEqual((r["bidder"], r["amount"], r["seq"]), ("alice", 100, 2))
        r = c.bid(item, "bob", 110)
        g = c.get(item)
        self.assertEqual((g["status"], g["max"], g["bidder"], g["bids"], g["seq"], g["start"], g["increment"],
                          g["closes_at"]), ("open", 110, "bob", 2, 3, 100, 10, None))
        h = c.history(item, after=1, limit=1)
        self.assertEqual([(e["seq"], e["event"], e["bidder"], e["amount"]) for e in h["events"]],
                         [(2, "max", "alice", 100)])
        r = c.close(item)
        self.assertEqual((r["seq"], r["winner"], r["amount"]), (4, "bob", 110))
        self.assertEqual(c.get(item)["status"], "closed")
        # Ids: "<prefix>-<counter>" within 64 bytes; a given id is kept.
        self.assertTrue(c.last_id.startswith(c.id_prefix + "-"))
        self.assertLessEqual(len(c.last_id.encode()), 64)
        self.assertEqual(c.call({"op": "ping", "id": "mine-1"})["id"], "mine-1")
        self.assertEqual(c.last_attempts, 1)

    def test_list_items_pages_across_nodes(self):
        c = self.c
        far = int(time.time() * 1000) + 86_400_000
        mine = [item_on(node, "list") for node in ("bid-1", "bid-2", "bid-1", "bid-2", "bid-1")]
        for i, item in enumerate(mine):
            closes_at = None if i == 4 else far + (i % 2) * 1000
            c.open(item, closes_at=closes_at, title="Lot %d" % i if i == 0 else None)
        c.close(mine[3])
        seen, cursor = [], None
        while True:
            page = c.list_items("open", limit=2, cursor=cursor)
            self.assertEqual((page["partial"], page["missing"]), (False, []))
            self.assertLessEqual(len(page["items"]), 2)
            seen += [e for e in page["items"] if e["item"] in mine]
            cursor = page["cursor"]
            if cursor is None:
                break
        key = lambda e: (e["closes_at"] is None, e["closes_at"] or 0, e["item"].encode())
        self.assertEqual([e["item"] for e in seen], [e["item"] for e in sorted(seen, key=key)])
        self.assertEqual({e["item"] for e in seen}, set(mine) - {mine[3]})
        first = next(e for e in seen if e["item"] == mine[0])
        self.assertEqual(first["title"], "Lot 0")
        self.assertNotIn("description", first)
        closed = c.list_items("closed", limit=100)
        self.assertIn(mine[3], [e["item"] for e in closed["items"]])
        with self.assertRaises(bidmesh.RequestError) as refused:
            c.list_items("open", cursor=closed["cursor"] or "bogus")
        self.assertEqual(refused.exception.code, "bad_request")

    def test_refusals(self):
        c = self.c
        item = item_on("bid-1", "ref")
        c.open(item, start=50)
        cases = [
            (lambda: c.bid(item, "alice", 49), "too_low"),
            (lambda: c.open(item), "exists"),
            (lambda: c.get(item_on("bid-2", "never")), "unknown_item"),
            (lambda: c.bid(item, "not an identifier", 60), "bad_request"),
            (lambda: c.request("no-such-op"), "bad_request"),
        ]
        for call, code in cases:
            with self.subTest(code=code):
                with self.assertRaises(bidmesh.RequestError) as cm:
                    call()
                e = cm.exception
                self.assertEqual((e.code, e.reply["ok"], e.id), (code, False, c.last_id))
                self.assertIsInstance(e.message, str)
                self.assertFalse(e.retryable)
                self.assertEqual(c.last_attempts, 1)  # refusals are not retried
        with self.assertRaises(bidmesh.RequestError) as cm:
            c.bid(item, "alice", 10)
        self.assertEqual(cm.exception.reply["max"], None)  # too_low carries max
        # An id reused with other content: conflict.
        c.bid(item, "alice", 50, id="ref-same")
        with self.assertRaises(bidmesh.RequestError) as cm:
            c.bid(item, "alice", 51, id="ref-same")
        self.assertEqual(cm.exception.code, "conflict")
        # Amounts are ints: a float is refused here, before anything is sent.
        with self.assertRaises(TypeError):
            c.bid(item, "alice", 60.0)
        # call() returns refusals as replies, without raising.
        self.assertEqual(c.call({"op": "get", "item": "x y"})["error"], "bad_request")

    def test_same_id_twice_is_one_write(self):
        c = self.c
        item = item_on("bid-2", "twice")
        c.open(item)
        first = c.bid(item, "alice", 7, id="twice-1")
        again = c.bid(item, "alice", 7, id="twice-1")
        self.assertEqual(first, again)
        self.assertEqual(c.get(item)["bids"], 1)

    def test_no_reply_raises_after_every_try(self):
        port = mesh.free_ports(1)[0]  # nothing listens there
        c = bidmesh.Client("tcp://127.0.0.1:%d" % port, timeout=0.2, retries=2)
        try:
            started = time.monotonic()
            with self.assertRaises(bidmesh.NoReply) as cm:
                c.bid("lot", "alice", 1, id="lost-1")
            took = time.monotonic() - started
            self.assertEqual((cm.exception.id, cm.exception.attempts, c.last_attempts), ("lost-1", 3, 3))
            self.assertIsInstance(cm.exception, TimeoutError)
            self.assertGreaterEqual(took, 0.6)
            self.assertLess(took, 3.0)
        finally:
            c.shutdown()

    def test_unavailable_retried_then_raised(self):
        m = self.mesh
        item = item_on("bid-2", "unav")
        self.c.open(item)
        m.kill9("bid-2")
        try:
            c = bidmesh.Client(m.endpoint, timeout=2.0, retries=2)
            with self.assertRaises(bidmesh.RequestError) as cm:
                c.bid(item, "alice", 5, id="unav-1")
            self.assertEqual((cm.exception.code, cm.exception.retryable, c.last_attempts), ("unavailable", True, 3))
        finally:
            m.start("bid-2")
            m.wait_ready()
        # The same id, once the owner is back: applied once.
        self.assertEqual(c.bid(item, "alice", 5, id="unav-1")["seq"], 2)
        c.shutdown()

    def test_retries_by_id_across_bid_node_kill9(self):
        """A bidder thread bids 1..N (one id each) while bid-1, the item's owner, is killed with
        SIGKILL and restarted twice, each time as the bidder reaches a third of its bids (it
        waits for the kill, so the kills cannot miss the bids however fast they go). Every call
        must end ok: a retry of a write that was applied before the kill gets the remembered
        reply, never a second write (which would be too_low, or a doubled event)."""
        m = self.mesh
        item = item_on("bid-1", "kill")
        n = 150
        self.c.open(item)
        results, errors = [], []
        bidder = bidmesh.Client(m.endpoint, timeout=1.0, retries=60)
        kill_points = {n // 3: threading.Event(), 2 * n // 3: threading.Event()}
        killed = {k: threading.Event() for k in kill_points}

        def run():
            try:
                for k in range(1, n + 1):
                    rid = "%s-kill-%d" % (mesh.RUN, k)
                    results.append((rid, bidder.bid(item, "alice", k, id=rid), bidder.last_attempts))
                    if k in kill_points:
                        kill_points[k].set()
                        if not killed[k].wait(60):
                            raise RuntimeError("bid-1 was not killed after bid %d" % k)
            except Exception as e:  # reported below
                errors.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        try:
            for point in sorted(kill_points):
                wait_until(lambda: kill_points[point].is_set() or errors or not t.is_alive(),
                           60, "bids up to %d" % point)
                m.kill9("bid-1")
                killed[point].set()
                time.sleep(0.3)  # bids meanwhile get `unavailable`, retried with backoff
                m.start("bid-1")
            t.join(timeout=120)
            self.assertFalse(t.is_alive(), "the bidder thread is still running")
        finally:
            t.join(timeout=120)
            bidder.shutdown()
        self.assertEqual(errors, [])
        self.assertEqual([r["seq"] for _, r, _ in results], list(range(2, n + 2)))
        self.assertEqual([r["amount"] for _, r, _ in results], list(range(1, n + 1)))
        retried = sum(1 for _, _, attempts in results if attempts > 1)
        self.assertGreaterEqual(retried, 2, "no call needed a retry: the kills missed the bids")
        g = self.c.get(item)
        self.assertEqual((g["bids"], g["max"], g["seq"]), (n, n, n + 1))
        events = self.c.history(item, limit=1000)["events"]
        self.assertEqual([(e["seq"], e.get("amount")) for e in events],
                         [(1, None)] + [(k + 1, k) for k in range(1, n + 1)])
        # A late retry by hand of an early id: its remembered reply, nothing new.
        rid, first, _ = results[4]
        self.assertEqual(self.c.bid(item, "alice", 5, id=rid), first)
        self.assertEqual(self.c.get(item)["bids"], n)

    def test_lazy_pirate_across_router_kill9(self):
        """The router dies with the request in it: no reply comes, the REQ socket is closed and
        reopened, the same frame is sent again and answered by the restarted router."""
        m = self.mesh
        item = item_on("bid-2", "router")
        self.c.open(item)
        c = bidmesh.Client(m.endpoint, timeout=0.5, retries=40)
        m.kill9("router")
        restart = threading.Timer(1.0, m.start, args=("router",))
        restart.start()
        try:
            r = c.bid(item, "bob", 3, id="router-1")
        finally:
            restart.join()
            c.shutdown()
        self.assertEqual(r["seq"], 2)
        self.assertGreaterEqual(c.last_attempts, 2)
        m.wait_ready()
        self.assertEqual(self.c.get(item)["bids"], 1)


if __name__ == "__main__":
    mesh.main()
