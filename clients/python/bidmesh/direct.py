"""DirectClient: requests sent straight to the bid node that owns their item (PROTOCOL.md v1.2,
"Direct clients"), with the router as the way around a node that cannot be reached.

The rules are those of the C++ DirectClient (client/direct_client.h, docs/client-library.md
"Direct mode"):

- The slot map comes from `slots` at the router, at the first call, and is cached. A request
  goes to the owner of slot CRC16(item) mod 16384 (CRC-16/XMODEM). `ping`, a range whose node
  has no client endpoint (nil), and everything while no map is known go through the router.
- `moved`: the map is fetched again and THE SAME frame, same `id`, goes to the endpoint the
  reply names; after MAX_MOVED hops in one call the router takes it.
- Each node socket is a REQ with ZMQ_IMMEDIATE, so it takes a frame only once its connection is
  up. The same frame goes through the router (a Client with its Lazy Pirate retries) when a node
  believed up is not connected within `connect_wait`, when a node marked down is still not
  connected (checked without waiting), when the node gives no reply within `node_timeout` (it is
  then held off for `holdoff` seconds), or when it answers `unavailable` or `internal`.
- A down node's socket reconnects in the background, so a node that returns gets direct
  traffic back within `holdoff` + 0.1 s of listening.
- Retries stay safe across both paths: every try carries the same frame and id, both paths end
  at the item's one owner, and the owner remembers each write's reply by (item, id).

Thread-safety: NOT thread-safe, like Client.
"""

import time

import msgpack
import zmq

from .client import MAX_REPLY_BYTES, Client, DEFAULT_RETRIES, DEFAULT_TIMEOUT, decode_map
from .errors import BadReply

SLOT_COUNT = 16384
MAX_MOVED = 3


def crc16_xmodem(data):
    """CRC-16/XMODEM (poly 0x1021, init 0, no reflection): crc16_xmodem(b"123456789") == 0x31C3."""
    crc = 0
    for byte in data:
        crc ^= byte << 8
        for _ in range(8):
            crc = ((crc << 1) ^ 0x1021) if crc & 0x8000 else (crc << 1)
            crc &= 0xFFFF
    return crc


def slot_of(item):
    """The slot of an item name (str or bytes)."""
    if isinstance(item, str):
        item = item.encode()
    return crc16_xmodem(item) % SLOT_COUNT


class SlotMap:
    """A decoded `slots` reply: digest, ranges, and slot -> endpoint (None: via the router).
    Raises BadReply for a refusal or a map that does not cover 0-16383 exactly once."""

    def __init__(self, reply):
        if reply.get("ok") is not True:
            raise BadReply("slots refused: %s: %s" % (reply.get("error"), reply.get("message")))
        ranges = reply.get("slots")
        if not isinstance(ranges, list):
            raise BadReply("the slots reply has no list 'slots'")
        self.digest = reply.get("digest")
        self.ranges = ranges
        self._owner = [False] * SLOT_COUNT  # False: not yet owned
        for r in ranges:
            first, last, endpoint = r.get("first"), r.get("last"), r.get("endpoint")
            if not (isinstance(first, int) and isinstance(last, int) and 0 <= first <= last < SLOT_COUNT):
                raise BadReply("a slot range without first <= last within 0-16383: %r" % (r,))
            for s in range(first, last + 1):
                if self._owner[s] is not False:
                    raise BadReply("slot %d is owned twice" % s)
                self._owner[s] = endpoint or None
        if any(o is False for o in self._owner):
            raise BadReply("the slot map does not cover every slot")

    def endpoint_of(self, item):
        return self._owner[slot_of(item)]


class _Link:
    def __init__(self):
        self.socket = None
        self.down = False
        self.held_until = 0.0


