// Snapshots of a process's metric set for `bidmesh-ctl top` (protocol/control.h, NodeStats):
// the same counters Prometheus scrapes, read with Counter::Value(), Gauge::Value() and
// Histogram::Collect(), so top and Prometheus never disagree.
//
// Cost: about 150 atomic loads and one histogram lock per snapshot; a node takes one per
// heartbeat (every heartbeat_interval_ms), never per request.
// Thread-safety: as the metrics: safe from any thread while others count.
#pragma once

#include "metrics/metrics.h"
#include "protocol/control.h"

namespace bidmesh {

// Bids: bid requests by any outcome; refusals: every error outcome; commit: apply_seconds
// (a batch's apply with its log write and sync); log and store from the gauges.
NodeStats node_stats(BidNodeMetrics& m);
// Bids: bid requests (answered by an owner or by the router); refusals: the router's own error
// answers (unavailable, timeouts, bad requests...). No commit histogram, no store.
NodeStats node_stats(RouterMetrics& m);

}  // namespace bidmesh
