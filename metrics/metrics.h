// Prometheus metrics of one bidmesh process (docs/operations.md lists every metric).
//
// A process has one MetricsRegistry. It always exists and its metric sets (RouterMetrics,
// BidNodeMetrics, FeedMetrics, SupervisorMetrics) are always counted, so the code that counts
// never branches on whether metrics are on; serve() adds the HTTP endpoint (prometheus-cpp's
// Exposer, civetweb) when the config names an address. Without it, nothing listens and the
// counts are only kept.
//
// Cost and bounds: every family and every label child is made when its set is constructed, so
// the serving loops only touch pre-resolved Counter&, Gauge& and Histogram&: a counter or gauge
// update is one atomic operation, with no lock and no allocation; a histogram observation takes
// one uncontended mutex (observe per batch, never per request). Labels are fixed enums (op,
// outcome, state) or a node name of the config: no series per item, bidder or client.
//
// Thread-safety: prometheus-cpp's metrics are thread-safe; the Exposer collects them on its own
// thread at each scrape. A set's methods may be called from any thread; a MetricsRegistry is
// made, served and destroyed by one thread, and outlives every set built on it.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

#include "protocol/errors.h"
#include "protocol/messages.h"

namespace prometheus {
class Exposer;
}

namespace bidmesh {

class MetricsRegistry {
 public:
  MetricsRegistry();
  ~MetricsRegistry();
  MetricsRegistry(const MetricsRegistry&) = delete;
  MetricsRegistry& operator=(const MetricsRegistry&) = delete;

  prometheus::Registry& registry() { return *registry_; }

  // Serves GET /metrics on `address` (HOST:PORT as protocol/config.h checks it: an IPv4 literal
  // or a bracketed IPv6 literal; port 0 picks a free one). One worker thread; a request that
  // has not been read within 5 s is dropped. Returns a one-line reason when it cannot bind.
  // REQUIRES: not serving yet.
  std::optional<std::string> serve(const std::string& address);
  bool serving() const { return exposer_ != nullptr; }
  // The bound port, once serving (the actual one for port 0); 0 otherwise.
  int port() const;

 private:
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<prometheus::Exposer> exposer_;
};

// Outcome of a request: ok, or the error code it was answered with; the router adds
// `answered` for a reply it passed on from the owner without reading it.
inline constexpr std::size_t kErrorCodeCount = static_cast<std::size_t>(ErrorCode::internal) + 1;
inline constexpr std::size_t kOpCount = static_cast<std::size_t>(Op::ping) + 1;

// bidmesh_<who>_requests_total{op, outcome}. op is one of the contract's ops, or `none` for a
// request whose op could not be read. Every (op, outcome) child exists from the start.
class RequestCounters {
 public:
  RequestCounters(prometheus::Registry& registry, const std::string& name, const std::string& help,
                  bool with_answered);

  prometheus::Counter& ok(std::optional<Op> op) { return *children_[op_index(op)][0]; }
  prometheus::Counter& error(std::optional<Op> op, ErrorCode code) {
    return *children_[op_index(op)][1 + static_cast<std::size_t>(code)];
  }
  // REQUIRES: built with_answered.
  prometheus::Counter& answered(std::optional<Op> op) { return *children_[op_index(op)][1 + kErrorCodeCount]; }
  // Counts one reply: ok when `error` is nullopt, else the error code it carries. The code comes
  // from where the reply was made (e.g. BatchResult::outcomes), never from its bytes. No allocation.
  void count(std::optional<Op> op, std::optional<ErrorCode> error) { (error ? this->error(op, *error) : ok(op)).Increment(); }

 private:
  static std::size_t op_index(std::optional<Op> op) { return op ? static_cast<std::size_t>(*op) : kOpCount; }
  std::array<std::array<prometheus::Counter*, 2 + kErrorCodeCount>, kOpCount + 1> children_{};
};

struct RouterMetrics {
  explicit RouterMetrics(prometheus::Registry& registry);
  RequestCounters requests;             // bidmesh_router_requests_total{op, outcome}
  prometheus::Gauge& in_flight;         // bidmesh_router_requests_in_flight
  prometheus::Counter& timeouts;        // bidmesh_router_request_timeouts_total
  prometheus::Gauge& client_connections;  // bidmesh_router_client_connections
};

struct FeedMetrics {
  explicit FeedMetrics(prometheus::Registry& registry);
  prometheus::Counter& events;          // bidmesh_feed_events_total (forwarded to subscribers)
  prometheus::Gauge& subscribers;       // bidmesh_feed_subscribers (connections)
  prometheus::Counter& refused_subscriptions;  // bidmesh_feed_refused_subscriptions_total (security on)
};

struct BidNodeMetrics {
  explicit BidNodeMetrics(prometheus::Registry& registry);
  RequestCounters requests;             // bidmesh_node_requests_total{op, outcome}
  prometheus::Histogram& batch_size;    // bidmesh_node_batch_requests
  prometheus::Histogram& apply_seconds;     // bidmesh_node_apply_seconds
  prometheus::Histogram& log_sync_seconds;  // bidmesh_node_log_sync_seconds
  prometheus::Histogram& checkpoint_seconds;  // bidmesh_node_checkpoint_seconds
  prometheus::Counter& log_written_bytes;   // bidmesh_node_log_written_bytes_total
  prometheus::Gauge& log_bytes;         // bidmesh_node_log_bytes (past the last checkpoint)
  prometheus::Gauge& log_segments;      // bidmesh_node_log_segments
  prometheus::Gauge& store_used_bytes;  // bidmesh_node_store_used_bytes
  prometheus::Gauge& store_size_bytes;  // bidmesh_node_store_size_bytes (the LMDB map size)
  prometheus::Gauge& items_open;        // bidmesh_node_items_open
  prometheus::Counter& auto_closes;     // bidmesh_node_auto_closes_total
  prometheus::Gauge& idempotency_records;  // bidmesh_node_idempotency_records
  prometheus::Counter& events_published;   // bidmesh_node_events_published_total
};

// Per node of this supervisor: its state (one series per state, 1 for the current one), its
// restarts, and how its last process ended. Nodes are added and removed as the config is
// (re)loaded; that is not a hot path (it allocates). Thread-compatible: one thread (the
// supervisor's loop) calls its methods; scrapes read the metrics safely meanwhile.
class SupervisorMetrics {
 public:
  // `states`: every state name a node can be in.
  SupervisorMetrics(prometheus::Registry& registry, std::vector<std::string> states);

  void add_node(const std::string& node);
  void remove_node(const std::string& node);
  // REQUIRES: add_node(node) before, and `state` one of the states given.
  void set_state(const std::string& node, std::string_view state);
  void count_restart(const std::string& node);
  // The last process of `node` ended: exit code (signal 0), or signal (code 0).
  void set_last_exit(const std::string& node, int code, int signal);

 private:
  struct Node {
    std::vector<prometheus::Gauge*> state;  // index of states_
    prometheus::Counter* restarts = nullptr;
    prometheus::Gauge* exit_code = nullptr;
    prometheus::Gauge* exit_signal = nullptr;
  };
  const std::vector<std::string> states_;
  prometheus::Family<prometheus::Gauge>& state_;
  prometheus::Family<prometheus::Counter>& restarts_;
  prometheus::Family<prometheus::Gauge>& exit_code_;
  prometheus::Family<prometheus::Gauge>& exit_signal_;
  std::map<std::string, Node, std::less<>> nodes_;
};

}  // namespace bidmesh
