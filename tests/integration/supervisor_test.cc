// The real bidmesh-supervisor running real nodes on free loopback ports in a temp data dir.
// Every wait is a condition with a deadline; every process started here is stopped at the end
// (the supervisor is shut down, or killed: its nodes die with it by PR_SET_PDEATHSIG).
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "protocol/messages.h"
#include "protocol/slot_map.h"
#include "security/certificate.h"
#include "supervisor/control_wire.h"
#include "supervisor/ctl_client.h"
#include "supervisor/rotating_log.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace std::chrono_literals;
namespace fs = std::filesystem;
using test::Process;
using test::read_file;
using test::RunResult;
using test::TempDir;
using test::make_bid;
using test::make_request;
using test::wait_until;

namespace {

struct NodeSpec {
  std::string name;
  std::string kind;  // "router" | "bid"
  std::string listen;
  std::string slots;  // bid: "0-8191"
  bool feed = false;
};

bool process_gone(pid_t pid) {
  if (::kill(pid, 0) != 0) return true;
  // A zombie waiting for a reaper that is not us (init in a container may be slow) is gone too.
  const std::string stat = read_file("/proc/" + std::to_string(pid) + "/stat");
  const auto close = stat.rfind(')');
  return stat.empty() || (close != std::string::npos && close + 2 < stat.size() && stat[close + 2] == 'Z');
}

// An item whose slot falls in [first, last].
std::string item_in_slots(uint32_t first, uint32_t last, int n = 0) {
  int found = 0;
  for (int k = 0;; ++k) {
    std::string item = "sup-item-" + std::to_string(k);
    const uint32_t s = slot_of(item);
    if (s >= first && s <= last && found++ == n) return item;
  }
}

// A supervisor with its own temp dir and config.
class SupervisedMesh {
 public:
  explicit SupervisedMesh(std::string extra = "") : extra_(std::move(extra)) {
    feed_ = test::free_tcp_endpoint();
    collect_ = test::free_tcp_endpoint();
    nodes_ = {{"router", "router", test::free_tcp_endpoint(), "", true},
              {"bid-1", "bid", test::free_tcp_endpoint(), "0-8191", false},
              {"bid-2", "bid", test::free_tcp_endpoint(), "8192-16383", false}};
    write_config();
  }
  ~SupervisedMesh() { stop(); }

  const fs::path& config() const { return config_; }
  fs::path dir() const { return dir_.path(); }
  // Rewrites the config with `extra` as its top lines and runs `bidmesh-ctl reload`.
  RunResult reload_with(std::string extra) {
    extra_ = std::move(extra);
    write_config();
    return ctl({"reload"});
  }
  std::vector<NodeSpec>& nodes() { return nodes_; }
  const std::string& request_endpoint() const { return nodes_[0].listen; }
  fs::path data_dir() const { return dir_.path() / "data"; }
  std::string control() const { return "ipc://" + (data_dir() / "control" / "supervisor.sock").string(); }
  fs::path out_file() const { return dir_.path() / "supervisor.out"; }
  fs::path log_file(const std::string& node) const { return data_dir() / "logs" / (node + ".log"); }
  Process& process() { return *sup_; }

  void write_config() {
    std::ofstream cfg(config_);
    cfg << extra_ << "\n"
        << "data_dir = \"data\"\nmap_size_mb = 64\nstop_timeout_ms = 3000\n"
        << "[feed]\npublish = \"" << feed_ << "\"\ncollect = \"" << collect_ << "\"\n";
    for (const auto& n : nodes_) {
      cfg << "[[node]]\nname = \"" << n.name << "\"\nkind = \"" << n.kind << "\"\nlisten = \"" << n.listen << "\"\n";
      if (n.kind == "bid") cfg << "slots = [\"" << n.slots << "\"]\n";
      if (n.kind == "router" && n.feed) cfg << "feed = true\n";
    }
  }

  void start() {
    sup_ = std::make_unique<Process>(
        std::vector<std::string>{test::program_path("bidmesh-supervisor"), "--config", config_.string()}, out_file());
  }
  // Starts and waits for the readiness line.
  void start_ready() {
    start();
    if (!wait_until([&] { return ready_lines() == 1; }, 20s)) FAIL("mesh not ready\n" << diagnostics());
  }
  int ready_lines() const {
    const std::string out = read_file(out_file());
    int n = 0;
    for (std::size_t p = out.find("bidmesh: mesh ready: "); p != std::string::npos;
         p = out.find("bidmesh: mesh ready: ", p + 1)) {
      ++n;
    }
    return n;
  }

  // Graceful stop (SIGTERM), then SIGKILL if it hangs.
  void stop() {
    if (!sup_) return;
    sup_->signal(SIGTERM);
    if (!sup_->wait_exit(15s)) sup_->kill_now();
    sup_.reset();
  }

  std::vector<NodeStatus> status() {
    CtlClient client(ctx_, control(), 3000ms);
    std::string error;
    auto reply = client.call({"status", {}}, error);
    if (!reply || !reply->ok) return {};
    auto* list = std::get_if<std::vector<NodeStatus>>(&reply->data);
    return list ? *list : std::vector<NodeStatus>{};
  }
  std::optional<NodeStatus> node(const std::string& name) {
    for (auto& s : status()) {
      if (s.name == name) return s;
    }
    return std::nullopt;
  }
  bool node_is(const std::string& name, const std::string& state) {
    auto s = node(name);
    return s && s->state == state;
  }
  pid_t pid_of(const std::string& name) {
    auto s = node(name);
    return s ? static_cast<pid_t>(s->pid) : 0;
  }

