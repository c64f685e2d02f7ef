// The node state machine and restart policy, driven with a fake clock and fake processes.
#include <catch2/catch.hpp>

#include <csignal>
#include <map>
#include <vector>

#include "supervisor/node_machine.h"

using namespace bidmesh;
using namespace std::chrono_literals;

namespace {

struct FakeOps : ProcessOps {
  pid_t next_pid = 100;
  bool fail_spawn = false;
  int spawns = 0;
  std::vector<std::pair<pid_t, int>> signals;
  pid_t spawn(std::string_view, std::string& error) override {
    if (fail_spawn) {
      error = "no such file";
      return -1;
    }
    ++spawns;
    return next_pid++;
  }
  void signal(pid_t pid, int sig) override { signals.emplace_back(pid, sig); }
};

MachineParams test_params() {
  MachineParams p;
  p.intensity = 3;
  p.period = 10000ms;
  p.heartbeat_timeout = 500ms;
  p.start_timeout = 2000ms;
  p.stop_timeout = 1000ms;
  p.stable_run = 1000ms;
  p.start_gate_bound = 3000ms;
  return p;
}

const ExitInfo kCrash{false, 1};
const ExitInfo kClean{false, 0};
const ExitInfo kKilled{true, SIGKILL};

}  // namespace

TEST_CASE("backoff delays double from 10 ms and cap at 2 s", "[supervisor]") {
  MachineParams p;
  CHECK(backoff_delay(p, 1) == 10ms);
  CHECK(backoff_delay(p, 2) == 20ms);
  CHECK(backoff_delay(p, 3) == 40ms);
  CHECK(backoff_delay(p, 8) == 1280ms);
  CHECK(backoff_delay(p, 9) == 2000ms);
  CHECK(backoff_delay(p, 1000) == 2000ms);
}

TEST_CASE("node machine lifecycle", "[supervisor]") {
  FakeOps ops;
  SteadyTime t{};
  NodeMachine m("bid-1", RestartPolicy::permanent, test_params(), ops);
  REQUIRE(m.state() == NodeState::stopped);
  m.start(t, false);
  REQUIRE(m.state() == NodeState::starting);
  REQUIRE(m.pid() == 100);

  SECTION("ready makes it running; stale pids are ignored") {
    m.on_ready(999, t);
    CHECK(m.state() == NodeState::starting);
    m.on_ready(100, t + 5ms);
    CHECK(m.state() == NodeState::running);
  }

  SECTION("a heartbeat stands for a lost ready") {
    m.on_heartbeat(100, t + 5ms);
    CHECK(m.state() == NodeState::running);
  }

  SECTION("unstable crashes back off 10, 20, 40 ms, then the node fails past the intensity") {
    SteadyTime now = t;
    for (int i = 0; i < 3; ++i) {
      m.on_exit(m.pid(), kCrash, now);
      REQUIRE(m.state() == NodeState::backoff);
      const Millis want = Millis(10 << i);
      CHECK(m.backoffs().back() == want);
      m.tick(now + want - 1ms);
      CHECK(m.state() == NodeState::backoff);
      now += want;
      m.tick(now);
      REQUIRE(m.state() == NodeState::starting);
    }
    CHECK(m.restarts() == 3);
    m.on_exit(m.pid(), kCrash, now);
    CHECK(m.state() == NodeState::failed);
    CHECK(m.pid() == 0);
    CHECK(m.reason().find("failed") != std::string::npos);
    CHECK(m.last_exit()->describe() == "exit 1");
    m.tick(now + 60s);
    CHECK(m.state() == NodeState::failed);
    CHECK(ops.spawns == 4);

    // An operator start clears the failure and the window.
    m.start(now + 61s, false);
    CHECK(m.state() == NodeState::starting);
    CHECK(m.backoffs().empty());
    m.on_exit(m.pid(), kCrash, now + 61s);
    CHECK(m.state() == NodeState::backoff);
  }

  SECTION("a node that served for a while restarts at once") {
    m.on_ready(100, t);
    for (int i = 0; i < 10; ++i) m.on_heartbeat(100, t + Millis(100 * i));
    m.on_exit(100, kKilled, t + 1500ms);
    CHECK(m.state() == NodeState::starting);
    CHECK(m.pid() == 101);
    CHECK(m.backoffs().empty());
    CHECK(m.restarts() == 1);
  }

  SECTION("restarts older than the period do not count") {
    SteadyTime now = t;
    for (int i = 0; i < 10; ++i) {
      m.on_ready(m.pid(), now);
      now += 4000ms;  // stable, and at most 3 restarts in any 10 s
      m.on_heartbeat(m.pid(), now - 100ms);
      m.on_exit(m.pid(), kCrash, now);
      REQUIRE(m.state() == NodeState::starting);
    }
    CHECK(m.restarts() == 10);
  }

  SECTION("missed heartbeats: SIGKILL, then restart") {
    m.on_ready(100, t);
    m.tick(t + 499ms);
    CHECK(m.state() == NodeState::running);
    m.tick(t + 500ms);
    CHECK(m.state() == NodeState::stopping);
    REQUIRE(ops.signals.size() == 1);
    CHECK(ops.signals[0] == std::make_pair(pid_t{100}, SIGKILL));
    CHECK(m.reason().find("no heartbeat") != std::string::npos);
    m.on_exit(100, kKilled, t + 510ms);
    CHECK(m.state() == NodeState::backoff);  // it had not served a stable second
    m.tick(t + 520ms);
    CHECK(m.state() == NodeState::starting);
    CHECK(m.pid() == 101);
  }

  SECTION("never ready: killed after the start timeout") {
    m.tick(t + 1999ms);
    CHECK(m.state() == NodeState::starting);
    m.tick(t + 2000ms);
    CHECK(m.state() == NodeState::stopping);
    CHECK(m.reason().find("not ready") != std::string::npos);
  }

  SECTION("stop: SIGTERM, SIGKILL after the stop timeout, then stopped without restart") {
    m.on_ready(100, t);
    m.stop(t + 10ms);
    CHECK(m.state() == NodeState::stopping);
    CHECK(ops.signals.back() == std::make_pair(pid_t{100}, SIGTERM));
    m.tick(t + 1009ms);
    CHECK(ops.signals.size() == 1);
    m.tick(t + 1010ms);
    CHECK(ops.signals.back() == std::make_pair(pid_t{100}, SIGKILL));
    m.on_exit(100, kKilled, t + 1020ms);
    CHECK(m.state() == NodeState::stopped);
    m.tick(t + 60s);
    CHECK(m.state() == NodeState::stopped);
    CHECK(ops.spawns == 1);
  }

  SECTION("restart: stop then start at once, not counted") {
    m.on_ready(100, t);
    m.restart(t + 10ms);
    CHECK(m.state() == NodeState::stopping);
    m.on_exit(100, kClean, t + 20ms);
    CHECK(m.state() == NodeState::starting);
    CHECK(m.pid() == 101);
    CHECK(m.restarts() == 0);
  }

  SECTION("stop during backoff ends the retries") {
    m.on_exit(100, kCrash, t);
    REQUIRE(m.state() == NodeState::backoff);
    m.stop(t + 1ms);
    CHECK(m.state() == NodeState::stopped);
    m.tick(t + 1s);
    CHECK(m.state() == NodeState::stopped);
  }

  SECTION("a failed launch is an abnormal end") {
    m.on_exit(100, kCrash, t);
    ops.fail_spawn = true;
    m.tick(t + 10ms);
    CHECK(m.state() == NodeState::backoff);
    CHECK(m.reason().find("cannot launch") != std::string::npos);
  }
}

