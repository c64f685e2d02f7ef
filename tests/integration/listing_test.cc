// `list` through real processes (docs/protocol.md, "Listing"): a router and three bid nodes on
// loopback, items opened on each with various deadlines, listed page by page through the router
// (merged order and completeness against what was opened), closed ones listed, a bid node killed
// (-9: partial pages naming it, the others' items all there) and restarted (complete again), a
// bid node's own client endpoint (its items only, partial), and `bidmesh list`.
#include <catch2/catch.hpp>

#include <signal.h>

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "client/client.h"
#include "protocol/clock.h"
#include "protocol/listing.h"
#include "protocol/messages.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

constexpr int kNodes = 3;
constexpr int kItemsPerNode = 17;

ListPage list_page(Client& c, bool closed, uint64_t limit, const std::string& cursor) {
  Request r;
  r.op = Op::list;
  r.id = c.next_id();
  r.list_closed = closed;
  r.limit = limit;
  r.cursor = cursor;
  auto raw = c.call_raw(encode_request(r));
  REQUIRE(raw);
  auto page = decode_list_ok(*raw);
  INFO(msgpack_to_json(*raw));
  REQUIRE(page);
  return *page;
}

struct Listed {
  std::vector<ListKey> keys;
  std::set<std::string> missing;  // over every page
  bool any_partial = false;
  bool all_partial = true;
};

// Every page of a status; checks each page's bound and the strict order across pages.
Listed list_all(Client& c, bool closed, uint64_t limit) {
  Listed out;
  std::string cursor;
  for (int pages = 0; pages < 200; ++pages) {
    const ListPage page = list_page(c, closed, limit, cursor);
    CHECK(page.entries.size() <= limit);
    out.any_partial = out.any_partial || page.partial;
    out.all_partial = out.all_partial && page.partial;
    CHECK(page.partial == !page.missing.empty());
    out.missing.insert(page.missing.begin(), page.missing.end());
    for (const ListEntry& e : page.entries) {
      if (!out.keys.empty()) CHECK(list_key_less(out.keys.back(), e.key));
      out.keys.push_back(e.key);
    }
    if (!page.cursor) return out;
    cursor = *page.cursor;
  }
  FAIL("the cursor never ended");
  return out;
}

std::vector<ListKey> sorted(std::vector<ListKey> keys) {
  std::sort(keys.begin(), keys.end(), list_key_less);
  return keys;
}

}  // namespace

