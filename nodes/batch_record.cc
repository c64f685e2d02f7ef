// The batch record of the write-ahead log: see batch_record.h for the format.
#include "nodes/batch_record.h"

namespace bidmesh {

namespace {

constexpr uint8_t kVersion = 1, kVersionV2 = 2;
constexpr uint8_t kOpen = 0, kBid = 1, kClose = 2, kOpenV2 = 3, kBidV2 = 4;

void put_u8(std::string& out, uint8_t v) { out.push_back(static_cast<char>(v)); }
void put_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
void put_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
void put_short_string(std::string& out, std::string_view s) {
  put_u8(out, static_cast<uint8_t>(s.size()));
  out.append(s);
}
// Texts of at most 2000 bytes (the decoder's rules for the v2 details).
void put_text(std::string& out, std::string_view s) {
  out.push_back(static_cast<char>((s.size() >> 8) & 0xff));
  out.push_back(static_cast<char>(s.size() & 0xff));
  out.append(s);
}

// Reads from a view, remembering the first failure: every read after it returns zero values.
class Cursor {
 public:
  explicit Cursor(std::string_view in) : in_(in) {}
  bool ok() const { return ok_; }
  bool at_end() const { return pos_ == in_.size(); }
  uint64_t uint(int bytes) {
    if (!take(bytes)) return 0;
    uint64_t v = 0;
    for (int i = 0; i < bytes; ++i) v = (v << 8) | static_cast<unsigned char>(in_[pos_ - bytes + i]);
    return v;
  }
  std::string short_string() { return string_of(static_cast<std::size_t>(uint(1))); }
  std::string text() { return string_of(static_cast<std::size_t>(uint(2))); }

 private:
  std::string string_of(std::size_t n) {
    if (!take(n)) return {};
    return std::string(in_.substr(pos_ - n, n));
  }
  bool take(std::size_t n) {
    if (!ok_ || in_.size() - pos_ < n) {
      ok_ = false;
      return false;
    }
    pos_ += n;
    return true;
  }
  std::string_view in_;
  std::size_t pos_ = 0;
  bool ok_ = true;
};

}  // namespace

void encode_batch_record(uint64_t now_ms, const std::vector<Request>& requests, std::string& out) {
  out.clear();
  put_u8(out, kVersion);  // raised to 2 below when a v2 write is written
  put_u64(out, now_ms);
  const std::size_t count_at = out.size();
  put_u32(out, 0);
  uint32_t count = 0;
  for (const Request& r : requests) {
    if (!op_is_write(r.op)) continue;
    ++count;
    const bool v2 = r.op != Op::close && r.has_v2_fields();
    if (v2) out[0] = static_cast<char>(kVersionV2);
    put_u8(out, r.op == Op::open ? (v2 ? kOpenV2 : kOpen) : r.op == Op::bid ? (v2 ? kBidV2 : kBid) : kClose);
    put_short_string(out, r.id);
    put_short_string(out, r.item);
    if (r.op == Op::open) {
      put_u64(out, r.start);
      put_u64(out, r.increment);
      put_u8(out, r.closes_at ? 1 : 0);
      if (r.closes_at) put_u64(out, *r.closes_at);
      if (v2) {
        put_u8(out, r.reserve ? 1 : 0);
        if (r.reserve) put_u64(out, *r.reserve);
        put_u64(out, r.extend_ms);
        put_text(out, r.title);
        put_text(out, r.description);
        put_text(out, r.image_url);
      }
    } else if (r.op == Op::bid) {
      put_short_string(out, r.bidder);
      put_u64(out, r.amount);
      if (v2) put_u64(out, r.max.value_or(r.amount));
    }
  }
  for (int i = 0; i < 4; ++i) out[count_at + i] = static_cast<char>((count >> (24 - 8 * i)) & 0xff);
}

std::size_t batch_record_write_bytes(const Request& r) {
  std::size_t n = 3 + r.id.size() + r.item.size();
  if (r.op == Op::open) {
    n += 17 + (r.closes_at ? 8 : 0);
    if (r.has_v2_fields())
      n += 1 + (r.reserve ? 8 : 0) + 8 + 6 + r.title.size() + r.description.size() + r.image_url.size();
  } else if (r.op == Op::bid) {
    n += 9 + r.bidder.size() + (r.has_v2_fields() ? 8 : 0);
  }
  return n;
}

Status decode_batch_record(std::string_view in, BatchRecord* out) {
  Cursor c(in);
  out->writes.clear();
  const auto version = c.uint(1);
  if (c.ok() && version != kVersion && version != kVersionV2)
    return Status::corruption("batch record version " + std::to_string(version) + " is not known to this build");
  out->now_ms = c.uint(8);
  const auto count = c.uint(4);
  for (uint64_t i = 0; c.ok() && i < count; ++i) {
    Request r;
    const auto op = c.uint(1);
    r.id = c.short_string();
    r.item = c.short_string();
    const bool v2_op = op == kOpenV2 || op == kBidV2;
    if (v2_op && version != kVersionV2)
      return Status::corruption("batch record version 1 holds the v2 op " + std::to_string(op));
    if (op == kOpen || op == kOpenV2) {
      r.op = Op::open;
      r.start = c.uint(8);
      r.increment = c.uint(8);
      if (c.uint(1) != 0) r.closes_at = c.uint(8);
      if (v2_op) {
        if (c.uint(1) != 0) r.reserve = c.uint(8);
        r.extend_ms = c.uint(8);
        r.title = c.text();
        r.description = c.text();
        r.image_url = c.text();
      }
    } else if (op == kBid || op == kBidV2) {
      r.op = Op::bid;
      r.bidder = c.short_string();
      r.amount = c.uint(8);
      if (v2_op) {
        const uint64_t max = c.uint(8);
        if (max > r.amount) r.max = max;
      }
    } else if (op == kClose) {
      r.op = Op::close;
    } else if (c.ok()) {
      return Status::corruption("batch record: unknown op " + std::to_string(op));
    }
    out->writes.push_back(std::move(r));
  }
  if (!c.ok()) return Status::corruption("batch record: truncated");
  if (!c.at_end()) return Status::corruption("batch record: bytes after the last request");
  return Status::OK();
}

}  // namespace bidmesh
