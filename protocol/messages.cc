// Wire encoding of the contract. Requests are decoded in the order the contract judges them:
// size, then decoding (one MessagePack map, whole frame consumed, under unpack limits), then
// each field's presence, type and range.
#include "protocol/messages.h"

#include "protocol/json.h"

#include <array>
#include <cctype>

#include <msgpack.hpp>

namespace bidmesh {

DecodeError too_large_error(std::size_t bytes, std::size_t max_bytes) {
  return DecodeError{ErrorCode::too_large,
                     "request of " + std::to_string(bytes) + " bytes is over the limit of " + std::to_string(max_bytes) +
                         " bytes",
                     std::nullopt};
}

namespace {

// The most entries a request map may have (the unpack map limit; scan_route checks it too).
constexpr std::size_t kMaxRequestKeys = 64;

// Limits for untrusted input: a request is a flat map of a dozen keys, so anything deeper or
// wider is refused before msgpack allocates for it (msgpack-c issue 1013). scan_route mirrors
// the map, str and bin limits.
msgpack::unpack_limit request_limits() {
  return msgpack::unpack_limit(/*array=*/64, /*map=*/kMaxRequestKeys, /*str=*/kTransportMaxBytes,
                               /*bin=*/kTransportMaxBytes, /*ext=*/kTransportMaxBytes, /*depth=*/4);
}
// Replies and events come from the mesh, but tools still read them with bounds.
msgpack::unpack_limit reply_limits() {
  return msgpack::unpack_limit(2 * kMaxHistoryLimit, 64, 1 << 20, 1 << 20, 1 << 20, 6);
}

constexpr std::array<std::pair<Op, std::string_view>, 8> kOps{{
    {Op::open, "open"}, {Op::bid, "bid"}, {Op::close, "close"},
    {Op::get, "get"}, {Op::history, "history"}, {Op::list, "list"}, {Op::slots, "slots"}, {Op::ping, "ping"},
}};

std::string_view as_view(const msgpack::object& o) { return {o.via.str.ptr, o.via.str.size}; }

// Unpacks one object that must fill the whole frame. Returns false with a reason otherwise.
bool unpack_whole(std::string_view frame, const msgpack::unpack_limit& limits, msgpack::object_handle& out,
                  std::string& why) {
  try {
    std::size_t off = 0;
    out = msgpack::unpack(frame.data(), frame.size(), off, nullptr, nullptr, limits);
    if (off != frame.size()) {
      why = "the frame holds bytes after the MessagePack map";
      return false;
    }
    return true;
  } catch (const msgpack::depth_size_overflow&) {
    why = "the MessagePack data is nested too deeply";
  } catch (const msgpack::size_overflow&) {
    why = "the MessagePack data exceeds a size limit";
  } catch (const msgpack::insufficient_bytes&) {
    why = "the frame ends inside a MessagePack value";
  } catch (const std::exception&) {
    why = "the frame is not valid MessagePack";
  }
  return false;
}

// The fields of a request map by key; the first occurrence of a key wins and later
// duplicates are refused.
struct FieldView {
  const msgpack::object_kv* kv = nullptr;
  uint32_t size = 0;
  const msgpack::object* find(std::string_view key) const {
    for (uint32_t i = 0; i < size; ++i)
      if (kv[i].key.type == msgpack::type::STR && as_view(kv[i].key) == key) {
        // Nil stands for absent (an optional field given as nil is absent).
        return kv[i].val.type == msgpack::type::NIL ? nullptr : &kv[i].val;
      }
    return nullptr;
  }
};

DecodeError bad(std::string message, const std::optional<std::string>& id = std::nullopt) {
  return DecodeError{ErrorCode::bad_request, std::move(message), id};
}

// Reads the map and the id: shared by peek_route and decode_request.
std::variant<FieldView, DecodeError> open_request(std::string_view frame, std::size_t max_bytes,
                                                  msgpack::object_handle& handle, std::optional<std::string>& id) {
  if (frame.size() > max_bytes)
    return too_large_error(frame.size(), max_bytes);
  std::string why;
  if (!unpack_whole(frame, request_limits(), handle, why)) return bad(why);
  const msgpack::object& root = handle.get();
  if (root.type != msgpack::type::MAP) return bad("the request is not a MessagePack map");
  FieldView fields{root.via.map.ptr, root.via.map.size};
  for (uint32_t i = 0; i < fields.size; ++i) {
    if (fields.kv[i].key.type != msgpack::type::STR) return bad("the request map has a key that is not a string");
    for (uint32_t j = 0; j < i; ++j)
      if (as_view(fields.kv[j].key) == as_view(fields.kv[i].key))
        return bad("the request map has the key '" + std::string(as_view(fields.kv[i].key)) + "' twice");
  }
  const msgpack::object* id_obj = fields.find("id");
  if (id_obj == nullptr) return bad("missing field 'id'");
  if (id_obj->type != msgpack::type::STR) return bad("field 'id' must be a string");
  const std::string_view id_view = as_view(*id_obj);
  if (id_view.empty() || id_view.size() > kMaxIdBytes) return bad("field 'id' must be 1 to 64 bytes");
  id = std::string(id_view);
  return fields;
}

std::variant<Op, DecodeError> read_op(const FieldView& f, const std::optional<std::string>& id) {
  const msgpack::object* o = f.find("op");
  if (o == nullptr) return bad("missing field 'op'", id);
  if (o->type != msgpack::type::STR) return bad("field 'op' must be a string", id);
  auto op = parse_op(as_view(*o));
  if (!op) return bad("unknown op '" + std::string(as_view(*o)).substr(0, 64) + "'", id);
  return *op;
}

// An identifier field: required, a string of [A-Za-z0-9_-]{1,64}.
std::optional<DecodeError> read_identifier(const FieldView& f, std::string_view key, std::string& out,
                                           const std::optional<std::string>& id) {
  const msgpack::object* o = f.find(key);
  if (o == nullptr) return bad("missing field '" + std::string(key) + "'", id);
  if (o->type != msgpack::type::STR) return bad("field '" + std::string(key) + "' must be a string", id);
  if (!is_valid_identifier(as_view(*o)))
    return bad("field '" + std::string(key) + "' must be 1 to 64 bytes of [A-Za-z0-9_-]", id);
  out.assign(as_view(*o));
  return std::nullopt;
}

// An unsigned integer field. Absent: `out` keeps its default unless `required`.
// Floats, negatives and values past 64 bits are refused (msgpack-c decodes a non-negative
// value in a signed format as POSITIVE_INTEGER, so those are accepted).
std::optional<DecodeError> read_u64(const FieldView& f, std::string_view key, bool required, uint64_t min,
                                    uint64_t& out, bool& present, const std::optional<std::string>& id) {
  present = false;
  const msgpack::object* o = f.find(key);
  if (o == nullptr) {
    if (required) return bad("missing field '" + std::string(key) + "'", id);
    return std::nullopt;
  }
  if (o->type == msgpack::type::NEGATIVE_INTEGER)
    return bad("field '" + std::string(key) + "' must not be negative", id);
  if (o->type != msgpack::type::POSITIVE_INTEGER)
    return bad("field '" + std::string(key) + "' must be an unsigned integer", id);
  if (o->via.u64 < min)
    return bad("field '" + std::string(key) + "' must be at least " + std::to_string(min), id);
  out = o->via.u64;
  present = true;
  return std::nullopt;
}

// An optional string field of at most `max_bytes`, judged by `check` (absent: `out` stays empty).
std::optional<DecodeError> read_text(const FieldView& f, std::string_view key, std::string& out,
                                     std::optional<std::string> (*check)(std::string_view),
                                     const std::optional<std::string>& id) {
  const msgpack::object* o = f.find(key);
  if (o == nullptr) return std::nullopt;
  if (o->type != msgpack::type::STR) return bad("field '" + std::string(key) + "' must be a string", id);
  if (auto why = check(as_view(*o))) return bad("field '" + std::string(key) + "' " + *why, id);
  out.assign(as_view(*o));
  return std::nullopt;
}

// Strict UTF-8 (no overlong forms, no surrogates, nothing past U+10FFFF) without control
// characters (C0, DEL, C1); `allow_lf` lets line feeds through. Returns why not, or nullopt.
std::optional<std::string> check_utf8_text(std::string_view s, bool allow_lf) {
  const auto* p = reinterpret_cast<const unsigned char*>(s.data());
  const std::size_t n = s.size();
  for (std::size_t i = 0; i < n;) {
    const unsigned char c = p[i];
    if (c < 0x80) {
      if ((c < 0x20 && !(allow_lf && c == '\n')) || c == 0x7f)
        return "must not hold control characters (byte " + std::to_string(i) + ")";
      ++i;
      continue;
    }
    std::size_t len = 0;
    uint32_t cp = 0, min = 0;
    if (c >= 0xc2 && c <= 0xdf) len = 2, cp = c & 0x1f, min = 0x80;
    else if (c >= 0xe0 && c <= 0xef) len = 3, cp = c & 0x0f, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4) len = 4, cp = c & 0x07, min = 0x10000;
    else return "is not valid UTF-8 (byte " + std::to_string(i) + ")";
    if (n - i < len) return "is not valid UTF-8 (it ends inside a character)";
    for (std::size_t k = 1; k < len; ++k) {
      if ((p[i + k] & 0xc0) != 0x80) return "is not valid UTF-8 (byte " + std::to_string(i + k) + ")";
      cp = (cp << 6) | (p[i + k] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
      return "is not valid UTF-8 (byte " + std::to_string(i) + ")";
    if (cp >= 0x80 && cp <= 0x9f) return "must not hold control characters (byte " + std::to_string(i) + ")";
    i += len;
  }
  return std::nullopt;
}

template <typename Packer>
void pack_value(Packer& pk, const Value& v) {
  std::visit(
      [&](const auto& x) {
        using T = std::decay_t<decltype(x)>;
        if constexpr (std::is_same_v<T, Nil>) pk.pack_nil();
        else if constexpr (std::is_same_v<T, bool>) x ? pk.pack_true() : pk.pack_false();
        else if constexpr (std::is_same_v<T, uint64_t>) pk.pack_uint64(x);
        else pk.pack(x);
      },
      v);
}

template <typename Packer>
void pack_str(Packer& pk, std::string_view s) {
  pk.pack_str(static_cast<uint32_t>(s.size()));
  pk.pack_str_body(s.data(), static_cast<uint32_t>(s.size()));
}

template <typename Packer>
void pack_opt_id(Packer& pk, const std::optional<std::string>& id) {
  if (id) pack_str(pk, *id);
  else pk.pack_nil();
}

std::optional<Value> object_to_value(const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: return Value{Nil{}};
    case msgpack::type::BOOLEAN: return Value{o.via.boolean};
    case msgpack::type::POSITIVE_INTEGER: return Value{o.via.u64};
    case msgpack::type::STR: return Value{std::string(as_view(o))};
    default: return std::nullopt;
  }
}

std::optional<Event> event_from_object(const msgpack::object& root) {
  if (root.type != msgpack::type::MAP) return std::nullopt;
  Event e;
  bool have_kind = false, have_seq = false;
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    const auto& kv = root.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) return std::nullopt;
    const std::string_view k = as_view(kv.key);
    const msgpack::object& v = kv.val;
    if (k == "event" && v.type == msgpack::type::STR) {
      const auto s = as_view(v);
      if (s == "open") e.kind = EventKind::open;
      else if (s == "max") e.kind = EventKind::max;
      else if (s == "closed") e.kind = EventKind::closed;
      else if (s == "extended") e.kind = EventKind::extended;
      else return std::nullopt;
      have_kind = true;
    } else if (k == "item" && v.type == msgpack::type::STR) {
      e.item = std::string(as_view(v));
    } else if (k == "seq" && v.type == msgpack::type::POSITIVE_INTEGER) {
      e.seq = v.via.u64;
      have_seq = true;
    } else if (k == "ts" && v.type == msgpack::type::POSITIVE_INTEGER) {
      e.ts = v.via.u64;
    } else if (k == "amount" && v.type == msgpack::type::POSITIVE_INTEGER) {
      e.amount = v.via.u64;
    } else if ((k == "bidder" || k == "winner") && v.type == msgpack::type::STR) {
      e.bidder = std::string(as_view(v));
    } else if (k == "closes_at" && v.type == msgpack::type::POSITIVE_INTEGER) {
      e.closes_at = v.via.u64;
    } else if (k == "reserve_met" && v.type == msgpack::type::BOOLEAN) {
      e.reserve_met = v.via.boolean;
    }
  }
  if (!have_kind || !have_seq) return std::nullopt;
  return e;
}

