// The batch record of the write-ahead log: see batch_record.h for the format.
#include "nodes/batch_record.h"

namespace bidmesh {

namespace {

constexpr uint8_t kVersion = 1;
constexpr uint8_t kOpen = 0, kBid = 1, kClose = 2;

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
  std::string short_string() {
    const auto n = static_cast<std::size_t>(uint(1));
    if (!take(n)) return {};
    return std::string(in_.substr(pos_ - n, n));
  }

 private:
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
  put_u8(out, kVersion);
  put_u64(out, now_ms);
  const std::size_t count_at = out.size();
  put_u32(out, 0);
  uint32_t count = 0;
  for (const Request& r : requests) {
    if (!op_is_write(r.op)) continue;
    ++count;
    put_u8(out, r.op == Op::open ? kOpen : r.op == Op::bid ? kBid : kClose);
    put_short_string(out, r.id);
    put_short_string(out, r.item);
    if (r.op == Op::open) {
      put_u64(out, r.start);
      put_u64(out, r.increment);
      put_u8(out, r.closes_at ? 1 : 0);
      if (r.closes_at) put_u64(out, *r.closes_at);
    } else if (r.op == Op::bid) {
      put_short_string(out, r.bidder);
      put_u64(out, r.amount);
    }
  }
  for (int i = 0; i < 4; ++i) out[count_at + i] = static_cast<char>((count >> (24 - 8 * i)) & 0xff);
}

Status decode_batch_record(std::string_view in, BatchRecord* out) {
  Cursor c(in);
  out->writes.clear();
  const auto version = c.uint(1);
  if (c.ok() && version != kVersion)
    return Status::corruption("batch record version " + std::to_string(version) + " is not known to this build");
  out->now_ms = c.uint(8);
  const auto count = c.uint(4);
  for (uint64_t i = 0; c.ok() && i < count; ++i) {
    Request r;
    const auto op = c.uint(1);
    r.id = c.short_string();
    r.item = c.short_string();
    if (op == kOpen) {
      r.op = Op::open;
      r.start = c.uint(8);
      r.increment = c.uint(8);
      if (c.uint(1) != 0) r.closes_at = c.uint(8);
    } else if (op == kBid) {
      r.op = Op::bid;
      r.bidder = c.short_string();
      r.amount = c.uint(8);
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
