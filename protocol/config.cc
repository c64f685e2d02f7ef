// Mesh config loading: every key is checked, unknown keys are refused (a typo must not turn
// into a silent default), the slot ranges must cover every slot exactly once, and with
// security = "none" every endpoint the mesh binds must be local (protected mode).
#include "protocol/config.h"

#include <algorithm>
#include <cstdio>
#include <fstream>
#include <set>
#include <sstream>

#include <arpa/inet.h>

#include <toml++/toml.h>

#include "protocol/messages.h"

namespace bidmesh {

namespace {

// The one value that turns fsync off: durability is never lost to a typo or a boolean.
constexpr std::string_view kUnsafeNoSyncWords = "unsafe-no-fsync-acknowledged-bids-can-be-lost";

class Reader {
 public:
  explicit Reader(std::filesystem::path file) : file_(std::move(file)) {}

  [[noreturn]] void fail(std::string_view key, std::string_view reason) const {
    throw ConfigError(file_.string() + ": " + std::string(key) + ": " + std::string(reason));
  }

  void refuse_unknown(const toml::table& t, std::string_view prefix, const std::set<std::string_view>& known) const {
    for (const auto& [k, v] : t)
      if (!known.count(k.str())) fail(join(prefix, k.str()), "unknown key");
  }

  static std::string join(std::string_view prefix, std::string_view key) {
    return prefix.empty() ? std::string(key) : std::string(prefix) + "." + std::string(key);
  }

  template <typename T>
  void read_uint(const toml::table& t, std::string_view prefix, std::string_view key, T& out, uint64_t min,
                 uint64_t max) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) return;
    const auto v = n->value<int64_t>();
    if (!n->is_integer() || !v) fail(join(prefix, key), "must be an integer");
    if (*v < 0 || static_cast<uint64_t>(*v) < min || static_cast<uint64_t>(*v) > max)
      fail(join(prefix, key), "must be between " + std::to_string(min) + " and " + std::to_string(max));
    out = static_cast<T>(*v);
  }

  std::optional<std::string> read_string(const toml::table& t, std::string_view prefix, std::string_view key,
                                         bool required) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) {
      if (required) fail(join(prefix, key), "is required");
      return std::nullopt;
    }
    if (!n->is_string()) fail(join(prefix, key), "must be a string");
    return std::string(*n->value<std::string_view>());
  }

  bool read_bool(const toml::table& t, std::string_view prefix, std::string_view key) const {
    const toml::node* n = t.get(key);
    if (n == nullptr) return false;
    if (!n->is_boolean()) fail(join(prefix, key), "must be true or false");
    return *n->value<bool>();
  }

  void check_endpoint(std::string_view key, const std::string& ep) const {
    if (ep.rfind("tcp://", 0) != 0 && ep.rfind("ipc://", 0) != 0 && ep.rfind("inproc://", 0) != 0)
      fail(key, "must be a ZeroMQ endpoint (tcp://host:port or ipc://path), got '" + ep + "'");
  }

  // "A-B" or "A" (inclusive).
  SlotRange parse_range(std::string_view key, std::string_view text) const {
    auto parse_num = [&](std::string_view s) -> uint32_t {
      if (s.empty() || s.size() > 5) fail(key, "bad slot range '" + std::string(text) + "' (want \"FIRST-LAST\")");
      uint32_t v = 0;
      for (char c : s) {
        if (c < '0' || c > '9') fail(key, "bad slot range '" + std::string(text) + "' (want \"FIRST-LAST\")");
        v = v * 10 + static_cast<uint32_t>(c - '0');
      }
      if (v >= kSlotCount)
        fail(key, "slot " + std::to_string(v) + " is out of range (slots are 0 to " + std::to_string(kSlotCount - 1) + ")");
      return v;
    };
    const auto dash = text.find('-');
    SlotRange r;
    r.first = parse_num(text.substr(0, dash));
    r.last = dash == std::string_view::npos ? r.first : parse_num(text.substr(dash + 1));
    if (r.last < r.first) fail(key, "slot range '" + std::string(text) + "' ends before it starts");
    return r;
  }

  std::filesystem::path resolve(const std::filesystem::path& p) const {
    if (p.is_absolute()) return p.lexically_normal();
    return (file_.parent_path() / p).lexically_normal();
  }

 private:
  std::filesystem::path file_;
};

