#include "security/keys.h"

#include <zmq.h>

#include <array>
#include <cstdint>

namespace bidmesh {

bool is_valid_z85_key(std::string_view z85) { return z85_key_to_binary(z85).has_value(); }

std::optional<std::string> z85_key_to_binary(std::string_view z85) {
  if (z85.size() != kCurveKeyZ85Chars) return std::nullopt;
  // zmq_z85_decode wants a terminated string; a key never holds a NUL, but a file might.
  std::array<char, kCurveKeyZ85Chars + 1> text{};
  for (std::size_t i = 0; i < z85.size(); ++i) {
    if (z85[i] == '\0') return std::nullopt;
    text[i] = z85[i];
  }
  std::array<uint8_t, kCurveKeyBytes> key{};
  if (zmq_z85_decode(key.data(), text.data()) == nullptr) return std::nullopt;
  return std::string(reinterpret_cast<const char*>(key.data()), key.size());
}

std::optional<std::string> binary_key_to_z85(std::string_view key) {
  if (key.size() != kCurveKeyBytes) return std::nullopt;
  std::array<char, kCurveKeyZ85Chars + 1> text{};
  if (zmq_z85_encode(text.data(), reinterpret_cast<const uint8_t*>(key.data()), key.size()) == nullptr)
    return std::nullopt;
  return std::string(text.data(), kCurveKeyZ85Chars);
}

std::optional<std::string> public_key_of(std::string_view secret_z85) {
  if (!is_valid_z85_key(secret_z85)) return std::nullopt;
  const std::string secret(secret_z85);
  std::array<char, kCurveKeyZ85Chars + 1> pub{};
  if (zmq_curve_public(pub.data(), secret.c_str()) != 0) return std::nullopt;
  return std::string(pub.data(), kCurveKeyZ85Chars);
}

}  // namespace bidmesh
