// ItemStore: see item_store.h for the guarantees. This file ties the parts together into
// batches, the log and checkpoints: the record format is nodes/store_format.h, the LMDB wrappers
// nodes/lmdb_env.h, the auction rules nodes/auction_rules.h, the deadline and prune walks
// nodes/sweep.h.
//
// Failure handling: every LMDB call's return code is passed up as an int (0 = success, else an
// LMDB or errno code, or kBadRecord), and TxnCalls::failed_at names the call or the record that
// failed. apply_writes stops at the first non-zero code and rolls the checkpoint transaction back
// to the log (roll_back_live_batch); nothing of the batch is kept and every write gets `internal`.
#include "nodes/item_store.h"

#include <algorithm>
#include <cstring>

#include "nodes/batch_record.h"
#include "nodes/failpoint.h"
#include "nodes/lmdb_env.h"
#include "nodes/store_format.h"
#include "protocol/errors.h"
#include "storage/log_reader.h"

namespace bidmesh {

namespace fmt = store_format;

static_assert(kMaxIdBytes <= fmt::kRequestKeyMaxIdBytes, "a request key holds its id's length in one byte");

namespace {

constexpr uint64_t kFailedTxnRetryMs = 1000;  // auto-close-only txns after a failure: at most 1/s

// Loads an item; *found is false (and rc 0) when it was never opened. `key` is a scratch buffer.
int load_state(TxnCalls& t, MDB_dbi data, std::string_view item, ItemState* s, bool* found, std::string& key) {
  std::string_view raw;
  const int rc = get_value(t.txn, data, fmt::data_key(key, item, fmt::kTagState), &raw);
  *found = false;
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return t.fail(rc, "items");
  if (!fmt::decode_state(raw, s)) return t.fail(kBadRecord, "items");
  *found = true;
  return 0;
}

}  // namespace

// One write transaction in progress.
struct ItemStore::WriteCtx : TxnCalls {
  uint64_t now = 0;
  std::vector<FeedMessage> events;
  uint64_t items_added = 0;    // opens in this txn (meta "items" is rewritten when non-zero)
  int64_t open_delta = 0;      // opens minus closes, for items_open_
  uint64_t records_added = 0;  // new idempotency records, for records_
  uint64_t auto_closes = 0;
  // Reused buffers: no allocation per request for keys and records once they have grown.
  std::string key, value, fingerprint;
};

namespace {

// Formats 2 to 5 kept the request records in each item's cluster of the data tree (item '\0' 0x03
// id); format 6 keeps them in the requests tree. Moves up to `limit` of them in `txn`, walking the
// data tree from `*from` (the key where the previous call stopped, "" for the start), seeking past
// each item's events; sets *from for the next call, and *done when none is left.
int move_request_records(MDB_txn* txn, const LmdbEnv& env, std::size_t limit, std::string* from, bool* done) {
  TxnCalls w{txn};
  Cursor c;
  int rc = c.open(txn, env.data);
  std::string seek, key;
  MDB_val k = to_val(*from), v{};
  std::size_t moved = 0;
  if (rc == 0) rc = from->empty() ? c.get(&k, &v, MDB_FIRST) : c.get(&k, &v, MDB_SET_RANGE);
  while (rc == 0 && moved < limit) {
    const std::string_view data_key = to_sv(k);
    const std::optional<std::size_t> item_end = fmt::data_key_item_end(data_key);
    if (!item_end) return kBadRecord;
    const std::string_view item = data_key.substr(0, *item_end);
    if (data_key[*item_end + 1] != fmt::kTagRequestBeforeFormat6) {
      seek.assign(item);
      seek.push_back('\0');
      seek.push_back(fmt::kTagRequestBeforeFormat6);
      if (data_key < std::string_view(seek)) {
        k = to_val(seek);
        rc = c.get(&k, &v, MDB_SET_RANGE);
      } else {
        rc = c.get(&k, &v, MDB_NEXT);
      }
      continue;
    }
    const std::string_view id = data_key.substr(*item_end + 2);
    if (id.size() > fmt::kRequestKeyMaxIdBytes) return kBadRecord;
    if ((rc = w.put(env.requests, fmt::request_key(key, item, id), to_sv(v))) != 0) return rc;
    // The cursor then stands on the next key: MDB_NEXT returns it.
    if ((rc = mdb_cursor_del(c.get(), 0)) != 0) return rc;
    ++moved;
    rc = c.get(&k, &v, MDB_NEXT);
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return rc;
  *done = rc == MDB_NOTFOUND;
  if (!*done) {
    from->assign(to_sv(k));  // not moved yet: the next call starts with it
    return 0;
  }
  // The sweep's saved position was a data key.
  if ((rc = w.del(env.meta, "sweep")) != 0) return rc;
  return w.del(env.meta, fmt::kMovingRequestsMetaKey);
}

}  // namespace

std::variant<std::unique_ptr<ItemStore>, std::string> ItemStore::open(const ItemStoreOptions& options) {
  const std::string where = options.dir.string();
  std::error_code ec;
  std::filesystem::create_directories(options.dir, ec);
  if (ec) return "cannot create the data directory " + where + ": " + ec.message();

  auto env = std::make_unique<LmdbEnv>();
  if (Status st = open_lmdb_env(options.dir, options.map_size_bytes, options.read_ahead, env.get()); !st.ok())
    return st.message();

  // The trees, after the format check.
  auto fail = [&](const char* call, int rc) { return lmdb_open_failure(options.dir, call, rc); };
  int rc = 0;
  {
    Txn t;
    if ((rc = t.begin(env->env, 0)) != 0) return fail("mdb_txn_begin", rc);
    if ((rc = mdb_dbi_open(t.get(), "meta", MDB_CREATE, &env->meta)) != 0) return fail("mdb_dbi_open", rc);
    std::string_view format;
    rc = get_value(t.get(), env->meta, "format", &format);
    if (rc == 0 && !fmt::is_readable_format(format)) {
      // Nothing is changed: the transaction is aborted (Txn), the old store stays as it was.
      return "the store " + where + " has format " + std::string(format) + ", this build reads format " +
             std::string(fmt::kFormatWithoutLog) + " to format " + std::string(fmt::kFormatVersion) +
             " and does not convert it: move " + where + " away (or delete it) and restart to begin with an empty store";
    }
    const bool older_format = rc == 0 && format != fmt::kFormatVersion;
    if (rc == MDB_NOTFOUND || older_format) {
      MDB_val k = to_val("format"), v = to_val(fmt::kFormatVersion);
      rc = mdb_put(t.get(), env->meta, &k, &v, 0);
    }
    if (rc != 0) return fail("format record", rc);
    if ((rc = mdb_dbi_open(t.get(), "data", MDB_CREATE, &env->data)) != 0) return fail("mdb_dbi_open", rc);
    if ((rc = mdb_dbi_open(t.get(), "deadlines", MDB_CREATE, &env->deadlines)) != 0)
      return fail("mdb_dbi_open", rc);
    if ((rc = mdb_dbi_open(t.get(), "requests", MDB_CREATE, &env->requests)) != 0)
      return fail("mdb_dbi_open", rc);
    // Marked in the commit that marks the format: an older build then refuses the store, and
    // the loop below (or the next open, after a crash) finishes the move.
    if (older_format && (rc = TxnCalls{t.get()}.put(env->meta, fmt::kMovingRequestsMetaKey, "1")) != 0)
      return fail("format record", rc);
    if ((rc = t.commit()) != 0) return fail("mdb_txn_commit", rc);
  }
  std::string move_from;
  for (bool moving = true; moving;) {
    Txn t;
    std::string_view marker;
    if ((rc = t.begin(env->env, 0)) != 0) return fail("mdb_txn_begin", rc);
    if ((rc = get_value(t.get(), env->meta, fmt::kMovingRequestsMetaKey, &marker)) == MDB_NOTFOUND) break;
    bool done = false;
    if (rc == 0) rc = move_request_records(t.get(), *env, std::max<std::size_t>(options.request_move_chunk, 1), &move_from, &done);
    if (rc == 0) rc = t.commit();
    if (rc != 0) return fail("moving the request records to their own tree (store format 6)", rc);
    moving = !done;
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
  LmdbEnv env;  // closes the environment on every path, after the Txn below is gone
  std::optional<LogPosition> pos;
  const char* call = "";
  int rc = open_lmdb_env_read_only(dir, &env, &call);
  if (rc == 0) {
    Txn t;
    if ((rc = t.begin(env.env, MDB_RDONLY)) != 0) call = "mdb_txn_begin";
    if (rc == 0 && (rc = mdb_dbi_open(t.get(), "meta", 0, &env.meta)) != 0) call = "mdb_dbi_open";
    std::string_view raw;
    if (rc == 0 && (rc = get_value(t.get(), env.meta, "log", &raw)) != 0) call = "mdb_get";
    LogPosition p;
    if (rc == 0 && fmt::decode_log_position(raw, &p)) pos = p;
    else if (rc == 0) *error = "the meta record 'log' of " + dir.string() + " is malformed";
  }
  if (rc != 0 && rc != MDB_NOTFOUND) *error = "cannot read the store in " + dir.string() + ": " + call + ": " + mdb_strerror(rc);
  return pos;
}

ItemStore::ItemStore(std::unique_ptr<LmdbEnv> env, std::filesystem::path dir, std::chrono::milliseconds retention)
    : env_(std::move(env)), dir_(std::move(dir)), sweep_(retention) {}

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
  if (env_->listing == 0)
    if (Status st = open_listing_index(); !st.ok()) return st;
  int rc = mdb_txn_begin(env_->env, nullptr, 0, &txn_);
  if (rc != 0) {
    txn_ = nullptr;
    return Status::io_error(describe_failure(rc, "mdb_txn_begin"));
  }
  std::string_view raw;
  checkpoint_pos_ = LogPosition{};
  if ((rc = get_value(txn_, env_->meta, "log", &raw)) == 0) {
    if (!fmt::decode_log_position(raw, &checkpoint_pos_)) return Status::corruption("the meta record 'log' is malformed");
  } else if (rc != MDB_NOTFOUND) {
    return Status::io_error(describe_failure(rc, "log record"));
  }
  item_count_ = 0;
  if ((rc = get_value(txn_, env_->meta, "items", &raw)) == 0) {
    if (!fmt::decode_item_count(raw, &item_count_)) return Status::corruption("the meta record 'items' is malformed");
  } else if (rc != MDB_NOTFOUND) {
    return Status::io_error(describe_failure(rc, "items record"));
  }
  // Saved by checkpoints since the metrics came; a store from before is counted once.
  const int open_rc = get_value(txn_, env_->meta, "open", &raw);
  if (open_rc == 0 && !fmt::decode_item_count(raw, &items_open_)) return Status::corruption("the meta record 'open' is malformed");
  const int records_rc = get_value(txn_, env_->meta, "records", &raw);
  if (records_rc == 0 && !fmt::decode_item_count(raw, &records_)) return Status::corruption("the meta record 'records' is malformed");
  if (open_rc != 0 || records_rc != 0) {
    if ((rc = count_open_and_records(&items_open_, &records_)) != 0) return Status::io_error(describe_failure(rc, "counting items and records"));
  }
  sweep_.resume_at("");
  if ((rc = get_value(txn_, env_->meta, "sweep", &raw)) == 0) {
    sweep_.resume_at(raw);
  } else if (rc != MDB_NOTFOUND) {
    return Status::io_error(describe_failure(rc, "sweep record"));
  }
  retry_after_ms_ = 0;
  TxnCalls t{txn_};
  if ((rc = first_deadline(t, *env_, &next_deadline_)) != 0) return Status::io_error(describe_failure(rc, "deadlines"));
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
        scratch.outcomes.resize(record.writes.size());
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
  const std::string pos = fmt::encode_log_position(end);
  TxnCalls t{txn_};
  int rc = txn_ == nullptr ? t.fail(EINVAL, "no checkpoint transaction") : 0;
  if (rc == 0) rc = t.put(env_->meta, "log", pos);
  if (rc == 0) rc = t.put(env_->meta, "sweep", sweep_.resume_key());
  if (rc == 0) rc = t.put(env_->meta, "open", fmt::encode_item_count(items_open_));
  if (rc == 0) rc = t.put(env_->meta, "records", fmt::encode_item_count(records_));
  if (rc == 0 && (rc = reserve_disk()) != 0) t.fail(rc, "reserving disk space");
  if (rc == 0) {
    failpoint::before_checkpoint();  // off unless BIDMESH_FAILPOINT_CHECKPOINT_DELAY_MS (tests)
    rc = mdb_txn_commit(txn_);
    txn_ = nullptr;  // freed by LMDB whether or not the commit succeeded
    if (rc != 0) t.fail(rc, "mdb_txn_commit");
  }
  if (rc != 0) {
    // Everything since the last checkpoint is in the log: rebuild the transaction from it.
    checkpoint_failing_ = true;
    const std::string why = describe_failure(rc, t.failed_at);
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
  // Each reply below sets its outcome; `internal` only stands for a reply left unset (none is).
  res.outcomes.assign(requests.size(), ErrorCode::internal);
  bool has_writes = false, has_reads = false, has_v2_open = false;
  for (const Request& r : requests) {
    if (op_is_write(r.op)) has_writes = true;
    if (r.op == Op::get || r.op == Op::history || r.op == Op::list) has_reads = true;
    if (r.op == Op::open && r.has_v2_fields()) has_v2_open = true;
  }
  // One batch is one log record, at most LogWriter::max_payload() bytes. Only opens with long v2
  // details can pass it (a v1 write is at most ~230 bytes): the writes from the first one past
  // the limit on are left out of this batch and answered `internal`, safe to retry.
  std::vector<Request> within;
  std::size_t first_over = requests.size();
  if (has_v2_open && log_) {
    std::size_t bytes = kBatchRecordHeaderBytes;
    for (std::size_t i = 0; i < requests.size() && first_over == requests.size(); ++i)
      if (op_is_write(requests[i].op) && (bytes += batch_record_write_bytes(requests[i])) > log_->max_payload())
        first_over = i;
    if (first_over < requests.size()) {
      within.assign(requests.begin(), requests.begin() + static_cast<std::ptrdiff_t>(first_over));
      has_writes = false;
      for (const Request& r : within) has_writes = has_writes || op_is_write(r.op);
    }
  }
  const std::vector<Request>& applied = first_over < requests.size() ? within : requests;
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
      apply_writes(applied, now_ms, /*log=*/true, res);
    }
    if (res.failure) {
      retry_after_ms_ = now_ms + kFailedTxnRetryMs;
      for (std::size_t i = 0; i < applied.size(); ++i) {
        if (op_is_write(requests[i].op)) {
          res.replies[i] = encode_error(requests[i].id, ErrorCode::internal, *res.failure);
          res.outcomes[i] = ErrorCode::internal;
        }
      }
    }
  }

