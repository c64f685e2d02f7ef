"""The web gateway (issue 15, server side) through real processes: a supervisor-run mesh (one
router with the feed, two bid nodes, one gateway) and HTTP/WebSocket clients of the standard
library and Debian's python3-websockets (docs/web.md is the contract checked here).

Covers: static files and their headers (CSP, nosniff, no-cache), the allow list (/../, %2e%2e),
/api/items, /api/items/<item>, sign-in good and bad with the cookie's flags, bids with and
without session and CSRF token, cross-origin POST and WebSocket upgrade refused, a CLI bid seen on
a watching socket within 1 s, watch with `after` getting missed events, kill -9 of the gateway
and a reconnect with `after` missing nothing, a slow reader getting `resync` with the gateway's
memory bounded, the connection cap (HTTP and WebSocket together: 503 `busy`), the users file
re-read while the gateway runs (added, removed, unloadable, SIGHUP), the sign-in rate limit (429
per address: those tests sign in from 127.0.0.x addresses of their own), and hostile input
(malformed request lines, huge headers and bodies, slowloris, non-JSON bodies, WebSocket frames
over the cap, binary frames, bad JSON): each gets a clean 4xx or close and the gateway answers
afterwards with the same pid.

Usage: gateway_test.py --bin-dir BUILD/bin [unittest args]
"""

import argparse
import asyncio
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "support"))
from pymesh import (SCALE, Supervised, free_ports, log_tails, router_and_two_bid_nodes, wait_for,  # noqa: E402
                    write_mesh_toml)

import websockets  # noqa: E402  (Debian python3-websockets)

BIN = None
MAX_CONNECTIONS = 60
FAN_EVENTS = 30000  # test_watch_all_shared_batches_keep_each_socket_apart: ~3.5 MB of events
IDLE_MS = 1500


class Mesh:
    """One supervised mesh with a gateway, shared by the tests (started once)."""

    def __init__(self):
        self.dir = tempfile.mkdtemp(prefix="bidmesh-gateway-")
        (self.router_port, self.pub, self.collect, self.b1, self.b2, self.http_port,
         self.metrics_port) = free_ports(7)
        self.origin = "http://127.0.0.1:%d" % self.http_port
        self.users = os.path.join(self.dir, "users")
        nodes = router_and_two_bid_nodes("tcp://127.0.0.1:%d" % self.router_port, "tcp://127.0.0.1:%d" % self.b1,
                                         "tcp://127.0.0.1:%d" % self.b2)
        nodes.append({"name": "web", "kind": "gateway", "listen": "127.0.0.1:%d" % self.http_port,
                      "users_file": "users", "max_connections": MAX_CONNECTIONS,
                      "metrics": "127.0.0.1:%d" % self.metrics_port})
        self.config = write_mesh_toml(
            os.path.join(self.dir, "mesh.toml"), {"data_dir": "data", "heartbeat_interval_ms": 200},
            {"publish": "tcp://127.0.0.1:%d" % self.pub, "collect": "tcp://127.0.0.1:%d" % self.collect}, nodes)
        self.tokens = {}
        for name in ("alice", "bob"):
            self.tokens[name] = self.users_cli("add", name)
        self.supervisor = Supervised(BIN, self.config, self.dir, env={"BIDMESH_GATEWAY_HTTP_IDLE_MS": str(IDLE_MS)})
        try:
            self.supervisor.start(30 * SCALE)
            wait_for("gateway answers", 30 * SCALE, lambda: self.get("/")[0] == 200)
            wait_for("router answers", 30 * SCALE, lambda: self.cli("ping").returncode == 0)
        except Exception:
            self.stop()
            raise

    def cli(self, *args):
        return subprocess.run([os.path.join(BIN, "bidmesh"), "--endpoint", "tcp://127.0.0.1:%d" % self.router_port,
                               "--feed", "tcp://127.0.0.1:%d" % self.pub] + list(args),
                              capture_output=True, text=True, timeout=30)

    def must(self, *args):
        r = self.cli(*args)
        if r.returncode != 0:
            raise AssertionError("bidmesh %s: %d %s%s" % (" ".join(args), r.returncode, r.stdout, r.stderr))
        return r.stdout

    def gateway_pid(self):
        node = self.supervisor.node("web")
        return node["pid"] if node["state"] == "running" else None

    def request(self, method, path, body=None, headers=None, source=None):
        """One request on a fresh connection from the loopback address `source` (default
        127.0.0.1): the gateway's per-address limits see each source apart."""
        c = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=10,
                                       source_address=(source, 0) if source else None)
        try:
            c.request(method, path, body=body, headers=headers or {})
            r = c.getresponse()
            return r.status, dict((k.lower(), v) for k, v in r.getheaders()), r.read()
        finally:
            c.close()

    def get(self, path, headers=None):
        return self.request("GET", path, headers=headers)

    def post(self, path, obj, headers=None, source=None):
        h = {"Content-Type": "application/json"}
        h.update(headers or {})
        body = obj if isinstance(obj, (bytes, str)) else json.dumps(obj)
        return self.request("POST", path, body=body, headers=h, source=source)

    def try_signin(self, name, token, source=None):
        """POST /api/signin: (status, the JSON reply, the Set-Cookie header or None)."""
        status, headers, body = self.post("/api/signin", {"name": name, "token": token}, {"Origin": self.origin},
                                          source=source)
        return status, json.loads(body), headers.get("set-cookie")

    def signin(self, name, token=None, source=None):
        status, reply, set_cookie = self.try_signin(name, token or self.tokens[name], source)
        assert status == 200, (status, reply)
        return set_cookie.split(";")[0], reply["csrf"], set_cookie

    def users_cli(self, *args):
        """bidmesh-gateway-users ARGS --file <the gateway's users file>: its stdout."""
        return subprocess.run([os.path.join(BIN, "bidmesh-gateway-users")] + list(args) + ["--file", self.users],
                              check=True, capture_output=True, text=True, timeout=30).stdout.strip()

    def gateway_log(self):
        with open(os.path.join(self.dir, "data", "logs", "web.log"), errors="replace") as f:
            return f.read()

    def metric(self, sample):
        """The value of one sample of the gateway's /metrics, e.g. 'x_total{outcome="ok"}' (0 when absent)."""
        c = http.client.HTTPConnection("127.0.0.1", self.metrics_port, timeout=10)
        try:
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
        finally:
            c.close()
        for line in text.splitlines():
            if line.startswith(sample + " "):
                return float(line.split()[-1])
        return 0.0

    def rss_kb(self, pid):
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def stop(self):
        self.supervisor.stop()


