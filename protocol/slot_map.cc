#include "protocol/slot_map.h"

#include <array>

namespace bidmesh {

namespace {
// Table-driven CRC-16/XMODEM, built at compile time.
constexpr std::array<uint16_t, 256> make_crc16_table() {
  std::array<uint16_t, 256> t{};
  for (uint32_t i = 0; i < 256; ++i) {
    uint16_t crc = static_cast<uint16_t>(i << 8);
    for (int b = 0; b < 8; ++b) crc = (crc & 0x8000) ? static_cast<uint16_t>((crc << 1) ^ 0x1021) : static_cast<uint16_t>(crc << 1);
    t[i] = crc;
  }
  return t;
}
constexpr auto kCrc16Table = make_crc16_table();
}  // namespace

uint16_t crc16_xmodem(std::string_view bytes) {
  uint16_t crc = 0;
  for (unsigned char c : bytes)
    crc = static_cast<uint16_t>((crc << 8) ^ kCrc16Table[((crc >> 8) ^ c) & 0xff]);
  return crc;
}

SlotMap::SlotMap(const std::vector<std::vector<SlotRange>>& ranges_by_node) : owner_(kSlotCount, 0) {
  for (std::size_t node = 0; node < ranges_by_node.size(); ++node)
    for (const SlotRange& r : ranges_by_node[node])
      for (uint32_t s = r.first; s <= r.last && s < kSlotCount; ++s) owner_[s] = static_cast<uint16_t>(node);
}

}  // namespace bidmesh
