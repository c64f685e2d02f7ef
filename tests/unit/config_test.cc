// Mesh config loading: the shipped config, every refusal names the file, the key and the reason.
#include <catch2/catch.hpp>

#include <string>

#include "protocol/config.h"
#include "protocol/slot_map.h"

using namespace bidmesh;

namespace {

const std::string kHeader = R"(
data_dir = "data"
[feed]
publish = "tcp://127.0.0.1:5556"
collect = "tcp://127.0.0.1:5557"
[[node]]
name = "router"
kind = "router"
listen = "tcp://127.0.0.1:5555"
feed = true
)";

std::string two_bid_nodes(const std::string& slots1 = R"(["0-8191"])", const std::string& slots2 = R"(["8192-16383"])") {
  return kHeader + "[[node]]\nname = \"bid-1\"\nkind = \"bid\"\nlisten = \"tcp://127.0.0.1:5561\"\nslots = " + slots1 +
         "\n[[node]]\nname = \"bid-2\"\nkind = \"bid\"\nlisten = \"tcp://127.0.0.1:5562\"\nslots = " + slots2 + "\n";
}

std::string error_of(const std::string& text) {
  try {
    parse_mesh_config(text, "/etc/bidmesh/mesh.toml");
  } catch (const ConfigError& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST_CASE("mesh config loads a valid file", "[config]") {
  MeshConfig cfg = parse_mesh_config(two_bid_nodes(), "/etc/bidmesh/mesh.toml");
  CHECK(cfg.data_dir == "/etc/bidmesh/data");
  CHECK(cfg.control == "ipc:///etc/bidmesh/data/control/supervisor.sock");
  CHECK(cfg.request_timeout_ms == 1000);
  CHECK(cfg.max_request_bytes == 4096);
  REQUIRE(cfg.nodes.size() == 3);
  CHECK(cfg.routers().size() == 1);
  CHECK(cfg.routers()[0]->feed);
  REQUIRE(cfg.bid_nodes().size() == 2);
  CHECK(cfg.bid_nodes()[1]->name == "bid-2");
  CHECK(cfg.bid_nodes()[0]->map_size_bytes == (1ull << 30));
  CHECK_FALSE(cfg.bid_nodes()[0]->unsafe_no_sync);
  CHECK(cfg.node_log_file("bid-1") == "/etc/bidmesh/data/logs/bid-1.log");
  SlotMap map = cfg.slot_map();
  CHECK(map.owner_of_slot(0) == 0);
  CHECK(map.owner_of_slot(8191) == 0);
  CHECK(map.owner_of_slot(8192) == 1);
  CHECK(map.owner_of_slot(16383) == 1);
}

TEST_CASE("mesh config loads the shipped local config", "[config]") {
  MeshConfig cfg = load_mesh_config(BIDMESH_SOURCE_DIR "/tools/local-mesh.toml");
  CHECK(cfg.routers().size() == 1);
  CHECK(cfg.routers()[0]->listen == "tcp://127.0.0.1:5555");
  CHECK(cfg.feed_publish == "tcp://127.0.0.1:5556");
  CHECK(cfg.bid_nodes().size() == 2);
}

TEST_CASE("mesh config refuses bad files with file, key and reason", "[config]") {
  SECTION("slot gaps and overlaps") {
    CHECK(error_of(two_bid_nodes(R"(["0-8000"])")) ==
          "/etc/bidmesh/mesh.toml: node: slots 8001-8191 are owned by no bid node (every slot 0-16383 must be owned exactly once)");
    CHECK(error_of(two_bid_nodes(R"(["0-8192"])")) ==
          "/etc/bidmesh/mesh.toml: node 'bid-2'.slots: slot 8192 is also owned by node 'bid-1'");
    CHECK(error_of(two_bid_nodes(R"(["0-16384"])")).find("out of range") != std::string::npos);
    CHECK(error_of(two_bid_nodes(R"(["9-3"])")).find("ends before it starts") != std::string::npos);
    CHECK(error_of(two_bid_nodes(R"(["zero-3"])")).find("bad slot range") != std::string::npos);
    CHECK(error_of(two_bid_nodes(R"("0-8191")")).empty());  // one string is one range
  }
  SECTION("unknown keys, wrong types, missing keys") {
    CHECK(error_of("data_dirr = \"x\"\n" + two_bid_nodes()) == "/etc/bidmesh/mesh.toml: data_dirr: unknown key");
    CHECK(error_of("request_timeout_ms = \"fast\"\n" + two_bid_nodes()) ==
          "/etc/bidmesh/mesh.toml: request_timeout_ms: must be an integer");
    CHECK(error_of("request_timeout_ms = 0\n" + two_bid_nodes()).find("must be between") != std::string::npos);
    CHECK(error_of("[feed]\npublish = \"tcp://x:1\"\n").find("data_dir: is required") != std::string::npos);
    std::string no_slots = kHeader + "[[node]]\nname = \"b\"\nkind = \"bid\"\nlisten = \"tcp://127.0.0.1:1\"\n";
    CHECK(error_of(no_slots) == "/etc/bidmesh/mesh.toml: node 'b'.slots: is required for a bid node (e.g. [\"0-16383\"])");
  }
  SECTION("names, kinds, endpoints") {
    std::string dup = two_bid_nodes();
    dup.replace(dup.find("bid-2"), 5, "bid-1");
    CHECK(error_of(dup) == "/etc/bidmesh/mesh.toml: node 'bid-1': the name is used twice");
    std::string kind = two_bid_nodes();
    kind.replace(kind.find("kind = \"bid\""), 12, "kind = \"bidder\"");
    CHECK(error_of(kind).find("must be \"router\" or \"bid\"") != std::string::npos);
    std::string ep = two_bid_nodes();
    ep.replace(ep.find("tcp://127.0.0.1:5562"), 20, "127.0.0.1:5562");
    CHECK(error_of(ep).find("node 'bid-2'.listen: must be a ZeroMQ endpoint") != std::string::npos);
    std::string inproc_router = two_bid_nodes();
    inproc_router.replace(inproc_router.find("tcp://127.0.0.1:5555"), 20, "inproc://clients");
    CHECK(error_of(inproc_router).find(".listen: a router listens on tcp:// or ipc://") != std::string::npos);
    std::string same = two_bid_nodes();
    same.replace(same.find("tcp://127.0.0.1:5562"), 20, "tcp://127.0.0.1:5561");
    CHECK(error_of(same).find("is used twice") != std::string::npos);
  }
  SECTION("durability needs plain words to turn fsync off") {
    std::string text = two_bid_nodes();
    const auto at = text.find("slots = [\"8192");
    CHECK(error_of(text.substr(0, at) + "durability = \"nosync\"\n" + text.substr(at)).find("must be \"fsync\"") !=
          std::string::npos);
    MeshConfig cfg = parse_mesh_config(
        text.substr(0, at) + "durability = \"unsafe-no-fsync-acknowledged-bids-can-be-lost\"\n" + text.substr(at), "/m.toml");
    CHECK(cfg.bid_nodes()[1]->unsafe_no_sync);
  }
  SECTION("TOML syntax errors carry the line") {
    CHECK(error_of("data_dir = \n").rfind("/etc/bidmesh/mesh.toml:1:", 0) == 0);
  }
}

TEST_CASE("slot hash is CRC16/XMODEM mod 16384", "[slot_map]") {
  CHECK(crc16_xmodem("123456789") == 0x31C3);  // the standard check value
  CHECK(slot_of("foo") == 12182);               // same slot as Redis Cluster's CLUSTER KEYSLOT foo
  CHECK(slot_of("bar") == 5061);
  CHECK(slot_of("") == 0);
  for (const char* item : {"a", "lamp-1", "item_99"}) CHECK(slot_of(item) < kSlotCount);
}

TEST_CASE("slot map gives each slot its owner", "[slot_map]") {
  SlotMap map({{{0, 99}, {200, 16383}}, {{100, 199}}});
  CHECK(map.owner_of_slot(0) == 0);
  CHECK(map.owner_of_slot(150) == 1);
  CHECK(map.owner_of_slot(200) == 0);
  CHECK(map.owner_of_item("foo") == 0);  // slot 12182
}
