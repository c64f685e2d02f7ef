#include "protocol/listing.h"

#include <array>
#include <tuple>

namespace bidmesh {

namespace {
constexpr char kCursorVersion = 1;
constexpr std::string_view kBase64Url = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
// The longest cursor: version, key, a 64-byte item (docs/protocol.md: identifiers).
constexpr std::size_t kMaxCursorBytes = 1 + kListKeyFixedBytes + 64;

std::string base64url(std::string_view in) {
  std::string out;
  out.reserve((in.size() * 4 + 2) / 3);
  for (std::size_t i = 0; i < in.size(); i += 3) {
    uint32_t n = static_cast<uint32_t>(static_cast<unsigned char>(in[i])) << 16;
    if (i + 1 < in.size()) n |= static_cast<uint32_t>(static_cast<unsigned char>(in[i + 1])) << 8;
    if (i + 2 < in.size()) n |= static_cast<unsigned char>(in[i + 2]);
    const std::size_t chars = in.size() - i >= 3 ? 4 : in.size() - i + 1;
    for (std::size_t c = 0; c < chars; ++c) out.push_back(kBase64Url[(n >> (18 - 6 * c)) & 63]);
  }
  return out;
}

std::optional<std::string> unbase64url(std::string_view in) {
  std::array<int, 256> value{};
  value.fill(-1);
  for (std::size_t i = 0; i < kBase64Url.size(); ++i) value[static_cast<unsigned char>(kBase64Url[i])] = static_cast<int>(i);
  if (in.size() % 4 == 1) return std::nullopt;
  std::string out;
  uint32_t bits = 0;
  int have = 0;
  for (char c : in) {
    const int v = value[static_cast<unsigned char>(c)];
    if (v < 0) return std::nullopt;
    bits = (bits << 6) | static_cast<uint32_t>(v);
    have += 6;
    if (have >= 8) {
      have -= 8;
      out.push_back(static_cast<char>((bits >> have) & 0xff));
    }
  }
  // Leftover bits must be zero: one byte string has one spelling.
  if ((bits & ((1u << have) - 1)) != 0) return std::nullopt;
  return out;
}

bool is_identifier_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
}
}  // namespace

bool list_key_less(const ListKey& a, const ListKey& b) {
  // Absent deadlines sort last: (has none, value) orders them after every present one.
  return std::tuple(a.closed, !a.closes_at, a.closes_at.value_or(0), std::string_view(a.item)) <
         std::tuple(b.closed, !b.closes_at, b.closes_at.value_or(0), std::string_view(b.item));
}

std::string list_key_bytes(const ListKey& k) {
  std::string out;
  out.reserve(kListKeyFixedBytes + k.item.size());
  out.push_back(k.closed ? 1 : 0);
  out.push_back(k.closes_at ? 0 : 1);
  const uint64_t at = k.closes_at.value_or(0);
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((at >> shift) & 0xff));
  out.append(k.item);
  return out;
}

std::optional<ListKey> parse_list_key_bytes(std::string_view b) {
  if (b.size() <= kListKeyFixedBytes || (b[0] != 0 && b[0] != 1) || (b[1] != 0 && b[1] != 1)) return std::nullopt;
  ListKey k;
  k.closed = b[0] == 1;
  uint64_t at = 0;
  for (std::size_t i = 2; i < kListKeyFixedBytes; ++i) at = (at << 8) | static_cast<unsigned char>(b[i]);
  if (b[1] == 0) k.closes_at = at;
  else if (at != 0) return std::nullopt;
  k.item = std::string(b.substr(kListKeyFixedBytes));
  return k;
}

std::string encode_cursor(const ListKey& k) { return base64url(std::string(1, kCursorVersion) + list_key_bytes(k)); }

std::optional<ListKey> decode_cursor(std::string_view cursor, bool closed, std::string* why) {
  const char* kNotOurs = "is not a cursor from a list reply of this mesh";
  if (cursor.size() > (kMaxCursorBytes * 4 + 2) / 3) {
    *why = kNotOurs;
    return std::nullopt;
  }
  const std::optional<std::string> raw = unbase64url(cursor);
  std::optional<ListKey> key;
  if (raw && !raw->empty() && (*raw)[0] == kCursorVersion) key = parse_list_key_bytes(std::string_view(*raw).substr(1));
  bool items_ok = key && key->item.size() <= 64;
  for (std::size_t i = 0; items_ok && i < key->item.size(); ++i) items_ok = is_identifier_char(key->item[i]);
  if (!items_ok) {
    *why = kNotOurs;
    return std::nullopt;
  }
  if (key->closed != closed) {
    *why = std::string("was made for a list of ") + (key->closed ? "closed" : "open") + " items, not " +
           (closed ? "closed" : "open") + " ones";
    return std::nullopt;
  }
  return key;
}

}  // namespace bidmesh
