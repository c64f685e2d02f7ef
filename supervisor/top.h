// `bidmesh-ctl top`: rates and latency percentiles from two `status` samples of a supervisor
// (docs/operations.md, "Reading top"). Each node's heartbeat carries its cumulative counters
// (protocol/control.h, NodeStats, read from its metric set); a rate is the difference of two
// snapshots of one process over the difference of their own timestamps, and p99 commit comes
// from the difference of the two cumulative histograms (so it covers the last interval only,
// as Prometheus's histogram_quantile over rate() does).
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "supervisor/control_wire.h"

namespace bidmesh {

struct TopRow {
  std::string name, kind, state;
  uint64_t pid = 0;
  uint64_t restarts = 0;
  // nullopt: not known (no process, no snapshot yet, a restart between the samples, or the
  // node does not count it): shown as "-".
  std::optional<double> bids_per_s;
  std::optional<double> refusals_per_s;
  std::optional<double> p99_commit_ms;
  std::optional<uint64_t> log_bytes, store_used, store_size;
};

// One row per node of `now`, with rates against the same node in `before`.
std::vector<TopRow> top_rows(const std::vector<NodeStatus>& before, const std::vector<NodeStatus>& now);

// The q-quantile (0 < q < 1) of the observations between two cumulative histograms with the same
// finite `bounds` (counts have one more entry: +Inf), interpolated linearly inside the bucket
// like Prometheus's histogram_quantile; the last finite bound when it falls in +Inf. nullopt
// when nothing was observed in between or the shapes differ.
std::optional<double> quantile_between(double q, const std::vector<double>& bounds,
                                       const std::vector<uint64_t>& before, const std::vector<uint64_t>& now);

// One JSON object: {"ts": RFC 3339 UTC, "nodes": [{name, kind, state, pid, restarts,
// bids_per_s, refusals_per_s, p99_commit_ms, log_bytes, store_used_bytes, store_size_bytes}]},
// null for what is not known.
std::string top_to_json(const std::vector<TopRow>& rows, int64_t unix_ms);
// The table, one line per node, with a header.
std::string top_to_table(const std::vector<TopRow>& rows);
// Rows of cells as text, each column as wide as its widest cell plus two spaces.
std::string align_columns(const std::vector<std::vector<std::string>>& rows);

}  // namespace bidmesh
