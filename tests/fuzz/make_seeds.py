#!/usr/bin/env python3
"""Writes the hand-made seeds of the decoder fuzz corpus (tests/fuzz/corpus/seed-*).

A tiny MessagePack writer (no package needed) so that odd but legal encodings can be chosen on
purpose: str8 for short strings, integers in signed or wider formats, and headers that claim
more than the frame holds. Seeds are small valid requests of every op, replies and events, and
the known bombs. Inputs the fuzzer found are added beside them (min-*) by tools/fuzz --merge.
Usage: tests/fuzz/make_seeds.py [DIR]   (default: the corpus folder beside this script)
"""
import os
import struct
import sys


def s(v, fmt=None):
    b = v.encode() if isinstance(v, str) else v
    n = len(b)
    if fmt == "str8" or (fmt is None and 32 <= n < 256):
        return b"\xd9" + bytes([n]) + b
    if fmt == "str16" or (fmt is None and 256 <= n < 65536):
        return b"\xda" + struct.pack(">H", n) + b
    if fmt == "str32" or (fmt is None and n >= 65536):
        return b"\xdb" + struct.pack(">I", n) + b
    return bytes([0xA0 | n]) + b


def u(v, fmt=None):
    if fmt == "i8":
        return b"\xd0" + struct.pack(">b", v)
    if fmt == "i64":
        return b"\xd3" + struct.pack(">q", v)
    if fmt == "u64":
        return b"\xcf" + struct.pack(">Q", v)
    if fmt == "u32":
        return b"\xce" + struct.pack(">I", v)
    if 0 <= v < 128:
        return bytes([v])
    if -32 <= v < 0:
        return struct.pack(">b", v)
    if 0 <= v < 256:
        return b"\xcc" + bytes([v])
    if 0 <= v < 65536:
        return b"\xcd" + struct.pack(">H", v)
    if 0 <= v < 2**32:
        return b"\xce" + struct.pack(">I", v)
    if v >= 0:
        return b"\xcf" + struct.pack(">Q", v)
    return b"\xd3" + struct.pack(">q", v)


