// The node-to-supervisor message (protocol/control.h): a MessagePack map of three keys,
//   {"type": <str>, "name": <str>, "pid": <non-negative int>}, and a fourth, "note": <str>, when
// there is a note; written in that order; readers take the keys in any order and ignore others.
#include "protocol/control.h"

#include <msgpack.hpp>

#include "protocol/msgpack_map.h"

namespace bidmesh {

namespace {

// A flat map of three keys: anything wider or deeper is refused before msgpack allocates for it
// (msgpack-c issue 1013). Arrays and maps are allowed small, one level down, as unknown values.
const msgpack::unpack_limit kNodeMessageLimits(/*array=*/16, /*map=*/16, /*str=*/kMaxNodeMessageBytes,
                                               /*bin=*/0, /*ext=*/0, /*depth=*/2);

}  // namespace

std::string encode_node_message(const NodeMessage& m) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(m.note.empty() ? 3 : 4);
  pk.pack("type");
  pk.pack(m.type);
  pk.pack("name");
  pk.pack(m.name);
  pk.pack("pid");
  pk.pack(m.pid);
  if (!m.note.empty()) {
    pk.pack("note");
    pk.pack(std::string_view(m.note).substr(0, kMaxNodeNoteBytes));
  }
  return {buf.data(), buf.size()};
}

std::optional<NodeMessage> decode_node_message(std::string_view frame) {
  if (frame.empty() || frame.size() > kMaxNodeMessageBytes) return std::nullopt;
  try {
    std::size_t off = 0;
    const msgpack::object_handle oh =
        msgpack::unpack(frame.data(), frame.size(), off, nullptr, nullptr, kNodeMessageLimits);
    if (off != frame.size()) return std::nullopt;
    const msgpack::object& map = oh.get();
    if (map.type != msgpack::type::MAP) return std::nullopt;
    const msgpack::object* type = map_str_field(map, "type");
    const msgpack::object* name = map_str_field(map, "name");
    const msgpack::object* pid = map_field(map, "pid");
    if (type == nullptr || name == nullptr || pid == nullptr || pid->type != msgpack::type::POSITIVE_INTEGER) {
      return std::nullopt;
    }
    const msgpack::object* note = map_field(map, "note");
    if (note != nullptr && note->type != msgpack::type::STR) return std::nullopt;
    return NodeMessage{std::string(type->via.str.ptr, type->via.str.size),
                       std::string(name->via.str.ptr, name->via.str.size), pid->via.u64,
                       note ? std::string(note->via.str.ptr, note->via.str.size) : std::string()};
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

}  // namespace bidmesh
