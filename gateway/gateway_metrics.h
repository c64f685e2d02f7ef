// GatewayMetrics: the web gateway's Prometheus metrics (docs/operations.md, docs/web.md), built
// once on the process's registry (metrics/metrics.h) so the serving thread holds plain references.
// Thread-safety: prometheus-cpp metrics are thread-safe; observe_deliveries is for one thread
// (the gateway's io thread), as it reuses a scratch vector.
#pragma once

#include <chrono>
#include <vector>

#include <prometheus/counter.h>
#include <prometheus/family.h>
#include <prometheus/gauge.h>
#include <prometheus/histogram.h>
#include <prometheus/registry.h>

namespace bidmesh::gateway {

struct GatewayMetrics {
  explicit GatewayMetrics(prometheus::Registry& registry);
  // Families with several children, made once (declared first: built before the children).
  prometheus::Family<prometheus::Gauge>& connections_family;
  prometheus::Family<prometheus::Counter>& signins_family;
  prometheus::Family<prometheus::Counter>& bids_family;
  prometheus::Gauge& http_connections;       // bidmesh_gateway_connections{kind="http"}
  prometheus::Gauge& ws_connections;         // bidmesh_gateway_connections{kind="websocket"}
  prometheus::Counter& refused_connections;  // bidmesh_gateway_connections_refused_total (the cap)
  prometheus::Counter& ws_messages;          // bidmesh_gateway_ws_messages_sent_total
  prometheus::Counter& resyncs;              // bidmesh_gateway_ws_resyncs_total (queue dropped)
  prometheus::Counter& signins_ok;           // bidmesh_gateway_signins_total{outcome="ok"}
  prometheus::Counter& signins_refused;      // {outcome="refused"}
  prometheus::Counter& signins_limited;      // {outcome="rate_limited"}
  prometheus::Counter& bids_ok;              // bidmesh_gateway_bids_total{outcome="accepted"}
  prometheus::Counter& bids_refused;         // {outcome="refused"}: the mesh said no
  prometheus::Counter& bids_failed;          // {outcome="failed"}: no answer, busy
  prometheus::Counter& feed_events;          // bidmesh_gateway_feed_events_total
  const prometheus::Histogram::BucketBoundaries delivery_bounds;  // declared first: built before the histogram
  prometheus::Histogram& delivery_seconds;   // bidmesh_gateway_delivery_seconds: feed read -> socket written

  // Observes delivery_seconds for each of `received` (now - received) in one update: a write
  // carries many events, and one histogram lock per event cost ~7% of the gateway's CPU (perf).
  void observe_deliveries(std::chrono::steady_clock::time_point now,
                          const std::vector<std::chrono::steady_clock::time_point>& received);

 private:
  std::vector<double> delivery_counts_;  // scratch for observe_deliveries
};

}  // namespace bidmesh::gateway
