// The reliability scenarios: see scenarios.h.
#include "tests/reliability/scenarios.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <mutex>
#include <sstream>
#include <thread>

#include "protocol/messages.h"
#include "storage/log_format.h"
#include "tests/reliability/harness.h"
#include "client/client.h"
#include "client/feed_watcher.h"

namespace bidmesh::rel {

namespace fs = std::filesystem;

namespace {

std::string fmt(const char* f, double v) {
  char buf[64];
  std::snprintf(buf, sizeof buf, f, v);
  return buf;
}

// Opens every item (an `exists` is fine). Returns an error in words, or "".
std::string open_items(zmq::context_t& ctx, const std::string& endpoint, const std::vector<std::string>& items) {
  Client c(ctx, endpoint, 1000, 10, "opener");
  for (const auto& item : items) {
    Request r;
    r.op = Op::open;
    r.item = item;
    auto reply = c.call(r);
    if (!reply || (!reply->ok && reply->error != std::optional<std::string>("exists")))
      return "cannot open " + item + ": " + (reply ? reply->error.value_or("?") : "no reply");
  }
  return "";
}

std::string join(const std::vector<std::string>& v) {
  std::string out;
  for (const auto& s : v) out += (out.empty() ? "" : ",") + s;
  return out;
}

struct Bidders {
  std::vector<std::unique_ptr<Child>> procs;
  std::vector<fs::path> logs;

