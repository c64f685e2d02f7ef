// Hostile input through the real router to real bid nodes (docs/reliability.md, "Hostile input"):
// a catalogue of known bombs (MessagePack headers claiming gigabytes, deep nesting, trailing
// bytes, wrong types, frames over the transport limit, multipart garbage, DEALER frames without
// the empty delimiter). Each one must get an error reply or be dropped at the socket, the mesh
// must keep serving a well-behaved client meanwhile, and neither the router nor a bid node may
// grow in memory while thousands of bombs go by (VmRSS from /proc before and after).
// Each test runs twice (GENERATE): bombs on the router's listen, and on a bid node's client_listen
// (direct clients, v1.2), which shares the router's limits and framing (nodes/client_front.h) and
// judges fields before `moved`, so the same catalogue gets the same replies there. Router-only:
// the router's memory limit (router_memory_mb, RLIMIT_DATA; supervisor_test.cc), which bid nodes
// do not have.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <array>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <map>
#include <string>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "protocol/messages.h"
#include "tests/support/mesh.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

// Hand-written MessagePack, so that a bomb is exactly the bytes named.
std::string fixstr(const std::string& s) { return std::string(1, static_cast<char>(0xa0 | s.size())) + s; }
std::string fixmap(std::size_t n) { return std::string(1, static_cast<char>(0x80 | n)); }
std::string bytes(std::initializer_list<int> b) {
  std::string s;
  for (int c : b) s.push_back(static_cast<char>(c));
  return s;
}
std::string kv(const std::string& k, const std::string& packed_value) { return fixstr(k) + packed_value; }

// What a bomb must produce: an error reply with this code (and the id, when the request's id is
// readable), or nothing at all because the socket drops the frame and the connection.
struct Bomb {
  std::string name;
  std::vector<std::string> frames;  // as the DEALER sends them (a well-framed one starts with "")
  std::string error;                // expected error code; empty: dropped, no reply
  std::optional<std::string> id;    // expected reply id (nil when unset)
};

