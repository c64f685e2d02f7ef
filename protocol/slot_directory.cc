#include "protocol/slot_directory.h"

#include <algorithm>

#include <msgpack.hpp>

#include "protocol/messages.h"

namespace bidmesh {

namespace {
using Packer = msgpack::packer<msgpack::sbuffer>;
void pack_text(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}
}  // namespace

SlotDirectory::SlotDirectory(const MeshConfig& cfg) : map_(cfg.slot_map()), digest_hex_(cfg.digest_hex()) {
  struct Entry {
    SlotRange range;
    std::size_t node;
  };
  std::vector<Entry> entries;
  for (const NodeConfig* n : cfg.bid_nodes()) {
    for (const SlotRange& r : n->slots) entries.push_back({r, nodes_.size()});
    nodes_.push_back({n->name, n->client_listen});
  }
  std::sort(entries.begin(), entries.end(), [](const Entry& a, const Entry& b) { return a.range.first < b.range.first; });
  msgpack::sbuffer buf(64 * entries.size() + 8);
  Packer pk(buf);
  pk.pack_array(static_cast<uint32_t>(entries.size()));
  for (const Entry& e : entries) {
    pk.pack_map(4);
    pack_text(pk, "first");
    pk.pack_uint32(e.range.first);
    pack_text(pk, "last");
    pk.pack_uint32(e.range.last);
    pack_text(pk, "node");
    pack_text(pk, nodes_[e.node].name);
    pack_text(pk, "endpoint");
    if (nodes_[e.node].endpoint.empty()) pk.pack_nil();
    else pack_text(pk, nodes_[e.node].endpoint);
  }
  slots_array_.assign(buf.data(), buf.size());
}

std::size_t SlotDirectory::index_of(std::string_view name) const {
  for (std::size_t i = 0; i < nodes_.size(); ++i)
    if (nodes_[i].name == name) return i;
  return nodes_.size();
}

std::string SlotDirectory::slots_reply(std::string_view id) const {
  msgpack::sbuffer buf(64 + slots_array_.size());
  Packer pk(buf);
  pk.pack_map(4);
  pack_text(pk, "ok");
  pk.pack_true();
  pack_text(pk, "id");
  pack_text(pk, id);
  pack_text(pk, "digest");
  pack_text(pk, digest_hex_);
  pack_text(pk, "slots");
  buf.write(slots_array_.data(), slots_array_.size());  // already one complete array
  return std::string(buf.data(), buf.size());
}

std::string SlotDirectory::moved_reply(std::string_view id, std::string_view item, std::size_t owner) const {
  const Node& n = nodes_[owner];
  return encode_error(std::string(id), ErrorCode::moved,
                      "item " + std::string(item) + " is in slot " + std::to_string(slot_of(item)) +
                          ", owned by bid node " + n.name + (n.endpoint.empty() ? " (no client endpoint: use the router)" : " at " + n.endpoint),
                      {{"node", n.name}, {"endpoint", n.endpoint.empty() ? Value{Nil{}} : Value{n.endpoint}}});
}

}  // namespace bidmesh
