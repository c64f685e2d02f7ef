// Who may do what, end to end (docs/security.md; the wire contract's Security section): a real
// mesh with security = "curve", certificates written by the security library into a real
// clients_dir, clients on real CurveZMQ sockets.
#include <catch2/catch.hpp>

#include <ifaddrs.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <fstream>
#include <regex>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "protocol/messages.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

std::string error_of(const std::optional<Reply>& r) {
  if (!r) return "<no reply>";
  return r->ok ? "ok" : r->error.value_or("<none>");
}

Request open_request(const std::string& item) { return make_request(Op::open, item); }

// Waits until the node's log holds `text`.
bool log_has(const TestMesh& mesh, const std::string& node, const std::string& text, std::chrono::milliseconds wait) {
  return wait_until([&] { return read_file(mesh.log_file(node)).find(text) != std::string::npos; }, wait);
}

// The first IPv4 address of this machine that is not loopback, if any.
std::optional<std::string> non_loopback_ipv4() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) return std::nullopt;
  std::optional<std::string> found;
  for (ifaddrs* a = list; a != nullptr && !found; a = a->ifa_next) {
    if (a->ifa_addr == nullptr || a->ifa_addr->sa_family != AF_INET) continue;
    const auto* in = reinterpret_cast<const sockaddr_in*>(a->ifa_addr);
    if ((ntohl(in->sin_addr.s_addr) >> 24) == 127) continue;
    char text[INET_ADDRSTRLEN];
    if (inet_ntop(AF_INET, &in->sin_addr, text, sizeof text)) found = text;
  }
  freeifaddrs(list);
  return found;
}

// Each test below runs twice (GENERATE): clients on the router's listen, and clients straight on
// a bid node's client_listen (direct clients, v1.2), which must judge them the same.
MeshOptions curve_mesh(bool direct) {
  MeshOptions options;
  options.curve = true;
  options.client_listen = direct;
  return options;
}
std::string client_side(const TestMesh& mesh, bool direct, int node) {
  return direct ? mesh.client_endpoint(node) : mesh.request_endpoint();
}
// The process that serves that endpoint (its log, its SIGHUP).
std::string serving_process(const TestMesh& mesh, bool direct, int node) {
  return direct ? mesh.bid_node_name(node) : "router";
}

}  // namespace

TEST_CASE("security: each role does what it may, and gets forbidden past it", "[integration][security]") {
  const bool direct = GENERATE(false, true);
  TestMesh mesh(curve_mesh(direct));
  const CurveKeys alice = mesh.add_client("alice", "bidder");
  const CurveKeys reader = mesh.add_client("rita", "");
  const CurveKeys agent = mesh.add_client("agency", "agent");
  const CurveKeys auctioneer = mesh.add_client("auctioneer", "auctioneer");
  mesh.start_all();
  zmq::context_t ctx;
  const std::string endpoint = client_side(mesh, direct, 0);
  INFO("clients on " << endpoint << (direct ? " (bid node's client_listen)" : " (router)"));
  Client as_alice(ctx, endpoint, 2000, 2, "alice", alice);
  Client as_reader(ctx, endpoint, 2000, 2, "rita", reader);
  Client as_agent(ctx, endpoint, 2000, 2, "agency", agent);
  Client as_auctioneer(ctx, endpoint, 2000, 2, "auct", auctioneer);
  const std::string item = mesh.item_on_node(0, 3);

  CHECK(error_of(as_reader.call(open_request(item))) == "forbidden");
  CHECK(error_of(as_alice.call(open_request(item))) == "forbidden");
  CHECK(error_of(as_agent.call(open_request(item))) == "forbidden");
  CHECK(error_of(as_auctioneer.call(open_request(item))) == "ok");

  // Readers read; every allowed key may ping, get and read history.
  CHECK(error_of(as_reader.call(make_request(Op::ping, ""))) == "ok");
  CHECK(error_of(as_reader.call(make_request(Op::get, item))) == "ok");
  CHECK(error_of(as_reader.call(make_request(Op::history, item))) == "ok");
  CHECK(error_of(as_reader.call(make_bid(item, "rita", 10))) == "forbidden");

  // A bidder bids as itself only; the refusal names the reason.
  auto impersonation = as_alice.call(make_bid(item, "bob", 10, "alice-1"));
  CHECK(error_of(impersonation) == "forbidden");
  REQUIRE(impersonation);
  CHECK(impersonation->id == std::optional<std::string>("alice-1"));
  CHECK(impersonation->message.value_or("").find("agent") != std::string::npos);
  // Not remembered: the same (item, id) with other content is judged afresh, not a `conflict`.
  CHECK(error_of(as_alice.call(make_bid(item, "alice", 10, "alice-1"))) == "ok");

  // An agent bids for anyone; the stored bidder is the one the agent named.
  CHECK(error_of(as_agent.call(make_bid(item, "bob", 20))) == "ok");
  auto got = as_reader.call(make_request(Op::get, item));
  REQUIRE(got);
  CHECK(got->str("bidder") == std::optional<std::string>("bob"));
  CHECK(got->u64("max") == std::optional<uint64_t>(20));

  // Fields are judged before roles: a bad request of a reader is `bad_request`, not `forbidden`.
  Request bad_open = open_request(item);
  bad_open.start = 0;
  CHECK(error_of(as_reader.call(bad_open)) == "bad_request");
  // And roles before the item's state: alice's close of an item that exists is `forbidden`.
  CHECK(error_of(as_alice.call(make_request(Op::close, item))) == "forbidden");
  CHECK(error_of(as_auctioneer.call(make_request(Op::close, item))) == "ok");
}

