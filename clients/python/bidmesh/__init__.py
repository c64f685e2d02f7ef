"""bidmesh: a Python client of a bidmesh mesh (pyzmq + msgpack), after PROTOCOL.md.

    from bidmesh import Client, Feed
    c = Client("tcp://127.0.0.1:5555")
    c.open("lamp-1", start=100)
    c.bid("lamp-1", "alice", 150)          # {'ok': True, 'id': ..., 'seq': 2, ...}
    for ev in Feed("tcp://127.0.0.1:5556", request_endpoint="tcp://127.0.0.1:5555").iter(idle=5):
        print(ev)

Client: requests with Lazy Pirate retries by id. DirectClient: the same, sent straight to the
bid node that owns the item (slot map from the router; the router as fallback). Feed: events in
seq order with gap repair.
load_curve_keys: the CURVE keys of a mesh with security = "curve". See README.md.
"""

from .client import Client, make_id_prefix
from .direct import DirectClient, SlotMap, crc16_xmodem, slot_of
from .errors import BadReply, BidmeshError, CertificateError, NoReply, RequestError
from .feed import Event, Feed, FeedStats, feed_topic
from .keys import CurveKeys, load_curve_keys

__version__ = "0.1.0"

__all__ = [
    "BadReply", "BidmeshError", "CertificateError", "Client", "CurveKeys", "DirectClient", "Event", "Feed",
    "FeedStats", "NoReply", "RequestError", "SlotMap", "crc16_xmodem", "feed_topic", "load_curve_keys",
    "make_id_prefix", "slot_of",
]
