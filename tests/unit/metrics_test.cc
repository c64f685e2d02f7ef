// Metrics: the config keys (address shape, protected mode, clashes, digest scope) and the
// families of metrics/metrics.h as the exposition text shows them.
#include "metrics/metrics.h"

#include <prometheus/text_serializer.h>

#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "protocol/config.h"
#include "protocol/messages.h"

using namespace bidmesh;

namespace {

std::string mesh(const std::string& top, const std::string& router_extra, const std::string& bid_extra,
                 const std::string& security = "") {
  return "data_dir = \"data\"\n" + security + top +
         "[feed]\npublish = \"tcp://127.0.0.1:5556\"\ncollect = \"tcp://127.0.0.1:5557\"\n"
         "[[node]]\nname = \"router\"\nkind = \"router\"\nlisten = \"tcp://127.0.0.1:5555\"\nfeed = true\n" +
         router_extra +
         "[[node]]\nname = \"bid-1\"\nkind = \"bid\"\nlisten = \"tcp://127.0.0.1:5561\"\nslots = \"0-16383\"\n" +
         bid_extra;
}

const std::string kCurve =
    "security = \"curve\"\nserver_certificate = \"mesh.key_secret\"\nclients_dir = \"clients\"\n";

MeshConfig load(const std::string& text) { return parse_mesh_config(text, "/etc/bidmesh/mesh.toml"); }

using Catch::Matchers::Contains;

std::string exposition(MetricsRegistry& m) { return prometheus::TextSerializer().Serialize(m.registry().Collect()); }

}  // namespace

TEST_CASE("metrics addresses load from the config, absent means none", "[config][metrics]") {
  const MeshConfig cfg = parse_mesh_config(
      mesh("supervisor_metrics = \"127.0.0.1:9100\"\n", "metrics = \"127.0.0.1:9101\"\n", "metrics = \"[::1]:9102\"\n"),
      "/etc/bidmesh/mesh.toml");
  CHECK(cfg.supervisor_metrics == "127.0.0.1:9100");
  CHECK(cfg.find("router")->metrics == "127.0.0.1:9101");
  CHECK(cfg.find("bid-1")->metrics == "[::1]:9102");
  const MeshConfig none = parse_mesh_config(mesh("", "", ""), "/etc/bidmesh/mesh.toml");
  CHECK(none.supervisor_metrics.empty());
  CHECK(none.find("router")->metrics.empty());
}

TEST_CASE("metrics addresses are host-local: not in the config digest", "[config][metrics]") {
  const auto plain = parse_mesh_config(mesh("", "", ""), "/etc/bidmesh/mesh.toml");
  const auto with =
      parse_mesh_config(mesh("supervisor_metrics = \"127.0.0.1:9100\"\n", "metrics = \"127.0.0.1:9101\"\n", ""),
                        "/etc/bidmesh/mesh.toml");
  CHECK(plain.digest() == with.digest());
}

TEST_CASE("a bad metrics address is refused at load with the key and the reason", "[config][metrics]") {
  SECTION("no port") {
    CHECK_THROWS_WITH(
        load(mesh("", "metrics = \"127.0.0.1\"\n", "")),
        "/etc/bidmesh/mesh.toml: node 'router'.metrics: must be HOST:PORT (an IPv4 address, or an IPv6 one in "
        "brackets), got '127.0.0.1'");
  }
  SECTION("a host name") {
    CHECK_THROWS_WITH(
        load(mesh("supervisor_metrics = \"localhost:9100\"\n", "", "")),
        "/etc/bidmesh/mesh.toml: supervisor_metrics: the host of 'localhost:9100' must be an IPv4 address (the "
        "metrics server binds an address, not a name)");
  }
  SECTION("an endpoint, not an address") {
    CHECK_THROWS_WITH(load(mesh("", "", "metrics = \"tcp://127.0.0.1:9101\"\n")),
                      Contains("node 'bid-1'.metrics: the host of"));
  }
  SECTION("port out of range, zero, or not a number") {
    for (const char* bad : {"127.0.0.1:65536", "127.0.0.1:0", "127.0.0.1:", "127.0.0.1:9x", "127.0.0.1:99999999999"})
      CHECK_THROWS_WITH(load(mesh("", std::string("metrics = \"") + bad + "\"\n", "")),
                        "/etc/bidmesh/mesh.toml: node 'router'.metrics: the port of '" + std::string(bad) +
                            "' must be a number from 1 to 65535");
  }
  SECTION("an unbracketed IPv6 address") {
    CHECK_THROWS_WITH(load(mesh("", "metrics = \"::1:9101\"\n", "")), Contains("must be an IPv4 address"));
  }
  SECTION("not a string") {
    CHECK_THROWS_WITH(load(mesh("", "metrics = 9101\n", "")),
                      "/etc/bidmesh/mesh.toml: node 'router'.metrics: must be a string");
  }
}

TEST_CASE("metrics beyond loopback need security = curve (protected mode)", "[config][metrics]") {
  CHECK_THROWS_WITH(
      load(mesh("", "metrics = \"0.0.0.0:9101\"\n", "")),
      "/etc/bidmesh/mesh.toml: node 'router'.metrics: security = \"none\" may serve metrics only on loopback, and "
      "0.0.0.0:9101 is not; use 127.0.0.1:PORT (or [::1]:PORT), or set security = \"curve\" (docs/operations.md)");
  CHECK_THROWS_WITH(load(mesh("supervisor_metrics = \"10.1.2.3:9100\"\n", "", "")),
                    Contains("supervisor_metrics: security"));
  const auto curve = parse_mesh_config(mesh("supervisor_metrics = \"0.0.0.0:9100\"\n", "metrics = \"10.1.2.3:9101\"\n",
                                            "metrics = \"[::]:9102\"\n", kCurve),
                                       "/etc/bidmesh/mesh.toml");
  CHECK(curve.find("router")->metrics == "10.1.2.3:9101");
}