MESH = None


def ws_url():
    return "ws://127.0.0.1:%d/ws" % MESH.http_port


async def ws_connect(origin=None, **kw):
    return await websockets.connect(ws_url(), origin=origin or MESH.origin, max_size=1 << 20, **kw)


async def recv_json(ws, timeout):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout))


def events_of(msg):
    """The events of one gateway message: an event, or a batch {"type": "events", "events": [...]}."""
    if msg.get("type") == "event":
        return [msg]
    if msg.get("type") == "events":
        assert len(msg["events"]) > 1, msg  # a lone event comes as "event"
        assert all(e["type"] == "event" for e in msg["events"]), msg
        return msg["events"]
    return []


async def events_until(ws, item, last_seq, timeout):
    """The events of `item` received until one with seq >= last_seq, in order."""
    got = []
    deadline = time.monotonic() + timeout
    while not got or got[-1]["seq"] < last_seq:
        msg = await recv_json(ws, max(0.01, deadline - time.monotonic()))
        got += [e for e in events_of(msg) if e["item"] == item]
    return got


class GatewayTest(unittest.TestCase):
    def setUp(self):
        self.pid = MESH.gateway_pid()
        self.assertIsNotNone(self.pid, "the gateway is running")

    def assert_alive(self):
        """The gateway still answers, and it is the same process."""
        status, _, _ = MESH.get("/api/session")
        self.assertEqual(status, 401)
        self.assertEqual(MESH.gateway_pid(), self.pid)

    # --- static files --------------------------------------------------------------------

    def test_static_files_and_headers(self):
        status, headers, body = MESH.get("/")
        self.assertEqual(status, 200)
        self.assertTrue(headers["content-type"].startswith("text/html"))
        self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assertEqual(headers["cache-control"], "no-cache")
        self.assertEqual(headers["content-security-policy"],
                         "default-src 'self'; connect-src 'self'; img-src 'self' http: https:; style-src 'self'; "
                         "script-src 'self'; frame-ancestors 'none'")
        with open(os.path.join(os.path.dirname(__file__), "..", "..", "web", "index.html"), "rb") as f:
            self.assertEqual(body, f.read())
        for name, ctype in (("app.js", "text/javascript"), ("style.css", "text/css")):
            if os.path.exists(os.path.join(os.path.dirname(__file__), "..", "..", "web", name)):
                status, headers, _ = MESH.get("/" + name)
                self.assertEqual(status, 200, name)
                self.assertTrue(headers["content-type"].startswith(ctype), headers["content-type"])
        for path in ("/../CMakeLists.txt", "/%2e%2e/CMakeLists.txt", "/..%2fCMakeLists.txt", "/web/index.html",
                     "/index.html/", "//etc/passwd", "/.hidden", "/nope.js"):
            status, headers, _ = MESH.get(path)
            self.assertEqual(status, 404, path)
            self.assertEqual(headers["x-content-type-options"], "nosniff")
        self.assert_alive()

    # --- the API ---------------------------------------------------------------------------

    def test_items_and_item_page(self):
        MESH.must("open", "gw-lamp", "--start", "100", "--increment", "5")
        MESH.must("bid", "gw-lamp", "carol", "120")
        status, _, body = MESH.get("/api/items/gw-lamp")
        self.assertEqual(status, 200, body)
        page = json.loads(body)
        self.assertEqual(page["item"]["item"], "gw-lamp")
        self.assertEqual(page["item"]["max"], 120)
        self.assertEqual(page["item"]["bidder"], "carol")
        self.assertEqual([e["event"] for e in page["history"]], ["open", "max"])
        self.assertEqual([e["seq"] for e in page["history"]], [1, 2])
        status, _, body = MESH.get("/api/items/no-such-item")
        self.assertEqual((status, json.loads(body)["error"]), (404, "not_found"))
        status, _, body = MESH.get("/api/items/bad%20name")
        self.assertEqual(status, 404)
        status, _, body = MESH.get("/api/items?status=open&limit=100")
        self.assertEqual(status, 200, body)
        listing = json.loads(body)
        self.assertEqual(set(listing), {"items", "cursor", "partial", "missing"})
        mine = [i for i in listing["items"] if i["item"] == "gw-lamp"]
        self.assertEqual(len(mine), 1, listing)
        self.assertEqual((mine[0]["max"], mine[0]["bidder"], mine[0]["status"]), (120, "carol", "open"))
        status, _, _ = MESH.get("/api/items?status=sideways")
        self.assertEqual(status, 400)
        status, _, _ = MESH.get("/api/items?limit=0")
        self.assertEqual(status, 400)

    def test_signin_and_session(self):
        status, _, _ = MESH.get("/api/session")
        self.assertEqual(status, 401)
        cookie, csrf, raw = MESH.signin("alice")
        self.assertIn("HttpOnly", raw)
        self.assertIn("SameSite=Strict", raw)
        self.assertIn("Path=/", raw)
        self.assertNotIn("Secure", raw)
        self.assertGreaterEqual(len(cookie.split("=", 1)[1]), 43)  # 256 bits in base64url
        status, _, body = MESH.get("/api/session", {"Cookie": cookie})
        self.assertEqual((status, json.loads(body)), (200, {"name": "alice", "csrf": csrf}))
        bad = [{"name": "alice", "token": MESH.tokens["bob"]}, {"name": "mallory", "token": MESH.tokens["bob"]},
               {"name": "alice", "token": ""}]
        answers = set()
        for creds in bad:
            status, _, body = MESH.post("/api/signin", creds)
            answers.add((status, body))
        self.assertEqual(len(answers), 1, answers)  # the same answer for a bad name and a bad token
        self.assertEqual(answers.pop()[0], 401)
        status, _, _ = MESH.post("/api/signin", {"name": "bob", "token": MESH.tokens["bob"]},
                                 {"Origin": "http://evil.example"})
        self.assertEqual(status, 403)
        # Sign-out needs the CSRF token, then the session is gone.
        status, _, _ = MESH.post("/api/signout", {}, {"Cookie": cookie})
        self.assertEqual(status, 403)
        status, _, _ = MESH.post("/api/signout", {}, {"Cookie": cookie, "X-CSRF-Token": csrf})
        self.assertEqual(status, 204)
        status, _, _ = MESH.get("/api/session", {"Cookie": cookie})
        self.assertEqual(status, 401)

    def test_users_file_reread_while_running(self):
        """docs/web.md "Tokens": the gateway re-reads its users file when it changes (checked at each
        sign-in) and on SIGHUP, with no restart. A person added signs in; removed, their sign-in is
        refused while their open session lasts; a file that does not load leaves the previous list
        in force, and says so in the log."""
        src = "127.0.0.3"  # an address of its own: the sign-in rate limit counts per address
        carol = MESH.users_cli("add", "carol")
        cookie, _, _ = MESH.signin("carol", carol, source=src)
        status, _, body = MESH.get("/api/session", {"Cookie": cookie})
        self.assertEqual((status, json.loads(body)["name"]), (200, "carol"))
        MESH.users_cli("remove", "carol")
        status, reply, set_cookie = MESH.try_signin("carol", carol, source=src)
        self.assertEqual((status, reply["error"], set_cookie), (401, "bad_credentials", None))
        self.assertEqual(MESH.get("/api/session", {"Cookie": cookie})[0], 200)  # until sign-out or restart
        with open(MESH.users) as f:
            good = f.read()
        try:
            with open(MESH.users, "a") as f:
                f.write("not a user line\n")
            MESH.signin("alice", source=src)
            self.assertEqual(MESH.try_signin("carol", carol, source=src)[0], 401)
            wait_for("the gateway's log saying the users file was not reloaded", 10 * SCALE,
                     lambda: "users file not reloaded" in MESH.gateway_log())
        finally:
            with open(MESH.users + ".tmp", "w") as f:
                f.write(good)
            os.chmod(MESH.users + ".tmp", 0o600)
            os.rename(MESH.users + ".tmp", MESH.users)
        # SIGHUP re-reads it too (before any sign-in has).
        dave = MESH.users_cli("add", "dave")
        count = len(MESH.users_cli("list").split())
        MESH.supervisor.ctl("signal", "web", "HUP")
        wait_for("the gateway's log counting %d users after SIGHUP" % count, 10 * SCALE,
                 lambda: "users: %d from" % count in MESH.gateway_log())
        MESH.signin("dave", dave, source=src)
        self.assert_alive()

    def test_users_file_replaced_with_same_size_and_time(self):
        """A users file replaced by another of the same size and modification time (a remove and an
        add within one clock tick, or a restored copy) is still re-read: the gateway also compares
        the file's inode, which every replacement by rename changes."""
        src = "127.0.0.6"  # an address of its own: the sign-in rate limit counts per address
        erin = MESH.users_cli("add", "erin")
        MESH.signin("erin", erin, source=src)  # read with erin in it
        before = os.stat(MESH.users)
        other = MESH.users + ".other"
        fran = subprocess.run([os.path.join(BIN, "bidmesh-gateway-users"), "add", "fran", "--file", other],
                              check=True, capture_output=True, text=True, timeout=30).stdout.strip()
        with open(other) as f:
            fran_line = [l for l in f.read().splitlines() if l.startswith("fran:")][0]
        with open(MESH.users) as f:
            lines = f.read().splitlines()
        replaced = "\n".join(fran_line if l.startswith("erin:") else l for l in lines) + "\n"
        with open(MESH.users + ".tmp", "w") as f:
            f.write(replaced)
        os.chmod(MESH.users + ".tmp", 0o600)
        os.rename(MESH.users + ".tmp", MESH.users)
        os.utime(MESH.users, ns=(before.st_atime_ns, before.st_mtime_ns))
        after = os.stat(MESH.users)
        self.assertEqual((after.st_size, after.st_mtime_ns), (before.st_size, before.st_mtime_ns))
        self.assertNotEqual(after.st_ino, before.st_ino)
        MESH.signin("fran", fran, source=src)
        self.assertEqual(MESH.try_signin("erin", erin, source=src)[0], 401)
        os.remove(other)
        self.assert_alive()

    def test_signin_rate_limit(self):
        """docs/web.md: past 10 sign-in tries a minute from one address, 429 `rate_limited`, even with
        the right token; another address is not held back."""
        src = "127.0.0.4"
        limited = 'bidmesh_gateway_signins_total{outcome="rate_limited"}'
        before = MESH.metric(limited)
        for i in range(10):
            status, reply, _ = MESH.try_signin("alice", "wrong-%d" % i, source=src)
            self.assertEqual((status, reply["error"]), (401, "bad_credentials"), i)
        status, reply, set_cookie = MESH.try_signin("alice", MESH.tokens["alice"], source=src)
        self.assertEqual((status, reply["error"], set_cookie), (429, "rate_limited", None))
        self.assertTrue(reply["message"], reply)
        self.assertEqual(MESH.try_signin("alice", MESH.tokens["alice"], source=src)[0], 429)
        MESH.signin("alice", source="127.0.0.5")
        self.assertEqual(MESH.metric(limited), before + 2)
        self.assert_alive()

    def test_hostile_json_bodies(self):
        """The JSON reader's bounds (nlohmann-json under gateway/json_input.h): a nesting bomb, a
        duplicate key, invalid UTF-8 and a lone surrogate inside a string, numbers past uint64
        are each a 400, and the same process then takes a good bid."""
        MESH.must("open", "gw-json", "--start", "10")
        cookie, csrf, _ = MESH.signin("alice")
        h = {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": MESH.origin}
        hostile = [
            # Nesting bombs inside an otherwise good bid (so only the depth bound refuses them).
            b'{"item":"gw-json","amount":20,"x":' + b'{"a":' * 600 + b"1" + b"}" * 601,
            b'{"item":"gw-json","amount":20,"x":' + b"[" * 1300 + b"]" * 1300 + b"}",
            b'{"item":"gw-json","amount":20,"amount":11}',                # which amount?
            b'{"item":"gw-json","amount":20,"id":"\xff\xfe"}',            # not UTF-8
            b'{"item":"gw-json","amount":20,"id":"\\ud800"}',           # a lone surrogate
            b'{"item":"gw-json","amount":18446744073709551616}',          # 2^64
            b'{"item":"gw-json","amount":1' + b"0" * 400 + b"}",          # past any double
            b'{"item":"gw-json","amount":1e999999}',
        ]
        for body in hostile:
            status, _, reply = MESH.post("/api/bid", body, h)
            self.assertEqual((status, json.loads(reply)["error"]), (400, "bad_request"), body[:60])
        status, _, reply = MESH.post("/api/bid", {"item": "gw-json", "amount": 20}, h)
        self.assertEqual((status, json.loads(reply)["ok"]), (200, True), reply)
        self.assert_alive()

    def test_bid_with_and_without_csrf(self):
        MESH.must("open", "gw-vase", "--start", "100", "--increment", "5")
        status, _, _ = MESH.post("/api/bid", {"item": "gw-vase", "amount": 120})
        self.assertEqual(status, 401)
        cookie, csrf, _ = MESH.signin("bob")
        status, _, body = MESH.post("/api/bid", {"item": "gw-vase", "amount": 120}, {"Cookie": cookie})
        self.assertEqual((status, json.loads(body)["error"]), (403, "csrf"))
        status, _, body = MESH.post("/api/bid", {"item": "gw-vase", "amount": 120},
                                    {"Cookie": cookie, "X-CSRF-Token": "x" * len(csrf)})
        self.assertEqual(status, 403)
        status, _, body = MESH.post("/api/bid", {"item": "gw-vase", "amount": 120},
                                    {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": "http://evil.example"})
        self.assertEqual(status, 403)
        h = {"Cookie": cookie, "X-CSRF-Token": csrf, "Origin": MESH.origin}
        status, _, body = MESH.post("/api/bid", {"item": "gw-vase", "amount": 150, "id": "page-1"}, h)
        self.assertEqual(status, 200, body)
        reply = json.loads(body)
        self.assertEqual((reply["ok"], reply["leading"], reply["max"], reply["seq"]), (True, True, 150, 2))
        # A retry with the same id is the same bid, answered again, not counted twice.
        status, _, body = MESH.post("/api/bid", {"item": "gw-vase", "amount": 150, "id": "page-1"}, h)
        self.assertEqual(json.loads(body)["seq"], 2)
        self.assertIn("max 150 by bob", MESH.must("get", "gw-vase"))
        self.assertIn("1 bid", MESH.must("get", "gw-vase"))
        status, _, body = MESH.post("/api/bid", {"item": "gw-vase", "amount": 120}, h)
        reply = json.loads(body)
        self.assertEqual((reply["ok"], reply["error"], reply["max"]), (False, "too_low", 150))
        self.assertEqual(reply["message"], "Your bid of 120 is too low: the price is now 150; bid at least 155.")
        MESH.must("close", "gw-vase")
        status, _, body = MESH.post("/api/bid", {"item": "gw-vase", "amount": 500}, h)
        reply = json.loads(body)
        self.assertEqual((reply["error"], reply["message"]), ("closed", "This auction has closed."))
        for bad in ({"item": "gw-vase"}, {"item": "../x", "amount": 5}, {"item": "gw-vase", "amount": -1},
                    {"item": "gw-vase", "amount": 1.5}, [1, 2]):
            status, _, _ = MESH.post("/api/bid", bad, h)
            self.assertEqual(status, 400, bad)

    # --- WebSocket ---------------------------------------------------------------------------

    def test_cross_origin_websocket_refused(self):
        async def run():
            with self.assertRaises(websockets.exceptions.InvalidStatusCode) as caught:
                await ws_connect(origin="http://evil.example")
            self.assertEqual(caught.exception.status_code, 403)
        asyncio.run(run())
        self.assert_alive()

    def test_watch_sees_cli_bid_within_one_second(self):
        MESH.must("open", "gw-clock", "--start", "10")

        async def run():
            ws = await ws_connect()
            await ws.send(json.dumps({"type": "watch", "items": ["gw-clock"]}))
            all_ws = await ws_connect()
            await all_ws.send(json.dumps({"type": "watch", "all": True}))
            await asyncio.sleep(0.2)  # the watch is read before the bid is sent (ordering, not a wait for a condition)
            sent = time.monotonic()
            MESH.must("bid", "gw-clock", "dave", "42")
            for sock in (ws, all_ws):
                msg = (await events_until(sock, "gw-clock", 2, 1.0 * SCALE))[0]
                self.assertEqual((msg["type"], msg["event"], msg["seq"], msg["amount"], msg["bidder"]),
                                 ("event", "max", 2, 42, "dave"))
            self.assertLess(time.monotonic() - sent, 1.0 * SCALE + 0.5)
            await ws.close()
            await all_ws.close()
        asyncio.run(run())

    def test_watch_after_gets_missed_events(self):
        MESH.must("open", "gw-past", "--start", "1")
        for amount in range(10, 60, 10):
            MESH.must("bid", "gw-past", "erin", str(amount))  # seqs 2..6

        async def run():
            ws = await ws_connect()
            await ws.send(json.dumps({"type": "watch", "items": ["gw-past"], "after": {"gw-past": 2}}))
            got = await events_until(ws, "gw-past", 6, 3 * SCALE)
            self.assertEqual([m["seq"] for m in got], [3, 4, 5, 6])
            self.assertEqual([m["amount"] for m in got], [20, 30, 40, 50])
            MESH.must("bid", "gw-past", "erin", "70")
            got = await events_until(ws, "gw-past", 7, 2 * SCALE)
            self.assertEqual([m["seq"] for m in got], [7])
            await ws.close()
        asyncio.run(run())

    def test_bad_socket_messages(self):
        async def run():
            ws = await ws_connect()
            await ws.send("not json")
            self.assertEqual((await recv_json(ws, 2 * SCALE))["type"], "error")
            await ws.send(b"\x00\x01binary")
            self.assertEqual((await recv_json(ws, 2 * SCALE))["type"], "error")
            await ws.send(json.dumps({"type": "watch", "items": ["../etc"]}))
            self.assertEqual((await recv_json(ws, 2 * SCALE))["type"], "error")
            await ws.send(json.dumps({"type": "dance"}))
            self.assertEqual((await recv_json(ws, 2 * SCALE))["type"], "error")
            await ws.send("[" * 100)
            self.assertEqual((await recv_json(ws, 2 * SCALE))["type"], "error")
            # The fifth bad message: closed with 1008 (policy).
            with self.assertRaises(websockets.exceptions.ConnectionClosed) as closed:
                while True:
                    await recv_json(ws, 2 * SCALE)
            self.assertEqual(closed.exception.code, 1008)
            # A frame over the 4 KiB cap: closed with 1009 (too big).
            ws = await ws_connect()
            await ws.send(json.dumps({"type": "watch", "items": ["x" * 5000]}))
            with self.assertRaises(websockets.exceptions.ConnectionClosed) as closed:
                await recv_json(ws, 2 * SCALE)
            self.assertEqual(closed.exception.code, 1009)
        asyncio.run(run())
        self.assert_alive()

    def flood(self, item, count):
        """`count` bids on `item` (seqs 2..count+1), pipelined on one DEALER, 200 in flight at
        most (the router's per-client bounds). Blocking: run it in a thread to read meanwhile."""
        import zmq
        import msgpack
        ctx = zmq.Context()
        s = ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect("tcp://127.0.0.1:%d" % MESH.router_port)
        replies = 0
        for window in range(0, count, 200):
            for i in range(window, min(count, window + 200)):
                s.send_multipart([b"", msgpack.packb({"op": "bid", "id": "%s-%d" % (item, i), "item": item,
                                                      "bidder": "frank", "amount": i + 1})])
            for _ in range(window, min(count, window + 200)):
                if not s.poll(int(10000 * SCALE)):
                    break
                s.recv_multipart()
                replies += 1
        s.close()
        ctx.term()
        self.assertEqual(replies, count)

    def raw_upgrade_and_watch(self):
        """The bytes of a hand-made WebSocket upgrade, and a function making a watch frame."""
        upgrade = ("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
                   "Origin: %s\r\n\r\n" % MESH.origin).encode()

        def frame(watch):
            payload = json.dumps(watch).encode()
            return bytes([0x81, 0x80 | len(payload)]) + b"\0\0\0\0" + payload  # masked with a zero key
        return upgrade, frame

    async def raw_socket(self, watch):
        """A WebSocket made by hand that sends `watch` and then reads only when told: (reader, writer)."""
        upgrade, frame = self.raw_upgrade_and_watch()
        reader, writer = await asyncio.open_connection("127.0.0.1", MESH.http_port, limit=1 << 16)
        writer.write(upgrade)
        head = await reader.readuntil(b"\r\n\r\n")
        self.assertIn(b"101", head.split(b"\r\n")[0])
        writer.write(frame(watch))
        await writer.drain()
        return reader, writer

    def stalled_socket(self, watch):
        """A blocking socket made by hand, with a 4 KiB receive buffer, that sends `watch` and
        reads nothing until the test says so: the gateway's writes to it back up at once."""
        upgrade, frame = self.raw_upgrade_and_watch()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.settimeout(5 * SCALE)
        sock.connect(("127.0.0.1", MESH.http_port))
        sock.sendall(upgrade)
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1)  # byte by byte: nothing past the headers is taken from the socket
        self.assertIn(b"101", head.split(b"\r\n")[0])
        sock.sendall(frame(watch))
        return sock

    async def read_until_resync(self, reader, timeout):
        """The raw bytes a hand-made socket reads until a resync message (or the timeout)."""
        data = b""
        deadline = time.monotonic() + timeout
        while b'"resync"' not in data and time.monotonic() < deadline:
            chunk = await asyncio.wait_for(reader.read(1 << 16), max(0.01, deadline - time.monotonic()))
            if not chunk:
                break
            data += chunk
        return data

    def test_slow_reader_gets_resync_and_memory_stays_bounded(self):
        MESH.must("open", "gw-flood", "--start", "1")
        rss_before = MESH.rss_kb(self.pid)
        self.flood("gw-flood", 3000)

        async def run():
            # A reader that reads nothing after the handshake, and asks for all 3000 events at once:
            # a history page of 1000 lands in a queue of 256.
            reader, writer = await self.raw_socket({"type": "watch", "items": ["gw-flood"], "after": {"gw-flood": 0}})
            data = await self.read_until_resync(reader, 10 * SCALE)
            writer.close()
            return data
        data = asyncio.run(run())
        self.assertIn(b'{"type":"resync","reason":"slow"}', data)
        self.assertLess(MESH.rss_kb(self.pid) - rss_before, 64 * 1024)  # KiB: no unbounded queue
        self.assertGreaterEqual(MESH.metric("bidmesh_gateway_ws_resyncs_total"), 1)
        self.assert_alive()

    def test_watch_all_shared_batches_keep_each_socket_apart(self):
        """Sockets watching everything share each flush tick's batch: a stalled one overflows its
        own queue into resync while a reading one gets every event once, in order, unharmed."""
        MESH.must("open", "gw-fan", "--start", "1")
        resyncs_before = MESH.metric("bidmesh_gateway_ws_resyncs_total")

        stalled = self.stalled_socket({"type": "watch", "all": True})

        async def run():
            fast = await ws_connect()
            await fast.send(json.dumps({"type": "watch", "all": True}))
            await asyncio.sleep(0.2)  # both watches are read before the flood (ordering, not a wait for a condition)
            # More than the kernel holds for the stalled socket (its send buffer grows to a few MB
            # on loopback), so the gateway's write to it stays in flight and its queue fills.
            flood = asyncio.get_running_loop().run_in_executor(None, self.flood, "gw-fan", FAN_EVENTS)
            got = await events_until(fast, "gw-fan", FAN_EVENTS + 1, 120 * SCALE)
            await flood
            await fast.close()
            return got
        try:
            got = asyncio.run(run())
            # The stalled socket reads now: what it gets ends with its resync.
            data = b""
            deadline = time.monotonic() + 20 * SCALE
            while b'"resync"' not in data and time.monotonic() < deadline:
                try:
                    chunk = stalled.recv(1 << 16)
                except socket.timeout:
                    break
                if not chunk:
                    break
                data += chunk
        finally:
            stalled.close()
        self.assertTrue(b'{"type":"resync","reason":"slow"}' in data, "no resync in %d bytes" % len(data))
        self.assertEqual([m["seq"] for m in got], list(range(2, FAN_EVENTS + 2)))
        self.assertEqual([m["amount"] for m in got], list(range(1, FAN_EVENTS + 1)))
        self.assertGreater(MESH.metric("bidmesh_gateway_ws_resyncs_total"), resyncs_before)
        self.assert_alive()

    # --- limits and hostile input ------------------------------------------------------------

    def raw(self, data, read_timeout=5.0):
        """Sends raw bytes on a fresh connection; what came back until the gateway closed."""
        s = socket.create_connection(("127.0.0.1", MESH.http_port), timeout=read_timeout * SCALE)
        try:
            s.sendall(data)
            out = b""
            while True:
                try:
                    chunk = s.recv(65536)
                except (ConnectionResetError, socket.timeout):
                    break
                if not chunk:
                    break
                out += chunk
            return out
        finally:
            s.close()

    def test_hostile_http(self):
        cases = [
            (b"GARBAGE\r\n\r\n", b"400"),
            (b"GET / HTTP/9.9\r\n\r\n", b"400"),
            (b"GET /\x00 HTTP/1.1\r\nHost: x\r\n\r\n", b"400"),
            (b"GET / HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", b"431"),
            (b"POST /api/signin HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"{" * 5000, b"413"),
            (b"POST /api/signin HTTP/1.1\r\nHost: x\r\nContent-Length: 9\r\nConnection: close\r\n\r\nnot json!", b"400"),
            (b"POST /api/signin HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
             b"2000\r\n" + b"x" * 8192 + b"\r\n0\r\n\r\n", b"413"),
            (b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
            (b"GET /%2e%2e/%2e%2e/etc/passwd HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", b"404"),
            (b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
             b"Sec-WebSocket-Version: 13\r\nOrigin: " + MESH.origin.encode() + b"\r\n\r\n", b"400"),
        ]
        for data, want in cases:
            got = self.raw(data)
            self.assertTrue(got.startswith(b"HTTP/1.1 " + want), (data[:60], got[:200]))
        # Slowloris: a request that never ends is closed after the idle timeout.
        s = socket.create_connection(("127.0.0.1", MESH.http_port), timeout=10 * SCALE)
        s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")
        started = time.monotonic()
        try:
            while s.recv(4096):
                pass
        except ConnectionResetError:
            pass
        self.assertLess(time.monotonic() - started, IDLE_MS / 1000 * 3 * SCALE + 1)
        s.close()
        self.assert_alive()

    def test_connection_cap(self):
        held = []
        try:
            for _ in range(MAX_CONNECTIONS + 5):
                s = socket.create_connection(("127.0.0.1", MESH.http_port), timeout=5 * SCALE)
                held.append(s)
            # The cap's excess got 503 and a close; the first ones are served.
            got = b""
            extra = held[-1]
            extra.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            while True:
                chunk = extra.recv(65536)
                if not chunk:
                    break
                got += chunk
            self.assertTrue(got.startswith(b"HTTP/1.1 503"), got[:100])
            self.assertEqual(json.loads(got.partition(b"\r\n\r\n")[2])["error"], "busy")
        finally:
            for s in held:
                s.close()
        wait_for("a slot after the close", 10 * SCALE, lambda: MESH.get("/")[0] == 200)
        self.assert_alive()

    def open_connections(self):
        return (MESH.metric('bidmesh_gateway_connections{kind="http"}'),
                MESH.metric('bidmesh_gateway_connections{kind="websocket"}'))

    def test_connection_cap_counts_websockets(self):
        """docs/web.md: max_connections counts HTTP and WebSocket connections together; past it a
        connection gets 503 `busy` and is closed, an upgrade too; closing one frees a slot."""
        wait_for("no connection open", 10 * SCALE, lambda: self.open_connections() == (0, 0))
        refused = MESH.metric("bidmesh_gateway_connections_refused_total")

        def refused_http():
            # Nothing sent: the gateway answers a connection over the cap at once, then closes it.
            s = socket.create_connection(("127.0.0.1", MESH.http_port), timeout=5 * SCALE)
            got = b""
            try:
                while True:
                    chunk = s.recv(65536)
                    if not chunk:
                        return got
                    got += chunk
            finally:
                s.close()

        async def run():
            sockets = []
            try:
                for _ in range(MAX_CONNECTIONS):
                    sockets.append(await ws_connect())
                self.assertEqual(self.open_connections(), (0, MAX_CONNECTIONS))
                head, _, body = refused_http().partition(b"\r\n\r\n")
                self.assertTrue(head.startswith(b"HTTP/1.1 503"), head)
                self.assertIn(b"\r\nConnection: close", head)
                self.assertEqual(json.loads(body)["error"], "busy")
                with self.assertRaises(websockets.exceptions.InvalidStatusCode) as caught:
                    await ws_connect()
                self.assertEqual(caught.exception.status_code, 503)
                # The sockets within the cap still serve.
                await sockets[0].send(json.dumps({"type": "dance"}))
                self.assertEqual((await recv_json(sockets[0], 5 * SCALE))["type"], "error")
                await sockets.pop().close()
                wait_for("a slot after one socket closed", 10 * SCALE, lambda: MESH.get("/")[0] == 200)
            finally:
                for ws in sockets:
                    await ws.close()
        asyncio.run(run())
        self.assertEqual(MESH.metric("bidmesh_gateway_connections_refused_total"), refused + 2)
        wait_for("every socket closed", 10 * SCALE, lambda: self.open_connections() == (0, 0))
        self.assert_alive()


class GatewayConfigTest(unittest.TestCase):
    """Protected mode and the gateway's own keys, as bidmesh-gateway reads them (exit 100)."""

    def refusal(self, node_lines, top=""):
        folder = tempfile.mkdtemp(prefix="bidmesh-gateway-config-")
        try:
            config = os.path.join(folder, "mesh.toml")
            with open(config, "w") as f:
                f.write(top + """data_dir = "data"
[feed]
publish = "tcp://127.0.0.1:1"
collect = "tcp://127.0.0.1:2"
[[node]]
name = "router"
kind = "router"
listen = "tcp://127.0.0.1:3"
[[node]]
name = "bid-1"
kind = "bid"
listen = "tcp://127.0.0.1:4"
slots = ["0-16383"]
[[node]]
name = "web"
kind = "gateway"
""" + node_lines)
            r = subprocess.run([os.path.join(BIN, "bidmesh-gateway"), "--config", config, "--name", "web"],
                               capture_output=True, text=True, timeout=30)
            self.assertEqual(r.returncode, 100, r.stderr)
            return r.stderr
        finally:
            shutil.rmtree(folder, ignore_errors=True)

    def test_refusals(self):
        err = self.refusal('listen = "0.0.0.0:8080"\nusers_file = "u"\n')
        self.assertIn("may serve a gateway only on loopback", err)
        self.assertIn("is required", self.refusal('listen = "127.0.0.1:8080"\n'))
        self.assertIn("unknown", self.refusal('listen = "127.0.0.1:8080"\nusers_file = "u"\nslots = ["0-1"]\n').lower())
        self.assertIn("origin", self.refusal('listen = "127.0.0.1:8080"\nusers_file = "u"\nallowed_origins = ["evil"]\n'))
        self.assertIn("security", self.refusal('listen = "127.0.0.1:8080"\nusers_file = "u"\nclient_certificate = "k"\n'))
        self.assertIn("no gateway named", subprocess.run(
            [os.path.join(BIN, "bidmesh-gateway"), "--config", MESH.config, "--name", "router"],
            capture_output=True, text=True, timeout=30).stderr)


class GatewayRestartTest(unittest.TestCase):
    """Last: the gateway is killed, the supervisor restarts it, a page catches up."""

    def test_kill_gateway_and_reconnect_with_after(self):
        MESH.must("open", "gw-phoenix", "--start", "1")
        pid = MESH.gateway_pid()

        async def watch_and_kill():
            ws = await ws_connect()
            await ws.send(json.dumps({"type": "watch", "items": ["gw-phoenix"]}))
            await asyncio.sleep(0.2)  # the watch is read before the bid (ordering)
            MESH.must("bid", "gw-phoenix", "gina", "5")
            got = await events_until(ws, "gw-phoenix", 2, 2 * SCALE)
            os.kill(pid, signal.SIGKILL)
            # Bids while the gateway is down: the reconnecting page must get them.
            for amount in (6, 7, 8):
                MESH.must("bid", "gw-phoenix", "gina", str(amount))  # seqs 3..5
            wait_for("gateway restarted", 30 * SCALE,
                     lambda: MESH.gateway_pid() not in (None, pid) and MESH.get("/")[0] == 200)
            ws = await ws_connect()
            await ws.send(json.dumps({"type": "watch", "items": ["gw-phoenix"], "after": {"gw-phoenix": got[-1]["seq"]}}))
            MESH.must("bid", "gw-phoenix", "gina", "9")  # seq 6, live
            later = await events_until(ws, "gw-phoenix", 6, 5 * SCALE)
            self.assertEqual([m["seq"] for m in got + later], [2, 3, 4, 5, 6])
            await ws.close()
        asyncio.run(watch_and_kill())


def main():
    global BIN, MESH
    parser = argparse.ArgumentParser()
    parser.add_argument("--bin-dir", required=True)
    args, rest = parser.parse_known_args()
    BIN = os.path.abspath(args.bin_dir)
    MESH = Mesh()
    ok = False
    try:
        loader = unittest.TestLoader()
        suite = unittest.TestSuite([loader.loadTestsFromTestCase(GatewayTest),
                                    loader.loadTestsFromTestCase(GatewayConfigTest),
                                    loader.loadTestsFromTestCase(GatewayRestartTest)])
        if rest:
            suite = unittest.TestSuite([loader.loadTestsFromNames(rest, sys.modules[__name__])])
        ok = unittest.TextTestRunner(verbosity=2).run(suite).wasSuccessful()
    finally:
        MESH.stop()
        if not ok:
            print(log_tails(MESH.dir), file=sys.stderr)
        shutil.rmtree(MESH.dir, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
