// nodes/node_wire.h: the token frame and the one-frame reply of the router-to-node hop.
#include <catch2/catch.hpp>

#include "nodes/node_wire.h"

using namespace bidmesh;

TEST_CASE("node wire: a one-frame reply carries the token, the digest refusal and the reply bytes", "[unit][node_wire]") {
  const uint64_t token = 0x0102030405060708ull;
  const std::string frame = node_wire::token_frame(token);
  REQUIRE(frame.size() == node_wire::kTokenFrameBytes);
  CHECK(node_wire::wants_one_frame(frame));
  CHECK_FALSE(node_wire::wants_one_frame(frame.substr(0, node_wire::kTokenBytes)));  // an older router's token
  CHECK_FALSE(node_wire::wants_one_frame(frame.substr(0, 8) + std::string(1, '\x07')));

  const std::string reply("\x81\xa2ok\xc3", 5);  // {ok: true}, with bytes a string must keep
  std::string out;
  node_wire::encode_reply(frame, reply, nullptr, out);
  auto parsed = node_wire::parse_reply(out);
  REQUIRE(parsed.has_value());
  CHECK(parsed->token == token);
  CHECK_FALSE(parsed->node_digest.has_value());
  CHECK(parsed->body == reply);

  const uint64_t digest = 0xfeedfacecafebeefull;
  node_wire::encode_reply(frame, reply, &digest, out);
  parsed = node_wire::parse_reply(out);
  REQUIRE(parsed.has_value());
  CHECK(parsed->token == token);
  CHECK(parsed->node_digest == std::optional<uint64_t>(digest));
  CHECK(parsed->body == reply);

  node_wire::encode_reply(frame, "", nullptr, out);  // an empty reply is still a reply
  parsed = node_wire::parse_reply(out);
  REQUIRE(parsed.has_value());
  CHECK(parsed->body.empty());
}

TEST_CASE("node wire: frames that are not one-frame replies are refused", "[unit][node_wire]") {
  CHECK_FALSE(node_wire::parse_reply("").has_value());
  CHECK_FALSE(node_wire::parse_reply(std::string(8, '\x01')).has_value());  // a token alone
  CHECK_FALSE(node_wire::parse_reply(std::string(8, '\x01') + '\x02' + "reply").has_value());  // unknown kind
  CHECK_FALSE(node_wire::parse_reply(std::string(8, '\x01') + '\x01' + "1234567").has_value());  // digest cut short
}
