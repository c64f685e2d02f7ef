// The reliability harness: processes, temp dirs and a whole mesh run by the real
// bidmesh-supervisor, for the reliability scenarios (docs/reliability.md). Unlike
// tests/support/mesh.h it does not use Catch2, so the same code runs inside integration_tests
// (the short runs) and inside the bidmesh-reliability program (the long runs of tools/reliability).
//
// Every wait is a condition with a deadline. Every process started here is in its own process
// group and is killed and reaped by its destructor; a SupervisedMesh shuts its supervisor down
// (SIGTERM, then SIGKILL) and its nodes die with it (PR_SET_PDEATHSIG). Temp dirs are removed.
//
// Thread-compatible: one thread owns each object.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "tests/support/process.h"

namespace bidmesh::rel {

using Clock = std::chrono::steady_clock;
using Ms = std::chrono::milliseconds;

// Milliseconds since `t`.
double ms_since(Clock::time_point t);

// Polls `cond` every `step` until it is true or `deadline` has passed; returns its last value.
inline bool wait_for(const std::function<bool()>& cond, Ms deadline, Ms step = Ms(10)) {
  return test::wait_until(cond, deadline, step);
}

// A loopback TCP endpoint that was free a moment ago.
inline std::string free_endpoint() { return test::free_tcp_endpoint(); }

// Absolute path of a program built beside this one (bin/ of the build tree).
std::string program(const std::string& name);

// Temp dirs and child processes: the ones of the tests (tests/support/process.h, no Catch2).
using test::TempDir;
using Child = test::Process;

struct MeshSpec {
  int bid_nodes = 2;
  uint32_t stop_timeout_ms = 5000;
  uint32_t request_timeout_ms = 1000;
  std::string extra;                            // more top-level TOML lines
  std::map<std::string, std::string> env;       // for the supervisor, and so for its nodes
  bool client_endpoints = false;                // a client_listen on every bid node (direct clients)
};

// A mesh (one router with the feed, `bid_nodes` bid nodes splitting the slots evenly) run by the
// real supervisor on free loopback ports, data under a temp dir.
class SupervisedMesh {
 public:
  explicit SupervisedMesh(MeshSpec spec = {});
  ~SupervisedMesh();
  SupervisedMesh(const SupervisedMesh&) = delete;
  SupervisedMesh& operator=(const SupervisedMesh&) = delete;

  // Starts the supervisor and waits for its readiness line and for every bid node to serve
  // through the router. Returns an error in words, or nullopt.
  std::optional<std::string> start(Ms deadline = Ms(30000));
  // SIGTERM to the supervisor; waits up to `deadline` for it to exit. Returns its wait status.
  std::optional<int> stop(Ms deadline = Ms(20000));
  void kill_supervisor();
  bool supervisor_running();

  // The current pid of a node with state `running` (0 when none).
  pid_t running_pid(const std::string& node);
  // An item whose slot bid node `i` owns (distinct per n).
  std::string item_on_node(int i, int n) const;
  // Waits until a `get` on `item` through the router gets an owner's answer.
  bool wait_serving(const std::string& item, Ms deadline);

  const std::string& request_endpoint() const { return request_; }
  const std::string& feed_endpoint() const { return feed_; }
  const std::filesystem::path& dir() const { return dir_.path(); }
  std::filesystem::path node_log(const std::string& node) const;
  std::filesystem::path supervisor_out() const { return dir() / "supervisor.out"; }
  std::string bid_node_name(int i) const { return test::bid_node_name(i); }
  // The supervisor's output and the last lines of every node log.
  std::string diagnostics() const;
  zmq::context_t& ctx() { return ctx_; }
  TempDir& temp() { return dir_; }

 private:
  std::string control() const;

  TempDir dir_;
  MeshSpec spec_;
  std::string request_, feed_;
  std::filesystem::path config_;
  std::unique_ptr<Child> sup_;
  zmq::context_t ctx_;
};

}  // namespace bidmesh::rel
