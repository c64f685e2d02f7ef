// The on-disk format of a bid node's item store: how keys and values of its LMDB records are
// encoded and decoded. No LMDB here, only bytes; nodes/item_store.cc puts these bytes into the
// trees and nodes/sweep.cc walks them.
//
// LMDB layout, format 6 (named trees in one environment; u64 are big-endian so keys sort by
// value; items never contain '\0', so `item '\0'` is a prefix no other item's keys share):
//   meta:      "format" -> "6". Formats 5, 4, 3 and 2 are read too and marked 6 at open. Each
//              step makes an older build refuse the store with its one-line message instead of
//              misreading it: format 6 is format 5 with the request records in a tree of their
//              own (moved there at open, in the commit that marks the format); format 5 is format
//              4 plus the listing tree, which a format-4 build would leave stale; format 4 is
//              format 3 plus the v2 records below (state layout 2, details), which a format-3
//              build cannot read (format 2 is format 3 without a log).
//              "log"    -> u64 segment, u64 offset: the log position this commit covers (replay
//                          starts there; absent: the start of the log)
//              "items"  -> u64 number of items (kept with every open, for item_count at start)
//              "sweep"  -> the requests key the prune sweep resumes at (saved by every checkpoint,
//                          in the same commit as "log": the replay continues the sweep exactly)
//              "open", "records" -> u64 items open and u64 idempotency records, as of the
//                          same commit (saved by every checkpoint, for the node's metrics;
//                          absent: counted at open, then saved)
//              "moving requests" -> "1" while request records of format 5 or older are still in
//                          the data tree: set in the commit that marks format 6, removed by the
//                          commit that moves the last of them (the move goes in bounded commits,
//                          and an open resumes it before anything else)
//   data:      ONE tree, every key of an item clustered under its prefix, so a bid's event
//              append and state update land on one leaf page:
//              item '\0' 0x00                -> ItemDetails (encode_details below), only for an
//                                               item opened with v2 details
//              item '\0' 0x01 u64 seq        -> the event as encode_event made it (spliced into
//                                               history replies as it is, never re-encoded)
//              item '\0' 0x02                -> ItemState (encode_state below); right after the
//                                               newest event: the bid's event append and state
//                                               update share a leaf
//              (item '\0' 0x03 id: the request records of formats 2 to 5, moved to `requests`)
//   requests:  u8 id length, id, item -> u64 stored_at_ms, u32 fingerprint length, fingerprint,
//              reply (the idempotency record; ids may hold any byte: the length delimits them).
//              Keyed by id first so that the records of one client ("<name>-<counter>" ids, as the
//              contract suggests and bidmesh's clients send) land next to each other: a
//              checkpoint then writes a few pages of them, not one page per item touched (they
//              were in each item's cluster before; docs/benchmarks.md, "Request records in a tree
//              of their own"). Random ids (UUIDs) cost a page each, as in the item's cluster.
//   deadlines: u64 closes_at_ms, item -> "" (open items with a deadline, earliest first; touched
//              only at the open and the close of such an item)
//   listing:   list_key_bytes(status, closes_at, item) (protocol/listing.h) -> "": every item,
//              in the order of the `list` op, so a page is a cursor walk of `limit` keys. Written
//              in the same transaction as the item's state, by an open (added), a close and a
//              soft-close extension (moved); a bid that leaves the deadline alone does not touch
//              it. meta "listing" -> "1" says the tree is complete.
//
// A store without meta "listing" (format 4 and older, or one bidmesh-slots changed, which drops
// the record) gets the tree emptied and rebuilt from the item states once, at open, O(items +
// records) (ItemStore::open_listing_index); replay of the log then maintains it like any batch.
// Format 1 (separate trees) is refused at open with a one-line error naming the directory: move it
// away and restart.
//
// Decoders never trust their input beyond its length: a record that does not parse makes them
// return false, and the caller reports it as a malformed record (kBadRecord, lmdb_env.h).
//
// The functions of the per-bid path (keys, state, request record) are inline: a bid encodes and
// decodes each once. The key builders write into a caller's reused buffer and return a view of
// it, valid until the buffer changes: no allocation once the buffer has grown.
//
// Thread-safe: pure functions and constants.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "nodes/auction_rules.h"
#include "protocol/listing.h"
#include "storage/log_format.h"

