// Messages between the supervisor and the processes it runs, and between the supervisor and
// its CLI. Both go over the supervisor's control endpoint (a ROUTER on an ipc:// socket in a
// 0700 directory), one MessagePack map per frame.
//
// Node -> supervisor (DEALER, identity = node name; endpoint and name from the environment):
//   {"type": "ready", "name": N, "pid": P}       sockets bound, LMDB open: serving
//   {"type": "heartbeat", "name": N, "pid": P}   every heartbeat interval, from the serving loop
//   Either may carry "note": S, a short line about the node's peers that `bidmesh-ctl status`
//   shows (a config digest that differs across hosts); absent or "" means none.
//   A heartbeat may carry "stats": {...}, the node's counters for `bidmesh-ctl top` (NodeStats).
//   Encoded and decoded here only (encode_node_message, decode_node_message): nodes/process.cc
//   sends it, supervisor/control_wire.cc receives it.
// CLI -> supervisor (DEALER): {"cmd": C, "args": [strings]}; reply {"ok": bool, "message": S,
//   "data": <command-specific>} (supervisor/control_wire.h).
// Thread-safe: pure functions.
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace bidmesh {

// Environment variables the supervisor sets for each child.
inline constexpr const char* kEnvSupervisorEndpoint = "BIDMESH_SUPERVISOR";  // control endpoint
inline constexpr const char* kEnvNodeName = "BIDMESH_NODE_NAME";
inline constexpr const char* kEnvHeartbeatMs = "BIDMESH_HEARTBEAT_MS";

inline constexpr std::string_view kMsgReady = "ready";
inline constexpr std::string_view kMsgHeartbeat = "heartbeat";

// The largest node message decode_node_message accepts (a real one is under 100 bytes without a
// note and stats, under 400 with stats; node names have at most 64 characters).
inline constexpr std::size_t kMaxNodeMessageBytes = 2048;
// A note of a refused config digest (bid node and router alike) stays this long after the last
// refusal, then the node clears it: long enough to be seen, short enough to show a fix.
inline constexpr std::chrono::seconds kDigestNoteHold{30};
// encode_node_message cuts a longer note to this many bytes, so the message stays under the limit.
inline constexpr std::size_t kMaxNodeNoteBytes = 768;

// What `bidmesh-ctl top` shows of a node, read from the node's own metric set (metrics/metrics.h)
// when a heartbeat is sent, so top and Prometheus count the same. Counts are cumulative since the
// process started (top takes rates from two snapshots of one pid); an absent value is one the
// node does not have (a router has no store).
//   {"at": ms, "bids": n, "refusals": n, "commit_bounds": [s, ...], "commit_counts": [n, ...],
//    "log_bytes": n, "store_used": n, "store_size": n}
struct NodeStats {
  uint64_t at_ms = 0;        // CLOCK_MONOTONIC of the snapshot, in ms (only differences count)
  uint64_t bids = 0;         // bid requests answered, any outcome
  uint64_t refusals = 0;     // requests answered with an error code (this process's own answers)
  // The commit latency histogram (bid node: apply + log write + sync per batch): finite upper
  // bounds in seconds, and cumulative counts per bucket, one more than bounds (the last is +Inf).
  std::vector<double> commit_bounds;
  std::vector<uint64_t> commit_counts;
  std::optional<uint64_t> log_bytes;   // write-ahead log past the last checkpoint
  std::optional<uint64_t> store_used;  // LMDB map bytes in use
  std::optional<uint64_t> store_size;  // LMDB map size
};
// At most this many commit buckets travel (the decoder refuses more).
inline constexpr std::size_t kMaxStatsBuckets = 32;

struct NodeMessage {
  std::string type;  // kMsgReady or kMsgHeartbeat (the decoder passes other types through)
  std::string name;
  uint64_t pid = 0;
  std::string note = {};  // "" = none
  std::optional<NodeStats> stats = {};  // heartbeats of nodes that count
};

std::string encode_node_message(const NodeMessage& m);
// The frame as a node message: one map, consumed whole, with a string "type", a string "name"
// and a non-negative integer "pid", and "note" a string if present (other keys are ignored). nullopt for anything else,
// including a frame over kMaxNodeMessageBytes; the frame is untrusted (unpacked under limits).
std::optional<NodeMessage> decode_node_message(std::string_view frame);

}  // namespace bidmesh