void to_json(std::string& out, const msgpack::object& o) {
  switch (o.type) {
    case msgpack::type::NIL: out += "null"; break;
    case msgpack::type::BOOLEAN: out += o.via.boolean ? "true" : "false"; break;
    case msgpack::type::POSITIVE_INTEGER: out += std::to_string(o.via.u64); break;
    case msgpack::type::NEGATIVE_INTEGER: out += std::to_string(o.via.i64); break;
    case msgpack::type::FLOAT32:
    case msgpack::type::FLOAT64: out += std::to_string(o.via.f64); break;
    case msgpack::type::STR: out += json_quote(as_view(o)); break;
    case msgpack::type::ARRAY:
      out.push_back('[');
      for (uint32_t i = 0; i < o.via.array.size; ++i) {
        if (i) out.push_back(',');
        to_json(out, o.via.array.ptr[i]);
      }
      out.push_back(']');
      break;
    case msgpack::type::MAP:
      out.push_back('{');
      for (uint32_t i = 0; i < o.via.map.size; ++i) {
        if (i) out.push_back(',');
        const auto& kv = o.via.map.ptr[i];
        if (kv.key.type == msgpack::type::STR) out += json_quote(as_view(kv.key));
        else {
          std::string k;
          to_json(k, kv.key);
          out += json_quote(k);
        }
        out.push_back(':');
        to_json(out, kv.val);
      }
      out.push_back('}');
      break;
    default: out += "null"; break;  // bin and ext do not occur in the contract
  }
}

}  // namespace

