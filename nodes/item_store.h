// ItemStore: a bid node's items in one LMDB environment, and the rules of PROTOCOL.md applied to
// them. No ZeroMQ here: BidNode owns the sockets; this class turns a batch of decoded requests
// into replies and feed events.
//
// Guarantees
// - A batch's writes, the due auto-closes and the pruning of old idempotency records are applied
//   in ONE write transaction, in arrival order. The batch's replies are handed out only after
//   that transaction committed (with fsync unless `no_sync`), so an `ok: true` is durable. When
//   the transaction fails, nothing of it is kept: every write gets `internal`, no event is
//   returned, and the reads are still answered from the last committed state.
// - Reads (get, history) are answered from a read transaction opened after the commit, so they
//   see every write of their batch, and `get` always equals the last event of `history`.
// - Idempotency: each write's (item, id) is stored with its fingerprint and its exact reply bytes
//   in the same transaction as its effect. The same write again gets those bytes unchanged and
//   changes nothing; other content under the same (item, id) gets `conflict` (not stored).
//   Records are kept at least `retention` (24 h by default), then pruned by a sweep (below), so
//   the store stays bounded under steady load.
// - State survives restarts: a reopened store serves at once, no replay. `seq` goes on.
//
// LMDB layout, format 2 (named databases in one environment; u64 are big-endian so keys sort by
// value; items never contain '\0', so `item '\0'` is a prefix no other item's keys share):
//   meta:      "format" -> "2"
//              "items"  -> u64 number of items (kept with every open, for item_count at start)
//              "sweep"  -> the data key the prune sweep resumes at (saved every kSweepSaveEvery
//                          write txns and at each wrap; a crash only makes it re-examine a little)
//   data:      ONE tree, every key of an item clustered under its prefix, so a bid's three writes
//              (event, state, request record) land on one leaf page, or two when the item's
//              records span several pages:
//              item '\0' 0x01 u64 seq        -> the event as encode_event made it (spliced into
//                                               history replies as it is, never re-encoded)
//              item '\0' 0x02                -> ItemState (see encode_state in item_store.cc);
//                                               right after the newest event: the bid's event
//                                               append and state update share a leaf
//              item '\0' 0x03 id             -> u64 stored_at_ms, u32 fingerprint length,
//                                               fingerprint, reply (the idempotency record; ids
//                                               may hold any byte: they follow a fixed prefix)
//   deadlines: u64 closes_at_ms, item -> "" (open items with a deadline, earliest first; touched
//              only at the open and the close of such an item)
// Format 1 (items/events/requests/expiry as separate trees: 4 B-trees touched per accepted bid)
// is refused at open with a one-line error naming the directory. There was no production data in
// format 1, so there is no migration: move the old directory away (or delete it) and restart.
//
// Pruning (no age index): a sweep cursor walks the request records of `data` in key order,
// resuming where the previous write transaction stopped and wrapping at the end. Each write
// transaction examines at most kPrunePerTxn + kPrunePerWrite x (its writes) request records
// (and seeks past at most as many items' state/event ranges) and deletes those older than the
// retention. So every record is examined once per cycle, a cycle takes at most
// (R + 2 x I) / kPrunePerTxn write transactions (R records, I items), and since each
// transaction examines at least twice the records it adds, the expired backlog cannot grow: the
// store holds the records of the last `retention` plus at most one cycle's worth of expired ones.
// A record is deleted no earlier than `retention` after it was stored (a clock that goes back
// keeps records longer, never shorter).
//
// Caveats (from lmdb.h): never use a store after fork(); open() clears stale reader slots with
// mdb_reader_check; when the map (map_size_bytes) is full, writes fail with `internal` ("storage
// full ...") until the operator raises the map size, while reads keep working. A lock file in the
// directory refuses a second process on the same store.
//
// Thread-compatible: one thread owns a store (LMDB's single writer).
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "protocol/messages.h"

struct MDB_txn;  // lmdb.h stays out of this header

