// Thin C++ wrappers over LMDB (lmdb.h) for the item store: the environment with its trees and
// lock file, transactions and cursors that free themselves, and the calls on an open transaction
// that remember which one failed.
//
// Guarantees
// - Ownership: LmdbEnv closes its environment and releases its lock when destroyed; Txn aborts
//   its transaction unless it was committed; Cursor closes its cursor. Each must outlive what
//   LMDB handed out under it (values read in a transaction are valid while it lives).
// - Failures are int codes, 0 for success, else an LMDB or errno code, or kBadRecord for a
//   stored record that does not parse. TxnCalls leaves the name of the failed call or record in
//   `failed_at`, for the operator's message; every path that returns non-zero through it sets it.
// - The calls on the per-bid path (TxnCalls, get_value, to_val) are inline.
//
// Caveats (from lmdb.h): never use an environment after fork(); the lock file, not LMDB, keeps a
// second process out of the store; open_lmdb_env clears stale reader slots (mdb_reader_check).
//
// Thread-compatible: an environment and its write transaction belong to one thread.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include <lmdb.h>

#include "storage/status.h"

namespace bidmesh {

// A stored record that does not parse: neither an LMDB code (MDB_KEYEXIST, -30799, up to
// MDB_LAST_ERRCODE) nor an errno (positive).
inline constexpr int kBadRecord = -30000;

inline MDB_val to_val(std::string_view s) { return MDB_val{s.size(), const_cast<char*>(s.data())}; }
inline std::string_view to_sv(const MDB_val& v) { return {static_cast<const char*>(v.mv_data), v.mv_size}; }

// The store's environment: its five trees (nodes/store_format.h) and the lock file that refuses
// a second process.
struct LmdbEnv {
  MDB_env* env = nullptr;
  MDB_dbi meta = 0, data = 0, deadlines = 0;
  MDB_dbi listing = 0;  // 0 until ItemStore opens it (named trees get handles >= 2)
  MDB_dbi requests = 0;  // the idempotency records (store format 6)
  int lock_fd = -1;

  LmdbEnv() = default;
  LmdbEnv(const LmdbEnv&) = delete;
  LmdbEnv& operator=(const LmdbEnv&) = delete;
  ~LmdbEnv();
};

// Opens the environment in `dir` (which must exist) for writing, after taking the lock file
// <dir>/bidmesh.lock. Trees are not opened: that is the store's, with its format check.
// read_ahead false sets MDB_NORDAHEAD (see the .cc for why). Errors: io_error with a one-line
// reason naming the directory ("the store <dir> is in use by another process", "cannot open
// LMDB in <dir>: <call>: <reason>").
Status open_lmdb_env(const std::filesystem::path& dir, uint64_t map_size_bytes, bool read_ahead, LmdbEnv* env);

// "cannot open LMDB in <dir>: <call>: <reason>": the one-line reason of a failed open.
std::string lmdb_open_failure(const std::filesystem::path& dir, const char* call, int rc);

// Opens the environment in `dir` read-only, without the lock file (the node may run). Returns 0
// or an LMDB code, with *failed_at naming the call.
int open_lmdb_env_read_only(const std::filesystem::path& dir, LmdbEnv* env, const char** failed_at);

// Aborts the transaction unless it was committed.
class Txn {
 public:
  Txn() = default;
  Txn(const Txn&) = delete;
  Txn& operator=(const Txn&) = delete;
  ~Txn() {
    if (txn_ != nullptr) mdb_txn_abort(txn_);
  }
  int begin(MDB_env* env, unsigned flags, MDB_txn* parent = nullptr) { return mdb_txn_begin(env, parent, flags, &txn_); }
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
  MDB_cursor* get() const { return cursor_; }
  // A write transaction frees its cursors when it ends: close before it commits or aborts.
  void close() {
    if (cursor_ != nullptr) mdb_cursor_close(cursor_);
    cursor_ = nullptr;
  }

 private:
  MDB_cursor* cursor_ = nullptr;
};

// The value under `key`; rc MDB_NOTFOUND when there is none. *out is valid while `txn` lives.
inline int get_value(MDB_txn* txn, MDB_dbi dbi, std::string_view key, std::string_view* out) {
  MDB_val k = to_val(key), v{};
  const int rc = mdb_get(txn, dbi, &k, &v);
  if (rc == 0) *out = to_sv(v);
  return rc;
}

// Calls on an open transaction (not owned) that leave the name of what failed in `failed_at`.
struct TxnCalls {
  MDB_txn* txn = nullptr;
  const char* failed_at = "";  // the call or the record that failed, for the operator's message
  // Optional: open cursors of `txn`, at most one per tree, which get() and put() on their tree go
  // through. LMDB first searches the page a cursor is on, so calls on keys of one leaf (an item's
  // records, one client's request records) skip the descent from the root and its dirty-page
  // lookups.
  struct TreeCursor {
    MDB_cursor* cursor = nullptr;
    MDB_dbi dbi = 0;
  };
  TreeCursor cursors[2];
  MDB_cursor* cursor_on(MDB_dbi dbi) const {
    for (const TreeCursor& c : cursors)
      if (c.cursor != nullptr && c.dbi == dbi) return c.cursor;
    return nullptr;
  }

  // Records `what` as the failure and returns rc: `return t.fail(kBadRecord, "deadline key");`.
  int fail(int rc, const char* what) {
    failed_at = what;
    return rc;
  }
  // MDB_NOTFOUND is returned without being recorded: for most callers it is an answer.
  int get(MDB_dbi dbi, std::string_view key, std::string_view* out) {
    int rc = 0;
    if (MDB_cursor* cursor = cursor_on(dbi)) {
      MDB_val k = to_val(key), v{};
      if ((rc = mdb_cursor_get(cursor, &k, &v, MDB_SET_KEY)) == 0) *out = to_sv(v);
    } else {
      rc = get_value(txn, dbi, key, out);
    }
    if (rc != 0 && rc != MDB_NOTFOUND) failed_at = "mdb_get";
    return rc;
  }
  int put(MDB_dbi dbi, std::string_view key, std::string_view value) {
    MDB_val k = to_val(key), v = to_val(value);
    MDB_cursor* cursor = cursor_on(dbi);
    const int rc = cursor != nullptr ? mdb_cursor_put(cursor, &k, &v, 0) : mdb_put(txn, dbi, &k, &v, 0);
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

// Disk blocks for the data file, allocated ahead of use (fallocate, no data written) `ahead`
// bytes beyond the last page in use, whenever use comes within ahead / 2 of *reserved_bytes
// (updated). So a full disk shows as a clean error before a commit rather than in the middle of
// LMDB's page writes. Returns 0 or an errno (ENOSPC: the disk is full). Filesystems without
// fallocate reserve nothing and return 0.
int reserve_disk_ahead(MDB_env* env, uint64_t ahead, uint64_t* reserved_bytes);

// The map size of the environment (0 if LMDB cannot say).
uint64_t lmdb_map_size(MDB_env* env);

// Bytes of the map in use as of the last commit: (last page number + 1) x page size; 0 if LMDB
// cannot say.
uint64_t lmdb_used_bytes(MDB_env* env);

}  // namespace bidmesh