  // The supervisor run to completion (for configs it refuses).
  RunResult run_supervisor() {
    return test::run_program({test::program_path("bidmesh-supervisor"), "--config", config_.string()}, 20s);
  }

  RunResult ctl(std::vector<std::string> args, std::chrono::milliseconds timeout = 20s) {
    std::vector<std::string> argv{test::program_path("bidmesh-ctl"), "--config", config_.string()};
    argv.insert(argv.end(), args.begin(), args.end());
    return test::run_program(argv, timeout);
  }

  std::string diagnostics() {
    std::string out = "--- supervisor ---\n" + read_file(out_file());
    for (const auto& n : nodes_) {
      out += "--- " + n.name + " ---\n";
      for (const auto& l : tail_lines(log_file(n.name), 15)) out += l + "\n";
    }
    return out;
  }

  zmq::context_t& ctx() { return ctx_; }

 private:
  TempDir dir_;
  fs::path config_ = dir_.path() / "mesh.toml";
  std::string extra_;
  std::string feed_, collect_;
  std::vector<NodeSpec> nodes_;
  std::unique_ptr<Process> sup_;
  zmq::context_t ctx_;
};

// Wall-clock milliseconds of day from a "[bidmesh-supervisor YYYY-MM-DD HH:MM:SS.mmm] launched"
// line of a node log.
std::vector<int64_t> launch_times_ms(const fs::path& log) {
  std::vector<int64_t> times;
  std::istringstream in(read_file(log));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("[bidmesh-supervisor ", 0) != 0 || line.find("] launched pid") == std::string::npos) continue;
    int h = 0, m = 0, s = 0, ms = 0;
    if (std::sscanf(line.c_str() + 20 + 11, "%d:%d:%d.%d", &h, &m, &s, &ms) == 4) {
      times.push_back(((h * 60 + m) * 60 + s) * 1000LL + ms);
    }
  }
  return times;
}

// "Max data size" of a process (RLIMIT_DATA) from /proc/PID/limits: "SOFT HARD", e.g.
// "268435456 268435456" or "unlimited unlimited"; "" when the process is gone.
std::string max_data_size(pid_t pid) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/limits"));
  const std::string label = "Max data size";
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(label, 0) != 0) continue;
    std::istringstream fields(line.substr(label.size()));
    std::string soft, hard;
    fields >> soft >> hard;
    return soft + " " + hard;
  }
  return "";
}

// How many times `text` occurs in `file`.
int count_in(const fs::path& file, const std::string& text) {
  const std::string all = read_file(file);
  int n = 0;
  for (auto p = all.find(text); p != std::string::npos; p = all.find(text, p + 1)) ++n;
  return n;
}

// REQUIRE(wait_until(...)) that prints the supervisor's output and the node logs on failure.
#define REQUIRE_WAIT(mesh, cond, deadline)                       \
  do {                                                           \
    if (!wait_until([&] { return (cond); }, (deadline), 10ms)) { \
      FAIL("timed out waiting for " #cond "\n" << (mesh).diagnostics()); \
    }                                                            \
  } while (0)

// A reload with `extra` (a key of the router's alone) restarts the router and tells the bid
// nodes; waits until the new router runs.
void reload_restarting_router(SupervisedMesh& mesh, const std::string& extra) {
  const pid_t old = mesh.pid_of("router");
  const auto out = mesh.reload_with(extra);
  CHECK(out.exit_code == 0);
  CHECK(out.out.find("changed router; SIGHUP to bid-1,bid-2") != std::string::npos);
  REQUIRE_WAIT(mesh, mesh.node_is("router", "running") && mesh.pid_of("router") != old, 20s);
}

}  // namespace

TEST_CASE("supervisor restarts a bid node killed with SIGKILL, data intact, client bids all succeed",
          "[supervisor]") {
  SupervisedMesh mesh;
  mesh.start_ready();
  const std::string item = item_in_slots(0, 8191);
  {
    Client c(mesh.ctx(), mesh.request_endpoint(), 2000, 3);
    auto r = c.call(make_request(Op::open, item));
    REQUIRE(r);
    REQUIRE(r->ok);
  }
  const pid_t old_pid = mesh.pid_of("bid-1");
  REQUIRE(old_pid > 0);

  constexpr uint64_t kBids = 150;
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> failed{0};
  std::thread bidder([&] {
    Client c(mesh.ctx(), mesh.request_endpoint(), 250, 40);
    for (uint64_t a = 1; a <= kBids; ++a) {
      auto r = c.call(make_bid(item, "alice", a));
      if (!r || !r->ok) ++failed;
      ++done;
    }
  });
  wait_until([&] { return done >= 20; }, 20s);
  const auto killed_at = std::chrono::steady_clock::now();
  ::kill(old_pid, SIGKILL);
  // Restart-to-serving: from the kill to the first `get` on its item answered by the new node.
  bool serving = wait_until(
      [&] {
        Client probe(mesh.ctx(), mesh.request_endpoint(), 100, 0);
        auto r = probe.call(make_request(Op::get, item));
        return r && r->ok;  // the old process is dead: the new one answered
      },
      20s, 1ms);
  const auto took = std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - killed_at);
  bidder.join();
  std::printf("supervisor: bid node restart-to-serving after kill -9: %.1f ms\n", took.count() / 1000.0);
  REQUIRE(serving);
  CHECK(failed == 0);
  auto st = mesh.node("bid-1");
  REQUIRE(st);
  CHECK(st->state == "running");
  CHECK(st->restarts == 1);
  CHECK(st->last_exit == "signal 9 (SIGKILL)");
  CHECK(st->pid != static_cast<uint64_t>(old_pid));
  Client c(mesh.ctx(), mesh.request_endpoint(), 2000, 3);
  auto g = c.call(make_request(Op::get, item));
  REQUIRE(g);
  REQUIRE(g->ok);
  CHECK(g->u64("max") == kBids);
  CHECK(g->u64("bids") == kBids);
}

