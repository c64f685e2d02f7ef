// SlotDirectory: what direct clients (wire contract v1.2, docs/protocol.md "Direct clients") are
// told about the slot map: the `slots` reply and the `moved` error, made from one MeshConfig.
//
// `slots` reply: {ok: true, id, digest, slots: [{first, last, node, endpoint}, ...]}, one entry
// per configured range of each bid node, sorted by `first`, covering 0-16383 (load_mesh_config
// guarantees every slot is owned once). `endpoint` is the node's `client_listen`, or nil for a
// node without one (clients send its items through the router). `digest` is the mesh config
// digest in hex (MeshConfig::digest_hex): it covers every node's slots and client endpoint, so
// it changes whenever the map does; it also changes for other mesh-wide edits, which costs a
// client only a needless refresh.
//
// Thread-safe: immutable after construction; the encoders are const and allocate only the reply.
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/config.h"
#include "protocol/slot_map.h"

namespace bidmesh {

class SlotDirectory {
 public:
  explicit SlotDirectory(const MeshConfig& cfg);

  // Index of the bid node (MeshConfig::bid_nodes() order) that owns `item`'s slot.
  std::size_t owner_of_item(std::string_view item) const { return map_.owner_of_item(item); }
  // Index of bid node `name`, or bid_count() when there is none.
  std::size_t index_of(std::string_view name) const;
  std::size_t bid_count() const { return nodes_.size(); }

  // The success reply to `slots` with the request's id.
  std::string slots_reply(std::string_view id) const;
  // `moved`: the item's slot is owned by bid node `owner`; carries its `node` and `endpoint`.
  // REQUIRES: owner < bid_count().
  std::string moved_reply(std::string_view id, std::string_view item, std::size_t owner) const;

 private:
  struct Node {
    std::string name;
    std::string endpoint;  // client_listen; "" = none (sent as nil)
  };
  std::vector<Node> nodes_;
  SlotMap map_;
  std::string digest_hex_;
  std::string slots_array_;  // the encoded `slots` list, spliced into every reply
};

}  // namespace bidmesh
