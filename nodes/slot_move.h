// Moving a slot range between the stores of two stopped bid nodes (the offline move of
// docs/deployment.md, "Moving a slot range"; the program is bidmesh-slots, nodes/slots_main.cc).
//
// What moves: every record the store keeps for an item (nodes/store_format.h): all keys of the
// data tree under the item's prefix (details, events, state), its entries in the deadlines tree,
// and its idempotency records in the requests tree (including those of requests that were
// answered `unknown_item`; that tree is keyed by id, so a move walks all of it). The meta
// "items" count of both stores is kept right. Nothing else of either store changes.
//
// Guarantees
// - Complete stores only: complete_store() opens the node's store through ItemStore::open (the
//   node's own recovery: the log past the last checkpoint is replayed, a torn tail cut) and takes
//   a checkpoint, so LMDB holds everything acknowledged. LockedStore then re-checks, under the
//   store's lock, that the log holds no record past the checkpoint; otherwise it refuses.
// - The lock file (nodes/lmdb_env.h) is held while a store is read or changed: a running node
//   holds it, so a store in use is refused ("in use by another process"), and a node started
//   meanwhile cannot open it.
// - import_range() writes the range into the destination in ONE write transaction, committed
//   with sync (LMDB's default: the environment has no MDB_NOSYNC). drop_range() deletes from the
//   source, in one synced transaction, exactly the records of a RangeData read before (an
//   export): when the source now holds anything else for those items, it refuses and deletes
//   nothing. So with move = read, import, drop, a crash leaves the items in the source, the
//   destination or both, never neither; and a rerun finishes the job (an item the destination
//   already holds with the same records is left as it is; with different records, refused).
//
// Memory: a RangeData holds the whole range's records (about the range's share of the store).
//
// Thread-compatible: each object belongs to one thread; never use a LockedStore after fork().
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "nodes/item_store.h"
#include "nodes/lmdb_env.h"
#include "protocol/slot_map.h"
#include "storage/status.h"

namespace bidmesh::slot_move {

// "FIRST-LAST" or "SLOT" within 0-16383, as in the config's `slots`; nullopt when malformed.
std::optional<SlotRange> parse_slot_range(std::string_view text);
std::string range_text(SlotRange r);
inline bool in_range(SlotRange r, std::string_view item) {
  const uint32_t s = slot_of(item);
  return s >= r.first && s <= r.last;
}

// One LMDB record of a store.
enum class Tree : uint8_t { data = 1, deadlines = 2, requests = 3 };
struct Record {
  Tree tree = Tree::data;
  std::string key, value;
  bool operator==(const Record&) const = default;
};

// Every record of the items of a slot range, as read from one store, in tree order (data,
// deadlines, requests), each tree in key order.
struct RangeData {
  SlotRange range;
  std::string source;          // the node it was read from
  std::vector<Record> records;
  uint64_t items = 0;          // items with a state (opened); meta "items" counts these
  uint64_t bytes() const;      // keys and values
  // The item a record belongs to (the data key's prefix, the deadline key's or the requests
  // key's suffix).
  static std::string_view item_of(const Record& r);
};

// Replays the node's log into its LMDB and checkpoints it (ItemStore::open, then checkpoint()).
// Creates an empty store when `options.dir` has none. `*replayed` (may be null) gets what was
// replayed. Errors: the store's own one-line reasons (in use, damaged log, ...).
Status complete_store(const ItemStoreOptions& options, ItemStore::ReplayStats* replayed);

// A complete store opened for the move, its lock held until destroyed.
class LockedStore {
 public:
  // Opens the store in `dir` (which complete_store made complete) and checks its format and
  // that its log holds no record past its checkpoint. Errors name the directory.
  static Status open(const std::filesystem::path& dir, uint64_t map_size_bytes, std::unique_ptr<LockedStore>* out);

  // Every record of the items in `range` (a read transaction).
  Status read_range(SlotRange range, RangeData* out) const;
  // Writes `data` in one synced transaction. Items this store already holds with exactly the
  // same records are left alone (counted in *already); any other record of such an item here
  // refuses the whole import, naming the item. *imported: the items written.
  Status import_range(const RangeData& data, uint64_t* imported, uint64_t* already);
  // Deletes the records of `data` in one synced transaction, after checking that the store's
  // records of every item in data.range are exactly those (or none: already dropped).
  // *dropped: the items deleted. Refuses, deleting nothing, when they differ.
  Status drop_range(const RangeData& data, uint64_t* dropped);
  uint64_t item_count() const;

 private:
  LockedStore() = default;
  // Begins `t` with `flags` and reads the range's records in it.
  Status begin_and_read(Txn& t, unsigned flags, SlotRange range, RangeData* out) const;
  LmdbEnv env_;
  std::filesystem::path dir_;
};

// The export file: RangeData with a checksum.
//   "BMSLOTS1", u32 first, u32 last, u16 length + source name, u64 items, u64 record count,
//   records (u8 tree, u32 key length, key, u32 value length, value), then u32 masked CRC-32C
//   (storage/crc32c.h) of every byte before it. Integers big-endian.
// Written to a temp file, fsynced, renamed over `file` and the folder fsynced.
Status write_export(const std::filesystem::path& file, const RangeData& data);
// Refuses (corruption, naming the file) a file that is short, has another magic, a wrong
// checksum, bytes past the checksum, or a record of an item outside its range.
Status read_export(const std::filesystem::path& file, RangeData* out);

}  // namespace bidmesh::slot_move
