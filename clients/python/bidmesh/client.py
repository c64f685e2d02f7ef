"""Client: requests to a mesh's request endpoint with Lazy Pirate retries by id.

The rules are those of the C++ client (client/client.h), so both behave alike:

- One REQ socket. A call sends ONE frame (a MessagePack map) and waits at most `timeout` seconds
  for the reply.
- No reply in time: the REQ socket is closed with linger 0 and a new one is opened and connected,
  and THE SAME frame, with the same `id`, is sent again, up to `retries` more times. This is safe:
  the mesh remembers each write's reply by (item, id), so a retried write never takes effect
  twice (PROTOCOL.md, "Requests").
- A reply `unavailable` or `internal` (safe to retry with the same id) is retried the same way,
  on the same socket, after a backoff of 10 ms doubling up to 500 ms. After the last try that
  reply is the answer.
- A call so waits at most timeout * (retries + 1) plus those backoffs.

Ids are "<prefix>-<counter>", the prefix "<hostname>-<pid>-<8 random hex digits>" (at most 40
bytes, so an id stays within the contract's 64) unless one is given; a request that carries its
own `id` keeps it.

Thread-safety: NOT thread-safe. A Client owns a ZeroMQ socket: use it from one thread (or give
each thread its own Client). Several Clients may share one zmq.Context.
"""

import os
import socket as _socket
import time

import msgpack
import zmq

from .errors import BadReply, NoReply, RequestError, RETRYABLE_CODES

# Largest reply frame accepted (ZMQ_MAXMSGSIZE), as the C++ client: a `history` page of 1000
# events is about 200 KB; anything past this is not the mesh.
MAX_REPLY_BYTES = 16 * 1024 * 1024

DEFAULT_TIMEOUT = 1.5  # seconds per try
DEFAULT_RETRIES = 3
_BACKOFF_FIRST = 0.010
_BACKOFF_MAX = 0.500


def make_id_prefix():
    """"<hostname cut to 20>-<pid>-<8 random hex digits>", at most 40 bytes."""
    host = (_socket.gethostname() or "host")[:20]
    return "%s-%d-%s" % (host, os.getpid(), os.urandom(4).hex())


def decode_map(frame):
    """A MessagePack map with string keys, decoded; BadReply otherwise."""
    try:
        value = msgpack.unpackb(frame, raw=False, strict_map_key=True)
    except Exception as e:  # msgpack raises several types (ExtraData, FormatError, ValueError...)
        raise BadReply("a frame of %d bytes that is not one MessagePack map: %s" % (len(frame), e)) from None
    if not isinstance(value, dict):
        raise BadReply("a frame of %d bytes holding a %s, not a map" % (len(frame), type(value).__name__))
    return value


def _check_int(name, value, optional=False):
    if value is None and optional:
        return
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError("%s must be an int (amounts in minor units, never floats), not %r" % (name, value))


