// bidmesh-reliability: the reliability scenarios of docs/reliability.md as one program, for the
// long runs (tools/reliability) and as the client processes of every run.
//
//   bidmesh-reliability crash [--seconds 60] [--clients 4] [--kill-every-ms 2000]
//                             [--client-timeout-ms 400] [--client-deadline-ms 6000] [--keep] [--json]
//   bidmesh-reliability stop  [--seconds 3] [--clients 4] [--stop-timeout-ms 5000] [--keep] [--json]
//   bidmesh-reliability feed  [--events 100000] [--reader-delay-us 300] [--min-ratio 0.5] [--keep] [--json]
//   bidmesh-reliability bidder --endpoint E --name N --items a,b --seconds S --log FILE
//                              [--timeout-ms 400] [--deadline-ms 6000]   (one client process)
//
// Each scenario starts its own supervised mesh (bidmesh-supervisor and the nodes, from this
// program's folder) on free loopback ports in a temp dir, removed at the end unless --keep.
// Exit codes: 0 the scenario passed, 1 it ran and a guarantee failed, 100 usage, 111 it could
// not be run.
#include <cstdio>
#include <sstream>

#include <CLI/CLI.hpp>

#include "tests/reliability/history.h"
#include "tests/reliability/scenarios.h"

using namespace bidmesh::rel;

namespace {
std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string part;
  while (std::getline(ss, part, ',')) {
    if (!part.empty()) out.push_back(part);
  }
  return out;
}

template <typename R>
int report(const R& r, bool passed, bool json) {
  std::printf("%s\n", json ? r.json().c_str() : r.summary().c_str());
  if (passed) return 0;
  return r.error.empty() ? 1 : 111;
}
}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-reliability: crash, graceful-stop and feed-stress scenarios with a history checker",
               "bidmesh-reliability"};
  app.require_subcommand(1);
  // The last value of an option given twice wins: tools/reliability puts its defaults first
  // (`crash --seconds 60 "$@"`), so that `tools/reliability crash --seconds 10` overrides them.
  app.option_defaults()->multi_option_policy(CLI::MultiOptionPolicy::TakeLast);
  bool json = false, keep = false;
  app.add_flag("--json", json, "print one JSON object")->configurable(false);

  CrashOptions co;
  auto* crash = app.add_subcommand("crash", "SIGKILL a bid node every 2 s while client processes bid; check the history");
  crash->add_option("--seconds", co.seconds, "bidding and killing")->check(CLI::Range(1.0, 86400.0))->capture_default_str();
  crash->add_option("--clients", co.clients, "client processes")->check(CLI::Range(1, 64))->capture_default_str();
  crash->add_option("--kill-every-ms", co.kill_every_ms, "kill period")->check(CLI::Range(200, 600000))->capture_default_str();
  crash->add_option("--client-timeout-ms", co.client_timeout_ms, "each client's timeout per attempt (bidder --timeout-ms)")
      ->check(CLI::Range(1, 600000))
      ->capture_default_str();
  crash->add_option("--client-deadline-ms", co.client_deadline_ms,
                    "each client's deadline per request (bidder --deadline-ms); under a restart plus retries, "
                    "some requests end unknown")
      ->check(CLI::Range(2, 3600000))
      ->capture_default_str();
  crash->add_flag("--direct", co.direct,
                  "direct clients: a client endpoint on each bid node, bidders send to it (router only as fallback)");
  crash->add_option("--checkpoint-kb", co.checkpoint_kb, "checkpoint_kb of the mesh (0: the default)")
      ->check(CLI::Range(0, 1 << 20))->capture_default_str();
  crash->add_option("--checkpoint-hold-ms", co.checkpoint_hold_ms,
                    "hold each checkpoint this long before its commit (failpoint), so kills land inside")
      ->check(CLI::Range(0, 60000))->capture_default_str();
  crash->add_flag("--keep", keep, "keep the temp dir");
  crash->add_flag("--json", json, "print one JSON object");

  StopOptions so;
  auto* stop = app.add_subcommand("stop", "SIGTERM the supervisor while clients bid; restart and check the history");
  stop->add_option("--seconds", so.bid_seconds, "bidding before the SIGTERM")->check(CLI::Range(0.5, 3600.0))->capture_default_str();
  stop->add_option("--clients", so.clients, "client processes")->check(CLI::Range(1, 64))->capture_default_str();
  stop->add_option("--stop-timeout-ms", so.stop_timeout_ms, "the mesh's stop_timeout_ms")->check(CLI::Range(100, 600000))->capture_default_str();
  stop->add_flag("--keep", keep, "keep the temp dir");
  stop->add_flag("--json", json, "print one JSON object");

  FeedOptions fo;
  double min_ratio = 0.5;
  auto* feed = app.add_subcommand("feed", "a slow subscriber during a burst of bids: gaps repaired, throughput kept");
  feed->add_option("--events", fo.target_events, "bid events wanted in the burst")->check(CLI::Range(1000, 100000000))->capture_default_str();
  feed->add_option("--min-seconds", fo.min_seconds, "shortest burst")->check(CLI::Range(0.5, 3600.0))->capture_default_str();
  feed->add_option("--reader-delay-us", fo.reader_delay_us, "the slow reader's sleep per event")->check(CLI::Range(0, 1000000))->capture_default_str();
  feed->add_option("--rcvhwm", fo.rcvhwm, "the slow reader's receive HWM")->check(CLI::Range(1, 10000000))->capture_default_str();
  feed->add_option("--min-ratio", min_ratio, "least lagging/baseline throughput ratio to pass")->capture_default_str();
  feed->add_flag("--keep", keep, "keep the temp dir");
  feed->add_flag("--json", json, "print one JSON object");

  BidderOptions bo;
  std::string items, log;
  auto* bidder = app.add_subcommand("bidder", "one client process: bid and log every request (history.h)");
  bidder->add_option("--endpoint", bo.endpoint)->required();
  bidder->add_option("--name", bo.name)->required();
  bidder->add_option("--items", items, "comma-separated")->required();
  bidder->add_option("--seconds", bo.seconds)->required();
  bidder->add_option("--log", log)->required();
  bidder->add_option("--timeout-ms", bo.timeout_ms)->check(CLI::Range(1, 600000));
  bidder->add_flag("--direct", bo.direct, "send to each item's bid node (DirectClient), the router only as fallback");
  bidder->add_option("--deadline-ms", bo.request_deadline_ms)->check(CLI::Range(1, 3600000));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 100;
  }
  if (bidder->parsed()) {
    bo.items = split(items);
    bo.log = log;
    return run_bidder(bo);
  }
  if (crash->parsed()) {
    if (co.client_timeout_ms >= co.client_deadline_ms) {
      std::fprintf(stderr, "bidmesh-reliability crash: --client-timeout-ms (%d) must be below --client-deadline-ms (%d)\n",
                   co.client_timeout_ms, co.client_deadline_ms);
      return 100;
    }
    co.keep = keep;
    const CrashResult r = run_crash(co);
    return report(r, r.passed(), json);
  }
  if (stop->parsed()) {
    so.keep = keep;
    const StopResult r = run_graceful_stop(so);
    return report(r, r.passed(so.stop_timeout_ms), json);
  }
  fo.keep = keep;
  const FeedResult r = run_feed_stress(fo);
  return report(r, r.passed(min_ratio), json);
}
