// SlotTable: a client's copy of the mesh's slot map, as the `slots` op returns it
// (PROTOCOL.md v1.2, "Direct clients"): item -> slot (CRC16 mod 16384) -> the owning bid node's
// name and client endpoint. Used by DirectClient, `bidmesh --direct` and `bidmesh-bench --direct`.
//
// decode_slots_reply accepts only a complete map: ranges inside 0-16383, first <= last, no slot
// owned twice, every slot owned. A range whose `endpoint` is nil belongs to a node without a
// client endpoint: its items go through the router (endpoint_of_* gives kViaRouter). Anything
// else is refused with a reason, so a client never routes by half a map (it uses the router).
// Bounds: at most 16384 ranges, strings up to 1 KiB; the reply itself is limited by the socket
// (kClientMaxReplyBytes).
// Thread-safety: immutable after decoding; safe to read from several threads.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bidmesh {

struct SlotOwner {
  uint32_t first = 0;
  uint32_t last = 0;
  std::string node;
  std::string endpoint;
};

class SlotTable {
 public:
  // The map's `digest` (changes whenever the slot map changes) and its ranges as sent.
  const std::string& digest() const { return digest_; }
  const std::vector<SlotOwner>& ranges() const { return ranges_; }
  // The distinct client endpoints, in order of first appearance; endpoint_of_* index into it.
  const std::vector<std::string>& endpoints() const { return endpoints_; }
  static constexpr std::size_t kViaRouter = 0xFFFF;
  // An index into endpoints(), or kViaRouter.
  std::size_t endpoint_of_slot(uint32_t slot) const { return owner_[slot]; }
  std::size_t endpoint_of_item(std::string_view item) const;

 private:
  friend std::optional<SlotTable> decode_slots_reply(std::string_view frame, std::string* why);
  std::string digest_;
  std::vector<SlotOwner> ranges_;
  std::vector<std::string> endpoints_;
  std::vector<uint16_t> owner_;  // 16384 entries: index into endpoints_, or kViaRouter
};

// The `slots` request frame: {op: "slots", id}.
std::string encode_slots_request(std::string_view id);

// The table from a `slots` reply frame, or nullopt (with the reason in *why when given) for a
// refusal (ok false: an old mesh answers bad_request to an unknown op) or an incomplete map.
std::optional<SlotTable> decode_slots_reply(std::string_view frame, std::string* why = nullptr);

}  // namespace bidmesh
