// The router: the mesh's one client endpoint. It reads only what it needs of a request (`op`,
// `id`, `item`), answers `ping` and malformed frames itself, and forwards everything else to the
// bid node that owns the item (slot map of the mesh config). It keeps no state but the requests in
// flight, so several routers may serve the same bid nodes.
//
// Wire, client side (the wire contract, docs/protocol.md v1.2): to its clients the router is a
// ClientFront (nodes/client_front.h, shared with the bid nodes' client endpoints) bound on the
// node's `listen`; it answers `ping` and `slots` itself. A request arrives as ["", body] (REQ, or DEALER with
// an empty delimiter) and its reply leaves as ["", reply]; any other framing gets `bad_request`
// (id nil). libzmq's own engine does the transport: a frame over 64 KiB (ZMQ_MAXMSGSIZE) drops
// the connection, heartbeats drop dead peers, a handshake must finish within handshake_timeout.
// With security = "curve" the socket is a CurveZMQ server whose ZAP handler (security/zap.h, ZAP
// domain "clients") admits only the keys of the allow list, so nothing of a refused peer reaches
// this code; each request then carries its key (the "User-Id" property), looked up again in the
// current allow list, so a key revoked by a reload gets `forbidden` even on an open connection.
//
// Wire, bid node side (internal): one DEALER per bid node, connected to the node's `listen`.
//   router -> node: [token frame, digest, principal, request]
//                   token frame: 8 opaque bytes chosen by the router, then the byte that asks for
//                   a one-frame reply (nodes/node_wire.h); digest: the router's
//                   MeshConfig::digest() (8 bytes, host order), so that a node whose config
//                   differs refuses the request (`unavailable`) instead of applying it;
//                   principal: protocol/access.h encode_principal
//   node -> router: one frame, token | kind | (node digest) | reply (node_wire.h), the digest
//                   with its `unavailable` for a digest that differs. Replies of older nodes,
//                   [token frame, reply(, node digest)], are read too.
// A reply whose token is unknown (its request already timed out) is dropped. With security on,
// a link to a node that is not on this machine is a CurveZMQ client of the mesh's own key.
//
// `list` (v2, docs/protocol.md "Listing") is the one request that goes to every bid node: the
// router judges it whole (fields, `forbidden`), sends it to each bid node as one pending request
// per node, and once each has answered or timed out (request_timeout_ms) merges the sorted pages
// (k-way, taking the first `limit`) into one reply with the cursor of its last entry. A node that
// is not connected, does not answer in time, or answers anything but a list page is named in
// `missing` and the reply is `partial`. At most kMaxListsInFlight lists are gathered at once
// (past it: `unavailable` at once).
//
// Guarantees: every request with a readable envelope is answered exactly once: by the owner's
// reply, or `unavailable` at once when the owner is not connected or its queue is full, or
// `unavailable` when the owner has not answered within request_timeout_ms. Memory is bounded by
// the high-water marks and the pending table's capacity (past it: `unavailable` at once), except
// for one thing libzmq does: it holds a message until its last frame, so an allowed client can
// send one huge message of many frames. The supervisor runs the router under a memory limit
// (router_memory_mb); such a message kills the router, which is restarted, and clients retry by
// id (docs/reliability.md).
//
// Metrics (RouterOptions::metrics): bidmesh_router_requests_total counts every client request
// once, by op and outcome: the router's own answer (an error code, or ok for ping), or
// `answered` when the owner's reply was passed on unread; timeouts also count in
// request_timeouts_total. Per request that is one counter increment; the in-flight gauge is set
// once per loop turn and the client connections every kConnectionPollInterval.
//
// Thread-compatible: a Router and its sockets belong to the thread that calls bind() and run().
#pragma once

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include <zmq.hpp>

#include "metrics/metrics.h"
#include "nodes/client_front.h"
#include "nodes/connection_counter.h"
#include "nodes/process.h"
#include "protocol/config.h"
#include "protocol/slot_directory.h"
#include "security/allow_list.h"
#include "security/certificate.h"

namespace bidmesh {

// The requests a router has forwarded and not yet answered: token -> (client, id, owner, deadline).
//
// Tokens are 64 bits: the entry's index in the table (low 32) and a per-acquire sequence number
// (high 32, never 0), so a late reply for a reused entry does not match. Entries are reused, so
// in steady state nothing is allocated per request. Deadlines are expected in insertion order
// (the timeout is constant), which makes an insertion-ordered queue the expiry order.
//
// Thread-compatible.
class PendingTable {
 public:
  using Clock = std::chrono::steady_clock;

