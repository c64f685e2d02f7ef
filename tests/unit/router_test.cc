// The router's pending-request table, and the router itself in-process: clients and a fake bid
// node on the test thread, the router's loop on a thread of its own; the client endpoint on
// loopback TCP (the router reads clients as byte streams), the others over inproc.
#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstring>
#include <future>
#include <optional>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "nodes/node_wire.h"
#include "nodes/process.h"
#include "nodes/router.h"
#include "protocol/config.h"
#include "protocol/messages.h"

using namespace bidmesh;
using namespace std::chrono_literals;

namespace {

using Clock = PendingTable::Clock;

std::string str(const zmq::message_t& m) { return std::string(static_cast<const char*>(m.data()), m.size()); }

}  // namespace

TEST_CASE("pending table issues, finds and releases entries", "[router]") {
  PendingTable table(3);
  const Clock::time_point t0 = Clock::now();

  SECTION("a token finds its entry until it is released") {
    PendingTable::Entry& e = table.acquire(t0 + 1s);
    const uint64_t token = e.token;
    CHECK(token != 0);
    CHECK(table.find(token) == &e);
    CHECK(table.size() == 1);
    table.release(e);
    CHECK(table.find(token) == nullptr);
    CHECK(table.size() == 0);
  }
  SECTION("a reused entry gets a new token, so a late reply for the old one does not match") {
    PendingTable::Entry& e = table.acquire(t0 + 1s);
    const uint64_t old_token = e.token;
    table.release(e);
    PendingTable::Entry& again = table.acquire(t0 + 2s);
    CHECK(&again == &e);
    CHECK(again.token != old_token);
    CHECK(table.find(old_token) == nullptr);
    CHECK(table.find(again.token) == &again);
  }
  SECTION("tokens never issued are not found") {
    CHECK(table.find(0) == nullptr);
    CHECK(table.find(12345) == nullptr);
    CHECK(table.find(~uint64_t{0}) == nullptr);
  }
  SECTION("the table is full at its capacity, and has room again after a release") {
    PendingTable::Entry& a = table.acquire(t0);
    table.acquire(t0);
    table.acquire(t0);
    CHECK(table.full());
    table.release(a);
    CHECK_FALSE(table.full());
  }
}

TEST_CASE("pending table expires entries in deadline order", "[router]") {
  PendingTable table(10);
  const Clock::time_point t0 = Clock::now();
  std::vector<uint64_t> tokens;
  for (int i = 0; i < 4; ++i) tokens.push_back(table.acquire(t0 + std::chrono::milliseconds(100 * i)).token);

  SECTION("only entries at or past their deadline expire, oldest first") {
    std::vector<uint64_t> expired;
    table.expire(t0 + 100ms, [&](PendingTable::Entry& e) { expired.push_back(e.token); });
    CHECK(expired == std::vector<uint64_t>{tokens[0], tokens[1]});
    CHECK(table.size() == 2);
    CHECK(table.find(tokens[0]) == nullptr);
    CHECK(table.find(tokens[2]) != nullptr);
  }
  SECTION("answered entries are skipped, and next_deadline is the oldest live one") {
    table.release(*table.find(tokens[0]));
    table.release(*table.find(tokens[2]));
    CHECK(table.next_deadline() == t0 + 100ms);
    std::vector<uint64_t> expired;
    table.expire(t0 + 1s, [&](PendingTable::Entry& e) { expired.push_back(e.token); });
    CHECK(expired == std::vector<uint64_t>{tokens[1], tokens[3]});
    CHECK(table.size() == 0);
    CHECK_FALSE(table.next_deadline().has_value());
  }
}

namespace {

// A router on its own thread, serving `cfg` until stop() (or destruction).
class RouterThread {
 public:
  RouterThread(zmq::context_t& ctx, const MeshConfig& cfg, RouterOptions options = {}) {
    std::promise<std::optional<std::string>> bound;
    auto result = bound.get_future();
    thread_ = std::thread([&ctx, &cfg, &bound, options, this] {
      Router router(ctx, cfg, *cfg.find("router"), options);
      SupervisorLink link(ctx, "router");  // no supervisor in the environment: a no-op
      auto error = router.bind();
      if (!error) endpoint_ = router.client_endpoint();
      bound.set_value(error);
      if (error) return;
      router.run(link, [this] { return stop_.load(); });
    });
    error_ = result.get();
  }
  // The client endpoint as bound (the port the wildcard got).
  const std::string& endpoint() const { return endpoint_; }
  ~RouterThread() { stop(); }
  const std::optional<std::string>& error() const { return error_; }
  void request_stop() { stop_ = true; }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }

 private:
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::optional<std::string> error_;
  std::string endpoint_;
};

// A plain TCP connection to a tcp://127.0.0.1:PORT endpoint (no ZeroMQ): what a port scanner, an
// HTTP client or a stalled peer looks like to the router.
class RawConnection {
 public:
  // receive_buffer > 0: SO_RCVBUF before connecting (a client that reads slowly fills up soon).
  explicit RawConnection(const std::string& endpoint, int receive_buffer = 0) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (receive_buffer > 0) (void)::setsockopt(fd_, SOL_SOCKET, SO_RCVBUF, &receive_buffer, sizeof receive_buffer);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(std::stoi(endpoint.substr(endpoint.rfind(':') + 1))));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawConnection() {
    if (fd_ >= 0) ::close(fd_);
  }
  bool connected() const { return connected_; }
  // Writes all of `bytes` (blocking while the router has not read the rest); false when the
  // connection is closed.
  bool send(const std::string& bytes) {
    for (std::size_t done = 0; done < bytes.size();) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  // True once the router has closed the connection (EOF or reset), reading and discarding what it
  // sent (its greeting); false if it is still open after `wait`.
  bool closed_within(std::chrono::milliseconds wait) {
    const auto deadline = Clock::now() + wait;
    char buf[512];
    while (Clock::now() < deadline) {
      pollfd p{fd_, POLLIN, 0};
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now());
      if (::poll(&p, 1, static_cast<int>(std::max<long>(left.count(), 1))) <= 0) continue;
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return true;
    }
    return false;
  }

 private:
  int fd_ = -1;
  bool connected_ = false;
};

MeshConfig test_config(const std::string& prefix) {
  // bid-1 owns every slot but one, so any item but that slot's goes to it; bid-2 is never
  // running: its endpoint refuses connections.
  return parse_mesh_config(R"(
data_dir = "data"
request_timeout_ms = 200
[feed]
publish = "inproc://)" + prefix + R"(-feed-pub"
collect = "inproc://)" + prefix + R"(-feed-collect"
[[node]]
name = "router"
kind = "router"
listen = "tcp://127.0.0.1:*"
[[node]]
name = "bid-1"
kind = "bid"
listen = "inproc://)" + prefix + R"(-bid-1"
slots = ["0-16382"]
[[node]]
name = "bid-2"
kind = "bid"
listen = "tcp://127.0.0.1:1"
slots = ["16383"]
)",
                           "/tmp/router_test.toml");
}

// An item in the one slot of bid-2.
std::string item_of_bid2() {
  for (int i = 0;; ++i) {
    std::string item = "i" + std::to_string(i);
    if (slot_of(item) == 16383) return item;
  }
}

std::string request(Op op, const std::string& id, const std::string& item = "") {
  Request r;
  r.op = op;
  r.id = id;
  r.item = item;
  return encode_request(r);
}

Reply decode(const zmq::message_t& m) {
  auto r = decode_reply(str(m));
  REQUIRE(r.has_value());
  return *r;
}

// A client socket of `type` connected to the router, receives time out after `timeout`.
zmq::socket_t connect_client(zmq::context_t& ctx, zmq::socket_type type, const std::string& endpoint,
                             std::chrono::milliseconds timeout) {
  zmq::socket_t s(ctx, type);
  s.set(zmq::sockopt::linger, 0);
  s.set(zmq::sockopt::rcvtimeo, static_cast<int>(timeout.count()));
  s.connect(endpoint);
  return s;
}

// A ping on a REQ socket, answered by the router itself.
void ping(zmq::socket_t& req, const std::string& id) {
  REQUIRE(req.send(zmq::buffer(request(Op::ping, id)), zmq::send_flags::none));
  zmq::message_t reply;
  REQUIRE(req.recv(reply));
  CHECK(decode(reply).id == id);
}

}  // namespace