// "Peak memory" (VmHWM) of a process in kB, 0 when it is gone.
uint64_t peak_rss_kb(pid_t pid) {
  std::istringstream in(read_file("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("VmHWM:", 0) == 0) return std::stoull(line.substr(6));
  return 0;
}

// libzmq holds a message until its last frame (ZMQ_MAXMSGSIZE bounds each frame, not the count),
// so an allowed client can grow the router with one message of many frames. The router runs
// under RLIMIT_DATA = router_memory_mb. At the limit libzmq 4.3's decoder gets ENOMEM, drops
// that connection and frees the message; if instead any allocation of the router fails, it
// exits and the supervisor restarts it. Either way clients retry by id and nothing
// acknowledged may be lost; the recovery is printed.
// [no-sanitizer]: a sanitizer build runs its routers without RLIMIT_DATA (the sanitizers' shadow
// memory counts against it; supervisor.cc), so there is no limit to reach there.
TEST_CASE("a message of many frames stops at the router's memory limit, and nothing acknowledged is lost",
          "[supervisor][hostile][no-sanitizer]") {
  SupervisedMesh mesh("router_memory_mb = 128");
  mesh.start_ready();
  const std::string item = item_in_slots(8192, 16383);
  {
    Client c(mesh.ctx(), mesh.request_endpoint(), 2000, 3);
    auto r = c.call(make_request(Op::open, item));
    REQUIRE(r);
    REQUIRE(r->ok);
  }
  const pid_t old_pid = mesh.pid_of("router");
  REQUIRE(old_pid > 0);

  // A bidder keeps going through it all; each bid is retried by id until it is answered.
  constexpr uint64_t kBids = 200;
  std::atomic<uint64_t> done{0};
  std::atomic<uint64_t> acknowledged{0};
  std::thread bidder([&] {
    Client c(mesh.ctx(), mesh.request_endpoint(), 250, 80);
    for (uint64_t a = 1; a <= kBids; ++a) {
      auto r = c.call(make_bid(item, "alice", a));
      if (r && r->ok) acknowledged = a;
      ++done;
    }
  });
  struct Join {
    std::thread& t;
    ~Join() { if (t.joinable()) t.join(); }
  } join{bidder};
  REQUIRE(wait_until([&] { return done >= 20; }, 20s));

  // 4,000 frames of 60,000 bytes (each under the 64 KiB frame limit): 240 MB in one message,
  // well past the limit of 128 MiB.
  const auto sent_at = std::chrono::steady_clock::now();
  zmq::socket_t attacker(mesh.ctx(), zmq::socket_type::dealer);
  attacker.set(zmq::sockopt::linger, 0);
  attacker.connect(mesh.request_endpoint());
  const std::string part(60000, 'm');
  bool queued = true;
  for (int i = 0; i < 4000; ++i) queued = queued && attacker.send(zmq::buffer(part), zmq::send_flags::sndmore);
  REQUIRE((queued && attacker.send(zmq::buffer(part), zmq::send_flags::none)));
  // The router gets the attack in full (or dies of it): wait until it has grown to its limit or
  // been replaced.
  const bool hit_limit = wait_until(
      [&] { return mesh.pid_of("router") != old_pid || peak_rss_kb(old_pid) > 64 * 1024; }, 30s, 5ms);
  // Recovery: from the attack to the first ping answered by the router after it.
  const bool serving = wait_until(
      [&] {
        Client probe(mesh.ctx(), mesh.request_endpoint(), 200, 0);
        auto r = probe.call(make_request(Op::ping, ""));
        return r && r->ok;
      },
      20s, 1ms);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - sent_at);
  bidder.join();
  const pid_t new_pid = mesh.pid_of("router");
  auto st = mesh.node("router");
  REQUIRE(st);
  std::printf("hostile input: one message of 4000 x 60000-byte frames against RLIMIT_DATA 128 MiB: %s; serving "
              "%lld ms after the attack began; peak RSS %llu kB\n",
              new_pid == old_pid ? "the router refused it (ENOMEM, connection dropped) and kept running"
                                 : ("the router exited (" + st->last_exit + ") and was restarted").c_str(),
              static_cast<long long>(took.count()), static_cast<unsigned long long>(peak_rss_kb(new_pid)));
  CHECK(hit_limit);
  REQUIRE(serving);
  CHECK(peak_rss_kb(new_pid) <= 128 * 1024);
  // Every bid was answered in the end (retries by id), and what was acknowledged is there.
  CHECK(acknowledged == kBids);
  Client c(mesh.ctx(), mesh.request_endpoint(), 2000, 3);
  auto g = c.call(make_request(Op::get, item));
  REQUIRE(g);
  REQUIRE(g->ok);
  CHECK(g->u64("max") == kBids);
  CHECK(g->u64("bids") == kBids);
}

TEST_CASE("supervisor marks a node that exits at once failed after the intensity, with backoff",
          "[supervisor]") {
  // bid-2's port is held by the test: it cannot bind and exits on every start.
  const int holder = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(holder >= 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  REQUIRE(::bind(holder, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(holder, 1) == 0);
  socklen_t len = sizeof addr;
  ::getsockname(holder, reinterpret_cast<sockaddr*>(&addr), &len);
  const std::string held = "tcp://127.0.0.1:" + std::to_string(ntohs(addr.sin_port));

  SupervisedMesh mesh("restart_intensity = 5\nrestart_period_ms = 30000");
  mesh.nodes()[2].listen = held;
  mesh.write_config();
  mesh.start();
  REQUIRE_WAIT(mesh, mesh.node_is("bid-2", "failed"), 30s);
  ::close(holder);
  auto st = mesh.node("bid-2");
  REQUIRE(st);
  CHECK(st->restarts == 5);
  CHECK(st->backoff_ms == std::vector<uint64_t>{10, 20, 40, 80, 160});
  CHECK(st->pid == 0);
  CHECK_FALSE(st->last_exit.empty());
  CHECK(st->reason.find("failed") != std::string::npos);
  CHECK_FALSE(st->log_tail.empty());
  // Six launches; each wait at least the backoff before it.
  const auto times = launch_times_ms(mesh.log_file("bid-2"));
  REQUIRE(times.size() == 6);
  std::string gaps;
  for (std::size_t i = 1; i < times.size(); ++i) {
    gaps += std::to_string(times[i] - times[i - 1]) + " ms ";
    CHECK(times[i] - times[i - 1] >= static_cast<int64_t>(st->backoff_ms[i - 1]));
  }
  std::printf("supervisor: gaps between launches of a node failing at once: %s\n", gaps.c_str());
  // The supervisor stays up and runs the rest; the router started once bid-2 had settled.
  CHECK(wait_until([&] { return mesh.node_is("bid-1", "running") && mesh.node_is("router", "running"); }, 20s));
  CHECK(mesh.process().running());
  // status shows the failure in words, with the log
  const auto out = mesh.ctl({"status", "bid-2"});
  CHECK(out.exit_code == 0);
  CHECK(out.out.find("failed") != std::string::npos);
  CHECK(out.out.find("last lines of its log") != std::string::npos);
}

TEST_CASE("supervisor replaces a hung (SIGSTOPped) node after missed heartbeats", "[supervisor]") {
  SupervisedMesh mesh("heartbeat_interval_ms = 100\nheartbeat_timeout_ms = 1000");
  mesh.start_ready();
  const pid_t old_pid = mesh.pid_of("bid-2");
  REQUIRE(old_pid > 0);
  const auto stopped_at = std::chrono::steady_clock::now();
  ::kill(old_pid, SIGSTOP);
  REQUIRE(wait_until(
      [&] {
        auto s = mesh.node("bid-2");
        return s && s->state == "running" && s->pid != static_cast<uint64_t>(old_pid);
      },
      20s, 20ms));
  std::printf("supervisor: SIGSTOPped node replaced after %lld ms (heartbeat timeout 1000 ms)\n",
              static_cast<long long>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                         std::chrono::steady_clock::now() - stopped_at)
                                         .count()));
  auto st = mesh.node("bid-2");
  REQUIRE(st);
  CHECK(st->restarts >= 1);
  const std::string sup = read_file(mesh.out_file());
  CHECK(sup.find("bid-2: running -> stopping (pid " + std::to_string(old_pid) + "): hung: no heartbeat for 1000 ms") !=
        std::string::npos);
  CHECK(wait_until([&] { return process_gone(old_pid); }, 5s));
}

TEST_CASE("SIGKILL of the supervisor leaves no node behind", "[supervisor]") {
  SupervisedMesh mesh;
  mesh.start_ready();
  std::vector<pid_t> pids;
  for (const auto& s : mesh.status()) pids.push_back(static_cast<pid_t>(s.pid));
  REQUIRE(pids.size() == 3);
  for (pid_t p : pids) REQUIRE(p > 0);
  const auto killed_at = std::chrono::steady_clock::now();
  mesh.process().kill_now();
  const bool gone = wait_until([&] { return std::all_of(pids.begin(), pids.end(), process_gone); }, 5s, 5ms);
  const auto took = std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - killed_at);
  std::printf("supervisor: nodes gone %lld ms after SIGKILL of the supervisor\n", static_cast<long long>(took.count()));
  CHECK(gone);
  CHECK(took < 1000ms);
  // The CLI says so, at once.
  const auto out = mesh.ctl({"status"});
  CHECK(out.exit_code == 111);
  CHECK(out.out.find("supervisor not running at") != std::string::npos);
}