std::optional<Op> parse_op(std::string_view name) {
  for (const auto& [op, n] : kOps)
    if (n == name) return op;
  return std::nullopt;
}

std::string_view op_name(Op op) {
  for (const auto& [o, n] : kOps)
    if (o == op) return n;
  return "ping";
}

bool op_is_write(Op op) { return op == Op::open || op == Op::bid || op == Op::close; }

bool is_valid_identifier(std::string_view s) {
  if (s.empty() || s.size() > 64) return false;
  for (unsigned char c : s) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '-';
    if (!ok) return false;
  }
  return true;
}

std::optional<std::string> check_title(std::string_view s) {
  if (s.empty() || s.size() > kMaxTitleBytes) return "must be 1 to " + std::to_string(kMaxTitleBytes) + " bytes";
  return check_utf8_text(s, false);
}

std::optional<std::string> check_description(std::string_view s) {
  if (s.size() > kMaxDescriptionBytes) return "must be at most " + std::to_string(kMaxDescriptionBytes) + " bytes";
  return check_utf8_text(s, true);
}

std::optional<std::string> check_image_url(std::string_view s) {
  if (s.size() > kMaxImageUrlBytes) return "must be at most " + std::to_string(kMaxImageUrlBytes) + " bytes";
  auto starts_nocase = [&](std::string_view prefix) {
    if (s.size() < prefix.size()) return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
      if (std::tolower(static_cast<unsigned char>(s[i])) != prefix[i]) return false;
    return true;
  };
  const std::size_t scheme = starts_nocase("https://") ? 8 : starts_nocase("http://") ? 7 : 0;
  if (scheme == 0) return std::string("must be an http:// or https:// URL");
  if (s.size() == scheme || s[scheme] == '/') return std::string("must name a host after the scheme");
  for (unsigned char c : s)
    if (c <= 0x20 || c >= 0x7f) return std::string("must be printable ASCII without spaces (percent-encode the rest)");
  return std::nullopt;
}

