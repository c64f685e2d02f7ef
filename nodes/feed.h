// The feed forwarder: one endpoint for every subscriber of the live feed.
//
//   bid nodes' PUB --connect--> XSUB (collect) ==proxy==> XPUB (publish) <--connect-- SUB clients
//
// Events pass through unchanged (two frames: topic "item/<item>/", then the MessagePack event;
// docs/protocol.md v1). Subscriptions travel the other way, so bid nodes filter at the source.
//
// Guarantees: the feed never slows bidding. Each subscriber has a bounded send queue (sndhwm);
// past it its events are dropped (xpub_nodrop off), and it sees the gap in `seq`. Nothing is
// stored: a subscriber that is not connected misses what is published meanwhile.
//
// Threads: the forwarder runs zmq::proxy_steerable on a thread of its own, which owns the XSUB
// and XPUB sockets. start() and stop() are called by one other thread (the owner), which steers
// the proxy over an inproc PAIR; forwarded_events() is the owner's too. failed() and failure()
// may be called from any thread.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <future>
#include <mutex>
#include <optional>
#include <string>
#include <thread>

#include <zmq.hpp>

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

  // Events taken from the bid nodes since start (libzmq's proxy statistics; a multi-frame
  // event counts once), or nullopt when the proxy does not answer within `timeout` (then a
  // late answer is discarded by the next call). REQUIRES: start() succeeded, not stopped.
  std::optional<uint64_t> forwarded_events(std::chrono::milliseconds timeout);

  // The inproc endpoint of libzmq's monitor of the publish socket (for a ConnectionCounter of
  // the subscribers). REQUIRES: start() succeeded.
  const std::string& subscriber_monitor() const { return subscriber_monitor_; }

  // Why the forwarder ended on its own (the proxy failed), or nullopt while it runs or after a
  // clean stop. The process should then exit so its supervisor restarts it.
  std::optional<std::string> failure() const;
  // Cheap check of the same, for a serving loop.
  bool failed() const { return failed_.load(std::memory_order_acquire); }

 private:
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
  mutable std::mutex mu_;
  std::optional<std::string> failure_;   // guarded by mu_
};

}  // namespace bidmesh