TEST_CASE("router routes, answers and times out requests", "[router]") {
  static int instance = 0;
  const std::string prefix = "router-test-" + std::to_string(++instance);
  const MeshConfig cfg = test_config(prefix);
  zmq::context_t ctx(1);

  // The fake bid node binds first, so the router's inproc DEALER connects to it at once.
  zmq::socket_t node(ctx, zmq::socket_type::router);
  node.set(zmq::sockopt::linger, 0);
  node.set(zmq::sockopt::rcvtimeo, 2000);
  node.bind(cfg.find("bid-1")->listen);

  RouterThread router(ctx, cfg);
  REQUIRE_FALSE(router.error().has_value());

  zmq::socket_t client = connect_client(ctx, zmq::socket_type::dealer, router.endpoint(), 2000ms);

  auto send = [&](const std::string& body) {
    std::vector<zmq::const_buffer> parts{zmq::const_buffer(nullptr, 0), zmq::buffer(body)};
    REQUIRE(zmq::send_multipart(client, parts));
  };
  // The client's next reply: [empty, body].
  auto receive = [&]() {
    std::vector<zmq::message_t> parts;
    REQUIRE(zmq::recv_multipart(client, std::back_inserter(parts)));
    REQUIRE(parts.size() == 2);
    CHECK(parts[0].size() == 0);
    return decode(parts[1]);
  };
  // The node's next request: [router identity, token frame, config digest, principal, body]; the
  // token frame asks for a one-frame reply (nodes/node_wire.h); with security off the principal
  // is empty (every role).
  auto node_receive = [&]() {
    std::vector<zmq::message_t> parts;
    REQUIRE(zmq::recv_multipart(node, std::back_inserter(parts)));
    REQUIRE(parts.size() == 5);
    CHECK(node_wire::wants_one_frame(str(parts[1])));
    const uint64_t digest = cfg.digest();
    CHECK(str(parts[2]) == std::string(reinterpret_cast<const char*>(&digest), sizeof digest));
    CHECK(parts[3].size() == 0);
    return parts;
  };
  // A bid node's reply: [router identity, one frame] (node_wire.h).
  auto node_reply = [&](std::vector<zmq::message_t>& req, const std::string& body) {
    std::string frame;
    node_wire::encode_reply(str(req[1]), body, nullptr, frame);
    std::vector<zmq::const_buffer> parts{zmq::buffer(req[0].data(), req[0].size()), zmq::buffer(frame)};
    REQUIRE(zmq::send_multipart(node, parts));
  };
  // An older bid node's reply: [router identity, token frame echoed, body].
  auto older_node_reply = [&](std::vector<zmq::message_t>& req, const std::string& body) {
    std::vector<zmq::const_buffer> parts{zmq::buffer(req[0].data(), req[0].size()),
                                         zmq::buffer(req[1].data(), req[1].size()), zmq::buffer(body)};
    REQUIRE(zmq::send_multipart(node, parts));
  };

  SECTION("ping is answered by the router itself") {
    send(request(Op::ping, "p1"));
    Reply r = receive();
    CHECK(r.ok);
    CHECK(r.id == "p1");
  }
  SECTION("a request goes to its owner unchanged and the owner's reply comes back, in one frame or an older node's several") {
    for (const bool older : {false, true}) {
      INFO((older ? "an older node's frames" : "one frame"));
      const std::string id = older ? "o1" : "g1";
      const std::string body = request(Op::get, id, "lot-7");
      send(body);
      auto req = node_receive();
      CHECK(str(req[4]) == body);
      const std::string reply = encode_ok(id, {{"item", std::string("lot-7")}});
      if (older) older_node_reply(req, reply);
      else node_reply(req, reply);
      Reply r = receive();
      CHECK(r.ok);
      CHECK(r.id == id);
      CHECK(r.str("item") == "lot-7");
    }
  }
  SECTION("a one-frame reply that does not parse is dropped, and the request times out") {
    send(request(Op::get, "m1", "x"));
    auto req = node_receive();
    std::string frame = str(req[1]).substr(0, node_wire::kTokenBytes) + '\x09' + encode_ok("m1");  // unknown kind
    std::vector<zmq::const_buffer> parts{zmq::buffer(req[0].data(), req[0].size()), zmq::buffer(frame)};
    REQUIRE(zmq::send_multipart(node, parts));
    Reply r = receive();
    CHECK(r.id == "m1");
    CHECK(r.error == "unavailable");
  }
  SECTION("replies to requests in flight may come back in any order") {
    send(request(Op::get, "a", "x"));
    send(request(Op::get, "b", "y"));
    auto first = node_receive();
    auto second = node_receive();
    node_reply(second, encode_ok("b"));
    node_reply(first, encode_ok("a"));
    CHECK(receive().id == "b");
    CHECK(receive().id == "a");
  }
  SECTION("a node that is not connected gets `unavailable` at once") {
    send(request(Op::get, "u1", item_of_bid2()));
    Reply r = receive();
    CHECK_FALSE(r.ok);
    CHECK(r.error == "unavailable");
    CHECK(r.id == "u1");
  }
  SECTION("a node that does not answer in time gets `unavailable`, and its late reply is dropped") {
    const auto start = Clock::now();
    send(request(Op::get, "t1", "slow"));
    auto req = node_receive();
    Reply r = receive();
    CHECK(Clock::now() - start >= 200ms);
    CHECK(r.error == "unavailable");
    CHECK(r.id == "t1");
    CHECK(r.message->find("bid-1") != std::string::npos);

    node_reply(req, encode_ok("t1"));  // too late
    send(request(Op::ping, "after"));
    CHECK(receive().id == "after");  // the late reply did not come first
  }
  SECTION("a reply with a token never issued is dropped") {
    send(request(Op::get, "g2", "x"));
    auto req = node_receive();
    uint64_t bogus = 0;
    std::memcpy(&bogus, req[1].data(), 8);
    bogus ^= 0xffff00000000ull;
    std::vector<zmq::const_buffer> parts{zmq::buffer(req[0].data(), req[0].size()), zmq::buffer(&bogus, 8),
                                         zmq::str_buffer("junk")};
    REQUIRE(zmq::send_multipart(node, parts));
    node_reply(req, encode_ok("g2"));
    CHECK(receive().id == "g2");
  }
  SECTION("malformed requests get `bad_request` or `too_large` from the router") {
    send("\xc1 not msgpack");
    Reply r = receive();
    CHECK(r.error == "bad_request");
    CHECK_FALSE(r.id.has_value());

    send(request(Op::get, "no-item"));
    r = receive();
    CHECK(r.error == "bad_request");
    CHECK(r.id == "no-item");

    send(std::string(cfg.max_request_bytes + 1, 'x'));
    r = receive();
    CHECK(r.error == "too_large");
    CHECK_FALSE(r.id.has_value());
  }
  SECTION("frames other than [empty, request] get `bad_request`") {
    const std::string ping = request(Op::ping, "p");
    std::vector<std::vector<zmq::const_buffer>> framings{
        {zmq::buffer(ping)},                                                     // no delimiter
        {zmq::const_buffer(nullptr, 0)},                                         // delimiter only
        {zmq::const_buffer(nullptr, 0), zmq::buffer(ping), zmq::buffer(ping)},   // two bodies
        {zmq::str_buffer("x"), zmq::buffer(ping)},                               // non-empty delimiter
    };
    for (const auto& parts : framings) {
      REQUIRE(zmq::send_multipart(client, parts));
      Reply r = receive();
      CHECK(r.error == "bad_request");
    }
    send(ping);  // the connection still serves
    CHECK(receive().ok);
  }
  SECTION("a stop lets a request in flight be answered before the router ends") {
    send(request(Op::get, "s1", "x"));
    auto req = node_receive();
    router.request_stop();
    node_reply(req, encode_ok("s1"));
    CHECK(receive().id == "s1");
    router.stop();
  }
  SECTION("a stop with a request the node never answers ends after its timeout") {
    send(request(Op::get, "s2", "x"));
    node_receive();
    router.request_stop();
    Reply r = receive();
    CHECK(r.id == "s2");
    CHECK(r.error == "unavailable");
    router.stop();
  }
}

