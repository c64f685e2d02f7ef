// ItemStore: a bid node's items in one LMDB environment, and the rules of PROTOCOL.md applied to
// them. No ZeroMQ here: BidNode owns the sockets; this class turns a batch of decoded requests
// into replies and feed events.
//
// Guarantees
// - Durability point: the write-ahead log (storage/log_writer.h). A batch's writes, the due
//   auto-closes and the pruning of old idempotency records are applied to the open checkpoint
//   transaction, in arrival order; the batch's log record (nodes/batch_record.h) is then appended
//   with one write and one fdatasync (none when `no_sync`), and only then are the replies handed
//   out. So an `ok: true` is on disk. When anything fails, nothing of the batch is kept (the
//   checkpoint transaction is rebuilt from the log, which does not hold the batch): every write
//   gets `internal`, no event is returned, and reads are still answered.
// - LMDB is the queryable state behind the log. All batches since the last checkpoint live in
//   one open write transaction (the "checkpoint transaction"); checkpoint() commits it WITH sync,
//   storing the log position it covers in the same commit, and only then lets the log drop the
//   segments before that position. LMDB is never committed without sync, so a system crash
//   cannot corrupt it (lmdb.h), and the log is never trimmed past what LMDB holds.
// - open() replays the log records past the stored position, each at its own time, through the
//   same apply path: the state is exactly what was acknowledged. A torn last record (cut by a
//   crash during its write, never acknowledged) is cut off; a damaged record before the end makes
//   open() fail with the file, the offset and what to do.
// - Reads (get, history, list) are answered from the checkpoint transaction after the batch's writes,
//   so they see every write of their batch and only logged state, and `get` always equals the
//   last event of `history`.
// - Idempotency: each write's (item, id) is stored with its fingerprint and its exact reply bytes
//   in the same transaction as its effect. The same write again gets those bytes unchanged and
//   changes nothing; other content under the same (item, id) gets `conflict` (not stored).
//   Records are kept at least `retention` (24 h by default), then pruned by a sweep
//   (nodes/sweep.h), so the store stays bounded under steady load.
// - A log write or fdatasync that fails leaves the disk in an unknown state (Linux may drop the
//   dirty pages of a failed fsync): the batch is answered `internal`, BatchResult::fatal is set
//   and every later write is refused; the node must exit and replay (PostgreSQL's rule). A log
//   that cannot get a new segment (ENOSPC) refuses the batch with `internal` and recovers when
//   space comes back. A checkpoint that fails (a full disk under LMDB) drops the checkpoint
//   transaction and rebuilds it from the log, so nothing acknowledged is lost.
//
// The log lives in <dir>/wal (segment files, storage/log_format.h); LMDB's records are laid out as
// nodes/store_format.h says. The parts by concept: the auction rules (nodes/auction_rules.h), the
// LMDB wrappers (nodes/lmdb_env.h), the deadline and prune walks (nodes/sweep.h, which also
// bounds the idempotency records a store holds).
//
// Caveats (from lmdb.h): never use a store after fork(); open() clears stale reader slots with
// mdb_reader_check; when the map (map_size_bytes) is full, writes fail with `internal` ("storage
// full ...") until the operator raises the map size, while reads keep working. A lock file in the
// directory refuses a second process on the same store. No MDB_WRITEMAP (it did not pay here,
// and a full disk under a written map is a SIGBUS: docs/durability.md).
//
// Thread-compatible: one thread owns a store (LMDB's single writer).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "nodes/auction_rules.h"
#include "nodes/sweep.h"
#include "protocol/errors.h"
#include "protocol/messages.h"
#include "storage/log_format.h"
#include "storage/log_writer.h"
#include "storage/status.h"

struct MDB_txn;  // lmdb.h stays out of this header

