// FeedWatcher: a subscriber to the live feed (PROTOCOL.md, "Feed") that hands out each item's
// events in `seq` order, once, and repairs the gaps it sees.
//
// It subscribes to `item/` (all items) or to feed_topic(item) for each listed item, and reads
// two-frame events. Per item it keeps the last `seq` handed out:
//   - an event whose seq is not above it is a duplicate and is dropped;
//   - an event whose seq jumps past it + 1 is a gap (a slow subscriber past its high-water mark,
//     a reconnect): the watcher asks `history` (after = last seen seq) on the request endpoint,
//     page by page (1000 events at most per page), hands out the missed events in seq order, then
//     the event that showed the gap. What history cannot give (no request endpoint, no reply,
//     more than max_repair_events) is counted as lost, and the watcher goes on from the new event.
//   - the first event of an item sets its baseline: without late_join it is handed out as it is;
//     with late_join the watcher applies the late-join rule of the contract: the first event
//     shows the subscription is live, so it reads the item's state with `get` (given to
//     on_state), and drops the events whose seq is not above that state's seq.
// Loss of an item's last events only shows at that item's next event (a property of the feed).
//
// Bounds: at most one history page (1000 events) plus one event are held; the rest waits in the
// SUB socket, whose receive high-water mark is rcvhwm messages (ZeroMQ drops past it, and the
// drop shows as a gap). The per-item seq table grows with the number of items seen.
//
// Thread-safety: NOT thread-safe; one thread owns a FeedWatcher (it owns a SUB socket and, when a
// request endpoint is given, a Client with a REQ socket). The context must outlive it.
//
// Part of bidmesh_client (installed as bidmesh::client, docs/client-library.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <utility>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "protocol/messages.h"
#include "client/client.h"

namespace bidmesh {

struct FeedWatcherOptions {
  std::vector<std::string> items;          // empty: every item (subscribes to "item/")
  std::string topic_prefix;                // when set, the one raw subscription instead of `items`
                                           // (e.g. "item/bench-1a2b-": every item so named)
  std::string request_endpoint;            // history/get; empty: gaps are counted, not repaired
  bool late_join = false;                  // apply the late-join rule (needs request_endpoint)
  std::function<void(const Reply&)> on_state;  // late join: each item's `get` reply (ok replies)
  int request_timeout_ms = Client::kDefaultTimeoutMs;
  int request_retries = Client::kDefaultRetries;
  int rcvhwm = 100000;                     // SUB receive high-water mark, in messages
  uint64_t max_repair_events = 100000;     // per gap; the rest of a longer gap counts as lost
  std::optional<CurveKeys> curve;          // security = "curve": the keys of the feed and repairs
};

struct FeedStats {
  uint64_t received = 0;           // feed messages read from the socket
  uint64_t delivered = 0;          // events handed out by next() (live and repaired)
  uint64_t duplicates = 0;         // dropped: seq not above the last seen
  uint64_t malformed = 0;          // dropped: not a topic frame + event map, or topic/item mismatch
  uint64_t gaps_detected = 0;      // seq jumps seen
  uint64_t gaps_repaired = 0;      // gaps filled completely from history
  uint64_t events_repaired = 0;    // events handed out from history
  uint64_t events_lost = 0;        // missed events that history did not give
  uint64_t late_join_gets = 0;     // `get` calls made by the late-join rule
  uint64_t late_join_failures = 0; // of those, no ok reply (the event became the baseline)
  uint64_t late_join_dropped = 0;  // events dropped as not above the `get` state's seq
};

class FeedWatcher {
 public:
  // Subscribes and connects at once. REQUIRES: feed_endpoint is a ZeroMQ endpoint.
  FeedWatcher(zmq::context_t& ctx, const std::string& feed_endpoint, FeedWatcherOptions options = {});
  ~FeedWatcher();
  FeedWatcher(const FeedWatcher&) = delete;
  FeedWatcher& operator=(const FeedWatcher&) = delete;

  // The next event in order, or nullopt when none came within `timeout` (or a signal
  // interrupted the wait). A gap repair may make one call last longer than `timeout`: up to
  // request_timeout_ms * (request_retries + 1) per history page, or per late-join `get`.
  std::optional<Event> next(std::chrono::milliseconds timeout);

  // The SUB socket, for a thread that polls many watchers at once: when it is readable, call
  // next(0ms) until it returns nullopt.
  zmq::socket_t& socket() { return *sub_; }

  // True when the last event handed out came from `history` rather than the live feed.
  bool last_repaired() const { return last_repaired_; }
  const FeedStats& stats() const { return stats_; }
  // The last seq handed out for `item`, if any.
  std::optional<uint64_t> last_seq(const std::string& item) const;

 private:
  struct Repair {
    std::string item;
    uint64_t after = 0;      // highest seq obtained so far
    uint64_t fetched = 0;    // events obtained for this gap
    Event trigger;           // the live event that showed the gap
  };

  // One step of the repair in progress: fetch a page into ready_, or finish.
  void repair_step();
  // A live event in order of arrival: drop, queue, or start a repair.
  void accept_live(Event ev);

  const FeedWatcherOptions options_;
  std::unique_ptr<zmq::socket_t> sub_;
  std::unique_ptr<Client> client_;  // when options_.request_endpoint is set
  std::unordered_map<std::string, uint64_t> last_seen_;
  std::deque<std::pair<Event, bool>> ready_;  // (event, from history), in hand-out order
  std::optional<Repair> repair_;
  FeedStats stats_;
  bool last_repaired_ = false;
};

// One human-readable line for an event: "item lamp-1 seq 3 max 1500 by alice".
std::string format_event(const Event& e);

}  // namespace bidmesh