// security, server_certificate, clients_dir, feed_public. The files themselves are checked by
// the supervisor at start (it reads the certificate), not here: a config must load on a host
// that holds no keys, e.g. for `bidmesh-ctl`.
void read_security(const Reader& rd, const toml::table& root, MeshConfig& cfg) {
  const std::string security = rd.read_string(root, "", "security", false).value_or("none");
  if (security == "curve") cfg.security = Security::curve;
  else if (security != "none") rd.fail("security", "must be \"none\" or \"curve\", got \"" + security + "\"");
  const auto certificate = rd.read_string(root, "", "server_certificate", false);
  const auto clients = rd.read_string(root, "", "clients_dir", false);
  cfg.feed_public = rd.read_bool(root, "", "feed_public");
  if (cfg.security == Security::curve) {
    if (!certificate)
      rd.fail("server_certificate", "is required with security = \"curve\" (the mesh's secret certificate, a "
                                    "NAME.key_secret file; docs/security.md)");
    if (!clients)
      rd.fail("clients_dir", "is required with security = \"curve\" (the folder of the allowed clients' public "
                             "certificates; docs/security.md)");
    cfg.server_certificate = rd.resolve(*certificate);
    cfg.clients_dir = rd.resolve(*clients);
    return;
  }
  // A key that would do nothing is refused: the operator meant something by it.
  if (certificate) rd.fail("server_certificate", "is set but security = \"none\" uses no keys; set security = \"curve\"");
  if (clients) rd.fail("clients_dir", "is set but security = \"none\" admits every client; set security = \"curve\"");
}

// Protected mode: without CURVE, only this machine may reach what the mesh binds.
void check_protected_mode(const Reader& rd, const std::string& key, const std::string& endpoint) {
  if (endpoint_is_local(endpoint)) return;
  rd.fail(key, "security = \"none\" may bind only loopback or ipc, and " + endpoint +
                   " is not; set security = \"curve\" with server_certificate and clients_dir "
                   "(docs/security.md), or listen on 127.0.0.1");
}

bool split_metrics_address(std::string_view address, std::string_view& host, std::string_view& port, bool& v6);
void check_metrics_address(const Reader& rd, const std::string& key, const std::string& address, Security security);

