// DirectClient: requests sent straight to the bid node that owns their item (PROTOCOL.md v1.2,
// "Direct clients"), with the router as the way around a node that cannot be reached.
//
// Routing. The slot map is fetched with `slots` from the router at the first call and cached.
// A request for an item goes to its owner's client endpoint: slot = CRC16(item) mod 16384 ->
// node -> endpoint. `ping`, and every request while no map is known (the router is unreachable,
// or an older mesh refuses `slots`), goes through the router.
//
// `moved`. The map is fetched again and THE SAME frame, with the same `id`, is sent to the
// endpoint the reply names; after kMaxMoved hops in one call (two maps that disagree while a
// reload spreads) the request goes through the router.
//
// Fallback and return (docs/client-library.md, "Direct mode"). A node socket is a REQ with
// ZMQ_IMMEDIATE: it takes a frame only once its connection (and CURVE handshake) is up. The same
// frame, same id, goes through the router (a Client with its Lazy Pirate retries) when:
//   - a node believed up (a new socket, or one that answered last time) is not connected
//     within connect_wait_ms;
//   - the node is marked down and its socket is still not connected (checked without waiting);
//   - the node gives no reply within node_timeout_ms: it is then marked down and held off for
//     holdoff_ms, during which its slots go through the router without any try;
//   - the node answers `unavailable` or `internal` (the router then retries with backoff).
// The socket of a down node keeps reconnecting in the background (every 100 ms), so the first
// request after the hold-off whose socket is connected goes direct again: a node that returns
// gets direct traffic back within holdoff_ms + 100 ms of listening. While falling back, the map
// is refreshed at most once per holdoff_ms (a node may have moved to another endpoint).
//
// Safety of retries across both paths: every try of one call carries the same frame and id, and
// both paths end at the item's one owner, which remembers each write's reply by (item, id). A
// direct try that timed out and was applied anyway is answered from that record when the same
// frame comes through the router: a write never takes effect twice.
//
// Bounds: a call waits at most kMaxMoved * node_timeout_ms + connect_wait_ms + the router
// Client's bound (timeout_ms * (retries + 1) plus backoffs), plus map fetches. One socket per
// node endpoint in use, no queue: one request in flight per DirectClient.
//
// Errors as Client: a lost reply is nullopt, a refusal is a Reply with ok false; `moved` is
// never returned (it is followed), unless it came back kMaxMoved times and the router is gone.
//
// Thread-safety: NOT thread-safe (it owns ZeroMQ sockets); one thread per DirectClient. The
// context must outlive it.
#pragma once

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>

#include "client/client.h"
#include "client/curve_keys.h"
#include "client/slot_table.h"
#include "protocol/messages.h"

namespace bidmesh {

struct DirectOptions {
  int timeout_ms = Client::kDefaultTimeoutMs;  // router path, per try
  int retries = Client::kDefaultRetries;       // router path
  int node_timeout_ms = 1000;  // a direct try without reply after this falls back (the router's own owner timeout)
  int connect_wait_ms = 250;   // a node believed up must be connected within this
  int holdoff_ms = 1000;       // a node that timed out gets no direct try for this long
};

class DirectClient {
 public:
  static constexpr int kMaxMoved = 3;

  // `router_endpoint`: the mesh's request endpoint (the map comes from it, and every fallback
  // goes to it). With `curve`, node sockets use the same client keys and server key as the
  // router's: every endpoint of a mesh serves with the mesh's one server key.
  DirectClient(zmq::context_t& ctx, std::string router_endpoint, DirectOptions options = {}, std::string id_prefix = {},
               std::optional<CurveKeys> curve = std::nullopt);
  ~DirectClient();
  DirectClient(const DirectClient&) = delete;
  DirectClient& operator=(const DirectClient&) = delete;

  // As Client::call: an empty `id` is replaced by next_id().
  std::optional<Reply> call(const Request& request);
  // One raw frame, routed by its `item` (peek_route; a frame that does not name one goes to the
  // router, which judges it). Returns the raw reply frame.
  std::optional<std::string> call_raw(std::string_view frame);

  // Fetches the map now (router first, then any known node). False when none answered with a
  // complete map; the cached map, if any, is kept.
  bool refresh_slots();
  // The cached map, or null before the first successful fetch.
  const SlotTable* slots() const { return table_ ? &*table_ : nullptr; }

  std::string next_id() { return router_.next_id(); }
  const std::string& last_id() const { return last_id_; }
  // How the last call was answered: "direct" (a bid node's endpoint) or "router" (or "none").
  const std::string& last_path() const { return last_path_; }
  // Sends made by the last call, to nodes and through the router (1: the first try was answered).
  int last_attempts() const { return last_attempts_; }

  // Counts since construction, for tools and tests.
  struct Stats {
    uint64_t direct = 0;     // calls answered by a bid node
    uint64_t router = 0;     // calls answered through the router
    uint64_t fallbacks = 0;  // direct tries given up for the router (unreachable, timeout, unavailable)
    uint64_t moved = 0;      // `moved` replies followed
    uint64_t refreshes = 0;  // successful map fetches
  };
  const Stats& stats() const { return stats_; }

 private:
  using clock = std::chrono::steady_clock;
  struct Link {
    std::unique_ptr<zmq::socket_t> sock;
    bool down = false;        // last try failed; probe without waiting
    clock::time_point held_until{};
  };
  Link& link(const std::string& endpoint);
  void open(Link& l, const std::string& endpoint);
  // One request-reply on a node link: nullopt when it could not be sent or got no reply in time
  // (the link is then reopened and marked down).
  std::optional<std::string> exchange(Link& l, const std::string& endpoint, std::string_view frame);
  std::optional<std::string> via_router(std::string_view frame);
  void note_fallback(Link& l, bool hold);

  zmq::context_t& ctx_;
  const DirectOptions opt_;
  const std::optional<CurveKeys> curve_;
  Client router_;
  std::optional<SlotTable> table_;
  bool slots_refused_ = false;  // the router answered `slots` with a refusal: an older mesh
  clock::time_point last_refresh_{};
  std::map<std::string, Link> links_;  // by endpoint
  std::string last_id_;
  std::string last_path_ = "none";
  int last_attempts_ = 0;
  Stats stats_;
};

}  // namespace bidmesh
