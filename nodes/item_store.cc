// ItemStore: see item_store.h for the guarantees and the LMDB layout.
//
// Failure handling: every LMDB call's return code is passed up as an int (0 = success, else an
// LMDB or errno code, or kBadRecord). apply_writes aborts the nested transaction at the first
// non-zero code; nothing of the batch is kept and every write gets `internal`.
#include "nodes/item_store.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <lmdb.h>

#include "nodes/batch_record.h"
#include "nodes/failpoint.h"
#include "storage/log_reader.h"
#include "protocol/errors.h"

namespace bidmesh {

namespace {

constexpr int kBadRecord = -30000;  // a stored record that does not parse (outside LMDB's codes)
constexpr std::string_view kFormatVersion = "3";
constexpr std::string_view kFormatWithoutLog = "2";  // format 3 before its first checkpoint
constexpr uint64_t kFailedTxnRetryMs = 1000;  // auto-close-only txns after a failure: at most 1/s

void append_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
void append_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
uint64_t read_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
uint32_t read_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

MDB_val to_val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
std::string_view to_sv(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// Keys of the data tree: item '\0' tag [suffix]. Items never contain '\0', so the first '\0'
// ends the item and the keys of one item form one contiguous range, in the order events by seq
// (0x01), state (0x02), request records by id (0x03). The state sorts right after the newest
// event: a bid's event append and state update land on the same leaf even when the item's
// history spans many pages (measured: docs/benchmarks.md, "Store layout v2").
constexpr char kTagEvent = 0x01, kTagState = 0x02, kTagRequest = 0x03;
// Writes the key into `out` (a reused buffer) and returns it.
std::string_view data_key(std::string& out, std::string_view item, char tag) {
  out.clear();
  out.append(item);
  out.push_back('\0');
  out.push_back(tag);
  return out;
}
std::string_view event_key(std::string& out, std::string_view item, uint64_t seq) {
  data_key(out, item, kTagEvent);
  append_u64(out, seq);
  return out;
}
std::string_view request_key(std::string& out, std::string_view item, std::string_view id) {
  data_key(out, item, kTagRequest);
  out.append(id);
  return out;
}
std::string deadline_key(uint64_t closes_at, std::string_view item) {
  std::string k;
  append_u64(k, closes_at);
  k.append(item);
  return k;
}

// ItemState value, format 1:
//   [0] 1 (format)   [1] 0 open / 1 closed   [2] flags: 1 = has max+bidder, 2 = has closes_at
//   [3..51) u64 seq, bids, start, increment, max, closes_at (0 where absent)   [51..) bidder
constexpr std::size_t kStateFixed = 51;
std::string_view encode_state(std::string& out, const ItemState& s) {
  out.clear();
  out.push_back(1);
  out.push_back(s.closed ? 1 : 0);
  out.push_back(static_cast<char>((s.max ? 1 : 0) | (s.closes_at ? 2 : 0)));
  append_u64(out, s.seq);
  append_u64(out, s.bids);
  append_u64(out, s.start);
  append_u64(out, s.increment);
  append_u64(out, s.max.value_or(0));
  append_u64(out, s.closes_at.value_or(0));
  if (s.max) out.append(*s.bidder);
  return out;
}
bool decode_state(std::string_view in, ItemState* s) {
  if (in.size() < kStateFixed || in[0] != 1) return false;
  const char* p = in.data();
  const unsigned flags = static_cast<unsigned char>(p[2]);
  s->closed = p[1] != 0;
  s->seq = read_u64(p + 3);
  s->bids = read_u64(p + 11);
  s->start = read_u64(p + 19);
  s->increment = read_u64(p + 27);
  s->max.reset();
  s->bidder.reset();
  s->closes_at.reset();
  if (flags & 1) {
    s->max = read_u64(p + 35);
    s->bidder = std::string(in.substr(kStateFixed));
  }
  if (flags & 2) s->closes_at = read_u64(p + 43);
  return true;
}

// requests value: u64 stored_at, u32 fingerprint length, fingerprint, reply bytes.
struct RequestRecord {
  uint64_t stored_at = 0;
  std::string_view fingerprint;
  std::string_view reply;
};
std::string_view encode_record(std::string& out, uint64_t stored_at, std::string_view fingerprint,
                               std::string_view reply) {
  out.clear();
  append_u64(out, stored_at);
  append_u32(out, static_cast<uint32_t>(fingerprint.size()));
  out.append(fingerprint);
  out.append(reply);
  return out;
}
bool decode_record(std::string_view in, RequestRecord* r) {
  if (in.size() < 12) return false;
  r->stored_at = read_u64(in.data());
  const uint32_t fp_len = read_u32(in.data() + 8);
  if (in.size() - 12 < fp_len) return false;
  r->fingerprint = in.substr(12, fp_len);
  r->reply = in.substr(12 + fp_len);
  return true;
}

// Aborts the transaction unless it was committed.
class Txn {
 public:
  Txn() = default;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  int begin(MDB_env* env, unsigned flags, MDB_txn* parent = nullptr) {
    return mdb_txn_begin(env, parent, flags, &txn_);
  }
  int commit() {
    const int rc = mdb_txn_commit(txn_);
    txn_ = nullptr;  // freed by LMDB whether or not the commit succeeded
    return rc;
  }
  MDB_txn* get() const { return txn_; }

 private:
  MDB_txn* txn_ = nullptr;
};

class Cursor {
 public:
  Cursor() = default;
  Cursor(const Cursor&) = delete;
  Cursor& operator=(const Cursor&) = delete;
  ~Cursor() {
    if (cursor_ != nullptr) mdb_cursor_close(cursor_);
  }
  int open(MDB_txn* txn, MDB_dbi dbi) { return mdb_cursor_open(txn, dbi, &cursor_); }
  int get(MDB_val* k, MDB_val* v, MDB_cursor_op op) { return mdb_cursor_get(cursor_, k, v, op); }

 private:
  MDB_cursor* cursor_ = nullptr;
};

int get_value(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view* out) {
  MDB_val k = to_val(key), v{};
  const int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == 0) *out = to_sv(v);
  return rc;
}

// Loads an item; *found is false (and rc 0) when it was never opened. `key` is a scratch buffer.
int load_state(MDB_txn* txn, MDB_dbi data, std::string_view item, ItemState* s, bool* found, std::string& key) {
  std::string_view raw;
  const int rc = get_value(txn, data, data_key(key, item, kTagState), &raw);
  *found = false;
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return rc;
  if (!decode_state(raw, s)) return kBadRecord;
  *found = true;
  return 0;
}

std::string in_quotes(std::string_view s) { return "'" + std::string(s) + "'"; }

// meta "log": u64 segment, u64 offset.
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

}  // namespace

struct ItemStore::Env {
  MDB_env* env = nullptr;
  MDB_dbi meta = 0, data = 0, deadlines = 0;
  int lock_fd = -1;
  ~Env() {
    if (env != nullptr) mdb_env_close(env);
    if (lock_fd >= 0) ::close(lock_fd);  // releases the flock
  }
};

// One write transaction in progress.
struct ItemStore::WriteCtx {
  MDB_txn* txn = nullptr;
  uint64_t now = 0;
  std::vector<FeedMessage> events;
  const char* failed_at = "";  // the call that failed, for the operator's message
  std::string sweep_next;      // the sweep's resume key once this txn commits
  uint64_t items_added = 0;    // opens in this txn (meta "items" is rewritten when non-zero)
  // Reused buffers: no allocation per request for keys and records once they have grown.
  std::string key, value, fingerprint;