  // Reads only after the batch's writes: they see the whole batch, and only logged state.
  for (std::size_t i = 0; i < requests.size(); ++i) {
    const Request& r = requests[i];
    std::optional<ErrorCode>& outcome = res.outcomes[i];
    if (i >= first_over) {
      res.replies[i] = encode_error(r.id, ErrorCode::internal,
                                    "this batch's log record is full (long item details); not applied, retry");
      outcome = ErrorCode::internal;
    } else if (r.op == Op::ping) {
      res.replies[i] = encode_ok(r.id);
      outcome = std::nullopt;
    } else if (has_reads && (r.op == Op::get || r.op == Op::history || r.op == Op::list)) {
      if (txn_ == nullptr) {
        res.replies[i] = encode_error(r.id, ErrorCode::internal, "the store is not readable now");
        outcome = ErrorCode::internal;
      } else {
        res.replies[i] = r.op == Op::list ? list_reply(txn_, r, &outcome) : read_reply(txn_, r, &outcome);
      }
    }
  }
  return res;
}

void ItemStore::apply_writes(const std::vector<Request>& requests, uint64_t now_ms, bool log, BatchResult& res) {
  WriteCtx w;
  w.now = now_ms;
  // Every batch goes straight into the checkpoint transaction: a nested transaction per batch
  // would copy each page the batch touches and merge its page lists (docs/durability.md). A live
  // batch that fails part-way is taken out again by roll_back_live_batch().
  w.txn = txn_;
  // Closed before the checkpoint transaction can end (checkpoint, rebuild).
  Cursor data_cursor, requests_cursor;
  int rc = data_cursor.open(w.txn, env_->data);
  if (rc == 0) rc = requests_cursor.open(w.txn, env_->requests);
  if (rc != 0) w.failed_at = "mdb_cursor_open";
  w.cursors[0] = {data_cursor.get(), env_->data};
  w.cursors[1] = {requests_cursor.get(), env_->requests};
  // Due deadlines first: a request of this batch sees its item closed, as the contract says.
  if (rc == 0) rc = run_auto_closes(w);
  std::size_t writes = 0;
  for (std::size_t i = 0; rc == 0 && i < requests.size(); ++i) {
    if (op_is_write(requests[i].op)) {
      rc = apply_write(w, requests[i], &res.replies[i], &res.outcomes[i]);
      ++writes;
    }
  }
  if (rc == 0) rc = sweep_.prune(w, *env_, w.now, writes);
  if (rc == 0 && w.items_added > 0) rc = w.put(env_->meta, "items", fmt::encode_item_count(item_count_ + w.items_added));
  std::optional<uint64_t> next_deadline;
  if (rc == 0) rc = first_deadline(w, *env_, &next_deadline);
  data_cursor.close();
  requests_cursor.close();
  w.cursors[0] = w.cursors[1] = {};
  if (rc != 0) {
    res.failure = describe_failure(rc, w.failed_at);
    if (log) roll_back_live_batch(res);
    return;  // a replayed batch that fails fails the open
  }
  if (log) {
    // The durability point: the batch is on disk before anything of it is kept or answered.
    encode_batch_record(now_ms, requests, record_);
    failpoint::before_commit();  // off unless BIDMESH_FAILPOINT_COMMIT_DELAY_MS (tests)
    const auto log_start = std::chrono::steady_clock::now();
    const LogPosition log_before = log_->end();
    const Status st = log_->append(record_);
    res.log_bytes = log_->bytes_between(log_before, log_->end());
    res.log_ns = static_cast<uint64_t>(
        std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - log_start).count());
    if (!st.ok()) {
      res.failure = (st.is_no_space() ? "storage full: the write-ahead log cannot grow: " : "write-ahead log: ") +
                    st.message();
      if (st.is_io_error()) {  // what is on disk is unknown now (no_space and invalid_argument wrote nothing)
        log_broken_ = true;
        res.fatal = true;
      }
      roll_back_live_batch(res);
      return;
    }
  }
  res.committed = true;
  res.events = std::move(w.events);
  next_deadline_ = next_deadline;
  retry_after_ms_ = 0;
  item_count_ += w.items_added;
  items_open_ = static_cast<uint64_t>(static_cast<int64_t>(items_open_) + w.open_delta);
  records_ += w.records_added;
  records_ -= std::min<uint64_t>(records_, sweep_.pruned());
  res.auto_closes = w.auto_closes;
  sweep_.committed();
}

