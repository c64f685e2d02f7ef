// Config agreement across hosts (issue 12): every node states the digest of the mesh config it
// loaded, and a bid node refuses requests from a router whose digest differs, so two slot maps
// can never both own an item. Real router and bid node processes on loopback.
#include <catch2/catch.hpp>

#include <fstream>
#include <regex>

#include <zmq.hpp>

#include "client/client.h"
#include "protocol/config.h"
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
