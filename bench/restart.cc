// bidmesh-bench restart (see bench_restart.h).
#include "bench/restart.h"

#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include <zmq_addon.hpp>

#include "protocol/clock.h"
#include "protocol/config.h"
#include "protocol/messages.h"
#include "client/client.h"

namespace bidmesh {
namespace {

// argv and the environment are built before fork: the child only execs (this process has
// ZeroMQ threads, so the child must not allocate).
struct Launch {
  std::vector<std::string> args, env;
  std::vector<char*> argv, envp;
};
Launch make_launch(const RestartBenchConfig& cfg) {
  Launch l;
  l.args = {cfg.node_program, "--config", cfg.config_file, "--name", cfg.node};
  for (char** e = environ; *e != nullptr; ++e) l.env.emplace_back(*e);
  // nodes/failpoint.h (tools do not include nodes/): the node waits 60 s before each checkpoint.
  if (cfg.worst_tail) l.env.push_back("BIDMESH_FAILPOINT_CHECKPOINT_DELAY_MS=60000");
  for (auto& a : l.args) l.argv.push_back(a.data());
  l.argv.push_back(nullptr);
  for (auto& e : l.env) l.envp.push_back(e.data());
  l.envp.push_back(nullptr);
  return l;
}

// posix_spawn (glibc: clone with CLONE_VM | CLONE_VFORK), not fork: no copy of this process's
// page tables, and the child runs at once on this thread's CPU while the bench waits for its
// exec, as a supervisor's restart would. With fork the child waited for a CPU: 5-10 ms of the
// measured restart on the loaded 2-core VM (docs/benchmarks.md, "Restart time: where it goes").
pid_t spawn(const RestartBenchConfig& cfg, Launch& l) {
  posix_spawn_file_actions_t actions;
  if (posix_spawn_file_actions_init(&actions) != 0) return -1;
  int rc = posix_spawn_file_actions_addopen(&actions, STDOUT_FILENO, cfg.log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
  if (rc == 0) rc = posix_spawn_file_actions_adddup2(&actions, STDOUT_FILENO, STDERR_FILENO);
  pid_t pid = -1;
  if (rc == 0) rc = posix_spawn(&pid, l.argv[0], &actions, nullptr, l.argv.data(), l.envp.data());
  posix_spawn_file_actions_destroy(&actions);
  return rc == 0 ? pid : -1;
}

// One DEALER; each try is a fresh bid (new id, higher amount) so no reply is a replay.
class Prober {
 public:
  Prober(zmq::context_t& ctx, const std::string& endpoint, std::string item)
      : sock_(ctx, zmq::socket_type::dealer), item_(std::move(item)), prefix_(make_client_id_prefix() + "-rs-") {
    sock_.set(zmq::sockopt::linger, 0);
    sock_.connect(endpoint);
  }

  // Sends one request and waits up to timeout_ms for its reply. nullopt: no reply in time.
  std::optional<Reply> call(Request r, int timeout_ms) {
    r.id = prefix_ + std::to_string(++counter_);
    const std::string frame = encode_request(r);
    std::vector<zmq::const_buffer> parts{zmq::buffer(frame.data(), 0), zmq::buffer(frame)};
    if (!zmq::send_multipart(sock_, parts, zmq::send_flags::dontwait)) return std::nullopt;
    const int64_t deadline = monotonic_ns() + static_cast<int64_t>(timeout_ms) * 1000000;
    for (;;) {
      const int64_t left = deadline - monotonic_ns();
      if (left <= 0) return std::nullopt;
      zmq::pollitem_t items[] = {{sock_.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, std::chrono::milliseconds(left / 1000000 + 1));
      std::vector<zmq::message_t> msg;
      while (zmq::recv_multipart(sock_, std::back_inserter(msg), zmq::recv_flags::dontwait)) {
        auto reply = msg.empty() ? std::nullopt : decode_reply(msg.back().to_string_view());
        msg.clear();
        if (reply && reply->id == r.id) return reply;  // older replies (late ones) are dropped
      }
    }
  }

  std::optional<Reply> bid(int timeout_ms) {
    Request r;
    r.op = Op::bid;
    r.item = item_;
    r.bidder = "restart-bench";
    r.amount = ++amount_;
    return call(r, timeout_ms);
  }

  void set_amount(uint64_t a) { amount_ = a; }
  const std::string& item() const { return item_; }

 private:
  zmq::socket_t sock_;
  std::string item_;
  std::string prefix_;
  uint64_t counter_ = 0;
  uint64_t amount_ = 0;
};

}  // namespace

RestartBenchResult run_restart_bench(zmq::context_t& ctx, const RestartBenchConfig& cfg) {
  RestartBenchResult res;
  MeshConfig mesh;
  try {
    mesh = load_mesh_config(cfg.config_file);
  } catch (const std::exception& e) {
    res.error = e.what();
    return res;
  }
  const auto nodes = mesh.bid_nodes();
  std::size_t index = nodes.size();
  for (std::size_t i = 0; i < nodes.size(); ++i)
    if (nodes[i]->name == cfg.node) index = i;
  if (index == nodes.size()) {
    res.error = "no bid node named '" + cfg.node + "' in " + cfg.config_file;
    return res;
  }
  // An item of that node: the first name of the form restart-<hex>-<n> that it owns.
  const SlotMap slots = mesh.slot_map();
  const std::string base = "restart-" + make_client_id_prefix();
  std::string item;
  for (int n = 0; item.empty() && n < 100000; ++n) {
    std::string candidate = base + "-" + std::to_string(n);
    for (char& c : candidate)
      if (!std::isalnum(static_cast<unsigned char>(c)) && c != '-' && c != '_') c = '_';
    if (slots.owner_of_item(candidate) == index) item = candidate;
  }
  res.item = item;
  Prober p(ctx, cfg.endpoint, item);

  Launch launch = make_launch(cfg);
  pid_t pid = spawn(cfg, launch);
  if (pid < 0) {
    res.error = "cannot fork";
    return res;
  }
  auto reap = [&] {
    if (pid > 0) {
      kill(pid, SIGKILL);
      waitpid(pid, nullptr, 0);
      pid = -1;
    }
  };
  // Bounded: until the item is open and a bid is accepted, at most give_up_ms.
  const int64_t start_deadline = monotonic_ns() + static_cast<int64_t>(cfg.give_up_ms) * 1000000;
  bool ready = false;
  while (!ready && monotonic_ns() < start_deadline) {
    Request open;
    open.op = Op::open;
    open.item = item;
    auto r = p.call(open, 200);
    if (r && (r->ok || r->error == std::optional<std::string>("exists"))) ready = p.bid(200).has_value();
  }
  if (!ready) {
    reap();
    res.error = "bid node " + cfg.node + " did not serve item " + item + " within " + std::to_string(cfg.give_up_ms) + " ms";
    return res;
  }

  for (int t = 0; t < cfg.times; ++t) {
    if (cfg.worst_tail) {
      // One bid at a time until one is not answered: the node waits in its checkpoint.
      const int64_t fill_end = monotonic_ns() + int64_t{120} * 1000 * 1000000;
      bool held = false;
      while (!held && monotonic_ns() < fill_end) held = !p.bid(500).has_value();
      if (!held) {
        reap();
        res.error = "the node never reached a checkpoint in 120 s (is checkpoint_kb reachable?)";
        return res;
      }
    } else {
      // Light load between restarts.
      const int64_t gap_end = monotonic_ns() + static_cast<int64_t>(cfg.gap_ms) * 1000000;
      while (monotonic_ns() < gap_end) {
        (void)p.bid(100);
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
    const int64_t t_kill = monotonic_ns();
    kill(pid, SIGKILL);
    waitpid(pid, nullptr, 0);
    pid = spawn(cfg, launch);
    if (pid < 0) {
      res.error = "cannot fork";
      return res;
    }
    bool accepted = false;
    while (!accepted && monotonic_ns() - t_kill < static_cast<int64_t>(cfg.give_up_ms) * 1000000) {
      ++res.probes;
      auto r = p.bid(cfg.probe_timeout_ms);
      if (r && r->ok) {
        accepted = true;
      } else if (r && r->error == std::optional<std::string>("unavailable")) {
        // The router answers at once while the node is down. A client retries after a pause; a
        // bench that spun here (~2.5 probes per ms) kept the router and itself busy, two
        // processes' worth of CPU taken from the starting node on a 2-core machine.
        std::this_thread::sleep_for(std::chrono::milliseconds(cfg.unavailable_pause_ms));
      } else if (r && !r->ok) {
        // too_low after a lost reply: the amount was taken; the next try bids higher.
        if (r->error == std::optional<std::string>("too_low")) continue;
        reap();
        res.error = "bid on " + item + " refused: " + r->error.value_or("?") + ": " + r->message.value_or("");
        return res;
      }
    }
    if (!accepted) {
      reap();
      res.error = "no accepted bid within " + std::to_string(cfg.give_up_ms) + " ms of kill " + std::to_string(t + 1);
      return res;
    }
    res.restart_ms.push_back(static_cast<double>(monotonic_ns() - t_kill) / 1e6);
  }
  // Leave the node as found: not running (the caller started the bench without it).
  kill(pid, SIGTERM);
  waitpid(pid, nullptr, 0);
  res.ok = true;
  return res;
}

}  // namespace bidmesh
