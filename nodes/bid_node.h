// BidNode: the serving loop of one bid node, the single writer of its items.
//
// Sockets: a ROUTER bound on the node's `listen` endpoint, to which every router connects a
// DEALER; a PUB connected to the feed's XSUB (`feed_collect`), high-water mark kPubHwm so a slow
// feed drops events instead of slowing bids (subscribers repair gaps by `seq`).
//
// Framing (nodes/node_wire.h): a router's DEALER sends [token frame, config digest, principal,
// body]; the ROUTER here receives [router identity, token frame, digest, principal, body] (any
// other shape: dropped). A
// digest other than this node's own MeshConfig::digest() is answered `unavailable` and nothing
// is applied (the hosts' configs differ: two slot maps must never both own an item); that reply
// carries this node's digest as a last frame, and the supervisor is shown a note of the refusal
// until kDigestNoteHold after the last one. The principal (protocol/access.h)
// is the client as the router authenticated it; a decoded request it may not make is answered
// `forbidden` and not remembered. The reply is [router identity, one frame] (node_wire.h; an older
// router's 8-byte token gets [router identity, token, reply] instead). Replies go out with dontwait: a gone
// router just loses them (it has answered `unavailable` by then).
//
// Direct clients (wire contract v1.2): with `client_listen` the node also serves clients
// itself on a DirectEndpoint (nodes/direct_endpoint.h: the router's client contract, `moved`
// for items of other nodes, `ping` and `slots`). Its requests join the same batch as the
// routers' (one log write and one fdatasync for both; each turn reads up to half a batch of
// direct requests first, then the routers', then direct ones again, so neither side starves)
// and their replies go back on the client socket as [identity, "", reply]. With curve it is a
// CurveZMQ server under ZAP domain "clients" with the allow list of clients_dir, which SIGHUP
// reads again (a list that does not load leaves the previous one in force).
//
// Security (security = "curve"): a listen endpoint off this machine is a CurveZMQ server that
// admits only the mesh's own key (ZAP domain "mesh"), and the PUB is a CurveZMQ client of the
// feed's collect side, which admits only that key too.
//
// Group commit, one thread: poll the ROUTER (timeout: the next auto-close, the supervisor's
// heartbeat interval, at most 100 ms); drain up to batch_max waiting messages; decode each
// (a decode failure is answered at once and not remembered); apply the batch with ItemStore,
// which appends it to the write-ahead log with one write and one fdatasync; only then send the
// replies in arrival order, then publish the events. Then, when one is due, a checkpoint (one
// synced LMDB commit). A failed batch answers every write `internal` and publishes nothing; the
// reason goes to stderr (rate-limited) for the operator. A failed log write or sync answers the
// batch, then exits 111: the supervisor restarts the node, which replays the log.
//
// Stop: SIGTERM/SIGINT set a flag; the batch in flight is finished and answered, a last
// checkpoint is taken (so the next start replays nothing), then the sockets close (linger kCloseLingerMs so the last replies leave) and serve() returns 0.
//
// Metrics (docs/operations.md), served on the node's `metrics` address when it has one (a port
// it cannot bind is logged and the node serves on without them): requests by op and outcome,
// counted as the replies leave; per batch one observation each of its size, its apply time and
// its log write+fdatasync; each checkpoint's time; the log, store and item gauges after every
// checkpoint and at least once a second. Nothing per request but counter increments.
//
// Thread-compatible: one thread constructs, starts and serves.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "metrics/metrics.h"
#include "nodes/direct_endpoint.h"
#include "nodes/item_store.h"
#include "nodes/process.h"
#include "protocol/config.h"
#include "protocol/log.h"
#include "security/certificate.h"
#include "security/zap.h"

namespace bidmesh {

inline constexpr int kPubHwm = 100000;
// The replies of a whole batch go to one router peer at once; ROUTER drops what exceeds its
// send high-water mark, and the default (1000) is below batch_max's default (1024).
inline constexpr int kReplyHwm = 100000;
inline constexpr int kCloseLingerMs = 1000;
inline constexpr std::chrono::milliseconds kMaxPollWait{100};

class BidNode {
 public:
  // REQUIRES: node.kind == NodeKind::bid; cfg and node outlive the BidNode.
  BidNode(const MeshConfig& cfg, const NodeConfig& node);
  ~BidNode();
  BidNode(const BidNode&) = delete;
  BidNode& operator=(const BidNode&) = delete;

  // Opens the store and the sockets and prints the startup line. On failure returns a one-line
  // reason (the program then exits 111).
  std::optional<std::string> start();

