#!/usr/bin/python3
"""bidmesh.Feed against a real mesh: events in seq order once, a real gap (a subscriber that
stops reading while bids flow past its high-water marks) repaired from `history`, the late-join
rule with `get`, and bounded waits.

Run: /usr/bin/python3 clients/python/tests/test_feed.py --bin-dir build/bin
"""

import sys
import time

import msgpack
import zmq

import mesh
from mesh import bidmesh, item_on

LIVE_DEADLINE_S = 20.0


class FeedTest(mesh.MeshTest):
    feed_ipc = True  # a small, fixed kernel buffer under the feed: a stalled reader overflows soon

    def setUp(self):
        self.c = bidmesh.Client(self.mesh.endpoint, timeout=2.0, retries=5)
        self.feeds = []

    def tearDown(self):
        for f in self.feeds:
            f.shutdown()
        self.c.shutdown()

    def feed(self, **kw):
        kw.setdefault("request_endpoint", self.mesh.endpoint)
        f = bidmesh.Feed(self.mesh.feed_endpoint, **kw)
        self.feeds.append(f)
        return f

    def make_live(self, feed, item, bidder="warm"):
        """Bids on `item` until the feed hands out an event of it: the subscription is live.
        Returns the events read meanwhile."""
        deadline = time.monotonic() + LIVE_DEADLINE_S
        got, amount = [], self.c.get(item)["max"] or 0
        while not got:
            self.assertLess(time.monotonic(), deadline, "the feed never went live")
            amount += 1
            self.c.bid(item, bidder, amount)
            got += list(feed.iter(idle=0.1))
        return got

    def read_until(self, feed, item, seq, timeout_s=30):
        """Events of `item` from the feed until the one with `seq`."""
        out = []
        deadline = time.monotonic() + timeout_s
        while not out or out[-1].seq < seq:
            left = deadline - time.monotonic()
            self.assertGreater(left, 0, "no event up to seq %d; got %r" % (seq, out[-5:]))
            ev = feed.next(min(left, 1.0))
            if ev is not None and ev.item == item:
                out.append(ev)
        return out

    def test_in_order_once(self):
        item = item_on("bid-1", "order")
        self.c.open(item)
        f = self.feed(items=[item])
        seen = self.make_live(f, item)
        last = self.c.close(item)["seq"]
        seen += self.read_until(f, item, last)
        seqs = [e.seq for e in seen]
        self.assertEqual(seqs, list(range(seqs[0], last + 1)))
        self.assertEqual(seen[-1].event, "closed")
        self.assertEqual((seen[-1].winner, seen[-1].amount), ("warm", seen[-2].amount))
        self.assertFalse(any(e.repaired for e in seen))
        self.assertEqual((f.stats.gaps_detected, f.stats.duplicates, f.stats.malformed), (0, 0, 0))
        self.assertEqual(f.last_seq(item), last)

    def test_bounded_waits(self):
        f = self.feed(items=[item_on("bid-2", "quiet")])
        for wait in (0.0, 0.2):
            started = time.monotonic()
            self.assertIsNone(f.next(wait))
            self.assertLess(time.monotonic() - started, wait + 0.5)
        started = time.monotonic()
        self.assertEqual(list(f.iter(idle=0.2)), [])
        self.assertEqual(list(f.iter(deadline=0.2)), [])
        self.assertLess(time.monotonic() - started, 1.5)

    def test_gap_repaired_from_history(self):
        """Two subscribers stop reading (receive HWM 1) while a pipelined burst of bids
        overflows the feed's 10000-message send HWM and the ipc socket's buffer: events are
        dropped for them alone. They read on, then one more bid shows the gap (a loss at the end
        shows at the item's next event). The one with a request endpoint must hand out every
        seq once, in order, the missed ones from history; the one without counts them as lost.
        The burst doubles until a gap is seen (buffers differ between machines)."""
        item = item_on("bid-2", "gap")
        self.c.open(item)
        topic = bidmesh.feed_topic(item)
        f = self.feed(topic_prefix=topic, rcvhwm=1, request_timeout=5.0)
        plain = self.feed(topic_prefix=topic, rcvhwm=1, request_endpoint=None)
        seen = self.make_live(f, item)
        seen_plain = self.read_until(plain, item, seen[-1].seq)
        burst = 15000
        for _ in range(3):
            amount = self.c.get(item)["max"]
            self.burst(item, amount + 1, burst)  # the feeds read nothing meanwhile
            # Read on: the backlog first (what was not dropped), until quiet...
            seen += list(f.iter(idle=0.5, deadline=60))
            seen_plain += list(plain.iter(idle=0.5, deadline=60))
            # ...then one more bid: its event shows the loss of the burst's last events.
            last = self.c.bid(item, "last", amount + burst + 1)["seq"]
            seen += self.read_until(f, item, last)
            seen_plain += self.read_until(plain, item, last)
            seqs = [e.seq for e in seen]
            self.assertEqual(seqs, list(range(seqs[0], last + 1)), "not every seq once in order")
            if f.stats.gaps_detected:
                break
            burst *= 2
        st = f.stats
        sys.stderr.write("gap test: burst of %d, %r\n" % (burst, st))
        self.assertGreaterEqual(st.gaps_detected, 1, "no event was dropped: %r" % st)
        self.assertEqual((st.gaps_repaired, st.events_lost), (st.gaps_detected, 0), st)
        self.assertGreater(st.events_repaired, 0, st)
        self.assertEqual(sum(e.repaired for e in seen), st.events_repaired)
        self.assertFalse(seen[-1].repaired)  # the event that showed the gap comes last, live
        # The repaired events are the mesh's: the bids' amounts go up by one, as bid.
        amounts = [e.amount for e in seen if e.event == "max"]
        self.assertEqual(amounts, list(range(amounts[0], amounts[0] + len(amounts))))
        # Without a request endpoint: in order, once, and what is missing is counted as lost.
        ps = plain.stats
        seqs = [e.seq for e in seen_plain]
        self.assertEqual(seqs, sorted(set(seqs)))
        self.assertEqual(seqs[-1], seen[-1].seq)
        self.assertEqual(ps.events_lost, seqs[-1] - seqs[0] + 1 - len(seqs), ps)
        self.assertEqual((ps.gaps_repaired, ps.events_repaired), (0, 0), ps)
        self.assertFalse(any(e.repaired for e in seen_plain))

    def burst(self, item, first_amount, n, window=500):
        """n bids on item (amounts first_amount..), `window` in flight on a DEALER."""
        d = zmq.Context.instance().socket(zmq.DEALER)
        d.setsockopt(zmq.LINGER, 0)
        d.connect(self.mesh.endpoint)
        try:
            sent = answered = 0
            deadline = time.monotonic() + 120
            while answered < n:
                while sent < n and sent - answered < window:
                    req = {"op": "bid", "id": "%s-burst-%d-%d" % (mesh.RUN, first_amount, sent), "item": item,
                           "bidder": "burst", "amount": first_amount + sent}
                    d.send_multipart([b"", msgpack.packb(req)])
                    sent += 1
                self.assertLess(time.monotonic(), deadline, "burst: %d of %d answered" % (answered, n))
                if d.poll(1000, zmq.POLLIN):
                    rep = msgpack.unpackb(d.recv_multipart()[-1])
                    self.assertTrue(rep["ok"], rep)
                    answered += 1
        finally:
            d.close(linger=0)

    def test_late_join(self):
        """Bids before the subscriber exists; it subscribes, takes the first event as the sign
        that it is live, reads `get`, and drops what that state already holds."""
        item = item_on("bid-1", "late")
        self.c.open(item)
        for k in range(1, 6):
            self.c.bid(item, "early", k)
        states = []
        f = self.feed(items=[item], late_join=True, on_state=states.append)
        seen = self.make_live(f, item, bidder="later")
        last = self.c.close(item)["seq"]
        seen += self.read_until(f, item, last)
        self.assertEqual(len(states), 1)
        state = states[0]
        self.assertEqual((state["item"], state["bids"] >= 5), (item, True))
        seqs = [e.seq for e in seen]
        self.assertEqual(seqs, list(range(state["seq"] + 1, last + 1)))
        self.assertEqual((f.stats.late_join_gets, f.stats.late_join_failures), (1, 0))
        with self.assertRaises(ValueError):
            bidmesh.Feed(self.mesh.feed_endpoint, late_join=True)


if __name__ == "__main__":
    mesh.main()
