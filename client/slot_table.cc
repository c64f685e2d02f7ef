// SlotTable: decoding the `slots` reply (see slot_table.h).
#include "client/slot_table.h"

#include <msgpack.hpp>

#include "protocol/messages.h"
#include "protocol/slot_map.h"

namespace bidmesh {

std::size_t SlotTable::endpoint_of_item(std::string_view item) const { return owner_[slot_of(item)]; }

std::string encode_slots_request(std::string_view id) {
  Request r;
  r.op = Op::slots;
  r.id = std::string(id);
  return encode_request(r);
}

namespace {
constexpr std::size_t kMaxSlotString = 1024;

std::optional<std::string_view> str_of(const msgpack::object& o) {
  if (o.type != msgpack::type::STR || o.via.str.size > kMaxSlotString) return std::nullopt;
  return std::string_view(o.via.str.ptr, o.via.str.size);
}
std::optional<uint64_t> uint_of(const msgpack::object& o) {
  if (o.type == msgpack::type::POSITIVE_INTEGER) return o.via.u64;
  return std::nullopt;
}
std::optional<SlotTable> fail(std::string* why, std::string text) {
  if (why) *why = std::move(text);
  return std::nullopt;
}
}  // namespace

std::optional<SlotTable> decode_slots_reply(std::string_view frame, std::string* why) {
  msgpack::object_handle handle;
  try {
    std::size_t off = 0;
    // Bounds: 16384 ranges at most, small maps, depth 3 (reply -> list -> range map).
    handle = msgpack::unpack(frame.data(), frame.size(), off, nullptr, nullptr,
                             msgpack::unpack_limit(kSlotCount, 16, 1 << 20, 1 << 20, 1 << 20, 3));
    if (off != frame.size()) return fail(why, "the slots reply holds bytes after its map");
  } catch (const std::exception& e) {
    return fail(why, std::string("the slots reply is not MessagePack: ") + e.what());
  }
  const msgpack::object& root = handle.get();
  if (root.type != msgpack::type::MAP) return fail(why, "the slots reply is not a map");
  SlotTable t;
  const msgpack::object* list = nullptr;
  bool ok = false;
  std::string error, message;
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    const auto& kv = root.via.map.ptr[i];
    const auto key = str_of(kv.key);
    if (!key) continue;
    if (*key == "ok" && kv.val.type == msgpack::type::BOOLEAN) ok = kv.val.via.boolean;
    if (*key == "digest") {
      if (auto s = str_of(kv.val)) t.digest_ = *s;
    }
    if (*key == "slots") list = &kv.val;
    if (*key == "error") error = str_of(kv.val).value_or("");
    if (*key == "message") message = str_of(kv.val).value_or("");
  }
  if (!ok) return fail(why, "slots refused: " + (error.empty() ? std::string("no error code") : error) + ": " + message);
  if (!list || list->type != msgpack::type::ARRAY) return fail(why, "the slots reply has no list 'slots'");
  constexpr uint16_t kNone = 0xFFFE;
  t.owner_.assign(kSlotCount, kNone);
  for (uint32_t i = 0; i < list->via.array.size; ++i) {
    const msgpack::object& r = list->via.array.ptr[i];
    if (r.type != msgpack::type::MAP) return fail(why, "a slot range is not a map");
    SlotOwner o;
    std::optional<uint64_t> first, last;
    for (uint32_t j = 0; j < r.via.map.size; ++j) {
      const auto& kv = r.via.map.ptr[j];
      const auto key = str_of(kv.key);
      if (!key) continue;
      if (*key == "first") first = uint_of(kv.val);
      if (*key == "last") last = uint_of(kv.val);
      if (*key == "node") o.node = str_of(kv.val).value_or("");
      if (*key == "endpoint") o.endpoint = str_of(kv.val).value_or("");
    }
    if (!first || !last || *first > *last || *last >= kSlotCount)
      return fail(why, "slot range " + std::to_string(i) + " lacks first <= last within 0-16383");
    o.first = static_cast<uint32_t>(*first);
    o.last = static_cast<uint32_t>(*last);
    std::size_t e = SlotTable::kViaRouter;  // nil endpoint: the node serves no direct clients
    if (!o.endpoint.empty()) {
      e = 0;
      while (e < t.endpoints_.size() && t.endpoints_[e] != o.endpoint) ++e;
      if (e == t.endpoints_.size()) t.endpoints_.push_back(o.endpoint);
    }
    for (uint32_t s = o.first; s <= o.last; ++s) {
      if (t.owner_[s] != kNone) return fail(why, "slot " + std::to_string(s) + " is owned twice");
      t.owner_[s] = static_cast<uint16_t>(e);
    }
    t.ranges_.push_back(std::move(o));
  }
  for (uint32_t s = 0; s < kSlotCount; ++s)
    if (t.owner_[s] == kNone) return fail(why, "slot " + std::to_string(s) + " has no owner");
  return t;
}

}  // namespace bidmesh
