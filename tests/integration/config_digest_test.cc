// Config agreement across hosts (issue 12): every node states the digest of the mesh config it
// loaded, and a bid node refuses requests from a router whose digest differs, so two slot maps
// can never both own an item. Real router and bid node processes on loopback.
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <regex>

#include <zmq.hpp>

#include "client/client.h"
#include "protocol/config.h"
#include "protocol/slot_map.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

TEST_CASE("config digest: a bid node whose mesh config differs answers unavailable and applies nothing",
          "[integration][digest]") {
  TestMesh mesh;  // router, bid-1 (slots 0-8191), bid-2 (8192-16383)
  // bid-2 gets a copy of the config whose slot map differs: bid-1 0-4095, bid-2 4096-16383.
  const auto other = mesh.dir() / "other.toml";
  std::string text = read_file(mesh.config_path());
  text = std::regex_replace(text, std::regex("\"0-8191\""), "\"0-4095\"");
  text = std::regex_replace(text, std::regex("\"8192-16383\""), "\"4096-16383\"");
  std::ofstream(other) << text;
  REQUIRE(load_mesh_config(other).digest() != load_mesh_config(mesh.config_path()).digest());

  mesh.start_node("router");
  mesh.start_node(mesh.bid_node_name(0));
  Process bid2({program_path("bidmesh-bid-node"), "--config", other.string(), "--name", mesh.bid_node_name(1)},
               mesh.log_file(mesh.bid_node_name(1)));
  REQUIRE(mesh.wait_node_serving(0, 20s));

  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 2000, 2);
  const std::string theirs = mesh.item_on_node(1, 0);
  std::optional<Reply> refused;
  REQUIRE(wait_until(
      [&] {
        refused = c.call(make_request(Op::open, theirs));
        return refused && refused->message.value_or("").find("digest") != std::string::npos;
      },
      20s, 50ms));
  CHECK(refused->error == std::optional<std::string>("unavailable"));
  CHECK(refused->id.has_value());
  INFO(refused->message.value_or(""));
  CHECK(refused->message->find(load_mesh_config(other).digest_hex()) != std::string::npos);
  CHECK(read_file(mesh.log_file(mesh.bid_node_name(1))).find("refusing requests") != std::string::npos);
  // Every node states its digest at start.
  CHECK(read_file(mesh.log_file("router")).find(load_mesh_config(mesh.config_path()).digest_hex()) !=
        std::string::npos);

  // bid-1 agrees with the router and serves.
  const std::string ours = mesh.item_on_node(0, 0);
  CHECK(c.call(make_request(Op::open, ours)).value_or(Reply{}).ok);

  // Once bid-2 runs the mesh's config, the refused open is applied: it was never applied before.
  bid2.kill_now();
  mesh.start_node(mesh.bid_node_name(1));
  REQUIRE(mesh.wait_node_serving(1, 20s));
  auto opened = c.call(make_request(Op::open, theirs));
  REQUIRE(opened);
  CHECK(opened->ok);
}

namespace {

// Two hosts on one machine: supervisor "a" runs the router, supervisor "b" the bid nodes, each
// from its own copy of the config (its own dir, so its own data and control socket).
struct TwoHostConfigs {
  TempDir dir;
  std::string request = free_tcp_endpoint(), publish = free_tcp_endpoint(), collect = free_tcp_endpoint();
  std::string bid1 = free_tcp_endpoint(), bid2 = free_tcp_endpoint();

