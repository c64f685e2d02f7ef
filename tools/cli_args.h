// Command-line argument checks shared by the client programs of tools/ (and their tests). Not part
// of the client library: a program's argument rules are the program's business.
//
// Thread-safe: pure functions.
#pragma once

#include <charconv>
#include <cstdint>
#include <optional>
#include <string_view>

namespace bidmesh {

// Strict decimal unsigned 64-bit parse: one or more ASCII digits, nothing else (no sign, no
// space, no fraction, no exponent); nullopt on anything else or on overflow.
inline std::optional<uint64_t> parse_u64(std::string_view text) {
  if (text.empty()) return std::nullopt;
  for (char c : text)
    if (c < '0' || c > '9') return std::nullopt;
  uint64_t v = 0;
  auto [ptr, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
  if (ec != std::errc() || ptr != text.data() + text.size()) return std::nullopt;
  return v;
}

}  // namespace bidmesh