std::vector<Bomb> bomb_catalogue(const std::string& item0, const std::string& item1) {
  const std::string E;  // the empty delimiter frame
  auto framed = [&](const std::string& name, const std::string& body, const std::string& error,
                    std::optional<std::string> id = std::nullopt) {
    return Bomb{name, {E, body}, error, std::move(id)};
  };
  const std::string ping = fixmap(2) + kv("op", fixstr("ping")) + kv("id", fixstr("p"));
  const std::string get0 = fixmap(3) + kv("op", fixstr("get")) + kv("id", fixstr("g0")) + kv("item", fixstr(item0));
  std::string deep_array(1000, '\x91');
  deep_array += '\xc0';
  std::string deep_map;
  for (int i = 0; i < 200; ++i) deep_map += fixmap(1) + fixstr("a");
  deep_map += '\xc0';
  // A bid for an item of each node with one bad field: routable, so the owner decides.
  auto node_bid = [&](const std::string& id, const std::string& item, const std::string& amount) {
    return fixmap(5) + kv("op", fixstr("bid")) + kv("id", fixstr(id)) + kv("item", fixstr(item)) +
           kv("bidder", fixstr("eve")) + kv("amount", amount);
  };
  auto pad_to = [&](std::size_t total) {
    // {op: get, id: big, item, pad: bin32 of the rest}: a frame of exactly `total` bytes.
    const std::string head = fixmap(4) + kv("op", fixstr("get")) + kv("id", fixstr("big")) + kv("item", fixstr(item0)) +
                             fixstr("pad");
    const std::size_t n = total - head.size() - 5;
    return head + bytes({0xc6, int((n >> 24) & 0xff), int((n >> 16) & 0xff), int((n >> 8) & 0xff), int(n & 0xff)}) +
           std::string(n, 'p');
  };
  return {
      framed("array32 claiming 4 Gi elements", bytes({0xdd, 0xff, 0xff, 0xff, 0xff}), "bad_request"),
      framed("map32 claiming 4 Gi pairs", bytes({0xdf, 0xff, 0xff, 0xff, 0xff}), "bad_request"),
      framed("str32 claiming 4 GiB", bytes({0xdb, 0xff, 0xff, 0xff, 0xff}), "bad_request"),
      framed("bin32 claiming 4 GiB", bytes({0xc6, 0xff, 0xff, 0xff, 0xff}), "bad_request"),
      framed("ext32 claiming 4 GiB", bytes({0xc9, 0xff, 0xff, 0xff, 0xff, 0x01}), "bad_request"),
      framed("map whose op is a str32 of 2 GiB", fixmap(2) + fixstr("op") + bytes({0xdb, 0x7f, 0xff, 0xff, 0xff}) + "ping",
             "bad_request"),
      framed("map with an array32 value of 256 Mi elements",
             fixmap(3) + kv("op", fixstr("get")) + kv("id", fixstr("x")) + fixstr("a") + bytes({0xdd, 0x10, 0, 0, 0}),
             "bad_request"),
      framed("1000 nested arrays", deep_array, "bad_request"),
      framed("200 nested maps", deep_map, "bad_request"),
      framed("trailing byte after a ping", ping + std::string(1, '\0'), "bad_request"),
      framed("two maps in one frame", ping + ping, "bad_request"),
      framed("empty body", "", "bad_request"),
      framed("reserved byte 0xc1", bytes({0xc1}), "bad_request"),
      framed("an array, not a map", bytes({0x93, 1, 2, 3}), "bad_request"),
      framed("integer key", fixmap(2) + kv("op", fixstr("ping")) + bytes({0x01, 0x02}), "bad_request"),
      framed("op is an integer", fixmap(2) + kv("op", bytes({0x01})) + kv("id", fixstr("w1")), "bad_request", "w1"),
      framed("id is an integer", fixmap(2) + kv("op", fixstr("ping")) + kv("id", bytes({0x07})), "bad_request"),
      framed("item is an array", fixmap(3) + kv("op", fixstr("get")) + kv("id", fixstr("w2")) + kv("item", bytes({0x91, 0xa1, 'a'})),
             "bad_request", "w2"),
      framed("item is the same key twice",
             fixmap(4) + kv("op", fixstr("get")) + kv("id", fixstr("w3")) + kv("item", fixstr(item0)) +
                 kv("item", fixstr(item1)),
             "bad_request"),
      framed("amount is a float (node 1)", node_bid("n1", item0, bytes({0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0})), "bad_request", "n1"),
      framed("amount is negative (node 2)", node_bid("n2", item1, bytes({0xff})), "bad_request", "n2"),
      framed("amount is a string (node 1)", node_bid("n3", item0, fixstr("100")), "bad_request", "n3"),
      framed("amount is zero (node 2)", node_bid("n4", item1, bytes({0x00})), "bad_request", "n4"),
      framed("bidder is nested (node 1)",
             fixmap(5) + kv("op", fixstr("bid")) + kv("id", fixstr("n5")) + kv("item", fixstr(item0)) +
                 kv("bidder", bytes({0x91, 0x91, 0xc0})) + kv("amount", bytes({0x05})),
             "bad_request", "n5"),
      framed("closes_at in the past (node 2)",
             fixmap(4) + kv("op", fixstr("open")) + kv("id", fixstr("n6")) + kv("item", fixstr(item1)) +
                 kv("closes_at", bytes({0x01})),
             "bad_request", "n6"),
      framed("history limit is a bool (node 1)",
             fixmap(4) + kv("op", fixstr("history")) + kv("id", fixstr("n7")) + kv("item", fixstr(item0)) +
                 kv("limit", bytes({0xc3})),
             "bad_request", "n7"),
      framed("5000-byte request", pad_to(5000), "too_large"),
      framed("64 KiB request, at the transport limit", pad_to(kTransportMaxBytes), "too_large"),
      Bomb{"DEALER body without the empty delimiter", {get0}, "bad_request", std::nullopt},
      Bomb{"only the empty delimiter", {E}, "bad_request", std::nullopt},
      Bomb{"two body frames", {E, ping, ping}, "bad_request", std::nullopt},
      Bomb{"multipart garbage", {"\x01\x02", "garbage", "\xff", std::string(300, 'x')}, "bad_request", std::nullopt},
      Bomb{"two frames, no delimiter", {ping, ping}, "bad_request", std::nullopt},
  };
}