  int put(MDB_dbi dbi, std::string_view key, std::string_view value) {
    MDB_val k = to_val(key), v = to_val(value);
    const int rc = mdb_put(txn, dbi, &k, &v, 0);
    if (rc != 0) failed_at = "mdb_put";
    return rc;
  }
  // Deleting a missing key is not an error.
  int del(MDB_dbi dbi, std::string_view key) {
    MDB_val k = to_val(key);
    const int rc = mdb_del(txn, dbi, &k, nullptr);
    if (rc != 0 && rc != MDB_NOTFOUND) {
      failed_at = "mdb_del";
      return rc;
    }
    return 0;
  }
};

std::variant<std::unique_ptr<ItemStore>, std::string> ItemStore::open(const ItemStoreOptions& options) {
  const std::string where = options.dir.string();
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return "cannot create the data directory " + where + ": " + ec.message();

  auto env = std::make_unique<Env>();
  const std::string lock_path = (options.dir / "bidmesh.lock").string();
  env->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (env->lock_fd < 0) return "cannot open " + lock_path + ": " + std::strerror(errno);
  if (::flock(env->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    if (errno == EWOULDBLOCK) return "the store " + where + " is in use by another process";
    return "cannot lock " + lock_path + ": " + std::strerror(errno);
  }

  auto fail = [&](const char* call, int rc) { return "cannot open LMDB in " + where + ": " + call + ": " + mdb_strerror(rc); };
  int rc = mdb_env_create(&env->env);
  if (rc != 0) {
    env->env = nullptr;
    return fail("mdb_env_create", rc);
  }
  if ((rc = mdb_env_set_maxdbs(env->env, 8)) != 0) return fail("mdb_env_set_maxdbs", rc);
  if (options.map_size_bytes > 0 && (rc = mdb_env_set_mapsize(env->env, options.map_size_bytes)) != 0)
    return fail("mdb_env_set_mapsize", rc);
  // Every commit is synced (no MDB_NOSYNC, even in the unsafe mode, which only skips the log's
  // fdatasync): lmdb.h says an unsynced commit can be corrupted by a system crash, and the log
  // cannot repair that. Commits are checkpoints, a few per second at most.
  // No MDB_WRITEMAP: nested transactions (one per batch, see item_store.h) need LMDB's own page
  // copies. Disk blocks are still reserved ahead (reserve_disk), so a full disk fails a
  // checkpoint early and cleanly.
  // MDB_NORDAHEAD (madvise MADV_RANDOM on the map): bids touch pages at random, and with
  // readahead a kernel with large page-cache folios (ext4, Linux 6.x) reads the map in folios of
  // many pages; a commit that dirties one 4 KiB page of such a folio then writes the whole folio
  // (docs/benchmarks.md).
  unsigned flags = 0;
  if (!options.read_ahead) flags |= MDB_NORDAHEAD;
  if ((rc = mdb_env_open(env->env, where.c_str(), flags, 0600)) != 0) return fail("mdb_env_open", rc);
  int dead = 0;
  if ((rc = mdb_reader_check(env->env, &dead)) != 0) return fail("mdb_reader_check", rc);

  {
    Txn t;
    if ((rc = t.begin(env->env, 0)) != 0) return fail("mdb_txn_begin", rc);
    if ((rc = mdb_dbi_open(t.get(), "meta", MDB_CREATE, &env->meta)) != 0) return fail("mdb_dbi_open", rc);
    std::string_view format;
    rc = get_value(t.get(), env->meta, "format", &format);
    if (rc == 0 && format != kFormatVersion && format != kFormatWithoutLog) {
      // Nothing is changed: the transaction is aborted (Txn), the old store stays as it was.
      return "the store " + where + " has format " + std::string(format) + ", this build reads format " +
             std::string(kFormatWithoutLog) + " or format " + std::string(kFormatVersion) + " and does not convert it: move " +
             where + " away (or delete it) and restart to begin with an empty store";
    }
    if (rc == MDB_NOTFOUND || (rc == 0 && format != kFormatVersion)) {
      MDB_val k = to_val("format"), v = to_val(kFormatVersion);
      rc = mdb_put(t.get(), env->meta, &k, &v, 0);
    }
    if (rc != 0) return fail("format record", rc);
    if ((rc = mdb_dbi_open(t.get(), "data", MDB_CREATE, &env->data)) != 0) return fail("mdb_dbi_open", rc);
    if ((rc = mdb_dbi_open(t.get(), "deadlines", MDB_CREATE, &env->deadlines)) != 0)
      return fail("mdb_dbi_open", rc);
    if ((rc = t.commit()) != 0) return fail("mdb_txn_commit", rc);
  }

  std::unique_ptr<ItemStore> store(new ItemStore(std::move(env), options.dir, options.retention));
  store->options_ = options;
  if (const int err = store->reserve_disk(); err != 0)
    return "cannot reserve disk space for the store in " + where + ": " + std::strerror(err);
  if (Status st = store->rebuild_from_log(); !st.ok()) return "cannot open the store " + where + ": " + st.message();

  LogOptions log_options;
  log_options.dir = store->log_dir();
  log_options.segment_bytes = options.log_segment_bytes;
  log_options.sync = !options.no_sync;
  log_options.files = options.log_files;
  if (Status st = LogWriter::open(log_options, store->replay_end_, &store->log_); !st.ok())
    return "cannot open the write-ahead log in " + log_options.dir.string() + ": " + st.message();
  store->last_checkpoint_ = std::chrono::steady_clock::now();
  return store;
}

std::optional<LogPosition> ItemStore::read_checkpoint_position(const std::filesystem::path& dir, std::string* error) {
  error->clear();
  Env env;  // closes the environment on every path, after the Txn below is gone
  std::optional<LogPosition> pos;
  const char* call = "mdb_env_create";
  int rc = mdb_env_create(&env.env);
  if (rc != 0) env.env = nullptr;
  if (rc == 0 && (rc = mdb_env_set_maxdbs(env.env, 8)) != 0) call = "mdb_env_set_maxdbs";
  if (rc == 0 && (rc = mdb_env_open(env.env, dir.c_str(), MDB_RDONLY, 0600)) != 0) call = "mdb_env_open";
  if (rc == 0) {
    Txn t;
    if ((rc = t.begin(env.env, MDB_RDONLY)) != 0) call = "mdb_txn_begin";
    if (rc == 0 && (rc = mdb_dbi_open(t.get(), "meta", 0, &env.meta)) != 0) call = "mdb_dbi_open";
    std::string_view raw;
    if (rc == 0 && (rc = get_value(t.get(), env.meta, "log", &raw)) != 0) call = "mdb_get";
    LogPosition p;
    if (rc == 0 && decode_log_position(raw, &p)) pos = p;
    else if (rc == 0) *error = "the meta record 'log' of " + dir.string() + " is malformed";
  }
  if (rc != 0 && rc != MDB_NOTFOUND) *error = "cannot read the store in " + dir.string() + ": " + call + ": " + mdb_strerror(rc);
  return pos;
}

ItemStore::ItemStore(std::unique_ptr<Env> env, std::filesystem::path dir, std::chrono::milliseconds retention)
    : env_(std::move(env)), dir_(std::move(dir)), retention_(retention) {}

ItemStore::~ItemStore() {
  // Uncheckpointed batches are in the log: dropping the transaction loses nothing.
  if (txn_ != nullptr) mdb_txn_abort(txn_);
}

std::filesystem::path ItemStore::log_dir() const { return dir_ / "wal"; }

LogPosition ItemStore::log_end() const { return log_ ? log_->end() : replay_end_; }

std::optional<uint64_t> ItemStore::next_auto_close_ms() const {
  if (!next_deadline_) return std::nullopt;
  return std::max(*next_deadline_, retry_after_ms_);
}

// Begins the checkpoint transaction and loads what the last commit says: the log position it
// covers, the item count and the sweep key.
Status ItemStore::begin_checkpoint_txn() {
  if (txn_ != nullptr) {
    mdb_txn_abort(txn_);
    txn_ = nullptr;
  }
  int rc = mdb_txn_begin(env_->env, nullptr, 0, &txn_);
  if (rc != 0) {
    txn_ = nullptr;
    return Status::io_error(describe_failure(rc, "mdb_txn_begin"));
  }
  std::string_view raw;
  checkpoint_pos_ = LogPosition{};
  if ((rc = get_value(txn_, env_->meta, "log", &raw)) == 0) {
    if (!decode_log_position(raw, &checkpoint_pos_)) return Status::corruption("the meta record 'log' is malformed");
  } else if (rc != MDB_NOTFOUND) {
    return Status::io_error(describe_failure(rc, "log record"));
  }
  item_count_ = 0;
  if ((rc = get_value(txn_, env_->meta, "items", &raw)) == 0) {
    if (raw.size() != 8) return Status::corruption("the meta record 'items' is malformed");
    item_count_ = read_u64(raw.data());
  } else if (rc != MDB_NOTFOUND) {
    return Status::io_error(describe_failure(rc, "items record"));
  }
  sweep_key_.clear();
  if ((rc = get_value(txn_, env_->meta, "sweep", &raw)) == 0) {
    sweep_key_ = std::string(raw);
  } else if (rc != MDB_NOTFOUND) {
    return Status::io_error(describe_failure(rc, "sweep record"));
  }
  retry_after_ms_ = 0;
  if ((rc = first_deadline(txn_, &next_deadline_)) != 0) return Status::io_error(describe_failure(rc, "deadlines"));
  return Status::OK();
}

Status ItemStore::rebuild_from_log() {
  if (Status st = begin_checkpoint_txn(); !st.ok()) return st;
  const auto started = std::chrono::steady_clock::now();
  ReplayResult result;
  ReplayStats stats;
  BatchRecord record;
  BatchResult scratch;
  Status st = replay_log(
      log_dir(), checkpoint_pos_,
      [&](std::string_view payload, LogPosition) -> Status {
        if (Status d = decode_batch_record(payload, &record); !d.ok()) return d;
        scratch = BatchResult{};
        scratch.replies.resize(record.writes.size());
        apply_writes(record.writes, record.now_ms, /*log=*/false, scratch);
        if (scratch.failure) return Status::io_error("replaying a logged batch failed: " + *scratch.failure);
        stats.records += 1;
        stats.writes += record.writes.size();
        stats.bytes += payload.size();
        return Status::OK();
      },
      &result, options_.log_files);
  if (!st.ok()) return st;
  stats.torn_tail = result.torn;
  stats.micros = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started).count());
  replay_stats_ = stats;
  replay_end_ = result.end;
  return Status::OK();
}

