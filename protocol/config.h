// The mesh config: one TOML file read by the supervisor, the router and the bid nodes.
// Relative paths in it are taken from the folder of the file. A bad config is refused with
// "<file>: <key>: <reason>" (ConfigError); every program exits 100 on it. Among the refusals,
// protected mode: a mesh with security = "none" that binds anything but loopback or ipc.
// See docs/configuration.md for every key.
// Thread-safe: the loaded config is an immutable value.
#pragma once

#include <cstdint>
#include <filesystem>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/log.h"
#include "protocol/slot_map.h"

namespace bidmesh {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class NodeKind { router, bid, gateway };
std::string_view node_kind_name(NodeKind kind);

// How the mesh's public endpoints are protected (shared/PROTOCOL.md, Security; docs/security.md).
//   none   v1: no authentication or encryption. Allowed only when every endpoint the mesh binds
//          is local (endpoint_is_local): Redis's protected mode, checked when the config loads.
//   curve  the request and feed endpoints are CurveZMQ servers with a ZAP allow list.
enum class Security { none, curve };
std::string_view security_name(Security s);

// Whether `endpoint` can be reached only from this machine: ipc://, inproc://, or tcp:// on a
// loopback host (127.x.x.x, [::1], localhost, or the interface lo). Anything else is not, and
// so is whatever this cannot read with certainty (a wildcard *, a host name, "src;dst").
// Thread-safe: a pure function.
bool endpoint_is_local(std::string_view endpoint);

// A metrics address (`metrics`, `supervisor_metrics`): "HOST:PORT" with HOST an IPv4 literal or
// a bracketed IPv6 literal ("[::1]:9101"; the HTTP server binds addresses, not names) and PORT
// 1-65535. nullopt when it reads so, else the reason. Thread-safe: a pure function.
std::optional<std::string> metrics_address_problem(std::string_view address);
// Whether a valid metrics address is a loopback one (127.x.x.x or [::1]).
bool metrics_address_is_local(std::string_view address);

// The default router_memory_mb: the router's bounds (nodes/router.h) at their worst, with
// libzmq's per-message costs, plus the process's own needs (docs/configuration.md):
//   4096 client connections x (8 KiB in + 8 KiB out batch buffers + one 64 KiB frame in flight
//        + 1000 queued replies x 288 B: ~100 B of reply, its 64 B msg_t and a 64 B delimiter
//        msg_t in the pipe, ~60 B of allocation headers)                     = 1445 MiB
//   100000 requests in flight x 512 B (the request on the bid node's pipe,
//        its pending entry)                                                  =   49 MiB
//   baseline: thread stacks (8 MiB of address space each), libzmq, heap      =  128 MiB
// = 1622 MiB, rounded up to 1664 (a multiple of 128). RLIMIT_DATA counts address space, not
// resident memory, so this is larger than the router's RSS under the same load.
inline constexpr uint32_t kDefaultRouterMemoryMb = 1664;
inline constexpr uint32_t kMinRouterMemoryMb = 64;  // below this a router cannot start

// OTP restart types: permanent restarts always, transient only after an abnormal exit,
// temporary never.
enum class RestartPolicy { permanent, transient, temporary };
std::string_view restart_policy_name(RestartPolicy p);

struct NodeConfig {
  std::string name;                  // [A-Za-z0-9_-]{1,64}, unique in the mesh
  NodeKind kind = NodeKind::bid;
  std::string host;                  // the host whose supervisor runs it; "" = any
  std::string listen;                // router: client endpoint (ROUTER); bid: router-facing endpoint
  // bid only: the node's own client endpoint for direct clients (v1.2), "" = none. Clients are
  // sent here by `slots` and `moved`, so it must be an address they can connect to.
  std::string client_listen;
  std::vector<SlotRange> slots;      // bid only
  uint64_t map_size_bytes = 0;       // bid only: LMDB map size
  bool unsafe_no_sync = false;       // bid only: commits without fsync; refused unless said in plain words
  bool feed = false;                 // router only: this router process runs the feed forwarder
  RestartPolicy restart = RestartPolicy::permanent;
  std::string metrics;               // HOST:PORT of its Prometheus endpoint; "" = none (host-local, not in the digest)
  // gateway only (docs/web.md): `listen` is its HTTP "HOST:PORT". Host-local, not in the digest.
  struct Gateway {
    std::filesystem::path users_file;            // absolute; required
    std::vector<std::string> allowed_origins;    // default: http://HOST:PORT of listen (and localhost for loopback)
    std::filesystem::path web_root;              // absolute; empty = the program's default
    std::filesystem::path client_certificate;    // curve: the gateway's agent secret certificate, absolute
    std::string router;                          // the router node it sends requests to; "" = the first
    uint32_t max_connections = 2048;
    bool https = false;                          // behind an https proxy: the cookie gets Secure
  } gateway;
};

struct MeshConfig {
  std::filesystem::path file;        // absolute path of the config file
  std::filesystem::path data_dir;    // absolute
  std::string feed_publish;          // XPUB, subscribers connect (PROTOCOL.md: tcp://127.0.0.1:5556)
  std::string feed_collect;          // XSUB, bid nodes' PUB sockets connect
  std::string supervisor_metrics;    // HOST:PORT of each supervisor's Prometheus endpoint; "" = none
  std::string control;               // supervisor control endpoint, ipc:// (default <data_dir>/control/supervisor.sock)
  Security security = Security::none;
  std::filesystem::path server_certificate;  // curve: the mesh's secret certificate (ZPL .key_secret), absolute
  std::filesystem::path clients_dir;         // curve: allowed clients' public certificates, absolute
  bool feed_public = false;                  // curve: the feed admits any CURVE client key
  uint32_t router_memory_mb = kDefaultRouterMemoryMb;  // RLIMIT_DATA of router processes
  uint32_t request_timeout_ms = 1000;          // router: answer `unavailable` after this
  uint32_t max_request_bytes = 4096;           // larger requests get `too_large`
  uint32_t batch_max = 1024;                   // bid node: requests per write transaction
  uint64_t default_map_size_bytes = 1ull << 30;  // 1 GiB
  uint32_t heartbeat_interval_ms = 500;
  uint32_t heartbeat_timeout_ms = 3000;
  uint32_t stop_timeout_ms = 5000;
  uint32_t restart_intensity = 5;              // at most this many restarts ...
  uint32_t restart_period_ms = 10000;          // ... in this period, else `failed`
  uint32_t log_max_bytes = 10 * 1024 * 1024;   // per node log file before rotation
  uint32_t log_keep = 3;                       // rotated files kept
  LogFormat log_format = LogFormat::text;      // event lines of every process (protocol/log.h); host-local
  // Bid node write-ahead log (docs/configuration.md): a checkpoint (one synced LMDB commit) is
  // taken when the log holds checkpoint_kb past the last one, or checkpoint_interval_ms after it.
  // Both bound the replay after a crash, hence the restart time.
  uint32_t checkpoint_interval_ms = 1000;
  uint32_t checkpoint_kb = 64;
  uint32_t wal_segment_mb = 16;                // preallocated log segment size
  std::vector<NodeConfig> nodes;     // in file order