// A [[node]] of kind "gateway" (docs/web.md): an HTTP address like a metrics one, its own keys.
// Read before the mesh-wide checks, which a gateway's listen (not a ZeroMQ endpoint) skips.
void read_gateway(const Reader& rd, const toml::table& t, const std::string& named, const MeshConfig& cfg,
                  NodeConfig& n) {
  rd.refuse_unknown(t, named, {"name", "kind", "host", "listen", "restart", "metrics", "users_file", "allowed_origins",
                               "web_root", "client_certificate", "router", "max_connections", "https"});
  n.host = rd.read_string(t, named, "host", false).value_or("");
  n.listen = *rd.read_string(t, named, "listen", true);
  if (auto problem = metrics_address_problem(n.listen)) rd.fail(named + ".listen", *problem);
  // Protected mode: a gateway bids for whoever signs in, so without CURVE it serves loopback only.
  if (cfg.security == Security::none && !metrics_address_is_local(n.listen))
    rd.fail(named + ".listen", "security = \"none\" may serve a gateway only on loopback, and " + n.listen +
                                   " is not; set security = \"curve\" (docs/web.md), or listen on 127.0.0.1");
  n.metrics = rd.read_string(t, named, "metrics", false).value_or("");
  if (!n.metrics.empty()) check_metrics_address(rd, named + ".metrics", n.metrics, cfg.security);
  if (n.metrics == n.listen) rd.fail(named + ".metrics", "is the gateway's own listen address");
  const std::string restart = rd.read_string(t, named, "restart", false).value_or("permanent");
  if (restart == "permanent") n.restart = RestartPolicy::permanent;
  else if (restart == "transient") n.restart = RestartPolicy::transient;
  else if (restart == "temporary") n.restart = RestartPolicy::temporary;
  else rd.fail(named + ".restart", "must be \"permanent\", \"transient\" or \"temporary\"");
  auto& g = n.gateway;
  g.users_file = rd.resolve(*rd.read_string(t, named, "users_file", true));
  if (auto root = rd.read_string(t, named, "web_root", false)) g.web_root = rd.resolve(*root);
  g.router = rd.read_string(t, named, "router", false).value_or("");
  rd.read_uint(t, named, "max_connections", g.max_connections, 1, 1000000);
  g.https = rd.read_bool(t, named, "https");
  if (const toml::node* origins = t.get("allowed_origins")) {
    const toml::array* arr = origins->as_array();
    if (arr == nullptr) rd.fail(named + ".allowed_origins", "must be a list of origins like \"https://bids.example\"");
    for (const toml::node& v : *arr) {
      const auto* s = v.as_string();
      if (s == nullptr || (s->get().rfind("http://", 0) != 0 && s->get().rfind("https://", 0) != 0))
        rd.fail(named + ".allowed_origins", "each origin is a string \"http(s)://HOST[:PORT]\"");
      g.allowed_origins.push_back(s->get());
    }
  } else {
    std::string_view host, port;
    bool v6 = false;
    split_metrics_address(n.listen, host, port, v6);
    const std::string h = v6 ? "[" + std::string(host) + "]" : std::string(host);
    g.allowed_origins.push_back("http://" + h + ":" + std::string(port));
    if (metrics_address_is_local(n.listen)) g.allowed_origins.push_back("http://localhost:" + std::string(port));
  }
  const auto certificate = rd.read_string(t, named, "client_certificate", false);
  if (cfg.security == Security::curve && !certificate)
    rd.fail(named + ".client_certificate", "is required with security = \"curve\" (the gateway's agent secret "
                                           "certificate; docs/web.md)");
  if (cfg.security == Security::none && certificate)
    rd.fail(named + ".client_certificate", "is set but security = \"none\" uses no keys");
  if (certificate) g.client_certificate = rd.resolve(*certificate);
}

// Splits "HOST:PORT" / "[V6]:PORT" into the host (without brackets), the port and whether it
// was bracketed; false when the shape is wrong.
bool split_metrics_address(std::string_view address, std::string_view& host, std::string_view& port, bool& v6) {
  v6 = !address.empty() && address.front() == '[';
  std::size_t colon;
  if (v6) {
    const auto close = address.find(']');
    if (close == std::string_view::npos || close + 1 >= address.size() || address[close + 1] != ':') return false;
    host = address.substr(1, close - 1);
    colon = close + 1;
  } else {
    colon = address.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = address.substr(0, colon);
  }
  port = address.substr(colon + 1);
  return true;
}

// A metrics address: valid, and loopback under protected mode. Metrics carry no item, bidder
// or key, only counts under fixed labels, but the endpoint is plain HTTP that CURVE does not
// cover: a mesh that may bind only loopback serves its metrics there too, and a mesh with
// curve may serve them beyond it, for a Prometheus on another host (docs/operations.md).
void check_metrics_address(const Reader& rd, const std::string& key, const std::string& address, Security security) {
  if (const auto problem = metrics_address_problem(address)) rd.fail(key, *problem);
  if (security == Security::none && !metrics_address_is_local(address))
    rd.fail(key, "security = \"none\" may serve metrics only on loopback, and " + address +
                     " is not; use 127.0.0.1:PORT (or [::1]:PORT), or set security = \"curve\" (docs/operations.md)");
}

}  // namespace