  void start(const SupervisedMesh& mesh, int clients, const std::vector<std::string>& items, double seconds,
             int timeout_ms, int deadline_ms, bool direct = false) {
    for (int i = 0; i < clients; ++i) {
      const std::string name = "c" + std::to_string(i + 1);
      logs.push_back(mesh.dir() / (name + ".history"));
      std::vector<std::string> argv{program("bidmesh-reliability"), "bidder", "--endpoint", mesh.request_endpoint(),
                                    "--name", name, "--items", join(items), "--seconds", std::to_string(seconds),
                                    "--timeout-ms", std::to_string(timeout_ms), "--deadline-ms",
                                    std::to_string(deadline_ms), "--log", logs.back().string()};
      if (direct) argv.push_back("--direct");
      procs.push_back(std::make_unique<Child>(std::move(argv), mesh.dir() / (name + ".out")));
    }
  }
  // Waits for every client to exit on its own. Returns an error in words, or "".
  std::string wait(Ms deadline) {
    const auto end = Clock::now() + deadline;
    std::string error;
    for (auto& p : procs) {
      const auto left = std::chrono::duration_cast<Ms>(end - Clock::now());
      auto st = p->wait_exit(std::max(left, Ms(1)));
      if (!st) {
        p->kill_now();
        error = "a client process did not finish in time";
      } else if (!WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
        error = "a client process failed (status " + std::to_string(*st) + ")";
      }
    }
    return error;
  }
};

}  // namespace

std::string CrashResult::summary() const {
  std::string out = "crash: " + fmt("%.1f", seconds) + " s, " + std::to_string(kills) +
                    " kills (SIGKILL)" +
                    (kills_in_checkpoint > 0 ? " (" + std::to_string(kills_in_checkpoint) + " inside a checkpoint)" : "") +
                    ", slowest restart to running " + fmt("%.1f", restart_ms_max) +
                    " ms; clients: timeout " + std::to_string(client_timeout_ms) + " ms, deadline " +
                    std::to_string(client_deadline_ms) + " ms\n  " + check.summary();
  if (direct_answers + router_answers > 0)
    out += "\n  direct clients: " + std::to_string(direct_answers) + " calls answered by a bid node, " +
           std::to_string(router_answers) + " through the router, " + std::to_string(fallbacks) + " fallbacks";
  if (!error.empty()) out += "\n  ERROR: " + error;
  return out;
}

std::string CrashResult::json() const {
  return "{\"test\":\"crash\",\"seconds\":" + fmt("%.1f", seconds) + ",\"kills\":" + std::to_string(kills) +
         ",\"kills_in_checkpoint\":" + std::to_string(kills_in_checkpoint) +
         ",\"restart_ms_max\":" + fmt("%.1f", restart_ms_max) + ",\"client_timeout_ms\":" +
         std::to_string(client_timeout_ms) + ",\"client_deadline_ms\":" + std::to_string(client_deadline_ms) +
         ",\"check\":" + check.json() +
         ",\"passed\":" + (passed() ? "true" : "false") + "}";
}

// Restarts of a node whose replay found a tail of at least checkpoint_kb: the kill landed while
// a checkpoint was due, i.e. inside it (from the "log replayed N batches (W writes, B bytes)"
// lines of its log; each record also has a header of kLogHeaderBytes).
uint64_t full_tail_replays(const std::filesystem::path& log, int checkpoint_kb) {
  uint64_t n = 0;
  std::istringstream in(test::read_file(log));
  for (std::string line; std::getline(in, line);) {
    unsigned long long batches = 0, writes = 0, bytes = 0;
    const auto at = line.find("log replayed ");
    if (at == std::string::npos) continue;
    if (std::sscanf(line.c_str() + at, "log replayed %llu batches (%llu writes, %llu bytes)", &batches, &writes, &bytes) != 3)
      continue;
    if (bytes + kLogHeaderBytes * batches >= static_cast<unsigned long long>(checkpoint_kb) * 1024) ++n;
  }
  return n;
}

constexpr std::string_view kHeldLine = "failpoint: checkpoint held";  // nodes/failpoint.cc

std::size_t count_lines(const std::filesystem::path& log, std::string_view needle) {
  std::size_t n = 0;
  const std::string text = test::read_file(log);
  for (auto at = text.find(needle); at != std::string::npos; at = text.find(needle, at + needle.size())) ++n;
  return n;
}

CrashResult run_crash(const CrashOptions& o) {
  CrashResult r;
  MeshSpec spec;
  if (o.checkpoint_kb > 0) spec.extra = "checkpoint_kb = " + std::to_string(o.checkpoint_kb) + "\ncheckpoint_interval_ms = 600000";
  if (o.checkpoint_hold_ms > 0) spec.env["BIDMESH_FAILPOINT_CHECKPOINT_DELAY_MS"] = std::to_string(o.checkpoint_hold_ms);
  spec.client_endpoints = o.direct;
  SupervisedMesh mesh(spec);
  if (o.keep) mesh.temp().keep();
  if (auto e = mesh.start()) {
    r.error = *e;
    return r;
  }
  std::vector<std::string> items;
  for (int k = 0; k < o.items_killed; ++k) items.push_back(mesh.item_on_node(0, k));
  for (int k = 0; k < o.items_other; ++k) items.push_back(mesh.item_on_node(1, k));
  if (auto e = open_items(mesh.ctx(), mesh.request_endpoint(), items); !e.empty()) {
    r.error = e;
    return r;
  }
  r.client_timeout_ms = o.client_timeout_ms;
  r.client_deadline_ms = o.client_deadline_ms;
  Bidders bidders;
  const auto began = Clock::now();
  bidders.start(mesh, o.clients, items, o.seconds, o.client_timeout_ms, o.client_deadline_ms, o.direct);
  // The killer: SIGKILL to the running bid-1 every kill_every_ms, for `seconds`.
  const auto end = began + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  auto next = began + Ms(o.kill_every_ms);
  std::size_t held = 0;  // "checkpoint held" lines in bid-1's log so far
  while (next < end) {
    std::this_thread::sleep_until(next);  // the schedule of the fault, not a wait for a condition
    next += Ms(o.kill_every_ms);
    if (o.checkpoint_hold_ms > 0) {
      // Kill inside a checkpoint: wait (at most one period) for the node to announce a new hold.
      const std::size_t before = held;
      (void)wait_for([&] { return (held = count_lines(mesh.node_log("bid-1"), kHeldLine)) > before; },
                     Ms(o.kill_every_ms), Ms(5));
    }
    const pid_t pid = mesh.running_pid("bid-1");
    if (pid <= 0) continue;  // still restarting: skip this tick
    ::kill(pid, SIGKILL);
    const auto killed = Clock::now();
    ++r.kills;
    if (!wait_for([&] { const pid_t p = mesh.running_pid("bid-1"); return p > 0 && p != pid; }, Ms(10000), Ms(2))) {
      r.error = "bid-1 was not restarted within 10 s of kill " + std::to_string(r.kills) + "\n" + mesh.diagnostics();
      break;
    }
    r.restart_ms_max = std::max(r.restart_ms_max, ms_since(killed));
  }
  // The longest a client's last request can last (scenarios.h), plus time to start and exit.
  const int last_request_ms = o.client_deadline_ms + 3 * o.client_timeout_ms + 30;
  const std::string werr = bidders.wait(Ms(static_cast<int>(o.seconds * 1000) + last_request_ms + 20000));
  r.seconds = ms_since(began) / 1000;
  if (r.error.empty() && !werr.empty()) r.error = werr;
  for (int i = 0; o.direct && i < o.clients; ++i) {
    const std::string out = test::read_file(mesh.dir() / ("c" + std::to_string(i + 1) + ".out"));
    unsigned long long d = 0, rt = 0, f = 0, m = 0;
    const auto at = out.rfind("direct paths: ");
    if (at != std::string::npos &&
        std::sscanf(out.c_str() + at, "direct paths: %llu direct %llu router %llu fallbacks %llu moved", &d, &rt, &f, &m) == 4) {
      r.direct_answers += d;
      r.router_answers += rt;
      r.fallbacks += f;
    }
  }
  if (!mesh.wait_serving(items.front(), Ms(20000)) && r.error.empty()) r.error = "bid-1 does not serve after the run";
  r.check = check_history(mesh.ctx(), mesh.request_endpoint(), items, bidders.logs);
  if (o.checkpoint_kb > 0) r.kills_in_checkpoint = full_tail_replays(mesh.node_log("bid-1"), o.checkpoint_kb);
  if (!r.passed() && r.error.empty() && o.keep) r.error = "kept " + mesh.dir().string();
  return r;
}

std::string StopResult::summary() const {
  std::string out = "graceful stop: SIGTERM -> supervisor exited in " + fmt("%.0f", stop_ms) + " ms with code " +
                    std::to_string(exit_code) + (nodes_drained ? ", every node exited 0 (drained)" : ", NOT drained") +
                    "\n  after restart on the same data: " + check.summary();
  if (!error.empty()) out += "\n  ERROR: " + error;
  return out;
}

std::string StopResult::json() const {
  return "{\"test\":\"graceful_stop\",\"stop_ms\":" + fmt("%.1f", stop_ms) + ",\"exit_code\":" + std::to_string(exit_code) +
         ",\"nodes_drained\":" + (nodes_drained ? "true" : "false") + ",\"check\":" + check.json() + "}";
}

StopResult run_graceful_stop(const StopOptions& o) {
  StopResult r;
  MeshSpec spec;
  spec.stop_timeout_ms = o.stop_timeout_ms;
  SupervisedMesh mesh(spec);
  if (o.keep) mesh.temp().keep();
  if (auto e = mesh.start()) {
    r.error = *e;
    return r;
  }
  std::vector<std::string> items;
  for (int k = 0; k < o.items; ++k) items.push_back(mesh.item_on_node(k % 2, k / 2));
  if (auto e = open_items(mesh.ctx(), mesh.request_endpoint(), items); !e.empty()) {
    r.error = e;
    return r;
  }
  constexpr int kTimeoutMs = 300, kDeadlineMs = 2000;
  Bidders bidders;
  const auto began = Clock::now();
  // The clients go on for a second past the SIGTERM: they bid into the stopping mesh.
  bidders.start(mesh, o.clients, items, o.bid_seconds + 1.0, kTimeoutMs, kDeadlineMs);
  // Under load: wait until the clients have had acknowledged bids, at least bid_seconds.
  std::this_thread::sleep_until(began + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.bid_seconds)));
  const auto t0 = Clock::now();
  auto st = mesh.stop(Ms(o.stop_timeout_ms * 4));
  r.stop_ms = ms_since(t0);
  if (!st) {
    r.error = "the supervisor did not exit within " + std::to_string(o.stop_timeout_ms * 4) + " ms\n" + mesh.diagnostics();
    mesh.kill_supervisor();
  } else if (WIFEXITED(*st)) {
    r.exit_code = WEXITSTATUS(*st);
  }
  r.nodes_drained = true;
  for (const std::string node : {"router", "bid-1", "bid-2"}) {
    const std::string log = test::read_file(mesh.node_log(node));
    const auto last = log.rfind("] pid ");
    const bool clean = last != std::string::npos && log.find("ended: exit 0", last) != std::string::npos;
    if (!clean) {
      r.nodes_drained = false;
      if (r.error.empty()) r.error = node + " did not exit 0 on the stop\n" + mesh.diagnostics();
    }
  }
  if (auto e = bidders.wait(Ms(static_cast<int>(o.bid_seconds * 1000) + kDeadlineMs + 20000)); !e.empty() && r.error.empty())
    r.error = e;
  // Restart on the same data dir and check every acknowledged bid.
  if (auto e = mesh.start()) {
    if (r.error.empty()) r.error = "restart: " + *e;
    return r;
  }
  r.check = check_history(mesh.ctx(), mesh.request_endpoint(), items, bidders.logs);
  return r;
}

