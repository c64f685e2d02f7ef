// The event log line (protocol/log.h), the heartbeat's counters (protocol/control.h, NodeStats)
// and the arithmetic of `bidmesh-ctl top` (supervisor/top.h).
#include <catch2/catch.hpp>

#include <string>

#include "protocol/control.h"
#include "protocol/log.h"
#include "supervisor/top.h"

using namespace bidmesh;

TEST_CASE("log line json has ts, node, level, event, msg and the fields, escaped", "[log]") {
  const std::string line = format_log_line(LogFormat::json, "bid-1", LogLevel::warning, "refusals", "3 \"refused\"",
                                           {{"code", "internal"}, {"count", 3u}, {"ratio", 0.5}, {"torn", false}, {"d", -2}},
                                           1767225600123);
  CHECK(line ==
        "{\"ts\":\"2026-01-01T00:00:00.123Z\",\"node\":\"bid-1\",\"level\":\"warning\",\"event\":\"refusals\","
        "\"msg\":\"3 \\\"refused\\\"\",\"code\":\"internal\",\"count\":3,\"ratio\":0.5,\"torn\":false,\"d\":-2}\n");
}

TEST_CASE("log line text starts with the name and a millisecond timestamp", "[log]") {
  const std::string line = format_log_line(LogFormat::text, "router", LogLevel::info, "ready", "serving", {}, 1767225600123);
  REQUIRE(line.size() > 34);
  CHECK(line.rfind("[router ", 0) == 0);
  CHECK(line.find(".123] serving\n") != std::string::npos);
}

TEST_CASE("log format names parse", "[log]") {
  CHECK(parse_log_format("json") == LogFormat::json);
  CHECK(parse_log_format("text") == LogFormat::text);
  CHECK_FALSE(parse_log_format("JSON"));
}

TEST_CASE("node message carries stats through encode and decode, under the size limit with a full note", "[control]") {
  NodeStats st;
  st.at_ms = 123456;
  st.bids = 10;
  st.refusals = 2;
  st.commit_bounds = {0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1};
  st.commit_counts = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 10, 10, 10, 10};
  st.log_bytes = 4096;
  st.store_used = 1 << 20;
  st.store_size = 1ull << 30;
  const std::string frame = encode_node_message({"heartbeat", std::string(64, 'n'), 42, std::string(2000, 'x'), st});
  CHECK(frame.size() <= kMaxNodeMessageBytes);
  const auto m = decode_node_message(frame);
  REQUIRE(m);
  REQUIRE(m->stats);
  CHECK(m->stats->bids == 10);
  CHECK(m->stats->refusals == 2);
  CHECK(m->stats->commit_bounds == st.commit_bounds);
  CHECK(m->stats->commit_counts == st.commit_counts);
  CHECK(m->stats->store_size == st.store_size);
  CHECK(m->note.size() == kMaxNodeNoteBytes);

  SECTION("a router's stats have no store") {
    NodeStats r;
    r.bids = 5;
    const auto d = decode_node_message(encode_node_message({"heartbeat", "router", 7, "", r}));
    REQUIRE(d);
    REQUIRE(d->stats);
    CHECK_FALSE(d->stats->store_used);
    CHECK(d->stats->commit_counts.empty());
  }
  SECTION("no stats: none decoded") {
    const auto d = decode_node_message(encode_node_message({"ready", "bid-1", 7}));
    REQUIRE(d);
    CHECK_FALSE(d->stats);
  }
}

TEST_CASE("top: p99 from the difference of two cumulative histograms", "[top]") {
  const std::vector<double> bounds{0.001, 0.002, 0.004};
  // 100 observations in between: 90 under 1 ms, 9 in (1, 2], 1 in (2, 4].
  CHECK(quantile_between(0.99, bounds, {10, 10, 10, 10}, {100, 109, 110, 110}).value() == Approx(0.002));
  CHECK(quantile_between(0.5, bounds, {0, 0, 0, 0}, {100, 100, 100, 100}).value() == Approx(0.0005));
  CHECK_FALSE(quantile_between(0.99, bounds, {5, 5, 5, 5}, {5, 5, 5, 5}));      // nothing committed
  CHECK(quantile_between(0.99, bounds, {0, 0, 0, 0}, {0, 0, 0, 10}).value() == Approx(0.004));  // all past the last bound
  CHECK_FALSE(quantile_between(0.99, bounds, {9, 9, 9, 9}, {1, 1, 1, 1}));      // counts went back: another process
}

TEST_CASE("top: rates between two snapshots of one process, none across a restart", "[top]") {
  NodeStatus a;
  a.name = "bid-1";
  a.pid = 100;
  a.stats_at_ms = 1000;
  a.bids = 50;
  a.refusals = 5;
  a.store_used = 10;
  a.store_size = 100;
  NodeStatus b = a;
  b.stats_at_ms = 1500;
  b.bids = 300;
  b.refusals = 5;
  auto rows = top_rows({a}, {b});
  REQUIRE(rows.size() == 1);
  CHECK(rows[0].bids_per_s.value() == Approx(500.0));
  CHECK(rows[0].refusals_per_s.value() == Approx(0.0));
  CHECK(rows[0].store_used == 10u);
  CHECK_FALSE(rows[0].log_bytes);  // -1: not known

  b.pid = 101;  // restarted in between
  rows = top_rows({a}, {b});
  CHECK_FALSE(rows[0].bids_per_s);
  const std::string json = top_to_json(rows, 1767225600123);
  CHECK(json.find("\"bids_per_s\":null") != std::string::npos);
  CHECK(json.rfind("{\"ts\":\"2026-01-01T00:00:00.123Z\",\"nodes\":[{\"name\":\"bid-1\"", 0) == 0);
}