std::string Request::fingerprint() const {
  std::string f(op_name(op));
  f += '|';
  f += item;
  switch (op) {
    case Op::open:
      f += '|' + std::to_string(start) + '|' + std::to_string(increment) + '|' +
           (closes_at ? std::to_string(*closes_at) : std::string("-"));
      // v2 fields only when given, so a v1 open keeps its v1 fingerprint (stored records match).
      if (has_v2_fields()) {
        f += "|v2|" + (reserve ? std::to_string(*reserve) : std::string("-")) + '|' + std::to_string(extend_ms);
        for (const std::string* text : {&title, &description, &image_url})
          f += '|' + std::to_string(text->size()) + ':' + *text;
      }
      break;
    case Op::bid:
      f += '|' + bidder + '|' + std::to_string(amount);
      if (max) f += "|max|" + std::to_string(*max);
      break;
    default:
      break;
  }
  return f;
}

namespace {
// What every request is judged on first: the map, `id`, `op`, and `item` (all but ping).
// The fields stay in `handle`, which must outlive the result.
struct Head {
  FieldView fields;
  RouteInfo route;
};
std::variant<Head, DecodeError> read_head(std::string_view frame, std::size_t max_request_bytes,
                                          msgpack::object_handle& handle) {
  std::optional<std::string> id;
  auto opened = open_request(frame, max_request_bytes, handle, id);
  if (auto* err = std::get_if<DecodeError>(&opened)) return std::move(*err);
  Head head{std::get<FieldView>(opened), {}};
  auto op = read_op(head.fields, id);
  if (auto* err = std::get_if<DecodeError>(&op)) return std::move(*err);
  head.route.op = std::get<Op>(op);
  head.route.id = *id;
  if (op_names_item(head.route.op))
    if (auto err = read_identifier(head.fields, "item", head.route.item, id)) return std::move(*err);
  return head;
}
}  // namespace

std::variant<RouteInfo, DecodeError> peek_route(std::string_view frame, std::size_t max_request_bytes) {
  msgpack::object_handle handle;
  auto head = read_head(frame, max_request_bytes, handle);
  if (auto* err = std::get_if<DecodeError>(&head)) return std::move(*err);
  return std::move(std::get<Head>(head).route);
}

namespace {
// The MessagePack formats scan_route reads (https://github.com/msgpack/msgpack/blob/master/spec.md);
// lengths and counts are big-endian unsigned after the header byte:
//   0x00-0x7f, 0xe0-0xff  positive / negative fixint      0xc0 nil, 0xc2 false, 0xc3 true
//   0xcc-0xcf  uint 8/16/32/64, 0xd0-0xd3 int 8/16/32/64, 0xca float32, 0xcb float64 (payload only)
//   0xa0-0xbf  fixstr (length in the low 5 bits), 0xd9/0xda/0xdb str 8/16/32 (1/2/4 length bytes)
//   0xc4/0xc5/0xc6  bin 8/16/32 (1/2/4 length bytes)
//   0x80-0x8f  fixmap (count in the low 4 bits), 0xde/0xdf map 16/32 (2/4 count bytes)
// Anything else (arrays, nested maps, ext, the never-used 0xc1) makes the scan give up.
enum class ScanKind { nil, str, other };
struct Scanned {
  ScanKind kind = ScanKind::nil;  // nil until seen: absent and nil are judged alike
  std::string_view str;           // for str
};

// A forward reader over the frame: every read checks the bytes left first.
class FrameScanner {
 public:
  explicit FrameScanner(std::string_view frame)
      : p_(reinterpret_cast<const unsigned char*>(frame.data())), end_(p_ + frame.size()) {}
  bool at_end() const { return p_ == end_; }

  // One header byte.
  bool header(unsigned char& byte) {
    if (p_ == end_) return false;
    byte = *p_++;
    return true;
  }
  // `n` (0..8) big-endian bytes as one unsigned number.
  bool number(std::size_t n, uint64_t& out) {
    if (left() < n) return false;
    out = 0;
    for (std::size_t i = 0; i < n; ++i) out = (out << 8) | p_[i];
    p_ += n;
    return true;
  }
  bool skip(std::size_t n) {
    if (left() < n) return false;
    p_ += n;
    return true;
  }
  // A body of `n` bytes (n from the frame: up to 2^32-1), checked against what is left.
  bool body(uint64_t n, std::string_view& out) {
    if (n > left()) return false;
    out = std::string_view(reinterpret_cast<const char*>(p_), static_cast<std::size_t>(n));
    p_ += n;
    return true;
  }