// One DEALER on a client endpoint (the router's, or a bid node's client_listen).
class Dealer {
 public:
  // Connects at once unless `endpoint` is empty (then call connect() later, e.g. after a monitor
  // is attached so that it sees the connection).
  Dealer(zmq::context_t& ctx, const std::string& endpoint) : socket_(ctx, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndtimeo, 5000);
    socket_.set(zmq::sockopt::maxmsgsize, kClientMaxReplyBytes);
    if (!endpoint.empty()) socket_.connect(endpoint);
  }
  void connect(const std::string& endpoint) { socket_.connect(endpoint); }
  zmq::socket_t& socket() { return socket_; }

  bool send(const std::vector<std::string>& frames) {
    std::vector<zmq::const_buffer> parts;
    for (const auto& f : frames) parts.push_back(zmq::buffer(f));
    return zmq::send_multipart(socket_, parts).has_value();
  }
  // The next message, or nullopt when none arrives before the deadline.
  std::optional<std::vector<zmq::message_t>> recv(std::chrono::milliseconds deadline) {
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq::poll(items, 1, deadline) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return std::nullopt;
    return frames;
  }

 private:
  zmq::socket_t socket_;
};

// Decodes a reply message as the contract shapes it for a DEALER: [empty, reply].
std::optional<Reply> reply_of(const std::vector<zmq::message_t>& frames) {
  if (frames.size() != 2 || frames[0].size() != 0) return std::nullopt;
  return decode_reply(frames[1].to_string_view());
}

uint64_t vm_rss_kb(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::stoull(line.substr(6));
  return 0;
}

// Sends a frame over the transport limit on a fresh DEALER and waits (monitor events, not a
// sleep) until the server has dropped the connection. True when it was dropped and no reply came.
bool oversized_frame_is_dropped(zmq::context_t& ctx, const std::string& endpoint, std::size_t size, int n) {
  Dealer d(ctx, "");
  const std::string monitor_ep = "inproc://hostile-monitor-" + std::to_string(n);
  if (zmq_socket_monitor(d.socket().handle(), monitor_ep.c_str(), ZMQ_EVENT_CONNECTED | ZMQ_EVENT_DISCONNECTED) != 0)
    return false;
  zmq::socket_t monitor(ctx, zmq::socket_type::pair);
  monitor.set(zmq::sockopt::linger, 0);
  monitor.connect(monitor_ep);
  d.connect(endpoint);  // after the monitor, so that it sees the connection
  // Waits for one monitor event of the given kind.
  auto wait_event = [&](uint16_t kind, std::chrono::milliseconds deadline) {
    const auto end = std::chrono::steady_clock::now() + deadline;
    while (std::chrono::steady_clock::now() < end) {
      zmq::pollitem_t items[] = {{monitor.handle(), 0, ZMQ_POLLIN, 0}};
      if (zmq::poll(items, 1, 50ms) == 0) continue;
      std::vector<zmq::message_t> ev;
      if (!zmq::recv_multipart(monitor, std::back_inserter(ev))) continue;
      uint16_t id = 0;
      if (!ev.empty() && ev[0].size() >= 2) std::memcpy(&id, ev[0].data(), 2);
      if (id == kind) return true;
    }
    return false;
  };
  if (!wait_event(ZMQ_EVENT_CONNECTED, 5s)) return false;
  if (!d.send({"", std::string(size, 'x')})) return false;
  const bool dropped = wait_event(ZMQ_EVENT_DISCONNECTED, 10s);
  const bool replied = d.recv(0ms).has_value();
  zmq_socket_monitor(d.socket().handle(), nullptr, 0);
  return dropped && !replied;
}

