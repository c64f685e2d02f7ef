// The node-to-supervisor message (protocol/control.h): a MessagePack map of three keys,
//   {"type": <str>, "name": <str>, "pid": <non-negative int>}, then "note": <str> when there is a
// note and "stats": <map> (NodeStats) when the node sends them; written in that order; readers
// take the keys in any order and ignore others.
#include "protocol/control.h"

#include <algorithm>
#include <utility>

#include <msgpack.hpp>

#include "protocol/msgpack_map.h"

namespace bidmesh {

namespace {

// A map of a few keys and the stats map with two arrays: anything wider or deeper is refused
// before msgpack allocates for it (msgpack-c issue 1013).
const msgpack::unpack_limit kNodeMessageLimits(/*array=*/kMaxStatsBuckets, /*map=*/16, /*str=*/kMaxNodeMessageBytes,
                                               /*bin=*/0, /*ext=*/0, /*depth=*/4);

void pack_stats(msgpack::packer<msgpack::sbuffer>& pk, const NodeStats& st) {
  pk.pack_map(5 + (st.log_bytes ? 1 : 0) + (st.store_used ? 1 : 0) + (st.store_size ? 1 : 0));
  pk.pack("at");
  pk.pack(st.at_ms);
  pk.pack("bids");
  pk.pack(st.bids);
  pk.pack("refusals");
  pk.pack(st.refusals);
  const std::size_t n = std::min(st.commit_bounds.size(), kMaxStatsBuckets - 1);
  pk.pack("commit_bounds");
  pk.pack_array(static_cast<uint32_t>(n));
  for (std::size_t i = 0; i < n; ++i) pk.pack(st.commit_bounds[i]);
  pk.pack("commit_counts");
  const std::size_t m = st.commit_counts.size() == st.commit_bounds.size() + 1 ? n + 1 : 0;
  pk.pack_array(static_cast<uint32_t>(m));
  for (std::size_t i = 0; i < m; ++i) pk.pack(i == n ? st.commit_counts.back() : st.commit_counts[i]);
  for (const auto& [key, value] : {std::pair{"log_bytes", st.log_bytes}, std::pair{"store_used", st.store_used},
                                   std::pair{"store_size", st.store_size}}) {
    if (!value) continue;
    pk.pack(key);
    pk.pack(*value);
  }
}

std::optional<uint64_t> uint_field(const msgpack::object& map, std::string_view key, bool& bad) {
  const msgpack::object* v = map_field(map, key);
  if (v == nullptr) return std::nullopt;
  if (v->type != msgpack::type::POSITIVE_INTEGER) {
    bad = true;
    return std::nullopt;
  }
  return v->via.u64;
}

// The stats map, or nullopt when any field is of the wrong type or the arrays disagree.
std::optional<NodeStats> unpack_stats(const msgpack::object& map) {
  if (map.type != msgpack::type::MAP) return std::nullopt;
  bool bad = false;
  NodeStats st;
  st.at_ms = uint_field(map, "at", bad).value_or(0);
  st.bids = uint_field(map, "bids", bad).value_or(0);
  st.refusals = uint_field(map, "refusals", bad).value_or(0);
  st.log_bytes = uint_field(map, "log_bytes", bad);
  st.store_used = uint_field(map, "store_used", bad);
  st.store_size = uint_field(map, "store_size", bad);
  const msgpack::object* bounds = map_field(map, "commit_bounds");
  const msgpack::object* counts = map_field(map, "commit_counts");
  if (bounds != nullptr && counts != nullptr) {
    if (bounds->type != msgpack::type::ARRAY || counts->type != msgpack::type::ARRAY) return std::nullopt;
    for (const msgpack::object& b : bounds->via.array) {
      // A whole number of seconds (the 1 s bound) may travel as an integer.
      if (b.type == msgpack::type::POSITIVE_INTEGER) {
        st.commit_bounds.push_back(static_cast<double>(b.via.u64));
        continue;
      }
      if (b.type != msgpack::type::FLOAT64 && b.type != msgpack::type::FLOAT32) return std::nullopt;
      st.commit_bounds.push_back(b.via.f64);
    }
    for (const msgpack::object& c : counts->via.array) {
      if (c.type != msgpack::type::POSITIVE_INTEGER) return std::nullopt;
      st.commit_counts.push_back(c.via.u64);
    }
    if (!st.commit_counts.empty() && st.commit_counts.size() != st.commit_bounds.size() + 1) return std::nullopt;
  }
  if (bad) return std::nullopt;
  return st;
}

}  // namespace

std::string encode_node_message(const NodeMessage& m) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(3 + (m.note.empty() ? 0 : 1) + (m.stats ? 1 : 0));
  pk.pack("type");
  pk.pack(m.type);
  pk.pack("name");
  pk.pack(m.name);
  pk.pack("pid");
  pk.pack(m.pid);
  if (!m.note.empty()) {
    pk.pack("note");
    pk.pack(std::string_view(m.note).substr(0, kMaxNodeNoteBytes));
  }
  if (m.stats) {
    pk.pack("stats");
    pack_stats(pk, *m.stats);
  }
  return {buf.data(), buf.size()};
}

std::optional<NodeMessage> decode_node_message(std::string_view frame) {
  if (frame.empty() || frame.size() > kMaxNodeMessageBytes) return std::nullopt;
  try {
    std::size_t off = 0;
    const msgpack::object_handle oh =
        msgpack::unpack(frame.data(), frame.size(), off, nullptr, nullptr, kNodeMessageLimits);
    if (off != frame.size()) return std::nullopt;
    const msgpack::object& map = oh.get();
    if (map.type != msgpack::type::MAP) return std::nullopt;
    const msgpack::object* type = map_str_field(map, "type");
    const msgpack::object* name = map_str_field(map, "name");
    const msgpack::object* pid = map_field(map, "pid");
    if (type == nullptr || name == nullptr || pid == nullptr || pid->type != msgpack::type::POSITIVE_INTEGER) {
      return std::nullopt;
    }
    const msgpack::object* note = map_field(map, "note");
    if (note != nullptr && note->type != msgpack::type::STR) return std::nullopt;
    std::optional<NodeStats> stats;
    // Stats that do not read are dropped, not the heartbeat: a node is never taken for hung
    // over what it tells `top`.
    if (const msgpack::object* s = map_field(map, "stats")) stats = unpack_stats(*s);
    return NodeMessage{std::string(type->via.str.ptr, type->via.str.size),
                       std::string(name->via.str.ptr, name->via.str.size), pid->via.u64,
                       note ? std::string(note->via.str.ptr, note->via.str.size) : std::string(), std::move(stats)};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace bidmesh