bool ItemStore::checkpoint_due() const {
  if (!log_) return false;
  const LogPosition end = log_->end();
  if (end == checkpoint_pos_) return false;
  const auto now = std::chrono::steady_clock::now();
  if (checkpoint_failing_ && now - last_checkpoint_attempt_ < std::chrono::seconds(1)) return false;
  return log_->bytes_between(checkpoint_pos_, end) >= options_.checkpoint_bytes ||
         now - last_checkpoint_ >= options_.checkpoint_interval;
}

Status ItemStore::checkpoint() {
  if (!log_) return Status::invalid_argument("the store has no log");
  last_checkpoint_attempt_ = std::chrono::steady_clock::now();
  const LogPosition end = log_->end();
  const std::string pos = encode_log_position(end);
  int rc = txn_ == nullptr ? EINVAL : 0;
  const char* failed_at = "no checkpoint transaction";
  if (rc == 0) {
    MDB_val k = to_val("log"), v = to_val(pos);
    if ((rc = mdb_put(txn_, env_->meta, &k, &v, 0)) != 0) failed_at = "mdb_put";
  }
  if (rc == 0) {
    MDB_val k = to_val("sweep"), v = to_val(sweep_key_);
    if ((rc = mdb_put(txn_, env_->meta, &k, &v, 0)) != 0) failed_at = "mdb_put";
  }
  if (rc == 0 && (rc = reserve_disk()) != 0) failed_at = "reserving disk space";
  if (rc == 0) {
    failpoint::before_checkpoint();  // off unless BIDMESH_FAILPOINT_CHECKPOINT_DELAY_MS (tests)
    rc = mdb_txn_commit(txn_);
    txn_ = nullptr;  // freed by LMDB whether or not the commit succeeded
    if (rc != 0) failed_at = "mdb_txn_commit";
  }
  if (rc != 0) {
    // Everything since the last checkpoint is in the log: rebuild the transaction from it.
    checkpoint_failing_ = true;
    const std::string why = describe_failure(rc, failed_at);
    if (Status st = rebuild_from_log(); !st.ok()) {
      log_broken_ = true;
      return Status::io_error("checkpoint failed (" + why + ") and the log could not be replayed: " + st.message());
    }
    if (replay_end_ != end) {
      log_broken_ = true;
      return Status::corruption("checkpoint failed (" + why + ") and the log replayed to " + replay_end_.to_string() +
                                ", not to " + end.to_string());
    }
    return Status::io_error("checkpoint failed, state rebuilt from the log: " + why);
  }
  checkpoint_failing_ = false;
  ++checkpoints_;
  last_checkpoint_ = std::chrono::steady_clock::now();
  if (Status st = begin_checkpoint_txn(); !st.ok()) {
    log_broken_ = true;  // no transaction to apply to: writes are refused, the node restarts
    return st;
  }
  return log_->release_before(checkpoint_pos_);
}

