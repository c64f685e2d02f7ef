// LatencyHistogram: a fixed-size log-linear histogram of non-negative integers (nanoseconds in
// the bench), after HdrHistogram: values below 2^kSubBits are counted exactly; above, each power
// of two is cut into 2^kSubBits linear sub-buckets, so a recorded value is known within a
// relative error of 2^-kSubBits (0.8%) over the whole uint64 range, in 7,424 counters (58 KiB),
// with no allocation after construction. Percentiles report the highest value of the bucket
// (never below the truth), clamped to the smallest and largest values recorded.
//
// Thread-safety: NOT thread-safe; give each thread its own and merge() them at the end.
#pragma once

#include <cstdint>
#include <vector>

namespace bidmesh {

class LatencyHistogram {
 public:
  static constexpr int kSubBits = 7;
  static constexpr uint64_t kSub = uint64_t{1} << kSubBits;
  static constexpr std::size_t kBuckets = kSub + (64 - kSubBits) * kSub;

  LatencyHistogram() : counts_(kBuckets, 0) {}

  void record(uint64_t value, uint64_t count = 1);
  void merge(const LatencyHistogram& other);
  void reset();

  uint64_t count() const { return total_; }
  uint64_t min() const { return total_ ? min_ : 0; }
  uint64_t max() const { return max_; }
  double mean() const { return total_ ? static_cast<double>(sum_ / static_cast<long double>(total_)) : 0.0; }
  // The value at or below which `q` (0..1) of the recorded values lie; 0 when empty.
  uint64_t percentile(double q) const;

  // Bucket arithmetic, exposed for tests.
  static std::size_t bucket_of(uint64_t value);
  static uint64_t bucket_low(std::size_t bucket);
  static uint64_t bucket_high(std::size_t bucket);

 private:
  std::vector<uint64_t> counts_;
  uint64_t total_ = 0;
  uint64_t min_ = UINT64_MAX;
  uint64_t max_ = 0;
  long double sum_ = 0;  // for the mean only
};

}  // namespace bidmesh
