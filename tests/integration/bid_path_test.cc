// The wire contract end to end: real router and bid node processes on loopback ports, real LMDB
// files in a temp dir, requests over real REQ and DEALER sockets (docs/protocol.md).
#include <catch2/catch.hpp>

#include <signal.h>

#include <map>
#include <set>

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "nodes/process.h"
#include "protocol/messages.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

std::string error_of(const Reply& r) { return r.error.value_or("<none>"); }

bool is_nil(const Reply& r, const char* key) {
  const Value* v = r.find(key);
  return v != nullptr && std::holds_alternative<Nil>(*v);
}

std::string packed_map(const std::vector<std::pair<std::string, std::string>>& kv) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<uint32_t>(kv.size()));
  for (auto& [k, v] : kv) {
    pk.pack(k);
    pk.pack(v);
  }
  return std::string(buf.data(), buf.size());
}

}  // namespace

TEST_CASE("bid path serves the whole contract through router and two bid nodes", "[integration][bid_path]") {
  TestMesh mesh;
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 2000, 2);
  const std::string a = mesh.item_on_node(0, 1);
  const std::string b = mesh.item_on_node(1, 1);

  SECTION("ping is answered by the router") {
    Reply r = must_call(c, make_request(Op::ping, ""));
    CHECK(r.ok);
    CHECK(r.id == std::optional<std::string>(c.last_id()));
  }

  SECTION("open, bid, get, history and close on items of both nodes") {
    for (const std::string& item : {a, b}) {
      Request open = make_request(Op::open, item);
      open.start = 100;
      open.increment = 10;
      Reply r = must_call(c, open);
      REQUIRE(r.ok);
      CHECK(r.str("item") == item);
      CHECK(r.u64("seq") == 1u);

      Reply again = must_call(c, open);
      CHECK(error_of(again) == "exists");

      Reply low = must_call(c, make_bid(item, "alice", 99));
      CHECK(error_of(low) == "too_low");
      CHECK(is_nil(low, "max"));

      Reply first = must_call(c, make_bid(item, "alice", 100));
      REQUIRE(first.ok);
      CHECK(first.str("bidder") == std::optional<std::string>("alice"));
      CHECK(first.u64("amount") == 100u);
      CHECK(first.u64("seq") == 2u);

      Reply not_enough = must_call(c, make_bid(item, "bob", 109));
      CHECK(error_of(not_enough) == "too_low");
      CHECK(not_enough.u64("max") == 100u);
      CHECK(must_call(c, make_bid(item, "bob", 110)).ok);

      Reply g = must_call(c, make_request(Op::get, item));
      REQUIRE(g.ok);
      CHECK(g.str("status") == std::optional<std::string>("open"));
      CHECK(g.u64("max") == 110u);
      CHECK(g.str("bidder") == std::optional<std::string>("bob"));
      CHECK(g.u64("seq") == 3u);
      CHECK(g.u64("bids") == 2u);
      CHECK(g.u64("start") == 100u);
      CHECK(g.u64("increment") == 10u);
      CHECK(is_nil(g, "closes_at"));

      Reply closed = must_call(c, make_request(Op::close, item));
      REQUIRE(closed.ok);
      CHECK(closed.u64("seq") == 4u);
      CHECK(closed.str("winner") == std::optional<std::string>("bob"));
      CHECK(closed.u64("amount") == 110u);
      CHECK(error_of(must_call(c, make_bid(item, "carol", 5000))) == "closed");
      CHECK(error_of(must_call(c, make_request(Op::close, item))) == "closed");

      Reply h = must_call(c, make_request(Op::history, item));
      REQUIRE(h.ok);
      REQUIRE(h.events.size() == 4);
      CHECK(h.events[0].kind == EventKind::open);
      CHECK(h.events[1].kind == EventKind::max);
      CHECK(h.events[1].amount == 100u);
      CHECK(h.events[3].kind == EventKind::closed);
      CHECK(h.events[3].bidder == std::optional<std::string>("bob"));
      for (std::size_t i = 0; i < h.events.size(); ++i) CHECK(h.events[i].seq == i + 1);

      Request page = make_request(Op::history, item);
      page.after = 1;
      page.limit = 2;
      Reply p = must_call(c, page);
      REQUIRE(p.events.size() == 2);
      CHECK(p.events[0].seq == 2);
      CHECK(p.events[1].seq == 3);
    }
  }

  SECTION("a close with no bid has a nil winner and amount") {
    REQUIRE(must_call(c, make_request(Op::open, a)).ok);
    Reply closed = must_call(c, make_request(Op::close, a));
    REQUIRE(closed.ok);
    CHECK(is_nil(closed, "winner"));
    CHECK(is_nil(closed, "amount"));
  }

  SECTION("unknown items") {
    CHECK(error_of(must_call(c, make_bid(b, "x", 5))) == "unknown_item");
    CHECK(error_of(must_call(c, make_request(Op::get, b))) == "unknown_item");
    CHECK(error_of(must_call(c, make_request(Op::close, b))) == "unknown_item");
    CHECK(error_of(must_call(c, make_request(Op::history, b))) == "unknown_item");
  }

  SECTION("a retry with the same id gets the remembered reply; other content gets conflict") {
    REQUIRE(must_call(c, make_request(Op::open, a)).ok);
    const std::string frame = encode_request(make_bid(a, "dora", 50, "retry-1"));
    auto first = c.call_raw(frame);
    auto second = c.call_raw(frame);
    REQUIRE(first);
    REQUIRE(second);
    CHECK(*first == *second);
    CHECK(must_call(c, make_request(Op::get, a)).u64("bids") == 1u);
    CHECK(error_of(must_call(c, make_bid(a, "dora", 51, "retry-1"))) == "conflict");
    // A refusal is remembered too: the same too_low reply even after the max moved on.
    Reply low1 = must_call(c, make_bid(a, "eve", 10, "low-1"));
    CHECK(error_of(low1) == "too_low");
    REQUIRE(must_call(c, make_bid(a, "fay", 1000)).ok);
    Reply low2 = must_call(c, make_bid(a, "eve", 10, "low-1"));
    CHECK(error_of(low2) == "too_low");
    CHECK(low2.u64("max") == low1.u64("max"));
  }

  SECTION("malformed requests get bad_request or too_large through the router") {
    auto reply_to = [&](const std::string& frame) {
      auto raw = c.call_raw(frame);
      REQUIRE(raw);
      auto r = decode_reply(*raw);
      REQUIRE(r);
      return *r;
    };
    Reply not_map = reply_to("\x93\x01\x02\x03");
    CHECK(error_of(not_map) == "bad_request");
    CHECK_FALSE(not_map.id);
    Reply unknown_op = reply_to(packed_map({{"op", "fly"}, {"id", "u-1"}}));
    CHECK(error_of(unknown_op) == "bad_request");
    CHECK(unknown_op.id == std::optional<std::string>("u-1"));
    Reply bad_bidder = reply_to(packed_map({{"op", "bid"}, {"id", "u-2"}, {"item", a}, {"bidder", "no spaces"}}));
    CHECK(error_of(bad_bidder) == "bad_request");
    CHECK(bad_bidder.id == std::optional<std::string>("u-2"));
    Reply big = reply_to(packed_map({{"op", "get"}, {"id", "u-3"}, {"item", a}, {"pad", std::string(5000, 'p')}}));
    CHECK(error_of(big) == "too_large");
    CHECK_FALSE(big.id);
    Reply bomb = reply_to(std::string("\xdd\x7f\xff\xff\xff", 5));
    CHECK(error_of(bomb) == "bad_request");
    CHECK(must_call(c, make_request(Op::ping, "")).ok);  // still serving
  }

  SECTION("an item closes by itself when closes_at passes") {
    Request open = make_request(Op::open, b);
    open.closes_at = unix_now_ms() + 400;
    REQUIRE(must_call(c, open).ok);
    REQUIRE(must_call(c, make_bid(b, "gil", 7)).ok);
    REQUIRE(wait_until([&] { return must_call(c, make_request(Op::get, b)).str("status") == std::optional<std::string>("closed"); },
                       5s, 50ms));
    CHECK(error_of(must_call(c, make_bid(b, "gil", 100))) == "closed");
    Reply h = must_call(c, make_request(Op::history, b));
    REQUIRE(h.events.size() == 3);
    CHECK(h.events[2].kind == EventKind::closed);
    CHECK(h.events[2].bidder == std::optional<std::string>("gil"));
    CHECK(h.events[2].amount == 7u);
    CHECK(must_call(c, make_request(Op::get, b)).u64("seq") == 3u);
  }
}

