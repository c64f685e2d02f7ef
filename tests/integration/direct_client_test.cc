// DirectClient (client/direct_client.h) through real processes: a supervised mesh whose bid
// nodes serve direct clients (client_listen), driven with bidmesh-ctl and bidmesh-slots as an
// operator would (docs/deployment.md, "Moving a slot range").
#include <catch2/catch.hpp>

#include <filesystem>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "client/direct_client.h"
#include "protocol/messages.h"
#include "protocol/slot_map.h"
#include "tests/reliability/harness.h"
#include "tests/support/mesh.h"
#include "tests/support/process.h"

namespace {

using namespace bidmesh;
using namespace std::chrono_literals;

test::RunResult tool(const std::string& program, std::vector<std::string> args) {
  args.insert(args.begin(), test::program_path(program));
  return test::run_program(std::move(args), 60s);
}

Request req(Op op, const std::string& item, const std::string& id = {}) {
  Request r;
  r.op = op;
  r.item = item;
  r.id = id;
  return r;
}

Request bid(const std::string& item, const std::string& bidder, uint64_t amount, const std::string& id) {
  Request r = req(Op::bid, item, id);
  r.bidder = bidder;
  r.amount = amount;
  return r;
}

}  // namespace

TEST_CASE("DirectClient: direct to the owner, router while the owner is stopped, direct again when it is back, "
          "moved after a slot range is moved",
          "[direct][client]") {
  rel::MeshSpec spec;
  spec.client_endpoints = true;
  rel::SupervisedMesh mesh(spec);
  REQUIRE_FALSE(mesh.start());
  const std::string config = (mesh.dir() / "mesh.toml").string();
  auto ctl = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {"--config", config});
    const auto r = tool("bidmesh-ctl", args);
    INFO(r.out);
    REQUIRE(r.exit_code == 0);
  };

  DirectOptions opt;
  opt.timeout_ms = 500;
  opt.retries = 2;
  opt.node_timeout_ms = 500;
  opt.holdoff_ms = 300;
  // Time for the client's socket to reconnect to a restarted node (libzmq retries every 100 ms):
  // else the moved section's request could take the router path and never meet `moved`.
  opt.connect_wait_ms = static_cast<int>(test::scaled(2000ms).count());
  zmq::context_t ctx(1);
  DirectClient c(ctx, mesh.request_endpoint(), opt);

  // An item of bid-1 whose slot is in 0-4095: the range moved below.
  std::string item;
  for (int n = 0; item.empty(); ++n) {
    const std::string name = mesh.item_on_node(0, n);
    if (slot_of(name) <= 4095) item = name;
  }
  auto r = c.call(req(Op::open, item));
  REQUIRE(r);
  CHECK(r->ok);
  CHECK(c.last_path() == "direct");
  REQUIRE(c.slots());
  const std::string bid1 = c.slots()->endpoints()[c.slots()->endpoint_of_item(item)];

  SECTION("fallback while the owner is stopped, then direct again") {
    ctl({"stop", "bid-1"});
    r = c.call(bid(item, "alice", 5, "fb-1"));
    REQUIRE(r);
    CHECK(r->error == std::optional<std::string>("unavailable"));  // the router's answer
    CHECK(c.last_path() == "router");
    CHECK(c.stats().fallbacks >= 1);
    ctl({"start", "bid-1"});
    // The same write, same id: direct again once bid-1 listens; applied once.
    CHECK(test::wait_until(
        [&] {
          r = c.call(bid(item, "alice", 5, "fb-1"));
          return r && r->ok && c.last_path() == "direct";
        },
        20s));
    r = c.call(req(Op::get, item));
    REQUIRE(r);
    CHECK(r->u64("bids") == std::optional<uint64_t>(1));
  }

  SECTION("moved after bidmesh-slots moved the range, then served by the new owner") {
    r = c.call(bid(item, "alice", 5, "mv-1"));
    REQUIRE((r && r->ok));
    const uint64_t seq = *r->u64("seq");
    ctl({"stop", "bid-1"});
    ctl({"stop", "bid-2"});
    const auto moved = tool("bidmesh-slots", {"move", "--config", config, "--slots", "0-4095", "--from", "bid-1", "--to", "bid-2"});
    INFO(moved.out);
    REQUIRE(moved.exit_code == 0);
    std::filesystem::rename(config + ".new", config);
    ctl({"reload"});
    ctl({"start", "bid-1"});
    ctl({"start", "bid-2"});
    REQUIRE(mesh.wait_serving(item, 20000ms));
    // The client still holds the old map: bid-1 answers moved, the same frame goes to bid-2.
    CHECK(c.slots()->endpoints()[c.slots()->endpoint_of_item(item)] == bid1);
    const uint64_t moved_before = c.stats().moved;
    r = c.call(bid(item, "bob", 6, "mv-2"));
    REQUIRE(r);
    CHECK(r->ok);
    CHECK(r->u64("seq") == std::optional<uint64_t>(seq + 1));
    CHECK(c.last_path() == "direct");
    CHECK(c.stats().moved == moved_before + 1);
    CHECK(c.slots()->endpoints()[c.slots()->endpoint_of_item(item)] != bid1);
    // A retry of the write made before the move gets its first reply from the new owner.
    r = c.call(bid(item, "alice", 5, "mv-1"));
    REQUIRE(r);
    CHECK(r->u64("seq") == std::optional<uint64_t>(seq));
  }
}