BatchResult ItemStore::apply_batch(const std::vector<Request>& requests, uint64_t now_ms) {
  BatchResult res;
  res.replies.resize(requests.size());
  bool has_writes = false, has_reads = false;
  for (const Request& r : requests) {
    if (op_is_write(r.op)) has_writes = true;
    if (r.op == Op::get || r.op == Op::history) has_reads = true;
  }
  const bool closes_due = next_deadline_ && *next_deadline_ <= now_ms && now_ms >= retry_after_ms_;

  if (has_writes || closes_due) {
    int reserve_rc = 0;
    if (log_broken_ || txn_ == nullptr) {
      res.failure = "the write-ahead log or the store failed earlier; writes are refused until the node restarts";
      res.fatal = true;
    } else if ((reserve_rc = reserve_disk()) != 0) {
      res.failure = "storage full: cannot allocate disk space for the store: " +
                    std::string(std::strerror(reserve_rc)) + "; free disk space in " + dir_.string();
    } else {
      apply_writes(requests, now_ms, /*log=*/true, res);
    }
    if (res.failure) {
      retry_after_ms_ = now_ms + kFailedTxnRetryMs;
      for (std::size_t i = 0; i < requests.size(); ++i) {
        if (op_is_write(requests[i].op))
          res.replies[i] = encode_error(requests[i].id, ErrorCode::internal, *res.failure);
      }
    }
  }

  // Reads only after the batch's writes: they see the whole batch, and only logged state.
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    if (r.op == Op::ping) {
      res.replies[i] = encode_ok(r.id);
    } else if (has_reads && (r.op == Op::get || r.op == Op::history)) {
      res.replies[i] = txn_ != nullptr ? read_reply(txn_, r)
                                       : encode_error(r.id, ErrorCode::internal, "the store is not readable now");
    }
  }
  return res;
}