TEST_CASE("supervisor reload touches only the added and the removed node", "[supervisor]") {
  SupervisedMesh mesh;
  mesh.nodes().push_back({"router-2", "router", test::free_tcp_endpoint(), "", false});
  mesh.write_config();
  mesh.start_ready();
  std::map<std::string, pid_t> before;
  for (const auto& s : mesh.status()) before[s.name] = static_cast<pid_t>(s.pid);
  REQUIRE(before.size() == 4);

  // router-2 out, router-3 in, by `bidmesh-ctl reload`.
  const NodeSpec router2 = mesh.nodes().back();
  mesh.nodes().back() = {"router-3", "router", test::free_tcp_endpoint(), "", false};
  mesh.write_config();
  auto out = mesh.ctl({"reload"});
  CHECK(out.exit_code == 0);
  CHECK(out.out.find("added router-3; removed router-2; changed none") != std::string::npos);
  REQUIRE(wait_until(
      [&] {
        auto list = mesh.status();
        bool r3 = false, r2 = false;
        for (const auto& s : list) {
          r3 |= s.name == "router-3" && s.state == "running";
          r2 |= s.name == "router-2";
        }
        return r3 && !r2;
      },
      20s));
  CHECK(process_gone(before["router-2"]));
  for (const char* n : {"router", "bid-1", "bid-2"}) CHECK(mesh.pid_of(n) == before[n]);

  // And back, by SIGHUP.
  mesh.nodes().back() = router2;
  mesh.write_config();
  const pid_t r3 = mesh.pid_of("router-3");
  mesh.process().signal(SIGHUP);
  REQUIRE(wait_until(
      [&] {
        auto list = mesh.status();
        bool r2 = false, gone3 = true;
        for (const auto& s : list) {
          r2 |= s.name == "router-2" && s.state == "running";
          gone3 &= s.name != "router-3";
        }
        return r2 && gone3;
      },
      20s));
  CHECK(wait_until([&] { return process_gone(r3); }, 5s));
  for (const char* n : {"router", "bid-1", "bid-2"}) CHECK(mesh.pid_of(n) == before[n]);

  // A config that does not load is refused and changes nothing.
  {
    std::ofstream(mesh.config(), std::ios::app) << "this is not toml = = =\n";
  }
  CHECK(mesh.ctl({"reload"}).exit_code == 100);  // the CLI cannot read it either
  out = test::run_program({test::program_path("bidmesh-ctl"), "--control", mesh.control(), "reload"});
  CHECK(out.exit_code == 1);
  CHECK(out.out.find("reload refused") != std::string::npos);
  CHECK(mesh.status().size() == 4);
}