// A normal client's bid on an item of each node: the mesh still serves others.
void bid_succeeds(Client& c, const std::string& item, uint64_t amount) {
  Request r;
  r.op = Op::bid;
  r.item = item;
  r.bidder = "honest";
  r.amount = amount;
  auto reply = c.call(r);
  REQUIRE(reply.has_value());
  INFO("bid on " << item << ": " << reply->error.value_or("") << " " << reply->message.value_or(""));
  REQUIRE(reply->ok);
}

// Where the bombs go: the router's listen, or bid node 0's client_listen (`direct`).
MeshOptions hostile_mesh(bool direct) {
  MeshOptions options;
  options.request_timeout_ms = 5000;  // a loaded machine must not turn a slow node into `unavailable`
  options.client_listen = direct;
  return options;
}
std::string bomb_endpoint(const TestMesh& mesh, bool direct) {
  return direct ? mesh.client_endpoint(0) : mesh.request_endpoint();
}

}  // namespace

TEST_CASE("hostile input: every bomb gets an error reply or is dropped at the socket", "[integration][hostile]") {
  const bool direct = GENERATE(false, true);
  TestMesh mesh(hostile_mesh(direct));
  mesh.start_all();
  zmq::context_t ctx;
  const std::string item0 = mesh.item_on_node(0, 3), item1 = mesh.item_on_node(1, 3);
  const auto bombs = bomb_catalogue(item0, item1);
  const std::string endpoint = bomb_endpoint(mesh, direct);
  INFO("bombs on " << endpoint << (direct ? " (bid node's client_listen)" : " (router)"));

  Dealer d(ctx, endpoint);
  for (const Bomb& b : bombs) {
    INFO("bomb: " << b.name);
    REQUIRE(d.send(b.frames));
    auto frames = d.recv(10s);
    REQUIRE(frames.has_value());
    auto reply = reply_of(*frames);
    REQUIRE(reply.has_value());
    CHECK_FALSE(reply->ok);
    CHECK(reply->error == std::optional<std::string>(b.error));
    CHECK(reply->id == b.id);
    CHECK(reply->message.value_or("").size() > 0);
  }

  SECTION("frames over ZMQ_MAXMSGSIZE drop the connection with no reply") {
    CHECK(oversized_frame_is_dropped(ctx, endpoint, kTransportMaxBytes + 1, 0));
    CHECK(oversized_frame_is_dropped(ctx, endpoint, 1 << 20, 1));
    // The DEALER that sent the other bombs is untouched; a fresh client is served too.
    REQUIRE(d.send({"", fixmap(2) + kv("op", fixstr("ping")) + kv("id", fixstr("after"))}));
    auto frames = d.recv(10s);
    REQUIRE(frames.has_value());
    auto reply = reply_of(*frames);
    REQUIRE(reply.has_value());
    CHECK(reply->ok);
    Client c(ctx, endpoint, 2000, 2);
    Request open;
    open.op = Op::open;
    open.item = item0;
    REQUIRE(c.call(open).value_or(Reply{}).ok);
    bid_succeeds(c, item0, 5);
  }
}

