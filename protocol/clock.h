// The clocks the mesh and its tools share.
// Thread-safe: pure functions.
#pragma once

#include <chrono>
#include <cstdint>

namespace bidmesh {

// Wall-clock time in unix milliseconds: the unit of `closes_at` and of an event's `ts` (the wire
// contract, docs/protocol.md).
inline uint64_t unix_now_ms() {
  return static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch())
          .count());
}

// A monotonic clock in nanoseconds, for measuring intervals (never goes back). It is
// std::chrono::steady_clock, i.e. CLOCK_MONOTONIC on Linux: timerfd deadlines may be set from it.
inline int64_t monotonic_ns() {
  return static_cast<int64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now().time_since_epoch())
          .count());
}

}  // namespace bidmesh