TEST_CASE("bidmesh-ctl commands and their errors", "[supervisor]") {
  SupervisedMesh mesh;
  mesh.start_ready();
  CHECK(mesh.ready_lines() == 1);

  SECTION("status") {
    auto out = mesh.ctl({"status"});
    CHECK(out.exit_code == 0);
    CHECK(out.out.find("NAME") != std::string::npos);
    CHECK(out.out.find("bid-2") != std::string::npos);
    out = mesh.ctl({"--json", "status"});
    CHECK(out.exit_code == 0);
    CHECK(out.out.rfind("[{\"name\":\"router\",\"kind\":\"router\",\"state\":\"running\",\"pid\":", 0) == 0);
    out = mesh.ctl({"status", "bid-1", "--json"});
    CHECK(out.exit_code == 0);
    CHECK(out.out.find("\"kind\":\"bid\"") != std::string::npos);
    CHECK(out.out.find("bid-2") == std::string::npos);
    out = mesh.ctl({"status", "nope"});
    CHECK(out.exit_code == 1);
    CHECK(out.out.find("unknown node: nope") != std::string::npos);
  }

  SECTION("stop, start, restart one node") {
    const pid_t p = mesh.pid_of("bid-2");
    auto out = mesh.ctl({"stop", "bid-2"});
    CHECK(out.exit_code == 0);
    REQUIRE_WAIT(mesh, mesh.node_is("bid-2", "stopped"), 20s);
    CHECK(mesh.node("bid-2")->last_exit == "exit 0");  // drained and exited on SIGTERM
    CHECK(process_gone(p));
    out = mesh.ctl({"start", "bid-2"});
    CHECK(out.exit_code == 0);
    REQUIRE_WAIT(mesh, mesh.node_is("bid-2", "running"), 20s);
    const pid_t q = mesh.pid_of("bid-2");
    out = mesh.ctl({"restart", "bid-2"});
    CHECK(out.exit_code == 0);
    REQUIRE_WAIT(mesh, mesh.node_is("bid-2", "running") && mesh.pid_of("bid-2") != q, 20s);
    CHECK(mesh.node("bid-2")->restarts == 0);  // operator actions are not counted as crashes
    CHECK(mesh.ctl({"stop", "nope"}).exit_code == 1);
    CHECK(mesh.ctl({"start", "nope"}).exit_code == 1);
    CHECK(mesh.ctl({"restart", "nope"}).exit_code == 1);
  }

  SECTION("stop all, start all, restart all") {
    auto out = mesh.ctl({"stop", "all"});
    CHECK(out.exit_code == 0);
    REQUIRE(wait_until(
        [&] {
          auto list = mesh.status();
          return !list.empty() && std::all_of(list.begin(), list.end(), [](auto& s) { return s.state == "stopped"; });
        },
        20s));
    // The router was stopped before the bid nodes.
    const std::string sup = read_file(mesh.out_file());
    CHECK(sup.find("router: stopping -> stopped") < sup.find("bid-1: running -> stopping"));
    CHECK(mesh.ctl({"start", "all"}).exit_code == 0);
    auto all_running = [&] {
      auto list = mesh.status();
      return !list.empty() && std::all_of(list.begin(), list.end(), [](auto& s) { return s.state == "running"; });
    };
    REQUIRE_WAIT(mesh, all_running(), 20s);
    const pid_t r = mesh.pid_of("router");
    CHECK(mesh.ctl({"restart", "all"}).exit_code == 0);
    REQUIRE_WAIT(mesh, all_running() && mesh.pid_of("router") != r, 20s);
  }

  SECTION("signal") {
    const pid_t p = mesh.pid_of("bid-1");
    auto out = mesh.ctl({"signal", "bid-1", "TERM"});
    CHECK(out.exit_code == 0);
    // permanent: even a clean exit is restarted
    REQUIRE_WAIT(mesh, mesh.node_is("bid-1", "running") && mesh.pid_of("bid-1") != p, 20s);
    CHECK(mesh.node("bid-1")->last_exit == "exit 0");
    out = mesh.ctl({"signal", "bid-1", "BOGUS"});
    CHECK(out.exit_code == 1);
    CHECK(out.out.find("unknown signal") != std::string::npos);
    CHECK(mesh.ctl({"signal", "nope", "TERM"}).exit_code == 1);
    CHECK(mesh.ctl({"signal", "bid-1"}).exit_code == 100);
  }

  SECTION("tail") {
    auto out = mesh.ctl({"tail", "bid-1", "-n", "50"});
    CHECK(out.exit_code == 0);
    CHECK(out.out.find("launched pid") != std::string::npos);
    out = mesh.ctl({"tail", "nope"});
    CHECK(out.exit_code == 1);
    // through the supervisor, with --control only
    out = test::run_program({test::program_path("bidmesh-ctl"), "--control", mesh.control(), "tail", "bid-1"});
    CHECK(out.exit_code == 0);
    CHECK(out.out.find("launched pid") != std::string::npos);
    // -f keeps printing until killed
    out = mesh.ctl({"tail", "-f", "bid-1"}, 1500ms);
    CHECK(out.exit_code == -1);
    CHECK(out.out.find("launched pid") != std::string::npos);
  }

  SECTION("usage errors and --help") {
    CHECK(mesh.ctl({}).exit_code == 100);
    CHECK(mesh.ctl({"start"}).exit_code == 100);
    CHECK(mesh.ctl({"frobnicate"}).exit_code == 100);
    CHECK(mesh.ctl({"--help"}).exit_code == 0);
    for (const char* c : {"status", "start", "stop", "restart", "signal", "tail", "reload", "shutdown"}) {
      const auto out = mesh.ctl({c, "--help"});
      CHECK(out.exit_code == 0);
      CHECK(out.out.find("Usage") != std::string::npos);
    }
    const auto missing = test::run_program({test::program_path("bidmesh-ctl"), "--config", "/nonexistent.toml", "status"});
    CHECK(missing.exit_code == 100);
    const auto nobody = test::run_program(
        {test::program_path("bidmesh-ctl"), "--control", "ipc:///tmp/bidmesh-no-such-dir/s.sock", "status"});
    CHECK(nobody.exit_code == 111);
    CHECK(nobody.out.find("supervisor not running at ipc:///tmp/bidmesh-no-such-dir/s.sock") != std::string::npos);
  }

  SECTION("a second supervisor on the same data dir is refused") {
    const auto out = test::run_program(
        {test::program_path("bidmesh-supervisor"), "--config", mesh.config().string()}, 20s);
    CHECK(out.exit_code == 111);
    CHECK(out.out.find("another supervisor") != std::string::npos);
    CHECK(mesh.ctl({"status"}).exit_code == 0);
  }

  SECTION("shutdown") {
    std::vector<pid_t> pids;
    for (const auto& s : mesh.status()) pids.push_back(static_cast<pid_t>(s.pid));
    auto out = mesh.ctl({"shutdown", "--wait"});
    CHECK(out.exit_code == 0);
    const auto st = mesh.process().wait_exit(20s);
    REQUIRE(st);
    CHECK(WIFEXITED(*st));
    CHECK(WEXITSTATUS(*st) == 0);
    for (pid_t p : pids) CHECK(process_gone(p));
    out = mesh.ctl({"status"});
    CHECK(out.exit_code == 111);
    CHECK(mesh.ctl({"shutdown"}).exit_code == 111);
  }
}

