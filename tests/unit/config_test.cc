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
    CHECK(error_of(kind).find("must be \"router\", \"bid\" or \"gateway\"") != std::string::npos);
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

TEST_CASE("mesh config reads the security keys", "[config]") {
  SECTION("defaults: none, no files, feed not public, the fitted router memory") {
    MeshConfig cfg = parse_mesh_config(two_bid_nodes(), "/etc/bidmesh/mesh.toml");
    CHECK(cfg.security == Security::none);
    CHECK(cfg.server_certificate.empty());
    CHECK(cfg.clients_dir.empty());
    CHECK_FALSE(cfg.feed_public);
    CHECK(cfg.router_memory_mb == kDefaultRouterMemoryMb);
  }
  SECTION("curve with its files, relative to the config's folder") {
    MeshConfig cfg = parse_mesh_config(
        "security = \"curve\"\nserver_certificate = \"keys/mesh.key_secret\"\nclients_dir = \"/srv/clients\"\n"
        "feed_public = true\nrouter_memory_mb = 512\n" + two_bid_nodes(),
        "/etc/bidmesh/mesh.toml");
    CHECK(cfg.security == Security::curve);
    CHECK(security_name(cfg.security) == "curve");
    CHECK(cfg.server_certificate == "/etc/bidmesh/keys/mesh.key_secret");
    CHECK(cfg.clients_dir == "/srv/clients");
    CHECK(cfg.feed_public);
    CHECK(cfg.router_memory_mb == 512);
  }
  SECTION("curve needs both files; none refuses them") {
    CHECK(error_of("security = \"curve\"\nclients_dir = \"c\"\n" + two_bid_nodes())
              .rfind("/etc/bidmesh/mesh.toml: server_certificate: is required with security = \"curve\"", 0) == 0);
    CHECK(error_of("security = \"curve\"\nserver_certificate = \"m.key_secret\"\n" + two_bid_nodes())
              .rfind("/etc/bidmesh/mesh.toml: clients_dir: is required with security = \"curve\"", 0) == 0);
    CHECK(error_of("server_certificate = \"m.key_secret\"\n" + two_bid_nodes()) ==
          "/etc/bidmesh/mesh.toml: server_certificate: is set but security = \"none\" uses no keys; set security = \"curve\"");
    CHECK(error_of("security = \"none\"\nclients_dir = \"c\"\n" + two_bid_nodes()) ==
          "/etc/bidmesh/mesh.toml: clients_dir: is set but security = \"none\" admits every client; set security = \"curve\"");
    CHECK(error_of("security = \"CURVE\"\n" + two_bid_nodes()) ==
          "/etc/bidmesh/mesh.toml: security: must be \"none\" or \"curve\", got \"CURVE\"");
    CHECK(error_of("feed_public = \"yes\"\n" + two_bid_nodes()) ==
          "/etc/bidmesh/mesh.toml: feed_public: must be true or false");
  }
  SECTION("router_memory_mb has a floor") {
    CHECK(error_of("router_memory_mb = 63\n" + two_bid_nodes()) ==
          "/etc/bidmesh/mesh.toml: router_memory_mb: must be between 64 and 1048576");
    CHECK(parse_mesh_config("router_memory_mb = 64\n" + two_bid_nodes(), "/m.toml").router_memory_mb == 64);
  }
  SECTION("the control endpoint is ipc") {
    CHECK(error_of("control = \"tcp://127.0.0.1:7000\"\n" + two_bid_nodes())
              .rfind("/etc/bidmesh/mesh.toml: control: must be an ipc:// endpoint", 0) == 0);
    CHECK(parse_mesh_config("control = \"ipc:///run/bidmesh/s.sock\"\n" + two_bid_nodes(), "/m.toml").control ==
          "ipc:///run/bidmesh/s.sock");
  }
}

