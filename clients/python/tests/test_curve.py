#!/usr/bin/python3
"""bidmesh with CURVE: a mesh with security = "curve" whose keys come from bidmesh-keygen; the
Client and the Feed with keys from load_curve_keys (on every socket they open, also the ones a
retry reopens), roles as the mesh judges them, refused keys, and load_curve_keys' refusals.

Run: /usr/bin/python3 clients/python/tests/test_curve.py --bin-dir build/bin
"""

import os
import shutil
import signal
import threading
import time

import mesh
from mesh import bidmesh, item_on

ROLES = {"house": "auctioneer", "alice": "bidder", "rita": None}  # rita: a reader


class CurveTest(mesh.MeshTest):
    security = "curve"

    @classmethod
    def prepare_mesh(cls):
        m = cls.mesh
        cls.certs = {name: m.client_key(name, roles) for name, roles in ROLES.items()}
        cls.stranger = m.client_key("mallory", "auctioneer", allow=False)  # not in clients_dir
        cls.keys = {name: bidmesh.load_curve_keys(cert, m.mesh_public) for name, cert in cls.certs.items()}

    def client(self, who, **kw):
        kw.setdefault("timeout", 2.0)
        c = bidmesh.Client(self.mesh.endpoint, curve=self.keys[who] if who else None, **kw)
        self.addCleanup(c.shutdown)
        return c

    def test_roles(self):
        house, alice, rita = self.client("house"), self.client("alice"), self.client("rita")
        item = item_on("bid-1", "roles")
        self.assertEqual(house.open(item, start=10)["seq"], 1)
        self.assertEqual(alice.bid(item, "alice", 10)["seq"], 2)
        for call in (lambda: alice.bid(item, "bob", 20),       # another's name: needs agent
                     lambda: alice.open(item_on("bid-2")),     # needs auctioneer
                     lambda: rita.bid(item, "rita", 30)):      # a reader
            with self.assertRaises(bidmesh.RequestError) as cm:
                call()
            self.assertEqual(cm.exception.code, "forbidden")
            self.assertIn("role", cm.exception.message)
        g = rita.get(item)
        self.assertEqual((g["max"], g["bidder"], g["bids"]), (10, "alice", 1))
        self.assertEqual(house.close(item)["winner"], "alice")

    def test_feed_with_keys(self):
        m = self.mesh
        house = self.client("house")
        item = item_on("bid-2", "feed")
        house.open(item)
        states = []
        f = bidmesh.Feed(m.feed_endpoint, items=[item], request_endpoint=m.endpoint, late_join=True,
                         on_state=states.append, curve=self.keys["rita"])
        plain = bidmesh.Feed(m.feed_endpoint, items=[item])  # no keys: refused at the handshake
        self.addCleanup(f.shutdown)
        self.addCleanup(plain.shutdown)
        seen = []
        deadline = time.monotonic() + mesh.READY_DEADLINE_S
        amount = 0
        while not seen:  # bid until the subscription is live
            self.assertLess(time.monotonic(), deadline, "the CURVE feed never delivered")
            amount += 1
            self.client("alice").bid(item, "alice", amount)
            seen += list(f.iter(idle=0.1))
        last = house.close(item)["seq"]
        while seen[-1].seq < last:
            ev = f.next(5.0)
            self.assertIsNotNone(ev, "no event up to seq %d" % last)
            seen.append(ev)
        self.assertEqual(len(states), 1)  # the late-join `get` went over CURVE too
        self.assertEqual([e.seq for e in seen], list(range(states[0]["seq"] + 1, last + 1)))
        self.assertEqual(seen[-1].event, "closed")
        self.assertIsNone(plain.next(0.2))

    def test_refused_keys_get_no_reply(self):
        m = self.mesh
        stranger = bidmesh.Client(m.endpoint, timeout=0.3, retries=1,
                                  curve=bidmesh.load_curve_keys(self.stranger, m.mesh_public))
        plain = bidmesh.Client(m.endpoint, timeout=0.3, retries=1)
        for c in (stranger, plain):
            with self.assertRaises(bidmesh.NoReply):
                c.ping()
            self.assertEqual(c.last_attempts, 2)
            c.shutdown()
        self.client("rita").ping()  # and the mesh serves on

    def test_reopened_socket_keeps_the_keys(self):
        """The router stops (SIGSTOP) under a request: the try times out, the socket is reopened
        (with the keys again: else the next try could never be answered) and the same frame is
        answered once the router goes on."""
        router = self.mesh.procs["router"]
        c = self.client("rita", timeout=0.3, retries=20)
        c.ping()  # connected
        router.send_signal(signal.SIGSTOP)
        resume = threading.Timer(1.0, router.send_signal, args=(signal.SIGCONT,))
        resume.start()
        try:
            c.ping()
        finally:
            resume.join()
            router.send_signal(signal.SIGCONT)
        self.assertGreaterEqual(c.last_attempts, 2)

    def test_load_curve_keys_refusals(self):
        m = self.mesh
        d = os.path.join(m.dir, "refusals")
        os.mkdir(d)
        secret = shutil.copy(self.certs["rita"], os.path.join(d, "rita.key_secret"))
        os.chmod(secret, 0o600)
        keys = bidmesh.load_curve_keys(secret, m.mesh_public)
        self.assertEqual((len(keys.public_key), len(keys.secret_key), len(keys.server_public_key)), (40, 40, 40))
        self.assertEqual(keys, self.keys["rita"])
        os.chmod(secret, 0o644)  # as pyzmq writes it: taken unchanged
        self.assertEqual(bidmesh.load_curve_keys(secret, m.mesh_public), self.keys["rita"])
        public_only = shutil.copy(m.mesh_public, os.path.join(d, "public.key_secret"))
        os.chmod(public_only, 0o600)
        with self.assertRaisesRegex(bidmesh.CertificateError, "no secret-key"):
            bidmesh.load_curve_keys(public_only, m.mesh_public)  # a public file as the secret
        with self.assertRaisesRegex(bidmesh.CertificateError, "cannot read"):
            bidmesh.load_curve_keys(os.path.join(d, "absent.key_secret"), m.mesh_public)
        broken = os.path.join(d, "broken.key")
        with open(broken, "w") as f:
            f.write("curve\n    public-key = \"short\"\n")
        with self.assertRaises(bidmesh.CertificateError):
            bidmesh.load_curve_keys(self.certs["rita"], broken)


if __name__ == "__main__":
    mesh.main()