  // REQUIRES: start() succeeded. Tells the supervisor `ready`, serves until stop_requested(),
  // then closes. Returns the exit code: 0 on a clean stop, 111 on a system failure.
  int serve();

 private:
  struct Incoming;
  void run_turn();
  void drain();
  // Reads up to `limit` (in all) messages of direct clients into the batch.
  void drain_direct(uint64_t decode_now, std::size_t limit);
  // With client_listen: binds the DirectEndpoint (after the ZAP handler when curve).
  std::optional<std::string> start_direct();
  // SIGHUP: clients_dir read again for the client endpoint; returns the line to log.
  std::string reload_direct_clients();
  void commit_batch();
  void checkpoint();
  std::chrono::milliseconds poll_timeout() const;
  // One event line (protocol/log.h): never per request.
  void log(std::string_view event, const std::string& line, LogFields fields = {}, LogLevel level = LogLevel::info) const;
  // The `unavailable` message for a request from a router whose config digest differs; logs it
  // at most once per kFailureLogInterval.
  std::string digest_mismatch_message(uint64_t router_digest);
  void report_failure(const std::string& failure);

  const std::string name_;
  const std::string listen_;
  const Security security_;
  const std::filesystem::path server_certificate_;
  const uint64_t config_digest_;         // MeshConfig::digest(): routers must send the same
  const std::string config_digest_hex_;
  const std::string feed_collect_;
  const std::filesystem::path data_dir_;
  const uint64_t map_size_bytes_;
  const bool unsafe_no_sync_;
  const std::size_t batch_max_;
  const uint64_t checkpoint_bytes_;
  const std::chrono::milliseconds checkpoint_interval_;
  const uint64_t log_segment_bytes_;
  const std::size_t max_request_bytes_;
  const std::string metrics_address_;    // empty: metrics are counted, not served

  std::unique_ptr<ItemStore> store_;
  zmq::context_t ctx_;
  Certificate mesh_key_;                 // with security on: the mesh's own keypair
  std::optional<ZapHandler> zap_;        // with security on and a listen off this machine
  zmq::socket_t router_;
  zmq::socket_t pub_;
  SupervisorLink link_;
  const MeshConfig& cfg_;
  const NodeConfig& node_;
  std::unique_ptr<DirectEndpoint> direct_;  // with client_listen, from start() on

  // The batch being read: slots_[0, gathered_) (slots are reused from batch to batch).
  std::vector<Incoming> slots_;
  std::size_t gathered_ = 0;
  std::vector<Request> requests_;
  std::string reply_frame_;  // a one-frame reply to a router (node_wire.h); reused

  // Counters for the stop line ("is the node really batching?"): batches with work, requests
  // (decoded or not), write transactions and the time spent in apply_batch (apply + commit).
  struct Stats {
    uint64_t batches = 0;
    uint64_t requests = 0;
    uint64_t max_batch = 0;
    uint64_t commits = 0;
    uint64_t apply_ns = 0;
    uint64_t log_ns = 0;  // the log's write + fdatasync, part of apply_ns
    uint64_t max_apply_ns = 0;
    uint64_t checkpoint_ns = 0;
    uint64_t max_checkpoint_ns = 0;
  };
  std::string stats_line() const;
  Stats stats_;

  // The process's metrics; the exposer's thread (when serving) reads only the registry, and
  // stops in its destructor.
  MetricsRegistry metrics_registry_;
  BidNodeMetrics metrics_{metrics_registry_.registry()};
  std::chrono::steady_clock::time_point next_gauges_{};
  // Sets the gauges from the store and the log directory; next one a second later.
  void update_gauges();

  // Operator log of write failures: one line per kFailureLogInterval at most.
  std::chrono::steady_clock::time_point last_failure_log_{};
  std::chrono::steady_clock::time_point last_digest_log_{};
  // The last request refused for its router's digest, while the supervisor is shown a note of it.
  std::optional<std::chrono::steady_clock::time_point> last_digest_refusal_;
  uint64_t failures_unlogged_ = 0;
  bool failing_ = false;
  bool fatal_ = false;  // the store's log failed: answer the batch, then exit 111
  RefusalBursts refusals_;  // internal, unavailable, forbidden, bad_request: one line per 5 s at most
  // Checkpoints are logged at most once per kFailureLogInterval, with the count since the last line.
  std::chrono::steady_clock::time_point last_checkpoint_log_{};
  uint64_t checkpoints_unlogged_ = 0;
};

}  // namespace bidmesh