TEST_CASE("bid path works for DEALER clients with several requests in flight", "[integration][bid_path]") {
  TestMesh mesh;
  mesh.start_all();
  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(mesh.request_endpoint());
  const int n = 20;
  for (int i = 0; i < n; ++i) {
    Request r = make_request(Op::open, mesh.item_on_node(i % 2, i), "d-" + std::to_string(i));
    const std::string frame = encode_request(r);
    std::array<zmq::const_buffer, 2> parts{zmq::buffer(std::string_view()), zmq::buffer(frame)};
    REQUIRE(zmq::send_multipart(dealer, parts));
  }
  std::set<std::string> ids;
  for (int i = 0; i < n; ++i) {
    std::vector<zmq::pollitem_t> items{{dealer.handle(), 0, ZMQ_POLLIN, 0}};
    REQUIRE(zmq::poll(items, 5000ms) == 1);
    std::vector<zmq::message_t> frames;
    REQUIRE(zmq::recv_multipart(dealer, std::back_inserter(frames)));
    REQUIRE(frames.size() == 2);
    CHECK(frames[0].size() == 0);
    auto reply = decode_reply(frames[1].to_string_view());
    REQUIRE(reply);
    CHECK(reply->ok);
    ids.insert(reply->id.value_or(""));
  }
  CHECK(ids.size() == n);
}

