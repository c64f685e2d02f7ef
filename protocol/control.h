// Messages between the supervisor and the processes it runs, and between the supervisor and
// its CLI. Both go over the supervisor's control endpoint (a ROUTER on an ipc:// socket in a
// 0700 directory), one MessagePack map per frame.
//
// Node -> supervisor (DEALER, identity = node name; endpoint and name from the environment):
//   {"type": "ready", "name": N, "pid": P}       sockets bound, LMDB open: serving
//   {"type": "heartbeat", "name": N, "pid": P}   every heartbeat interval, from the serving loop
// CLI -> supervisor (DEALER): {"cmd": C, "args": [strings]}; reply {"ok": bool, "message": S,
//   "data": <command-specific>}.
#pragma once

#include <string_view>

namespace bidmesh {

// Environment variables the supervisor sets for each child.
inline constexpr const char* kEnvSupervisorEndpoint = "BIDMESH_SUPERVISOR";  // control endpoint
inline constexpr const char* kEnvNodeName = "BIDMESH_NODE_NAME";
inline constexpr const char* kEnvHeartbeatMs = "BIDMESH_HEARTBEAT_MS";

inline constexpr std::string_view kMsgReady = "ready";
inline constexpr std::string_view kMsgHeartbeat = "heartbeat";

}  // namespace bidmesh
