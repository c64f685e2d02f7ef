// The mesh config: one TOML file read by the supervisor, the router and the bid nodes.
// Relative paths in it are taken from the folder of the file. A bad config is refused with
// "<file>: <key>: <reason>" (ConfigError). See docs/configuration.md for every key.
// Thread-safe: the loaded config is an immutable value.
#pragma once

#include <cstdint>
#include <filesystem>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/slot_map.h"

namespace bidmesh {

struct ConfigError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

enum class NodeKind { router, bid };
std::string_view node_kind_name(NodeKind kind);

// OTP restart types: permanent restarts always, transient only after an abnormal exit,
// temporary never.
enum class RestartPolicy { permanent, transient, temporary };
std::string_view restart_policy_name(RestartPolicy p);

struct NodeConfig {
  std::string name;                  // [A-Za-z0-9_-]{1,64}, unique in the mesh
  NodeKind kind = NodeKind::bid;
  std::string host;                  // the host whose supervisor runs it; "" = any
  std::string listen;                // router: client endpoint (ROUTER); bid: router-facing endpoint
  std::vector<SlotRange> slots;      // bid only
  uint64_t map_size_bytes = 0;       // bid only: LMDB map size
  bool unsafe_no_sync = false;       // bid only: commits without fsync; refused unless said in plain words
  bool feed = false;                 // router only: this router process runs the feed forwarder
  RestartPolicy restart = RestartPolicy::permanent;
};

struct MeshConfig {
  std::filesystem::path file;        // absolute path of the config file
  std::filesystem::path data_dir;    // absolute
  std::string feed_publish;          // XPUB, subscribers connect (PROTOCOL.md: tcp://127.0.0.1:5556)
  std::string feed_collect;          // XSUB, bid nodes' PUB sockets connect
  std::string control;               // supervisor control endpoint (ipc://<data_dir>/control/supervisor.sock)
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
  // Bid node write-ahead log (docs/configuration.md): a checkpoint (one synced LMDB commit) is
  // taken when the log holds checkpoint_kb past the last one, or checkpoint_interval_ms after it.
  // Both bound the replay after a crash, hence the restart time.
  uint32_t checkpoint_interval_ms = 1000;
  uint32_t checkpoint_kb = 64;
  uint32_t wal_segment_mb = 16;                // preallocated log segment size
  std::vector<NodeConfig> nodes;     // in file order

  const NodeConfig* find(std::string_view name) const;
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
