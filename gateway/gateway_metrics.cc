#include "gateway/gateway_metrics.h"

#include <algorithm>

namespace bidmesh::gateway {

namespace {
prometheus::Counter& counter(prometheus::Registry& r, const std::string& name, const std::string& help,
                             const std::map<std::string, std::string>& labels = {}) {
  return prometheus::BuildCounter().Name(name).Help(help).Register(r).Add(labels);
}
}  // namespace

GatewayMetrics::GatewayMetrics(prometheus::Registry& r)
    : connections_family(prometheus::BuildGauge()
                             .Name("bidmesh_gateway_connections")
                             .Help("Open connections of the web gateway, by kind")
                             .Register(r)),
      signins_family(prometheus::BuildCounter().Name("bidmesh_gateway_signins_total").Help("Sign-ins by outcome").Register(r)),
      bids_family(prometheus::BuildCounter()
                      .Name("bidmesh_gateway_bids_total")
                      .Help("Bids sent for signed-in users, by outcome")
                      .Register(r)),
      http_connections(connections_family.Add({{"kind", "http"}})),
      ws_connections(connections_family.Add({{"kind", "websocket"}})),
      refused_connections(counter(r, "bidmesh_gateway_connections_refused_total",
                                  "Connections answered 503 because max_connections were open")),
      ws_messages(counter(r, "bidmesh_gateway_ws_messages_sent_total", "WebSocket messages written to browsers")),
      resyncs(counter(r, "bidmesh_gateway_ws_resyncs_total",
                      "Send queues dropped for a slow reader (the client got a resync message)")),
      signins_ok(signins_family.Add({{"outcome", "ok"}})),
      signins_refused(signins_family.Add({{"outcome", "refused"}})),
      signins_limited(signins_family.Add({{"outcome", "rate_limited"}})),
      bids_ok(bids_family.Add({{"outcome", "accepted"}})),
      bids_refused(bids_family.Add({{"outcome", "refused"}})),
      bids_failed(bids_family.Add({{"outcome", "failed"}})),
      feed_events(counter(r, "bidmesh_gateway_feed_events_total", "Item events read from the feed (and its repairs)")),
      delivery_bounds{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0},
      delivery_seconds(prometheus::BuildHistogram()
                           .Name("bidmesh_gateway_delivery_seconds")
                           .Help("From the gateway reading an event off the feed to its WebSocket write completing")
                           .Register(r)
                           .Add({}, delivery_bounds)) {}

void GatewayMetrics::observe_deliveries(std::chrono::steady_clock::time_point now,
                                        const std::vector<std::chrono::steady_clock::time_point>& received) {
  if (received.empty()) return;
  delivery_counts_.assign(delivery_bounds.size() + 1, 0.0);  // the last: +Inf
  double sum = 0;
  for (const auto& r : received) {
    const double s = std::chrono::duration<double>(now - r).count();
    sum += s;
    // The bucket prometheus-cpp's Observe picks: the first bound not below the value.
    const auto bucket = std::lower_bound(delivery_bounds.begin(), delivery_bounds.end(), s) - delivery_bounds.begin();
    delivery_counts_[static_cast<std::size_t>(bucket)] += 1;
  }
  delivery_seconds.ObserveMultiple(delivery_counts_, sum);
}

}  // namespace bidmesh::gateway
