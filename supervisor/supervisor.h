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
// Reload (`bidmesh-ctl reload` or SIGHUP): the config is read again; added nodes start,
// removed ones stop, nodes whose fingerprint changed restart, and every other node that runs
// gets SIGHUP (nodes re-read clients_dir on it), so a changed allow list reaches the routers
// without a restart. A node still starting gets its SIGHUP once it is running (it may have
// read the folder before the change); a node that starts or restarts in the reload gets none.
//
// Control plane: a command is taken only from the supervisor's own uid or root, as the kernel
// reports the sender on the ipc socket (SO_PEERCRED, see control_refusal); anyone else is
// answered with the refusal and nothing of the frame is decoded.
//
// Routers run under RLIMIT_DATA = router_memory_mb (docs/configuration.md).
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

#include "metrics/metrics.h"
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
  std::filesystem::path gateway_bin;   // bidmesh-gateway (kind = "gateway", docs/web.md)
};

// Whether a node of the config runs on `host`.
bool node_runs_on(const NodeConfig& node, const std::string& host);

// What of the config a node's process depends on, as a canonical string: two configs giving a
// node the same fingerprint need no restart of it on reload. Its own NodeConfig (but the
// restart policy, applied without a restart), the feed endpoints, heartbeat interval, request
// size bound, security mode and server certificate path; for a bid node also its effective map
// size and batch bound; for a router also its request timeout, memory limit, clients_dir,
// feed_public and every bid node's name, endpoint and slots (its routing table). The contents
// of clients_dir are not in it: SIGHUP applies them.
std::string node_fingerprint(const MeshConfig& cfg, const NodeConfig& node);

// With security = "curve": the server certificate reads as a secret certificate (refused when
// group or others may read it) and clients_dir is a folder the supervisor can list. nullopt
// when both hold, and always with security = "none"; else one line "<config>: <key>: reason".
// Checked at start (bidmesh-supervisor exits 100) and on reload (the reload is refused).
std::optional<std::string> check_security_files(const MeshConfig& cfg);

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
    pid_t hup_pid = 0;       // a reload came while this process was starting: SIGHUP it once running
    uint32_t metered_restarts = 0;  // the machine's restarts already counted in the metrics
    uint32_t logged_restarts = 0;   // ... and already logged as a `restart` event
    std::string note;        // the last note of process note_pid (NodeMessage::note)
    pid_t note_pid = 0;
    std::optional<NodeStats> stats;  // the last counters of process stats_pid (for `top`)
    pid_t stats_pid = 0;
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
  void send_reload_signal(Node& n);
  void deliver_pending_reload_signals();
  void send_reply(const zmq::message_t& routing_id, const CtlReply& reply);
  void start_all();
  void begin_shutdown(const std::string& why);
  void begin_group_stop(bool then_start, bool then_exit);
  void advance_group_stop();
  void tick_nodes();
  void log_transitions();
  // Brings the node metrics up to date with the machines (every turn: no per-request cost).
  void update_metrics();
  void check_ready();
  void watchdog();
  std::chrono::milliseconds poll_timeout() const;
  Node* find(std::string_view name);
  bool bid_nodes_settled() const;
  NodeStatus status_of(const Node& n, SteadyTime now) const;
  void note(Node& n, std::string_view event, const std::string& line);  // a supervisor line in the node's log

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
  const uint32_t own_uid_;
  std::set<uint32_t> refused_uids_;  // logged once each
  std::chrono::microseconds watchdog_every_{0};
  SteadyTime next_watchdog_{};
  MetricsRegistry metrics_;            // served on supervisor_metrics when set
  SupervisorMetrics node_metrics_;
};

}  // namespace bidmesh
