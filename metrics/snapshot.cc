#include "metrics/snapshot.h"

#include <ctime>
#include <limits>

namespace bidmesh {

namespace {

uint64_t monotonic_ms() {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000 + static_cast<uint64_t>(ts.tv_nsec) / 1000000;
}

uint64_t value(prometheus::Counter& c) { return static_cast<uint64_t>(c.Value()); }

std::optional<Op> op_at(std::size_t i) {
  return i < kOpCount ? std::optional<Op>(static_cast<Op>(i)) : std::nullopt;
}

// Every error outcome of every op (and of requests whose op was not read).
uint64_t refusals(RequestCounters& r) {
  uint64_t n = 0;
  for (std::size_t op = 0; op <= kOpCount; ++op) {
    for (std::size_t code = 0; code < kErrorCodeCount; ++code) n += value(r.error(op_at(op), static_cast<ErrorCode>(code)));
  }
  return n;
}

uint64_t errors_of(RequestCounters& r, Op op) {
  uint64_t n = 0;
  for (std::size_t code = 0; code < kErrorCodeCount; ++code) n += value(r.error(op, static_cast<ErrorCode>(code)));
  return n;
}

}  // namespace

NodeStats node_stats(BidNodeMetrics& m) {
  NodeStats st;
  st.at_ms = monotonic_ms();
  st.bids = value(m.requests.ok(Op::bid)) + errors_of(m.requests, Op::bid);
  st.refusals = refusals(m.requests);
  // prometheus-cpp's buckets are cumulative, the last one +Inf.
  const prometheus::ClientMetric commit = m.apply_seconds.Collect();
  for (const prometheus::ClientMetric::Bucket& b : commit.histogram.bucket) {
    if (b.upper_bound != std::numeric_limits<double>::infinity()) st.commit_bounds.push_back(b.upper_bound);
    st.commit_counts.push_back(b.cumulative_count);
  }
  st.log_bytes = static_cast<uint64_t>(m.log_bytes.Value());
  st.store_used = static_cast<uint64_t>(m.store_used_bytes.Value());
  st.store_size = static_cast<uint64_t>(m.store_size_bytes.Value());
  return st;
}

NodeStats node_stats(RouterMetrics& m) {
  NodeStats st;
  st.at_ms = monotonic_ms();
  st.bids = value(m.requests.ok(Op::bid)) + value(m.requests.answered(Op::bid)) + errors_of(m.requests, Op::bid);
  st.refusals = refusals(m.requests);
  return st;
}

}  // namespace bidmesh
