// bidmesh-bench: load and latency benchmark of a running mesh (see bench_driver.h for the load
// shapes and how latency is measured).
//
//   bidmesh-bench [options]        bids: throughput, accepted fraction, latency percentiles
//   bidmesh-bench feed [options]   the same at a target rate, plus S feed subscribers: bid-send to
//                                  event-receive latency and seq gaps per subscriber
//
// Exit codes: 0 the run completed (timeouts and refusals are figures, not failures), 100 usage,
// 111 the run could not be made (the open phase failed, or no reply at all in the window).
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <string>

#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include "protocol/messages.h"
#include "bench/driver.h"
#include "bench/restart.h"

namespace {

using namespace bidmesh;

constexpr int kExitOk = 0;
constexpr int kExitUsage = 100;
constexpr int kExitSystem = 111;

double ms(uint64_t ns) { return static_cast<double>(ns) / 1e6; }

std::string json_percentiles(const LatencyHistogram& h, double scale) {
  char buf[512];
  auto v = [&](double q) { return static_cast<double>(h.percentile(q)) / scale; };
  std::snprintf(buf, sizeof buf,
                "{\"count\":%llu,\"p50\":%.4f,\"p90\":%.4f,\"p99\":%.4f,\"p99_9\":%.4f,\"max\":%.4f,\"mean\":%.4f}",
                static_cast<unsigned long long>(h.count()), v(0.5), v(0.9), v(0.99), v(0.999),
                static_cast<double>(h.max()) / scale, h.mean() / scale);
  return buf;
}

std::string human_percentiles(const LatencyHistogram& h) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "p50 %.3f  p90 %.3f  p99 %.3f  p99.9 %.3f  max %.3f  (mean %.3f, n %llu)",
                ms(h.percentile(0.5)), ms(h.percentile(0.9)), ms(h.percentile(0.99)), ms(h.percentile(0.999)),
                ms(h.max()), h.mean() / 1e6, static_cast<unsigned long long>(h.count()));
  return buf;
}

std::string shape(const BenchConfig& c) {
  char buf[256];
  std::snprintf(buf, sizeof buf, "%s, %d clients x %d in flight (%s), %d thread%s", c.rate > 0 ? "open loop" : "closed loop",
                c.clients, c.pipeline, c.pipeline > 1 ? "DEALER" : "REQ", c.threads, c.threads > 1 ? "s" : "");
  std::string s = buf;
  if (c.direct) s += ", direct to the bid nodes";
  if (c.rate > 0) {
    std::snprintf(buf, sizeof buf, ", target %.0f req/s", c.rate);
    s += buf;
  }
  return s;
}