std::string FeedResult::summary() const {
  std::string out = "feed: burst of " + std::to_string(burst_events) + " bid events in " + fmt("%.1f", burst_seconds) +
                    " s; slow subscriber: " + std::to_string(delivered) + " events delivered (" + std::to_string(live) +
                    " live, " + std::to_string(events_repaired) + " from history), gaps detected " +
                    std::to_string(gaps_detected) + ", repaired " + std::to_string(gaps_repaired) + ", events lost " +
                    std::to_string(events_lost) + ", duplicates dropped " + std::to_string(duplicates) + "; items equal to get " +
                    std::to_string(items_checked - items_mismatched) + "/" + std::to_string(items_checked) + " (after " +
                    std::to_string(final_bids) + " final bids to show tail losses)" +
                    "\n  bench throughput: " + fmt("%.0f", baseline_rps) + " req/s alone, " + fmt("%.0f", lagging_rps) +
                    " req/s with the lagging and the stalled subscriber (ratio " + fmt("%.2f", throughput_ratio()) + ")";
  if (!error.empty()) out += "\n  ERROR: " + error;
  return out;
}

std::string FeedResult::json() const {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"test\":\"feed\",\"burst_events\":%llu,\"burst_seconds\":%.1f,\"delivered\":%llu,\"live\":%llu,"
                "\"gaps_detected\":%llu,\"gaps_repaired\":%llu,\"events_repaired\":%llu,\"events_lost\":%llu,"
                "\"duplicates\":%llu,\"final_bids\":%llu,\"items_checked\":%llu,\"items_mismatched\":%llu,\"baseline_rps\":%.1f,"
                "\"lagging_rps\":%.1f,\"ratio\":%.3f}",
                (unsigned long long)burst_events, burst_seconds, (unsigned long long)delivered, (unsigned long long)live,
                (unsigned long long)gaps_detected, (unsigned long long)gaps_repaired,
                (unsigned long long)events_repaired, (unsigned long long)events_lost, (unsigned long long)duplicates,
                (unsigned long long)final_bids, (unsigned long long)items_checked, (unsigned long long)items_mismatched, baseline_rps, lagging_rps,
                throughput_ratio());
  return buf;
}

