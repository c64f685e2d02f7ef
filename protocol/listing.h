// The `list` op's order and cursor (docs/protocol.md, "Auctions (v2)", "Listing").
//
// Items are listed per status (open or closed) by closes_at ascending, then item name
// (bytewise); an item without closes_at sorts after every item with one. ListKey is that order's
// key, and list_key_bytes() writes it so that plain byte comparison (memcmp, LMDB's default key
// order) gives the same order:
//   [0] 0 open / 1 closed   [1] 0 has closes_at / 1 none   [2..10) u64 closes_at big-endian
//   (0 when none)   [10..) item
// A cursor is that key behind a version byte (1), in base64url without padding: opaque to
// clients, checked on the way in (a cursor that does not decode, or that was made for the other
// status, is refused with a reason).
//
// Thread-safe: pure functions.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace bidmesh {

inline constexpr uint64_t kDefaultListLimit = 20;
inline constexpr uint64_t kMaxListLimit = 100;

struct ListKey {
  bool closed = false;
  std::optional<uint64_t> closes_at;  // nullopt sorts after every deadline
  std::string item;

  friend bool operator==(const ListKey&, const ListKey&) = default;
};

// The contract's order: status, then closes_at (none last), then item bytewise.
bool list_key_less(const ListKey& a, const ListKey& b);

inline constexpr std::size_t kListKeyFixedBytes = 10;
std::string list_key_bytes(const ListKey& k);
// nullopt for bytes of no known shape (too short, a bad status or flag, an empty item).
std::optional<ListKey> parse_list_key_bytes(std::string_view bytes);

std::string encode_cursor(const ListKey& k);
// The key of a cursor from a reply to a list of `closed` items (or open ones). On refusal
// returns nullopt and sets *why (without the field name: "is not a cursor of this mesh").
std::optional<ListKey> decode_cursor(std::string_view cursor, bool closed, std::string* why);

}  // namespace bidmesh
