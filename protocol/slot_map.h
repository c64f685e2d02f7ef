// The slot map: item -> slot -> owning bid node.
//   slot = CRC16(item) mod 16384
// CRC16 is CRC-16/XMODEM (poly 0x1021, init 0, no reflection), the hash of Redis Cluster: stable
// across versions, hosts and languages. Changing it is a protocol change.
// Thread-safe: immutable after construction.
#pragma once

#include <cstdint>
#include <string_view>
#include <vector>

namespace bidmesh {

inline constexpr uint32_t kSlotCount = 16384;

uint16_t crc16_xmodem(std::string_view bytes);
inline uint32_t slot_of(std::string_view item) { return crc16_xmodem(item) % kSlotCount; }

// An inclusive range of slots.
struct SlotRange {
  uint32_t first = 0;
  uint32_t last = 0;
};

// Slot -> index of the owning bid node. REQUIRES: the ranges cover every slot exactly once
// (load_mesh_config checks this).
class SlotMap {
 public:
  // ranges_by_node[i] are the slot ranges of bid node i.
  explicit SlotMap(const std::vector<std::vector<SlotRange>>& ranges_by_node);
  std::size_t owner_of_slot(uint32_t slot) const { return owner_[slot]; }
  std::size_t owner_of_item(std::string_view item) const { return owner_[slot_of(item)]; }

 private:
  std::vector<uint16_t> owner_;  // kSlotCount entries
};

}  // namespace bidmesh
