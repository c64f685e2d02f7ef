// The auction rules of docs/protocol.md as pure functions: a write judged against its item's
// state gives the reply, and the change (new state and the event it makes), if any. No storage
// here: ItemStore loads the state, calls these, and stores what they decide in the same
// transaction as the reply (nodes/item_store.h).
//
// Guarantees
// - Deterministic: the same request, state and time give the same reply bytes and the same new
//   state. The log replay relies on it (nodes/batch_record.h).
// - A write that changes nothing (an error reply) leaves the state as it was.
// - seq grows by exactly one per event: open sets 1, each accepted bid and the close add one,
//   and a bid that extends the deadline (soft close) adds one more for its `extended` event.
// - No reply, event or message ever holds a bidder's max (`leader_max` below) or the reserve.
//
// Proxy bids (docs/protocol.md, "Proxy bids"): the leader is the bidder with the highest max,
// the earlier one winning a tie; the visible price (`max`, the v1 name) is the second-highest
// max plus the increment, capped at the leader's max, never below the leader's own amount or
// the start, and raised to the reserve once the leader's max reaches it. Only the leader's max
// needs keeping: every accepted bid has amount >= price + increment > every other bidder's max,
// so the second-highest max after a bid is the bid's own max or the former leader's, and the
// price before the bid is a floor that already holds the leader's amount and the start.
//
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/errors.h"
#include "protocol/messages.h"

namespace bidmesh {

// One item as stored. `bidder` (the leader) is set exactly when `max` (the visible price) is.
struct ItemState {
  bool closed = false;
  uint64_t seq = 0;
  uint64_t bids = 0;
  uint64_t start = 1;
  uint64_t increment = 1;
  std::optional<uint64_t> max;
  std::optional<std::string> bidder;
  std::optional<uint64_t> closes_at;
  // v2. A v1-only item has leader_max == max (or 0 without bids), no reserve, no extension and
  // no details, and is stored in the v1 layout (nodes/store_format.h).
  uint64_t leader_max = 0;           // the leader's highest max, never shown
  std::optional<uint64_t> reserve;   // never shown
  uint64_t extend_ms = 0;            // soft close: 0 = off
  bool has_details = false;          // title/description/image_url stored apart (ItemDetails)

  bool uses_v2() const {
    return reserve || extend_ms != 0 || has_details || (max && leader_max != *max);
  }
  // The reserve is met when there is none or the price reached it.
  bool reserve_met() const { return !reserve || (max && *max >= *reserve); }

  bool operator==(const ItemState&) const = default;
};

// Judges the write `r` at wall time `now_ms` against its item: `s` is the item's state when
// `found`, and is ignored otherwise. Writes the reply into *reply (ok, or the rule's error:
// exists, unknown_item, closed, too_low) and, when `error` is given, its outcome into *error
// (nullopt for ok, else the code). Returns the event kind of the change when the write
// changes the item, `s` being its new state then:
//   open   a new item (seq 1); the caller stores it and its deadline, if any;
//   max    an accepted bid;
//   closed the close (its deadline, if any, is the caller's to remove).
// nullopt: nothing changes, `s` is as it was.
// REQUIRES: r.op is open, bid or close.
std::optional<EventKind> judge_write(const Request& r, bool found, ItemState& s, uint64_t now_ms, std::string* reply,
                                     std::optional<ErrorCode>* error = nullptr);

// A write whose (item, id) has a stored record: the same content gets the stored reply byte for
// byte; other content gets `conflict`. Nothing changes either way. When `error` is given, it gets
// the reply's outcome as judge_write gives it; a stored reply that does not read as one that
// judge_write makes (a damaged record) counts as `internal`.
void judge_repeat(const Request& r, std::string_view fingerprint, std::string_view stored_fingerprint,
                  std::string_view stored_reply, std::string* reply, std::optional<ErrorCode>* error = nullptr);

// Whether the deadline entry `closes_at` of an item closes it now: the item exists, is open, and
// still has that deadline (otherwise the entry is stale and is dropped).
bool deadline_closes(bool found, const ItemState& s, uint64_t closes_at);

// The close step, shared by `close` and the auto-close at the deadline: closed, seq + 1.
void mark_closed(ItemState& s);

// Whether a `max` change of judge_write also moved the deadline (soft close): then `s.seq` is
// the `extended` event's and the `max` event's is s.seq - 1. `closes_at_before` is the item's
// closes_at before the write.
inline bool bid_extended(const ItemState& s, const std::optional<uint64_t>& closes_at_before) {
  return s.closes_at != closes_at_before;
}

// The event of a change (judge_write's kind, or `closed` for the auto-close), at `now_ms`: `open`
// bare, `max` with the state's price and leader, `closed` with the winner and amount (nil where
// nobody bid or the reserve is not met) and reserve_met for an item with a reserve, `extended`
// with the new closes_at. The seq is the state's.
Event change_event(std::string_view item, const ItemState& s, EventKind kind, uint64_t now_ms);

// v2 item details, stored apart from the state (read by `get` only).
struct ItemDetails {
  std::string title, description, image_url;
  bool operator==(const ItemDetails&) const = default;
};

// The replies of the reads: `get` of an existing item (with its details when it has them), and
// an item that was never opened.
std::string get_reply(const Request& r, const ItemState& s, const ItemDetails* details = nullptr);
std::string unknown_item_reply(const Request& r);
// One entry of a `list` reply (a MessagePack map): get's fields of the item, plus `title` when it
// is not empty; never the description, the image URL, a hidden max or the reserve.
std::string list_entry(std::string_view item, const ItemState& s, std::string_view title);

}  // namespace bidmesh
