// The supervisor daemon: launches every node of its host from the mesh config, watches them,
// restarts them by the policy of NodeMachine, copies their output into rotated log files, and
// answers the CLI on the control endpoint. docs/supervisor.md is the operator's guide.
//
// One thread, one loop (s6 and redis style): zmq::poll over the control ROUTER, a self-pipe
// written by the signal handlers (SIGTERM/SIGINT: shutdown, SIGHUP: reload, SIGCHLD: reap) and
// the nodes' output pipes, with a timeout that is the nearest deadline of any node (at most
// 100 ms). Every turn reaps children with waitpid(WNOHANG), reads output, handles control
// frames, then ticks every node's state machine.
//
// Start order: bid nodes first; a router's first start waits until every local bid node has
// settled (running, failed or stopped) or the start gate bound passes. Shutdown, `stop all`
// and `restart all` stop the routers first, then the bid nodes.
//
// Readiness: when every node is running for the first time, one line goes to stdout:
//   bidmesh: mesh ready: requests <router endpoints>, feed <feed publish>, control <control>
// and READY=1 to $NOTIFY_SOCKET when systemd set it (WATCHDOG=1 too, when WatchdogSec= is set).
//
// Thread-compatible: construct and run() on one thread. Installs process-wide signal handlers.
#pragma once

#include <chrono>
#include <filesystem>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "protocol/config.h"
#include "supervisor/control_wire.h"
#include "supervisor/node_machine.h"
#include "supervisor/rotating_log.h"

namespace bidmesh {

struct SupervisorOptions {
  std::filesystem::path config_file;
  std::string host;                    // nodes with host "" or this one are run here
  std::filesystem::path bid_node_bin;  // absolute paths of the node programs
  std::filesystem::path router_bin;
};

// Whether a node of the config runs on `host`.
bool node_runs_on(const NodeConfig& node, const std::string& host);

// What of the config a node's process depends on, as a canonical string: two configs giving a
// node the same fingerprint need no restart of it on reload. Its own NodeConfig (but the
// restart policy, applied without a restart), the feed endpoints, heartbeat interval and
// request size bound; for a bid node also its effective map size and batch bound; for a
// router also its request timeout and every bid node's name, endpoint and slots (its routing
// table).
std::string node_fingerprint(const MeshConfig& cfg, const NodeConfig& node);

class Supervisor : private ProcessOps {
 public:
  Supervisor(SupervisorOptions options, MeshConfig config);
  ~Supervisor() override;
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;

  // Binds the control endpoint, launches the nodes and runs until shutdown. Returns the exit
  // code: 0 after a shutdown, 111 when the control endpoint cannot be set up.
  int run();

 private:
  struct Node {
    NodeConfig cfg;
    std::unique_ptr<NodeMachine> machine;
    std::unique_ptr<RotatingLog> log;
    int out_fd = -1;         // the current child's stdout/stderr pipe
    bool removed = false;    // dropped from the config by a reload: erased once stopped
    NodeState last_state = NodeState::stopped;
  };
  // An ordered stop: routers first, then bid nodes; then maybe start them again or exit.
  struct GroupStop {
    std::set<std::string> bids_pending;  // bid nodes to stop once no router of the group runs
    std::set<std::string> members;
    bool then_start = false;
    bool then_exit = false;
  };

  // ProcessOps
  pid_t spawn(std::string_view name, std::string& error) override;
  void signal(pid_t pid, int sig) override;

  bool setup(std::string& error);
  void turn();
  void reap_children();
  void read_output(Node& n, bool until_eof);
  void close_output(Node& n);
  void handle_control();
  CtlReply handle_request(const CtlRequest& r);
  CtlReply reload();
  void add_node(const NodeConfig& cfg);
  void start_all();
  void begin_shutdown(const std::string& why);
  void begin_group_stop(bool then_start, bool then_exit);
  void advance_group_stop();
  void tick_nodes();
  void log_transitions();
  void check_ready();
  void watchdog();
  std::chrono::milliseconds poll_timeout() const;
  Node* find(std::string_view name);
  bool bid_nodes_settled() const;
  NodeStatus status_of(const Node& n, SteadyTime now) const;
  void note(Node& n, const std::string& line);  // a supervisor line in the node's log

  const SupervisorOptions options_;
  MeshConfig cfg_;
  MachineParams params_;
  std::vector<std::unique_ptr<Node>> nodes_;  // config order
  zmq::context_t ctx_;
  std::unique_ptr<zmq::socket_t> control_;
  int lock_fd_ = -1;
  std::optional<GroupStop> group_;
  bool shutting_down_ = false;
  bool exit_now_ = false;
  bool announced_ready_ = false;
  std::chrono::microseconds watchdog_every_{0};
  SteadyTime next_watchdog_{};
};

}  // namespace bidmesh
