// CRC-32C through Boost.CRC (no table of our own).
#include "storage/crc32c.h"

#include <boost/crc.hpp>

namespace bidmesh {
namespace {

using Crc32c = boost::crc_optimal<32, 0x1EDC6F41, 0xFFFFFFFF, 0xFFFFFFFF, true, true>;

constexpr uint32_t kMaskDelta = 0xa282ead8u;

// Boost takes its initial remainder unreflected, while a finished CRC-32C is reflected (and
// xor-ed with 0xFFFFFFFF): continuing from a finished value reverses its bits.
uint32_t reverse_bits(uint32_t x) {
  x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
  x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
  x = ((x >> 4) & 0x0F0F0F0Fu) | ((x & 0x0F0F0F0Fu) << 4);
  x = ((x >> 8) & 0x00FF00FFu) | ((x & 0x00FF00FFu) << 8);
  return (x >> 16) | (x << 16);
}

}  // namespace

uint32_t crc32c(std::string_view data, uint32_t init_crc) {
  Crc32c crc(reverse_bits(init_crc ^ 0xFFFFFFFFu));
  crc.process_bytes(data.data(), data.size());
  return crc.checksum();
}

uint32_t crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + kMaskDelta; }

uint32_t crc32c_unmask(uint32_t masked) {
  const uint32_t rot = masked - kMaskDelta;
  return (rot >> 17) | (rot << 15);
}

}  // namespace bidmesh
