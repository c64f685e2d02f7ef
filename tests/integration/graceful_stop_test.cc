// Graceful stop under load (docs/reliability.md, test 9): SIGTERM to the supervisor while client
// processes bid. The mesh exits 0 within stop_timeout_ms with every node drained (exit 0, no
// SIGKILL); restarted on the same data dir, it holds every acknowledged bid, once.
#include <catch2/catch.hpp>

#include <iostream>

#include "tests/reliability/scenarios.h"

using namespace bidmesh;

TEST_CASE("graceful stop under load: every acknowledged bid is stored, the mesh exits within the stop timeout",
          "[reliability][stop]") {
  rel::StopOptions o;
  o.bid_seconds = 3;
  o.clients = 3;
  o.stop_timeout_ms = 5000;
  const rel::StopResult r = rel::run_graceful_stop(o);
  std::cout << r.summary() << std::endl;
  INFO(r.summary());
  REQUIRE(r.error.empty());
  CHECK(r.exit_code == 0);
  CHECK(r.stop_ms < o.stop_timeout_ms);
  CHECK(r.nodes_drained);
  CHECK(r.check.ok > 0);
  CHECK(r.check.lost == 0);
  CHECK(r.check.duplicated == 0);
  CHECK(r.check.refused_stored == 0);
  CHECK(r.check.phantom == 0);
  CHECK(r.check.order == 0);
  CHECK(r.check.get_mismatch == 0);
}
