// The long-running reliability scenarios (docs/reliability.md), shared by the short runs in
// integration_tests and the long runs of `tools/reliability` (program bidmesh-reliability). Each
// starts its own supervised mesh in a temp dir on free loopback ports, drives it with client
// processes (bidmesh-reliability bidder) or the bench, and returns its figures; nothing here
// asserts, the caller judges `passed()`.
//
// Thread-compatible: one call at a time from one thread (the feed scenario starts and joins one
// reader thread of its own).
#pragma once

#include <cstdint>
#include <string>

#include "tests/reliability/history.h"

namespace bidmesh::rel {

struct CrashOptions {
  double seconds = 10;      // bidding and killing
  int clients = 4;          // client processes
  int kill_every_ms = 2000; // SIGKILL to bid-1 this often
  int items_killed = 6;     // items owned by the killed node
  int items_other = 2;      // items owned by the other node (never killed)
  // Each client's per-attempt timeout and per-request deadline (bidder --timeout-ms and
  // --deadline-ms). A request ends `unknown` only once its deadline has passed, and the deadline
  // is checked between calls: one call makes up to 3 attempts (2 retries) of timeout_ms each plus
  // 10 + 20 ms of backoff after `unavailable`, so a request lasts at most about deadline +
  // 3 * timeout + 30 ms. The defaults outlast any restart (no request ends `unknown`); a deadline
  // under a restart plus its retries (e.g. 40 ms with a 10 ms timeout) makes some end `unknown`.
  // REQUIRES: 0 < client_timeout_ms < client_deadline_ms.
  int client_timeout_ms = 400;
  int client_deadline_ms = 6000;
  bool keep = false;        // keep the temp dir (logs, data)
  // Kills inside checkpoints: checkpoint_kb (0: the config's default) and the failpoint that
  // holds each checkpoint this long before its LMDB commit (0: off). With a hold, each kill waits
  // (at most one period) for the node to announce a new hold in its log, so it lands inside a
  // checkpoint; the restarted node's replay shows which did (a tail of checkpoint_kb or more).
  int checkpoint_kb = 0;
  int checkpoint_hold_ms = 0;
  // Direct clients (protocol v1.2): every bid node gets a client endpoint and the clients send
  // to it (bidder --direct), going through the router only while bid-1 cannot be reached.
  bool direct = false;
};

struct CrashResult {
  std::string error;        // the run could not be made
  int client_timeout_ms = 0, client_deadline_ms = 0;  // as run
  uint64_t kills = 0;
  uint64_t kills_in_checkpoint = 0;  // restarts that replayed a full tail (checkpoint_kb set)
  double restart_ms_max = 0;  // kill -> the supervisor reports the new process running
  double seconds = 0;
  // direct: calls answered by a bid node / through the router, and direct tries given up, over
  // all clients (each bidder prints its DirectClient::stats()).
  uint64_t direct_answers = 0, router_answers = 0, fallbacks = 0;
  CheckFigures check;
  bool passed() const { return error.empty() && check.passed() && kills > 0; }
  std::string summary() const;
  std::string json() const;
};

// Crash under load: `clients` bidder processes for `seconds` while bid-1 is killed with SIGKILL
// every kill_every_ms (the supervisor restarts it), then the history check.
CrashResult run_crash(const CrashOptions& options);

struct StopOptions {
  double bid_seconds = 3;        // bidding before the SIGTERM
  int clients = 4;
  int items = 6;                 // spread over both bid nodes
  uint32_t stop_timeout_ms = 5000;
  bool keep = false;
};

struct StopResult {
  std::string error;
  double stop_ms = 0;            // SIGTERM to the supervisor -> it exited
  int exit_code = -1;            // the supervisor's
  bool nodes_drained = false;    // every node logged its clean stop, none was SIGKILLed
  CheckFigures check;            // after a restart on the same data dir
  bool passed(uint32_t stop_timeout_ms) const {
    return error.empty() && exit_code == 0 && stop_ms < stop_timeout_ms && nodes_drained && check.passed();
  }
  std::string summary() const;
  std::string json() const;
};

// Graceful stop under load: SIGTERM to the supervisor while clients bid; then the mesh is
// started again on the same data dir and the history checked.
StopResult run_graceful_stop(const StopOptions& options);

struct FeedOptions {
  uint64_t target_events = 20000;  // bid events wanted in the burst (the bench runs long enough)
  double min_seconds = 2;          // shortest burst
  int items = 50;
  int clients = 4;                 // bench connections
  int pipeline = 16;               // bench requests in flight per connection
  int reader_delay_us = 5000;      // the slow subscriber sleeps this long per event during the burst
  int rcvhwm = 1000;               // its SUB receive high-water mark
  bool keep = false;
};

struct FeedResult {
  std::string error;
  double baseline_rps = 0;         // bench alone
  double lagging_rps = 0;          // bench while the slow subscriber lags and a SUB is stalled
  double burst_seconds = 0;
  uint64_t burst_events = 0;       // accepted bids of the burst (= max events)
  uint64_t delivered = 0, live = 0, gaps_detected = 0, gaps_repaired = 0, events_repaired = 0, events_lost = 0,
           duplicates = 0;
  uint64_t final_bids = 0;         // after the burst, to show losses at items' tails
  uint64_t items_checked = 0, items_mismatched = 0;  // the watcher's max and seq per item vs `get`
  double throughput_ratio() const { return baseline_rps > 0 ? lagging_rps / baseline_rps : 0; }
  bool passed(double min_ratio) const {
    return error.empty() && gaps_detected > 0 && gaps_repaired == gaps_detected && events_lost == 0 &&
           items_mismatched == 0 && items_checked > 0 && throughput_ratio() >= min_ratio;
  }
  std::string summary() const;
  std::string json() const;
};

// The feed under stress: a slow subscriber (FeedWatcher, small receive HWM, sleeping per event)
// during a burst of bids from bidmesh-bench, plus a SUB that never reads; the watcher must detect
// every gap by seq and repair it with history, ending with every item's max and seq equal to
// `get`; the burst's throughput is compared with the same bench run with no subscriber.
FeedResult run_feed_stress(const FeedOptions& options);

}  // namespace bidmesh::rel