namespace {

struct BenchRun {
  std::string error;
  double throughput = 0;
  double replies = 0;
  double seconds = 0;
};

// Runs bidmesh-bench (closed loop, ctr amounts: every bid accepted) and reads its JSON figures.
BenchRun run_bench(const SupervisedMesh& mesh, const FeedOptions& o, const std::string& prefix, double seconds) {
  BenchRun b;
  const fs::path out = mesh.dir() / ("bench-" + prefix.substr(0, 2) + ".out");
  Child bench({program("bidmesh-bench"), "--endpoint", mesh.request_endpoint(), "--items", std::to_string(o.items),
               "--item-prefix", prefix, "--clients", std::to_string(o.clients), "--pipeline", std::to_string(o.pipeline),
               "--seconds", std::to_string(seconds), "--warmup", "0.5", "--timeout", "5000", "--json"},
              out);
  auto st = bench.wait_exit(Ms(static_cast<int>(seconds * 1000) + 60000));
  const std::string text = test::read_file(out);
  if (!st || !WIFEXITED(*st) || WEXITSTATUS(*st) != 0) {
    b.error = "bidmesh-bench failed: " + text;
    return b;
  }
  const auto p = text.find("\"throughput\":");
  if (p == std::string::npos) {
    b.error = "no throughput in the bench output: " + text;
    return b;
  }
  b.throughput = std::atof(text.c_str() + p + 13);
  if (const auto q = text.find("\"replies\":"); q != std::string::npos) b.replies = std::atof(text.c_str() + q + 10);
  if (const auto q = text.find("\"seconds\":"); q != std::string::npos) b.seconds = std::atof(text.c_str() + q + 10);
  return b;
}

}  // namespace