void ItemStore::apply_writes(const std::vector<Request>& requests, uint64_t now_ms, bool log, BatchResult& res) {
  WriteCtx w;
  w.now = now_ms;
  Txn t;
  // Live batches get a nested transaction, so a failed one leaves nothing behind. A replayed
  // batch succeeded before, and if it fails now the open fails anyway: it is applied straight in
  // the checkpoint transaction, which saves the nested transaction's page lists (replay speed
  // bounds the restart time).
  int rc = log ? t.begin(env_->env, 0, txn_) : 0;
  if (rc != 0) w.failed_at = "mdb_txn_begin";
  w.txn = log ? t.get() : txn_;
  // Due deadlines first: a request of this batch sees its item closed, as the contract says.
  if (rc == 0) rc = run_auto_closes(w);
  std::size_t writes = 0;
  for (std::size_t i = 0; rc == 0 && i < requests.size(); ++i) {
    if (op_is_write(requests[i].op)) {
      rc = apply_write(w, requests[i], &res.replies[i]);
      ++writes;
    }
  }
  if (rc == 0) rc = prune(w, writes);
  if (rc == 0 && w.items_added > 0) {
    std::string count;
    append_u64(count, item_count_ + w.items_added);
    rc = w.put(env_->meta, "items", count);
  }
  std::optional<uint64_t> next_deadline;
  if (rc == 0 && (rc = first_deadline(w.txn, &next_deadline)) != 0) w.failed_at = "mdb_cursor_get";
  if (rc == 0 && log) {
    // The durability point: the batch is on disk before anything of it is kept or answered.
    encode_batch_record(now_ms, requests, record_);
    failpoint::before_commit();  // off unless BIDMESH_FAILPOINT_COMMIT_DELAY_MS (tests)
    if (Status st = log_->append(record_); !st.ok()) {
      res.failure = (st.is_no_space() ? "storage full: the write-ahead log cannot grow: " : "write-ahead log: ") +
                    st.message();
      if (st.is_io_error()) {  // what is on disk is unknown now (no_space and invalid_argument wrote nothing)
        log_broken_ = true;
        res.fatal = true;
      }
      return;  // the Txn destructor aborts the nested transaction: nothing of the batch is kept
    }
  }
  if (rc == 0 && log && (rc = t.commit()) != 0) {
    w.failed_at = "mdb_txn_commit";
    if (log) {
      // The batch is in the log but not in the transaction: rebuild the transaction from the log.
      if (Status st = rebuild_from_log(); !st.ok() || replay_end_ != log_->end()) {
        log_broken_ = true;
        res.fatal = true;
        res.failure = describe_failure(rc, w.failed_at) + "; rebuilding from the log failed";
        return;
      }
      res.committed = true;
      res.events = std::move(w.events);
      return;
    }
  }
  if (rc != 0) {
    res.failure = describe_failure(rc, w.failed_at);
    return;  // the Txn destructor aborts; nothing of this batch is kept, so every write may be retried
  }
  res.committed = true;
  res.events = std::move(w.events);
  next_deadline_ = next_deadline;
  retry_after_ms_ = 0;
  item_count_ += w.items_added;
  sweep_key_ = std::move(w.sweep_next);
}

int ItemStore::apply_write(WriteCtx& w, const Request& r, std::string* reply) {
  w.fingerprint = r.fingerprint();
  std::string_view raw;
  int rc = get_value(w.txn, env_->data, request_key(w.key, r.item, r.id), &raw);
  if (rc == 0) {
    RequestRecord rec;
    if (!decode_record(raw, &rec)) return kBadRecord;
    if (rec.fingerprint == w.fingerprint) {
      *reply = std::string(rec.reply);  // the remembered reply, byte for byte; no effect again
    } else {
      *reply = encode_error(r.id, ErrorCode::conflict,
                            "this id was used before for another write on item " + in_quotes(r.item));
    }
    return 0;
  }
  if (rc != MDB_NOTFOUND) {
    w.failed_at = "mdb_get";
    return rc;
  }

  switch (r.op) {
    case Op::open: rc = apply_open(w, r, reply); break;
    case Op::bid: rc = apply_bid(w, r, reply); break;
    case Op::close: rc = apply_close(w, r, reply); break;
    default: return 0;  // not a write; apply_batch never passes one
  }
  if (rc != 0) return rc;
  // Every reply decided here (success, too_low, closed, exists, unknown_item) is remembered,
  // in this transaction, with the effect.
  // (w.key was reused by the apply_* above: the request key is made again.)
  return w.put(env_->data, request_key(w.key, r.item, r.id), encode_record(w.value, w.now, w.fingerprint, *reply));
}