TEST_CASE("bid path answers unavailable while a node is down and keeps its data", "[integration][bid_path]") {
  MeshOptions options;
  options.request_timeout_ms = 400;
  TestMesh mesh(options);
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 3000, 0);
  const std::string a = mesh.item_on_node(0, 2);
  const std::string b = mesh.item_on_node(1, 2);
  REQUIRE(must_call(c, make_request(Op::open, a)).ok);
  REQUIRE(must_call(c, make_request(Op::open, b)).ok);
  REQUIRE(must_call(c, make_bid(b, "hal", 42)).ok);  // acknowledged: durable

  mesh.kill_node("bid-2");  // SIGKILL right after the ack
  const auto t0 = std::chrono::steady_clock::now();
  Reply down = must_call(c, make_bid(b, "ivy", 50));
  const auto waited = std::chrono::steady_clock::now() - t0;
  CHECK(error_of(down) == "unavailable");
  CHECK(waited < 2500ms);
  CHECK(must_call(c, make_bid(a, "ivy", 50)).ok);  // the other node is untouched

  mesh.start_node("bid-2");
  REQUIRE(mesh.wait_node_serving(1, 20s));
  Reply g = must_call(c, make_request(Op::get, b));
  REQUIRE(g.ok);
  CHECK(g.u64("max") == 42u);
  CHECK(g.str("bidder") == std::optional<std::string>("hal"));
  CHECK(must_call(c, make_bid(b, "ivy", 50)).ok);
  CHECK(must_call(c, make_request(Op::get, b)).u64("seq") == 3u);
}