  const NodeConfig* find(std::string_view name) const;
  // What every host of the mesh must agree on, as one 64-bit digest (FNV-1a over a canonical
  // text; printed as 16 hex digits): every node's name, kind, host, listen endpoint, client
  // endpoint (when it has one), slots and feed flag in file order, the feed endpoints, `security`, `feed_public` and
  // `max_request_bytes`. Host-local settings (data_dir, control, map sizes, timeouts, logs, key
  // paths, metrics addresses, log_format) are left out, so hosts may differ in them. A router refuses to route to a bid node
  // whose digest differs from its own: two slot maps can never both own an item.
  uint64_t digest() const;
  std::string digest_hex() const;
  // The bid nodes, in file order: index i here is owner index i of slot_map().
  std::vector<const NodeConfig*> bid_nodes() const;
  std::vector<const NodeConfig*> routers() const;
  SlotMap slot_map() const;
  // <data_dir>/<name>: the node's LMDB environment.
  std::filesystem::path node_data_dir(std::string_view name) const;
  // <data_dir>/logs/<name>.log
  std::filesystem::path node_log_file(std::string_view name) const;
};

MeshConfig load_mesh_config(const std::filesystem::path& file);
// `file` names the source in error messages and anchors relative paths.
MeshConfig parse_mesh_config(std::string_view toml_text, const std::filesystem::path& file);

}  // namespace bidmesh