  // One scalar value; false when truncated, invalid, over the unpack limits of request_limits()
  // (str and bin at most kTransportMaxBytes) or not a format listed above.
  bool scalar(Scanned& out) {
    unsigned char b = 0;
    if (!header(b)) return false;
    if (b <= 0x7f || b >= 0xe0) return other(out, 0);
    if (b >= 0xa0 && b <= 0xbf) return blob(out, b & 0x1f, ScanKind::str);
    uint64_t n = 0;
    switch (b) {
      case 0xc0: out.kind = ScanKind::nil; return true;
      case 0xc2: case 0xc3: return other(out, 0);
      case 0xcc: case 0xd0: return other(out, 1);
      case 0xcd: case 0xd1: return other(out, 2);
      case 0xce: case 0xd2: case 0xca: return other(out, 4);
      case 0xcf: case 0xd3: case 0xcb: return other(out, 8);
      case 0xd9: return number(1, n) && blob(out, n, ScanKind::str);
      case 0xda: return number(2, n) && blob(out, n, ScanKind::str);
      case 0xdb: return number(4, n) && blob(out, n, ScanKind::str);
      case 0xc4: return number(1, n) && blob(out, n, ScanKind::other);
      case 0xc5: return number(2, n) && blob(out, n, ScanKind::other);
      case 0xc6: return number(4, n) && blob(out, n, ScanKind::other);
      default: return false;
    }
  }

  // The root map's count; false unless a map of at most `max` entries (the unpack map limit).
  bool map_header(uint64_t max, uint64_t& count) {
    unsigned char b = 0;
    if (!header(b)) return false;
    if (b >= 0x80 && b <= 0x8f) count = b & 0x0f;
    else if (b == 0xde) { if (!number(2, count)) return false; }
    else if (b == 0xdf) { if (!number(4, count)) return false; }
    else return false;
    return count <= max;
  }

 private:
  std::size_t left() const { return static_cast<std::size_t>(end_ - p_); }
  bool other(Scanned& out, std::size_t payload) {
    out.kind = ScanKind::other;
    return skip(payload);
  }
  // A str or bin body (bin is kept as `other`); both are limited to kTransportMaxBytes by
  // request_limits().
  bool blob(Scanned& out, uint64_t n, ScanKind kind) {
    if (n > kTransportMaxBytes || !body(n, out.str)) return false;
    out.kind = kind;
    return true;
  }

  const unsigned char* p_;
  const unsigned char* end_;
};
}  // namespace

std::optional<RouteView> scan_route(std::string_view frame, std::size_t max_request_bytes) {
  if (frame.size() > max_request_bytes) return std::nullopt;
  FrameScanner in(frame);
  uint64_t count = 0;
  if (!in.map_header(kMaxRequestKeys, count)) return std::nullopt;
  // Keys seen so far, for the duplicate check: on the stack, and left uninitialized (only the
  // first `i` are read), which keeps a 1 KiB clear off every call.
  struct Key {
    const char* data;
    std::size_t size;
  };
  Key keys[kMaxRequestKeys];
  Scanned id, op, item;
  for (std::size_t i = 0; i < count; ++i) {
    Scanned key, value;
    if (!in.scalar(key) || key.kind != ScanKind::str) return std::nullopt;
    for (std::size_t j = 0; j < i; ++j)
      if (std::string_view(keys[j].data, keys[j].size) == key.str) return std::nullopt;
    keys[i] = Key{key.str.data(), key.str.size()};
    if (!in.scalar(value)) return std::nullopt;
    if (key.str == "id") id = value;
    else if (key.str == "op") op = value;
    else if (key.str == "item") item = value;
  }
  if (!in.at_end()) return std::nullopt;
  if (id.kind != ScanKind::str || id.str.empty() || id.str.size() > kMaxIdBytes) return std::nullopt;
  if (op.kind != ScanKind::str) return std::nullopt;
  const std::optional<Op> parsed = parse_op(op.str);
  if (!parsed) return std::nullopt;
  RouteView route{*parsed, id.str, {}};
  if (op_names_item(*parsed)) {
    if (item.kind != ScanKind::str || !is_valid_identifier(item.str)) return std::nullopt;
    route.item = item.str;
  }
  return route;
}

namespace {
// list (v2): status (required), limit (1..kMaxListLimit), cursor (checked against the status).
std::optional<DecodeError> read_list_fields(const FieldView& f, Request& r, const std::optional<std::string>& id) {
  const msgpack::object* status = f.find("status");
  if (status == nullptr) return bad("missing field 'status' (open or closed)", id);
  if (status->type != msgpack::type::STR || (as_view(*status) != "open" && as_view(*status) != "closed"))
    return bad("field 'status' must be \"open\" or \"closed\"", id);
  r.list_closed = as_view(*status) == "closed";
  bool present = false;
  r.limit = kDefaultListLimit;
  if (auto err = read_u64(f, "limit", false, 1, r.limit, present, id)) return err;
  if (r.limit > kMaxListLimit) return bad("field 'limit' must be 1 to " + std::to_string(kMaxListLimit), id);
  const msgpack::object* cursor = f.find("cursor");
  if (cursor == nullptr) return std::nullopt;
  if (cursor->type != msgpack::type::STR) return bad("field 'cursor' must be a string from a previous list reply", id);
  std::string why;
  if (!decode_cursor(as_view(*cursor), r.list_closed, &why)) return bad("field 'cursor' " + why, id);
  r.cursor.assign(as_view(*cursor));
  return std::nullopt;
}
}  // namespace

