// The feed forwarder: one endpoint for every subscriber of the live feed.
//
//   bid nodes' PUB --connect--> XSUB (collect) ==loop==> XPUB (publish) <--connect-- SUB clients
//
// Events pass through unchanged (two frames: topic "item/<item>/" or "bidder/<name>/", then the
// MessagePack event; docs/protocol.md). Subscriptions travel the other way, so bid nodes filter
// at the source.
//
// Vetting (FeedOptions::allowed_clients set, i.e. security = "curve"): the XPUB runs with
// ZMQ_XPUB_MANUAL and every subscription is judged by the subscriber's key (User-Id) against
// nodes/feed_access.h: `bidder/<name>/` only for the key named <name> and `agent` keys, a wider
// prefix narrowed to what the key may see, the rest refused (not subscribed; counted in
// refused_subscriptions and logged at most once a second). Unsubscribes undo the same grant.
// A key removed by a reload keeps the subscriptions it made before until it disconnects.
// Without vetting (security = "none", loopback only) every subscription passes as asked.
//
// Guarantees: the feed never slows bidding. Each subscriber has a bounded send queue (sndhwm);
// past it its events are dropped (xpub_nodrop off), and it sees the gap in `seq`. Nothing is
// stored: a subscriber that is not connected misses what is published meanwhile.
//
// Threads: the forwarder runs its own poll loop on a thread of its own, which owns the XSUB and
// XPUB sockets; each readable socket is drained up to FeedOptions::burst messages a turn, so
// neither side starves the other. start() and stop() are called by one other thread (the
// owner), which steers the loop over an inproc PAIR; forwarded_events() is the owner's too.
// failed(), failure() and refused_subscriptions() may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <prometheus/counter.h>
#include <zmq.hpp>

#include "security/allow_list.h"

namespace bidmesh {

struct FeedOptions {
  int subscriber_hwm = 10000;   // events queued per subscriber before its events are dropped
  int collect_hwm = 100000;     // events queued from the bid nodes
  // Subscriptions are topic prefixes ("item/<64 bytes>/"); anything much larger is abuse.
  int64_t max_subscription_bytes = 1024;
  int64_t max_event_bytes = 64 * 1024;   // per frame from a bid node
  int handshake_timeout_ms = 5000;
  int heartbeat_interval_ms = 10000;
  int heartbeat_timeout_ms = 30000;
  // With security on: make the XSUB a CurveZMQ server for the mesh's nodes, and the XPUB one
  // for the allowed clients (security/zap.h). Called on the forwarder's thread before bind.
  std::function<void(zmq::socket_t&)> secure_collect;
  std::function<void(zmq::socket_t&)> secure_publish;
  // With security on: the allowed clients as of now (called on the forwarder's thread at each
  // subscription, so it must be thread-safe; the router passes its ZapHandler's list). Set, it
  // turns vetting on (above); a key not in the list (feed_public) is nameless: item/ only.
  std::function<std::shared_ptr<const AllowList>()> allowed_clients;
  // Incremented per refused subscription (FeedMetrics::refused_subscriptions); may be null.
  prometheus::Counter* refused_metric = nullptr;
  // Distinct requested prefixes tracked for the upstream subscriptions while vetting; past it new
  // ones are refused (a peer sending endless distinct prefixes must not grow the router).
  std::size_t max_tracked_subscriptions = 100000;
  int burst = 256;  // messages read from one socket per loop turn
};

class FeedForwarder {
 public:
  // REQUIRES: ctx outlives the forwarder.
  FeedForwarder(zmq::context_t& ctx, std::string collect_endpoint, std::string publish_endpoint,
                FeedOptions options = {});
  FeedForwarder(const FeedForwarder&) = delete;
  FeedForwarder& operator=(const FeedForwarder&) = delete;
  // Stops the forwarder if it runs.
  ~FeedForwarder();

  // Starts the thread and waits until both endpoints are bound. Returns a one-line reason when
  // they cannot be (the thread has then ended), nullopt when the feed is forwarding.
  // REQUIRES: called once.
  std::optional<std::string> start();

  // Stops forwarding and joins the thread. Events in flight are dropped. Idempotent.
  void stop();

  // Events taken from the bid nodes since start (a multi-frame event counts once), or nullopt
  // when the loop does not answer within `timeout` (then a late answer is discarded by the next
  // call). REQUIRES: start() succeeded, not stopped.
  std::optional<uint64_t> forwarded_events(std::chrono::milliseconds timeout);

  // The inproc endpoint of libzmq's monitor of the publish socket (for a ConnectionCounter of
  // the subscribers). REQUIRES: start() succeeded.
  const std::string& subscriber_monitor() const { return subscriber_monitor_; }

  // Subscriptions refused since start (vetting only).
  uint64_t refused_subscriptions() const { return refused_.load(std::memory_order_relaxed); }

  // Why the forwarder ended on its own (the loop failed), or nullopt while it runs or after a
  // clean stop. The process should then exit so its supervisor restarts it.
  std::optional<std::string> failure() const;
  // Cheap check of the same, for a serving loop.
  bool failed() const { return failed_.load(std::memory_order_acquire); }

 private:
  class Loop;
  void thread_main(std::promise<std::optional<std::string>>* bound);
  void set_failure(std::string reason);

  zmq::context_t& ctx_;
  const std::string collect_endpoint_;
  const std::string publish_endpoint_;
  const FeedOptions options_;
  const std::string control_endpoint_;   // inproc, unique per forwarder
  zmq::socket_t control_;                // the owner's end of the steering PAIR
  std::thread thread_;
  std::string subscriber_monitor_;       // set by the thread before start() returns

  std::atomic<bool> failed_{false};
  std::atomic<uint64_t> refused_{0};
  mutable std::mutex mu_;
  std::optional<std::string> failure_;   // guarded by mu_
};

}  // namespace bidmesh