class Client:
    """A request client of one endpoint (the router's, or a bid node's client endpoint).

    endpoint: e.g. "tcp://127.0.0.1:5555". timeout: seconds per try. retries: tries after the
    first. id_prefix: None for make_id_prefix(). curve: a CurveKeys (bidmesh.load_curve_keys) for
    a mesh with security = "curve"; every socket this client opens gets them. context: a
    zmq.Context to use (default: zmq.Context.instance()).
    The socket connects at once, in the background; nothing blocks here.
    """

    def __init__(self, endpoint, timeout=DEFAULT_TIMEOUT, retries=DEFAULT_RETRIES, id_prefix=None,
                 curve=None, context=None):
        if timeout <= 0:
            raise ValueError("timeout must be > 0 seconds")
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.endpoint = endpoint
        self.timeout = timeout
        self.retries = retries
        self.id_prefix = id_prefix or make_id_prefix()
        self.curve = curve
        self.context = context or zmq.Context.instance()
        self._counter = 0
        self._socket = None
        # The REQ socket sent and got no reply: it cannot send again and is replaced before the
        # next try, in this call or the next one.
        self._stuck = False
        self.last_id = None        # the id sent by the last call
        self.last_attempts = 0     # sends made by the last call (1: the first try was answered)
        self.last_elapsed = None   # seconds from the first send to the reply, of the last answered call
        self._open_socket()

    # --- the socket ------------------------------------------------------------------------

    def _open_socket(self):
        if self._socket is not None:
            self._socket.close(linger=0)  # linger 0 drops whatever the old socket still held
        s = self.context.socket(zmq.REQ)
        s.setsockopt(zmq.LINGER, 0)
        s.setsockopt(zmq.MAXMSGSIZE, MAX_REPLY_BYTES)
        if self.curve is not None:
            self.curve.apply(s)
        s.connect(self.endpoint)
        self._socket = s

    def shutdown(self):
        """Closes the socket (linger 0). The Client is unusable afterwards."""
        if self._socket is not None:
            self._socket.close(linger=0)
            self._socket = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.shutdown()

    # --- raw calls -------------------------------------------------------------------------

    def next_id(self):
        """A fresh id: "<prefix>-<counter>", counting from 1 per Client."""
        self._counter += 1
        return "%s-%d" % (self.id_prefix, self._counter)

    def _await_reply(self):
        deadline = time.monotonic() + self.timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return None
            if not self._socket.poll(max(1, int(left * 1000 + 0.999)), zmq.POLLIN):
                continue
            try:
                frames = self._socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                continue
            if frames:
                return frames[0]

    def call_raw(self, frame):
        """Sends one frame, exactly as given, with the retries above; returns the reply frame
        (the first if the peer sent several), or None when no reply came after all the tries."""
        if self._socket is None:
            raise RuntimeError("the Client was shut down")
        first_send = time.monotonic()
        self.last_attempts = 0
        retryable = None  # the last `unavailable`/`internal` reply of this call
        for attempt in range(self.retries + 1):
            # A REQ socket that lost its reply is stuck: replace it, also when the try that lost
            # it was the last one of the previous call.
            if self._stuck:
                self._open_socket()
                self._stuck = False
            self.last_attempts += 1
            try:
                # NOBLOCK: a socket with no pipe cannot block us; the try then times out.
                self._socket.send(frame, zmq.NOBLOCK)
            except zmq.ZMQError:
                retryable = None
                self._stuck = True
                continue
            reply = self._await_reply()
            if reply is None:
                retryable = None
                self._stuck = True
                continue
            self.last_elapsed = time.monotonic() - first_send
            if attempt < self.retries and _is_retryable(reply):
                time.sleep(min(_BACKOFF_FIRST * (1 << min(attempt, 6)), _BACKOFF_MAX))
                retryable = reply
                continue
            return reply
        # Out of tries: the last retryable reply if the last try got one, else nothing.
        return retryable

    def call(self, request):
        """Sends `request` (a dict; without `id`, next_id() is added) and returns the decoded
        reply, whatever its `ok`. Raises NoReply when no reply came after all the tries,
        BadReply when one came that is not a map."""
        if request.get("id") is None:
            request = dict(request, id=self.next_id())
        self.last_id = request["id"]
        raw = self.call_raw(msgpack.packb(request, use_bin_type=True))
        if raw is None:
            raise NoReply(self.last_id, self.last_attempts, int(self.timeout * 1000), self.endpoint)
        return decode_map(raw)

    def request(self, op, **fields):
        """Sends op with fields (a field given as None is left out: the contract's "absent") and
        returns the reply when `ok` is true; raises RequestError for `ok: false`."""
        req = {"op": op}
        req.update((k, v) for k, v in fields.items() if v is not None)
        reply = self.call(req)
        if reply.get("ok") is not True:
            raise RequestError(reply)
        return reply

    # --- the operations --------------------------------------------------------------------
    # Each returns the success reply as a dict (PROTOCOL.md's fields plus `ok` and `id`) and
    # raises RequestError on a refusal, NoReply when no reply came. `id`: to retry a write by
    # hand after NoReply, pass the id it carried.

    def open(self, item, start=None, increment=None, closes_at=None, id=None, reserve=None, extend_ms=None,
             title=None, description=None, image_url=None):
        """Opens `item`: {item, seq}. start/increment default to 1 at the mesh; closes_at in
        unix ms. v2: `reserve` (never shown), `extend_ms` (soft close), and the details `title`,
        `description`, `image_url` (str; the mesh checks their rules)."""
        for name, v in (("start", start), ("increment", increment), ("closes_at", closes_at),
                        ("reserve", reserve), ("extend_ms", extend_ms)):
            _check_int(name, v, optional=True)
        return self.request("open", id=id, item=item, start=start, increment=increment, closes_at=closes_at,
                            reserve=reserve, extend_ms=extend_ms, title=title, description=description,
                            image_url=image_url)

    def bid(self, item, bidder, amount, id=None, max=None):
        """Bids `amount` (int, minor units) on `item` as `bidder`: {item, bidder, amount, seq}.
        v2: `max`, the most this bidder will pay (a proxy bid); the reply then also has
        `leading` and `price`."""
        _check_int("amount", amount)
        _check_int("max", max, optional=True)
        return self.request("bid", id=id, item=item, bidder=bidder, amount=amount, max=max)

    def close(self, item, id=None):
        """Closes `item`: {item, seq, winner, amount} (winner and amount None without bids)."""
        return self.request("close", id=id, item=item)

    def get(self, item):
        """The item's state: {item, status, max, bidder, seq, bids, start, increment, closes_at}."""
        return self.request("get", item=item)

    def history(self, item, after=None, limit=None):
        """{item, events}: events after seq `after` (default 0), oldest first, at most `limit`
        (default 100, at most 1000)."""
        _check_int("after", after, optional=True)
        _check_int("limit", limit, optional=True)
        return self.request("history", item=item, after=after, limit=limit)

    def list_items(self, status="open", limit=None, cursor=None):
        """v2: one page of items by `status` ("open" or "closed"), by closes_at then item:
        {items, cursor, partial, missing}. `limit`: 1 to 100 (default 20 at the mesh); `cursor`:
        the `cursor` of the previous page (None: from the first item). `cursor` None in the reply:
        no next page. `partial` True: the bid nodes named in `missing` did not answer and their
        items are not in the page (list again later). Through a router: it merges every bid node."""
        _check_int("limit", limit, optional=True)
        return self.request("list", status=status, limit=limit, cursor=cursor)

    def ping(self):
        """{ok, id}: the router (or node) answers."""
        return self.request("ping")


def _is_retryable(frame):
    try:
        reply = decode_map(frame)
    except BadReply:
        return False
    return reply.get("ok") is False and reply.get("error") in RETRYABLE_CODES
