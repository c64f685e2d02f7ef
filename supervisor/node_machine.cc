#include "supervisor/node_machine.h"

#include <algorithm>
#include <csignal>
#include <cstring>

namespace bidmesh {

std::string_view node_state_name(NodeState s) {
  switch (s) {
    case NodeState::starting: return "starting";
    case NodeState::running: return "running";
    case NodeState::backoff: return "backoff";
    case NodeState::stopping: return "stopping";
    case NodeState::stopped: return "stopped";
    case NodeState::failed: return "failed";
  }
  return "unknown";
}

std::string ExitInfo::describe() const {
  if (!signaled) return "exit " + std::to_string(value);
  std::string s = "signal " + std::to_string(value);
  if (const char* abbrev = sigabbrev_np(value)) s += std::string(" (SIG") + abbrev + ")";
  return s;
}

MachineParams MachineParams::from_config(const MeshConfig& cfg) {
  MachineParams p;
  p.intensity = cfg.restart_intensity;
  p.period = Millis(cfg.restart_period_ms);
  p.heartbeat_timeout = Millis(cfg.heartbeat_timeout_ms);
  p.start_timeout = std::max(Millis(cfg.heartbeat_timeout_ms), Millis(5000));
  p.stop_timeout = Millis(cfg.stop_timeout_ms);
  p.start_gate_bound = p.start_timeout;
  return p;
}

Millis backoff_delay(const MachineParams& p, uint32_t n) {
  if (n == 0) return Millis(0);
  Millis d = p.first_backoff;
  for (uint32_t i = 1; i < n && d < p.max_backoff; ++i) d *= 2;
  return std::min(d, p.max_backoff);
}

namespace {
std::string ms_text(Millis d) { return std::to_string(d.count()) + " ms"; }
}  // namespace

NodeMachine::NodeMachine(std::string name, RestartPolicy policy, MachineParams params, ProcessOps& ops)
    : name_(std::move(name)), policy_(policy), params_(params), ops_(ops) {}

std::string NodeMachine::start(SteadyTime now, bool gated) {
  switch (state_) {
    case NodeState::starting:
    case NodeState::running:
      want_up_ = true;
      return name_ + ": already " + std::string(node_state_name(state_));
    case NodeState::stopping:
      want_up_ = true;
      if (intent_ != StopIntent::hung) intent_ = StopIntent::restart;
      return name_ + ": stopping; starts again once it has exited";
    case NodeState::stopped:
    case NodeState::failed:
    case NodeState::backoff:
      break;
  }
  // An operator start forgets past failures: the intensity window and backoff begin anew.
  restart_times_.clear();
  unstable_in_row_ = 0;
  backoffs_.clear();
  want_up_ = true;
  state_ = NodeState::starting;
  gated_ = gated;
  gate_since_ = now;
  if (gated) {
    reason_ = "waiting for the bid nodes";
    tick(now, false);
    return name_ + ": starting (after the bid nodes)";
  }
  reason_ = "started";
  try_spawn(now);
  return name_ + ": starting";
}

std::string NodeMachine::stop(SteadyTime now) {
  want_up_ = false;
  switch (state_) {
    case NodeState::starting:
    case NodeState::running:
      if (pid_ == 0) {
        state_ = NodeState::stopped;
        reason_ = "stopped before it was started";
        return name_ + ": stopped";
      }
      ops_.signal(pid_, SIGTERM);
      state_ = NodeState::stopping;
      intent_ = StopIntent::stop;
      kill_sent_ = false;
      stop_deadline_ = now + params_.stop_timeout;
      reason_ = "stop requested";
      return name_ + ": stopping";
    case NodeState::stopping:
      intent_ = StopIntent::stop;
      return name_ + ": already stopping";
    case NodeState::backoff:
    case NodeState::failed:
      state_ = NodeState::stopped;
      reason_ = "stopped by operator";
      return name_ + ": stopped";
    case NodeState::stopped:
      return name_ + ": already stopped";
  }
  return name_;
}

std::string NodeMachine::restart(SteadyTime now) {
  if ((state_ == NodeState::starting || state_ == NodeState::running) && pid_ != 0) {
    ops_.signal(pid_, SIGTERM);
    state_ = NodeState::stopping;
    intent_ = StopIntent::restart;
    want_up_ = true;
    kill_sent_ = false;
    stop_deadline_ = now + params_.stop_timeout;
    reason_ = "restart requested";
    return name_ + ": restarting";
  }
  if (state_ == NodeState::stopping) {
    want_up_ = true;
    if (intent_ != StopIntent::hung) intent_ = StopIntent::restart;
    return name_ + ": stopping; starts again once it has exited";
  }
  if (state_ == NodeState::starting) {  // waiting for the gate: go now
    gated_ = false;
    try_spawn(now);
    return name_ + ": starting";
  }
  return start(now, false);
}

void NodeMachine::on_ready(pid_t pid, SteadyTime now) {
  if (pid == 0 || pid != pid_) return;
  last_beat_ = now;
  if (state_ != NodeState::starting) return;
  state_ = NodeState::running;
  ready_at_ = now;
  run_ready_ = true;
}

void NodeMachine::on_heartbeat(pid_t pid, SteadyTime now) {
  if (pid == 0 || pid != pid_) return;
  // A heartbeat proves the loop serves: it stands for a `ready` that was lost.
  if (state_ == NodeState::starting) {
    on_ready(pid, now);
    return;
  }
  last_beat_ = now;
}

void NodeMachine::on_exit(pid_t pid, ExitInfo info, SteadyTime now) {
  if (pid == 0 || pid != pid_) return;
  pid_ = 0;
  last_exit_ = info;
  has_exit_ = true;
  switch (state_) {
    case NodeState::stopping:
      switch (intent_) {
        case StopIntent::hung:
          after_abnormal_end(now, reason_ + ", killed");
          return;
        case StopIntent::restart:
          unstable_in_row_ = 0;
          backoffs_.clear();
          state_ = NodeState::starting;
          reason_ = "restarted by operator";
          try_spawn(now);
          return;
        case StopIntent::stop:
        case StopIntent::none:
          state_ = NodeState::stopped;
          reason_ = "stopped (" + info.describe() + (kill_sent_ ? " after the stop timeout)" : ")");
          return;
      }
      return;
    case NodeState::starting:
    case NodeState::running: {
      const std::string what = (state_ == NodeState::starting ? "exited before ready: " : "exited: ") +
                               info.describe();
      if (policy_ == RestartPolicy::transient && info.clean()) {
        state_ = NodeState::stopped;
        want_up_ = false;
        reason_ = what + "; transient: not restarted after a clean exit";
        return;
      }
      after_abnormal_end(now, what);
      return;
    }
    case NodeState::backoff:
    case NodeState::stopped:
    case NodeState::failed:
      return;  // no process in these states
  }
}

void NodeMachine::after_abnormal_end(SteadyTime now, const std::string& what) {
  if (policy_ == RestartPolicy::temporary) {
    state_ = NodeState::stopped;
    want_up_ = false;
    reason_ = what + "; temporary: not restarted";
    return;
  }
  if (!want_up_) {
    state_ = NodeState::stopped;
    reason_ = what;
    return;
  }
  const bool stable = run_ready_ && now - ready_at_ >= params_.stable_run;
  while (!restart_times_.empty() && now - restart_times_.front() >= params_.period) restart_times_.pop_front();
  if (restart_times_.size() >= params_.intensity) {
    state_ = NodeState::failed;
    want_up_ = false;
    reason_ = what + "; " + std::to_string(restart_times_.size()) + " restarts within " +
              ms_text(params_.period) + ": failed, left down";
    return;
  }
  restart_times_.push_back(now);
  ++restarts_;
  if (stable) {
    unstable_in_row_ = 0;
    backoffs_.clear();
    state_ = NodeState::starting;
    reason_ = what + "; restarted at once";
    try_spawn(now);
    return;
  }
  ++unstable_in_row_;
  const Millis d = backoff_delay(params_, unstable_in_row_);
  backoffs_.push_back(d);
  state_ = NodeState::backoff;
  backoff_until_ = now + d;
  reason_ = what + "; restarting in " + ms_text(d);
}

void NodeMachine::try_spawn(SteadyTime now) {
  std::string error;
  run_ready_ = false;
  gated_ = false;
  intent_ = StopIntent::none;
  kill_sent_ = false;
  const pid_t pid = ops_.spawn(name_, error);
  if (pid > 0) {
    pid_ = pid;
    state_ = NodeState::starting;
    spawned_at_ = now;
    last_beat_ = now;
    return;
  }
  pid_ = 0;
  state_ = NodeState::starting;
  after_abnormal_end(now, "cannot launch: " + error);
}

void NodeMachine::send_kill(SteadyTime now, std::string reason) {
  ops_.signal(pid_, SIGKILL);
  state_ = NodeState::stopping;
  intent_ = StopIntent::hung;
  kill_sent_ = true;
  stop_deadline_ = now;
  reason_ = std::move(reason);
}

void NodeMachine::tick(SteadyTime now, bool gate_open) {
  switch (state_) {
    case NodeState::starting:
      if (pid_ == 0) {
        if (!want_up_) return;
        if (gated_ && !gate_open && now - gate_since_ < params_.start_gate_bound) return;
        if (gated_) {
          reason_ = gate_open ? "started once the bid nodes had settled"
                              : "started although the bid nodes were not running after " +
                                    ms_text(params_.start_gate_bound);
        }
        try_spawn(now);
        return;
      }
      if (now - spawned_at_ >= params_.start_timeout) {
        send_kill(now, "hung: not ready after " + ms_text(params_.start_timeout));
      }
      return;
    case NodeState::running:
      if (now - last_beat_ >= params_.heartbeat_timeout) {
        send_kill(now, "hung: no heartbeat for " + ms_text(params_.heartbeat_timeout));
      }
      return;
    case NodeState::stopping:
      if (!kill_sent_ && now >= stop_deadline_) {
        ops_.signal(pid_, SIGKILL);
        kill_sent_ = true;
      }
      return;
    case NodeState::backoff:
      if (now >= backoff_until_) try_spawn(now);
      return;
    case NodeState::stopped:
    case NodeState::failed:
      return;
  }
}

SteadyTime NodeMachine::next_deadline() const {
  switch (state_) {
    case NodeState::starting:
      if (pid_ == 0) return gated_ ? gate_since_ + params_.start_gate_bound : SteadyTime::min();
      return spawned_at_ + params_.start_timeout;
    case NodeState::running: return last_beat_ + params_.heartbeat_timeout;
    case NodeState::stopping: return kill_sent_ ? SteadyTime::max() : stop_deadline_;
    case NodeState::backoff: return backoff_until_;
    case NodeState::stopped:
    case NodeState::failed: return SteadyTime::max();
  }
  return SteadyTime::max();
}

Millis NodeMachine::uptime(SteadyTime now) const {
  if (pid_ == 0) return Millis(0);
  return std::chrono::duration_cast<Millis>(now - spawned_at_);
}

}  // namespace bidmesh