TEST_CASE("security: an unknown key and a plaintext client are refused at the handshake", "[integration][security]") {
  const bool direct = GENERATE(false, true);
  TestMesh mesh(curve_mesh(direct));
  // Only the process that serves the clients (the router, or one bid node): the count below must
  // be exact.
  const std::string server = serving_process(mesh, direct, 0);
  mesh.start_node(server);
  REQUIRE(log_has(mesh, server, direct ? "serving on " : "serving clients on", 20s));
  const std::string endpoint = client_side(mesh, direct, 0);
  zmq::context_t ctx;

  // Keys of a client that is not in clients_dir: made the same way, then never installed.
  const CurveKeys stranger = mesh.add_client("stranger", "auctioneer");
  std::filesystem::remove(mesh.clients_dir() / "stranger.key");
  // A `get` of an item of the node: past the handshake it would count as a request of the node.
  const Request get = make_request(Op::get, mesh.item_on_node(0, 1));
  Client unknown(ctx, endpoint, 500, 1, "stranger", stranger);
  CHECK_FALSE(unknown.call(make_request(Op::ping, "")).has_value());
  CHECK_FALSE(unknown.call(get).has_value());
  Client plaintext(ctx, endpoint, 500, 1, "plain");
  CHECK_FALSE(plaintext.call(make_request(Op::ping, "")).has_value());
  CHECK_FALSE(plaintext.call(get).has_value());
  // The feed (the router's) refuses a plaintext subscriber the same way: it never gets the
  // welcome of a join.
  if (!direct) {
    zmq::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    sub.set(zmq::sockopt::rcvtimeo, 300);
    sub.set(zmq::sockopt::subscribe, "");
    sub.connect(mesh.feed_endpoint());
    zmq::message_t m;
    CHECK_FALSE(sub.recv(m).has_value());
  }

  // One allowed request, one try (a long timeout: a retry would count twice).
  Client admin(ctx, endpoint, 10000, 0, "admin", *mesh.admin_keys());
  CHECK(error_of(admin.call(make_request(Op::ping, ""))) == "ok");
  if (direct) {
    // And a `get`, which reaches the store.
    CHECK(error_of(admin.call(get)) == "unknown_item");
    mesh.stop_node(server, SIGTERM);
    const std::string log = read_file(mesh.log_file(server));
    std::smatch m;
    INFO(log);
    REQUIRE(std::regex_search(log, m, std::regex("stats: (\\d+) requests")));
    CHECK(m[1] == "2");  // the admin's ping and get only: nothing of the refused peers' 8 tries
    return;
  }

  mesh.stop_node("router", SIGTERM);
  const std::string log = read_file(mesh.log_file("router"));
  std::smatch m;
  REQUIRE(std::regex_search(log, m, std::regex("read (\\d+) client messages, refused (\\d+) handshakes")));
  INFO(log);
  CHECK(m[1] == "1");                  // the admin's ping only: nothing of the refused peers
  CHECK(std::stoi(m[2].str()) >= 2);   // the stranger's two tries at least
}

