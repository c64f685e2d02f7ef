// The item store's deadline and prune walks: see sweep.h.
#include "nodes/sweep.h"

#include "nodes/lmdb_env.h"
#include "nodes/store_format.h"

namespace bidmesh {

namespace fmt = store_format;

int find_due_deadlines(TxnCalls& t, const LmdbEnv& env, uint64_t now_ms, std::vector<std::string>* due) {
  Cursor c;
  int rc = c.open(t.txn, env.deadlines);
  MDB_val k{}, v{};
  if (rc == 0) rc = c.get(&k, &v, MDB_FIRST);
  while (rc == 0 && due->size() < kAutoClosePerTxn) {
    const std::string_view key = to_sv(k);
    if (key.size() < fmt::kDeadlineKeyMinBytes) return t.fail(kBadRecord, "deadline key");
    if (fmt::deadline_of(key) > now_ms) break;
    due->emplace_back(key);
    rc = c.get(&k, &v, MDB_NEXT);
  }
  if (rc != 0 && rc != MDB_NOTFOUND) return t.fail(rc, "mdb_cursor_get");
  return 0;
}

int first_deadline(TxnCalls& t, const LmdbEnv& env, std::optional<uint64_t>* out) {
  out->reset();
  Cursor c;
  int rc = c.open(t.txn, env.deadlines);
  MDB_val k{}, v{};
  if (rc == 0) rc = c.get(&k, &v, MDB_FIRST);
  if (rc == MDB_NOTFOUND) return 0;
  if (rc != 0) return t.fail(rc, "mdb_cursor_get");
  const std::string_view key = to_sv(k);
  if (key.size() < fmt::kDeadlineKeyMinBytes) return t.fail(kBadRecord, "deadline key");
  *out = fmt::deadline_of(key);
  return 0;
}

int RecordSweep::prune(TxnCalls& t, const LmdbEnv& env, uint64_t now_ms, std::size_t writes) {
  const std::size_t budget = kPrunePerTxn + kPrunePerWrite * writes;
  expired_.clear();
  const std::string& start = resume_;
  bool wrapped = false, done = false;
  std::size_t examined = 0;
  {
    Cursor c;
    int rc = c.open(t.txn, env.requests);
    MDB_val k = to_val(start), v{};
    if (rc == 0) rc = start.empty() ? c.get(&k, &v, MDB_FIRST) : c.get(&k, &v, MDB_SET_RANGE);
    while (examined < budget) {
      if (rc == MDB_NOTFOUND) {  // the end of the tree: wrap once
        if (wrapped || start.empty()) {
          next_.clear();
          done = true;
          break;
        }
        wrapped = true;
        rc = c.get(&k, &v, MDB_FIRST);
        continue;
      }
      if (rc != 0) return t.fail(rc, "mdb_cursor_get");
      const std::string_view key = to_sv(k);
      if (wrapped && key >= std::string_view(start)) {  // back where this txn began
        next_.assign(key);
        done = true;
        break;
      }
      if (!fmt::request_key_item(key)) return t.fail(kBadRecord, "request key");
      fmt::RequestRecord rec;
      if (!fmt::decode_request_record(to_sv(v), &rec)) return t.fail(kBadRecord, "request record");
      ++examined;
      // Kept at least `retention`; a clock that went back keeps records longer, never shorter.
      if (rec.stored_at <= now_ms && now_ms - rec.stored_at > retention_ms_) expired_.emplace_back(key);
      rc = c.get(&k, &v, MDB_NEXT);
    }
    if (!done) {  // out of budget: resume at the current key (or wrap next time)
      if (rc == 0) {
        next_.assign(to_sv(k));
      } else if (rc == MDB_NOTFOUND) {
        next_.clear();
      } else {
        return t.fail(rc, "mdb_cursor_get");
      }
    }
  }
  for (const std::string& key : expired_) {
    if (const int rc = t.del(env.requests, key); rc != 0) return rc;
  }
  return 0;
}

}  // namespace bidmesh
