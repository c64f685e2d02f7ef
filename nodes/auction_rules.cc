// The auction rules: see auction_rules.h.
#include "nodes/auction_rules.h"

#include <algorithm>
#include <cstddef>
#include <utility>
#include <vector>

#include "protocol/errors.h"

namespace bidmesh {

namespace {

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

uint64_t saturating_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }

// MessagePack, as msgpack-c packs what protocol/messages.cc encodes: reads one str header at
// *p; returns its body, or nullopt when *p holds no str.
std::optional<std::string_view> read_str(std::string_view in, std::size_t* p) {
  if (*p >= in.size()) return std::nullopt;
  const auto byte = [&](std::size_t i) { return static_cast<unsigned char>(in[i]); };
  const unsigned char tag = byte(*p);
  std::size_t len = 0, head = 1;
  if ((tag & 0xe0) == 0xa0) {
    len = tag & 0x1f;
  } else if (tag == 0xd9 || tag == 0xda || tag == 0xdb) {
    head = 1 + (std::size_t{1} << (tag - 0xd9));  // 1, 2 or 4 length bytes, big-endian
    if (*p + head > in.size()) return std::nullopt;
    for (std::size_t i = 1; i < head; ++i) len = (len << 8) | byte(*p + i);
  } else {
    return std::nullopt;
  }
  if (*p + head + len > in.size()) return std::nullopt;
  const std::string_view body = in.substr(*p + head, len);
  *p += head + len;
  return body;
}

// The outcome of a reply as encode_ok and encode_error make it (a map whose first entries are
// "ok", then "id" and "error" for an error), read from those few bytes without unpacking:
// *error = nullopt for ok, the code for an error. False for bytes of another shape. No allocation.
bool read_reply_outcome(std::string_view in, std::optional<ErrorCode>* error) {
  if (in.empty()) return false;
  const unsigned char map = static_cast<unsigned char>(in[0]);
  std::size_t p = (map & 0xf0) == 0x80 ? 1 : map == 0xde ? 3 : map == 0xdf ? 5 : 0;
  if (p == 0 || read_str(in, &p) != "ok" || p >= in.size()) return false;
  const unsigned char ok = static_cast<unsigned char>(in[p++]);
  if (ok == 0xc3) {
    *error = std::nullopt;
    return true;
  }
  if (ok != 0xc2 || read_str(in, &p) != "id" || p >= in.size()) return false;
  if (static_cast<unsigned char>(in[p]) == 0xc0) {
    ++p;  // nil: a request whose id could not be read
  } else if (!read_str(in, &p)) {
    return false;
  }
  if (read_str(in, &p) != "error") return false;
  const auto name = read_str(in, &p);
  const auto code = name ? parse_error_code(*name) : std::nullopt;
  if (!code) return false;
  *error = code;
  return true;
}

// Where a judgment goes: the reply, and its outcome (nullopt for ok, else the error code).
struct Judged {
  std::string* reply;
  std::optional<ErrorCode>* error;
  void set(std::string bytes, std::optional<ErrorCode> code) {
    *reply = std::move(bytes);
    *error = code;
  }
  void ok(std::string bytes) { set(std::move(bytes), std::nullopt); }
  void refuse(const Request& r, ErrorCode code, std::string_view message, const std::vector<Field>& extra = {}) {
    set(encode_error(r.id, code, message, extra), code);
  }
};

std::optional<EventKind> judge_open(const Request& r, bool found, ItemState& s, Judged out) {
  if (found) {
    out.refuse(r, ErrorCode::exists, "item " + in_quotes(r.item) + " was opened before");
    return std::nullopt;
  }
  s = ItemState{};
  s.seq = 1;
  s.start = r.start;
  s.increment = r.increment;
  s.closes_at = r.closes_at;
  s.reserve = r.reserve;
  s.extend_ms = r.extend_ms;
  s.has_details = !r.title.empty() || !r.description.empty() || !r.image_url.empty();
  out.ok(encode_ok(r.id, {{"item", r.item}, {"seq", s.seq}}));
  return EventKind::open;
}

// Bids and closes target an open item: the error reply when it is missing or closed.
bool refuse_unless_open(const Request& r, bool found, const ItemState& s, Judged out) {
  if (!found) {
    out.set(unknown_item_reply(r), ErrorCode::unknown_item);
    return true;
  }
  if (s.closed) {
    out.refuse(r, ErrorCode::closed, "item " + in_quotes(r.item) + " is closed");
    return true;
  }
  return false;
}

std::optional<EventKind> judge_bid(const Request& r, bool found, ItemState& s, uint64_t now_ms, Judged out) {
  if (refuse_unless_open(r, found, s, out)) return std::nullopt;
  // At or after closes_at the item is closed, even if the auto-close has not run yet.
  if (s.closes_at && now_ms >= *s.closes_at) {
    out.refuse(r, ErrorCode::closed,
               "item " + in_quotes(r.item) + " closed at " + std::to_string(*s.closes_at) + " (unix ms)");
    return std::nullopt;
  }
  // max + increment may not fit in 64 bits: compare by subtraction instead.
  const bool too_low = s.max ? (r.amount < *s.max || r.amount - *s.max < s.increment) : r.amount < s.start;
  if (too_low) {
    const std::string message =
        s.max ? "amount " + std::to_string(r.amount) + " is below the max " + std::to_string(*s.max) +
                    " plus the increment " + std::to_string(s.increment)
              : "amount " + std::to_string(r.amount) + " is below the start " + std::to_string(s.start);
    out.refuse(r, ErrorCode::too_low, message, {{"max", opt_value(s.max)}});
    return std::nullopt;
  }
  // Proxy bidding (auction_rules.h). A v1 bid is a bid whose max is its amount; on a v1-only
  // item it always leads and the price becomes its amount, as in v1.
  const uint64_t bid_max = r.max.value_or(r.amount);
  bool leading = true;
  if (!s.max || s.bidder == r.bidder) {  // the first bid, or the leader raising its bid
    s.max = r.amount;
    s.leader_max = std::max(s.leader_max, bid_max);
    if (!s.bidder) s.bidder = r.bidder;
  } else if (bid_max > s.leader_max) {   // a new leader: the former leader's max is second
    s.max = std::max(r.amount, std::min(saturating_add(s.leader_max, s.increment), bid_max));
    s.leader_max = bid_max;
    s.bidder = r.bidder;
  } else {                               // the leader keeps the lead (ties too): this max is second
    s.max = std::min(saturating_add(bid_max, s.increment), s.leader_max);
    leading = false;
  }
  if (s.reserve && s.leader_max >= *s.reserve && *s.max < *s.reserve) s.max = *s.reserve;
  s.seq += 1;
  s.bids += 1;
  // Soft close: a bid accepted less than extend_ms before the deadline moves it.
  const bool extends = s.extend_ms != 0 && s.closes_at && *s.closes_at - now_ms < s.extend_ms;
  if (extends) {
    s.closes_at = now_ms + s.extend_ms;
    s.seq += 1;
  }
  if (!r.max && leading && !extends) {  // the v1 reply, byte for byte
    out.ok(encode_ok(r.id, {{"item", r.item}, {"bidder", r.bidder}, {"amount", r.amount}, {"seq", s.seq}}));
  } else {
    std::vector<Field> fields{{"item", r.item}, {"bidder", r.bidder}, {"amount", r.amount}, {"seq", s.seq},
                              {"leading", leading}, {"price", *s.max}};
    if (extends) fields.push_back({"closes_at", *s.closes_at});
    out.ok(encode_ok(r.id, fields));
  }
  return EventKind::max;
}

std::optional<EventKind> judge_close(const Request& r, bool found, ItemState& s, Judged out) {
  if (refuse_unless_open(r, found, s, out)) return std::nullopt;
  mark_closed(s);
  const bool met = s.reserve_met();
  std::vector<Field> fields{{"item", r.item}, {"seq", s.seq}, {"winner", met ? opt_value(s.bidder) : Value{Nil{}}},
                            {"amount", met ? opt_value(s.max) : Value{Nil{}}}};
  if (s.reserve) fields.push_back({"reserve_met", met});
  out.ok(encode_ok(r.id, fields));
  return EventKind::closed;
}

}  // namespace

