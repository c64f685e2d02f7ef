// The walks a write transaction of the item store makes besides its own writes: the deadlines
// that are due (for the auto-close) and the idempotency records past their retention (the prune).
// Closing a due item is the store's: it goes through the same path as a `close` (state, event,
// feed), so this file only finds the due deadlines.
//
// The prune sweep (no age index): a cursor walks the `requests` tree in key order, resuming where
// the previous write transaction stopped and wrapping at the end. Each write transaction examines
// at most kPrunePerTxn + kPrunePerWrite x (its writes) request records and deletes those older
// than the retention. So every record is examined once per cycle, a cycle takes at most
// R / kPrunePerTxn write transactions (R records), and since each transaction
// examines at least twice the records it adds, the expired backlog cannot grow: the store holds
// the records of the last `retention` plus at most one cycle's worth of expired ones. A record is
// deleted no earlier than `retention` after it was stored (a clock that goes back keeps records
// longer, never shorter).
//
// Failures: int codes as in nodes/lmdb_env.h; every non-zero return leaves the failed call or the
// malformed record in TxnCalls::failed_at.
//
// Thread-compatible: used by the thread that owns the store's write transaction.
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bidmesh {

struct LmdbEnv;
struct TxnCalls;

// Request records the sweep examines per write txn. Small: every batch pays it, live and in the
// replay, and in a large store each examination can touch a cold page (docs/durability.md).
inline constexpr std::size_t kPrunePerTxn = 8;
inline constexpr std::size_t kPrunePerWrite = 2;        // ... plus this many per write of the txn
inline constexpr std::size_t kAutoClosePerTxn = 1024;   // due deadlines closed per write txn

// The deadline keys (nodes/store_format.h) with closes_at <= now_ms, earliest first, at most
// kAutoClosePerTxn: the rest stay due, and the store's next transaction takes them.
int find_due_deadlines(TxnCalls& t, const LmdbEnv& env, uint64_t now_ms, std::vector<std::string>* due);

// The earliest closes_at of the deadlines tree; nullopt when it is empty.
int first_deadline(TxnCalls& t, const LmdbEnv& env, std::optional<uint64_t>* out);

// The prune sweep and where it resumes.
class RecordSweep {
 public:
  explicit RecordSweep(std::chrono::milliseconds retention) : retention_ms_(static_cast<uint64_t>(retention.count())) {}
  RecordSweep(const RecordSweep&) = delete;
  RecordSweep& operator=(const RecordSweep&) = delete;

  // Where the walk resumes: a requests key, "" for the start of the tree. Loaded from meta "sweep"
  // with the checkpoint transaction; every checkpoint saves it there.
  void resume_at(std::string_view key) { resume_.assign(key); }
  const std::string& resume_key() const { return resume_; }

  // From the resume key, examines up to kPrunePerTxn + kPrunePerWrite x `writes` request records
  // in key order, wrapping once at the end of the tree, and deletes in `t` those older than the
  // retention at `now_ms`. Where the next walk resumes is kept until committed().
  int prune(TxnCalls& t, const LmdbEnv& env, uint64_t now_ms, std::size_t writes);

  // The transaction of the last prune() committed: the next walk resumes where that one stopped.
  void committed() { resume_.swap(next_); }
  // The request records the last prune() that returned 0 deleted.
  std::size_t pruned() const { return expired_.size(); }

 private:
  const uint64_t retention_ms_;
  std::string resume_;
  std::string next_;                  // set by every prune() that returns 0
  std::vector<std::string> expired_;  // prune's keys to delete, collected first; reused
};

}  // namespace bidmesh
