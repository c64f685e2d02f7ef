// LatencyHistogram: log-linear buckets (see bench_histogram.h).
//
// Layout (S = kSubBits): a value v < 2^S has bucket v. A larger v, whose highest set bit is m,
// keeps its S+1 leading bits: shift = m - S, mantissa = v >> shift in [2^S, 2^(S+1)), and the
// bucket is 2^S + shift * 2^S + (mantissa - 2^S). The bucket covers [mantissa << shift,
// ((mantissa + 1) << shift) - 1].
#include "bench/histogram.h"

#include <algorithm>
#include <bit>
#include <cmath>

namespace bidmesh {

std::size_t LatencyHistogram::bucket_of(uint64_t v) {
  if (v < kSub) return static_cast<std::size_t>(v);
  const int m = 63 - std::countl_zero(v);      // >= kSubBits
  const int shift = m - kSubBits;              // 0 .. 63 - kSubBits
  const uint64_t mantissa = v >> shift;        // [kSub, 2 kSub)
  return static_cast<std::size_t>(kSub + static_cast<uint64_t>(shift) * kSub + (mantissa - kSub));
}

uint64_t LatencyHistogram::bucket_low(std::size_t b) {
  if (b < kSub) return b;
  const uint64_t shift = (b - kSub) / kSub;
  const uint64_t mantissa = kSub + (b - kSub) % kSub;
  return mantissa << shift;
}

uint64_t LatencyHistogram::bucket_high(std::size_t b) {
  if (b < kSub) return b;
  const uint64_t shift = (b - kSub) / kSub;
  const uint64_t low = bucket_low(b);
  const uint64_t width = uint64_t{1} << shift;
  return low + (width - 1);  // cannot overflow: the top bucket ends at UINT64_MAX
}

void LatencyHistogram::record(uint64_t value, uint64_t count) {
  if (count == 0) return;
  counts_[bucket_of(value)] += count;
  total_ += count;
  min_ = std::min(min_, value);
  max_ = std::max(max_, value);
  sum_ += static_cast<long double>(value) * static_cast<long double>(count);
}

void LatencyHistogram::merge(const LatencyHistogram& o) {
  for (std::size_t i = 0; i < kBuckets; ++i) counts_[i] += o.counts_[i];
  total_ += o.total_;
  min_ = std::min(min_, o.min_);
  max_ = std::max(max_, o.max_);
  sum_ += o.sum_;
}

void LatencyHistogram::reset() {
  std::fill(counts_.begin(), counts_.end(), 0);
  total_ = 0;
  min_ = UINT64_MAX;
  max_ = 0;
  sum_ = 0;
}

uint64_t LatencyHistogram::percentile(double q) const {
  if (total_ == 0) return 0;
  q = std::clamp(q, 0.0, 1.0);
  // The rank of the value wanted, 1-based: at least 1, at most total.
  uint64_t rank = static_cast<uint64_t>(std::ceil(q * static_cast<double>(total_)));
  rank = std::clamp<uint64_t>(rank, 1, total_);
  if (rank == 1) return min_;  // the extremes are known exactly
  if (rank == total_) return max_;
  uint64_t seen = 0;
  for (std::size_t i = 0; i < kBuckets; ++i) {
    seen += counts_[i];
    if (seen >= rank) return std::clamp(bucket_high(i), min_, max_);
  }
  return max_;
}

}  // namespace bidmesh
