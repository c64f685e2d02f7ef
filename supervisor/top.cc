#include "supervisor/top.h"

#include <algorithm>
#include <cstdio>
#include "protocol/json.h"
#include "protocol/log.h"

namespace bidmesh {

namespace {

std::optional<double> rate(uint64_t before, uint64_t now, uint64_t ms) {
  if (ms == 0 || now < before) return std::nullopt;
  return static_cast<double>(now - before) * 1000.0 / static_cast<double>(ms);
}

std::optional<uint64_t> known(int64_t v) {
  return v < 0 ? std::nullopt : std::optional<uint64_t>(static_cast<uint64_t>(v));
}

std::string fixed(const std::optional<double>& v, int decimals) {
  if (!v) return "-";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, *v);
  return buf;
}

// 1536 -> "1.5K"; bytes in powers of 1024.
std::string bytes(const std::optional<uint64_t>& v) {
  if (!v) return "-";
  const char* units[] = {"B", "K", "M", "G", "T"};
  double x = static_cast<double>(*v);
  int u = 0;
  while (x >= 1024 && u < 4) {
    x /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, u == 0 ? "%.0f%s" : "%.1f%s", x, units[u]);
  return buf;
}

std::string json_number(const std::optional<double>& v) {
  if (!v) return "null";
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3f", *v);
  return buf;
}

std::string json_number(const std::optional<uint64_t>& v) { return v ? std::to_string(*v) : "null"; }

}  // namespace

std::optional<double> quantile_between(double q, const std::vector<double>& bounds, const std::vector<uint64_t>& before,
                                       const std::vector<uint64_t>& now) {
  if (bounds.empty() || now.size() != bounds.size() + 1 || before.size() != now.size()) return std::nullopt;
  std::vector<uint64_t> d(now.size());
  for (std::size_t i = 0; i < now.size(); ++i) {
    if (now[i] < before[i]) return std::nullopt;  // not the same process's counts
    d[i] = now[i] - before[i];
  }
  const uint64_t total = d.back();
  if (total == 0) return std::nullopt;
  const double rank = q * static_cast<double>(total);
  for (std::size_t i = 0; i < bounds.size(); ++i) {
    if (static_cast<double>(d[i]) < rank) continue;
    const double lower = i == 0 ? 0.0 : bounds[i - 1];
    const uint64_t below = i == 0 ? 0 : d[i - 1];
    const uint64_t in = d[i] - below;
    if (in == 0) return bounds[i];
    return lower + (bounds[i] - lower) * (rank - static_cast<double>(below)) / static_cast<double>(in);
  }
  return bounds.back();  // in the +Inf bucket: at least the last bound
}

std::vector<TopRow> top_rows(const std::vector<NodeStatus>& before, const std::vector<NodeStatus>& now) {
  std::vector<TopRow> rows;
  for (const NodeStatus& s : now) {
    TopRow r;
    r.name = s.name;
    r.kind = s.kind;
    r.state = s.state;
    r.pid = s.pid;
    r.restarts = s.restarts;
    if (s.stats_at_ms != 0) {
      r.log_bytes = known(s.log_bytes);
      r.store_used = known(s.store_used);
      r.store_size = known(s.store_size);
    }
    const auto prev = std::find_if(before.begin(), before.end(), [&](const NodeStatus& b) { return b.name == s.name; });
    // Rates only between two snapshots of one process: a restart starts its counts from zero.
    if (prev != before.end() && s.stats_at_ms != 0 && prev->stats_at_ms != 0 && prev->pid == s.pid &&
        s.stats_at_ms > prev->stats_at_ms) {
      const uint64_t ms = s.stats_at_ms - prev->stats_at_ms;
      r.bids_per_s = rate(prev->bids, s.bids, ms);
      r.refusals_per_s = rate(prev->refusals, s.refusals, ms);
      if (prev->commit_bounds == s.commit_bounds) {
        if (auto p99 = quantile_between(0.99, s.commit_bounds, prev->commit_counts, s.commit_counts)) {
          r.p99_commit_ms = *p99 * 1000.0;
        }
      }
    }
    rows.push_back(std::move(r));
  }
  return rows;
}

std::string top_to_json(const std::vector<TopRow>& rows, int64_t unix_ms) {
  std::string o = "{\"ts\":\"" + rfc3339_utc_ms(unix_ms) + "\",\"nodes\":[";
  for (std::size_t i = 0; i < rows.size(); ++i) {
    const TopRow& r = rows[i];
    o += (i ? ",{" : "{");
    o += "\"name\":" + json_quote(r.name) + ",\"kind\":" + json_quote(r.kind) + ",\"state\":" + json_quote(r.state);
    o += ",\"pid\":" + (r.pid ? std::to_string(r.pid) : std::string("null"));
    o += ",\"restarts\":" + std::to_string(r.restarts);
    o += ",\"bids_per_s\":" + json_number(r.bids_per_s) + ",\"refusals_per_s\":" + json_number(r.refusals_per_s);
    o += ",\"p99_commit_ms\":" + json_number(r.p99_commit_ms) + ",\"log_bytes\":" + json_number(r.log_bytes);
    o += ",\"store_used_bytes\":" + json_number(r.store_used) + ",\"store_size_bytes\":" + json_number(r.store_size) + "}";
  }
  return o + "]}";
}

std::string top_to_table(const std::vector<TopRow>& rows) {
  std::vector<std::vector<std::string>> cells;
  cells.push_back({"NAME", "KIND", "STATE", "PID", "BIDS/S", "REFUSED/S", "P99 COMMIT", "LOG", "STORE", "RESTARTS"});
  for (const TopRow& r : rows) {
    std::string store = bytes(r.store_used);
    if (r.store_used && r.store_size && *r.store_size > 0) {
      store += "/" + bytes(r.store_size) + " (" +
               fixed(100.0 * static_cast<double>(*r.store_used) / static_cast<double>(*r.store_size), 0) + "%)";
    }
    cells.push_back({r.name, r.kind, r.state, r.pid ? std::to_string(r.pid) : "-", fixed(r.bids_per_s, 1),
                     fixed(r.refusals_per_s, 1), r.p99_commit_ms ? fixed(r.p99_commit_ms, 2) + " ms" : "-",
                     bytes(r.log_bytes), store, std::to_string(r.restarts)});
  }
  return align_columns(cells);
}

std::string align_columns(const std::vector<std::vector<std::string>>& rows) {
  std::vector<std::size_t> width;
  for (const auto& row : rows) {
    width.resize(std::max(width.size(), row.size()), 0);
    for (std::size_t i = 0; i < row.size(); ++i) width[i] = std::max(width[i], row[i].size());
  }
  std::string out;
  for (const auto& row : rows) {
    for (std::size_t i = 0; i < row.size(); ++i) {
      out += row[i];
      if (i + 1 < row.size()) out += std::string(width[i] - row[i].size() + 2, ' ');
    }
    out += '\n';
  }
  return out;
}

}  // namespace bidmesh