FeedResult run_feed_stress(const FeedOptions& o) {
  FeedResult r;
  SupervisedMesh mesh;
  if (o.keep) mesh.temp().keep();
  if (auto e = mesh.start()) {
    r.error = *e;
    return r;
  }
  // 1. Baseline: the bench alone, on its own items.
  // Long item names (about 180 bytes per event on the wire): loopback TCP buffers hold several MB,
  // so bigger events make the slow subscriber run out of buffer (and see gaps) sooner.
  const std::string pad(48, 'x');
  const std::string prefix_a = "fa" + pad, prefix_b = "fb" + pad;
  const BenchRun base = run_bench(mesh, o, prefix_a, o.min_seconds);
  if (!base.error.empty() || base.throughput <= 0) {
    r.error = "baseline: " + base.error;
    return r;
  }
  r.baseline_rps = base.throughput;
  r.burst_seconds = std::min(600.0, std::max(o.min_seconds, 1.15 * static_cast<double>(o.target_events) / base.throughput));

  // 2. The slow subscriber: a FeedWatcher with repair, on its own thread.
  std::vector<std::string> items;
  for (int i = 0; i < o.items; ++i) items.push_back(prefix_b + "-" + std::to_string(i));
  struct Seen {
    uint64_t seq = 0;
    uint64_t max = 0;
  };
  std::mutex mu;
  std::map<std::string, Seen> seen;
  FeedStats stats;
  uint64_t live = 0, any = 0;
  std::atomic<bool> bursting{false}, stop{false};
  std::thread reader([&] {
    zmq::context_t ctx(1);
    FeedWatcherOptions wo;
    wo.topic_prefix = "item/" + prefix_b + "-";
    wo.request_endpoint = mesh.request_endpoint();
    wo.rcvhwm = o.rcvhwm;
    wo.request_timeout_ms = 2000;
    wo.request_retries = 5;
    FeedWatcher w(ctx, mesh.feed_endpoint(), wo);
    while (!stop) {
      auto ev = w.next(Ms(50));
      {
        std::lock_guard<std::mutex> lock(mu);
        stats = w.stats();
        if (!ev) continue;
        ++any;
        if (!w.last_repaired()) ++live;
        Seen& s = seen[ev->item];
        s.seq = ev->seq;
        if (ev->kind == EventKind::max && ev->amount) s.max = std::max(s.max, *ev->amount);
      }
      // Slow on purpose while the burst runs: the feed must drop, the watcher must repair.
      if (bursting) std::this_thread::sleep_for(std::chrono::microseconds(o.reader_delay_us));
    }
  });
  auto finish = [&] {
    stop = true;
    reader.join();
  };
  // The subscription is live once a probe's open event arrives; then every item's open (seq 1)
  // is seen, so that any later loss shows as a gap.
  zmq::context_t& ctx = mesh.ctx();
  int probe = 0;
  const bool live_sub = wait_for(
      [&] {
        if (open_items(ctx, mesh.request_endpoint(), {prefix_b + "-probe-" + std::to_string(probe++)}) != "") return false;
        return wait_for([&] { std::lock_guard<std::mutex> l(mu); return any > 0; }, Ms(200));
      },
      Ms(20000), Ms(1));
  std::string err = live_sub ? open_items(ctx, mesh.request_endpoint(), items) : "the feed subscription never went live";
  if (err.empty() && !wait_for(
                         [&] {
                           std::lock_guard<std::mutex> l(mu);
                           return std::all_of(items.begin(), items.end(), [&](auto& i) { return seen[i].seq == 1; });
                         },
                         Ms(20000))) {
    err = "the open events of the items did not all arrive";
  }
  if (!err.empty()) {
    finish();
    r.error = err;
    return r;
  }
  // 3. The burst, with the slow subscriber lagging and a SUB that never reads.
  {
    zmq::socket_t stalled(ctx, zmq::socket_type::sub);
    stalled.set(zmq::sockopt::linger, 0);
    stalled.set(zmq::sockopt::rcvhwm, 1000);
    stalled.set(zmq::sockopt::subscribe, "item/");
    stalled.connect(mesh.feed_endpoint());
    // The burst goes on (in at most 6 bench runs) until target_events bids were answered: the
    // bench may run slower now than in the baseline.
    bursting = true;
    double replies = 0, seconds = 0, rate = base.throughput, stored = 0;
    // The bid events stored so far on the burst's items (the sum of their `bids`).
    auto count_stored = [&] {
      Client c(ctx, mesh.request_endpoint(), 2000, 5, "counter");
      double n = 0;
      for (const auto& item : items) {
        Request g;
        g.op = Op::get;
        g.item = item;
        auto got = c.call(g);
        if (got && got->ok) n += static_cast<double>(got->u64("bids").value_or(0));
      }
      return n;
    };
    for (int run = 0; run < 6 && stored < static_cast<double>(o.target_events); ++run) {
      const double want = run == 0 ? r.burst_seconds
                                   : std::max(1.0, 1.1 * (static_cast<double>(o.target_events) - stored) / rate);
      const BenchRun burst = run_bench(mesh, o, prefix_b, std::min(600.0, want));
      if (!burst.error.empty()) {
        bursting = false;
        finish();
        r.error = "burst: " + burst.error;
        return r;
      }
      replies += burst.replies;
      seconds += burst.seconds;
      if (burst.throughput > 0) rate = burst.throughput;
      stored = count_stored();
    }
    bursting = false;
    r.burst_seconds = seconds;
    r.lagging_rps = seconds > 0 ? replies / seconds : 0;
  }
  // 4. Once the subscriber has read its backlog (nothing new for 500 ms), one more bid per item
  //    whose last events it has not seen: a loss at an item's tail only shows at its next event
  //    (the contract; a subscriber that must know sooner polls `get`). Then every item's max and
  //    seq must equal `get`.
  std::map<std::string, Reply> final_state;
  {
    uint64_t last_count = 0;
    auto quiet_since = Clock::now();
    wait_for(
        [&] {
          std::lock_guard<std::mutex> l(mu);
          if (any != last_count) {
            last_count = any;
            quiet_since = Clock::now();
          }
          return ms_since(quiet_since) >= 500;
        },
        Ms(180000), Ms(20));
  }
  Client c(ctx, mesh.request_endpoint(), 2000, 5, "final");
  auto read_state = [&] {
    for (const auto& item : items) {
      Request g;
      g.op = Op::get;
      g.item = item;
      auto got = c.call(g);
      if (!got || !got->ok) return "cannot read " + item;
      final_state[item] = *got;
    }
    return std::string();
  };
  auto behind = [&] {
    std::vector<std::string> out;
    std::lock_guard<std::mutex> l(mu);
    for (const auto& item : items) {
      if (seen[item].seq != final_state[item].u64("seq").value_or(0)) out.push_back(item);
    }
    return out;
  };
  err = read_state();
  for (int round = 0; err.empty() && round < 5; ++round) {
    const auto late = behind();
    if (late.empty()) break;
    for (const auto& item : late) {
      Request b;
      b.op = Op::bid;
      b.item = item;
      b.bidder = "final";
      b.amount = final_state[item].u64("max").value_or(0) + 1;
      auto rep = c.call(b);
      if (!rep || !rep->ok) {
        err = "the final bid on " + item + " failed";
        break;
      }
      ++r.final_bids;
    }
    if (err.empty()) err = read_state();
    if (err.empty()) wait_for([&] { return behind().empty(); }, Ms(10000), Ms(20));
  }
  if (err.empty() && !behind().empty()) err = "the slow subscriber did not reach every item's final seq";
  for (const auto& item : items) r.burst_events += final_state[item].u64("bids").value_or(0);
  finish();
  r.error = err;
  r.delivered = stats.delivered;
  r.live = live;
  r.gaps_detected = stats.gaps_detected;
  r.gaps_repaired = stats.gaps_repaired;
  r.events_repaired = stats.events_repaired;
  r.events_lost = stats.events_lost;
  r.duplicates = stats.duplicates;
  for (const auto& item : items) {
    ++r.items_checked;
    const Reply& g = final_state[item];
    if (seen[item].seq != g.u64("seq").value_or(0) || seen[item].max != g.u64("max").value_or(0)) ++r.items_mismatched;
  }
  return r;
}

}  // namespace bidmesh::rel