class DirectClient(Client):
    """A Client whose requests go to the owning bid node. `endpoint` is the router's (the map
    comes from it, and every fallback goes to it). With `curve`, node sockets use the same keys:
    every endpoint of a mesh serves with the mesh's one server key.
    node_timeout, connect_wait, holdoff: seconds (see the module's docstring).
    `stats`: counts of calls answered direct / via the router, fallbacks, moved, map fetches.
    `last_path`: "direct", "router" or "none", for the last call."""

    def __init__(self, endpoint, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, id_prefix=None, curve=None,
                 context=None, node_timeout=1.0, connect_wait=0.25, holdoff=1.0):
        super().__init__(endpoint, timeout=timeout, retries=retries, id_prefix=id_prefix, curve=curve,
                         context=context)
        self.node_timeout = node_timeout
        self.connect_wait = connect_wait
        self.holdoff = holdoff
        self.slot_map = None
        self._slots_refused = False
        self._last_refresh = 0.0
        self._links = {}
        self.last_path = "none"
        self.stats = {"direct": 0, "router": 0, "fallbacks": 0, "moved": 0, "refreshes": 0}

    def shutdown(self):
        for link in self._links.values():
            if link.socket is not None:
                link.socket.close(linger=0)
        self._links = {}
        super().shutdown()

    # --- node links ------------------------------------------------------------------------

    def _open(self, link, endpoint):
        if link.socket is not None:
            link.socket.close(linger=0)
        s = self.context.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        s.setsockopt(zmq.IMMEDIATE, 1)  # queue nothing on a connection that is not up
        if self.curve is not None:
            self.curve.apply(s)
        s.connect(endpoint)
        link.socket = s

    def _link(self, endpoint):
        link = self._links.get(endpoint)
        if link is None:
            link = self._links[endpoint] = _Link()
            self._open(link, endpoint)
        return link

    def _fallback(self, link, hold):
        self.stats["fallbacks"] += 1
        link.down = True
        if hold:
            link.held_until = time.monotonic() + self.holdoff

    def _exchange(self, link, endpoint, frame):
        """One request-reply with a node: the reply frame, or None (the link is then down)."""
        # A node believed up may be reconnecting: give it connect_wait. A down node is only probed.
        wait = 0 if link.down else self.connect_wait
        writable = link.socket.poll(int(wait * 1000), zmq.POLLOUT)
        if not writable:
            self._fallback(link, False)
            return None
        try:
            link.socket.send(frame, zmq.NOBLOCK)
        except zmq.ZMQError:
            self._open(link, endpoint)
            self._fallback(link, False)
            return None
        if link.socket.poll(max(1, int(self.node_timeout * 1000)), zmq.POLLIN):
            try:
                frames = link.socket.recv_multipart(zmq.NOBLOCK)
                if frames:
                    link.down = False
                    return frames[0]
            except zmq.ZMQError:
                pass
        # No reply: the REQ socket is stuck. Reopen it (it reconnects in the background while
        # the node is held off) and let the router take this request.
        self._open(link, endpoint)
        self._fallback(link, True)
        return None

    # --- the map ---------------------------------------------------------------------------

    def refresh_slots(self):
        """Fetches the map now (router first, then any known node). True on success; the cached
        map, if any, is kept otherwise."""
        frame = msgpack.packb({"op": "slots", "id": self.next_id()}, use_bin_type=True)
        self._last_refresh = time.monotonic()
        if self._take_slots(Client.call_raw(self, frame)):
            return True
        if self.slot_map is None:
            return False
        for endpoint in sorted({e for e in self.slot_map._owner if e}):
            link = self._link(endpoint)
            if time.monotonic() < link.held_until:
                continue
            if self._take_slots(self._exchange(link, endpoint, frame)):
                return True
        return False

    def _take_slots(self, raw):
        if raw is None:
            return False
        try:
            reply = decode_map(raw)
        except BadReply:
            return False
        if reply.get("ok") is False and reply.get("error") == "bad_request":
            # An older mesh, which knows no `slots`: everything goes through the router from now on.
            self._slots_refused = True
            return False
        try:
            self.slot_map = SlotMap(reply)
        except BadReply:
            return False
        self._slots_refused = False
        self.stats["refreshes"] += 1
        return True

    # --- calls -----------------------------------------------------------------------------

    def _via_router(self, frame):
        reply = Client.call_raw(self, frame)
        if reply is not None:
            self.stats["router"] += 1
            self.last_path = "router"
        else:
            self.last_path = "none"
        return reply

    def call_raw(self, frame):
        """Sends one frame, routed by its `item`, and returns the reply frame (None: no reply
        from the node nor from the router after its retries)."""
        try:
            item = decode_map(frame).get("item")
        except BadReply:
            item = None
        if not isinstance(item, str) or not item:
            return self._via_router(frame)  # ping, list (the router merges every node), or a frame it must judge
        if self.slot_map is None and not self._slots_refused:
            self.refresh_slots()
        endpoint = self.slot_map.endpoint_of(item) if self.slot_map is not None else None
        hop = 0
        while endpoint is not None and hop <= MAX_MOVED:
            link = self._link(endpoint)
            if time.monotonic() < link.held_until:
                break
            raw = self._exchange(link, endpoint, frame)
            if raw is None:
                break
            try:
                reply = decode_map(raw)
            except BadReply:
                reply = {}
            error = reply.get("error") if reply.get("ok") is False else None
            if error == "moved":
                self.stats["moved"] += 1
                self.refresh_slots()
                endpoint = reply.get("endpoint") if hop < MAX_MOVED else None
                hop += 1
                continue
            if error in ("unavailable", "internal"):
                self.stats["fallbacks"] += 1  # the node is stopping or faulty: the router retries
                break
            self.stats["direct"] += 1
            self.last_path = "direct"
            return raw
        if self.slot_map is not None and time.monotonic() - self._last_refresh >= self.holdoff:
            self.refresh_slots()  # the map may be stale (a node moved); at most once per hold-off
        return self._via_router(frame)
