#!/usr/bin/python3
"""bidmesh security test: a Python client written from docs/security.md alone.

pyzmq with CURVE, client keys from zmq.auth.create_certificates with the fix-ups that
docs/security.md asks for (the roles line added to the public file by hand, the secret file made
0600), the public files copied into clients_dir, and the client code of its Python example
(`connect`, `call`). It starts its own mesh with security = "curve" on free loopback ports (a
router with the feed, two bid nodes), with the harness of contract_test.py; the mesh's keypair
comes from bidmesh-keygen. The document is the authority: where the mesh does something else,
the check fails.

Run: /usr/bin/python3 tests/contract/security_client_test.py --bin-dir build/bin
"""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
import unittest

import msgpack
import zmq
import zmq.auth

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract_test as harness  # noqa: E402  (the mesh harness: processes, ports, temp dir)

REVOCATION_LIMIT_S = 1.0  # docs/security.md: a reload applies within one second
ROLES = {"house": "auctioneer", "alice": "bidder", "bob": "bidder", "rita": None}  # rita: a reader


# ---------------------------------------------------------------------------------------------
# docs/security.md, "From Python": the client code as the page gives it.


def connect(ctx, endpoint, client_secret_file, mesh_public_file):
    public, secret = zmq.auth.load_certificate(client_secret_file)
    server_public, _ = zmq.auth.load_certificate(mesh_public_file)
    s = ctx.socket(zmq.REQ)
    s.curve_publickey, s.curve_secretkey, s.curve_serverkey = public, secret, server_public
    s.setsockopt(zmq.RCVTIMEO, 2000)
    s.setsockopt(zmq.SNDTIMEO, 2000)   # a refused handshake can leave nothing to send to
    s.setsockopt(zmq.LINGER, 0)
    s.connect(endpoint)
    return s


def call(s, request):
    s.send(msgpack.packb(request))
    return msgpack.unpackb(s.recv())


# docs/security.md, "Keys": pyzmq makes the pair; pyzmq writes the metadata only into the secret
# file, so the roles line goes under `metadata` in the public file by hand; the secret file is
# made 0600; the public file alone goes into the mesh's clients_dir.


def make_client_keys(keys_dir, name, roles, clients_dir=None):
    metadata = {"roles": roles} if roles else None
    public_file, secret_file = zmq.auth.create_certificates(keys_dir, name, metadata=metadata)
    if roles:
        with open(public_file) as f:
            lines = f.read().split("\n")
        if "metadata" not in lines:
            raise RuntimeError("no metadata section in pyzmq's %s:\n%s" % (public_file, "\n".join(lines)))
        lines.insert(lines.index("metadata") + 1, '    roles = "%s"' % roles)
        with open(public_file, "w") as f:
            f.write("\n".join(lines))
    os.chmod(secret_file, 0o600)
    if clients_dir is not None:
        shutil.copy(public_file, clients_dir)
    return secret_file


def subscriber(ctx, endpoint, topic, client_secret_file=None, mesh_public_file=None):
    """A SUB with the same three keys as a REQ, set before connect (none: a plaintext SUB)."""
    s = ctx.socket(zmq.SUB)
    if client_secret_file:
        public, secret = zmq.auth.load_certificate(client_secret_file)
        server_public, _ = zmq.auth.load_certificate(mesh_public_file)
        s.curve_publickey, s.curve_secretkey, s.curve_serverkey = public, secret, server_public
    s.setsockopt(zmq.LINGER, 0)
    s.setsockopt(zmq.SUBSCRIBE, topic.encode())
    s.connect(endpoint)
    return s


# ---------------------------------------------------------------------------------------------
# The mesh: contract_test's router + feed + two bid nodes, with security = "curve".


