// The frames on the supervisor's control endpoint (protocol/control.h has the overview), their
// MessagePack encoding, and the JSON that `bidmesh-ctl --json` prints.
//
//   node -> supervisor   {"type": "ready"|"heartbeat", "name": N, "pid": P}
//                        (encoded and decoded by protocol/control.h; passed through here)
//   CLI  -> supervisor   {"cmd": C, "args": [S, ...]}
//   supervisor -> CLI    {"ok": B, "message": S, "data": D}
//       D is nil, a string (`logfile`: the log's path), or for `status` an array of maps with
//       the fields of NodeStatus (name, kind, state, pid, restarts, uptime_ms, last_exit,
//       reason, policy, host, backoff_ms, log_tail, note, and the counters of the node's last
//       heartbeat: stats_at_ms, bids, refusals, commit_bounds, commit_counts, log_bytes,
//       store_used, store_size).
//
// Decoding never trusts the frame: it is unpacked under size and depth limits, must be consumed
// whole, and every field is type-checked (a bad frame decodes to nullopt).
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include <msgpack.hpp>

#include "protocol/control.h"

namespace bidmesh {

inline constexpr std::size_t kMaxControlFrameBytes = 1 << 20;

struct CtlRequest {
  std::string cmd;
  std::vector<std::string> args;
};

// One node as `status` reports it.
struct NodeStatus {
  std::string name;
  std::string kind;        // "router" | "bid"
  std::string state;       // node_state_name()
  uint64_t pid = 0;        // 0: no process
  uint64_t restarts = 0;   // automatic restarts since the supervisor started
  uint64_t uptime_ms = 0;  // since the current process was launched
  std::string last_exit;   // "exit 1", "signal 9 (SIGKILL)", "" if never exited
  std::string reason;      // the last thing that happened to it, in words
  std::string policy;      // "permanent" | "transient" | "temporary"
  std::string host;
  std::vector<uint64_t> backoff_ms;    // backoffs taken since the last stable run
  std::vector<std::string> log_tail;   // failed nodes: the last lines of the log
  std::string note;        // what the running process says of its peers (a refused config digest)
  // The current process's last counters (protocol/control.h, NodeStats) for `bidmesh-ctl top`;
  // stats_at_ms 0: none yet. -1: a value the node does not have.
  uint64_t stats_at_ms = 0;
  uint64_t bids = 0;
  uint64_t refusals = 0;
  std::vector<double> commit_bounds;
  std::vector<uint64_t> commit_counts;
  int64_t log_bytes = -1;
  int64_t store_used = -1;
  int64_t store_size = -1;
  MSGPACK_DEFINE_MAP(name, kind, state, pid, restarts, uptime_ms, last_exit, reason, policy, host,
                     backoff_ms, log_tail, note, stats_at_ms, bids, refusals, commit_bounds, commit_counts,
                     log_bytes, store_used, store_size)
};

struct CtlReply {
  bool ok = false;
  std::string message;
  std::variant<std::monostate, std::string, std::vector<NodeStatus>> data;
};

std::string encode_ctl_request(const CtlRequest& r);
std::string encode_ctl_reply(const CtlReply& r);

using ControlFrame = std::variant<CtlRequest, NodeMessage>;
// A frame that reached the supervisor: a CLI request (has "cmd") or else a node message
// (decode_node_message). nullopt for anything else.
std::optional<ControlFrame> decode_control_frame(std::string_view frame);
std::optional<CtlReply> decode_ctl_reply(std::string_view frame);

// The sender of a frame on the ipc control socket. libzmq (4.3, built with SO_PEERCRED) reads
// the unix socket's peer credentials when the connection is accepted and appends
// ":<uid>:<gid>:<pid>" to the connection's "Peer-Address" metadata property, which every
// message from it carries. The kernel fills them in, so a peer cannot forge them.
struct PeerCredentials {
  uint32_t uid = 0;
  uint32_t gid = 0;
  uint32_t pid = 0;
};
// nullopt when `peer_address` does not end in three decimal ":uid:gid:pid" fields.
std::optional<PeerCredentials> parse_peer_credentials(std::string_view peer_address);

// Whether the supervisor running as `own_uid` takes commands from `peer`: only from its own uid
// and root. nullopt when it does; else the reply's message, e.g. "refused: uid 65534 may not
// control this supervisor (only uid 1000 and root; SO_PEERCRED)". Without credentials (no
// SO_PEERCRED on the connection) it refuses too.
std::optional<std::string> control_refusal(const std::optional<PeerCredentials>& peer, uint32_t own_uid);

// JSON for --json output (strings quoted with protocol/json.h).
std::string status_to_json(const NodeStatus& s);
std::string status_list_to_json(const std::vector<NodeStatus>& list);

}  // namespace bidmesh