TEST_CASE("endpoint_is_local accepts loopback and ipc only", "[config]") {
  for (const char* ep : {"ipc:///tmp/x.sock", "ipc://@abstract", "inproc://x", "tcp://127.0.0.1:5555",
                         "tcp://127.255.0.9:1", "tcp://127.0.0.1:*", "tcp://[::1]:5555", "tcp://::1:5555",
                         "tcp://localhost:5555", "tcp://lo:5555"}) {
    INFO(ep);
    CHECK(endpoint_is_local(ep));
  }
  for (const char* ep : {"tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://10.0.0.5:5561", "tcp://eth0:5555",
                         "tcp://[::]:5555", "tcp://128.0.0.1:5555", "tcp://127.0.0.256:1", "tcp://127.0.0:1",
                         "tcp://127.0.0.1.5:1", "tcp://127.0.0.1", "tcp://127.0.0.1:1;10.0.0.1:2",
                         "tcp://localhost.example.com:1", "tcp://[::1:5555", "udp://127.0.0.1:1", "pgm://x"}) {
    INFO(ep);
    CHECK_FALSE(endpoint_is_local(ep));
  }
}

TEST_CASE("mesh config protected mode: security none binds only loopback or ipc", "[config]") {
  const std::string fix =
      " is not; set security = \"curve\" with server_certificate and clients_dir (docs/security.md), or listen on "
      "127.0.0.1";
  const std::string text = two_bid_nodes();
  auto with = [&](const std::string& from, const std::string& to) {
    std::string t = text;
    t.replace(t.find(from), from.size(), to);
    return t;
  };
  CHECK(error_of(with("tcp://127.0.0.1:5555", "tcp://0.0.0.0:5555")) ==
        "/etc/bidmesh/mesh.toml: node 'router'.listen: security = \"none\" may bind only loopback or ipc, and "
        "tcp://0.0.0.0:5555" + fix);
  CHECK(error_of(with("tcp://127.0.0.1:5562", "tcp://10.0.0.5:5562")) ==
        "/etc/bidmesh/mesh.toml: node 'bid-2'.listen: security = \"none\" may bind only loopback or ipc, and "
        "tcp://10.0.0.5:5562" + fix);
  CHECK(error_of(with("tcp://127.0.0.1:5556", "tcp://*:5556")) ==
        "/etc/bidmesh/mesh.toml: feed.publish: security = \"none\" may bind only loopback or ipc, and tcp://*:5556" + fix);
  CHECK(error_of(with("tcp://127.0.0.1:5557", "tcp://eth0:5557")).find("feed.collect: security = \"none\"") !=
        std::string::npos);
  // With curve the same binds load.
  const std::string curve = "security = \"curve\"\nserver_certificate = \"m.key_secret\"\nclients_dir = \"c\"\n";
  CHECK(error_of(curve + with("tcp://127.0.0.1:5555", "tcp://0.0.0.0:5555")).empty());
  // ipc and loopback of every kind load without it.
  CHECK(error_of(with("tcp://127.0.0.1:5555", "ipc:///run/bidmesh/requests.sock")).empty());
  CHECK(error_of(with("tcp://127.0.0.1:5561", "tcp://[::1]:5561")).empty());
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

TEST_CASE("mesh config digest: the same for host-local differences, another for the mesh's shape", "[config]") {
  // kHeader sets data_dir = "data"; a later key of the same name would be a TOML error, so the
  // host-local keys go after it by replacing it.
  auto digest = [](const std::string& text) { return parse_mesh_config(text, "/tmp/d.toml").digest(); };
  const std::string base = two_bid_nodes();
  const uint64_t d = digest(base);
  CHECK(parse_mesh_config(base, "/tmp/d.toml").digest_hex().size() == 16);
  // Host-local: data dir, timeouts, map size.
  std::string local = base;
  local.replace(local.find("data_dir = \"data\""), 17, "data_dir = \"b\"\nrequest_timeout_ms = 700\nmap_size_mb = 64");
  CHECK(digest(local) == d);
  // The mesh's shape: slots, an endpoint, the request limit.
  CHECK(digest(two_bid_nodes(R"(["0-8190"])", R"(["8191-16383"])")) != d);
  std::string endpoint = base;
  endpoint.replace(endpoint.find("5562"), 4, "5563");
  CHECK(digest(endpoint) != d);
  CHECK(digest("max_request_bytes = 8192\n" + base) != d);
}
