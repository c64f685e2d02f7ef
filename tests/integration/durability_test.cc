// No reply before durability (docs/reliability.md, test 2). The failpoint
// BIDMESH_FAILPOINT_COMMIT_DELAY_MS (nodes/failpoint.h) holds every LMDB write commit of a bid
// node; nothing the node sends about a write (its reply, its feed event) may leave before the
// commit returns. And a reply, once received, survives kill -9 of the node at once.
#include <catch2/catch.hpp>

#include <cstdlib>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "nodes/failpoint.h"
#include "protocol/messages.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

namespace {

double ms_between(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double, std::milli>(b - a).count();
}

}  // namespace

TEST_CASE("no reply and no feed event leaves a bid node before its commit returns", "[reliability][durability]") {
  constexpr int kDelayMs = 300;
  EnvGuard fp(failpoint::kCommitDelayEnv, std::to_string(kDelayMs));
  MeshOptions mo;
  mo.bid_nodes = 1;
  TestMesh mesh(mo);
  mesh.start_all();
  zmq::context_t ctx;
  zmq::socket_t sub(ctx, zmq::socket_type::sub);
  sub.set(zmq::sockopt::linger, 0);
  sub.set(zmq::sockopt::subscribe, "item/");
  sub.connect(mesh.feed_endpoint());
  Client c(ctx, mesh.request_endpoint(), 5000, 2);
  auto next_event = [&](std::chrono::milliseconds wait) -> std::optional<Event> {
    zmq::pollitem_t items[] = {{sub.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, wait);
    if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
    std::vector<zmq::message_t> parts;
    if (!zmq::recv_multipart(sub, std::back_inserter(parts), zmq::recv_flags::dontwait) || parts.size() != 2)
      return std::nullopt;
    return decode_event(parts[1].to_string_view());
  };
  // The subscription is live once a probe item's open event arrives.
  int probe = 0;
  REQUIRE(wait_until(
      [&] {
        auto r = c.call(make_request(Op::open, "probe-" + std::to_string(probe++)));
        return r && r->ok && next_event(500ms).has_value();
      },
      20s, 1ms));
  while (next_event(0ms)) {
  }
  const std::string item = mesh.item_on_node(0, 1);
  REQUIRE(c.call(make_request(Op::open, item))->ok);
  REQUIRE(next_event(5s));

  // Each bid: the reply and the event come at least the commit delay after the send.
  double min_reply = 1e9, min_event = 1e9;
  for (uint64_t k = 1; k <= 5; ++k) {
    const auto sent = Clock::now();
    auto r = c.call(make_bid(item, "dora", k));
    const auto replied = Clock::now();
    REQUIRE(r);
    REQUIRE(r->ok);
    std::optional<Event> e;
    while (!e || e->item != item) {
      e = next_event(5s);
      REQUIRE(e);
    }
    const auto evented = Clock::now();
    CHECK(e->seq == r->u64("seq"));
    CHECK(ms_between(sent, replied) >= kDelayMs);
    CHECK(ms_between(sent, evented) >= kDelayMs);
    min_reply = std::min(min_reply, ms_between(sent, replied));
    min_event = std::min(min_event, ms_between(sent, evented));
  }
  CHECK(read_file(mesh.log_file("bid-1")).find("failpoint: ON") != std::string::npos);
  std::printf("durability: commit delayed %d ms; earliest reply %.1f ms and earliest event %.1f ms after the send\n",
              kDelayMs, min_reply, min_event);
}

TEST_CASE("a bid node killed inside the commit window acknowledged nothing and stored nothing",
          "[reliability][durability]") {
  EnvGuard fp(failpoint::kCommitDelayEnv, "1500");
  MeshOptions mo;
  mo.bid_nodes = 1;
  mo.request_timeout_ms = 5000;  // the router waits past the kill: no `unavailable` first
  TestMesh mesh(mo);
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 10000, 0);
  const std::string item = mesh.item_on_node(0, 1);
  REQUIRE(c.call(make_request(Op::open, item))->ok);
  // A REQ socket with the bid in flight; the node is killed 300 ms into its 1500 ms commit.
  zmq::socket_t s(ctx, zmq::socket_type::req);
  s.set(zmq::sockopt::linger, 0);
  s.connect(mesh.request_endpoint());
  Request b = make_bid(item, "dora", 77);
  b.id = "window-1";
  const std::string frame = encode_request(b);
  REQUIRE(s.send(zmq::buffer(frame), zmq::send_flags::none));
  zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, 300ms);  // the fault's timing: inside the window
  REQUIRE_FALSE(items[0].revents & ZMQ_POLLIN);
  mesh.kill_node("bid-1");
  zmq::poll(items, 1, 6000ms);
  // The only reply that may come is the router's `unavailable`: never ok.
  if (items[0].revents & ZMQ_POLLIN) {
    zmq::message_t m;
    REQUIRE(s.recv(m));
    auto r = decode_reply(m.to_string_view());
    REQUIRE(r);
    CHECK_FALSE(r->ok);
    CHECK(r->error == std::optional<std::string>("unavailable"));
  }
  ::unsetenv(failpoint::kCommitDelayEnv);
  mesh.start_node("bid-1");
  REQUIRE(mesh.wait_node_serving(0, 20s));
  Client c2(ctx, mesh.request_endpoint(), 3000, 3);
  auto g = c2.call(make_request(Op::get, item));
  REQUIRE(g);
  CHECK(g->u64("bids") == 0u);
  // The retry with the same id takes effect now, once.
  auto again = c2.call(b);
  REQUIRE(again);
  CHECK(again->ok);
  CHECK(c2.call(make_request(Op::get, item))->u64("bids") == 1u);
}

TEST_CASE("kill -9 right after a reply loses nothing", "[reliability][durability]") {
  MeshOptions mo;
  mo.bid_nodes = 1;
  TestMesh mesh(mo);
  mesh.start_all();
  CHECK(read_file(mesh.log_file("bid-1")).find("failpoint") == std::string::npos);  // off by default
  zmq::context_t ctx;
  const std::string item = mesh.item_on_node(0, 1);
  {
    Client c(ctx, mesh.request_endpoint(), 3000, 3);
    REQUIRE(c.call(make_request(Op::open, item))->ok);
  }
  constexpr int kRounds = 12;
  for (int k = 1; k <= kRounds; ++k) {
    Client c(ctx, mesh.request_endpoint(), 3000, 5);
    auto r = c.call(make_bid(item, "dora", static_cast<uint64_t>(k)));
    REQUIRE(r);
    REQUIRE(r->ok);
    mesh.kill_node("bid-1");  // at once: the reply is the only proof the bid exists
    mesh.start_node("bid-1");
    REQUIRE(mesh.wait_node_serving(0, 20s));
    auto g = c.call(make_request(Op::get, item));
    REQUIRE(g);
    REQUIRE(g->ok);
    CHECK(g->u64("max") == static_cast<uint64_t>(k));
    CHECK(g->u64("bids") == static_cast<uint64_t>(k));
  }
  std::printf("durability: %d x (ok reply, kill -9 at once, restart): %d bids stored, 0 lost\n", kRounds, kRounds);
}