// Stores the event under (item, seq) and queues it for the feed (published after the commit).
// The state of the open item that a bid or a close targets. Returns an LMDB error (w.failed_at
// set), or 0; with 0, `*decided` says the reply is already made (`unknown_item`, or `closed`) and
// nothing is to change.
int ItemStore::load_open_item(WriteCtx& w, const Request& r, ItemState* s, std::string* reply, bool* decided) {
  bool found = false;
  *decided = true;
  if (const int rc = load_state(w.txn, env_->data, r.item, s, &found, w.key); rc != 0) {
    w.failed_at = "items";
    return rc;
  }
  if (!found) {
    *reply = encode_error(r.id, ErrorCode::unknown_item, "item " + in_quotes(r.item) + " was never opened");
  } else if (s->closed) {
    *reply = encode_error(r.id, ErrorCode::closed, "item " + in_quotes(r.item) + " is closed");
  } else {
    *decided = false;
  }
  return 0;
}

// Writes the item's new state and appends the event of its new seq (`s.seq`): `open` bare, `max`
// and `closed` with the state's max and bidder (nil where nobody bid). The event is stored with
// the write and queued for the feed, which gets it after the commit.
int ItemStore::record_change(WriteCtx& w, std::string_view item, const ItemState& s, EventKind kind) {
  if (const int rc = w.put(env_->data, data_key(w.key, item, kTagState), encode_state(w.value, s)); rc != 0) return rc;
  Event e;
  e.kind = kind;
  e.item = std::string(item);
  e.seq = s.seq;
  e.ts = w.now;
  if (kind != EventKind::open) {
    e.amount = s.max;
    e.bidder = s.bidder;
  }
  std::string body = encode_event(e);
  if (const int rc = w.put(env_->data, event_key(w.key, e.item, e.seq), body); rc != 0) return rc;
  w.events.push_back({feed_topic(e.item), std::move(body)});
  return 0;
}

int ItemStore::apply_open(WriteCtx& w, const Request& r, std::string* reply) {
  ItemState s;
  bool found = false;
  int rc = load_state(w.txn, env_->data, r.item, &s, &found, w.key);
  if (rc != 0) {
    w.failed_at = "items";
    return rc;
  }
  if (found) {
    *reply = encode_error(r.id, ErrorCode::exists, "item " + in_quotes(r.item) + " was opened before");
    return 0;
  }
  s = ItemState{};
  s.seq = 1;
  s.start = r.start;
  s.increment = r.increment;
  s.closes_at = r.closes_at;
  if ((rc = record_change(w, r.item, s, EventKind::open)) != 0) return rc;
  w.items_added += 1;
  if (s.closes_at && (rc = w.put(env_->deadlines, deadline_key(*s.closes_at, r.item), {})) != 0) return rc;
  *reply = encode_ok(r.id, {{"item", r.item}, {"seq", s.seq}});
  return 0;
}

int ItemStore::apply_bid(WriteCtx& w, const Request& r, std::string* reply) {
  ItemState s;
  bool decided = false;
  if (const int rc = load_open_item(w, r, &s, reply, &decided); rc != 0 || decided) return rc;
  // At or after closes_at the item is closed, even if the auto-close has not run yet.
  if (s.closes_at && w.now >= *s.closes_at) {
    *reply = encode_error(r.id, ErrorCode::closed,
                          "item " + in_quotes(r.item) + " closed at " + std::to_string(*s.closes_at) + " (unix ms)");
    return 0;
  }
  // max + increment may not fit in 64 bits: compare by subtraction instead.
  const bool too_low = s.max ? (r.amount < *s.max || r.amount - *s.max < s.increment) : r.amount < s.start;
  if (too_low) {
    const std::string message =
        s.max ? "amount " + std::to_string(r.amount) + " is below the max " + std::to_string(*s.max) +
                    " plus the increment " + std::to_string(s.increment)
              : "amount " + std::to_string(r.amount) + " is below the start " + std::to_string(s.start);
    *reply = encode_error(r.id, ErrorCode::too_low, message, {{"max", opt_value(s.max)}});
    return 0;
  }
  s.seq += 1;
  s.bids += 1;
  s.max = r.amount;
  s.bidder = r.bidder;
  if (const int rc = record_change(w, r.item, s, EventKind::max); rc != 0) return rc;
  *reply = encode_ok(r.id, {{"item", r.item}, {"bidder", r.bidder}, {"amount", r.amount}, {"seq", s.seq}});
  return 0;
}

int ItemStore::apply_close(WriteCtx& w, const Request& r, std::string* reply) {
  ItemState s;
  bool decided = false;
  if (const int rc = load_open_item(w, r, &s, reply, &decided); rc != 0 || decided) return rc;
  if (const int rc = close_item(w, r.item, s); rc != 0) return rc;
  *reply = encode_ok(r.id, {{"item", r.item}, {"seq", s.seq}, {"winner", opt_value(s.bidder)},
                            {"amount", opt_value(s.max)}});
  return 0;
}