void print_json(const BenchConfig& c, const BenchResult& r, bool feed) {
  const double win = r.window_seconds > 0 ? r.window_seconds : 1;
  std::string out = "{";
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "\"mode\":\"%s\",\"loop\":\"%s\",\"path\":\"%s\",\"endpoint\":\"%s\",\"clients\":%d,\"pipeline\":%d,\"threads\":%d,"
                "\"rate\":%.1f,\"amounts\":\"%s\",\"items\":%llu,\"item_prefix\":\"%s\",\"items_existing\":%llu,"
                "\"open_seconds\":%.3f,\"seconds\":%.3f,\"warmup\":%.3f,",
                feed ? "feed" : "bids", c.rate > 0 ? "open" : "closed", c.direct ? "direct" : "router", c.endpoint.c_str(), c.clients, c.pipeline, c.threads,
                c.rate, c.ctr ? "ctr" : "rand", static_cast<unsigned long long>(c.items), r.item_prefix.c_str(),
                static_cast<unsigned long long>(r.items_existing), r.open_seconds, r.window_seconds, c.warmup);
  out += buf;
  std::snprintf(buf, sizeof buf,
                "\"sent\":%llu,\"replies\":%llu,\"throughput\":%.1f,\"accepted\":%llu,\"accepted_fraction\":%.6f,"
                "\"timeouts\":%llu,\"late\":%llu,\"bad_replies\":%llu,\"send_failures\":%llu,\"unsent\":%llu,"
                "\"max_backlog\":%llu,",
                static_cast<unsigned long long>(r.sent), static_cast<unsigned long long>(r.replies),
                static_cast<double>(r.replies) / win, static_cast<unsigned long long>(r.accepted),
                r.replies ? static_cast<double>(r.accepted) / static_cast<double>(r.replies) : 0.0,
                static_cast<unsigned long long>(r.timeouts), static_cast<unsigned long long>(r.late),
                static_cast<unsigned long long>(r.bad_replies), static_cast<unsigned long long>(r.send_failures),
                static_cast<unsigned long long>(r.unsent), static_cast<unsigned long long>(r.max_backlog));
  out += buf;
  out += "\"latency_ms\":" + json_percentiles(r.latency, 1e6) + ",\"outcomes\":{";
  bool first = true;
  for (const auto& [code, n] : r.outcomes) {
    out += (first ? "\"" : ",\"") + code + "\":" + std::to_string(n);
    first = false;
  }
  out += "}";
  if (feed) {
    LatencyHistogram all, publish;
    std::string subs;
    for (std::size_t i = 0; i < r.subscribers.size(); ++i) {
      const auto& s = r.subscribers[i];
      all.merge(s.latency);
      publish.merge(s.publish_latency);
      std::snprintf(buf, sizeof buf,
                    "%s{\"received\":%llu,\"matched\":%llu,\"delivered_fraction\":%.6f,\"unmatched\":%llu,\"gaps\":%llu,"
                    "\"lost\":%llu,\"duplicates\":%llu,\"latency_ms\":",
                    i ? "," : "", static_cast<unsigned long long>(s.received), static_cast<unsigned long long>(s.matched),
                    r.accepted_sent_in_window
                        ? static_cast<double>(s.matched) / static_cast<double>(r.accepted_sent_in_window)
                        : 0.0,
                    static_cast<unsigned long long>(s.unmatched), static_cast<unsigned long long>(s.gaps),
                    static_cast<unsigned long long>(s.lost), static_cast<unsigned long long>(s.duplicates));
      subs += buf + json_percentiles(s.latency, 1e6) + ",\"ts_latency_ms\":" + json_percentiles(s.ts_latency, 1) + "}";
    }
    out += ",\"feed\":{\"subscribers\":" + std::to_string(r.subscribers.size()) +
           ",\"subscriber_threads\":" + std::to_string(c.subscriber_threads) +
           ",\"expected_per_subscriber\":" + std::to_string(r.accepted_sent_in_window) +
           ",\"latency_ms\":" + json_percentiles(all, 1e6) +
           ",\"publish_latency_ms\":" + json_percentiles(publish, 1e6) + ",\"per_subscriber\":[" + subs + "]}";
  }
  out += "}";
  std::printf("%s\n", out.c_str());
}