class SecureMesh(harness.Mesh):
    def __init__(self):
        super().__init__()  # temp dir, free loopback ports, the config of the three nodes
        self.keys_dir = os.path.join(self.dir, "keys")            # the mesh's own keypair
        self.clients_dir = os.path.join(self.dir, "clients")      # allowed public certificates
        self.client_keys_dir = os.path.join(self.dir, "client-keys")  # the clients' side
        for d in (self.keys_dir, self.clients_dir, self.client_keys_dir):
            os.mkdir(d)
        keygen = os.path.join(harness.BIN_DIR, "bidmesh-keygen")
        r = subprocess.run([keygen, "mesh", "--dir", self.keys_dir], stdin=subprocess.DEVNULL,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=30)
        if r.returncode != 0:
            raise RuntimeError("bidmesh-keygen mesh failed (%d): %s" % (r.returncode, r.stdout))
        self.mesh_public = os.path.join(self.keys_dir, "mesh.key")
        with open(self.config) as f:
            nodes = f.read()
        with open(self.config, "w") as f:  # top-level keys, so before the first table
            f.write('security = "curve"\nserver_certificate = "keys/mesh.key_secret"\n'
                    'clients_dir = "clients"\n' + nodes)
        self.probe_cert = None  # the client key wait_ready uses

    def wait_ready(self, nodes=("bid-1", "bid-2")):
        """Until a CURVE ping is answered, then a get on one item of each node."""
        deadline = time.monotonic() + harness.READY_DEADLINE_S
        pending = [{"op": "ping"}] + [{"op": "get", "item": harness.item_on(n, "ready")} for n in nodes]
        n = 0
        while pending:
            for name, p in self.procs.items():
                if p.poll() is not None:
                    raise RuntimeError("%s exited with %s during start\n%s" % (name, p.returncode, self.logs()))
            if time.monotonic() > deadline:
                raise RuntimeError("mesh not ready in %ss (waiting for %s)\n%s"
                                   % (harness.READY_DEADLINE_S, pending[0], self.logs()))
            n += 1
            s = connect(self.ctx, self.endpoint, self.probe_cert, self.mesh_public)
            s.send(msgpack.packb(dict(pending[0], id="ready-%d" % n)))
            if s.poll(500, zmq.POLLIN):
                rep = msgpack.unpackb(s.recv())
                if rep.get("ok") or rep.get("error") not in ("unavailable", "internal"):
                    pending.pop(0)
            s.close()
            if pending:
                time.sleep(0.05)  # poll interval, bounded by the deadline above


_ids = [0]


def next_id():
    _ids[0] += 1
    return "%s-sec-%d" % (harness.RUN, _ids[0])