namespace bidmesh {

struct LmdbEnv;

inline constexpr std::chrono::milliseconds kDefaultRequestRetention = std::chrono::hours(24);
inline constexpr uint64_t kReserveAhead = 64ull << 20;   // disk allocated past the last page

struct ItemStoreOptions {
  std::filesystem::path dir;                  // created if missing
  uint64_t map_size_bytes = 1ull << 30;       // LMDB map size: the most the store can hold
  bool no_sync = false;                       // the log is not fdatasynced: loses D (unsafe)
  bool read_ahead = false;                    // off: MDB_NORDAHEAD (see .cc); on only for A/B
  std::chrono::milliseconds retention = kDefaultRequestRetention;  // idempotency records
  // A checkpoint is due once the log holds this much past the last one, or this long after it.
  uint64_t checkpoint_bytes = 64ull << 10;
  std::chrono::milliseconds checkpoint_interval{1000};
  uint64_t log_segment_bytes = 16ull << 20;
  FileLayer* log_files = nullptr;             // null: real files (tests inject faults here)
  // Opening a store of format 2-5 moves its request records to the requests tree (format 6) in
  // commits of at most this many, so a large store's first open makes progress even when it is
  // stopped part-way (the supervisor kills a node not ready within 5 s); the next open resumes.
  std::size_t request_move_chunk = 100000;
};

// A durable event, ready for the feed.
struct FeedMessage {
  std::string topic;  // feed_topic(item)
  std::string body;   // encode_event(e)
};

struct BatchResult {
  std::vector<std::string> replies;   // replies[i] answers requests[i]
  // outcomes[i]: what replies[i] says, set where it is made: nullopt for ok, else its error code
  // (for the request counters, which thus never read the reply's bytes).
  std::vector<std::optional<ErrorCode>> outcomes;
  std::vector<FeedMessage> events;    // committed events, in commit order; empty on failure
  bool committed = false;             // a batch was applied and logged
  // The log can no longer be trusted (a failed write or fdatasync): the node must stop.
  bool fatal = false;
  // Set when the write transaction failed: what happened and what the operator must do.
  std::optional<std::string> failure;
  // For the node's metrics: the time of the batch record's log write and fdatasync (0 when
  // nothing was logged), and the items the batch closed at their deadline.
  uint64_t log_ns = 0;
  uint64_t log_bytes = 0;   // the log grew by this much (LogWriter::bytes_between)
  uint64_t auto_closes = 0;
};

class ItemStore {
 public:
  // Opens (creating if needed) the store in options.dir. On failure returns a one-line reason.
  // Replays the log past the last checkpoint first (see Guarantees).
  static std::variant<std::unique_ptr<ItemStore>, std::string> open(const ItemStoreOptions& options);

  // The log position the last checkpoint of the store in `dir` covers, read without opening the
  // store for writing (LMDB read-only; the node may run). nullopt with `*error` empty: no
  // checkpoint yet (replay starts at the beginning of the log); with `*error` set: unreadable.
  static std::optional<LogPosition> read_checkpoint_position(const std::filesystem::path& dir, std::string* error);

  ~ItemStore();
  ItemStore(const ItemStore&) = delete;
  ItemStore& operator=(const ItemStore&) = delete;

  // Applies one batch of decoded requests (any op) at wall time `now_ms`, closing the items whose
  // deadline is due first. Opens no write transaction when there is nothing to write.
  BatchResult apply_batch(const std::vector<Request>& requests, uint64_t now_ms);

  // True when a checkpoint is due (log bytes or time since the last one, see the options).
  bool checkpoint_due() const;
  // Commits the checkpoint transaction with sync and trims the log. On failure the state is
  // rebuilt from the log (nothing acknowledged is lost) and the reason is returned; writes go on.
  Status checkpoint();
  // What open() replayed, for the startup line.
  struct ReplayStats {
    uint64_t records = 0;
    uint64_t writes = 0;
    uint64_t bytes = 0;
    uint64_t micros = 0;
    bool torn_tail = false;
  };
  const ReplayStats& replay_stats() const { return replay_stats_; }
  LogPosition checkpoint_position() const { return checkpoint_pos_; }
  LogPosition log_end() const;
  uint64_t checkpoints() const { return checkpoints_; }

  // The earliest time at which apply_batch has an auto-close to do (a deadline, or the retry
  // time after a failed transaction), if any. The serving loop must not sleep past it.
  std::optional<uint64_t> next_auto_close_ms() const;

  // Reads of the last committed state (for the startup line and tests).
  uint64_t item_count() const;
  std::optional<ItemState> get_item(std::string_view item) const;
  uint64_t idempotency_record_count() const;  // a walk: O(items + records), for tests
  uint64_t map_size_bytes() const;
  // For the node's metrics (docs/operations.md). items_open and idempotency_records are kept as
  // batches commit (never a walk per request) and saved with every checkpoint; the others ask
  // the log and LMDB (a few calls: once a second, not per request).
  uint64_t items_open() const { return items_open_; }
  uint64_t idempotency_records() const { return records_; }
  uint64_t log_bytes_since_checkpoint() const;
  uint64_t log_segments() const { return log_ ? log_->segment_files() : 0; }  // files in <dir>/wal
  uint64_t store_used_bytes() const;  // LMDB pages in use at the last checkpoint x page size
  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct WriteCtx;
  ItemStore(std::unique_ptr<LmdbEnv> env, std::filesystem::path dir, std::chrono::milliseconds retention);