// Not run by default: `integration_tests "[.supervisor-bench]"`. 20 x (kill -9 a bid node, time
// until a `get` on one of its items is served again); prints the median and the worst.
TEST_CASE("supervisor restart-to-serving after kill -9, 20 runs", "[.supervisor-bench]") {
  SupervisedMesh mesh("restart_intensity = 100");
  mesh.start_ready();
  const std::string item = item_in_slots(0, 8191);
  {
    Client c(mesh.ctx(), mesh.request_endpoint(), 2000, 3);
    auto r = c.call(make_request(Op::open, item));
    REQUIRE(r);
  }
  std::vector<double> ms, ready_ms;
  for (int i = 0; i < 20; ++i) {
    // Serving for over a second: the node counts as stable and comes back at once.
    REQUIRE_WAIT(mesh, mesh.node_is("bid-1", "running") && mesh.node("bid-1")->uptime_ms > 1100, 20s);
    const pid_t old = mesh.pid_of("bid-1");
    const auto t0 = std::chrono::steady_clock::now();
    ::kill(old, SIGKILL);
    // The supervisor's part: until the new process has said `ready`.
    REQUIRE(wait_until(
        [&] {
          auto s = mesh.node("bid-1");
          return s && s->state == "running" && s->pid != static_cast<uint64_t>(old);
        },
        20s, 0ms));
    ready_ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
    // The client's view: until a `get` through the router is answered by the new process.
    REQUIRE(wait_until(
        [&] {
          Client probe(mesh.ctx(), mesh.request_endpoint(), 50, 0);
          auto r = probe.call(make_request(Op::get, item));
          return r && r->ok;
        },
        20s, 0ms));
    ms.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  std::sort(ms.begin(), ms.end());
  std::sort(ready_ms.begin(), ready_ms.end());
  std::printf("supervisor: kill -9 -> new bid node ready, 20 runs: median %.1f ms, worst %.1f ms\n",
              (ready_ms[9] + ready_ms[10]) / 2, ready_ms.back());
  std::printf("supervisor: kill -9 -> serving through the router, 20 runs: median %.1f ms, worst %.1f ms\n",
              (ms[9] + ms[10]) / 2, ms.back());
}

TEST_CASE("control plane credentials: parse_peer_credentials and control_refusal", "[supervisor]") {
  // libzmq's "Peer-Address" on an ipc connection: "<address>:<uid>:<gid>:<pid>".
  auto p = parse_peer_credentials("localhost:65534:65533:4242");
  REQUIRE(p);
  CHECK(p->uid == 65534);
  CHECK(p->gid == 65533);
  CHECK(p->pid == 4242);
  CHECK(parse_peer_credentials("a:b:c::1:0:0:7"));  // colons in the address part
  for (const char* bad : {"", "localhost", "localhost:1:2", "localhost:1:2:", "localhost:x:2:3", "1:2:3",
                          "localhost:4294967296:0:1", "localhost:-1:0:1"}) {
    INFO(bad);
    CHECK_FALSE(parse_peer_credentials(bad));
  }
  CHECK_FALSE(control_refusal(PeerCredentials{1000, 1000, 1}, 1000));
  CHECK_FALSE(control_refusal(PeerCredentials{0, 0, 1}, 1000));
  CHECK(control_refusal(PeerCredentials{65534, 65534, 1}, 1000) ==
        "refused: uid 65534 may not control this supervisor (only uid 1000 and root; SO_PEERCRED)");
  CHECK(control_refusal(PeerCredentials{65534, 65534, 1}, 0) ==
        "refused: uid 65534 may not control this supervisor (only root; SO_PEERCRED)");
  CHECK(control_refusal(std::nullopt, 0)->rfind("refused: the sender's uid is unknown (no SO_PEERCRED", 0) == 0);
}

TEST_CASE("supervisor takes commands only from its own uid and root (SO_PEERCRED)", "[supervisor]") {
  if (::geteuid() != 0) {
    WARN("skipped: needs root, to run bidmesh-ctl as uid 65534");
    return;
  }
  SupervisedMesh mesh;
  mesh.start_ready();
  // Let uid 65534 reach the socket: the folders on the way become searchable and the socket
  // writable by others, so that only the supervisor's own check stands in the way.
  const fs::path sock = mesh.data_dir() / "control" / "supervisor.sock";
  for (const fs::path& d : {mesh.dir(), mesh.data_dir(), sock.parent_path()}) {
    fs::permissions(d, fs::perms::others_exec, fs::perm_options::add);
  }
  fs::permissions(sock, fs::perms::others_read | fs::perms::others_write, fs::perm_options::add);
  auto as_nobody = [&](const std::string& command) {
    return test::run_program({"/usr/bin/setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                              test::program_path("bidmesh-ctl"), "--control", mesh.control(), command});
  };
  const std::string refused =
      "bidmesh-ctl: refused: uid 65534 may not control this supervisor (only root; SO_PEERCRED)\n";
  auto out = as_nobody("status");
  CHECK(out.exit_code == 1);
  CHECK(out.out == refused);
  out = as_nobody("shutdown");
  CHECK(out.exit_code == 1);
  CHECK(out.out == refused);
  // Root's commands work, and nothing was done for the refused ones.
  out = mesh.ctl({"status"});
  CHECK(out.exit_code == 0);
  CHECK(out.out.find("running") != std::string::npos);
  CHECK(mesh.process().running());
  CHECK(mesh.ready_lines() == 1);
  CHECK(count_in(mesh.out_file(), "refused: uid 65534 may not control this supervisor") == 1);  // once per uid
}

// [no-sanitizer]: a sanitizer build runs its routers without RLIMIT_DATA (supervisor.cc).
TEST_CASE("supervisor runs each router under RLIMIT_DATA = router_memory_mb, bid nodes without it",
          "[supervisor][no-sanitizer]") {
  SupervisedMesh mesh("router_memory_mb = 256");
  mesh.start_ready();
  CHECK(max_data_size(mesh.pid_of("router")) == std::to_string(256ull << 20) + " " + std::to_string(256ull << 20));
  // A bid node keeps the supervisor's limit, which it has from this test.
  CHECK(max_data_size(mesh.pid_of("bid-1")) == max_data_size(::getpid()));
  CHECK(count_in(mesh.log_file("router"), "(RLIMIT_DATA 256 MiB)") == 1);

  // A new limit restarts the routers under it.
  const pid_t bid = mesh.pid_of("bid-1");
  reload_restarting_router(mesh, "router_memory_mb = 320");
  CHECK(max_data_size(mesh.pid_of("router")) == std::to_string(320ull << 20) + " " + std::to_string(320ull << 20));
  CHECK(mesh.pid_of("bid-1") == bid);
}

TEST_CASE("supervisor reload sends SIGHUP to the nodes it keeps, not to one it restarts", "[supervisor]") {
  SupervisedMesh mesh;
  mesh.start_ready();
  const pid_t bid1 = mesh.pid_of("bid-1"), bid2 = mesh.pid_of("bid-2");
  // request_timeout_ms is the router's alone: the router restarts, the bid nodes stay.
  reload_restarting_router(mesh, "request_timeout_ms = 1500");
  const std::string sent = "SIGHUP sent: the config was reloaded";
  CHECK(count_in(mesh.log_file("bid-1"), sent) == 1);
  CHECK(count_in(mesh.log_file("bid-2"), sent) == 1);
  CHECK(count_in(mesh.log_file("router"), sent) == 0);
  // The bid nodes took it as a reload, not as the end (SIGHUP's default action): the same
  // processes run, and no exit was recorded.
  CHECK(mesh.pid_of("bid-1") == bid1);
  CHECK(mesh.pid_of("bid-2") == bid2);
  CHECK_FALSE(process_gone(bid1));
  CHECK(mesh.node("bid-1")->last_exit.empty());

  // Nothing changed: every node is told.
  const auto again = mesh.ctl({"reload"});
  CHECK(again.out.find("changed none; SIGHUP to router,bid-1,bid-2") != std::string::npos);
  CHECK(count_in(mesh.log_file("router"), sent) == 1);
  CHECK(count_in(mesh.log_file("bid-1"), sent) == 2);
}

TEST_CASE("protected mode: a mesh binding beyond loopback without CURVE does not start, exit 100", "[supervisor]") {
  SupervisedMesh mesh;
  const std::string open_endpoint = "tcp://0.0.0.0:" + std::to_string(test::free_tcp_port());
  mesh.nodes()[0].listen = open_endpoint;
  mesh.write_config();
  const std::string line = mesh.config().string() + ": node 'router'.listen: security = \"none\" may bind only loopback or ipc, and " +
                           open_endpoint +
                           " is not; set security = \"curve\" with server_certificate and clients_dir (docs/security.md), "
                           "or listen on 127.0.0.1";
  const auto out = mesh.run_supervisor();
  CHECK(out.exit_code == 100);
  CHECK(out.out == "bidmesh-supervisor: " + line + "\n");
  // The nodes refuse the file on their own too.
  for (const char* program : {"bidmesh-router", "bidmesh-bid-node"}) {
    const char* name = std::string(program) == "bidmesh-router" ? "router" : "bid-1";
    const auto node = test::run_program({test::program_path(program), "--config", mesh.config().string(), "--name", name});
    INFO(program << ": " << node.out);
    CHECK(node.exit_code == 100);
    CHECK(node.out.find(line) != std::string::npos);
  }
}

TEST_CASE("supervisor with security = curve checks its keys at start and on reload", "[supervisor]") {
  SupervisedMesh mesh("security = \"curve\"\nserver_certificate = \"keys/mesh.key_secret\"\nclients_dir = \"clients\"");
  const fs::path keys = mesh.dir() / "keys", clients = mesh.dir() / "clients";
  const std::string prefix = "bidmesh-supervisor: " + mesh.config().string() + ": ";

  auto out = mesh.run_supervisor();  // no certificate yet
  CHECK(out.exit_code == 100);
  CHECK(out.out.rfind(prefix + "server_certificate: " + (keys / "mesh.key_secret").string() + ": ", 0) == 0);

  fs::create_directories(keys);
  REQUIRE_FALSE(write_certificate_pair(keys, "mesh", {}));
  out = mesh.run_supervisor();  // no clients_dir
  CHECK(out.exit_code == 100);
  CHECK(out.out == prefix + "clients_dir: " + clients.string() + ": No such file or directory\n");

  fs::create_directories(clients);
  REQUIRE(::chmod((keys / "mesh.key_secret").c_str(), 0640) == 0);
  out = mesh.run_supervisor();  // the group may read the secret key
  CHECK(out.exit_code == 100);
  CHECK(out.out.rfind(prefix + "server_certificate: ", 0) == 0);
  CHECK(out.out.find("chmod 600") != std::string::npos);
  CHECK(std::count(out.out.begin(), out.out.end(), '\n') == 1);

  REQUIRE(::chmod((keys / "mesh.key_secret").c_str(), 0600) == 0);
  mesh.start_ready();
  std::map<std::string, pid_t> before;
  for (const auto& s : mesh.status()) before[s.name] = static_cast<pid_t>(s.pid);
  REQUIRE(before.size() == 3);
  // A reload that would hand the routers an unreadable key changes nothing.
  REQUIRE(::chmod((keys / "mesh.key_secret").c_str(), 0644) == 0);
  auto reload = mesh.ctl({"reload"});
  CHECK(reload.exit_code == 1);
  CHECK(reload.out.rfind("bidmesh-ctl: reload refused, config unchanged: " + mesh.config().string() +
                             ": server_certificate: ",
                         0) == 0);
  for (const auto& s : mesh.status()) CHECK(before[s.name] == static_cast<pid_t>(s.pid));
  // With the key mended and a client added, the reload reaches the router by SIGHUP: it reads
  // the folder again and says so in its log.
  REQUIRE(::chmod((keys / "mesh.key_secret").c_str(), 0600) == 0);
  REQUIRE_FALSE(write_certificate_pair(keys, "alice", {{"roles", "bidder"}}));
  fs::copy_file(keys / "alice.key", clients / "alice.key");
  reload = mesh.ctl({"reload"});
  CHECK(reload.exit_code == 0);
  CHECK(reload.out.find("SIGHUP to router,bid-1,bid-2") != std::string::npos);
  REQUIRE_WAIT(mesh, count_in(mesh.log_file("router"), "reloaded 1 clients from " + clients.string()) == 1, 20s);
  for (const auto& s : mesh.status()) CHECK(before[s.name] == static_cast<pid_t>(s.pid));
}