class SecurityClientTest(unittest.TestCase):
    """One mesh for all; the tests run in name order, the revocation last."""

    @classmethod
    def setUpClass(cls):
        cls.mesh = m = SecureMesh()
        try:
            cls.certs = {name: make_client_keys(m.client_keys_dir, name, roles, m.clients_dir)
                         for name, roles in ROLES.items()}
            # Made the same way, never installed: a key the mesh does not know.
            cls.stranger_cert = make_client_keys(m.client_keys_dir, "mallory", "auctioneer")
            m.probe_cert = cls.certs["rita"]
            m.start_all()
            cls.s = {name: connect(m.ctx, m.endpoint, cert, m.mesh_public) for name, cert in cls.certs.items()}
        except Exception:
            m.stop()
            raise

    @classmethod
    def tearDownClass(cls):
        cls.mesh.stop()  # kills the processes, keeps their logs for a failure, removes the dir

    # --- helpers -----------------------------------------------------------------------------

    def req(self, who, op, **fields):
        """Sends op as `who` with a fresh id; returns (id, reply)."""
        rid = fields.pop("id", None) or next_id()
        try:
            return rid, call(self.s[who], dict(fields, op=op, id=rid))
        except zmq.Again:
            self.fail("%s: no reply within 2 s to %s %r" % (who, op, fields))

    def ok(self, who, op, **fields):
        rid, rep = self.req(who, op, **fields)
        self.assertIs(rep.get("ok"), True, "%s %s %r: %r" % (who, op, fields, rep))
        self.assertEqual(rep.get("id"), rid, rep)
        return rep

    def forbidden(self, who, op, **fields):
        rid, rep = self.req(who, op, **fields)
        self.assertEqual((rep.get("ok"), rep.get("error"), rep.get("id")), (False, "forbidden", rid),
                         "%s %s %r should be forbidden: %r" % (who, op, fields, rep))
        self.assertIsInstance(rep.get("message"), str, rep)
        self.assertTrue(rep["message"], rep)
        return rep

    def no_reply(self, s, what):
        # zmq.Again from recv, or from send once libzmq has dropped the refused connection.
        with self.assertRaises(zmq.Again, msg="%s got a reply" % what):
            call(s, {"op": "ping", "id": next_id()})

    # --- the tests -----------------------------------------------------------------------------

    def test_1_roles(self):
        for node in ("bid-1", "bid-2"):  # each bid node judges the roles of its own items
            with self.subTest(node=node):
                item = harness.item_on(node, "roles")
                self.assertEqual(self.ok("house", "open", item=item, start=100)["seq"], 1)
                r = self.ok("alice", "bid", item=item, bidder="alice", amount=100)
                self.assertEqual((r["bidder"], r["amount"], r["seq"]), ("alice", 100, 2))
                r = self.ok("bob", "bid", item=item, bidder="bob", amount=200)
                self.assertEqual((r["bidder"], r["amount"], r["seq"]), ("bob", 200, 3))
                # Bidding in the other's name, without the agent role.
                rid = next_id()
                self.forbidden("bob", "bid", id=rid, item=item, bidder="alice", amount=300)
                self.forbidden("alice", "bid", item=item, bidder="bob", amount=300)
                # open and close need the auctioneer role.
                self.forbidden("bob", "open", item=harness.item_on(node, "roles"))
                self.forbidden("alice", "close", item=item)
                self.forbidden("rita", "bid", item=item, bidder="rita", amount=300)
                # forbidden is not remembered: the same id, now allowed, is applied (no conflict).
                r = self.ok("bob", "bid", id=rid, item=item, bidder="bob", amount=300)
                self.assertEqual(r["seq"], 4)
                # The stored bidders are the ones the mesh checked.
                g = self.ok("rita", "get", item=item)
                self.assertEqual((g["status"], g["max"], g["bidder"], g["bids"], g["seq"]),
                                 ("open", 300, "bob", 3, 4))
                h = self.ok("rita", "history", item=item)["events"]
                self.assertEqual([(e["seq"], e.get("bidder")) for e in h],
                                 [(1, None), (2, "alice"), (3, "bob"), (4, "bob")])
                r = self.ok("house", "close", item=item)
                self.assertEqual((r["seq"], r["winner"], r["amount"]), (5, "bob", 300))
                self.ok("rita", "ping")

    def test_2_reader_feed(self):
        m = self.mesh
        item = harness.item_on("bid-2", "feed")
        self.ok("house", "open", item=item)
        topic = "item/%s/" % item
        sub = subscriber(m.ctx, m.feed_endpoint, topic, self.certs["rita"], m.mesh_public)
        # The feed is for allowed keys only (no feed_public here): these two get nothing.
        plain = subscriber(m.ctx, m.feed_endpoint, "item/")
        stranger = subscriber(m.ctx, m.feed_endpoint, "item/", self.stranger_cert, m.mesh_public)
        try:
            events = []

            def read(timeout_ms):
                if sub.poll(timeout_ms, zmq.POLLIN):
                    while True:
                        try:
                            frames = sub.recv_multipart(zmq.NOBLOCK)
                        except zmq.Again:
                            break
                        self.assertEqual(len(frames), 2, frames)
                        self.assertEqual(frames[0], topic.encode())
                        events.append(msgpack.unpackb(frames[1]))

            # Subscribe first, then bid until an event arrives: the subscription is live.
            deadline = time.monotonic() + harness.READY_DEADLINE_S
            amount = 0
            while not events:
                self.assertLess(time.monotonic(), deadline, "the reader's CURVE subscription never got an event")
                amount += 1
                self.ok("alice", "bid", item=item, bidder="alice", amount=amount)
                read(200)
            first = events[0]
            self.assertEqual((first["event"], first["item"], first["bidder"]), ("max", item, "alice"))
            # Then the state, with get.
            state = self.ok("rita", "get", item=item)
            self.assertEqual((state["max"], state["bidder"]), (amount, "alice"))
            self.assertGreaterEqual(state["seq"], first["seq"])
            # The next events arrive, in seq order.
            s_bid = self.ok("bob", "bid", item=item, bidder="bob", amount=amount + 1)["seq"]
            s_close = self.ok("house", "close", item=item)["seq"]
            self.assertEqual((s_bid, s_close), (state["seq"] + 1, state["seq"] + 2))
            deadline = time.monotonic() + harness.REPLY_TIMEOUT_S
            while not events or events[-1]["seq"] < s_close:
                left = deadline - time.monotonic()
                self.assertGreater(left, 0, "feed events up to seq %d did not come: %r" % (s_close, events))
                read(int(left * 1000))
            seqs = [e["seq"] for e in events]
            self.assertEqual(seqs, list(range(first["seq"], s_close + 1)))
            self.assertEqual((events[-2]["event"], events[-2]["bidder"], events[-2]["amount"]),
                             ("max", "bob", amount + 1))
            self.assertEqual((events[-1]["event"], events[-1]["winner"], events[-1]["amount"]),
                             ("closed", "bob", amount + 1))
            for other, what in ((plain, "a plaintext subscriber"), (stranger, "an unknown key's subscriber")):
                self.assertFalse(other.poll(0, zmq.POLLIN), "%s received feed events" % what)
        finally:
            for s in (sub, plain, stranger):
                s.close(linger=0)

    def test_3_refused_at_handshake(self):
        m = self.mesh
        stranger = connect(m.ctx, m.endpoint, self.stranger_cert, m.mesh_public)
        plain = m.ctx.socket(zmq.REQ)  # connect() without the keys
        plain.setsockopt(zmq.RCVTIMEO, 2000)
        plain.setsockopt(zmq.SNDTIMEO, 2000)
        plain.setsockopt(zmq.LINGER, 0)
        plain.connect(m.endpoint)
        try:
            self.no_reply(stranger, "a key not in clients_dir")
            self.no_reply(plain, "a client without CURVE")
        finally:
            stranger.close(linger=0)
            plain.close(linger=0)
        self.ok("rita", "ping")  # and the mesh serves on

    def test_9_revocation(self):
        m = self.mesh
        item = harness.item_on("bid-1", "revoke")
        self.ok("house", "open", item=item)
        self.ok("bob", "bid", item=item, bidder="bob", amount=5)
        os.remove(os.path.join(m.clients_dir, "bob.key"))
        sent = time.monotonic()
        m.procs["router"].send_signal(signal.SIGHUP)
        # Bob's socket, open since before: his requests get forbidden once the reload is in.
        while True:
            rid, rep = self.req("bob", "get", item=item)
            took = time.monotonic() - sent
            if rep.get("error") == "forbidden":
                break
            self.assertIs(rep.get("ok"), True, rep)
            self.assertLess(took, REVOCATION_LIMIT_S, "bob still served %.2f s after the SIGHUP" % took)
            time.sleep(0.02)
        sys.stderr.write("revocation: bob forbidden %.0f ms after the SIGHUP\n" % (took * 1000))
        self.assertLess(took, REVOCATION_LIMIT_S)
        self.forbidden("bob", "bid", item=item, bidder="bob", amount=6)
        self.forbidden("bob", "ping")
        # His new connections are refused at the handshake; the others are served as before.
        again = connect(m.ctx, m.endpoint, self.certs["bob"], m.mesh_public)
        try:
            self.no_reply(again, "a removed key's new connection")
        finally:
            again.close(linger=0)
        r = self.ok("alice", "bid", item=item, bidder="alice", amount=6)
        self.assertEqual(r["seq"], 3)


def on_sigterm(*_):
    """SIGTERM (a timeout, an operator): the mesh is killed and its dir removed, then exit 143.
    Not sys.exit: unittest would catch a SystemExit raised inside a test and go on."""
    sys.stderr.write("security_client_test: SIGTERM: stopping the mesh\n")
    harness._kill_everything()
    os._exit(143)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    args, rest = ap.parse_known_args()
    harness.BIN_DIR = os.path.abspath(args.bin_dir)
    signal.signal(signal.SIGTERM, on_sigterm)
    prog = unittest.main(argv=[sys.argv[0]] + rest, exit=False, verbosity=2)
    ok = prog.result.wasSuccessful()
    if not ok:
        for d, text in harness._LOGS:
            sys.stderr.write("===== mesh logs from %s =====\n%s\n" % (d, text))
        sys.stderr.write("security_client_test: FAILED: the failures and the mesh logs are above\n")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