TEST_CASE("router drops connections that do not speak ZMTP or stall in the handshake", "[router]") {
  // libzmq's engine does this (ZMQ_HANDSHAKE_IVL); the test keeps the promise checked.
  static int instance = 0;
  const std::string prefix = "router-conn-test-" + std::to_string(++instance);
  const MeshConfig cfg = test_config(prefix);
  zmq::context_t ctx(1);
  RouterOptions options;
  options.handshake_timeout = 300ms;
  RouterThread router(ctx, cfg, options);
  REQUIRE_FALSE(router.error().has_value());

  // A client that keeps working through all of it.
  zmq::socket_t client = connect_client(ctx, zmq::socket_type::req, router.endpoint(), 3000ms);
  ping(client, "before");

  SECTION("a peer that is not ZeroMQ is dropped at once") {
    RawConnection http(router.endpoint());
    REQUIRE(http.connected());
    (void)http.send("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    CHECK(http.closed_within(3000ms));
  }
  SECTION("a peer that never finishes the handshake is dropped after the handshake timeout") {
    const auto start = Clock::now();
    RawConnection silent(router.endpoint());
    REQUIRE(silent.connected());
    CHECK(silent.closed_within(5000ms));
    // Not before the timeout; libzmq's timers run on a coarse millisecond clock and were seen
    // firing up to 0.7 ms early, hence the margin.
    CHECK(Clock::now() - start >= 290ms);
  }
  ping(client, "after");  // the well-behaved client was served throughout
}