// The one close step, shared by `close` and the auto-close: status closed, seq + 1, the deadline
// entry removed, event `closed` with the winner and amount (nil where nobody bid).
int ItemStore::close_item(WriteCtx& w, std::string_view item, ItemState& s) {
  s.closed = true;
  s.seq += 1;
  int rc = 0;
  if (s.closes_at && (rc = w.del(env_->deadlines, deadline_key(*s.closes_at, item))) != 0) return rc;
  return record_change(w, item, s, EventKind::closed);
}

// Closes up to kAutoClosePerTxn items whose closes_at <= now, earliest first. The rest stay due,
// so next_auto_close_ms() makes the loop come back at once.
int ItemStore::run_auto_closes(WriteCtx& w) {
  if (!next_deadline_ || *next_deadline_ > w.now) return 0;
  std::vector<std::string> due;  // deadline keys; collected first, then changed
  {
    Cursor c;
    int rc = c.open(w.txn, env_->deadlines);
    MDB_val k{}, v{};
    if (rc == 0) rc = c.get(&k, &v, MDB_FIRST);
    while (rc == 0 && due.size() < kAutoClosePerTxn) {
      if (k.mv_size < 8) return kBadRecord;
      if (read_u64(static_cast<const char*>(k.mv_data)) > w.now) break;
      due.emplace_back(to_sv(k));
      rc = c.get(&k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) {
      w.failed_at = "mdb_cursor_get";
      return rc;
    }
  }
  for (const std::string& key : due) {
    const std::string_view item = std::string_view(key).substr(8);
    ItemState s;
    bool found = false;
    int rc = load_state(w.txn, env_->data, item, &s, &found, w.key);
    if (rc != 0) {
      w.failed_at = "items";
      return rc;
    }
    if (found && !s.closed && s.closes_at && *s.closes_at == read_u64(key.data())) {
      rc = close_item(w, item, s);  // removes this deadline entry too
    } else {
      rc = w.del(env_->deadlines, key);  // stale entry: nothing to close
    }
    if (rc != 0) return rc;
  }
  return 0;
}

// The sweep (see item_store.h): from sweep_key_, examines up to kPrunePerTxn + kPrunePerWrite x
// writes request records in key order, wrapping once at the end of the tree, and deletes those
// older than the retention. Non-record keys (an item's state and events) are skipped with one seek
// per item, at most as many seeks as the record budget. The resume key is set in w.sweep_next;
// checkpoint() saves it in meta "sweep".
int ItemStore::prune(WriteCtx& w, std::size_t writes) {
  const uint64_t retention = static_cast<uint64_t>(retention_.count());
  const std::size_t budget = kPrunePerTxn + kPrunePerWrite * writes;
  std::vector<std::string>& expired = expired_;  // data keys; collected first, then deleted
  expired.clear();
  std::string& seek = w.key;
  const std::string& start = sweep_key_;
  bool wrapped = false, done = false;
  std::size_t examined = 0, seeks = 0;
  {
    Cursor c;
    int rc = c.open(w.txn, env_->data);
    MDB_val k = to_val(start), v{};
    if (rc == 0) rc = start.empty() ? c.get(&k, &v, MDB_FIRST) : c.get(&k, &v, MDB_SET_RANGE);
    while (examined < budget && seeks <= budget) {
      if (rc == MDB_NOTFOUND) {  // the end of the tree: wrap once
        if (wrapped || start.empty()) {
          w.sweep_next.clear();
          done = true;
          break;
        }
        wrapped = true;
        rc = c.get(&k, &v, MDB_FIRST);
        continue;
      }
      if (rc != 0) {
        w.failed_at = "mdb_cursor_get";
        return rc;
      }
      const std::string_view key = to_sv(k);
      if (wrapped && key >= std::string_view(start)) {  // back where this txn began
        w.sweep_next.assign(key);
        done = true;
        break;
      }
      const std::size_t nul = key.find('\0');
      if (nul == std::string_view::npos || nul + 1 >= key.size()) return kBadRecord;
      if (key[nul + 1] != kTagRequest) {  // state or event: seek to this item's first record
        seek.assign(key.substr(0, nul + 1));
        seek.push_back(kTagRequest);
        ++seeks;
        k = to_val(seek);
        rc = c.get(&k, &v, MDB_SET_RANGE);
        continue;
      }
      RequestRecord rec;
      if (!decode_record(to_sv(v), &rec)) return kBadRecord;
      ++examined;
      // Kept at least `retention`; a clock that went back keeps records longer, never shorter.
      if (rec.stored_at <= w.now && w.now - rec.stored_at > retention) expired.emplace_back(key);
      rc = c.get(&k, &v, MDB_NEXT);
    }
    if (!done) {  // out of budget: resume at the current key (or wrap next time)
      if (rc == 0) {
        w.sweep_next.assign(to_sv(k));
      } else if (rc == MDB_NOTFOUND) {
        w.sweep_next.clear();
      } else {
        w.failed_at = "mdb_cursor_get";
        return rc;
      }
    }
  }
  for (const std::string& key : expired) {
    if (const int rc = w.del(env_->data, key); rc != 0) return rc;
  }
  return 0;
}

int ItemStore::first_deadline(MDB_txn* txn, std::optional<uint64_t>* out) const {
  out->reset();
  Cursor c;
  int rc = c.open(txn, env_->deadlines);
  MDB_val k{}, v{};
  if (rc == 0) rc = c.get(&k, &v, MDB_FIRST);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return rc;
  if (k.mv_size < 8) return kBadRecord;
  *out = read_u64(static_cast<const char*>(k.mv_data));
  return 0;
}

std::string ItemStore::read_reply(MDB_txn* txn, const Request& r) const {
  ItemState s;
  bool found = false;
  std::string prefix;
  int rc = load_state(txn, env_->data, r.item, &s, &found, prefix);
  if (rc != 0) return encode_error(r.id, ErrorCode::internal, describe_failure(rc, "items"));
  if (!found) return encode_error(r.id, ErrorCode::unknown_item, "item " + in_quotes(r.item) + " was never opened");

  if (r.op == Op::get) {
    return encode_ok(r.id, {{"item", r.item},
                            {"status", std::string(s.closed ? "closed" : "open")},
                            {"max", opt_value(s.max)},
                            {"bidder", opt_value(s.bidder)},
                            {"seq", s.seq},
                            {"bids", s.bids},
                            {"start", s.start},
                            {"increment", s.increment},
                            {"closes_at", opt_value(s.closes_at)}});
  }

  // history: events with seq > after, oldest first, at most limit; the stored bytes spliced in.
  std::vector<std::string_view> events;
  const uint64_t limit = std::min(r.limit, kMaxHistoryLimit);  // decode caps it too
  if (r.after < UINT64_MAX && limit > 0) {
    data_key(prefix, r.item, kTagEvent);
    std::string first;
    event_key(first, r.item, r.after + 1);
    Cursor c;
    rc = c.open(txn, env_->data);
    MDB_val k = to_val(first), v{};
    if (rc == 0) rc = c.get(&k, &v, MDB_SET_RANGE);
    while (rc == 0 && events.size() < limit && to_sv(k).starts_with(prefix)) {
      events.push_back(to_sv(v));  // valid while `txn` lives
      rc = c.get(&k, &v, MDB_NEXT);
    }
    if (rc != 0 && rc != MDB_NOTFOUND)
      return encode_error(r.id, ErrorCode::internal, describe_failure(rc, "mdb_cursor_get"));
  }
  return encode_history_ok(r.id, r.item, events);
}

std::string ItemStore::describe_failure(int rc, const char* where) const {
  if (rc == MDB_MAP_FULL) {
    return "storage full: the LMDB map (" + std::to_string(map_size_bytes()) +
           " bytes) is full; raise map_size_mb for this node in the config";
  }
  if (rc == kBadRecord) return std::string("storage error: a stored record is malformed (") + where + ")";
  return std::string("storage error: ") + where + ": " + mdb_strerror(rc);
}

// Disk blocks for the data file are allocated ahead of use, so that a full disk shows as a clean
// error before a checkpoint rather than in the middle of LMDB's page writes. Blocks are allocated (fallocate, no data written) kReserveAhead beyond the last page in
// use, before every write transaction that comes near the end of what is allocated. Returns 0 or
// an errno (ENOSPC: the disk is full; writes are refused, reads go on).
int ItemStore::reserve_disk() {
  MDB_envinfo info{};
  MDB_stat st{};
  if (mdb_env_info(env_->env, &info) != 0 || mdb_env_stat(env_->env, &st) != 0) return EIO;
  const uint64_t used = (static_cast<uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  if (used + kReserveAhead / 2 <= reserved_bytes_) return 0;
  const uint64_t want = std::min<uint64_t>(used + kReserveAhead, info.me_mapsize);
  if (want <= reserved_bytes_) return 0;
  int fd = -1;
  if (mdb_env_get_fd(env_->env, &fd) != 0) return EIO;
  const int rc = ::posix_fallocate(fd, static_cast<off_t>(reserved_bytes_), static_cast<off_t>(want - reserved_bytes_));
  // Filesystems without fallocate (EOPNOTSUPP): nothing to reserve with, as before WRITEMAP.
  if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) return rc;
  reserved_bytes_ = want;
  return 0;
}

uint64_t ItemStore::map_size_bytes() const {
  MDB_envinfo info{};
  if (mdb_env_info(env_->env, &info) != 0) return 0;
  return info.me_mapsize;
}

uint64_t ItemStore::item_count() const { return item_count_; }

// Walks the data tree seeking from item to item past states and events: O(items + records).
uint64_t ItemStore::idempotency_record_count() const {
  if (txn_ == nullptr) return 0;
  Cursor c;
  if (c.open(txn_, env_->data) != 0) return 0;
  uint64_t n = 0;
  std::string seek;
  MDB_val k{}, v{};
  int rc = c.get(&k, &v, MDB_FIRST);
  while (rc == 0) {
    const std::string_view key = to_sv(k);
    const std::size_t nul = key.find('\0');
    if (nul == std::string_view::npos || nul + 1 >= key.size()) return n;
    if (key[nul + 1] == kTagRequest) {
      ++n;
      rc = c.get(&k, &v, MDB_NEXT);
    } else {
      seek.assign(key.substr(0, nul + 1));
      seek.push_back(kTagRequest);
      k = to_val(seek);
      rc = c.get(&k, &v, MDB_SET_RANGE);
    }
  }
  return n;
}

std::optional<ItemState> ItemStore::get_item(std::string_view item) const {
  if (txn_ == nullptr) return std::nullopt;
  ItemState s;
  bool found = false;
  std::string key;
  if (load_state(txn_, env_->data, item, &s, &found, key) != 0 || !found) return std::nullopt;
  return s;
}

}  // namespace bidmesh
