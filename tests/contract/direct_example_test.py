#!/usr/bin/python3
"""The Python direct client of docs/protocol.md ("Direct clients (v1.2)"), run as printed there
against a real mesh (contract_test.py's: a router and two bid nodes with client endpoints).

It must route each item to its owner (checked in the nodes' answers: a request sent to the wrong
node would come back `moved`), follow `moved` from a stale map, and fall back to the router when
the owner's endpoint does not answer.

Run: /usr/bin/python3 tests/contract/direct_example_test.py --bin-dir build/bin
"""
import argparse
import os
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import contract_test as ct  # noqa: E402  (the mesh harness)

DOC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "docs", "protocol.md")


def example_source():
    text = open(DOC).read()
    section = text[text.index("## Direct clients (v1.2)"):]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin-dir", required=True)
    ct.BIN_DIR = os.path.abspath(ap.parse_args().bin_dir)
    src = example_source()
    assert len(src.splitlines()) < 40, "the doc's example is %d lines" % len(src.splitlines())
    ns = {}
    exec(compile(src, "docs/protocol.md example", "exec"), ns)
    mesh = ct.Mesh()
    try:
        mesh.start_all()
        client = ns["DirectClient"](mesh.router_endpoint)
        assert {e for _, _, e in client.map} == set(mesh.client_endpoints.values()), client.map
        for node in ("bid-1", "bid-2"):
            item = ct.item_on(node, "ex")
            rep = client.call({"op": "open", "id": "ex-open-" + item, "item": item})
            assert rep["ok"], rep
            rep = client.call({"op": "bid", "id": "ex-bid-" + item, "item": item, "bidder": "ann", "amount": 3})
            assert rep["ok"] and rep["amount"] == 3, rep
        # A stale map (every slot on bid-1): bid-1 answers `moved` for bid-2's items, the client
        # refreshes and gets its answer from bid-2 with the same id.
        item = ct.item_on("bid-2", "stale")
        client.map = [(0, 16383, mesh.client_endpoints["bid-1"])]
        rep = client.call({"op": "open", "id": "ex-stale", "item": item})
        assert rep["ok"], rep
        assert len(client.map) == 2, client.map
        # The owner's endpoint does not answer: the router does.
        client.map = [(0, 16383, "tcp://127.0.0.1:%d" % ct.free_port())]
        client.timeout = 300
        rep = client.call({"op": "get", "id": "ex-fallback", "item": item})
        assert rep["ok"] and rep["status"] == "open", rep
    except BaseException:
        sys.stderr.write(mesh.logs())
        raise
    finally:
        mesh.stop()
    print("direct client example: ok")


if __name__ == "__main__":
    main()
