// Moving a slot range between two stopped bid nodes' stores: see slot_move.h.
#include "nodes/slot_move.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>

#include "nodes/store_format.h"
#include "storage/crc32c.h"
#include "storage/log_reader.h"

namespace bidmesh::slot_move {

namespace fmt = store_format;

namespace {

// Version 2: store format 6 (request records in the requests tree). A version-1 file holds them
// as data keys, which a format-6 store must not take.
constexpr std::string_view kMagic = "BMSLOTS2";
constexpr std::string_view kMagicBeforeFormat6 = "BMSLOTS1";

// The records of one store for the items of a range, grouped by item (pointers into a RangeData).
using ByItem = std::map<std::string_view, std::vector<const Record*>>;

Status lmdb_error(const std::filesystem::path& dir, const char* call, int rc) {
  return Status::io_error("the store " + dir.string() + ": " + call + ": " + mdb_strerror(rc));
}

// Walks the data tree (seeking past the items outside `range`, one seek each), the deadlines tree
// and the requests tree, appending the records of the items in `range` to *out in tree and key
// order.
Status walk_range(MDB_txn* txn, const LmdbEnv& env, const std::filesystem::path& dir, SlotRange range,
                  std::vector<Record>* out, uint64_t* items) {
  Cursor c;
  int rc = c.open(txn, env.data);
  MDB_val k{}, v{};
  std::string seek;
  if (rc == 0) rc = c.get(&k, &v, MDB_FIRST);
  while (rc == 0) {
    const std::string_view key = to_sv(k);
    const std::optional<std::size_t> end = fmt::data_key_item_end(key);
    if (!end) return Status::corruption("the store " + dir.string() + " holds a data key of unknown shape");
    const std::string_view item = key.substr(0, *end);
    if (in_range(range, item)) {
      out->push_back({Tree::data, std::string(key), std::string(to_sv(v))});
      if (key[*end + 1] == fmt::kTagState) ++*items;
      rc = c.get(&k, &v, MDB_NEXT);
    } else {
      seek.assign(item);
      seek.push_back('\x01');  // past every key "item\0...": items never hold '\0'
      k = to_val(seek);
      rc = c.get(&k, &v, MDB_SET_RANGE);
    }
  }
  if (rc != MDB_NOTFOUND) return lmdb_error(dir, "data cursor", rc);

  Cursor d;
  rc = d.open(txn, env.deadlines);
  if (rc == 0) rc = d.get(&k, &v, MDB_FIRST);
  while (rc == 0) {
    const std::string_view key = to_sv(k);
    if (key.size() < fmt::kDeadlineKeyMinBytes)
      return Status::corruption("the store " + dir.string() + " holds a deadline key of unknown shape");
    if (in_range(range, fmt::deadline_item(key))) out->push_back({Tree::deadlines, std::string(key), std::string(to_sv(v))});
    rc = d.get(&k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb_error(dir, "deadlines cursor", rc);

  Cursor r;
  rc = r.open(txn, env.requests);
  if (rc == 0) rc = r.get(&k, &v, MDB_FIRST);
  while (rc == 0) {
    const std::optional<std::string_view> item = fmt::request_key_item(to_sv(k));
    if (!item) return Status::corruption("the store " + dir.string() + " holds a request key of unknown shape");
    if (in_range(range, *item)) out->push_back({Tree::requests, std::string(to_sv(k)), std::string(to_sv(v))});
    rc = r.get(&k, &v, MDB_NEXT);
  }
  if (rc != MDB_NOTFOUND) return lmdb_error(dir, "requests cursor", rc);
  return Status::OK();
}

ByItem group(const std::vector<Record>& records) {
  ByItem by;
  for (const Record& r : records) by[RangeData::item_of(r)].push_back(&r);
  return by;
}

bool same_records(const std::vector<const Record*>& a, const std::vector<const Record*>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const Record* x, const Record* y) { return *x == *y; });
}

bool has_state(const std::vector<const Record*>& records) {
  for (const Record* r : records) {
    if (r->tree != Tree::data) continue;
    const auto end = fmt::data_key_item_end(r->key);
    if (end && r->key[*end + 1] == fmt::kTagState) return true;
  }
  return false;
}

// meta "items" += delta (delta may be negative), in `txn`.
int add_to_item_count(TxnCalls& t, const LmdbEnv& env, int64_t delta) {
  if (delta == 0) return 0;
  // The counts of open items and records the node keeps (item_store.h) no longer hold: the
  // node counts them again at its next open.
  for (const char* count : {"open", "records"}) {
    if (const int rc = t.del(env.meta, count); rc != 0 && rc != MDB_NOTFOUND) return rc;
  }
  std::string_view raw;
  uint64_t n = 0;
  int rc = t.get(env.meta, "items", &raw);
  if (rc == 0 && !fmt::decode_item_count(raw, &n)) return t.fail(kBadRecord, "meta items");
  if (rc != 0 && rc != MDB_NOTFOUND) return rc;
  const int64_t next = static_cast<int64_t>(n) + delta;
  return t.put(env.meta, "items", fmt::encode_item_count(next < 0 ? 0 : static_cast<uint64_t>(next)));
}

MDB_dbi tree_dbi(const LmdbEnv& env, Tree t) {
  switch (t) {
    case Tree::data: return env.data;
    case Tree::deadlines: return env.deadlines;
    case Tree::requests: return env.requests;
  }
  return env.data;
}

void put_u16(std::string& out, uint16_t v) {
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v & 0xff));
}