namespace bidmesh {

inline constexpr std::chrono::milliseconds kDefaultRequestRetention = std::chrono::hours(24);
inline constexpr std::size_t kPrunePerTxn = 64;         // request records the sweep examines per write txn
inline constexpr std::size_t kPrunePerWrite = 2;        // ... plus this many per write of the txn
inline constexpr uint64_t kSweepSaveEvery = 32;         // write txns between saves of the sweep key
inline constexpr std::size_t kAutoClosePerTxn = 1024;   // due deadlines closed per write txn
inline constexpr uint64_t kReserveAhead = 64ull << 20;   // disk allocated past the last page (WRITEMAP)

struct ItemStoreOptions {
  std::filesystem::path dir;                  // created if missing
  uint64_t map_size_bytes = 1ull << 30;       // LMDB map size: the most the store can hold
  bool no_sync = false;                       // MDB_NOSYNC: keeps A, C, I but not D (unsafe)
  bool write_map = true;                      // MDB_WRITEMAP: durability unchanged (see .cc)
  bool read_ahead = false;                    // off: MDB_NORDAHEAD (see .cc); on only for A/B
  std::chrono::milliseconds retention = kDefaultRequestRetention;  // idempotency records
};

// One item as stored. `bidder` is set exactly when `max` is.
struct ItemState {
  bool closed = false;
  uint64_t seq = 0;
  uint64_t bids = 0;
  uint64_t start = 1;
  uint64_t increment = 1;
  std::optional<uint64_t> max;
  std::optional<std::string> bidder;
  std::optional<uint64_t> closes_at;
};

// A durable event, ready for the feed.
struct FeedMessage {
  std::string topic;  // feed_topic(item)
  std::string body;   // encode_event(e)
};

struct BatchResult {
  std::vector<std::string> replies;   // replies[i] answers requests[i]
  std::vector<FeedMessage> events;    // committed events, in commit order; empty on failure
  bool committed = false;             // a write transaction was committed
  // Set when the write transaction failed: what happened and what the operator must do.
  std::optional<std::string> failure;
};

class ItemStore {
 public:
  // Opens (creating if needed) the store in options.dir. On failure returns a one-line reason.
  static std::variant<std::unique_ptr<ItemStore>, std::string> open(const ItemStoreOptions& options);

  ~ItemStore();
  ItemStore(const ItemStore&) = delete;
  ItemStore& operator=(const ItemStore&) = delete;

  // Applies one batch of decoded requests (any op) at wall time `now_ms`, closing the items whose
  // deadline is due first. Opens no write transaction when there is nothing to write.
  BatchResult apply_batch(const std::vector<Request>& requests, uint64_t now_ms);

  // The earliest time at which apply_batch has an auto-close to do (a deadline, or the retry
  // time after a failed transaction), if any. The serving loop must not sleep past it.
  std::optional<uint64_t> next_auto_close_ms() const;

  // Reads of the last committed state (for the startup line and tests).
  uint64_t item_count() const;
  std::optional<ItemState> get_item(std::string_view item) const;
  uint64_t idempotency_record_count() const;  // a scan: O(items + records), for tests
  uint64_t map_size_bytes() const;
  const std::filesystem::path& dir() const { return dir_; }

 private:
  struct Env;
  struct WriteCtx;
  ItemStore(std::unique_ptr<Env> env, std::filesystem::path dir, std::chrono::milliseconds retention);

  int apply_write(WriteCtx& w, const Request& r, std::string* reply);
  int apply_open(WriteCtx& w, const Request& r, std::string* reply);
  int apply_bid(WriteCtx& w, const Request& r, std::string* reply);
  int apply_close(WriteCtx& w, const Request& r, std::string* reply);
  int load_open_item(WriteCtx& w, const Request& r, ItemState* s, std::string* reply, bool* decided);
  int close_item(WriteCtx& w, std::string_view item, ItemState& s);
  int record_change(WriteCtx& w, std::string_view item, const ItemState& s, EventKind kind);
  int run_auto_closes(WriteCtx& w);
  int prune(WriteCtx& w, std::size_t writes);
  std::string read_reply(MDB_txn* txn, const Request& r) const;
  int first_deadline(MDB_txn* txn, std::optional<uint64_t>* out) const;
  std::string describe_failure(int rc, const char* where) const;
  int reserve_disk();

  std::unique_ptr<Env> env_;
  const std::filesystem::path dir_;
  const std::chrono::milliseconds retention_;
  std::optional<uint64_t> next_deadline_;     // earliest closes_at in `deadlines`
  uint64_t retry_after_ms_ = 0;               // after a failed txn: no auto-close-only txn before
  bool write_map_ = false;
  uint64_t reserved_bytes_ = 0;               // data file bytes known to have disk blocks
  std::string sweep_key_;                     // where the prune sweep resumes ("" = the start)
  uint64_t txns_since_sweep_save_ = 0;        // write txns since "sweep" was saved in meta
  uint64_t item_count_ = 0;                   // committed number of items (meta "items")
  std::vector<std::string> expired_;          // prune's scratch list, reused
};

}  // namespace bidmesh
