// Reading an unpacked MessagePack map field by field, for the decoders of untrusted frames
// (protocol/control.cc, supervisor/control_wire.cc): a lookup by string key that never throws
// and never converts. Thread-safe: pure functions.
#pragma once

#include <string_view>

#include <msgpack.hpp>

namespace bidmesh {

// The value under the first string key equal to `key`, or null when there is none.
// REQUIRES: map.type == msgpack::type::MAP. The result points into `map`'s zone.
inline const msgpack::object* map_field(const msgpack::object& map, std::string_view key) {
  for (uint32_t i = 0; i < map.via.map.size; ++i) {
    const auto& kv = map.via.map.ptr[i];
    if (kv.key.type == msgpack::type::STR && std::string_view(kv.key.via.str.ptr, kv.key.via.str.size) == key) {
      return &kv.val;
    }
  }
  return nullptr;
}

// The same, only when the value is a string.
inline const msgpack::object* map_str_field(const msgpack::object& map, std::string_view key) {
  const msgpack::object* v = map_field(map, key);
  return v != nullptr && v->type == msgpack::type::STR ? v : nullptr;
}

}  // namespace bidmesh
