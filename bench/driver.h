// The load generator of bidmesh-bench: opens the bench's items, then drives bids through a
// router's request endpoint (or, with `direct`, straight to each item's bid node) from worker
// threads, and (feed runs) reads the feed from subscriber threads, measuring
// bid-send-to-feed-receive latency.
//
// Load shapes:
//   closed loop  (rate 0): `clients` connections, each with `pipeline` requests in flight; a
//                slot is refilled as soon as its reply arrives. pipeline 1 uses REQ sockets;
//                pipeline > 1 uses DEALER sockets (empty delimiter frame, replies matched by id).
//   open loop    (rate R): requests are due at fixed intended times (R per second over all
//                workers). A due request waits for a free slot; its latency is measured from
//                its intended send time, so a stalled server is charged for the whole stall (no
//                coordinated omission). Wake-ups use a timerfd (microsecond precision).
// Amounts:
//   ctr   every bid beats the item's max: one global counter gives every bid a fresh, higher
//         amount, and a worker keeps at most one bid in flight per item (items are split among
//         workers), so the mesh cannot see an item's bids out of order: all are accepted.
//         (Reused items need increment 1.) Amounts are unique, which the feed run uses to match
//         each event to its bid's send time.
//   rand  random items and random amounts in [1, max_amount]: most are refused as too_low.
// Every loop is bounded in time: sending stops at warmup + seconds, in-flight requests get at
// most timeout_ms more, the open phase retries each request a bounded number of times.
//
// Thread-safety: run_bench is one call from one thread; it starts and joins its own threads,
// each with its own sockets, all in the one context passed in. The progress callback runs on
// the calling thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "bench/histogram.h"
#include "client/client.h"

namespace bidmesh {

struct BenchConfig {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::string feed = "tcp://127.0.0.1:5556";
  uint64_t items = 1000;
  std::string item_prefix;        // items are "<prefix>-<i>"; empty: "bench-<random hex>"
  int clients = 50;               // connections
  int pipeline = 1;               // requests in flight per connection
  int threads = 1;                // worker threads (connections and items are split among them)
  double rate = 0;                // requests/s over all workers; 0 = closed loop
  bool ctr = true;                // amounts: ctr (all accepted) or rand
  uint64_t max_amount = 1000000;  // rand: amounts in [1, max_amount]
  double seconds = 10;            // measured time
  double warmup = 1;              // unmeasured time before it
  int timeout_ms = 1500;          // a request without reply after this is a timeout
  int subscribers = 0;            // feed run: SUB sockets, each its own connection (0 = no feed measurement)
  int subscriber_threads = 0;     // feed run: threads that poll the subscribers (0: one per subscriber)
  int sub_rcvhwm = 100000;        // feed run: each subscriber's receive high-water mark
  int stalled_subscribers = 0;    // SUB sockets on the feed (all items) that never read: a bid run
                                  // with them shows what a stalled subscriber costs the bidders
  std::optional<CurveKeys> curve;  // security = "curve": every socket is a CurveZMQ client
  // Direct clients (protocol v1.2): the slot map is fetched once from `endpoint` with `slots`,
  // and each client holds one socket per bid node's client endpoint (and one to the router for
  // ranges without one); each bid goes to its item's owner. No fallback and no `moved` handling
  // here: the bench measures the direct path, so a `moved` reply is an outcome like any refusal.
  bool direct = false;
};

struct Progress {
  double elapsed_s = 0;
  bool warming_up = true;
  uint64_t sent = 0;
  uint64_t replies = 0;
  uint64_t ok = 0;
  uint64_t timeouts = 0;
  uint64_t feed_events = 0;  // summed over subscribers
};

struct SubscriberResult {
  uint64_t received = 0;     // events handed out by the watcher
  uint64_t matched = 0;      // of those, bids sent in the measured window (in the latency figures)
  uint64_t unmatched = 0;    // bench events whose send time is unknown (table full, or not ctr)
  uint64_t gaps = 0;         // seq jumps seen
  uint64_t lost = 0;         // events missed in those gaps (no repair in the bench)
  uint64_t duplicates = 0;
  LatencyHistogram latency;  // ns, bid send -> event receive (includes the durable commit)
  // ns, the bid's reply reaching the client -> its event reaching the subscriber: publish to
  // receive, as near as a client can see it (the node publishes right after it replies). 0 when
  // the event came first.
  LatencyHistogram publish_latency;
  LatencyHistogram ts_latency;  // ms, event ts (unix ms, the node's clock) -> receive (wall clock)
};

struct BenchResult {
  bool ok = false;
  std::string error;            // when !ok: why the run could not go on
  std::string item_prefix;
  uint64_t items_opened = 0;
  uint64_t items_existing = 0;  // `exists` at open: reused
  double open_seconds = 0;
  double window_seconds = 0;    // the measured time
  uint64_t sent = 0;            // requests due in the window and sent
  uint64_t replies = 0;         // of those, answered
  uint64_t accepted = 0;        // of those, ok
  uint64_t accepted_sent_in_window = 0;  // ok replies to bids actually sent in the window (feed)
  std::map<std::string, uint64_t> outcomes;  // "ok" or the error code -> count
  uint64_t timeouts = 0;        // no reply within timeout_ms
  uint64_t late = 0;            // replies after their timeout, or matching nothing
  uint64_t bad_replies = 0;     // undecodable
  uint64_t send_failures = 0;   // the socket would not take the frame
  uint64_t unsent = 0;          // open loop: due in the window but never sent (no free slot)
  uint64_t max_backlog = 0;     // open loop: most requests due and waiting at once
  LatencyHistogram latency;     // ns, intended send -> reply
  std::vector<std::string> direct_endpoints;  // --direct: the bid nodes' client endpoints used
  std::vector<SubscriberResult> subscribers;
};

using ProgressFn = std::function<void(const Progress&)>;

// Runs the whole bench: open phase, warmup, measured window, drain. Calls `progress` about once a
// second. REQUIRES: cfg.clients >= 1, cfg.pipeline >= 1, 1 <= cfg.threads <= cfg.clients,
// cfg.items >= 1, cfg.seconds > 0.
BenchResult run_bench(zmq::context_t& ctx, const BenchConfig& cfg, const ProgressFn& progress);

}  // namespace bidmesh