  struct Entry {
    uint64_t token = 0;            // 0 while the entry is free
    std::string client;            // the client connection's routing id on the client socket
    std::string id;                // the request's id, for the timeout reply
    std::size_t node = 0;          // index of the bid node it was forwarded to
    Op op = Op::ping;              // the request's op, for the metrics of its answer
    Clock::time_point deadline{};
    uint32_t gather = kNoGather;   // `list`: the gather this node's page belongs to
  };
  static constexpr uint32_t kNoGather = UINT32_MAX;

  explicit PendingTable(std::size_t capacity);
  PendingTable(const PendingTable&) = delete;
  PendingTable& operator=(const PendingTable&) = delete;

  std::size_t size() const { return live_; }
  bool full() const { return live_ >= capacity_; }
  std::size_t free_entries() const { return capacity_ - live_; }

  // Takes a free entry with a fresh token and the given deadline; the caller fills in the rest.
  // The reference stays valid until the entry is released.
  // REQUIRES: !full(); deadline not earlier than that of any entry acquired before.
  Entry& acquire(Clock::time_point deadline);

  // The live entry holding `token`, or null (never issued, answered, or timed out).
  Entry* find(uint64_t token);

  // Frees an entry acquired from this table; its token no longer matches.
  void release(Entry& entry);

  // Calls fn(entry) for each entry whose deadline is at or before `now`, oldest first, and
  // releases it after the call.
  void expire(Clock::time_point now, const std::function<void(Entry&)>& fn);

  // The earliest deadline of a live entry, if any.
  std::optional<Clock::time_point> next_deadline();

 private:
  static uint32_t index_of(uint64_t token) { return static_cast<uint32_t>(token & 0xffffffffu); }
  // Drops tokens at the front of the queue whose entries were answered.
  void pop_answered();

  const std::size_t capacity_;
  std::size_t live_ = 0;
  uint32_t sequence_ = 0;
  std::deque<Entry> entries_;     // deque: references stay valid as it grows
  std::vector<uint32_t> free_;    // indexes of free entries
  // Tokens in acquire order. Answered ones stay until they reach the front, so its length is
  // bounded by the request rate times the timeout (8 bytes each), not by the capacity.
  std::deque<uint64_t> order_;
};

// Largest frame a router takes from a bid node (ZMQ_MAXMSGSIZE of its DEALERs): far above the
// largest reply (a `history` of 1000 events with 64-byte identifiers, about 200 KB).
inline constexpr int64_t kMaxNodeReplyBytes = 16 * 1024 * 1024;

// A router's connect attempt to a bid node is abandoned (and tried again) after this long.
inline constexpr int kNodeConnectTimeoutMs = 1000;

// Interval of the DEALERs' reconnect tries to a bid node that is down (kill -9 and restart).
inline constexpr int kNodeReconnectMs = 5;

// How often the client socket's monitor events are read into the connections gauge: often
// enough that libzmq's monitor queue (1000 events) holds a burst of connects between two reads.
inline constexpr std::chrono::milliseconds kConnectionPollInterval{100};

// `list` requests a router gathers at once (each holds one pending entry per bid node).
inline constexpr std::size_t kMaxListsInFlight = 1024;

// The client endpoint's options (ClientFrontOptions: high-water marks, handshake, heartbeats,
// linger), then the router's own.
struct RouterOptions : ClientFrontOptions {
  std::size_t max_pending = 100000;   // requests in flight; past it: `unavailable` at once
  std::size_t burst = 256;            // messages read from one socket per loop turn
  // The same on the links to the bid nodes, shorter: after a network cut heals, TCP alone would
  // resume only at its next retransmission (seconds, growing with the cut), while a dropped link
  // reconnects at once (kNodeReconnectMs) and discards what was queued for the cut-off node.
  std::chrono::milliseconds node_heartbeat_interval{1000};
  std::chrono::milliseconds node_heartbeat_timeout{3000};
  int node_hwm = 10000;               // per bid node, each way
  // Longest poll wait, so a stop signal that lands just before the poll is seen soon.
  std::chrono::milliseconds max_poll_wait{100};
  // Where the router counts (docs/operations.md): the process's metrics, served by its main.
  // Null: a registry of the Router's own, which nobody reads (unit tests, benchmarks).
  // REQUIRES: outlives the Router.
  RouterMetrics* metrics = nullptr;
};

// What the router needs when the mesh runs with security = "curve".
using RouterSecurity = ClientSecurity;


class Router {
 public:
  // REQUIRES: `self` is a router node of `cfg`; cfg outlives the Router; `security` is given
  // exactly when cfg.security is curve (then a ZapHandler must serve ctx before bind()).
  Router(zmq::context_t& ctx, const MeshConfig& cfg, const NodeConfig& self, RouterOptions options = {},
         std::optional<RouterSecurity> security = std::nullopt);
  Router(const Router&) = delete;
  Router& operator=(const Router&) = delete;
  ~Router();

