// The write-ahead log record of one applied batch: the batch's wall time and its write requests
// in arrival order. Replaying the records past a checkpoint through ItemStore's apply path, each at
// its own `now_ms`, rebuilds exactly the state the node had acknowledged: the rules are
// deterministic given the state, the requests and the time (auto-closes, pruning and seq included).
//
// Format (all integers big-endian), version 1:
//   u8 version (1)  u64 now_ms  u32 count  then `count` requests:
//     u8 op (0 open, 1 bid, 2 close)  u8 id length, id  u8 item length, item
//     open:  u64 start  u64 increment  u8 has_closes_at  [u64 closes_at]
//     bid:   u8 bidder length, bidder  u64 amount
//     close: nothing more
// Version 2: the same, written only for a batch holding a write with v2 fields (a batch of v1
// writes stays version 1, byte for byte), where two more ops may appear:
//     3 open with v2 fields: as open, then  u8 has_reserve [u64 reserve]  u64 extend_ms
//                            u16 title length, title  u16 description length, description
//                            u16 image_url length, image_url
//     4 bid with max:        as bid, then  u64 max
// A build that knows only version 1 refuses a version 2 record by name ("batch record version 2
// is not known to this build"); the store's format step (nodes/store_format.h) refuses such a
// build even earlier.
// Ids, items and bidders are at most 64 bytes (the decoder of the wire contract checks that before
// a request is applied), so one length byte each is enough.
//
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/messages.h"
#include "storage/status.h"

namespace bidmesh {

struct BatchRecord {
  uint64_t now_ms = 0;
  std::vector<Request> writes;  // open, bid and close only
};

// Appends the record of a batch to `out` (cleared first): the writes among `requests`, in order.
void encode_batch_record(uint64_t now_ms, const std::vector<Request>& requests, std::string& out);

// The bytes encode_batch_record spends on the record's header, and on one write `r` (exact), so a
// batch can be kept within one log payload before it is applied.
inline constexpr std::size_t kBatchRecordHeaderBytes = 13;
std::size_t batch_record_write_bytes(const Request& r);

// Parses a record made by encode_batch_record. A record that does not parse is corruption (its
// CRC matched, so it was written like this: a bug or a foreign file, never to be guessed at).
Status decode_batch_record(std::string_view in, BatchRecord* out);

}  // namespace bidmesh