TEST_CASE("the bidmesh CLI: success lines, and a refusal as one line with exit 1", "[integration][bid_path][cli]") {
  TestMesh mesh;
  mesh.start_all();
  const std::string cli = program_path("bidmesh");
  const std::string ep = mesh.request_endpoint();
  auto opened = run_program({cli, "--endpoint", ep, "open", "cli-lamp", "--start", "100", "--increment", "10"});
  CHECK(opened.exit_code == 0);
  CHECK(opened.out.find("opened: item cli-lamp") != std::string::npos);
  auto bid = run_program({cli, "--endpoint", ep, "bid", "cli-lamp", "alice", "150"});
  CHECK(bid.exit_code == 0);
  CHECK(bid.out.find("accepted: item cli-lamp bid 150 by alice") != std::string::npos);
  auto low = run_program({cli, "--endpoint", ep, "bid", "cli-lamp", "bob", "155"});
  CHECK(low.exit_code == 1);
  INFO(low.out);
  CHECK(low.out.find("bidmesh: refused: too_low: ") == 0);
  CHECK(low.out.find("(current max 150)") != std::string::npos);
  CHECK(low.out.find("too_low") == low.out.rfind("too_low"));  // said once, not on two streams
}

TEST_CASE("the bidmesh CLI: v2 fields (details, reserve, soft close, a proxy bid's max)", "[integration][bid_path][cli][v2]") {
  TestMesh mesh;
  mesh.start_all();
  const std::string cli = program_path("bidmesh");
  const std::string ep = mesh.request_endpoint();
  auto opened = run_program({cli, "--endpoint", ep, "open", "cli-vase", "--start", "100", "--increment", "10",
                             "--closes-in", "3600", "--extend", "5000", "--reserve", "400", "--title", "Blue vase",
                             "--description", "Glazed, 30 cm", "--image-url", "https://example.com/vase.jpg"});
  INFO(opened.out);
  REQUIRE(opened.exit_code == 0);
  // alice may pay up to 300: the price shows her at the start, her max stays hidden.
  auto alice = run_program({cli, "--endpoint", ep, "--json", "bid", "cli-vase", "alice", "100", "--max", "300"});
  INFO(alice.out);
  REQUIRE(alice.exit_code == 0);
  const auto shows_value = [](const std::string& json, const std::string& v) {  // as a field's value
    return json.find(":" + v + ",") != std::string::npos || json.find(":" + v + "}") != std::string::npos;
  };
  CHECK_FALSE(shows_value(alice.out, "300"));
  // bob bids 200: still below alice's max, so alice leads at bob's 200 plus the increment.
  auto bob = run_program({cli, "--endpoint", ep, "--json", "bid", "cli-vase", "bob", "200"});
  INFO(bob.out);
  REQUIRE(bob.exit_code == 0);
  CHECK(bob.out.find("\"leading\":false") != std::string::npos);
  auto got = run_program({cli, "--endpoint", ep, "--json", "get", "cli-vase"});
  INFO(got.out);
  REQUIRE(got.exit_code == 0);
  CHECK(got.out.find("\"max\":210") != std::string::npos);
  CHECK(got.out.find("\"bidder\":\"alice\"") != std::string::npos);
  CHECK(got.out.find("\"title\":\"Blue vase\"") != std::string::npos);
  CHECK(got.out.find("\"description\":\"Glazed, 30 cm\"") != std::string::npos);
  CHECK(got.out.find("\"image_url\":\"https://example.com/vase.jpg\"") != std::string::npos);
  CHECK(got.out.find("\"reserve_met\":false") != std::string::npos);
  CHECK(got.out.find("\"reserve\":") == std::string::npos);  // the reserve is never shown
  CHECK_FALSE(shows_value(got.out, "400"));
  CHECK_FALSE(shows_value(got.out, "300"));  // nor alice's max
  // A bad value is a usage error before anything is sent.
  auto bad = run_program({cli, "--endpoint", ep, "bid", "cli-vase", "carol", "500", "--max", "many"});
  CHECK(bad.exit_code == 100);
}