def pack(v):
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, Raw):
        return v.b
    if isinstance(v, int):
        return u(v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        return s(v)
    if isinstance(v, bytes):
        return b"\xc4" + bytes([len(v)]) + v
    if isinstance(v, list):
        return bytes([0x90 | len(v)]) + b"".join(pack(x) for x in v) if len(v) < 16 else \
            b"\xdc" + struct.pack(">H", len(v)) + b"".join(pack(x) for x in v)
    if isinstance(v, dict):
        items = list(v.items())
        head = bytes([0x80 | len(items)]) if len(items) < 16 else b"\xde" + struct.pack(">H", len(items))
        return head + b"".join(pack(k) + pack(x) for k, x in items)
    raise TypeError(v)


class Raw:
    def __init__(self, b):
        self.b = b


def kv(*pairs):
    """A map from (key, value) pairs, keys and values packed as given (duplicates allowed)."""
    head = bytes([0x80 | len(pairs)])
    return head + b"".join(pack(k) + pack(x) for k, x in pairs)


def kvw(pairs, root, key_fmt):
    """Like kv, with the root map as map16 or map32 and every key as str8, str16 or str32."""
    n = len(pairs)
    head = b"\xde" + struct.pack(">H", n) if root == "map16" else b"\xdf" + struct.pack(">I", n)
    return head + b"".join(s(k, key_fmt) + pack(x) for k, x in pairs)


def bin_(v, fmt):
    if fmt == "bin16":
        return b"\xc5" + struct.pack(">H", len(v)) + v
    return b"\xc6" + struct.pack(">I", len(v)) + v


NOW_PLUS = 1_800_000_000_000  # after the fuzz target's fixed now

seeds = {
    # Valid requests of every op.
    "ping": pack({"op": "ping", "id": "p-1"}),
    "open": pack({"op": "open", "id": "o-1", "item": "lamp-1", "start": 100, "increment": 10}),
    "open-deadline": pack({"op": "open", "id": "o-2", "item": "lamp-2", "closes_at": NOW_PLUS}),
    "open-nil-optional": pack({"op": "open", "id": "o-3", "item": "lamp-3", "closes_at": None, "start": None}),
    "bid": pack({"op": "bid", "id": "b-1", "item": "lamp-1", "bidder": "alice", "amount": 150}),
    "bid-u64": kv(("op", "bid"), ("id", "b-2"), ("item", "x"), ("bidder", "bob"),
                  ("amount", Raw(u(2**64 - 1, "u64")))),
    "bid-signed-format": kv(("op", "bid"), ("id", "b-3"), ("item", "x"), ("bidder", "bob"),
                            ("amount", Raw(u(5, "i64")))),
    "bid-str8": kv(("op", Raw(s("bid", "str8"))), ("id", Raw(s("b-4", "str8"))),
                   ("item", Raw(s("x", "str8"))), ("bidder", "z"), ("amount", 1)),
    "close": pack({"op": "close", "id": "c-1", "item": "lamp-1"}),
    "get": pack({"op": "get", "id": "g-1", "item": "lamp-1"}),
    "history": pack({"op": "history", "id": "h-1", "item": "lamp-1", "after": 3, "limit": 5000}),
    "unknown-keys": pack({"op": "get", "id": "g-2", "item": "a", "extra": [1, {"k": None}], "v": 2}),
    "id-64": pack({"op": "get", "id": "i" * 64, "item": "A" * 64}),
    # Wide encodings of valid requests (the router's fast path, scan_route, reads these too).
    "route-map16-str16": kvw([("op", Raw(s("bid", "str16"))), ("id", Raw(s("r-1", "str16"))),
                              ("item", Raw(s("lamp", "str16"))), ("bidder", "b"), ("amount", Raw(u(7, "u32"))),
                              ("b", Raw(bin_(b"\x00\x01", "bin16"))), ("f", Raw(b"\xca" + struct.pack(">f", 1.5)))],
                             "map16", "str16"),
    "route-map32-str32": kvw([("op", Raw(s("get", "str32"))), ("id", Raw(s("r-2", "str32"))),
                              ("item", Raw(s("lamp", "str32"))), ("b", Raw(bin_(b"", "bin32"))), ("n", None)],
                             "map32", "str32"),
    "route-64-keys": kvw([("op", "close"), ("id", "r-3"), ("item", "a")] + [("k%d" % i, i) for i in range(61)],
                         "map16", "str8"),
    "route-ping-int-item": pack({"op": "ping", "id": "r-4", "item": 5}),
    # Refused by the rules.
    "key-in-two-widths": kv(("op", "get"), ("id", "u-11"), ("item", "a"), (Raw(s("item", "str32")), "b")),
    "key-bin": bytes([0x83]) + bin_(b"op", "bin16") + pack("get") + pack("id") + pack("u-12") + pack("item") + pack("a"),
    "id-bin": kv(("op", "get"), ("id", b"u-13"), ("item", "a")),
    "id-65": pack({"op": "get", "id": "i" * 65, "item": "a"}),
    "id-empty": pack({"op": "get", "id": "", "item": "a"}),
    "id-int": pack({"op": "get", "id": 7, "item": "a"}),
    "op-unknown": pack({"op": "fly", "id": "u-1"}),
    "op-int": pack({"op": 1, "id": "u-2"}),
    "item-bad-chars": pack({"op": "get", "id": "u-3", "item": "no spaces"}),
    "item-array": pack({"op": "get", "id": "u-4", "item": ["a"]}),
    "amount-float": pack({"op": "bid", "id": "u-5", "item": "a", "bidder": "b", "amount": 1.5}),
    "amount-negative": kv(("op", "bid"), ("id", "u-6"), ("item", "a"), ("bidder", "b"),
                          ("amount", Raw(u(-1, "i8")))),
    "amount-zero": pack({"op": "bid", "id": "u-7", "item": "a", "bidder": "b", "amount": 0}),
    "closes-at-past": pack({"op": "open", "id": "u-8", "item": "a", "closes_at": 1}),
    "duplicate-key": kv(("op", "get"), ("id", "u-9"), ("item", "a"), ("item", "b")),
    "key-int": bytes([0x83]) + pack("op") + pack("get") + pack("id") + pack("u-10") + pack(1) + pack(2),
    "key-nil-id": pack({"op": "get", "id": None, "item": "a"}),
    "not-a-map": pack([1, 2, 3]),
    "nil": pack(None),
    "empty": b"",
    "trailing-byte": pack({"op": "ping", "id": "t-1"}) + b"\x00",
    "two-maps": pack({"op": "ping", "id": "t-2"}) * 2,
    "truncated": pack({"op": "bid", "id": "t-3", "item": "a", "bidder": "b", "amount": 9})[:-3],
    "too-large": pack({"op": "get", "id": "big", "item": "a", "pad": "p" * 5000}),
    "reserved-byte": b"\xc1",
    # Bombs: headers claiming gigabytes, deep nesting, wide containers.
    "array32-4g": b"\xdd\xff\xff\xff\xff",
    "map32-4g": b"\xdf\xff\xff\xff\xff",
    "str32-4g": b"\xdb\xff\xff\xff\xff",
    "bin32-4g": b"\xc6\xff\xff\xff\xff",
    "ext32-4g": b"\xc9\xff\xff\xff\xff\x01",
    "map-with-str32-value": bytes([0x82]) + pack("op") + b"\xdb\x7f\xff\xff\xff" + b"ping",
    "map-with-array32-value": bytes([0x83]) + pack("op") + pack("get") + pack("id") + pack("x") + pack("a") +
                              b"\xdd\x10\x00\x00\x00",
    "nest-array-1000": b"\x91" * 1000 + b"\xc0",
    "nest-map-200": (b"\x81\xa1a") * 200 + b"\xc0",
    "nest-depth-5": pack({"op": "get", "id": "n-1", "item": "a", "x": [[[[1]]]]}),
    "wide-array-65": bytes([0x84]) + pack("op") + pack("get") + pack("id") + pack("w-1") + pack("item") +
                     pack("a") + pack("x") + b"\xdc\x00\x41" + b"\x00" * 65,
    "wide-map-65": b"\xde\x00\x41" + b"".join(pack("k%d" % i) + b"\xc0" for i in range(65)),
    # Replies and events (decode_reply, decode_event).
    "reply-ok": pack({"ok": True, "id": "b-1", "item": "lamp-1", "bidder": "alice", "amount": 150, "seq": 2}),
    "reply-error": pack({"ok": False, "id": None, "error": "bad_request", "message": "the frame is not valid"}),
    "reply-history": pack({"ok": True, "id": "h-1", "item": "lamp-1", "events": [
        {"event": "open", "item": "lamp-1", "seq": 1, "ts": 1},
        {"event": "max", "item": "lamp-1", "seq": 2, "ts": 2, "amount": 150, "bidder": "alice"},
        {"event": "closed", "item": "lamp-1", "seq": 3, "ts": 3, "winner": None, "amount": None}]}),
    "event-max": pack({"event": "max", "item": "lamp-1", "seq": 2, "ts": 5, "amount": 150, "bidder": "alice"}),
    "event-closed": pack({"event": "closed", "item": "lamp-1", "seq": 3, "ts": 6, "winner": "alice", "amount": 150}),
    "event-bad-kind": pack({"event": "boom", "item": "x", "seq": 1, "ts": 1}),
    "reply-mixed-types": pack({"ok": True, "id": "x", "f": 1.5, "n": -3, "b": b"\x00", "a": [None, True]}),
}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
    os.makedirs(out, exist_ok=True)
    for name, data in seeds.items():
        with open(os.path.join(out, "seed-" + name), "wb") as f:
            f.write(data)
    print("%d seeds written to %s" % (len(seeds), out))


if __name__ == "__main__":
    main()