std::variant<Request, DecodeError> decode_request(std::string_view frame, uint64_t now_ms,
                                                  std::size_t max_request_bytes) {
  msgpack::object_handle handle;
  auto decoded_head = read_head(frame, max_request_bytes, handle);
  if (auto* err = std::get_if<DecodeError>(&decoded_head)) return std::move(*err);
  Head& head = std::get<Head>(decoded_head);
  const FieldView& f = head.fields;
  const std::optional<std::string> id = head.route.id;

  Request r;
  r.op = head.route.op;
  r.id = std::move(head.route.id);
  r.item = std::move(head.route.item);
  bool present = false;
  if (r.op == Op::list) {
    if (auto err = read_list_fields(f, r, id)) return std::move(*err);
    return r;
  }
  if (!op_names_item(r.op)) return r;
  switch (r.op) {
    case Op::open: {
      if (auto err = read_u64(f, "start", false, 1, r.start, present, id)) return std::move(*err);
      if (auto err = read_u64(f, "increment", false, 1, r.increment, present, id)) return std::move(*err);
      uint64_t closes_at = 0;
      if (auto err = read_u64(f, "closes_at", false, 0, closes_at, present, id)) return std::move(*err);
      if (present) {
        if (closes_at <= now_ms) return bad("field 'closes_at' must be in the future (unix ms)", id);
        r.closes_at = closes_at;
      }
      uint64_t reserve = 0;
      if (auto err = read_u64(f, "reserve", false, 1, reserve, present, id)) return std::move(*err);
      if (present) r.reserve = reserve;
      if (auto err = read_u64(f, "extend_ms", false, 0, r.extend_ms, present, id)) return std::move(*err);
      if (r.extend_ms > kMaxExtendMs)
        return bad("field 'extend_ms' must be at most " + std::to_string(kMaxExtendMs) + " (24 hours)", id);
      if (auto err = read_text(f, "title", r.title, check_title, id)) return std::move(*err);
      if (auto err = read_text(f, "description", r.description, check_description, id)) return std::move(*err);
      if (auto err = read_text(f, "image_url", r.image_url, check_image_url, id)) return std::move(*err);
      break;
    }
    case Op::bid: {
      if (auto err = read_identifier(f, "bidder", r.bidder, id)) return std::move(*err);
      if (auto err = read_u64(f, "amount", true, 1, r.amount, present, id)) return std::move(*err);
      uint64_t max = 0;
      if (auto err = read_u64(f, "max", false, 1, max, present, id)) return std::move(*err);
      // The message never repeats the value: a max is the bidder's secret.
      if (present && max < r.amount) return bad("field 'max' must be at least 'amount'", id);
      if (present && max > r.amount) r.max = max;  // max == amount is a v1 bid
      break;
    }
    case Op::history:
      if (auto err = read_u64(f, "after", false, 0, r.after, present, id)) return std::move(*err);
      if (auto err = read_u64(f, "limit", false, 0, r.limit, present, id)) return std::move(*err);
      if (r.limit > kMaxHistoryLimit) r.limit = kMaxHistoryLimit;
      break;
    default:
      break;
  }
  return r;
}

std::string encode_ok(std::string_view id, const std::vector<Field>& fields) {
  msgpack::sbuffer buf(128);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<uint32_t>(2 + fields.size()));
  pack_str(pk, "ok");
  pk.pack_true();
  pack_str(pk, "id");
  pack_str(pk, id);
  for (const Field& f : fields) {
    pack_str(pk, f.key);
    pack_value(pk, f.value);
  }
  return std::string(buf.data(), buf.size());
}

std::string encode_error(const std::optional<std::string>& id, ErrorCode code, std::string_view message,
                         const std::vector<Field>& extra) {
  msgpack::sbuffer buf(128);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<uint32_t>(4 + extra.size()));
  pack_str(pk, "ok");
  pk.pack_false();
  pack_str(pk, "id");
  pack_opt_id(pk, id);
  pack_str(pk, "error");
  pack_str(pk, error_code_name(code));
  pack_str(pk, "message");
  pack_str(pk, message);
  for (const Field& f : extra) {
    pack_str(pk, f.key);
    pack_value(pk, f.value);
  }
  return std::string(buf.data(), buf.size());
}

std::string encode_history_ok(std::string_view id, std::string_view item,
                              const std::vector<std::string_view>& encoded_events) {
  msgpack::sbuffer buf(256);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(4);
  pack_str(pk, "ok");
  pk.pack_true();
  pack_str(pk, "id");
  pack_str(pk, id);
  pack_str(pk, "item");
  pack_str(pk, item);
  pack_str(pk, "events");
  pk.pack_array(static_cast<uint32_t>(encoded_events.size()));
  // Each element is already one complete MessagePack map.
  for (std::string_view e : encoded_events) buf.write(e.data(), e.size());
  return std::string(buf.data(), buf.size());
}

std::string_view event_kind_name(EventKind kind) {
  switch (kind) {
    case EventKind::open: return "open";
    case EventKind::max: return "max";
    case EventKind::closed: return "closed";
    case EventKind::extended: return "extended";
  }
  return "open";
}