TEST_CASE("two processes of one host cannot share a metrics address", "[config][metrics]") {
  CHECK_THROWS_WITH(
      load(mesh("", "metrics = \"127.0.0.1:9101\"\n", "metrics = \"127.0.0.1:9101\"\n")),
      "/etc/bidmesh/mesh.toml: node 'bid-1'.metrics: address 127.0.0.1:9101 is also used by node 'router', which "
      "may run on the same host");
  CHECK_THROWS_WITH(load(mesh("supervisor_metrics = \"127.0.0.1:9101\"\n", "metrics = \"127.0.0.1:9101\"\n", "")),
                    "/etc/bidmesh/mesh.toml: node 'router'.metrics: address 127.0.0.1:9101 is also supervisor_metrics");
  // Nodes pinned to different hosts may use the same address (e.g. 0.0.0.0:9101 on each).
  CHECK_NOTHROW(load(
      mesh("", "host = \"a\"\nmetrics = \"0.0.0.0:9101\"\n", "host = \"b\"\nmetrics = \"0.0.0.0:9101\"\n", kCurve)));
}

TEST_CASE("request counters exist for every op and outcome from the start", "[metrics]") {
  MetricsRegistry m;
  BidNodeMetrics node(m.registry());
  node.requests.ok(Op::bid).Increment();
  node.requests.error(Op::bid, ErrorCode::too_low).Increment(2);
  node.requests.error(std::nullopt, ErrorCode::bad_request).Increment();
  const std::string text = exposition(m);
  CHECK(text.find("bidmesh_node_requests_total{op=\"bid\",outcome=\"ok\"} 1") != std::string::npos);
  CHECK(text.find("bidmesh_node_requests_total{op=\"bid\",outcome=\"too_low\"} 2") != std::string::npos);
  CHECK(text.find("bidmesh_node_requests_total{op=\"none\",outcome=\"bad_request\"} 1") != std::string::npos);
  CHECK(text.find("bidmesh_node_requests_total{op=\"history\",outcome=\"internal\"} 0") != std::string::npos);
  CHECK(text.find("outcome=\"answered\"") == std::string::npos);  // the router's only
  node.batch_size.Observe(3);
  CHECK(exposition(m).find("bidmesh_node_batch_requests_bucket{le=\"4\"} 1") != std::string::npos);

  RouterMetrics router(m.registry());
  router.requests.answered(Op::get).Increment();
  CHECK(exposition(m).find("bidmesh_router_requests_total{op=\"get\",outcome=\"answered\"} 1") != std::string::npos);
}

TEST_CASE("a reply counts as ok or as the error code it carries", "[metrics]") {
  prometheus::Registry registry;
  RequestCounters requests(registry, "bidmesh_test_requests_total", "test", false);
  requests.count(Op::bid, std::nullopt);
  requests.count(Op::history, std::nullopt);
  CHECK(requests.ok(Op::bid).Value() == 1);
  CHECK(requests.ok(Op::history).Value() == 1);
  for (std::size_t c = 0; c < kErrorCodeCount; ++c) {
    const auto code = static_cast<ErrorCode>(c);
    requests.count(Op::bid, code);
    requests.count(std::nullopt, code);
    CHECK(requests.error(Op::bid, code).Value() == 1);
    CHECK(requests.error(std::nullopt, code).Value() == 1);
  }
  CHECK(requests.ok(Op::bid).Value() == 1);
}

TEST_CASE("supervisor metrics follow nodes as they are added and removed", "[metrics]") {
  MetricsRegistry m;
  SupervisorMetrics s(m.registry(), {"starting", "running", "failed"});
  s.add_node("bid-1");
  s.set_state("bid-1", "running");
  s.count_restart("bid-1");
  s.set_last_exit("bid-1", 0, 9);
  std::string text = exposition(m);
  CHECK(text.find("bidmesh_supervisor_node_state{node=\"bid-1\",state=\"running\"} 1") != std::string::npos);
  CHECK(text.find("bidmesh_supervisor_node_state{node=\"bid-1\",state=\"failed\"} 0") != std::string::npos);
  CHECK(text.find("bidmesh_supervisor_node_restarts_total{node=\"bid-1\"} 1") != std::string::npos);
  CHECK(text.find("bidmesh_supervisor_node_last_exit_signal{node=\"bid-1\"} 9") != std::string::npos);
  s.remove_node("bid-1");
  s.set_state("bid-1", "failed");  // a removed node is ignored, not a crash
  CHECK(exposition(m).find("node=\"bid-1\"") == std::string::npos);
}

TEST_CASE("a metrics registry serves on a free port and reports a taken one", "[metrics]") {
  MetricsRegistry a;
  CHECK_FALSE(a.serving());
  REQUIRE(a.serve("127.0.0.1:0") == std::nullopt);
  CHECK(a.serving());
  REQUIRE(a.port() > 0);
  MetricsRegistry b;
  const auto error = b.serve("127.0.0.1:" + std::to_string(a.port()));
  REQUIRE(error.has_value());
  CHECK(error->rfind("cannot serve metrics on 127.0.0.1:" + std::to_string(a.port()) + ": ", 0) == 0);
  CHECK_FALSE(b.serving());
}
