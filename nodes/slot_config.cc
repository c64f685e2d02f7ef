// The mesh config after a slot range moves: see slot_config.h.
#include "nodes/slot_config.h"

#include <algorithm>

#include <toml++/toml.h>

namespace bidmesh::slot_move {

namespace {

// The byte offset of a toml++ source position (1-based line and column, columns in code points).
std::size_t byte_offset(std::string_view text, const toml::source_position& pos) {
  std::size_t at = 0;
  for (uint32_t line = 1; line < pos.line; ++line) at = text.find('\n', at) + 1;
  for (uint32_t col = 1; col < pos.column; ++col) {
    ++at;
    while (at < text.size() && (static_cast<unsigned char>(text[at]) & 0xc0) == 0x80) ++at;  // UTF-8 continuation
  }
  return at;
}

std::string slots_value(const std::vector<SlotRange>& ranges) {
  std::string out = "[";
  for (std::size_t i = 0; i < ranges.size(); ++i) {
    if (i > 0) out += ", ";
    out += "\"" + std::to_string(ranges[i].first) + "-" + std::to_string(ranges[i].last) + "\"";
  }
  return out + "]";
}

bool same(const std::vector<SlotRange>& a, const std::vector<SlotRange>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(),
                    [](const SlotRange& x, const SlotRange& y) { return x.first == y.first && x.last == y.last; });
}

}  // namespace

std::vector<SlotRange> normalize_ranges(std::vector<SlotRange> ranges) {
  std::sort(ranges.begin(), ranges.end(), [](const SlotRange& a, const SlotRange& b) { return a.first < b.first; });
  std::vector<SlotRange> out;
  for (const SlotRange& r : ranges) {
    if (!out.empty() && r.first <= out.back().last + 1) out.back().last = std::max(out.back().last, r.last);
    else out.push_back(r);
  }
  return out;
}

std::vector<SlotRange> slots_without(const MeshConfig& cfg, std::string_view from, SlotRange range) {
  auto fail = [&](const std::string& why) { throw ConfigError(cfg.file.string() + ": " + why); };
  const std::string what = "slots " + std::to_string(range.first) + "-" + std::to_string(range.last);
  const NodeConfig* src = cfg.find(from);
  if (src == nullptr || src->kind != NodeKind::bid) fail("no bid node named '" + std::string(from) + "'");
  const std::vector<SlotRange> src_slots = normalize_ranges(src->slots);
  const bool owned = std::any_of(src_slots.begin(), src_slots.end(),
                                 [&](const SlotRange& r) { return r.first <= range.first && range.last <= r.last; });
  if (!owned) fail(what + " are not all owned by node '" + src->name + "' (it owns " + slots_value(src_slots) + ")");
  std::vector<SlotRange> rest;
  for (const SlotRange& r : src_slots) {
    if (r.last < range.first || r.first > range.last) {
      rest.push_back(r);
      continue;
    }
    if (r.first < range.first) rest.push_back({r.first, range.first - 1});
    if (r.last > range.last) rest.push_back({range.last + 1, r.last});
  }
  if (rest.empty())
    fail(what + " are every slot of node '" + src->name + "', which would own none: remove it from the file by hand");
  return rest;
}

std::string move_range_in_config(std::string_view text, const std::filesystem::path& file, std::string_view from,
                                 std::string_view to, SlotRange range) {
  const MeshConfig cfg = parse_mesh_config(text, file);
  auto fail = [&](const std::string& why) { throw ConfigError(file.string() + ": " + why); };
  const std::vector<SlotRange> new_src = slots_without(cfg, from, range);
  const NodeConfig* src = cfg.find(from);
  const NodeConfig* dst = cfg.find(to);
  if (dst == nullptr || dst->kind != NodeKind::bid) fail("no bid node named '" + std::string(to) + "'");
  if (src == dst) fail("the source and the destination are the same node '" + std::string(from) + "'");
  std::vector<SlotRange> new_dst = dst->slots;
  new_dst.push_back(range);
  new_dst = normalize_ranges(std::move(new_dst));

  // Where the two `slots` values are in the text (the loader above accepted it, so this parses).
  const toml::table root = toml::parse(text, file.string());
  struct Edit {
    std::size_t begin, end;
    std::string with;
  };
  std::vector<Edit> edits;
  if (const toml::array* nodes = root["node"].as_array()) {
    for (const toml::node& n : *nodes) {
      const toml::table* t = n.as_table();
      const std::optional<std::string_view> name = t ? (*t)["name"].value<std::string_view>() : std::nullopt;
      const toml::node* slots = t ? t->get("slots") : nullptr;
      if (!name || slots == nullptr || (*name != from && *name != to)) continue;
      const toml::source_region& at = slots->source();
      edits.push_back({byte_offset(text, at.begin), byte_offset(text, at.end), slots_value(*name == from ? new_src : new_dst)});
    }
  }
  if (edits.size() != 2) fail("cannot find the slots of '" + src->name + "' and '" + dst->name + "' in the text");
  std::sort(edits.begin(), edits.end(), [](const Edit& a, const Edit& b) { return a.begin > b.begin; });
  std::string out(text);
  for (const Edit& e : edits) out.replace(e.begin, e.end - e.begin, e.with);

  const MeshConfig moved = parse_mesh_config(out, file);  // every slot owned exactly once
  if (!same(normalize_ranges(moved.find(from)->slots), new_src) || !same(normalize_ranges(moved.find(to)->slots), new_dst))
    fail("the rewritten slots did not load as intended (a bug): file left unchanged");
  return out;
}

}  // namespace bidmesh::slot_move
