// Test support for the Catch2 integration tests (processes, ports and temp dirs are in
// tests/support/process.h): a whole mesh (router + bid nodes, started directly, no
// supervisor) on a generated config.
// Everything started here is killed and reaped by its destructor, and temp dirs are removed.
// Thread-compatible: use from the test thread only.
#pragma once

#include <chrono>
#include <filesystem>
#include <functional>
#include <deque>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/process.h"
#include "client/client.h"

namespace bidmesh::test {

// One request that must be answered: REQUIRE-fails when no reply came after the client's retries.
Reply must_call(Client& c, const Request& r);

// Result of running a program to completion.
struct RunResult {
  int exit_code = -1;  // -1 when killed by a signal or timed out
  std::string out;     // stdout and stderr, interleaved
};
RunResult run_program(std::vector<std::string> argv, std::chrono::milliseconds timeout = std::chrono::seconds(20));

struct MeshOptions {
  int bid_nodes = 2;
  uint32_t request_timeout_ms = 1000;
  uint64_t map_size_mb = 64;
  std::string extra_top_level;  // TOML lines added at the top (e.g. "heartbeat_timeout_ms = 600")
  // security = "curve": a mesh keypair in <dir>/keys, a clients_dir <dir>/clients holding an
  // "admin" client with every role (used by the mesh's own readiness checks).
  bool curve = false;
  // A client_listen on every bid node (direct clients, wire contract v1.2); see client_endpoint().
  bool client_listen = false;
};

// A mesh config with free ports in a temp dir, and the processes of it, started directly.
class TestMesh {
 public:
  explicit TestMesh(MeshOptions options = {});
  ~TestMesh();

  const std::filesystem::path& dir() const { return dir_.path(); }
  const std::filesystem::path& config_path() const { return config_path_; }
  const std::string& request_endpoint() const { return request_endpoint_; }
  const std::string& feed_endpoint() const { return feed_endpoint_; }
  // Bid node i's client_listen (needs options.client_listen), read back from the config.
  std::string client_endpoint(int i) const;
  std::string bid_node_name(int i) const { return test::bid_node_name(i); }
  std::filesystem::path log_file(const std::string& node) const;

  // With options.curve: writes a client certificate NAME.key into clients_dir (its secret into
  // <dir>/keys) with `roles` (e.g. "bidder"; "" = none, a reader) and returns its keys. The
  // router sees it after a reload (SIGHUP) or at start.
  CurveKeys add_client(const std::string& name, const std::string& roles);
  // The admin client's keys (nullopt without curve).
  const std::optional<CurveKeys>& admin_keys() const { return admin_keys_; }
  std::filesystem::path clients_dir() const { return dir() / "clients"; }
  std::filesystem::path keys_dir() const { return dir() / "keys"; }

  // Starts the router and every bid node; waits until a ping through the router and a `get`
  // reaching every bid node are answered (REQUIRE-fails after the deadline).
  void start_all(std::chrono::milliseconds deadline = std::chrono::seconds(20));
  void start_node(const std::string& name);
  void stop_node(const std::string& name, int sig);  // sends sig, waits for exit (kills after 10 s)
  void kill_node(const std::string& name);           // SIGKILL, reaped
  Process* process(const std::string& name);
  // An item id whose slot belongs to bid node `i` (distinct per `n`).
  std::string item_on_node(int i, int n = 0) const;
  // Waits until requests for items of bid node i are served again (not `unavailable`).
  bool wait_node_serving(int i, std::chrono::milliseconds deadline);
  // The last lines of a node's log, for failure messages.
  std::string log_tail(const std::string& node) const;

 private:
  TempDir dir_;
  MeshOptions options_;
  std::filesystem::path config_path_;
  std::string request_endpoint_, feed_endpoint_;
  std::string server_public_key_;
  std::optional<CurveKeys> admin_keys_;
  std::vector<std::string> names_;
  std::map<std::string, std::unique_ptr<Process>> processes_;
};

}  // namespace bidmesh::test