std::string encode_event(const Event& e) {
  msgpack::sbuffer buf(96);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  const uint32_t extra = e.kind == EventKind::open       ? 0
                         : e.kind == EventKind::extended ? 1
                         : e.kind == EventKind::closed && e.reserve_met ? 3
                                                                        : 2;
  pk.pack_map(4 + extra);
  pack_str(pk, "event");
  pack_str(pk, event_kind_name(e.kind));
  pack_str(pk, "item");
  pack_str(pk, e.item);
  pack_str(pk, "seq");
  pk.pack_uint64(e.seq);
  pack_str(pk, "ts");
  pk.pack_uint64(e.ts);
  if (e.kind == EventKind::extended) {
    pack_str(pk, "closes_at");
    pack_value(pk, opt_value(e.closes_at));
  } else if (e.kind != EventKind::open) {
    pack_str(pk, "amount");
    pack_value(pk, opt_value(e.amount));
    pack_str(pk, e.kind == EventKind::max ? "bidder" : "winner");
    pack_value(pk, opt_value(e.bidder));
    if (e.kind == EventKind::closed && e.reserve_met) {
      pack_str(pk, "reserve_met");
      pack_value(pk, Value{*e.reserve_met});
    }
  }
  return std::string(buf.data(), buf.size());
}

std::optional<Event> decode_event(std::string_view body) {
  msgpack::object_handle handle;
  std::string why;
  if (!unpack_whole(body, reply_limits(), handle, why)) return std::nullopt;
  return event_from_object(handle.get());
}

namespace {
std::string topic_of(std::string_view prefix, std::string_view name) {
  std::string t(prefix);
  t += name;
  t += '/';
  return t;
}
}  // namespace

std::string feed_topic(std::string_view item) { return topic_of(kFeedTopicPrefix, item); }

std::string bidder_topic(std::string_view bidder) { return topic_of(kBidderTopicPrefix, bidder); }

std::string encode_outbid(std::string_view item, uint64_t seq, uint64_t ts, uint64_t amount) {
  msgpack::sbuffer buf(80);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(5);
  pack_str(pk, "event");
  pack_str(pk, "outbid");
  pack_str(pk, "item");
  pack_str(pk, item);
  pack_str(pk, "seq");
  pk.pack_uint64(seq);
  pack_str(pk, "ts");
  pk.pack_uint64(ts);
  pack_str(pk, "amount");
  pk.pack_uint64(amount);
  return std::string(buf.data(), buf.size());
}

std::string encode_map(const std::vector<Field>& fields) {
  msgpack::sbuffer buf(128);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<uint32_t>(fields.size()));
  for (const Field& f : fields) {
    pack_str(pk, f.key);
    pack_value(pk, f.value);
  }
  return std::string(buf.data(), buf.size());
}

std::string encode_list_ok(std::string_view id, const std::vector<std::string_view>& encoded_entries,
                           const std::optional<std::string>& cursor, bool partial,
                           const std::vector<std::string>& missing) {
  msgpack::sbuffer buf(256);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(6);
  pack_str(pk, "ok");
  pk.pack_true();
  pack_str(pk, "id");
  pack_str(pk, id);
  pack_str(pk, "items");
  pk.pack_array(static_cast<uint32_t>(encoded_entries.size()));
  for (std::string_view e : encoded_entries) buf.write(e.data(), e.size());  // complete maps
  pack_str(pk, "cursor");
  pack_opt_id(pk, cursor);
  pack_str(pk, "partial");
  partial ? pk.pack_true() : pk.pack_false();
  pack_str(pk, "missing");
  pk.pack_array(static_cast<uint32_t>(missing.size()));
  for (const std::string& m : missing) pack_str(pk, m);
  return std::string(buf.data(), buf.size());
}

const Value* ListEntry::find(std::string_view key) const {
  for (const Field& f : fields)
    if (f.key == key) return &f.value;
  return nullptr;
}

namespace {
std::optional<ListEntry> list_entry_from_object(const msgpack::object& o) {
  if (o.type != msgpack::type::MAP) return std::nullopt;
  ListEntry e;
  bool have_item = false, have_status = false, have_closes_at = false;
  for (uint32_t i = 0; i < o.via.map.size; ++i) {
    const auto& kv = o.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) return std::nullopt;
    auto value = object_to_value(kv.val);
    if (!value) continue;
    const std::string_view key = as_view(kv.key);
    if (key == "item") {
      const auto* s = std::get_if<std::string>(&*value);
      if (s == nullptr) return std::nullopt;
      e.key.item = *s;
      have_item = true;
    } else if (key == "status") {
      const auto* s = std::get_if<std::string>(&*value);
      if (s == nullptr || (*s != "open" && *s != "closed")) return std::nullopt;
      e.key.closed = *s == "closed";
      have_status = true;
    } else if (key == "closes_at") {
      if (const auto* at = std::get_if<uint64_t>(&*value)) e.key.closes_at = *at;
      else if (!std::holds_alternative<Nil>(*value)) return std::nullopt;
      have_closes_at = true;
    }
    e.fields.push_back(Field{std::string(key), std::move(*value)});
  }
  if (!have_item || !have_status || !have_closes_at) return std::nullopt;
  msgpack::sbuffer buf(128);
  msgpack::pack(buf, o);
  e.encoded.assign(buf.data(), buf.size());
  return e;
}
}  // namespace