// Reads fixed fields of an export file, refusing reads past its end.
struct Reader {
  std::string_view in;
  bool ok = true;
  std::string_view take(std::size_t n) {
    if (!ok || in.size() < n) {
      ok = false;
      return {};
    }
    const std::string_view s = in.substr(0, n);
    in.remove_prefix(n);
    return s;
  }
  uint64_t u64() { const auto s = take(8); return ok ? fmt::read_u64(s.data()) : 0; }
  uint32_t u32() { const auto s = take(4); return ok ? fmt::read_u32(s.data()) : 0; }
  uint8_t u8() { const auto s = take(1); return ok ? static_cast<uint8_t>(s[0]) : 0; }
  uint16_t u16() {
    const auto s = take(2);
    return ok ? static_cast<uint16_t>((static_cast<unsigned char>(s[0]) << 8) | static_cast<unsigned char>(s[1])) : 0;
  }
};

Status sync_path(const std::filesystem::path& p, int flags) {
  const int fd = ::open(p.c_str(), flags | O_CLOEXEC);
  if (fd < 0) return Status::io_error("cannot open " + p.string() + ": " + std::strerror(errno), errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Status::io_error("cannot fsync " + p.string() + ": " + std::strerror(err), err);
  return Status::OK();
}

}  // namespace

std::optional<SlotRange> parse_slot_range(std::string_view text) {
  auto number = [](std::string_view s) -> std::optional<uint32_t> {
    if (s.empty() || s.size() > 5) return std::nullopt;
    uint32_t v = 0;
    for (char ch : s) {
      if (ch < '0' || ch > '9') return std::nullopt;
      v = v * 10 + static_cast<uint32_t>(ch - '0');
    }
    if (v >= kSlotCount) return std::nullopt;
    return v;
  };
  const auto dash = text.find('-');
  const auto first = number(text.substr(0, dash));
  const auto last = dash == std::string_view::npos ? first : number(text.substr(dash + 1));
  if (!first || !last || *last < *first) return std::nullopt;
  return SlotRange{*first, *last};
}

std::string range_text(SlotRange r) { return std::to_string(r.first) + "-" + std::to_string(r.last); }

uint64_t RangeData::bytes() const {
  uint64_t n = 0;
  for (const Record& r : records) n += r.key.size() + r.value.size();
  return n;
}

std::string_view RangeData::item_of(const Record& r) {
  if (r.tree == Tree::deadlines) return fmt::deadline_item(r.key);
  if (r.tree == Tree::requests) return fmt::request_key_item(r.key).value_or(std::string_view(r.key));
  return std::string_view(r.key).substr(0, fmt::data_key_item_end(r.key).value_or(r.key.size()));
}

Status complete_store(const ItemStoreOptions& options, ItemStore::ReplayStats* replayed) {
  auto opened = ItemStore::open(options);
  if (auto* err = std::get_if<std::string>(&opened)) return Status::io_error(*err);
  ItemStore& store = *std::get<std::unique_ptr<ItemStore>>(opened);
  if (replayed != nullptr) *replayed = store.replay_stats();
  if (Status st = store.checkpoint(); !st.ok())
    return Status::io_error("cannot checkpoint the store " + options.dir.string() + ": " + st.message());
  return Status::OK();
}