namespace bidmesh::store_format {

inline constexpr std::string_view kFormatVersion = "6";
inline constexpr std::string_view kFormatWithRequestsInData = "5";  // format 6 before the requests tree
inline constexpr std::string_view kFormatWithoutListing = "4";  // format 5 without the listing tree
inline constexpr std::string_view kFormatV1Only = "3";      // format 4 without v2 records
inline constexpr std::string_view kFormatWithoutLog = "2";  // format 3 before its first checkpoint
// Every format this build opens (the older ones are marked kFormatVersion at open).
inline constexpr bool is_readable_format(std::string_view format) {
  return format == kFormatVersion || format == kFormatWithRequestsInData || format == kFormatWithoutListing ||
         format == kFormatV1Only || format == kFormatWithoutLog;
}

inline void append_u64(std::string& out, uint64_t v) {
  for (int shift = 56; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
inline void append_u32(std::string& out, uint32_t v) {
  for (int shift = 24; shift >= 0; shift -= 8) out.push_back(static_cast<char>((v >> shift) & 0xff));
}
// REQUIRES: p points at 8 (read_u64) or 4 (read_u32) readable bytes.
inline uint64_t read_u64(const char* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}
inline uint32_t read_u32(const char* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

// Keys of the data tree: item '\0' tag [suffix]. The first '\0' ends the item, so the keys of one
// item form one contiguous range, in the order details, events by seq, state.
// The state sorts right after the newest event: a bid's event append and state update land on
// the same leaf even when the item's history spans many pages (docs/benchmarks.md, "Store
// layout v2").
inline constexpr char kTagDetails = 0x00, kTagEvent = 0x01, kTagState = 0x02;
inline constexpr char kTagRequestBeforeFormat6 = 0x03;  // a request record in the data tree (formats 2-5)

inline std::string_view data_key(std::string& out, std::string_view item, char tag) {
  out.clear();
  out.append(item);
  out.push_back('\0');
  out.push_back(tag);
  return out;
}
inline std::string_view event_key(std::string& out, std::string_view item, uint64_t seq) {
  data_key(out, item, kTagEvent);
  append_u64(out, seq);
  return out;
}

// Keys of the requests tree: u8 id length, id, item. The contract bounds ids to 64 bytes.
inline constexpr std::size_t kRequestKeyMaxIdBytes = 255;
// REQUIRES: id.size() <= kRequestKeyMaxIdBytes (the request decoder refuses ids over 64 bytes).
inline std::string_view request_key(std::string& out, std::string_view item, std::string_view id) {
  out.clear();
  out.push_back(static_cast<char>(static_cast<unsigned char>(id.size())));
  out.append(id);
  out.append(item);
  return out;
}
// The item of a requests key; nullopt for a key of no known shape (shorter than its id length
// says, or no item after the id).
inline std::optional<std::string_view> request_key_item(std::string_view key) {
  if (key.empty()) return std::nullopt;
  const std::size_t id_bytes = static_cast<unsigned char>(key[0]);
  if (key.size() <= 1 + id_bytes) return std::nullopt;
  return key.substr(1 + id_bytes);
}

// Where a data key's item ends: the position of its '\0', followed by the tag. nullopt for a key
// of no known shape (no '\0', or nothing after it).
inline std::optional<std::size_t> data_key_item_end(std::string_view key) {
  const std::size_t nul = key.find('\0');
  if (nul == std::string_view::npos || nul + 1 >= key.size()) return std::nullopt;
  return nul;
}

// Keys of the deadlines tree: u64 closes_at, item.
inline constexpr std::size_t kDeadlineKeyMinBytes = 8;
std::string deadline_key(uint64_t closes_at, std::string_view item);
// REQUIRES: key.size() >= kDeadlineKeyMinBytes (check it first: a shorter key is malformed).
inline uint64_t deadline_of(std::string_view key) { return read_u64(key.data()); }
inline std::string_view deadline_item(std::string_view key) { return key.substr(kDeadlineKeyMinBytes); }

// Keys of the listing tree (the contract's order, memcmp-sortable; protocol/listing.h).
inline std::string listing_key(bool closed, const std::optional<uint64_t>& closes_at, std::string_view item) {
  return list_key_bytes(ListKey{closed, closes_at, std::string(item)});
}
inline constexpr std::string_view kListingMetaKey = "listing";
inline constexpr std::string_view kMovingRequestsMetaKey = "moving requests";

// ItemState value, layout 1 (every item that uses no v2 field: the v1 bid path writes the same
// bytes as before):
//   [0] 1 (layout)   [1] 0 open / 1 closed   [2] flags: 1 = has max+bidder, 2 = has closes_at
//   [3..51) u64 seq, bids, start, increment, max, closes_at (0 where absent)   [51..) bidder
// Layout 2 (ItemState::uses_v2()): [0] 2, [1] as layout 1, [2] flags as layout 1 plus 4 = has
//   reserve, 8 = has details; [3..51) as layout 1; [51..75) u64 leader_max, reserve (0 where
//   absent), extend_ms; [75..) bidder.
// Room for what comes next without a format step: a new flag bit and fields appended after
// extend_ms in a layout 3 (the decoder refuses layouts it does not know).
inline constexpr std::size_t kStateFixedBytes = 51;
inline constexpr std::size_t kStateV2FixedBytes = 75;
inline std::string_view encode_state(std::string& out, const ItemState& s) {
  const bool v2 = s.uses_v2();
  out.clear();
  out.push_back(v2 ? 2 : 1);
  out.push_back(s.closed ? 1 : 0);
  out.push_back(static_cast<char>((s.max ? 1 : 0) | (s.closes_at ? 2 : 0) | (s.reserve ? 4 : 0) |
                                  (s.has_details ? 8 : 0)));
  append_u64(out, s.seq);
  append_u64(out, s.bids);
  append_u64(out, s.start);
  append_u64(out, s.increment);
  append_u64(out, s.max.value_or(0));
  append_u64(out, s.closes_at.value_or(0));
  if (v2) {
    append_u64(out, s.leader_max);
    append_u64(out, s.reserve.value_or(0));
    append_u64(out, s.extend_ms);
  }
  if (s.max) out.append(*s.bidder);
  return out;
}
inline bool decode_state(std::string_view in, ItemState* s) {
  if (in.size() < kStateFixedBytes || (in[0] != 1 && in[0] != 2)) return false;
  const bool v2 = in[0] == 2;
  if (v2 && in.size() < kStateV2FixedBytes) return false;
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
  s->reserve.reset();
  s->leader_max = 0;
  s->extend_ms = 0;
  s->has_details = v2 && (flags & 8) != 0;
  if (flags & 1) {
    s->max = read_u64(p + 35);
    s->bidder = std::string(in.substr(v2 ? kStateV2FixedBytes : kStateFixedBytes));
    s->leader_max = *s->max;  // layout 1: the leader's max is the price
  }
  if (flags & 2) s->closes_at = read_u64(p + 43);
  if (v2) {
    if (flags & 1) s->leader_max = read_u64(p + 51);
    if (flags & 4) s->reserve = read_u64(p + 59);
    s->extend_ms = read_u64(p + 67);
  }
  return true;
}

// ItemDetails value: [0] 1 (layout), then title, description, image_url, each u16 length + bytes.
std::string encode_details(const ItemDetails& d);
bool decode_details(std::string_view in, ItemDetails* d);

// Request record value (the idempotency record): u64 stored_at, u32 fingerprint length,
// fingerprint, reply bytes. The views of a decoded record point into the decoded bytes.
struct RequestRecord {
  uint64_t stored_at = 0;
  std::string_view fingerprint;
  std::string_view reply;
};
inline std::string_view encode_request_record(std::string& out, uint64_t stored_at, std::string_view fingerprint,
                                              std::string_view reply) {
  out.clear();
  append_u64(out, stored_at);
  append_u32(out, static_cast<uint32_t>(fingerprint.size()));
  out.append(fingerprint);
  out.append(reply);
  return out;
}
inline bool decode_request_record(std::string_view in, RequestRecord* r) {
  if (in.size() < 12) return false;
  r->stored_at = read_u64(in.data());
  const uint32_t fp_len = read_u32(in.data() + 8);
  if (in.size() - 12 < fp_len) return false;
  r->fingerprint = in.substr(12, fp_len);
  r->reply = in.substr(12 + fp_len);
  return true;
}

// meta "log": u64 segment, u64 offset.
std::string encode_log_position(LogPosition p);
bool decode_log_position(std::string_view raw, LogPosition* p);

// meta "items": u64 number of items.
std::string encode_item_count(uint64_t n);
bool decode_item_count(std::string_view raw, uint64_t* n);

}  // namespace bidmesh::store_format