std::optional<ListPage> decode_list_ok(std::string_view frame) {
  msgpack::object_handle handle;
  std::string why;
  if (!unpack_whole(frame, reply_limits(), handle, why)) return std::nullopt;
  const msgpack::object& root = handle.get();
  if (root.type != msgpack::type::MAP) return std::nullopt;
  ListPage page;
  bool ok = false, have_items = false;
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    const auto& kv = root.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) return std::nullopt;
    const std::string_view key = as_view(kv.key);
    const msgpack::object& v = kv.val;
    if (key == "ok") {
      ok = v.type == msgpack::type::BOOLEAN && v.via.boolean;
    } else if (key == "id" && v.type == msgpack::type::STR) {
      page.id = std::string(as_view(v));
    } else if (key == "items") {
      if (v.type != msgpack::type::ARRAY) return std::nullopt;
      for (uint32_t j = 0; j < v.via.array.size; ++j) {
        auto e = list_entry_from_object(v.via.array.ptr[j]);
        if (!e) return std::nullopt;
        page.entries.push_back(std::move(*e));
      }
      have_items = true;
    } else if (key == "cursor") {
      if (v.type == msgpack::type::STR) page.cursor = std::string(as_view(v));
      else if (v.type != msgpack::type::NIL) return std::nullopt;
    } else if (key == "partial") {
      if (v.type != msgpack::type::BOOLEAN) return std::nullopt;
      page.partial = v.via.boolean;
    } else if (key == "missing") {
      if (v.type != msgpack::type::ARRAY) return std::nullopt;
      for (uint32_t j = 0; j < v.via.array.size; ++j) {
        if (v.via.array.ptr[j].type != msgpack::type::STR) return std::nullopt;
        page.missing.emplace_back(as_view(v.via.array.ptr[j]));
      }
    }
  }
  if (!ok || !have_items) return std::nullopt;
  return page;
}

const Value* Reply::find(std::string_view key) const {
  for (const Field& f : fields)
    if (f.key == key) return &f.value;
  return nullptr;
}

std::optional<uint64_t> Reply::u64(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* x = std::get_if<uint64_t>(v)) return *x;
  return std::nullopt;
}

std::optional<std::string> Reply::str(std::string_view key) const {
  const Value* v = find(key);
  if (v == nullptr) return std::nullopt;
  if (const auto* x = std::get_if<std::string>(v)) return *x;
  return std::nullopt;
}

std::optional<Reply> decode_reply(std::string_view frame) {
  msgpack::object_handle handle;
  std::string why;
  if (!unpack_whole(frame, reply_limits(), handle, why)) return std::nullopt;
  const msgpack::object& root = handle.get();
  if (root.type != msgpack::type::MAP) return std::nullopt;
  Reply r;
  bool have_ok = false;
  for (uint32_t i = 0; i < root.via.map.size; ++i) {
    const auto& kv = root.via.map.ptr[i];
    if (kv.key.type != msgpack::type::STR) return std::nullopt;
    const std::string key(as_view(kv.key));
    const msgpack::object& v = kv.val;
    if (key == "ok") {
      if (v.type != msgpack::type::BOOLEAN) return std::nullopt;
      r.ok = v.via.boolean;
      have_ok = true;
    } else if (key == "id") {
      if (v.type == msgpack::type::STR) r.id = std::string(as_view(v));
    } else if (key == "error") {
      if (v.type == msgpack::type::STR) r.error = std::string(as_view(v));
    } else if (key == "message") {
      if (v.type == msgpack::type::STR) r.message = std::string(as_view(v));
    } else if (key == "events") {
      if (v.type != msgpack::type::ARRAY) return std::nullopt;
      for (uint32_t j = 0; j < v.via.array.size; ++j) {
        auto e = event_from_object(v.via.array.ptr[j]);
        if (!e) return std::nullopt;
        r.events.push_back(std::move(*e));
      }
    } else if (auto value = object_to_value(v)) {
      r.fields.push_back(Field{key, std::move(*value)});
    }
  }
  if (!have_ok) return std::nullopt;
  return r;
}

std::string msgpack_to_json(std::string_view frame) {
  msgpack::object_handle handle;
  std::string why;
  if (!unpack_whole(frame, reply_limits(), handle, why)) return "null";
  std::string out;
  to_json(out, handle.get());
  return out;
}

std::string encode_request(const Request& r) {
  std::vector<Field> f;
  f.push_back({"op", std::string(op_name(r.op))});
  f.push_back({"id", r.id});
  if (op_names_item(r.op)) f.push_back({"item", r.item});
  switch (r.op) {
    case Op::open:
      f.push_back({"start", r.start});
      f.push_back({"increment", r.increment});
      if (r.closes_at) f.push_back({"closes_at", *r.closes_at});
      if (r.reserve) f.push_back({"reserve", *r.reserve});
      if (r.extend_ms != 0) f.push_back({"extend_ms", r.extend_ms});
      if (!r.title.empty()) f.push_back({"title", r.title});
      if (!r.description.empty()) f.push_back({"description", r.description});
      if (!r.image_url.empty()) f.push_back({"image_url", r.image_url});
      break;
    case Op::bid:
      f.push_back({"bidder", r.bidder});
      f.push_back({"amount", r.amount});
      if (r.max) f.push_back({"max", *r.max});
      break;
    case Op::history:
      f.push_back({"after", r.after});
      f.push_back({"limit", r.limit});
      break;
    case Op::list:
      f.push_back({"status", std::string(r.list_closed ? "closed" : "open")});
      f.push_back({"limit", r.limit});
      if (!r.cursor.empty()) f.push_back({"cursor", r.cursor});
      break;
    default:
      break;
  }
  return encode_map(f);
}

}  // namespace bidmesh