Status LockedStore::open(const std::filesystem::path& dir, uint64_t map_size_bytes, std::unique_ptr<LockedStore>* out) {
  std::unique_ptr<LockedStore> s(new LockedStore());
  s->dir_ = dir;
  if (Status st = open_lmdb_env(dir, map_size_bytes, false, &s->env_); !st.ok()) return st;
  Txn t;
  int rc = t.begin(s->env_.env, MDB_RDONLY);
  if (rc != 0) return lmdb_error(dir, "mdb_txn_begin", rc);
  if ((rc = mdb_dbi_open(t.get(), "meta", 0, &s->env_.meta)) != 0 ||
      (rc = mdb_dbi_open(t.get(), "data", 0, &s->env_.data)) != 0 ||
      (rc = mdb_dbi_open(t.get(), "deadlines", 0, &s->env_.deadlines)) != 0)
    return lmdb_error(dir, "mdb_dbi_open", rc);
  std::string_view raw;
  if (get_value(t.get(), s->env_.meta, "format", &raw) != 0 || raw != fmt::kFormatVersion)
    return Status::corruption("the store " + dir.string() + " is not of format " + std::string(fmt::kFormatVersion));
  if ((rc = mdb_dbi_open(t.get(), "requests", 0, &s->env_.requests)) != 0) return lmdb_error(dir, "mdb_dbi_open", rc);
  LogPosition checkpoint;
  if ((rc = get_value(t.get(), s->env_.meta, "log", &raw)) != 0 || !fmt::decode_log_position(raw, &checkpoint))
    return Status::corruption("the store " + dir.string() + " has no checkpoint position");
  if ((rc = t.commit()) != 0) return lmdb_error(dir, "mdb_txn_commit", rc);  // keeps the dbi handles

  // Complete means: nothing in the log past the checkpoint. Never skip a record.
  ReplayResult result;
  Status st = replay_log(
      dir / "wal", checkpoint,
      [](std::string_view, LogPosition) { return Status::invalid_argument("a record past the checkpoint"); }, &result);
  if (!st.ok() && !st.is_invalid_argument()) return st;
  if (!st.ok() || result.torn)
    return Status::invalid_argument("the log of " + dir.string() + " holds records past its checkpoint " +
                                    checkpoint.to_string() + " (did the node run meanwhile?): stop it and run again");
  *out = std::move(s);
  return Status::OK();
}

Status LockedStore::begin_and_read(Txn& t, unsigned flags, SlotRange range, RangeData* out) const {
  if (const int rc = t.begin(env_.env, flags); rc != 0) return lmdb_error(dir_, "mdb_txn_begin", rc);
  out->range = range;
  out->records.clear();
  out->items = 0;
  return walk_range(t.get(), env_, dir_, range, &out->records, &out->items);
}

Status LockedStore::read_range(SlotRange range, RangeData* out) const {
  Txn t;
  return begin_and_read(t, MDB_RDONLY, range, out);
}

Status LockedStore::import_range(const RangeData& data, uint64_t* imported, uint64_t* already) {
  *imported = *already = 0;
  Txn t;
  RangeData here_data;
  if (Status st = begin_and_read(t, 0, data.range, &here_data); !st.ok()) return st;
  int rc = 0;
  const ByItem here = group(here_data.records);
  TxnCalls w{t.get()};
  int64_t added = 0;
  for (const auto& [item, records] : group(data.records)) {
    if (auto it = here.find(item); it != here.end()) {
      if (!same_records(it->second, records))
        return Status::invalid_argument("the destination " + dir_.string() + " already holds item '" + std::string(item) +
                                        "' with other records (" + std::to_string(it->second.size()) + " here, " +
                                        std::to_string(records.size()) + " moving): nothing imported");
      ++*already;
      continue;
    }
    for (const Record* r : records)
      if ((rc = w.put(tree_dbi(env_, r->tree), r->key, r->value)) != 0) return lmdb_error(dir_, w.failed_at, rc);
    ++*imported;
    if (has_state(records)) ++added;
  }
  if ((rc = add_to_item_count(w, env_, added)) != 0) return lmdb_error(dir_, w.failed_at, rc);
  // The listing tree is not moved record by record: the node rebuilds it at its next open.
  if ((rc = w.del(env_.meta, fmt::kListingMetaKey)) != 0) return lmdb_error(dir_, w.failed_at, rc);
  // The environment has no MDB_NOSYNC: this commit is durable when it returns.
  if ((rc = t.commit()) != 0) return lmdb_error(dir_, "mdb_txn_commit", rc);
  return Status::OK();
}

Status LockedStore::drop_range(const RangeData& data, uint64_t* dropped) {
  *dropped = 0;
  const ByItem wanted = group(data.records);
  Txn t;
  RangeData here_data;
  if (Status st = begin_and_read(t, 0, data.range, &here_data); !st.ok()) return st;
  TxnCalls w{t.get()};
  int rc = 0;
  for (const auto& [item, records] : group(here_data.records)) {
    auto it = wanted.find(item);
    if (it == wanted.end() || !same_records(it->second, records))
      return Status::invalid_argument("the source " + dir_.string() + " holds records of item '" + std::string(item) +
                                      "' that are not those exported (it changed after the export?): nothing dropped; "
                                      "export and import again");
    for (const Record* r : records)
      if ((rc = w.del(tree_dbi(env_, r->tree), r->key)) != 0) return lmdb_error(dir_, w.failed_at, rc);
    ++*dropped;
  }
  if ((rc = add_to_item_count(w, env_, -static_cast<int64_t>(here_data.items))) != 0) return lmdb_error(dir_, w.failed_at, rc);
  if ((rc = w.del(env_.meta, fmt::kListingMetaKey)) != 0) return lmdb_error(dir_, w.failed_at, rc);
  if ((rc = t.commit()) != 0) return lmdb_error(dir_, "mdb_txn_commit", rc);
  return Status::OK();
}