TEST_CASE("security: a reload revokes a key within 1 s, on open connections too, and admits a new one",
          "[integration][security]") {
  const bool direct = GENERATE(false, true);
  TestMesh mesh(curve_mesh(direct));
  const CurveKeys alice = mesh.add_client("alice", "bidder");
  mesh.start_all();
  zmq::context_t ctx;
  const std::string endpoint = client_side(mesh, direct, 1), server = serving_process(mesh, direct, 1);
  INFO("clients on " << endpoint << " of " << server);
  Client as_alice(ctx, endpoint, 2000, 2, "alice", alice);
  const std::string item = mesh.item_on_node(1, 2);
  Client admin(ctx, endpoint, 2000, 2, "admin", *mesh.admin_keys());
  REQUIRE(error_of(admin.call(open_request(item))) == "ok");
  REQUIRE(error_of(as_alice.call(make_bid(item, "alice", 5))) == "ok");

  std::filesystem::remove(mesh.clients_dir() / "alice.key");
  const CurveKeys dave = mesh.add_client("dave", "bidder");
  const auto reload_sent = std::chrono::steady_clock::now();
  mesh.process(server)->signal(SIGHUP);
  // Alice's open connection: her next requests are `forbidden` once the reload is in.
  bool revoked = wait_until([&] { return error_of(as_alice.call(make_request(Op::get, item))) == "forbidden"; }, 5s);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - reload_sent);
  std::printf("security: revocation on %s took effect %lld ms after the SIGHUP\n", server.c_str(),
              static_cast<long long>(took.count()));
  CHECK(revoked);
  CHECK(took < 1000ms);
  CHECK(error_of(as_alice.call(make_bid(item, "alice", 6))) == "forbidden");
  CHECK(error_of(as_alice.call(make_request(Op::ping, ""))) == "forbidden");
  // Her new connections are refused at the handshake.
  Client alice_again(ctx, endpoint, 500, 0, "alice2", alice);
  CHECK_FALSE(alice_again.call(make_request(Op::ping, "")).has_value());
  // The added key connects and bids.
  Client as_dave(ctx, endpoint, 2000, 2, "dave", dave);
  CHECK(error_of(as_dave.call(make_bid(item, "dave", 7))) == "ok");
  CHECK(log_has(mesh, server, "reloaded 2 clients", 1s));

  // A clients_dir that no longer loads keeps the previous list in force, and says why.
  std::ofstream(mesh.clients_dir() / "broken.key") << "not a certificate\n";
  mesh.process(server)->signal(SIGHUP);
  CHECK(log_has(mesh, server, "reload refused, the previous clients stay allowed", 5s));
  CHECK(error_of(as_dave.call(make_bid(item, "dave", 8))) == "ok");
}

TEST_CASE("security: a secret certificate that others may read is refused at start", "[integration][security]") {
  MeshOptions options;
  options.curve = true;
  TestMesh mesh(options);
  REQUIRE(::chmod((mesh.keys_dir() / "mesh.key_secret").c_str(), 0644) == 0);
  for (const std::string program : {"bidmesh-router", "bidmesh-bid-node"}) {
    const std::string name = program == "bidmesh-router" ? "router" : "bid-1";
    RunResult r = run_program({program_path(program), "--config", mesh.config_path().string(), "--name", name});
    INFO(program << ": " << r.out);
    CHECK(r.exit_code != 0);
    CHECK(r.out.find("chmod") != std::string::npos);
  }
}