std::optional<EventKind> judge_write(const Request& r, bool found, ItemState& s, uint64_t now_ms, std::string* reply,
                                     std::optional<ErrorCode>* error) {
  std::optional<ErrorCode> unused;
  Judged out{reply, error != nullptr ? error : &unused};
  switch (r.op) {
    case Op::open: return judge_open(r, found, s, out);
    case Op::bid: return judge_bid(r, found, s, now_ms, out);
    case Op::close: return judge_close(r, found, s, out);
    default: return std::nullopt;  // not a write (see REQUIRES)
  }
}

void judge_repeat(const Request& r, std::string_view fingerprint, std::string_view stored_fingerprint,
                  std::string_view stored_reply, std::string* reply, std::optional<ErrorCode>* error) {
  std::optional<ErrorCode> unused;
  Judged out{reply, error != nullptr ? error : &unused};
  if (stored_fingerprint == fingerprint) {
    // The remembered reply, byte for byte; no effect again. Its outcome is read from its bytes:
    // the request record keeps only those (nodes/store_format.h), and storing the code beside
    // them would change the store format for the sake of a counter.
    reply->assign(stored_reply);
    if (!read_reply_outcome(stored_reply, out.error)) *out.error = ErrorCode::internal;
  } else {
    out.refuse(r, ErrorCode::conflict, "this id was used before for another write on item " + in_quotes(r.item));
  }
}

