// The life of one supervised node as an explicit state machine (in the manner of s6-supervise):
// events (operator commands, the child's ready/heartbeat messages, its exit, the passing of
// time) move it between states, and the actions (spawn, SIGTERM, SIGKILL) go through a
// ProcessOps interface, so the whole policy runs in unit tests without a single process.
//
//   state     | pid | meaning
//   ----------+-----+-----------------------------------------------------------------------
//   starting  | 0/P | wanted up; P spawned, has not said `ready` yet (pid 0: waiting for the
//             |     | start gate, i.e. a router waiting for the bid nodes)
//   running   |  P  | said `ready`; heartbeats due every interval
//   backoff   |  0  | exited abnormally; respawned when the backoff delay has passed
//   stopping  |  P  | SIGTERM sent (SIGKILL after the stop timeout), or SIGKILL sent (hung)
//   stopped   |  0  | not wanted up (operator stop, a temporary node that exited, a transient
//             |     | node that exited cleanly)
//   failed    |  0  | more than `intensity` restarts within `period`: left down until an
//             |     | operator starts it again
//
// Restart policy (docs/supervisor.md): every automatic restart is counted in a sliding window
// of `period`; a restart that would be the (intensity+1)-th in the window makes the node
// `failed` instead. The delay before a restart is 0 when the exited run was stable (ready and up
// for at least `stable_run`): a node that served and then crashed comes back at once. Otherwise
// it is backoff(n) = min(first_backoff * 2^(n-1), max_backoff) for the n-th unstable exit in a
// row (10 ms, 20 ms, 40 ms, ... capped at 2 s).
//
// Thread-compatible: owned and driven by the supervisor's event loop only.
#pragma once

#include <chrono>
#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

#include "protocol/config.h"

namespace bidmesh {

using SteadyTime = std::chrono::steady_clock::time_point;
using Millis = std::chrono::milliseconds;

enum class NodeState { starting, running, backoff, stopping, stopped, failed };
std::string_view node_state_name(NodeState s);

// How a child ended, from waitpid().
struct ExitInfo {
  bool signaled = false;
  int value = 0;  // exit code, or the signal number when `signaled`
  bool clean() const { return !signaled && value == 0; }
  // "exit 0", "exit 3", "signal 9 (KILL)"
  std::string describe() const;
};

// The timings of the policy; from the mesh config (see from_config).
struct MachineParams {
  uint32_t intensity = 5;
  Millis period{10000};
  Millis heartbeat_timeout{3000};
  Millis start_timeout{5000};   // starting without `ready` for this long: hung
  Millis stop_timeout{5000};    // SIGTERM -> SIGKILL
  Millis stable_run{1000};      // a run at least this long after `ready` restarts at once
  Millis first_backoff{10};
  Millis max_backoff{2000};
  Millis start_gate_bound{5000};  // a gated start waits at most this long

  static MachineParams from_config(const MeshConfig& cfg);
};

// The delay before the n-th unstable restart in a row (n >= 1).
Millis backoff_delay(const MachineParams& p, uint32_t n);

// What the machine asks of the outside world. Implemented by the supervisor (fork/exec, kill)
// and by fakes in tests.
class ProcessOps {
 public:
  virtual ~ProcessOps() = default;
  // Launches the node; returns its pid, or -1 with `error` set.
  virtual pid_t spawn(std::string_view name, std::string& error) = 0;
  // Sends `sig` to the node's process group (the node is its leader).
  virtual void signal(pid_t pid, int sig) = 0;
};

class NodeMachine {
 public:
  // Starts in `stopped`, not wanted up: call start().
  NodeMachine(std::string name, RestartPolicy policy, MachineParams params, ProcessOps& ops);
  NodeMachine(const NodeMachine&) = delete;
  NodeMachine& operator=(const NodeMachine&) = delete;

  // Operator (and initial) commands. Each returns a one-line account of what it did.
  // start: wanted up; clears `failed` and its restart history. `gated`: wait for the gate.
  std::string start(SteadyTime now, bool gated);
  // stop: wanted down; SIGTERM, then SIGKILL after the stop timeout.
  std::string stop(SteadyTime now);
  // restart: stop (if a process runs) then start at once, without backoff; not counted.
  std::string restart(SteadyTime now);

  // Messages from the child. Ignored unless `pid` is the current child's.
  void on_ready(pid_t pid, SteadyTime now);
  void on_heartbeat(pid_t pid, SteadyTime now);
  // The child was reaped. Ignored unless `pid` is the current child's.
  void on_exit(pid_t pid, ExitInfo info, SteadyTime now);
  // Deadlines: start and heartbeat timeouts, stop timeout, end of backoff, gated start.
  // `gate_open`: whether a gated start may spawn now (it spawns anyway after start_gate_bound).
  void tick(SteadyTime now, bool gate_open = true);
  // The next time tick() has work to do (SteadyTime::max() if none).
  SteadyTime next_deadline() const;

  void set_params(const MachineParams& p) { params_ = p; }
  void set_policy(RestartPolicy p) { policy_ = p; }

  const std::string& name() const { return name_; }
  NodeState state() const { return state_; }
  pid_t pid() const { return pid_; }
  bool wanted_up() const { return want_up_; }
  bool waiting_for_gate() const { return state_ == NodeState::starting && pid_ == 0 && gated_; }
  uint32_t restarts() const { return restarts_; }
  const std::string& reason() const { return reason_; }
  const ExitInfo* last_exit() const { return has_exit_ ? &last_exit_ : nullptr; }
  // Time since the current process was spawned (0 without one).
  Millis uptime(SteadyTime now) const;
  // The delays of the backoffs taken since the last stable run or operator start (newest last).
  const std::vector<Millis>& backoffs() const { return backoffs_; }

 private:
  enum class StopIntent { none, stop, restart, hung };
  void try_spawn(SteadyTime now);
  void send_kill(SteadyTime now, std::string reason);
  void after_abnormal_end(SteadyTime now, const std::string& what);

  const std::string name_;
  RestartPolicy policy_;
  MachineParams params_;
  ProcessOps& ops_;

  NodeState state_ = NodeState::stopped;
  pid_t pid_ = 0;
  bool want_up_ = false;
  bool gated_ = false;
  bool run_ready_ = false;  // the current (or last) process said `ready`
  StopIntent intent_ = StopIntent::none;
  bool kill_sent_ = false;
  SteadyTime gate_since_{};
  SteadyTime spawned_at_{};
  SteadyTime ready_at_{};
  SteadyTime last_beat_{};
  SteadyTime stop_deadline_{};
  SteadyTime backoff_until_{};
  std::deque<SteadyTime> restart_times_;  // automatic restarts within the period
  uint32_t unstable_in_row_ = 0;
  uint32_t restarts_ = 0;
  std::vector<Millis> backoffs_;
  ExitInfo last_exit_{};
  bool has_exit_ = false;
  std::string reason_;
};

}  // namespace bidmesh
