// The node-to-supervisor message (protocol/control.h): the one encoder and decoder that nodes and
// the supervisor share.
#include <catch2/catch.hpp>

#include <msgpack.hpp>

#include "protocol/control.h"

using namespace bidmesh;

namespace {
// A map of n entries, written key by key: Map(2).kv("type", "ready").kv("pid", 1).str().
struct Map {
  explicit Map(uint32_t n) { pk.pack_map(n); }
  template <typename T>
  Map& kv(const char* key, const T& value) {
    pk.pack(key);
    pk.pack(value);
    return *this;
  }
  std::string str() const { return {buf.data(), buf.size()}; }
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
};
}  // namespace

TEST_CASE("node message round trips and refuses bad frames", "[protocol]") {
  SECTION("ready and heartbeat round trip") {
    for (std::string_view type : {kMsgReady, kMsgHeartbeat}) {
      const auto m = decode_node_message(encode_node_message({std::string(type), "bid-1", 4242}));
      REQUIRE(m);
      CHECK(m->type == type);
      CHECK(m->name == "bid-1");
      CHECK(m->pid == 4242);
    }
  }
  SECTION("a note round trips; none is the empty string; a long one is cut to fit") {
    const auto with = decode_node_message(encode_node_message({"heartbeat", "router", 9, "bid-2 refuses: digest"}));
    REQUIRE(with);
    CHECK(with->note == "bid-2 refuses: digest");
    const auto without = decode_node_message(encode_node_message({"heartbeat", "router", 9}));
    REQUIRE(without);
    CHECK(without->note.empty());
    const auto cut = decode_node_message(encode_node_message({"heartbeat", "router", 9, std::string(4000, 'x')}));
    REQUIRE(cut);
    CHECK(cut->note == std::string(kMaxNodeNoteBytes, 'x'));
    CHECK_FALSE(decode_node_message(Map(4).kv("type", "ready").kv("name", "a").kv("pid", uint64_t{1}).kv("note", 5).str()));
  }
  SECTION("keys in any order, unknown keys ignored") {
    const auto m = decode_node_message(
        Map(4).kv("pid", uint64_t{7}).kv("extra", std::vector<int>{1, 2}).kv("name", "router").kv("type", "ready").str());
    REQUIRE(m);
    CHECK(m->name == "router");
    CHECK(m->pid == 7);
  }
  SECTION("a missing or mistyped field") {
    CHECK_FALSE(decode_node_message(Map(2).kv("type", "ready").kv("name", "a").str()));
    CHECK_FALSE(decode_node_message(Map(3).kv("type", "ready").kv("name", "a").kv("pid", "1").str()));
    CHECK_FALSE(decode_node_message(Map(3).kv("type", "ready").kv("name", "a").kv("pid", int64_t{-1}).str()));
    CHECK_FALSE(decode_node_message(Map(3).kv("type", 1).kv("name", "a").kv("pid", uint64_t{1}).str()));
  }
  SECTION("garbage") {
    CHECK_FALSE(decode_node_message(""));
    CHECK_FALSE(decode_node_message("\xc1"));
    CHECK_FALSE(decode_node_message(std::string("\x91\x01", 2)));              // not a map
    CHECK_FALSE(decode_node_message(std::string("\xdf\xff\xff\xff\xff", 5)));  // huge map header
    CHECK_FALSE(decode_node_message(encode_node_message({"ready", "a", 1}) + "x"));  // trailing bytes
    CHECK_FALSE(decode_node_message(encode_node_message({"ready", std::string(kMaxNodeMessageBytes, 'n'), 1})));
  }
}
