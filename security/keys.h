// CurveZMQ keys (RFC 26): 32 bytes, written as 40 characters of Z85 (RFC 32) in certificates,
// configs and the ZAP User-Id. Conversions go through libzmq's own zmq_z85_encode/decode and
// zmq_curve_public; nothing here does arithmetic on keys.
//
// Thread-safe: pure functions over values.
#pragma once

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>

namespace bidmesh {

inline constexpr std::size_t kCurveKeyBytes = 32;
inline constexpr std::size_t kCurveKeyZ85Chars = 40;

// True for exactly 40 characters that decode as Z85 (libzmq refuses characters outside the
// alphabet and groups whose value exceeds 32 bits, so each key has one spelling).
bool is_valid_z85_key(std::string_view z85);
// The 32 bytes of a Z85 key; nullopt when !is_valid_z85_key.
std::optional<std::string> z85_key_to_binary(std::string_view z85);
// The 40 characters of a 32-byte key; nullopt for any other length.
std::optional<std::string> binary_key_to_z85(std::string_view key);
// The public key (Z85) that belongs to a secret key (Z85); nullopt for an invalid secret key.
std::optional<std::string> public_key_of(std::string_view secret_z85);

}  // namespace bidmesh