TEST_CASE("node machine restart policies", "[supervisor]") {
  FakeOps ops;
  SteadyTime t{};
  SECTION("transient: a clean exit is not restarted, a crash is") {
    NodeMachine m("n", RestartPolicy::transient, test_params(), ops);
    m.start(t, false);
    m.on_exit(100, kClean, t);
    CHECK(m.state() == NodeState::stopped);
    m.start(t, false);
    m.on_exit(101, kCrash, t);
    CHECK(m.state() == NodeState::backoff);
  }
  SECTION("temporary: never restarted") {
    NodeMachine m("n", RestartPolicy::temporary, test_params(), ops);
    m.start(t, false);
    m.on_exit(100, kKilled, t);
    CHECK(m.state() == NodeState::stopped);
    CHECK(ops.spawns == 1);
  }
}

TEST_CASE("node machine start gate", "[supervisor]") {
  FakeOps ops;
  SteadyTime t{};
  NodeMachine m("router", RestartPolicy::permanent, test_params(), ops);
  m.start(t, true);
  CHECK(m.state() == NodeState::starting);
  CHECK(m.pid() == 0);
  CHECK(m.waiting_for_gate());
  SECTION("spawns when the gate opens") {
    m.tick(t + 100ms, false);
    CHECK(m.pid() == 0);
    m.tick(t + 200ms, true);
    CHECK(m.pid() == 100);
  }
  SECTION("spawns anyway after the bound") {
    m.tick(t + 2999ms, false);
    CHECK(m.pid() == 0);
    m.tick(t + 3000ms, false);
    CHECK(m.pid() == 100);
  }
  SECTION("a crash restart is not gated") {
    m.tick(t, true);
    m.on_exit(100, kCrash, t);
    m.tick(t + 10ms, false);
    CHECK(m.pid() == 101);
  }
}