TEST_CASE("feed publishes events in seq order on exact per-item topics", "[integration][bid_path][feed]") {
  TestMesh mesh;
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 2000, 2);
  // Two items where one id is a prefix of the other: "<x>" and "<x>1".
  const std::string x = "lot4";
  const std::string x1 = x + "1";
  zmq::socket_t exact(ctx, zmq::socket_type::sub), all(ctx, zmq::socket_type::sub);
  for (auto* s : {&exact, &all}) {
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::rcvtimeo, 200);
    s->connect(mesh.feed_endpoint());
  }
  exact.set(zmq::sockopt::subscribe, feed_topic(x));
  exact.set(zmq::sockopt::subscribe, "item/probe-");
  all.set(zmq::sockopt::subscribe, "item/");

  // Subscriptions go live some time after connect: open probe items until both sockets see one.
  int probe = 0;
  bool exact_live = false, all_live = false;
  auto got_one = [](zmq::socket_t& s) {
    std::vector<zmq::message_t> frames;
    return zmq::recv_multipart(s, std::back_inserter(frames), zmq::recv_flags::dontwait).has_value();
  };
  REQUIRE(wait_until(
      [&] {
        must_call(c, make_request(Op::open, "probe-" + std::to_string(probe++)));
        exact_live = exact_live || got_one(exact);
        all_live = all_live || got_one(all);
        return exact_live && all_live;
      },
      10s, 1ms));
  exact.set(zmq::sockopt::unsubscribe, "item/probe-");
  for (auto* s : {&exact, &all})
    while (true) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(*s, std::back_inserter(frames))) break;  // 200 ms quiet
    }
  REQUIRE(must_call(c, make_request(Op::open, x)).ok);
  REQUIRE(must_call(c, make_request(Op::open, x1)).ok);
  for (uint64_t amount = 1; amount <= 5; ++amount) {
    REQUIRE(must_call(c, make_bid(x, "jo", amount)).ok);
    REQUIRE(must_call(c, make_bid(x1, "jo", amount)).ok);
  }
  REQUIRE(must_call(c, make_request(Op::close, x)).ok);

  auto read_events = [](zmq::socket_t& s, std::size_t want) {
    std::vector<std::pair<std::string, Event>> out;
    const auto end = std::chrono::steady_clock::now() + 5s;
    while (out.size() < want && std::chrono::steady_clock::now() < end) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(s, std::back_inserter(frames))) continue;
      REQUIRE(frames.size() == 2);
      auto e = decode_event(frames[1].to_string_view());
      REQUIRE(e);
      out.emplace_back(frames[0].to_string(), *e);
    }
    return out;
  };
  auto exact_events = read_events(exact, 7);
  REQUIRE(exact_events.size() == 7);
  for (std::size_t i = 0; i < exact_events.size(); ++i) {
    CHECK(exact_events[i].first == "item/" + x + "/");
    CHECK(exact_events[i].second.item == x);
    CHECK(exact_events[i].second.seq == i + 1);
  }
  CHECK(exact_events[0].second.kind == EventKind::open);
  CHECK(exact_events[3].second.kind == EventKind::max);
  CHECK(exact_events[3].second.amount == 3u);
  CHECK(exact_events[3].second.bidder == std::optional<std::string>("jo"));
  CHECK(exact_events[3].second.ts > 0);
  CHECK(exact_events[6].second.kind == EventKind::closed);
  CHECK(exact_events[6].second.amount == 5u);

  auto all_events = read_events(all, 13);
  REQUIRE(all_events.size() == 13);
  std::map<std::string, uint64_t> last;
  for (auto& [topic, e] : all_events) {
    CHECK(topic == feed_topic(e.item));
    CHECK(e.seq == last[e.item] + 1);
    last[e.item] = e.seq;
  }
  CHECK(last[x] == 7);
  CHECK(last[x1] == 6);
}