std::optional<std::string> metrics_address_problem(std::string_view address) {
  const std::string shown = "'" + std::string(address) + "'";
  std::string_view host, port;
  bool v6 = false;
  if (!split_metrics_address(address, host, port, v6))
    return "must be HOST:PORT (an IPv4 address, or an IPv6 one in brackets), got " + shown;
  const std::string host_text(host);
  unsigned char buf[16];
  if (inet_pton(v6 ? AF_INET6 : AF_INET, host_text.c_str(), buf) != 1)
    return std::string("the host of ") + shown + " must be an " + (v6 ? "IPv6" : "IPv4") +
           " address (the metrics server binds an address, not a name)";
  uint32_t p = 0;
  for (char c : port) {
    if (c < '0' || c > '9' || p > 65535) return "the port of " + shown + " must be a number from 1 to 65535";
    p = p * 10 + static_cast<uint32_t>(c - '0');
  }
  if (port.empty() || p < 1 || p > 65535) return "the port of " + shown + " must be a number from 1 to 65535";
  return std::nullopt;
}

bool metrics_address_is_local(std::string_view address) {
  std::string_view host, port;
  bool v6 = false;
  if (!split_metrics_address(address, host, port, v6)) return false;
  if (v6) return host == "::1";
  return endpoint_is_local("tcp://" + std::string(host) + ":" + std::string(port));
}

std::string_view security_name(Security s) { return s == Security::curve ? "curve" : "none"; }

bool endpoint_is_local(std::string_view endpoint) {
  if (endpoint.rfind("ipc://", 0) == 0 || endpoint.rfind("inproc://", 0) == 0) return true;
  if (endpoint.rfind("tcp://", 0) != 0) return false;
  const std::string_view rest = endpoint.substr(6);
  if (rest.find(';') != std::string_view::npos) return false;  // a source;destination pair
  std::string_view host;
  if (!rest.empty() && rest.front() == '[') {
    const auto close = rest.find(']');
    if (close == std::string_view::npos) return false;
    host = rest.substr(1, close - 1);
  } else {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return false;
    host = rest.substr(0, colon);
  }
  if (host == "::1" || host == "localhost" || host == "lo") return true;
  // 127.a.b.c, each part a decimal number below 256.
  int parts = 0;
  std::size_t at = 0;
  while (at <= host.size()) {
    const auto dot = std::min(host.find('.', at), host.size());
    const std::string_view part = host.substr(at, dot - at);
    if (part.empty() || part.size() > 3) return false;
    int v = 0;
    for (char c : part) {
      if (c < '0' || c > '9') return false;
      v = v * 10 + (c - '0');
    }
    if (v > 255 || (parts == 0 && v != 127)) return false;
    ++parts;
    at = dot + 1;
  }
  return parts == 4;
}

std::string_view node_kind_name(NodeKind kind) {
  return kind == NodeKind::router ? "router" : kind == NodeKind::gateway ? "gateway" : "bid";
}

std::string_view restart_policy_name(RestartPolicy p) {
  switch (p) {
    case RestartPolicy::permanent: return "permanent";
    case RestartPolicy::transient: return "transient";
    case RestartPolicy::temporary: return "temporary";
  }
  return "permanent";
}

const NodeConfig* MeshConfig::find(std::string_view name) const {
  for (const NodeConfig& n : nodes)
    if (n.name == name) return &n;
  return nullptr;
}

