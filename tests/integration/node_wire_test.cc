// The router-to-node hop (nodes/node_wire.h) against a real bid node process: a router of this
// version (9-byte token frame) gets its reply as one frame; an older router (8-byte token) still
// gets [token, reply], so routers and bid nodes of two versions keep serving during an upgrade.
#include <catch2/catch.hpp>

#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "nodes/node_wire.h"
#include "protocol/config.h"
#include "protocol/messages.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

// Sends [token frame, digest, principal (empty: security off), request] as a router's DEALER
// does, and returns the frames of the reply (none within 10 s: empty).
std::vector<std::string> call_node(zmq::socket_t& dealer, const std::string& token_frame, uint64_t digest,
                                   const Request& r) {
  const std::string body = encode_request(r);
  dealer.send(zmq::buffer(token_frame), zmq::send_flags::sndmore);
  dealer.send(zmq::const_buffer(&digest, sizeof digest), zmq::send_flags::sndmore);
  dealer.send(zmq::const_buffer("", 0), zmq::send_flags::sndmore);
  dealer.send(zmq::buffer(body), zmq::send_flags::none);
  std::vector<std::string> frames;
  zmq::pollitem_t item{dealer.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, std::chrono::milliseconds(10000)) == 0) return frames;
  std::vector<zmq::message_t> msgs;
  (void)zmq::recv_multipart(dealer, std::back_inserter(msgs));
  for (const auto& m : msgs) frames.push_back(m.to_string());
  return frames;
}

}  // namespace

TEST_CASE("node wire: a bid node answers in one frame when the token frame asks, in the older frames otherwise",
          "[integration][node_wire]") {
  TestMesh mesh;
  mesh.start_all();
  const MeshConfig cfg = load_mesh_config(mesh.config_path());
  const NodeConfig* node = cfg.find(mesh.bid_node_name(0));
  REQUIRE(node != nullptr);
  zmq::context_t ctx;
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(node->listen);
  const uint64_t digest = cfg.digest();
  const std::string item = mesh.item_on_node(0, 0);
  const uint64_t token = 0x1122334455667788ull;

  SECTION("this version's router: one frame with the token, the reply after it") {
    const auto frames = call_node(dealer, node_wire::token_frame(token), digest, make_request(Op::open, item, "wire-1"));
    REQUIRE(frames.size() == 1);
    const auto parsed = node_wire::parse_reply(frames[0]);
    REQUIRE(parsed.has_value());
    CHECK(parsed->token == token);
    CHECK_FALSE(parsed->node_digest.has_value());
    const auto reply = decode_reply(parsed->body);
    REQUIRE(reply.has_value());
    CHECK(reply->ok);
    CHECK(reply->id == std::optional<std::string>("wire-1"));
  }
  SECTION("this version's router with another config digest: one frame with the node's digest and `unavailable`") {
    const auto frames =
        call_node(dealer, node_wire::token_frame(token), digest + 1, make_request(Op::open, item, "wire-2"));
    REQUIRE(frames.size() == 1);
    const auto parsed = node_wire::parse_reply(frames[0]);
    REQUIRE(parsed.has_value());
    CHECK(parsed->token == token);
    CHECK(parsed->node_digest == std::optional<uint64_t>(digest));
    const auto reply = decode_reply(parsed->body);
    REQUIRE(reply.has_value());
    CHECK(reply->error == std::optional<std::string>("unavailable"));
  }
  SECTION("an older router's 8-byte token: [token, reply], the token echoed") {
    const std::string old_token = node_wire::token_frame(token).substr(0, node_wire::kTokenBytes);
    const auto frames = call_node(dealer, old_token, digest, make_request(Op::open, item, "wire-3"));
    REQUIRE(frames.size() == 2);
    CHECK(frames[0] == old_token);
    const auto reply = decode_reply(frames[1]);
    REQUIRE(reply.has_value());
    CHECK(reply->ok);
    CHECK(reply->id == std::optional<std::string>("wire-3"));
  }
}