void ItemStore::roll_back_live_batch(BatchResult& res) {
  if (!log_broken_) {
    // The log holds every batch before this one and nothing of it.
    const Status st = rebuild_from_log();
    if (st.ok() && replay_end_ == log_->end()) return;
    log_broken_ = true;
    res.fatal = true;
    *res.failure += "; rebuilding the store from the log failed" + (st.ok() ? std::string() : ": " + st.message());
  }
  // The log's end is unknown or the rebuild failed: no state is served until the node has
  // restarted and replayed (reads answer `internal` meanwhile).
  if (txn_ != nullptr) mdb_txn_abort(txn_);
  txn_ = nullptr;
}

int ItemStore::apply_write(WriteCtx& w, const Request& r, std::string* reply, std::optional<ErrorCode>* outcome) {
  w.fingerprint = r.fingerprint();
  std::string_view raw;
  int rc = w.get(env_->requests, fmt::request_key(w.key, r.item, r.id), &raw);
  if (rc == 0) {
    fmt::RequestRecord rec;
    if (!fmt::decode_request_record(raw, &rec)) return w.fail(kBadRecord, "request record");
    judge_repeat(r, w.fingerprint, rec.fingerprint, rec.reply, reply, outcome);
    return 0;
  }
  if (rc != MDB_NOTFOUND) return rc;

  ItemState s;
  bool found = false;
  if ((rc = load_state(w, env_->data, r.item, &s, &found, w.key)) != 0) return rc;
  const std::optional<uint64_t> closes_at_before = s.closes_at;
  const std::optional<std::string> leader_before = s.bidder;
  if (const std::optional<EventKind> change = judge_write(r, found, s, w.now, reply, outcome)) {
    if ((rc = store_change(w, r.item, s, *change, closes_at_before, leader_before)) != 0) return rc;
    if (*change == EventKind::open && s.has_details &&
        (rc = w.put(env_->data, fmt::data_key(w.key, r.item, fmt::kTagDetails),
                    fmt::encode_details(ItemDetails{r.title, r.description, r.image_url}))) != 0)
      return rc;
  }
  // Every reply decided here (success, too_low, closed, exists, unknown_item) is remembered,
  // in this transaction, with the effect. (w.key was reused above: the request key is made again.)
  rc = w.put(env_->requests, fmt::request_key(w.key, r.item, r.id),
             fmt::encode_request_record(w.value, w.now, w.fingerprint, *reply));
  if (rc == 0) ++w.records_added;
  return rc;
}

