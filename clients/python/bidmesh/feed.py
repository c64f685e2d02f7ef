"""Feed: the live feed of item events (PROTOCOL.md, "Feed"), in seq order, once, gaps repaired.

The rules are those of the C++ FeedWatcher (client/feed_watcher.h):

- It subscribes to "item/" (every item), to "item/<item>/" for each listed item, or to one raw
  topic prefix, and reads two-frame events (topic, MessagePack map).
- Per item it keeps the last seq handed out. An event whose seq is not above it is a duplicate
  and is dropped. An event whose seq jumps past it + 1 shows a gap (a slow subscriber past its
  high-water mark, a reconnect): the feed asks `history` (after = the last seq seen) on the
  request endpoint, page by page (1000 events at most a page), hands out the missed events in
  seq order (each marked `repaired`), then the event that showed the gap. What history does not
  give (no request endpoint, no reply, more than max_repair_events) is counted as lost, and the
  feed goes on from the new event.
- The first event of an item sets its baseline. Without late_join it is handed out as it is.
  With late_join the contract's late-join rule applies: the first event shows the subscription
  is live, so the item's state is read with `get` (given to on_state), and events whose seq is
  not above that state's seq are dropped.
- Loss of an item's last events shows only at that item's next event (a property of the feed);
  a reader that must know sooner polls `get`.

Bounds: next(timeout) waits at most `timeout` seconds for the live feed; a repair adds at most
request timeout * (retries + 1) per history page or late-join `get`. At most one history page
plus one event are held; the rest waits in the SUB socket (receive high-water mark `rcvhwm`
messages; ZeroMQ drops past it, and that shows as a gap).

Thread-safety: NOT thread-safe; one thread owns a Feed (a SUB socket, and a Client for repairs).
"""

import collections
import time
from dataclasses import dataclass, field
from typing import Optional

import zmq

from .client import DEFAULT_RETRIES, DEFAULT_TIMEOUT, MAX_REPLY_BYTES, Client, decode_map
from .errors import BidmeshError

TOPIC_PREFIX = "item/"
MAX_HISTORY_LIMIT = 1000  # the contract's most events per `history` reply: a repair page


def feed_topic(item):
    """The exact topic of one item: "item/<item>/" (the slash keeps item 42 from matching 421)."""
    return "%s%s/" % (TOPIC_PREFIX, item)


@dataclass(frozen=True)
class Event:
    """One feed event. `event` is "open", "max" or "closed"; `amount`/`bidder` for max,
    `winner`/`amount` for closed (None where no bid was made). `repaired`: it came from
    `history`, not from the live feed. `body`: the whole decoded map."""

    event: str
    item: str
    seq: int
    ts: Optional[int] = None
    amount: Optional[int] = None
    bidder: Optional[str] = None
    winner: Optional[str] = None
    repaired: bool = False
    body: dict = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_map(cls, m, repaired=False):
        """An Event from a decoded map, or None when it lacks a str `event`/`item` or an int
        `seq` >= 1 (unknown extra keys are kept in body)."""
        ev, item, seq = m.get("event"), m.get("item"), m.get("seq")
        if not isinstance(ev, str) or not isinstance(item, str) or not _is_uint(seq) or seq < 1:
            return None
        return cls(event=ev, item=item, seq=seq, ts=m.get("ts"), amount=m.get("amount"),
                   bidder=m.get("bidder"), winner=m.get("winner"), repaired=repaired, body=m)


@dataclass
class FeedStats:
    received: int = 0            # feed messages read from the socket
    delivered: int = 0           # events handed out (live and repaired)
    duplicates: int = 0          # dropped: seq not above the last seen
    malformed: int = 0           # dropped: not topic + event map, or topic/item mismatch
    gaps_detected: int = 0       # seq jumps seen
    gaps_repaired: int = 0       # gaps filled completely from history
    events_repaired: int = 0     # events handed out from history
    events_lost: int = 0         # missed events history did not give
    late_join_gets: int = 0      # `get` calls made by the late-join rule
    late_join_failures: int = 0  # of those, no ok reply (the event became the baseline)
    late_join_dropped: int = 0   # events dropped as not above the `get` state's seq