TEST_CASE("list through the router merges every bid node, and a node down makes the page partial", "[v2][list]") {
  MeshOptions options;
  options.bid_nodes = kNodes;
  options.client_listen = true;
  // Room for a loaded machine: a healthy node's page must not be late (that would be partial).
  options.request_timeout_ms = 2000;
  TestMesh mesh(options);
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 5000, 2);

  // 51 items, 17 per node: deadlines in seven groups (ties broken by name), every sixth none.
  const uint64_t base = unix_now_ms() + 3'600'000;
  std::vector<ListKey> opened;
  std::vector<int> node_of;
  for (int n = 0; n < kItemsPerNode; ++n) {
    for (int i = 0; i < kNodes; ++i) {
      const int k = n * kNodes + i;
      Request open = make_request(Op::open, mesh.item_on_node(i, n));
      if (k % 6 != 0) open.closes_at = base + static_cast<uint64_t>(k % 7) * 1000;
      if (k % 4 == 0) open.title = "Lot " + std::to_string(k);
      REQUIRE(must_call(c, open).ok);
      opened.push_back(ListKey{false, open.closes_at, open.item});
      node_of.push_back(i);
    }
  }

  SECTION("pages of 7 give every open item once, in the contract's order") {
    const Listed all = list_all(c, false, 7);
    CHECK_FALSE(all.any_partial);
    CHECK(all.keys == sorted(opened));
    CHECK(list_all(c, true, 7).keys.empty());
    // A page of 100 holds all 51 and says there is no next page.
    const ListPage one = list_page(c, false, 100, "");
    CHECK(one.entries.size() == opened.size());
    CHECK_FALSE(one.cursor);
  }

  SECTION("closed items move to the closed list") {
    std::vector<ListKey> open, closed;
    for (std::size_t k = 0; k < opened.size(); ++k) {
      if (k % 5 == 2) {
        REQUIRE(must_call(c, make_request(Op::close, opened[k].item)).ok);
        closed.push_back(ListKey{true, opened[k].closes_at, opened[k].item});
      } else {
        open.push_back(opened[k]);
      }
    }
    CHECK(list_all(c, true, 7).keys == sorted(closed));
    CHECK(list_all(c, false, 7).keys == sorted(open));
  }

  SECTION("a bid node killed: partial pages name it, the others' items are all there; restarted: complete") {
    const std::string down = mesh.bid_node_name(1);
    mesh.kill_node(down);
    std::vector<ListKey> others;
    for (std::size_t k = 0; k < opened.size(); ++k)
      if (node_of[k] != 1) others.push_back(opened[k]);
    const Listed partial = list_all(c, false, 7);
    CHECK(partial.all_partial);
    CHECK(partial.missing == std::set<std::string>{down});
    CHECK(partial.keys == sorted(others));

    // `bidmesh list` says so and exits 3.
    const RunResult cli = run_program({std::string(BIDMESH_BIN_DIR) + "/bidmesh", "--endpoint", mesh.request_endpoint(),
                                       "list", "--limit", "7", "--all"});
    INFO(cli.out);
    CHECK(cli.exit_code == 3);
    CHECK(cli.out.find("partial: node " + down + " did not answer") != std::string::npos);

    mesh.start_node(down);
    REQUIRE(mesh.wait_node_serving(1, 20s));
    const Listed again = list_all(c, false, 7);
    CHECK_FALSE(again.any_partial);
    CHECK(again.keys == sorted(opened));
  }

  SECTION("a bid node that hangs (SIGSTOP) is missing after request_timeout_ms, its late pages dropped") {
    const std::string hung = mesh.bid_node_name(2);
    mesh.process(hung)->signal(SIGSTOP);
    std::vector<ListKey> others;
    for (std::size_t k = 0; k < opened.size(); ++k)
      if (node_of[k] != 2) others.push_back(opened[k]);
    const auto started = std::chrono::steady_clock::now();
    const ListPage first = list_page(c, false, 20, "");
    CHECK(std::chrono::steady_clock::now() - started >= 1900ms);  // request_timeout_ms = 2000
    CHECK(first.partial);
    CHECK(first.missing == std::vector<std::string>{hung});
    const Listed rest = list_all(c, false, 20);
    CHECK(rest.missing == std::set<std::string>{hung});
    CHECK(rest.keys == sorted(others));
    mesh.process(hung)->signal(SIGCONT);
    // Its late replies find no pending entry; the next pages are whole again.
    REQUIRE(mesh.wait_node_serving(2, 20s));
    CHECK(list_all(c, false, 20).keys == sorted(opened));
  }

  SECTION("a bid node's own client endpoint lists its items only, partial, naming the others") {
    Client direct(ctx, mesh.client_endpoint(0), 5000, 2);
    std::vector<ListKey> own;
    for (std::size_t k = 0; k < opened.size(); ++k)
      if (node_of[k] == 0) own.push_back(opened[k]);
    const Listed listed = list_all(direct, false, 7);
    CHECK(listed.all_partial);
    CHECK(listed.missing == std::set<std::string>{mesh.bid_node_name(1), mesh.bid_node_name(2)});
    CHECK(listed.keys == sorted(own));
  }

  SECTION("bidmesh list prints one line per item and pages with --all") {
    const std::string bin = std::string(BIDMESH_BIN_DIR) + "/bidmesh";
    const RunResult all = run_program({bin, "--endpoint", mesh.request_endpoint(), "list", "--limit", "7", "--all"});
    INFO(all.out);
    REQUIRE(all.exit_code == 0);
    CHECK(static_cast<std::size_t>(std::count(all.out.begin(), all.out.end(), '\n')) == opened.size());
    const std::vector<ListKey> order = sorted(opened);
    CHECK(all.out.find("item " + order.front().item + ": open") == 0);
    CHECK(all.out.find("title: Lot 0") != std::string::npos);

    const RunResult one = run_program({bin, "--endpoint", mesh.request_endpoint(), "list", "--limit", "3"});
    INFO(one.out);
    CHECK(one.exit_code == 0);
    CHECK(one.out.find("more items follow: --cursor ") != std::string::npos);

    const RunResult bad = run_program({bin, "--endpoint", mesh.request_endpoint(), "list", "--cursor", "nonsense"});
    CHECK(bad.exit_code == 1);
    CHECK(bad.out.find("refused: bad_request: field 'cursor'") != std::string::npos);
  }
}

TEST_CASE("list with security on: a reader key lists through the router, every node's items", "[v2][list][security]") {
  MeshOptions options;
  options.curve = true;
  TestMesh mesh(options);
  const CurveKeys reader = mesh.add_client("rita", "");
  mesh.start_all();
  zmq::context_t ctx;
  Client admin(ctx, mesh.request_endpoint(), 5000, 2, "admin", mesh.admin_keys());
  std::vector<ListKey> opened;
  for (int i = 0; i < 2; ++i) {
    for (int n = 0; n < 3; ++n) {
      Request open = make_request(Op::open, mesh.item_on_node(i, n));
      open.closes_at = unix_now_ms() + 3'600'000 + static_cast<uint64_t>(n) * 1000;
      REQUIRE(must_call(admin, open).ok);
      opened.push_back(ListKey{false, open.closes_at, open.item});
    }
  }
  Client as_reader(ctx, mesh.request_endpoint(), 5000, 2, "rita", reader);
  const Listed listed = list_all(as_reader, false, 4);
  CHECK_FALSE(listed.any_partial);
  CHECK(listed.keys == sorted(opened));
}