// Stores a change the rules decided: the item's new state, the event of its new seq (stored with
// the write and queued for the feed, which gets it after the commit), and the deadline entry that
// an open adds and a close removes.
int ItemStore::store_change(WriteCtx& w, std::string_view item, const ItemState& s, EventKind kind,
                             const std::optional<uint64_t>& closes_at_before,
                             const std::optional<std::string>& leader_before) {
  int rc = 0;
  if (kind == EventKind::closed && s.closes_at &&
      (rc = w.del(env_->deadlines, fmt::deadline_key(*s.closes_at, item))) != 0)
    return rc;
  // The listing tree: an open adds the item's key, a close moves it to the closed ones.
  if (kind == EventKind::open && (rc = move_listing(w, std::nullopt, fmt::listing_key(false, s.closes_at, item))) != 0)
    return rc;
  if (kind == EventKind::closed && (rc = move_listing(w, fmt::listing_key(false, s.closes_at, item),
                                                      fmt::listing_key(true, s.closes_at, item))) != 0)
    return rc;
  if ((rc = w.put(env_->data, fmt::data_key(w.key, item, fmt::kTagState), fmt::encode_state(w.value, s))) != 0)
    return rc;
  const bool extended = kind == EventKind::max && bid_extended(s, closes_at_before);
  Event e = change_event(item, s, kind, w.now);
  if (extended) e.seq -= 1;  // the max event comes first, then the extended event
  std::string body = encode_event(e);
  if ((rc = w.put(env_->data, fmt::event_key(w.key, e.item, e.seq), body)) != 0) return rc;
  w.events.push_back({feed_topic(e.item), std::move(body)});
  if (kind == EventKind::max && leader_before && s.bidder != leader_before && s.max)
    w.events.push_back({bidder_topic(*leader_before), encode_outbid(item, e.seq, e.ts, *s.max)});
  if (extended) {
    // Soft close: the deadline entry moves with closes_at.
    if (closes_at_before && (rc = w.del(env_->deadlines, fmt::deadline_key(*closes_at_before, item))) != 0)
      return rc;
    if ((rc = w.put(env_->deadlines, fmt::deadline_key(*s.closes_at, item), {})) != 0) return rc;
    if ((rc = move_listing(w, fmt::listing_key(false, closes_at_before, item), fmt::listing_key(false, s.closes_at, item))) != 0)
      return rc;
    const Event x = change_event(item, s, EventKind::extended, w.now);
    std::string xbody = encode_event(x);
    if ((rc = w.put(env_->data, fmt::event_key(w.key, x.item, x.seq), xbody)) != 0) return rc;
    w.events.push_back({feed_topic(x.item), std::move(xbody)});
  }
  if (kind == EventKind::closed) w.open_delta -= 1;
  if (kind == EventKind::open) {
    w.open_delta += 1;
    w.items_added += 1;
    if (s.closes_at && (rc = w.put(env_->deadlines, fmt::deadline_key(*s.closes_at, item), {})) != 0) return rc;
  }
  return 0;
}

