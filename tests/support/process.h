// Test support without Catch2: temp dirs, free loopback ports, real child processes, waiting on
// conditions with deadlines. Used by the Catch2 integration tests (through tests/support/mesh.h)
// and by the bidmesh-reliability program (tests/reliability), which must not depend on Catch2.
// Every child is killed (its whole process group) and reaped by its destructor; temp dirs are
// removed on destruction unless keep() was called.
// Thread-compatible: one thread owns each object.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <filesystem>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace bidmesh::test {

// A fresh directory $TMPDIR/bidmesh-<tag>-XXXXXX (short: ipc socket paths are limited).
class TempDir {
 public:
  explicit TempDir(const std::string& tag = "test");
  ~TempDir();
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }
  void keep() { keep_ = true; }

 private:
  std::filesystem::path path_;
  bool keep_ = false;
};

// A loopback TCP port in 20000-32000 that was free a moment ago (bound and released), never one
// this process was given before.
uint16_t free_tcp_port();
std::string free_tcp_endpoint();

// The layout of every test mesh: a router "router" with the feed, and bid nodes "bid-1".."bid-N"
// that split the slots evenly (the last one also takes the remainder).
std::string bid_node_name(int i);  // of node i, from 0
// The [feed] table and every [[node]] table of such a mesh; each bid node on a free loopback port,
// and with `client_endpoints` a client_listen of its own too (direct clients, protocol v1.2).
std::string mesh_nodes_toml(const std::string& request_endpoint, const std::string& feed_endpoint, int bid_nodes,
                            bool client_endpoints = false);
// The n-th (from 0) item named "<prefix><k>" whose slot bid node i of `bid_nodes` owns.
std::string item_on_node(const std::string& prefix, int i, int n, int bid_nodes);

// The whole content of a file ("" when it cannot be read).
std::string read_file(const std::filesystem::path& p);

// Absolute path of a program of this build tree (bidmesh-router, bidmesh-bid-node, ...).
std::string program_path(const std::string& name);

// How many times slower than the Release build the programs under test may run: the number in
// BIDMESH_TEST_TIME_SCALE (tools/sanitize sets it: the sanitizers slow everything down), 1 when
// unset or not a number >= 1. wait_until stretches every deadline by it (and so
// Process::wait_exit and run_program); a test that asserts how long something took compares
// against scaled(bound).
double time_scale();
std::chrono::milliseconds scaled(std::chrono::milliseconds d);

// Polls `cond` every `step` until it is true or scaled(deadline) passes. Returns its last value.
bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline,
                std::chrono::milliseconds step = std::chrono::milliseconds(10));

// A child process in its own process group; stdout and stderr appended to `log_file`.
class Process {
 public:
  Process(std::vector<std::string> argv, const std::filesystem::path& log_file,
          const std::map<std::string, std::string>& extra_env = {});
  ~Process();  // SIGKILL to the group, then reap
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }
  bool running();  // reaps it if it exited
  void signal(int sig);
  // Waits for the exit; returns the wait status, or nullopt when still running at the deadline.
  std::optional<int> wait_exit(std::chrono::milliseconds deadline);
  void kill_now();  // SIGKILL and reap
  std::optional<int> status() const { return status_; }

 private:
  pid_t pid_ = -1;
  std::optional<int> status_;
};

// Sets an environment variable for the processes started while it lives (they inherit it).
class EnvGuard {
 public:
  EnvGuard(const char* name, const std::string& value);
  ~EnvGuard();
  EnvGuard(const EnvGuard&) = delete;
  EnvGuard& operator=(const EnvGuard&) = delete;

 private:
  const char* name_;
};

}  // namespace bidmesh::test
