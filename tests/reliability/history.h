// The history checker of the reliability scenarios, after Jepsen: client processes log every
// request they make, the checker then reads what the mesh stored and proves the guarantees.
//
// Request log (one file per client process, tab-separated lines, flushed line by line):
//   invoke  <n> <id> <item> <bidder> <amount>     before the first send
//   ok      <n> <amount> <seq> <attempts>         the owner accepted it (ok: true)
//   refused <n> <code> <attempts>                 the owner decided no (too_low, closed, ...)
//   unknown <n> <why> <attempts>                  no decided reply by the request's deadline
//                                                 (timeouts, `unavailable`, `internal`)
// `bidder` is "<client>-<n>": unique per request, so a `max` event in an item's history (which
// carries bidder and amount) names the one request it came from. Each request is sent with one
// `id` for all its attempts (Lazy Pirate: a timed-out REQ socket is closed with linger 0 and a new
// one resends the same frame; `unavailable` and `internal` are retried too).
//
// What check_history proves, from every item's full `history` and its `get`:
//   lost = 0          every `ok` request is stored, once, with its amount and the seq of its reply
//   duplicated = 0    no request is stored twice
//   refused_stored = 0  a request refused by the owner is not stored
//   unknown           stored once or not at all (counted both ways)
//   phantom = 0       every stored bid is a request some client made, with its amount
//   order = 0         each item's accepted amounts strictly increase, seqs are 1, 2, 3, ...
//   get_mismatch = 0  `get` equals the last event of `history` (seq, max, bidder, bids)
//
// Thread-compatible.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace bidmesh::rel {

struct BidderOptions {
  std::string endpoint;
  std::string name;                 // [A-Za-z0-9_-], bidders are "<name>-<n>"
  std::vector<std::string> items;   // opened before; bids go to a random one each time
  double seconds = 10;              // no new request after this
  int timeout_ms = 400;             // per attempt
  int request_deadline_ms = 6000;   // per request, over all its attempts
  std::filesystem::path log;
  uint64_t max_requests = 10000000;
  // Direct client (protocol v1.2): each request goes to its item's bid node (DirectClient), the
  // router only as fallback; `endpoint` is then where the slot map comes from.
  bool direct = false;
};

// The client loop of one client process. Returns 0, or 111 when the log cannot be written.
int run_bidder(const BidderOptions& options);

struct CheckFigures {
  uint64_t clients = 0, requests = 0, ok = 0, refused = 0, unknown = 0, unresolved = 0;
  uint64_t retried = 0;             // requests sent more than once (same id)
  uint64_t unknown_stored = 0, unknown_not_stored = 0;
  uint64_t items = 0, events = 0, stored_bids = 0;
  // Violations: all must be 0.
  uint64_t lost = 0, duplicated = 0, refused_stored = 0, phantom = 0, order = 0, get_mismatch = 0;
  uint64_t read_failures = 0;       // history/get that could not be read
  std::vector<std::string> problems;  // the first violations, in words

  bool passed() const;
  std::string json() const;
  std::string summary() const;
};

// Reads the logs and every item's history and get through `endpoint`. `items` are the items the
// clients bid on.
CheckFigures check_history(zmq::context_t& ctx, const std::string& endpoint, const std::vector<std::string>& items,
                           const std::vector<std::filesystem::path>& logs);

}  // namespace bidmesh::rel