  // Binds the client endpoint and connects one DEALER per bid node. Returns a one-line reason on
  // failure (the endpoint cannot be bound or a node's endpoint is invalid), nullopt on success.
  std::optional<std::string> bind();

  // Serves until should_stop() returns true, then drains: new requests are answered
  // `unavailable`, those in flight are answered or time out, and the sockets are closed.
  // Calls link.tick() and each_turn() on every loop turn. REQUIRES: bind() succeeded.
  void run(SupervisorLink& link, const std::function<bool()>& should_stop,
           const std::function<void()>& each_turn = {});

  // With security on: from the next request on, keys are judged against `clients`. A key no
  // longer in it gets `forbidden` (its open connections stay, its new ones are refused by ZAP).
  // Called on the serving thread (e.g. from each_turn).
  void set_allowed_clients(std::shared_ptr<const AllowList> clients);

  // Client messages this router's code has read since bind() (refused peers never count).
  uint64_t client_messages() const { return front_.messages(); }

  // The client endpoint as bound (with the actual port when `listen` asked for a wildcard port).
  std::string client_endpoint() const;

 private:
  struct Node {
    std::string name;
    std::string endpoint;
    std::string timeout_message;    // "bid node <name> did not answer within N ms"
    std::string refused_message;    // "bid node <name> is not reachable"
    zmq::socket_t socket;
    // The last reply that refused this router's config digest, and the node's own digest.
    std::optional<PendingTable::Clock::time_point> digest_refused_at = std::nullopt;
    uint64_t their_digest = 0;
  };

  // A `list` being gathered: each bid node's reply (nullopt: missing), and how many are due.
  struct ListGather {
    std::string client;
    std::string id;
    uint64_t limit = 0;
    std::vector<std::optional<std::string>> pages;
    std::size_t waiting = 0;
  };

  // Each reads and handles one message; false when the socket had none.
  bool handle_client_message(PendingTable::Clock::time_point now, bool stopping);
  bool handle_node_message(std::size_t node);
  void handle_request(PendingTable::Clock::time_point now, bool stopping);
  // `list`: judged here, then sent to every bid node (see above).
  void handle_list(PendingTable::Clock::time_point now, std::string_view client, std::string_view body,
                   const Principal* who);
  // A bid node's page (or nullopt: it is missing) for gather `g`; the last one answers the client.
  void gather_page(uint32_t g, std::size_t node, std::optional<std::string> page);
  // Sends [token, digest, principal, body] to a bid node; false when it could not be queued.
  bool send_to_node(Node& node, uint64_t token, std::string_view body);
  // Sends [client, "", body]; a gone client or a full queue drops it, as a ROUTER does.
  void reply_to_client(std::string_view client, std::string_view body) { front_.reply(client, body); }
  void expire(PendingTable::Clock::time_point now);
  // Shows the supervisor (bidmesh-ctl status) and the log which bid nodes refused this router's
  // config digest within kDigestNoteHold; clears the note after that.
  void update_note(SupervisorLink& link, PendingTable::Clock::time_point now);
  std::chrono::milliseconds poll_timeout(PendingTable::Clock::time_point now, const SupervisorLink& link);
  void close();
  // Sets the gauges: in flight every turn, client connections when due.
  void update_gauges(PendingTable::Clock::time_point now);

  zmq::context_t& ctx_;
  const MeshConfig& cfg_;
  const NodeConfig& self_;
  const RouterOptions options_;
  // The private registry when options.metrics is null; metrics_ points at one or the other.
  std::unique_ptr<MetricsRegistry> own_registry_;
  std::unique_ptr<RouterMetrics> own_metrics_;
  RouterMetrics& metrics_;
  std::optional<ConnectionCounter> connections_;  // of client_, from bind() on
  PendingTable::Clock::time_point next_connection_poll_{};
  const SlotDirectory slots_;  // the slot map, and the `slots` reply
  const std::chrono::milliseconds timeout_;
  ClientFront front_;
  std::vector<Node> nodes_;
  PendingTable pending_;
  std::vector<ListGather> gathers_;       // indexes are stable; free ones listed below
  std::vector<uint32_t> free_gathers_;
  std::size_t live_gathers_ = 0;
  std::vector<zmq_pollitem_t> poll_items_;
  // security = "curve": the mesh's keypair (links to bid nodes off this machine use it), and
  // requests carry their principal to the node.
  const std::optional<Certificate> mesh_key_;
  const uint64_t config_digest_;
  std::string principal_frame_;   // of the request being handled; reused
  // Buffers reused for every message, so receiving allocates only what libzmq must.
  zmq::message_t identity_;
  zmq::message_t frame_;
  zmq::message_t body_;
  bool note_due_ = false;
  PendingTable::Clock::time_point next_note_check_{};
  const std::string full_reply_message_;
};

}  // namespace bidmesh