// Closes the items whose closes_at <= now (at most kAutoClosePerTxn, earliest first), as a
// `close` would. The rest stay due, so next_auto_close_ms() makes the loop come back at once.
int ItemStore::run_auto_closes(WriteCtx& w) {
  if (!next_deadline_ || *next_deadline_ > w.now) return 0;
  std::vector<std::string> due;  // deadline keys; collected first, then changed
  if (const int rc = find_due_deadlines(w, *env_, w.now, &due); rc != 0) return rc;
  for (const std::string& key : due) {
    const std::string_view item = fmt::deadline_item(key);
    ItemState s;
    bool found = false;
    int rc = load_state(w, env_->data, item, &s, &found, w.key);
    if (rc != 0) return rc;
    if (deadline_closes(found, s, fmt::deadline_of(key))) {
      mark_closed(s);
      rc = store_change(w, item, s, EventKind::closed);  // removes this deadline entry too
      ++w.auto_closes;
    } else {
      rc = w.del(env_->deadlines, key);  // stale entry: nothing to close
    }
    if (rc != 0) return rc;
  }
  return 0;
}

std::string ItemStore::read_reply(MDB_txn* txn, const Request& r, std::optional<ErrorCode>* outcome) const {
  ItemState s;
  bool found = false;
  std::string prefix;
  TxnCalls t{txn};
  *outcome = ErrorCode::internal;  // until the reply is known
  int rc = load_state(t, env_->data, r.item, &s, &found, prefix);
  if (rc != 0) return encode_error(r.id, ErrorCode::internal, describe_failure(rc, t.failed_at));
  if (!found) {
    *outcome = ErrorCode::unknown_item;
    return unknown_item_reply(r);
  }
  if (r.op == Op::get) {
    if (!s.has_details) {
      *outcome = std::nullopt;
      return get_reply(r, s);
    }
    ItemDetails details;
    std::string_view raw;
    rc = get_value(txn, env_->data, fmt::data_key(prefix, r.item, fmt::kTagDetails), &raw);
    if (rc == 0 && !fmt::decode_details(raw, &details)) rc = kBadRecord;
    if (rc != 0) return encode_error(r.id, ErrorCode::internal, describe_failure(rc, "item details"));
    *outcome = std::nullopt;
    return get_reply(r, s, &details);
  }

  // history: events with seq > after, oldest first, at most limit; the stored bytes spliced in.
  std::vector<std::string_view> events;
  const uint64_t limit = std::min(r.limit, kMaxHistoryLimit);  // decode caps it too
  if (r.after < UINT64_MAX && limit > 0) {
    fmt::data_key(prefix, r.item, fmt::kTagEvent);
    std::string first;
    fmt::event_key(first, r.item, r.after + 1);
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
  *outcome = std::nullopt;
  return encode_history_ok(r.id, r.item, events);
}

int ItemStore::move_listing(WriteCtx& w, const std::optional<std::string>& from, const std::string& to) {
  int rc = 0;
  if (from && (rc = w.del(env_->listing, *from)) != 0) return rc;
  return w.put(env_->listing, to, {});
}

std::string ItemStore::list_reply(MDB_txn* txn, const Request& r, std::optional<ErrorCode>* outcome) const {
  // The first key of the page: just after the cursor's, or the first of the status.
  std::string seek(1, r.list_closed ? 1 : 0);
  std::optional<std::string> after;
  if (!r.cursor.empty()) {
    std::string why;
    const std::optional<ListKey> key = decode_cursor(r.cursor, r.list_closed, &why);
    if (!key) {
      *outcome = ErrorCode::bad_request;
      return encode_error(r.id, ErrorCode::bad_request, "field 'cursor' " + why);  // decode checked it
    }
    after = list_key_bytes(*key);
    seek = *after;
  }
  std::vector<std::string> entries;
  std::vector<std::string_view> views;
  std::optional<ListKey> last;
  bool more = false;
  TxnCalls t{txn};
  std::string scratch;
  Cursor c;
  int rc = c.open(txn, env_->listing);
  MDB_val k = to_val(seek), v{};
  if (rc == 0) rc = c.get(&k, &v, MDB_SET_RANGE);
  if (rc == 0 && after && to_sv(k) == *after) rc = c.get(&k, &v, MDB_NEXT);  // strictly after
  while (rc == 0 && to_sv(k).starts_with(seek.substr(0, 1))) {
    if (entries.size() == r.limit) {
      more = true;  // one key past the page: there is a next page
      break;
    }
    std::optional<ListKey> key = parse_list_key_bytes(to_sv(k));
    ItemState s;
    bool found = false;
    if (!key) rc = t.fail(kBadRecord, "listing key");
    if (rc == 0) rc = load_state(t, env_->data, key->item, &s, &found, scratch);
    if (rc == 0 && !found) rc = t.fail(kBadRecord, "listing key without an item");
    ItemDetails details;
    if (rc == 0 && s.has_details) {
      std::string_view raw;
      rc = get_value(txn, env_->data, fmt::data_key(scratch, key->item, fmt::kTagDetails), &raw);
      if (rc == 0 && !fmt::decode_details(raw, &details)) rc = t.fail(kBadRecord, "item details");
      else if (rc != 0) t.failed_at = "item details";
    }
    if (rc != 0) break;
    entries.push_back(list_entry(key->item, s, details.title));
    last = std::move(key);
    rc = c.get(&k, &v, MDB_NEXT);
  }
  if (rc != 0 && rc != MDB_NOTFOUND) {
    *outcome = ErrorCode::internal;
    return encode_error(r.id, ErrorCode::internal, describe_failure(rc, *t.failed_at ? t.failed_at : "listing cursor"));
  }
  views.assign(entries.begin(), entries.end());
  const std::optional<std::string> cursor = more && last ? std::optional<std::string>(encode_cursor(*last)) : std::nullopt;
  *outcome = std::nullopt;
  return encode_list_ok(r.id, views, cursor, !r.list_missing.empty(), r.list_missing);
}

Status ItemStore::open_listing_index() {
  Txn t;
  int rc = t.begin(env_->env, 0);
  MDB_dbi listing = 0;
  if (rc == 0) rc = mdb_dbi_open(t.get(), "listing", MDB_CREATE, &listing);
  if (rc != 0) return Status::io_error(describe_failure(rc, "opening the listing tree"));
  std::string_view marker;
  rc = get_value(t.get(), env_->meta, fmt::kListingMetaKey, &marker);
  if (rc == MDB_NOTFOUND) {
    // Built once from the states (a store from before the index, or one bidmesh-slots changed).
    TxnCalls w{t.get()};
    rc = mdb_drop(t.get(), listing, 0);
    if (rc == 0)
      rc = walk_items(t.get(), [&](std::string_view item, const ItemState& s) {
        return w.put(listing, fmt::listing_key(s.closed, s.closes_at, item), {});
      });
    if (rc == 0) rc = w.put(env_->meta, fmt::kListingMetaKey, "1");
  }
  if (rc == 0) rc = t.commit();
  if (rc != 0) return Status::io_error(describe_failure(rc, "building the listing tree"));
  env_->listing = listing;  // valid for the environment's life once its transaction committed
  return Status::OK();
}

std::string ItemStore::describe_failure(int rc, const char* where) const {
  if (rc == MDB_MAP_FULL) {
    return "storage full: the LMDB map (" + std::to_string(map_size_bytes()) +
           " bytes) is full; raise map_size_mb for this node in the config";
  }
  if (rc == kBadRecord) return std::string("storage error: a stored record is malformed (") + where + ")";
  return std::string("storage error: ") + where + ": " + mdb_strerror(rc);
}

// Before every write transaction and checkpoint: a full disk then refuses writes cleanly (reads go
// on) instead of failing inside LMDB's page writes (lmdb_env.h, reserve_disk_ahead).
int ItemStore::reserve_disk() { return reserve_disk_ahead(env_->env, kReserveAhead, &reserved_bytes_); }

uint64_t ItemStore::map_size_bytes() const { return lmdb_map_size(env_->env); }

uint64_t ItemStore::item_count() const { return item_count_; }

uint64_t ItemStore::log_bytes_since_checkpoint() const {
  return log_ ? log_->bytes_between(checkpoint_pos_, log_->end()) : 0;
}

uint64_t ItemStore::store_used_bytes() const { return lmdb_used_bytes(env_->env); }

// One walk of the data tree, seeking from item to item: each item's state (open or not). The
// records are the requests tree's entry count. Once in a store's life, at its first open with
// this build (later opens read meta "open" and "records").
int ItemStore::count_open_and_records(uint64_t* open, uint64_t* records) const {
  *open = 0;
  *records = 0;
  if (txn_ == nullptr) return EINVAL;
  MDB_stat requests{};
  if (const int rc = mdb_stat(txn_, env_->requests, &requests); rc != 0) return rc;
  *records = requests.ms_entries;
  return walk_items(txn_, [&](std::string_view, const ItemState& s) {
    if (!s.closed) ++*open;
    return 0;
  });
}

int ItemStore::walk_items(MDB_txn* txn, const std::function<int(std::string_view, const ItemState&)>& on_state) const {
  Cursor c;
  if (const int rc = c.open(txn, env_->data); rc != 0) return rc;
  std::string seek;
  MDB_val k{}, v{};
  int rc = c.get(&k, &v, MDB_FIRST);
  while (rc == 0) {
    const std::string_view key = to_sv(k);
    const std::optional<std::size_t> item_end = fmt::data_key_item_end(key);
    if (!item_end) return kBadRecord;
    const char tag = key[*item_end + 1];
    if (tag == fmt::kTagState) {
      ItemState s;
      if (!fmt::decode_state(to_sv(v), &s)) return kBadRecord;
      if ((rc = on_state(key.substr(0, *item_end), s)) != 0) return rc;
      rc = c.get(&k, &v, MDB_NEXT);  // the state is an item's last key: on to the next item
      continue;
    }
    // Past the details and events to the state.
    seek.assign(key.substr(0, *item_end + 1));
    seek.push_back(tag < fmt::kTagState ? fmt::kTagState : '\xff');
    k = to_val(seek);
    rc = c.get(&k, &v, MDB_SET_RANGE);
  }
  return rc == MDB_NOTFOUND ? 0 : rc;
}

uint64_t ItemStore::idempotency_record_count() const {
  uint64_t open = 0, records = 0;
  return count_open_and_records(&open, &records) == 0 ? records : 0;
}

std::optional<ItemState> ItemStore::get_item(std::string_view item) const {
  if (txn_ == nullptr) return std::nullopt;
  ItemState s;
  bool found = false;
  std::string key;
  TxnCalls t{txn_};
  if (load_state(t, env_->data, item, &s, &found, key) != 0 || !found) return std::nullopt;
  return s;
}

}  // namespace bidmesh