uint64_t MeshConfig::digest() const {
  // Canonical text: one field a line, so no two configs that differ in a field give the same text.
  std::string text = "bidmesh-config-digest-v1\n";
  auto line = [&text](std::string_view key, std::string_view value) {
    text.append(key).append("=").append(value).append("\n");
  };
  line("feed.publish", feed_publish);
  line("feed.collect", feed_collect);
  line("security", security_name(security));
  line("feed_public", feed_public ? "true" : "false");
  line("max_request_bytes", std::to_string(max_request_bytes));
  for (const NodeConfig& n : nodes) {
    line("node", n.name);
    line("kind", node_kind_name(n.kind));
    line("host", n.host);
    // A gateway is a client of the mesh: no process of the mesh connects to it, so its settings
    // are its own host's business (as a client's would be); only its name and place are agreed.
    if (n.kind == NodeKind::gateway) continue;
    line("listen", n.listen);
    // Only when set, so a mesh without direct clients keeps the digest it had before v1.2.
    if (!n.client_listen.empty()) line("client_listen", n.client_listen);
    line("feed", n.feed ? "true" : "false");
    for (const SlotRange& r : n.slots) line("slots", std::to_string(r.first) + "-" + std::to_string(r.last));
  }
  // FNV-1a, 64 bits: an agreement check between the mesh's own processes, not a defence against
  // forgery (the links that carry it are authenticated).
  uint64_t h = 14695981039346656037ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string MeshConfig::digest_hex() const {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(digest()));
  return buf;
}

std::vector<const NodeConfig*> MeshConfig::bid_nodes() const {
  std::vector<const NodeConfig*> out;
  for (const NodeConfig& n : nodes)
    if (n.kind == NodeKind::bid) out.push_back(&n);
  return out;
}

std::vector<const NodeConfig*> MeshConfig::routers() const {
  std::vector<const NodeConfig*> out;
  for (const NodeConfig& n : nodes)
    if (n.kind == NodeKind::router) out.push_back(&n);
  return out;
}

SlotMap MeshConfig::slot_map() const {
  std::vector<std::vector<SlotRange>> ranges;
  for (const NodeConfig* n : bid_nodes()) ranges.push_back(n->slots);
  return SlotMap(ranges);
}

std::filesystem::path MeshConfig::node_data_dir(std::string_view name) const { return data_dir / std::string(name); }

std::filesystem::path MeshConfig::node_log_file(std::string_view name) const {
  return data_dir / "logs" / (std::string(name) + ".log");
}

MeshConfig load_mesh_config(const std::filesystem::path& file) {
  std::error_code ec;
  const auto abs = std::filesystem::absolute(file, ec).lexically_normal();
  std::ifstream in(abs);
  if (!in) throw ConfigError(file.string() + ": cannot read the file");
  std::stringstream ss;
  ss << in.rdbuf();
  return parse_mesh_config(ss.str(), abs);
}