class _Repair:
    __slots__ = ("item", "after", "fetched", "trigger")

    def __init__(self, item, after, trigger):
        self.item = item
        self.after = after      # highest seq obtained so far
        self.fetched = 0        # events obtained for this gap
        self.trigger = trigger  # the live event that showed the gap


class Feed:
    """A subscriber to the feed endpoint with dedupe, gap repair and (optionally) late join.

    feed_endpoint: e.g. "tcp://127.0.0.1:5556". items: the items to follow (None: every item);
    topic_prefix: one raw subscription instead (e.g. "item/lot-": every item so named).
    request_endpoint: for `history`/`get` (None: gaps are counted, not repaired). late_join:
    apply the late-join rule (needs request_endpoint); on_state: called with each item's `get`
    reply then. request_timeout/request_retries: of the repair Client. rcvhwm: the SUB's receive
    high-water mark in messages. max_repair_events: per gap; the rest of a longer gap counts as
    lost. curve: CurveKeys, for the SUB and the repair Client. context: a zmq.Context (default
    zmq.Context.instance()). Subscribes and connects at once.

    Use next(timeout) for one event (None when none came in time), or iterate:
    `for ev in feed.iter(idle=5)` ends after 5 s without events; `for ev in feed` never ends.
    """

    def __init__(self, feed_endpoint, items=None, topic_prefix=None, request_endpoint=None,
                 late_join=False, on_state=None, request_timeout=DEFAULT_TIMEOUT,
                 request_retries=DEFAULT_RETRIES, rcvhwm=100000, max_repair_events=100000,
                 curve=None, context=None):
        if late_join and not request_endpoint:
            raise ValueError("late_join needs a request_endpoint (for `get`)")
        self.context = context or zmq.Context.instance()
        self.late_join = late_join
        self.on_state = on_state
        self.max_repair_events = max_repair_events
        self.stats = FeedStats()
        self.last_repaired = False  # the last event handed out came from history
        self._last_seen = {}
        self._ready = collections.deque()  # Events in hand-out order
        self._repair = None
        s = self.context.socket(zmq.SUB)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.RCVHWM, rcvhwm if rcvhwm > 0 else 1000)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        if topic_prefix:
            topics = [topic_prefix]
        elif items:
            topics = [feed_topic(i) for i in items]
        else:
            topics = [TOPIC_PREFIX]
        for t in topics:
            s.setsockopt(zmq.SUBSCRIBE, t.encode())
        if curve is not None:
            curve.apply(s)
        s.connect(feed_endpoint)
        self.socket = s  # for a thread that polls many: when readable, next(0) until None
        self.client = None
        if request_endpoint:
            self.client = Client(request_endpoint, timeout=request_timeout, retries=request_retries,
                                 curve=curve, context=self.context)

    def shutdown(self):
        """Closes the SUB socket and the repair Client (linger 0)."""
        if self.socket is not None:
            self.socket.close(linger=0)
            self.socket = None
        if self.client is not None:
            self.client.shutdown()
            self.client = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    def last_seq(self, item):
        """The last seq handed out for `item`, or None."""
        return self._last_seen.get(item)

    # --- reading ---------------------------------------------------------------------------

    def next(self, timeout):
        """The next event in order, or None when none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        reads = 0
        # Bounded: each turn hands out an event, makes a repair step (which ends the repair or
        # adds events), reads one message, or waits until the deadline.
        while True:
            if self._ready:
                ev = self._ready.popleft()
                last = self._last_seen.get(ev.item, 0)
                if ev.seq <= last:  # cannot happen by construction; the rule's last guard
                    self.stats.duplicates += 1
                    continue
                self._last_seen[ev.item] = ev.seq
                self.last_repaired = ev.repaired
                self.stats.delivered += 1
                if ev.repaired:
                    self.stats.events_repaired += 1
                return ev
            if self._repair is not None:
                self._repair_step()
                continue
            now = time.monotonic()
            if now >= deadline and reads > 0:
                return None  # only dropped messages since the deadline: the caller's turn
            left_ms = max(0, int((deadline - now) * 1000 + 0.999))
            if not self.socket.poll(left_ms, zmq.POLLIN):
                if time.monotonic() >= deadline:
                    return None
                continue
            try:
                frames = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            self.stats.received += 1
            reads += 1
            ev = self._decode(frames)
            if ev is None:
                self.stats.malformed += 1
                continue
            self._accept_live(ev)

    def iter(self, idle=None, deadline=None):
        """Yields events until none came for `idle` seconds, or `deadline` seconds have passed
        since the start (None: no such bound)."""
        end = None if deadline is None else time.monotonic() + deadline
        while True:
            wait = 1.0 if idle is None else idle
            if end is not None:
                left = end - time.monotonic()
                if left <= 0:
                    return
                wait = min(wait, left)
            ev = self.next(wait)
            if ev is not None:
                yield ev
            elif idle is not None:
                return  # idle seconds without an event, or the deadline came first

    def __iter__(self):
        return self.iter()

    # --- the rules -------------------------------------------------------------------------

    @staticmethod
    def _decode(frames):
        if len(frames) != 2:
            return None
        try:
            ev = Event.from_map(decode_map(frames[1]))
        except BidmeshError:
            return None
        if ev is None or frames[0] != feed_topic(ev.item).encode():
            return None
        return ev

    def _call(self, req):
        """A repair request's ok reply, or None (no reply, a refusal, a bad reply)."""
        try:
            reply = self.client.call(req)
        except BidmeshError:
            return None
        return reply if reply.get("ok") is True else None

    def _accept_live(self, ev):
        last = self._last_seen.get(ev.item)
        if last is None:
            # The first event of this item: it sets the baseline.
            base = ev.seq - 1
            if self.late_join and self.client is not None:
                self.stats.late_join_gets += 1
                state = self._call({"op": "get", "item": ev.item})
                if state is not None and _is_uint(state.get("seq")):
                    if self.on_state is not None:
                        self.on_state(state)
                    base = state["seq"]
                else:
                    self.stats.late_join_failures += 1
                if ev.seq <= base:
                    self._last_seen[ev.item] = base
                    self.stats.late_join_dropped += 1
                    return
            self._last_seen[ev.item] = last = base
        if ev.seq <= last:
            self.stats.duplicates += 1
            return
        if ev.seq > last + 1:
            self.stats.gaps_detected += 1
            self._repair = _Repair(ev.item, last, ev)
            return
        self._ready.append(ev)

    def _repair_step(self):
        r = self._repair
        want_last = r.trigger.seq - 1
        progressed = False
        if self.client is not None and r.after < want_last and r.fetched < self.max_repair_events:
            limit = min(MAX_HISTORY_LIMIT, want_last - r.after, self.max_repair_events - r.fetched)
            reply = self._call({"op": "history", "item": r.item, "after": r.after, "limit": limit})
            events = reply.get("events") if reply is not None else None
            for m in events if isinstance(events, list) else ():
                if not isinstance(m, dict):
                    continue
                ev = Event.from_map({"item": r.item, **m}, repaired=True)
                if ev is None or ev.item != r.item or ev.seq <= r.after or ev.seq > want_last:
                    continue
                r.after = ev.seq
                r.fetched += 1
                progressed = True
                self._ready.append(ev)
        if progressed and r.after < want_last and r.fetched < self.max_repair_events:
            return  # more pages
        if r.after >= want_last:
            self.stats.gaps_repaired += 1
        else:
            self.stats.events_lost += want_last - r.after
        self._ready.append(r.trigger)
        self._repair = None


def _is_uint(v):
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0