TEST_CASE("hostile input: 20k bombs leave the router and bid nodes serving, with no memory growth",
          "[integration][hostile]") {
  const bool direct = GENERATE(false, true);
  TestMesh mesh(hostile_mesh(direct));
  mesh.start_all();
  zmq::context_t ctx;
  const std::string item0 = mesh.item_on_node(0, 4), item1 = mesh.item_on_node(1, 4);
  const auto bombs = bomb_catalogue(item0, item1);
  const std::string endpoint = bomb_endpoint(mesh, direct);
  INFO("bombs on " << endpoint << (direct ? " (bid node's client_listen)" : " (router)"));
  // Honest bids on item1 go through the router; on item0 through the endpoint under attack.
  Client honest(ctx, mesh.request_endpoint(), 2000, 2);
  Client honest0(ctx, endpoint, 2000, 2);
  for (const auto& item : {item0, item1}) {
    Request open;
    open.op = Op::open;
    open.item = item;
    REQUIRE(honest.call(open).value_or(Reply{}).ok);
  }
  const std::vector<std::string> names{"router", mesh.bid_node_name(0), mesh.bid_node_name(1)};
  uint64_t amount = 0;

  // Sends `count` bombs from the catalogue in turn, up to `window` unanswered at a time, with an
  // honest bid on each node every 1000 bombs and an oversized frame (fresh socket) every 5000.
  // Returns the replies by error code.
  int oversized = 0;
  auto barrage = [&](int count) {
    std::map<std::string, int> replies;
    Dealer d(ctx, endpoint);
    const int window = 64;
    int sent = 0, received = 0;
    std::map<std::string, int> expected;
    while (received < count) {
      while (sent < count && sent - received < window) {
        const Bomb& b = bombs[static_cast<std::size_t>(sent) % bombs.size()];
        REQUIRE(d.send(b.frames));
        ++expected[b.error];
        ++sent;
        if (sent % 1000 == 0) {
          bid_succeeds(honest0, item0, ++amount);
          bid_succeeds(honest, item1, amount);
        }
        if (sent % 5000 == 0) REQUIRE(oversized_frame_is_dropped(ctx, endpoint, 1 << 20, ++oversized));
      }
      auto frames = d.recv(10s);
      INFO("sent " << sent << ", received " << received);
      REQUIRE(frames.has_value());
      auto reply = reply_of(*frames);
      REQUIRE(reply.has_value());
      REQUIRE_FALSE(reply->ok);
      ++replies[reply->error.value_or("?")];
      ++received;
    }
    CHECK(replies == expected);
    CHECK_FALSE(d.recv(0ms).has_value());  // nothing more than one reply per bomb
    return replies;
  };

  // Warm-up: allocator pools, socket buffers and LMDB pages reach their steady size.
  barrage(4000);
  std::map<std::string, uint64_t> before;
  for (const auto& n : names) before[n] = vm_rss_kb(mesh.process(n)->pid());

  const int kBombs = 20000;
  const auto replies = barrage(kBombs);
  std::map<std::string, uint64_t> after;
  for (const auto& n : names) after[n] = vm_rss_kb(mesh.process(n)->pid());

  std::printf("hostile input: %d bombs sent (+4000 warm-up), replies:", kBombs);
  for (const auto& [code, n] : replies) std::printf(" %s=%d", code.c_str(), n);
  std::printf(", %d oversized frames dropped\n", oversized);
  for (const auto& n : names) {
    std::printf("hostile input: %s VmRSS %llu kB before, %llu kB after\n", n.c_str(),
                static_cast<unsigned long long>(before[n]), static_cast<unsigned long long>(after[n]));
    INFO(n << " VmRSS before " << before[n] << " kB, after " << after[n] << " kB");
    CHECK(before[n] > 0);
    // A leak of even 100 bytes per bomb would show as 2 MB here. Not under AddressSanitizer: it
    // keeps freed memory in its quarantine (256 MB by default), so VmRSS grows there without a
    // leak; LeakSanitizer checks each process when it stops, below.
#ifndef __SANITIZE_ADDRESS__
    CHECK(after[n] <= before[n] + 1024);
#endif
    CHECK(mesh.process(n)->running());
  }
  bid_succeeds(honest0, item0, ++amount);
  bid_succeeds(honest, item1, amount);
  // Nothing lost: each item's top bid is the last honest one.
  for (const auto& item : {item0, item1}) {
    Request get;
    get.op = Op::get;
    get.item = item;
    INFO("get " << item);
    CHECK(must_call(honest, get).u64("max") == std::optional<uint64_t>(amount));
  }
  // Each process stops cleanly after the barrage (under AddressSanitizer, LeakSanitizer then
  // reports any leak, and the exit status says so).
  for (const auto& n : names) {
    mesh.stop_node(n, SIGTERM);
    const auto status = mesh.process(n)->status();
    INFO(n << " after SIGTERM\n" << mesh.log_tail(n));
    REQUIRE(status.has_value());
    CHECK(WIFEXITED(*status));
    CHECK(WEXITSTATUS(*status) == 0);
  }
}
