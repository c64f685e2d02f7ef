// The item store's records that are off the per-bid path: see store_format.h for the format.
#include "nodes/store_format.h"

namespace bidmesh::store_format {

std::string deadline_key(uint64_t closes_at, std::string_view item) {
  std::string k;
  append_u64(k, closes_at);
  k.append(item);
  return k;
}

std::string encode_details(const ItemDetails& d) {
  std::string out(1, '\1');
  for (const std::string* text : {&d.title, &d.description, &d.image_url}) {
    const auto n = static_cast<uint16_t>(text->size());  // at most 2000 bytes (the decoder's rules)
    out.push_back(static_cast<char>(n >> 8));
    out.push_back(static_cast<char>(n & 0xff));
    out.append(*text);
  }
  return out;
}

bool decode_details(std::string_view in, ItemDetails* d) {
  if (in.empty() || in[0] != 1) return false;
  std::size_t pos = 1;
  for (std::string* text : {&d->title, &d->description, &d->image_url}) {
    if (in.size() - pos < 2) return false;
    const std::size_t n = (static_cast<unsigned char>(in[pos]) << 8) | static_cast<unsigned char>(in[pos + 1]);
    pos += 2;
    if (in.size() - pos < n) return false;
    text->assign(in.substr(pos, n));
    pos += n;
  }
  return pos == in.size();
}

std::string encode_log_position(LogPosition p) {
  std::string out;
  append_u64(out, p.segment);
  append_u64(out, p.offset);
  return out;
}

bool decode_log_position(std::string_view raw, LogPosition* p) {
  if (raw.size() != 16) return false;
  *p = LogPosition{read_u64(raw.data()), read_u64(raw.data() + 8)};
  return true;
}

std::string encode_item_count(uint64_t n) {
  std::string out;
  append_u64(out, n);
  return out;
}

bool decode_item_count(std::string_view raw, uint64_t* n) {
  if (raw.size() != 8) return false;
  *n = read_u64(raw.data());
  return true;
}

}  // namespace bidmesh::store_format
