// SlotTable: decoding the `slots` reply of wire contract v1.2 (client/slot_table.h).
#include <catch2/catch.hpp>

#include <msgpack.hpp>

#include "client/slot_table.h"
#include "protocol/slot_map.h"

namespace {
using namespace bidmesh;

struct Range {
  uint32_t first, last;
  const char* endpoint;  // null: nil
};

std::string slots_frame(const std::vector<Range>& ranges, bool ok = true) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(4);
  pk.pack("ok");
  pk.pack(ok);
  pk.pack("id");
  pk.pack("t-1");
  pk.pack("digest");
  pk.pack("00ab");
  pk.pack("slots");
  pk.pack_array(static_cast<uint32_t>(ranges.size()));
  for (const auto& r : ranges) {
    pk.pack_map(4);
    pk.pack("first");
    pk.pack(r.first);
    pk.pack("last");
    pk.pack(r.last);
    pk.pack("node");
    pk.pack("n" + std::to_string(r.first));
    pk.pack("endpoint");
    if (r.endpoint) pk.pack(std::string(r.endpoint)); else pk.pack_nil();
  }
  return std::string(buf.data(), buf.size());
}
}  // namespace

TEST_CASE("SlotTable routes each slot to its range's endpoint", "[client]") {
  auto t = decode_slots_reply(slots_frame({{0, 8191, "tcp://a:1"}, {8192, 12000, "tcp://b:2"}, {12001, 16383, "tcp://a:1"}}));
  REQUIRE(t);
  CHECK(t->digest() == "00ab");
  REQUIRE(t->endpoints() == std::vector<std::string>{"tcp://a:1", "tcp://b:2"});
  CHECK(t->endpoint_of_slot(0) == 0);
  CHECK(t->endpoint_of_slot(8192) == 1);
  CHECK(t->endpoint_of_slot(16383) == 0);
  // CRC16("123456789") = 0x31C3, slot 12739: the third range.
  CHECK(slot_of("123456789") == 0x31C3 % kSlotCount);
  CHECK(t->endpoint_of_item("123456789") == 0);
}

TEST_CASE("SlotTable sends a node without a client endpoint through the router", "[client]") {
  auto t = decode_slots_reply(slots_frame({{0, 99, nullptr}, {100, 16383, "tcp://b:2"}}));
  REQUIRE(t);
  CHECK(t->endpoint_of_slot(50) == SlotTable::kViaRouter);
  CHECK(t->endpoint_of_slot(100) == 0);
}

TEST_CASE("SlotTable refuses half a map", "[client]") {
  std::string why;
  SECTION("a gap") {
    CHECK_FALSE(decode_slots_reply(slots_frame({{0, 100, "tcp://a:1"}, {102, 16383, "tcp://a:1"}}), &why));
    CHECK(why == "slot 101 has no owner");
  }
  SECTION("an overlap") {
    CHECK_FALSE(decode_slots_reply(slots_frame({{0, 100, "tcp://a:1"}, {100, 16383, "tcp://a:1"}}), &why));
    CHECK(why == "slot 100 is owned twice");
  }
  SECTION("past the last slot") {
    CHECK_FALSE(decode_slots_reply(slots_frame({{0, 16384, "tcp://a:1"}}), &why));
  }
  SECTION("a refusal (an older mesh)") {
    CHECK_FALSE(decode_slots_reply(slots_frame({{0, 16383, "tcp://a:1"}}, false), &why));
    CHECK(why.rfind("slots refused", 0) == 0);
  }
  SECTION("not MessagePack") {
    CHECK_FALSE(decode_slots_reply(std::string("\xc1", 1), &why));
  }
}