  std::filesystem::path write(const std::string& host, const std::string& bid1_slots, const std::string& bid2_slots) {
    const auto d = dir.path() / host;
    std::filesystem::create_directories(d);
    std::ofstream(d / "mesh.toml") << "data_dir = \"data\"\nmap_size_mb = 64\nstop_timeout_ms = 3000\n"
                                   << "request_timeout_ms = 1000\n"
                                   << "[feed]\npublish = \"" << publish << "\"\ncollect = \"" << collect << "\"\n"
                                   << "[[node]]\nname = \"router\"\nkind = \"router\"\nhost = \"a\"\nlisten = \""
                                   << request << "\"\nfeed = true\n"
                                   << "[[node]]\nname = \"bid-1\"\nkind = \"bid\"\nhost = \"b\"\nlisten = \"" << bid1
                                   << "\"\nslots = [\"" << bid1_slots << "\"]\n"
                                   << "[[node]]\nname = \"bid-2\"\nkind = \"bid\"\nhost = \"b\"\nlisten = \"" << bid2
                                   << "\"\nslots = [\"" << bid2_slots << "\"]\n";
    return d / "mesh.toml";
  }
};

RunResult ctl(const std::filesystem::path& config, std::vector<std::string> args) {
  std::vector<std::string> argv{program_path("bidmesh-ctl"), "--config", config.string()};
  argv.insert(argv.end(), args.begin(), args.end());
  return run_program(argv);
}

}  // namespace

TEST_CASE("config digest: bidmesh-ctl status shows the refusal on the router's host and on the bid node's",
          "[integration][digest][supervisor]") {
  TwoHostConfigs hosts;
  const auto config_a = hosts.write("a", "0-8191", "8192-16383");
  const auto config_b = hosts.write("b", "0-4095", "4096-16383");  // host b's copy differs
  const std::string digest_a = load_mesh_config(config_a).digest_hex();
  const std::string digest_b = load_mesh_config(config_b).digest_hex();
  REQUIRE(digest_a != digest_b);

  Process sup_a({program_path("bidmesh-supervisor"), "--config", config_a.string(), "--host", "a"},
                hosts.dir.path() / "a.out");
  Process sup_b({program_path("bidmesh-supervisor"), "--config", config_b.string(), "--host", "b"},
                hosts.dir.path() / "b.out");
  auto ready = [&](const char* host) {
    return read_file(hosts.dir.path() / (std::string(host) + ".out")).find("bidmesh: mesh ready") != std::string::npos;
  };
  REQUIRE(wait_until([&] { return ready("a") && ready("b"); }, 30s));

  zmq::context_t ctx;
  Client c(ctx, hosts.request, 2000, 2);
  std::string item;  // in bid-2's range on both copies, so the router sends it to bid-2
  for (int k = 0; item.empty(); ++k) {
    if (slot_of("digest-item-" + std::to_string(k)) >= 8192) item = "digest-item-" + std::to_string(k);
  }
  auto refused = c.call(make_request(Op::open, item));
  REQUIRE(refused);
  CHECK(refused->error == std::optional<std::string>("unavailable"));

  // The router's host: which node refuses it, with both digests.
  RunResult status_a;
  const bool router_note = wait_until(
      [&] {
        status_a = ctl(config_a, {"status"});
        return status_a.out.find("bid node bid-2 refuses this router: mesh config digest " + digest_b + " there, " +
                                 digest_a + " here") != std::string::npos;
      },
      10s, 100ms);
  INFO(status_a.out);
  CHECK(router_note);
  CHECK(status_a.exit_code == 0);
  CHECK(read_file(hosts.dir.path() / "a" / "data" / "logs" / "router.log").find("refuses this router") !=
        std::string::npos);
  // The bid node's host.
  RunResult status_b;
  const bool node_note = wait_until(
      [&] {
        status_b = ctl(config_b, {"--json", "status", "bid-2"});
        return status_b.out.find("\"note\":\"refusing requests of a router whose mesh config digest is " + digest_a +
                                 " (this node: " + digest_b + ")\"") != std::string::npos;
      },
      10s, 100ms);
  INFO(status_b.out);
  CHECK(node_note);
  // bid-1 refused nothing: its note is empty.
  const RunResult bid1 = ctl(config_b, {"--json", "status", "bid-1"});
  CHECK(bid1.out.find("\"note\":\"\"") != std::string::npos);

  sup_a.signal(SIGTERM);
  sup_b.signal(SIGTERM);
  CHECK(sup_a.wait_exit(20s));
  CHECK(sup_b.wait_exit(20s));
}