  int apply_write(WriteCtx& w, const Request& r, std::string* reply, std::optional<ErrorCode>* outcome);
  // `closes_at_before`: the item's deadline before the write (a bid that moved it, soft close,
  // also stores the `extended` event and moves the deadline entry). `leader_before`: the item's
  // leader before a bid; when the bid took the lead from it, an `outbid` notice is queued on its
  // bidder topic (for the feed only, never stored).
  int store_change(WriteCtx& w, std::string_view item, const ItemState& s, EventKind kind,
                   const std::optional<uint64_t>& closes_at_before = std::nullopt,
                   const std::optional<std::string>& leader_before = std::nullopt);
  int run_auto_closes(WriteCtx& w);
  // Applies the writes of one batch in the checkpoint transaction; with `log` the batch record is
  // then appended (durable), and a live batch that fails is rolled back (roll_back_live_batch).
  // Sets res.replies and res.outcomes of the writes, res.events, and the derived state on success.
  void apply_writes(const std::vector<Request>& requests, uint64_t now_ms, bool log, BatchResult& res);
  // Takes a failed live batch's changes out of the checkpoint transaction by rebuilding it from
  // the log; when that cannot be done (or the log is broken) the transaction is dropped and the
  // result made fatal, so nothing unlogged is ever read.
  void roll_back_live_batch(BatchResult& res);
  Status begin_checkpoint_txn();
  // Drops the checkpoint transaction and replays the log from checkpoint_pos_ into a new one.
  Status rebuild_from_log();
  std::filesystem::path log_dir() const;
  // The reply of a read, and its outcome in *outcome (as BatchResult::outcomes).
  std::string read_reply(MDB_txn* txn, const Request& r, std::optional<ErrorCode>* outcome) const;
  // `list`: a walk of at most r.limit + 1 keys of the listing tree from the cursor, each with
  // its item's state (and details, for the title): O(limit), never a scan of all items.
  std::string list_reply(MDB_txn* txn, const Request& r, std::optional<ErrorCode>* outcome) const;
  // Moves (or adds, with `from` absent) an item's key in the listing tree, in w's transaction.
  int move_listing(WriteCtx& w, const std::optional<std::string>& from, const std::string& to);
  // Opens the listing tree in a transaction of its own, once per process (from
  // begin_checkpoint_txn, before the checkpoint transaction exists), and builds it from the item
  // states when meta "listing" is absent (store_format.h).
  Status open_listing_index();
  std::string describe_failure(int rc, const char* where) const;
  int reserve_disk();

  std::unique_ptr<LmdbEnv> env_;
  const std::filesystem::path dir_;
  RecordSweep sweep_;                         // the prune sweep and where it resumes
  std::optional<uint64_t> next_deadline_;     // earliest closes_at in `deadlines`
  uint64_t retry_after_ms_ = 0;               // after a failed txn: no auto-close-only txn before
  uint64_t reserved_bytes_ = 0;               // data file bytes known to have disk blocks
  ItemStoreOptions options_;
  MDB_txn* txn_ = nullptr;                    // the checkpoint transaction (null only while failing)
  std::unique_ptr<LogWriter> log_;
  LogPosition checkpoint_pos_;                // what the last LMDB commit covers
  std::chrono::steady_clock::time_point last_checkpoint_{};
  uint64_t checkpoints_ = 0;
  bool log_broken_ = false;                   // a log write/sync failed: refuse writes
  bool checkpoint_failing_ = false;           // the last checkpoint failed: retry at most 1/s
  std::chrono::steady_clock::time_point last_checkpoint_attempt_{};
  LogPosition replay_end_;                    // where the last replay ended
  ReplayStats replay_stats_;
  std::string record_;                        // the batch record buffer, reused
  uint64_t item_count_ = 0;                   // committed number of items (meta "items")
  uint64_t items_open_ = 0;                   // committed items not closed (meta "open")
  uint64_t records_ = 0;                      // committed idempotency records (meta "records")
  // Counts the items not closed in txn_, by one walk of the data tree (O(items + events)), and
  // the idempotency records (the requests tree's entry count). For a store without meta "open"
  // and "records", and for tests.
  int count_open_and_records(uint64_t* open, uint64_t* records) const;
  // The walk behind it: on_state(item, state) for each item (a non-zero return stops the walk
  // with that code).
  int walk_items(MDB_txn* txn, const std::function<int(std::string_view, const ItemState&)>& on_state) const;
};

}  // namespace bidmesh