uint64_t LockedStore::item_count() const {
  Txn t;
  std::string_view raw;
  uint64_t n = 0;
  if (t.begin(env_.env, MDB_RDONLY) == 0 && get_value(t.get(), env_.meta, "items", &raw) == 0)
    fmt::decode_item_count(raw, &n);
  return n;
}

Status write_export(const std::filesystem::path& file, const RangeData& data) {
  std::string out(kMagic);
  fmt::append_u32(out, data.range.first);
  fmt::append_u32(out, data.range.last);
  put_u16(out, static_cast<uint16_t>(data.source.size()));  // a node name: at most 64 bytes
  out += data.source;
  fmt::append_u64(out, data.items);
  fmt::append_u64(out, data.records.size());
  for (const Record& r : data.records) {
    out.push_back(static_cast<char>(r.tree));
    fmt::append_u32(out, static_cast<uint32_t>(r.key.size()));
    out += r.key;
    fmt::append_u32(out, static_cast<uint32_t>(r.value.size()));
    out += r.value;
  }
  fmt::append_u32(out, crc32c_mask(crc32c(out)));

  const std::filesystem::path tmp = file.string() + ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(out.data(), static_cast<std::streamsize>(out.size()));
    f.close();
    if (!f) return Status::io_error("cannot write " + tmp.string());
  }
  if (Status st = sync_path(tmp, O_RDONLY); !st.ok()) return st;
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) return Status::io_error("cannot rename " + tmp.string() + " to " + file.string() + ": " + ec.message());
  return sync_path(file.parent_path().empty() ? "." : file.parent_path(), O_RDONLY | O_DIRECTORY);
}

Status read_export(const std::filesystem::path& file, RangeData* out) {
  std::ifstream f(file, std::ios::binary);
  if (!f) return Status::not_found("cannot read the export file " + file.string());
  std::ostringstream ss;
  ss << f.rdbuf();
  const std::string bytes = ss.str();
  auto damaged = [&](const std::string& what) {
    return Status::corruption("the export file " + file.string() + " is damaged (" + what + "): export it again");
  };
  if (std::string_view(bytes).substr(0, kMagicBeforeFormat6.size()) == kMagicBeforeFormat6)
    return Status::invalid_argument("the export file " + file.string() +
                                    " was written by an older bidmesh-slots (store format 5): export it again with this one");
  if (bytes.size() < kMagic.size() + 4 || std::string_view(bytes).substr(0, kMagic.size()) != kMagic)
    return damaged("not an export of bidmesh-slots");
  const std::string_view body = std::string_view(bytes).substr(0, bytes.size() - 4);
  if (crc32c_unmask(fmt::read_u32(bytes.data() + body.size())) != crc32c(body)) return damaged("checksum mismatch");
  Reader r{body.substr(kMagic.size())};
  RangeData d;
  d.range.first = r.u32();
  d.range.last = r.u32();
  d.source = std::string(r.take(r.u16()));
  d.items = r.u64();
  const uint64_t count = r.u64();
  if (!r.ok || d.range.last < d.range.first || d.range.last >= kSlotCount) return damaged("bad header");
  for (uint64_t i = 0; i < count && r.ok; ++i) {
    Record rec;
    const uint8_t tree = r.u8();
    rec.tree = static_cast<Tree>(tree);
    rec.key = std::string(r.take(r.u32()));
    rec.value = std::string(r.take(r.u32()));
    if (!r.ok) break;
    const bool shaped = (tree == static_cast<uint8_t>(Tree::data) && fmt::data_key_item_end(rec.key)) ||
                        (tree == static_cast<uint8_t>(Tree::deadlines) && rec.key.size() >= fmt::kDeadlineKeyMinBytes) ||
                        (tree == static_cast<uint8_t>(Tree::requests) && fmt::request_key_item(rec.key));
    if (!shaped) return damaged("record " + std::to_string(i) + " has a key of unknown shape");
    if (!in_range(d.range, RangeData::item_of(rec)))
      return damaged("record " + std::to_string(i) + " is of an item outside slots " + range_text(d.range));
    d.records.push_back(std::move(rec));
  }
  if (!r.ok) return damaged("truncated");
  if (!r.in.empty()) return damaged("bytes past the last record");
  *out = std::move(d);
  return Status::OK();
}

}  // namespace bidmesh::slot_move