bool deadline_closes(bool found, const ItemState& s, uint64_t closes_at) {
  return found && !s.closed && s.closes_at && *s.closes_at == closes_at;
}

void mark_closed(ItemState& s) {
  s.closed = true;
  s.seq += 1;
}

Event change_event(std::string_view item, const ItemState& s, EventKind kind, uint64_t now_ms) {
  Event e;
  e.kind = kind;
  e.item = std::string(item);
  e.seq = s.seq;
  e.ts = now_ms;
  if (kind == EventKind::max) {
    e.amount = s.max;
    e.bidder = s.bidder;
  } else if (kind == EventKind::closed) {
    const bool met = s.reserve_met();
    if (met) {
      e.amount = s.max;
      e.bidder = s.bidder;
    }
    if (s.reserve) e.reserve_met = met;
  } else if (kind == EventKind::extended) {
    e.closes_at = s.closes_at;
  }
  return e;
}

namespace {
// The fields `get` and a `list` entry share.
std::vector<Field> item_fields(std::string_view item, const ItemState& s) {
  std::vector<Field> fields{{"item", std::string(item)},
                            {"status", std::string(s.closed ? "closed" : "open")},
                            {"max", opt_value(s.max)},
                            {"bidder", opt_value(s.bidder)},
                            {"seq", s.seq},
                            {"bids", s.bids},
                            {"start", s.start},
                            {"increment", s.increment},
                            {"closes_at", opt_value(s.closes_at)}};
  // v2 fields only for items that use them: a v1 item's reply is v1's.
  if (s.reserve) fields.push_back({"reserve_met", s.reserve_met()});
  if (s.extend_ms != 0) fields.push_back({"extend_ms", s.extend_ms});
  return fields;
}
}  // namespace

std::string get_reply(const Request& r, const ItemState& s, const ItemDetails* details) {
  std::vector<Field> fields = item_fields(r.item, s);
  if (details) {
    if (!details->title.empty()) fields.push_back({"title", details->title});
    if (!details->description.empty()) fields.push_back({"description", details->description});
    if (!details->image_url.empty()) fields.push_back({"image_url", details->image_url});
  }
  return encode_ok(r.id, fields);
}

std::string list_entry(std::string_view item, const ItemState& s, std::string_view title) {
  std::vector<Field> fields = item_fields(item, s);
  if (!title.empty()) fields.push_back({"title", std::string(title)});
  return encode_map(fields);
}

std::string unknown_item_reply(const Request& r) {
  return encode_error(r.id, ErrorCode::unknown_item, "item " + in_quotes(r.item) + " was never opened");
}

}  // namespace bidmesh
