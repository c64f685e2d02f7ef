// The families of every bidmesh process, built once; names follow Prometheus's conventions
// (base units, `_total` for counters, `_seconds` and `_bytes`).
#include "metrics/metrics.h"

#include <exception>

#include <prometheus/exposer.h>

namespace bidmesh {

namespace {

using prometheus::BuildCounter;
using prometheus::BuildGauge;
using prometheus::BuildHistogram;
using prometheus::Histogram;

// A request that the exposer's one worker has not read by then is dropped, so a client that
// opens a connection and sends nothing cannot hold the endpoint.
constexpr const char* kRequestTimeoutMs = "5000";

prometheus::Counter& counter(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return BuildCounter().Name(name).Help(help).Register(r).Add({});
}

prometheus::Gauge& gauge(prometheus::Registry& r, const std::string& name, const std::string& help) {
  return BuildGauge().Name(name).Help(help).Register(r).Add({});
}

prometheus::Histogram& histogram(prometheus::Registry& r, const std::string& name, const std::string& help,
                                 const Histogram::BucketBoundaries& buckets) {
  return BuildHistogram().Name(name).Help(help).Register(r).Add({}, buckets);
}

// 50 us to 1 s: a batch's apply and its fdatasync (tens of us on tmpfs, ms on disks).
const Histogram::BucketBoundaries kFastSeconds{0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
                                               0.01,    0.025,  0.05,    0.1,    0.25,  0.5,   1};
// 1 ms to 5 s: a checkpoint is one synced LMDB commit of everything since the last one.
const Histogram::BucketBoundaries kCheckpointSeconds{0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                                     0.1,   0.25,   0.5,   1,    2.5,   5};
// Powers of two up to batch_max's bound (4096).
const Histogram::BucketBoundaries kBatchSizes{1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096};

}  // namespace

MetricsRegistry::MetricsRegistry() : registry_(std::make_shared<prometheus::Registry>()) {}

MetricsRegistry::~MetricsRegistry() = default;

std::optional<std::string> MetricsRegistry::serve(const std::string& address) {
  try {
    exposer_ = std::make_unique<prometheus::Exposer>(std::vector<std::string>{
        "listening_ports", address, "num_threads", "1", "request_timeout_ms", kRequestTimeoutMs});
  } catch (const std::exception& e) {
    return "cannot serve metrics on " + address + ": " + e.what();
  }
  exposer_->RegisterCollectable(registry_);
  return std::nullopt;
}

int MetricsRegistry::port() const {
  if (!exposer_) return 0;
  const auto ports = exposer_->GetListeningPorts();
  return ports.empty() ? 0 : ports.front();
}

RequestCounters::RequestCounters(prometheus::Registry& registry, const std::string& name, const std::string& help,
                                 bool with_answered) {
  auto& family = BuildCounter().Name(name).Help(help).Register(registry);
  for (std::size_t o = 0; o <= kOpCount; ++o) {
    const std::string op = o < kOpCount ? std::string(op_name(static_cast<Op>(o))) : "none";
    children_[o][0] = &family.Add({{"op", op}, {"outcome", "ok"}});
    for (std::size_t e = 0; e < kErrorCodeCount; ++e)
      children_[o][1 + e] =
          &family.Add({{"op", op}, {"outcome", std::string(error_code_name(static_cast<ErrorCode>(e)))}});
    if (with_answered) children_[o][1 + kErrorCodeCount] = &family.Add({{"op", op}, {"outcome", "answered"}});
  }
}

RouterMetrics::RouterMetrics(prometheus::Registry& r)
    : requests(r, "bidmesh_router_requests_total",
               "Client requests by op and outcome: the router's own answer (an error code, or ok for ping), "
               "or answered when the owner's reply was passed on",
               true),
      in_flight(gauge(r, "bidmesh_router_requests_in_flight", "Requests forwarded to a bid node and not yet answered")),
      timeouts(counter(r, "bidmesh_router_request_timeouts_total",
                       "Requests answered unavailable because the owner did not answer within request_timeout_ms")),
      client_connections(gauge(r, "bidmesh_router_client_connections", "Open client connections")) {}

FeedMetrics::FeedMetrics(prometheus::Registry& r)
    : events(counter(r, "bidmesh_feed_events_total", "Events the feed forwarder took from the bid nodes")),
      subscribers(gauge(r, "bidmesh_feed_subscribers", "Open subscriber connections to the feed")),
      refused_subscriptions(counter(r, "bidmesh_feed_refused_subscriptions_total",
                                    "Feed subscriptions refused: a bidder/ topic that is not the key's own")) {}

BidNodeMetrics::BidNodeMetrics(prometheus::Registry& r)
    : requests(r, "bidmesh_node_requests_total", "Requests by op and outcome (ok or the error code)", false),
      batch_size(histogram(r, "bidmesh_node_batch_requests", "Requests per batch (one log write and sync)",
                           kBatchSizes)),
      apply_seconds(histogram(r, "bidmesh_node_apply_seconds",
                              "Time to apply a batch, with its log write and sync", kFastSeconds)),
      log_sync_seconds(histogram(r, "bidmesh_node_log_sync_seconds", "Time of a batch's log fdatasync",
                                 kFastSeconds)),
      checkpoint_seconds(histogram(r, "bidmesh_node_checkpoint_seconds", "Time of a checkpoint (synced LMDB commit)",
                                   kCheckpointSeconds)),
      log_written_bytes(counter(r, "bidmesh_node_log_written_bytes_total", "Bytes appended to the write-ahead log")),
      log_bytes(gauge(r, "bidmesh_node_log_bytes", "Bytes of write-ahead log past the last checkpoint")),
      log_segments(gauge(r, "bidmesh_node_log_segments", "Write-ahead log segment files on disk")),
      store_used_bytes(gauge(r, "bidmesh_node_store_used_bytes", "Bytes of the LMDB map in use")),
      store_size_bytes(gauge(r, "bidmesh_node_store_size_bytes", "Size of the LMDB map (map_size_mb)")),
      items_open(gauge(r, "bidmesh_node_items_open", "Items open for bids")),
      auto_closes(counter(r, "bidmesh_node_auto_closes_total", "Items closed at their closes_at by the node")),
      idempotency_records(gauge(r, "bidmesh_node_idempotency_records", "Remembered replies of writes (by item and id)")),
      events_published(counter(r, "bidmesh_node_events_published_total", "Feed events this node published")) {}

SupervisorMetrics::SupervisorMetrics(prometheus::Registry& r, std::vector<std::string> states)
    : states_(std::move(states)),
      state_(BuildGauge()
                 .Name("bidmesh_supervisor_node_state")
                 .Help("1 for the state the node is in, 0 for the others")
                 .Register(r)),
      restarts_(BuildCounter()
                    .Name("bidmesh_supervisor_node_restarts_total")
                    .Help("Restarts of the node by the supervisor (after a crash or a hang)")
                    .Register(r)),
      exit_code_(BuildGauge()
                     .Name("bidmesh_supervisor_node_last_exit_code")
                     .Help("Exit code of the node's last process (0 when it was killed by a signal)")
                     .Register(r)),
      exit_signal_(BuildGauge()
                       .Name("bidmesh_supervisor_node_last_exit_signal")
                       .Help("Signal that ended the node's last process (0 when it exited)")
                       .Register(r)) {}

void SupervisorMetrics::add_node(const std::string& node) {
  if (nodes_.count(node)) return;
  Node n;
  for (const std::string& s : states_) n.state.push_back(&state_.Add({{"node", node}, {"state", s}}));
  n.restarts = &restarts_.Add({{"node", node}});
  n.exit_code = &exit_code_.Add({{"node", node}});
  n.exit_signal = &exit_signal_.Add({{"node", node}});
  nodes_.emplace(node, std::move(n));
}

void SupervisorMetrics::remove_node(const std::string& node) {
  const auto it = nodes_.find(node);
  if (it == nodes_.end()) return;
  for (prometheus::Gauge* g : it->second.state) state_.Remove(g);
  restarts_.Remove(it->second.restarts);
  exit_code_.Remove(it->second.exit_code);
  exit_signal_.Remove(it->second.exit_signal);
  nodes_.erase(it);
}

void SupervisorMetrics::set_state(const std::string& node, std::string_view state) {
  const auto it = nodes_.find(node);
  if (it == nodes_.end()) return;
  for (std::size_t i = 0; i < states_.size(); ++i) it->second.state[i]->Set(states_[i] == state ? 1 : 0);
}

void SupervisorMetrics::count_restart(const std::string& node) {
  if (const auto it = nodes_.find(node); it != nodes_.end()) it->second.restarts->Increment();
}

void SupervisorMetrics::set_last_exit(const std::string& node, int code, int signal) {
  if (const auto it = nodes_.find(node); it != nodes_.end()) {
    it->second.exit_code->Set(code);
    it->second.exit_signal->Set(signal);
  }
}

}  // namespace bidmesh