MeshConfig parse_mesh_config(std::string_view toml_text, const std::filesystem::path& file) {
  Reader rd(file);
  toml::table root;
  try {
    root = toml::parse(toml_text, file.string());
  } catch (const toml::parse_error& e) {
    const auto& where = e.source().begin;
    throw ConfigError(file.string() + ":" + std::to_string(where.line) + ":" + std::to_string(where.column) +
                      ": " + std::string(e.description()));
  }
  rd.refuse_unknown(root, "",
                    {"data_dir", "control", "request_timeout_ms", "max_request_bytes", "batch_max", "map_size_mb",
                     "heartbeat_interval_ms", "heartbeat_timeout_ms", "stop_timeout_ms", "restart_intensity",
                     "restart_period_ms", "log_max_bytes", "log_keep", "checkpoint_interval_ms", "checkpoint_kb",
                     "wal_segment_mb", "security", "server_certificate", "clients_dir", "feed_public",
                     "router_memory_mb", "supervisor_metrics", "log_format", "feed", "node"});

  MeshConfig cfg;
  cfg.file = file;
  cfg.data_dir = rd.resolve(*rd.read_string(root, "", "data_dir", true));
  rd.read_uint(root, "", "request_timeout_ms", cfg.request_timeout_ms, 10, 600000);
  rd.read_uint(root, "", "max_request_bytes", cfg.max_request_bytes, 256, kTransportMaxBytes);
  rd.read_uint(root, "", "batch_max", cfg.batch_max, 1, 4096);  // a batch's log record stays under 1 MiB
  uint64_t map_size_mb = cfg.default_map_size_bytes >> 20;
  rd.read_uint(root, "", "map_size_mb", map_size_mb, 1, 1ull << 24);
  cfg.default_map_size_bytes = map_size_mb << 20;
  rd.read_uint(root, "", "heartbeat_interval_ms", cfg.heartbeat_interval_ms, 10, 60000);
  rd.read_uint(root, "", "heartbeat_timeout_ms", cfg.heartbeat_timeout_ms, 50, 600000);
  rd.read_uint(root, "", "stop_timeout_ms", cfg.stop_timeout_ms, 10, 600000);
  rd.read_uint(root, "", "restart_intensity", cfg.restart_intensity, 0, 1000);
  rd.read_uint(root, "", "restart_period_ms", cfg.restart_period_ms, 100, 86400000);
  rd.read_uint(root, "", "log_max_bytes", cfg.log_max_bytes, 4096, 1u << 30);
  rd.read_uint(root, "", "log_keep", cfg.log_keep, 0, 100);
  if (auto format = rd.read_string(root, "", "log_format", false)) {
    const auto parsed = parse_log_format(*format);
    if (!parsed) rd.fail("log_format", "must be \"text\" or \"json\", got '" + *format + "'");
    cfg.log_format = *parsed;
  }
  rd.read_uint(root, "", "checkpoint_interval_ms", cfg.checkpoint_interval_ms, 10, 3600000);
  rd.read_uint(root, "", "checkpoint_kb", cfg.checkpoint_kb, 16, 1u << 20);
  rd.read_uint(root, "", "wal_segment_mb", cfg.wal_segment_mb, 1, 1024);
  rd.read_uint(root, "", "router_memory_mb", cfg.router_memory_mb, kMinRouterMemoryMb, 1u << 20);
  if (uint64_t{cfg.checkpoint_kb} * 1024 * 2 > uint64_t{cfg.wal_segment_mb} << 20)
    rd.fail("checkpoint_kb", "must be at most half of wal_segment_mb (a checkpoint's log tail fits in a segment)");
  if (cfg.heartbeat_timeout_ms <= cfg.heartbeat_interval_ms)
    rd.fail("heartbeat_timeout_ms", "must be longer than heartbeat_interval_ms");

  if (auto control = rd.read_string(root, "", "control", false)) {
    rd.check_endpoint("control", *control);
    cfg.control = *control;
  } else {
    cfg.control = "ipc://" + (cfg.data_dir / "control" / "supervisor.sock").string();
  }
  // The supervisor admits only its own uid and root, which it learns from the unix socket.
  if (cfg.control.rfind("ipc://", 0) != 0)
    rd.fail("control", "must be an ipc:// endpoint (the supervisor admits only its own uid and root, known from "
                       "SO_PEERCRED on a unix socket), got '" + cfg.control + "'");
  // sockaddr_un holds 107 bytes of path.
  if (cfg.control.rfind("ipc://", 0) == 0 && cfg.control.size() - 6 > 107)
    rd.fail("control", "the ipc socket path is longer than 107 bytes; set a shorter 'control' endpoint");

  read_security(rd, root, cfg);
  cfg.supervisor_metrics = rd.read_string(root, "", "supervisor_metrics", false).value_or("");
  if (!cfg.supervisor_metrics.empty())
    check_metrics_address(rd, "supervisor_metrics", cfg.supervisor_metrics, cfg.security);

  const toml::table* feed = root["feed"].as_table();
  if (feed == nullptr) rd.fail("feed", "a [feed] table with 'publish' and 'collect' endpoints is required");
  rd.refuse_unknown(*feed, "feed", {"publish", "collect"});
  cfg.feed_publish = *rd.read_string(*feed, "feed", "publish", true);
  cfg.feed_collect = *rd.read_string(*feed, "feed", "collect", true);
  rd.check_endpoint("feed.publish", cfg.feed_publish);
  rd.check_endpoint("feed.collect", cfg.feed_collect);

  const toml::array* nodes = root["node"].as_array();
  if (nodes == nullptr || nodes->empty()) rd.fail("node", "at least one [[node]] table is required");
  std::set<std::string> names, endpoints{cfg.feed_publish, cfg.feed_collect};
  for (std::size_t i = 0; i < nodes->size(); ++i) {
    const std::string prefix = "node[" + std::to_string(i) + "]";
    const toml::table* t = (*nodes)[i].as_table();
    if (t == nullptr) rd.fail(prefix, "must be a table");
    NodeConfig n;
    n.name = *rd.read_string(*t, prefix, "name", true);
    const std::string named = "node '" + n.name + "'";
    if (!is_valid_identifier(n.name)) rd.fail(prefix + ".name", "must be 1 to 64 bytes of [A-Za-z0-9_-]");
    if (!names.insert(n.name).second) rd.fail(named, "the name is used twice");
    const std::string kind = *rd.read_string(*t, named, "kind", true);
    if (kind == "router") n.kind = NodeKind::router;
    else if (kind == "bid") n.kind = NodeKind::bid;
    else if (kind == "gateway") n.kind = NodeKind::gateway;
    else rd.fail(named + ".kind", "must be \"router\", \"bid\" or \"gateway\", got \"" + kind + "\"");
    if (n.kind == NodeKind::gateway) {
      read_gateway(rd, *t, named, cfg, n);
      cfg.nodes.push_back(std::move(n));
      continue;
    }
    if (n.kind == NodeKind::router)
      rd.refuse_unknown(*t, named, {"name", "kind", "host", "listen", "feed", "restart", "metrics"});
    else
      rd.refuse_unknown(*t, named, {"name", "kind", "host", "listen", "client_listen", "slots", "map_size_mb",
                                    "durability", "restart", "metrics"});
    n.host = rd.read_string(*t, named, "host", false).value_or("");
    n.metrics = rd.read_string(*t, named, "metrics", false).value_or("");
    if (!n.metrics.empty()) check_metrics_address(rd, named + ".metrics", n.metrics, cfg.security);
    n.listen = *rd.read_string(*t, named, "listen", true);
    rd.check_endpoint(named + ".listen", n.listen);
    if (n.kind == NodeKind::router && n.listen.rfind("inproc://", 0) == 0)
      rd.fail(named + ".listen", "a router listens on tcp:// or ipc:// (it reads its clients as byte streams), got '" +
                                     n.listen + "'");
    if (!endpoints.insert(n.listen).second) rd.fail(named + ".listen", "endpoint " + n.listen + " is used twice");
    if (auto client_listen = rd.read_string(*t, named, "client_listen", false)) {
      n.client_listen = *client_listen;
      rd.check_endpoint(named + ".client_listen", n.client_listen);
      // Clients connect here from other processes, as to a router's listen.
      if (n.client_listen.rfind("inproc://", 0) == 0 || n.client_listen.find('*') != std::string::npos)
        rd.fail(named + ".client_listen", "must be a tcp:// or ipc:// address clients can connect to (no wildcard), got '" +
                                              n.client_listen + "'");
      if (!endpoints.insert(n.client_listen).second)
        rd.fail(named + ".client_listen", "endpoint " + n.client_listen + " is used twice");
    }
    const std::string restart = rd.read_string(*t, named, "restart", false).value_or("permanent");
    if (restart == "permanent") n.restart = RestartPolicy::permanent;
    else if (restart == "transient") n.restart = RestartPolicy::transient;
    else if (restart == "temporary") n.restart = RestartPolicy::temporary;
    else rd.fail(named + ".restart", "must be \"permanent\", \"transient\" or \"temporary\"");

    if (n.kind == NodeKind::router) {
      n.feed = rd.read_bool(*t, named, "feed");
    } else {
      uint64_t mb = cfg.default_map_size_bytes >> 20;
      rd.read_uint(*t, named, "map_size_mb", mb, 1, 1ull << 24);
      n.map_size_bytes = mb << 20;
      const std::string durability = rd.read_string(*t, named, "durability", false).value_or("fsync");
      if (durability == kUnsafeNoSyncWords) n.unsafe_no_sync = true;
      else if (durability != "fsync")
        rd.fail(named + ".durability", "must be \"fsync\" (the default); the only other value is \"" +
                                           std::string(kUnsafeNoSyncWords) + "\"");
      const toml::node* slots = t->get("slots");
      if (slots == nullptr) rd.fail(named + ".slots", "is required for a bid node (e.g. [\"0-16383\"])");
      auto add = [&](const toml::node& v) {
        if (!v.is_string()) rd.fail(named + ".slots", "each range must be a string \"FIRST-LAST\"");
        n.slots.push_back(rd.parse_range(named + ".slots", *v.value<std::string_view>()));
      };
      if (const toml::array* arr = slots->as_array()) {
        if (arr->empty()) rd.fail(named + ".slots", "must not be empty");
        for (const toml::node& v : *arr) add(v);
      } else {
        add(*slots);
      }
    }
    cfg.nodes.push_back(std::move(n));
  }

  // Two processes that may run on one host cannot serve metrics on one address; every host's
  // supervisor serves supervisor_metrics. A node with no host may run on any host.
  for (std::size_t i = 0; i < cfg.nodes.size(); ++i) {
    const NodeConfig& a = cfg.nodes[i];
    if (a.metrics.empty()) continue;
    if (a.metrics == cfg.supervisor_metrics)
      rd.fail("node '" + a.name + "'.metrics", "address " + a.metrics + " is also supervisor_metrics");
    for (std::size_t j = 0; j < i; ++j) {
      const NodeConfig& b = cfg.nodes[j];
      if (b.metrics == a.metrics && (a.host.empty() || b.host.empty() || a.host == b.host))
        rd.fail("node '" + a.name + "'.metrics", "address " + a.metrics + " is also used by node '" + b.name +
                                                     "', which may run on the same host");
    }
  }

  if (cfg.security == Security::none) {
    check_protected_mode(rd, "feed.publish", cfg.feed_publish);
    check_protected_mode(rd, "feed.collect", cfg.feed_collect);
    for (const NodeConfig& n : cfg.nodes) {
      if (n.kind == NodeKind::gateway) continue;  // read_gateway checked its address
      check_protected_mode(rd, "node '" + n.name + "'.listen", n.listen);
      if (!n.client_listen.empty()) check_protected_mode(rd, "node '" + n.name + "'.client_listen", n.client_listen);
    }
  }

  // Every slot owned exactly once.
  const auto bids = cfg.bid_nodes();
  if (bids.empty()) rd.fail("node", "at least one node of kind \"bid\" is required");
  if (bids.size() > 65535) rd.fail("node", "too many bid nodes");
  std::vector<int> owner(kSlotCount, -1);
  for (std::size_t b = 0; b < bids.size(); ++b)
    for (const SlotRange& r : bids[b]->slots)
      for (uint32_t s = r.first; s <= r.last; ++s) {
        if (owner[s] >= 0)
          rd.fail("node '" + bids[b]->name + "'.slots",
                  "slot " + std::to_string(s) + " is also owned by node '" + bids[owner[s]]->name + "'");
        owner[s] = static_cast<int>(b);
      }
  for (uint32_t s = 0; s < kSlotCount; ++s)
    if (owner[s] < 0) {
      uint32_t e = s;
      while (e + 1 < kSlotCount && owner[e + 1] < 0) ++e;
      rd.fail("node", "slots " + std::to_string(s) + "-" + std::to_string(e) +
                          " are owned by no bid node (every slot 0-16383 must be owned exactly once)");
    }
  return cfg;
}

}  // namespace bidmesh
