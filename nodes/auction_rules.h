// The auction rules of docs/protocol.md as pure functions: a write judged against its item's
// state gives the reply, and the change (new state and the event it makes), if any. No storage
// here: ItemStore loads the state, calls these, and stores what they decide in the same
// transaction as the reply (nodes/item_store.h).
//
// Guarantees
// - Deterministic: the same request, state and time give the same reply bytes and the same new
//   state. The log replay relies on it (nodes/batch_record.h).
// - A write that changes nothing (an error reply) leaves the state as it was.
// - seq grows by exactly one per change: open sets 1, each accepted bid and the close add one.
//
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/messages.h"

namespace bidmesh {

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

  bool operator==(const ItemState&) const = default;
};

// Judges the write `r` at wall time `now_ms` against its item: `s` is the item's state when
// `found`, and is ignored otherwise. Writes the reply into *reply (ok, or the rule's error:
// exists, unknown_item, closed, too_low). Returns the event kind of the change when the write
// changes the item, `s` being its new state then:
//   open   a new item (seq 1); the caller stores it and its deadline, if any;
//   max    an accepted bid;
//   closed the close (its deadline, if any, is the caller's to remove).
// nullopt: nothing changes, `s` is as it was.
// REQUIRES: r.op is open, bid or close.
std::optional<EventKind> judge_write(const Request& r, bool found, ItemState& s, uint64_t now_ms, std::string* reply);

// A write whose (item, id) has a stored record: the same content gets the stored reply byte for
// byte; other content gets `conflict`. Nothing changes either way.
void judge_repeat(const Request& r, std::string_view fingerprint, std::string_view stored_fingerprint,
                  std::string_view stored_reply, std::string* reply);

// Whether the deadline entry `closes_at` of an item closes it now: the item exists, is open, and
// still has that deadline (otherwise the entry is stale and is dropped).
bool deadline_closes(bool found, const ItemState& s, uint64_t closes_at);

// The close step, shared by `close` and the auto-close at the deadline: closed, seq + 1.
void mark_closed(ItemState& s);

// The event of a change (judge_write's kind, or `closed` for the auto-close), at `now_ms`: `open`
// bare, `max` and `closed` with the state's max and bidder (nil where nobody bid).
Event change_event(std::string_view item, const ItemState& s, EventKind kind, uint64_t now_ms);

// The replies of the reads: `get` of an existing item, and an item that was never opened.
std::string get_reply(const Request& r, const ItemState& s);
std::string unknown_item_reply(const Request& r);

}  // namespace bidmesh
