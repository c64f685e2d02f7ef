// What every node process shares: stop signals and the link to its supervisor.
//
// Signals: SIGTERM and SIGINT only set a flag (stop_requested()); the node's loop polls with a
// bounded timeout, sees the flag, drains and exits. SIGHUP (sent by the supervisor on reload)
// sets another (take_reload_request()): a router then re-reads its clients_dir. A node never
// outlives the supervisor that launched it: the supervisor sets PR_SET_PDEATHSIG(SIGKILL) in the
// child before exec (supervisor/spawn.cc), so nothing here does it again.
//
// SupervisorLink: when the environment names a supervisor (BIDMESH_SUPERVISOR, set by the
// supervisor), sends `ready` once and a `heartbeat` every interval from the serving loop, so a
// loop that hangs stops beating and is replaced. Without a supervisor every call is a no-op.
// Thread-compatible: owned and used by the serving thread only.
//
// start_node: what every node program's main() does before it serves (bidmesh-router,
// bidmesh-bid-node, bidmesh-gateway): reads `--config FILE --name NAME`, loads the mesh config,
// finds the node NAME of its kind, then names the log, logs `start` and installs the signal
// handlers above.
#pragma once

#include <chrono>
#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "protocol/clock.h"  // unix_now_ms, used with the node loops
#include "protocol/config.h"
#include "protocol/control.h"

namespace bidmesh {

// Installs the SIGTERM/SIGINT stop flag, the SIGHUP reload flag, and ignores SIGPIPE.
void install_node_signal_handlers();
bool stop_requested();
// True once per SIGHUP received since the last call.
bool take_reload_request();

// The exit codes of every bidmesh program: 100 usage or config error, 111 system failure.
inline constexpr int kExitUsage = 100;
inline constexpr int kExitSystem = 111;

// A node program's command line read and its config loaded: start_node's answer.
struct NodeStart {
  // When false, main() returns exit_code at once: 0 after --help (printed on stdout), else
  // kExitUsage after one line "PROGRAM: REASON" on stderr (a bad command line, a config that
  // does not load, no node NAME of the program's kind).
  bool ok = false;
  int exit_code = kExitUsage;
  MeshConfig config;
  std::string name;
  std::size_t index = 0;  // of this node in config.nodes (an index, so a copy stays right)
  // REQUIRES: ok.
  const NodeConfig& self() const { return config.nodes[index]; }
};

// Reads `--config FILE --name NAME` (both required) for the program `program` (its name in
// messages, "bidmesh-router"), described by `about` in --help, loads FILE and finds the node NAME
// of `kind`. When that works: sets the log identity (NAME, the config's log_format), logs
// `start` with the pid and config file, and installs the node signal handlers.
// Not thread-safe (signal handlers, the process's log identity): call once, from main().
NodeStart start_node(int argc, char** argv, std::string_view program, std::string_view about, NodeKind kind);

class SupervisorLink {
 public:
  SupervisorLink(zmq::context_t& ctx, std::string node_name);
  SupervisorLink(const SupervisorLink&) = delete;
  SupervisorLink& operator=(const SupervisorLink&) = delete;

  // Call once the node serves (sockets bound, storage open).
  void ready();
  // Call on every loop turn: sends a heartbeat when one is due. Never blocks.
  void tick();
  // A short line the supervisor shows for this node in `bidmesh-ctl status` ("" = none): sent
  // with every heartbeat, and by the next tick() when it changed. Returns whether it changed
  // (kept without a supervisor too, so callers may log each change once).
  bool set_note(std::string_view note);
  // Called for each heartbeat (on the serving thread): the node's counters for `bidmesh-ctl top`
  // (metrics/snapshot.h). Unset: heartbeats carry none.
  void set_stats_source(std::function<NodeStats()> source) { stats_source_ = std::move(source); }
  // The longest a loop may wait before calling tick() again.
  std::chrono::milliseconds max_wait() const { return interval_; }

 private:
  void send(std::string_view type);
  std::string name_;
  std::string note_;
  std::function<NodeStats()> stats_source_;
  std::unique_ptr<zmq::socket_t> socket_;  // null when no supervisor
  std::chrono::milliseconds interval_{500};
  std::chrono::steady_clock::time_point next_beat_{};
};

}  // namespace bidmesh