void print_human(const BenchConfig& c, const BenchResult& r, bool feed) {
  const double win = r.window_seconds > 0 ? r.window_seconds : 1;
  std::printf("bidmesh-bench: %s; %s amounts; %llu items %s-* (%llu reused, opened in %.2f s); %.1f s after %.1f s warmup\n",
              shape(c).c_str(), c.ctr ? "ctr" : "rand", static_cast<unsigned long long>(c.items), r.item_prefix.c_str(),
              static_cast<unsigned long long>(r.items_existing), r.open_seconds, r.window_seconds, c.warmup);
  std::printf("  throughput  %.1f req/s  (%llu replies to %llu sent)\n", static_cast<double>(r.replies) / win,
              static_cast<unsigned long long>(r.replies), static_cast<unsigned long long>(r.sent));
  std::printf("  accepted    %.2f%%\n",
              r.replies ? 100.0 * static_cast<double>(r.accepted) / static_cast<double>(r.replies) : 0.0);
  std::printf("  latency ms  %s%s\n", human_percentiles(r.latency).c_str(),
              c.rate > 0 ? "  [from intended send time]" : "");
  std::string oc;
  for (const auto& [code, n] : r.outcomes) oc += " " + code + " " + std::to_string(n);
  std::printf("  outcomes   %s\n", oc.empty() ? " none" : oc.c_str());
  std::printf("  timeouts %llu, late %llu, bad replies %llu, send failures %llu",
              static_cast<unsigned long long>(r.timeouts), static_cast<unsigned long long>(r.late),
              static_cast<unsigned long long>(r.bad_replies), static_cast<unsigned long long>(r.send_failures));
  if (c.rate > 0)
    std::printf(", unsent %llu, max backlog %llu", static_cast<unsigned long long>(r.unsent),
                static_cast<unsigned long long>(r.max_backlog));
  std::printf("\n");
  if (!feed) return;
  LatencyHistogram all, publish;
  std::printf("feed: %zu subscribers, %llu events expected each (accepted bids sent in the window)\n",
              r.subscribers.size(), static_cast<unsigned long long>(r.accepted_sent_in_window));
  for (std::size_t i = 0; i < r.subscribers.size(); ++i) {
    const auto& s = r.subscribers[i];
    all.merge(s.latency);
    publish.merge(s.publish_latency);
    std::printf("  sub %zu: %llu matched (%.2f%%), gaps %llu, lost %llu, duplicates %llu, p50 %.3f p99 %.3f ms\n", i,
                static_cast<unsigned long long>(s.matched),
                r.accepted_sent_in_window ? 100.0 * static_cast<double>(s.matched) / static_cast<double>(r.accepted_sent_in_window)
                                          : 0.0,
                static_cast<unsigned long long>(s.gaps), static_cast<unsigned long long>(s.lost),
                static_cast<unsigned long long>(s.duplicates), ms(s.latency.percentile(0.5)),
                ms(s.latency.percentile(0.99)));
  }
  std::printf("  latency ms  %s  [bid send -> event receive, all subscribers]\n", human_percentiles(all).c_str());
  std::printf("  latency ms  %s  [bid reply -> event receive (publish to receive), all subscribers]\n",
              human_percentiles(publish).c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-bench: drive bids through a running mesh and measure throughput and latency.",
               "bidmesh-bench"};
  app.fallthrough();
  app.require_subcommand(0, 1);
  app.footer(
      "Closed loop (default): each client keeps --pipeline requests in flight. Open loop (--rate): requests are\n"
      "due at fixed times and latency counts from that time (no coordinated omission).\n"
      "Amounts: ctr (every bid beats the max: all accepted) or rand (random amounts: most refused).\n"
      "Exit codes: 0 the run completed, 100 usage, 111 the run could not be made (open failed, no replies).");

  BenchConfig cfg;
  bool json = false;
  std::string amounts = "ctr";
  int io_threads = 1;
  app.add_option("--endpoint", cfg.endpoint, "request endpoint of a router")
      ->envname("BIDMESH_ENDPOINT")
      ->capture_default_str();
  app.add_option("--feed", cfg.feed, "feed endpoint (feed runs)")->envname("BIDMESH_FEED")->capture_default_str();
  app.add_flag("--json", json, "print one JSON object instead of the report");
  app.add_flag("--direct", cfg.direct,
               "bids go straight to each item's bid node (slot map from --endpoint, protocol v1.2); opens still "
               "go through the router");
  std::string cert, server_cert;
  app.add_option("--cert", cert, "security = curve: the client's secret certificate (NAME.key_secret)")
      ->envname("BIDMESH_CERT");
  app.add_option("--server-cert", server_cert, "security = curve: the mesh's public certificate (.key)")
      ->envname("BIDMESH_SERVER_CERT");
  app.add_option("--items", cfg.items, "items opened and bid on")->check(CLI::Range(1, 10000000))->capture_default_str();
  app.add_option("--item-prefix", cfg.item_prefix, "item names are PREFIX-<i> (default: bench-<random>)")
      ->check([](const std::string& s) {
        return is_valid_identifier(s + "-0000000") ? std::string() : std::string("[A-Za-z0-9_-], at most 56 bytes");
      });
  app.add_option("--clients", cfg.clients, "connections")->check(CLI::Range(1, 10000))->capture_default_str();
  app.add_option("--pipeline", cfg.pipeline, "requests in flight per connection (>1: DEALER sockets)")
      ->check(CLI::Range(1, 100000))
      ->capture_default_str();
  app.add_option("--threads", cfg.threads, "worker threads (clients are split among them)")
      ->check(CLI::Range(1, 256))
      ->capture_default_str();
  app.add_option("--rate", cfg.rate, "open loop: target requests/s (0: closed loop)")
      ->check(CLI::Range(0.0, 1e8))
      ->capture_default_str();
  app.add_option("--amounts", amounts, "ctr or rand")->check(CLI::IsMember({"ctr", "rand"}))->capture_default_str();
  app.add_option("--max-amount", cfg.max_amount, "rand: amounts in [1, N]")->check(CLI::PositiveNumber)->capture_default_str();
  app.add_option("--seconds", cfg.seconds, "measured time")->check(CLI::Range(0.1, 86400.0))->capture_default_str();
  app.add_option("--warmup", cfg.warmup, "unmeasured time first")->check(CLI::Range(0.0, 3600.0))->capture_default_str();
  app.add_option("--timeout", cfg.timeout_ms, "ms before a request counts as a timeout")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  app.add_option("--stalled-subscribers", cfg.stalled_subscribers,
                 "feed subscribers (all items) that never read, during the run")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  app.add_option("--io-threads", io_threads, "ZeroMQ I/O threads")->check(CLI::Range(1, 64))->capture_default_str();

  auto* feed_cmd = app.add_subcommand("feed", "bids at --rate (default 2000/s) plus feed subscribers");
  cfg.subscribers = 0;
  int subscribers = 1;
  feed_cmd->add_option("--subscribers", subscribers, "subscribers: SUB sockets, each its own connection")
      ->check(CLI::Range(1, 1000))
      ->capture_default_str();
  feed_cmd->add_option("--subscriber-threads", cfg.subscriber_threads, "threads that poll the subscribers (0: one each)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  feed_cmd->add_option("--rcvhwm", cfg.sub_rcvhwm, "each subscriber's receive high-water mark (messages)")
      ->check(CLI::Range(1, 100000000))
      ->capture_default_str();

  auto* restart_cmd = app.add_subcommand(
      "restart", "kill -9 a bid node N times (the bench starts it, and restarts it at once): time to the first accepted bid");
  RestartBenchConfig rcfg;
  restart_cmd->add_option("--config", rcfg.config_file, "the mesh config of the running router")->required();
  restart_cmd->add_option("--node", rcfg.node, "the bid node to kill (must not be running: the bench starts it)")->required();
  restart_cmd->add_option("--node-program", rcfg.node_program, "bidmesh-bid-node (default: beside this program)");
  restart_cmd->add_option("--log", rcfg.log_file, "the node's log file (default: /dev/null)");
  restart_cmd->add_flag("--worst-tail", rcfg.worst_tail,
                        "kill just before a checkpoint with the longest log tail (give the config a long "
                        "checkpoint_interval_ms)");
  restart_cmd->add_option("--times", rcfg.times, "restarts")->check(CLI::Range(1, 1000))->capture_default_str();
  restart_cmd->add_option("--probe-timeout", rcfg.probe_timeout_ms, "ms before a probe bid is retried with a new id")
      ->check(CLI::Range(1, 10000))
      ->capture_default_str();
  restart_cmd->add_option("--unavailable-pause", rcfg.unavailable_pause_ms, "ms before the next probe after an `unavailable` reply")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();

  try {
    app.parse(argc, argv);
    if (cert.empty() != server_cert.empty())
      throw CLI::ValidationError("--cert", "--cert and --server-cert go together (security = \"curve\")");
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }
  if (!cert.empty()) {
    auto keys = bidmesh::load_curve_keys(cert, server_cert);
    if (auto* error = std::get_if<std::string>(&keys)) {
      std::fprintf(stderr, "bidmesh-bench: %s\n", error->c_str());
      return kExitUsage;
    }
    cfg.curve = std::get<bidmesh::CurveKeys>(keys);
  }
  if (restart_cmd->parsed()) {
    rcfg.endpoint = cfg.endpoint;
    if (rcfg.node_program.empty())
      rcfg.node_program = (std::filesystem::path(argv[0]).parent_path() / "bidmesh-bid-node").string();
    if (rcfg.log_file.empty()) rcfg.log_file = "/dev/null";
    zmq::context_t rctx(1);
    RestartBenchResult rr = run_restart_bench(rctx, rcfg);
    if (!rr.ok) {
      std::fprintf(stderr, "bidmesh-bench restart: %s\n", rr.error.c_str());
      return kExitSystem;
    }
    std::vector<double> v = rr.restart_ms;
    std::sort(v.begin(), v.end());
    const double median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
    std::string all;
    for (double x : rr.restart_ms) all += (all.empty() ? "" : ",") + std::to_string(x);
    if (json) {
      std::printf("{\"mode\":\"restart\",\"node\":\"%s\",\"item\":\"%s\",\"times\":%zu,\"median_ms\":%.3f,\"worst_ms\":%.3f,"
                  "\"best_ms\":%.3f,\"probes\":%llu,\"restart_ms\":[%s]}\n",
                  rcfg.node.c_str(), rr.item.c_str(), v.size(), median, v.back(), v.front(),
                  static_cast<unsigned long long>(rr.probes), all.c_str());
    } else {
      std::printf("bidmesh-bench restart: node %s, item %s, %zu kill -9 + immediate restart\n", rcfg.node.c_str(),
                  rr.item.c_str(), v.size());
      std::printf("  kill -> first accepted bid: median %.1f ms, worst %.1f ms, best %.1f ms  (all: %s)\n", median,
                  v.back(), v.front(), all.c_str());
    }
    return kExitOk;
  }
  cfg.ctr = amounts == "ctr";
  const bool feed = feed_cmd->parsed();
  if (feed) {
    cfg.subscribers = subscribers;
    if (cfg.rate <= 0) cfg.rate = 2000;
    if (!cfg.ctr) std::fprintf(stderr, "bidmesh-bench: feed latency is matched by amount: rand amounts are not matched\n");
  }
  if (cfg.threads > cfg.clients) cfg.threads = cfg.clients;
  if (cfg.ctr && static_cast<uint64_t>(cfg.clients) * static_cast<uint64_t>(cfg.pipeline) > cfg.items)
    std::fprintf(stderr,
                 "bidmesh-bench: %d clients x %d in flight > %llu items: ctr keeps one bid in flight per item, so "
                 "some slots will idle\n",
                 cfg.clients, cfg.pipeline, static_cast<unsigned long long>(cfg.items));

  const bool tty = isatty(STDERR_FILENO) == 1;
  zmq::context_t ctx(io_threads);
  uint64_t last_replies = 0;
  double last_t = 0;
  uint64_t last_events = 0;
  ProgressFn progress;
  if (tty) {
    progress = [&](const Progress& p) {
      const double dt = p.elapsed_s - last_t;
      const double rps = dt > 0 ? static_cast<double>(p.replies - last_replies) / dt : 0;
      const double eps = dt > 0 ? static_cast<double>(p.feed_events - last_events) / dt : 0;
      std::fprintf(stderr, "\r\033[K%6.1f s %s  %9.0f rep/s  ok %5.1f%%  timeouts %llu", p.elapsed_s,
                   p.warming_up ? "warmup" : "run   ", rps,
                   p.replies ? 100.0 * static_cast<double>(p.ok) / static_cast<double>(p.replies) : 0.0,
                   static_cast<unsigned long long>(p.timeouts));
      if (feed) std::fprintf(stderr, "  feed %9.0f ev/s", eps);
      std::fflush(stderr);
      last_t = p.elapsed_s;
      last_replies = p.replies;
      last_events = p.feed_events;
    };
    std::fprintf(stderr, "bidmesh-bench: opening %llu items at %s ...", static_cast<unsigned long long>(cfg.items),
                 cfg.endpoint.c_str());
    std::fflush(stderr);
  }

  BenchResult r;
  try {
    r = run_bench(ctx, cfg, progress);
  } catch (const zmq::error_t& e) {
    if (tty) std::fprintf(stderr, "\r\033[K");
    std::fprintf(stderr, "bidmesh-bench: %s (endpoint %s)\n", e.what(), cfg.endpoint.c_str());
    return e.num() == EINVAL || e.num() == EPROTONOSUPPORT ? kExitUsage : kExitSystem;
  }
  if (tty) std::fprintf(stderr, "\r\033[K");
  if (!r.ok) {
    std::fprintf(stderr, "bidmesh-bench: %s\n", r.error.c_str());
    return kExitSystem;
  }
  if (json)
    print_json(cfg, r, feed);
  else
    print_human(cfg, r, feed);
  if (r.replies == 0) {
    std::fprintf(stderr, "bidmesh-bench: no reply in the measured window from %s\n", cfg.endpoint.c_str());
    return kExitSystem;
  }
  return kExitOk;
}