TEST_CASE("security: protected mode refuses a mesh without CURVE that binds beyond loopback",
          "[integration][security]") {
  TempDir dir;
  const auto config = dir.path() / "mesh.toml";
  std::ofstream(config) << "data_dir = \"data\"\n"
                        << mesh_nodes_toml("tcp://0.0.0.0:" + std::to_string(free_tcp_port()), free_tcp_endpoint(), 1);
  RunResult r = run_program({program_path("bidmesh-router"), "--config", config.string(), "--name", "router"});
  INFO(r.out);
  CHECK(r.exit_code == 100);
  CHECK(r.out.find("tcp://0.0.0.0:") != std::string::npos);
  CHECK(r.out.find("curve") != std::string::npos);
}

TEST_CASE("security: a bid node off loopback admits only the mesh's key, and the feed only allowed clients",
          "[integration][security]") {
  const auto address = non_loopback_ipv4();
  if (!address) FAIL("this machine has no IPv4 address beyond loopback; the test needs one");
  MeshOptions options;
  options.curve = true;
  TestMesh mesh(options);
  // Move bid-1 onto the machine's outside address: its link from the router must be CURVE.
  const std::string outside = "tcp://" + *address + ":" + std::to_string(free_tcp_port());
  std::string config = read_file(mesh.config_path());
  const std::regex bid1_listen("(name = \"bid-1\"[^\\[]*listen = \")[^\"]*");
  REQUIRE(std::regex_search(config, bid1_listen));
  config = std::regex_replace(config, bid1_listen, "$1" + outside);
  std::ofstream(mesh.config_path()) << config;
  mesh.start_all();
  zmq::context_t ctx;

  // Through the router, bid-1 serves.
  Client admin(ctx, mesh.request_endpoint(), 2000, 2, "admin", *mesh.admin_keys());
  const std::string item = mesh.item_on_node(0, 5);
  REQUIRE(error_of(admin.call(open_request(item))) == "ok");

  // Straight at bid-1, a plaintext DEALER and a client key that is not the mesh's get nothing.
  auto try_direct = [&](const std::optional<CurveKeys>& keys) {
    zmq::socket_t d(ctx, zmq::socket_type::dealer);
    d.set(zmq::sockopt::linger, 0);
    d.set(zmq::sockopt::rcvtimeo, 500);
    if (keys) apply_curve_keys(d, *keys);
    d.connect(outside);
    uint64_t token = 1;
    const std::string body = encode_request(make_request(Op::get, item, "direct"));
    std::vector<zmq::const_buffer> parts{zmq::buffer(&token, sizeof token), zmq::const_buffer(nullptr, 0),
                                         zmq::buffer(body)};
    (void)zmq::send_multipart(d, parts, zmq::send_flags::dontwait);
    std::vector<zmq::message_t> reply;
    return zmq::recv_multipart(d, std::back_inserter(reply)).has_value();
  };
  CHECK_FALSE(try_direct(std::nullopt));
  CHECK_FALSE(try_direct(*mesh.admin_keys()));

  // The feed: an allowed client sees the events; one with an unknown key sees nothing.
  auto subscriber = [&](const CurveKeys& keys) {
    zmq::socket_t sub(ctx, zmq::socket_type::sub);
    sub.set(zmq::sockopt::linger, 0);
    sub.set(zmq::sockopt::rcvtimeo, 200);
    apply_curve_keys(sub, keys);
    sub.set(zmq::sockopt::subscribe, "item/");
    sub.connect(mesh.feed_endpoint());
    return sub;
  };
  const CurveKeys stranger = mesh.add_client("stranger", "");
  std::filesystem::remove(mesh.clients_dir() / "stranger.key");
  zmq::socket_t allowed = subscriber(*mesh.admin_keys());
  zmq::socket_t refused = subscriber(stranger);
  // Bids until the allowed subscriber has an event (its subscription is live by then).
  uint64_t amount = 1;
  bool seen = wait_until(
      [&] {
        (void)admin.call(make_bid(item, "someone", amount++));
        std::vector<zmq::message_t> event;
        return zmq::recv_multipart(allowed, std::back_inserter(event)).has_value();
      },
      10s, 0ms);
  CHECK(seen);
  std::vector<zmq::message_t> event;
  CHECK_FALSE(zmq::recv_multipart(refused, std::back_inserter(event)).has_value());
}
