// bidmesh-router: the client endpoint of the mesh, and (when its node has `feed = true`) the
// feed forwarder.
//
//   bidmesh-router --config FILE --name NAME
//
// Exit codes (as every bidmesh program): 0 after a clean stop (SIGTERM/SIGINT: requests in
// flight are answered or time out first), 100 for a bad command line or config (a server
// certificate that others may read, a clients_dir that does not load), 111 for a
// system failure (an endpoint cannot be bound, the feed forwarder failed). Every failure is one
// line on stderr.
#include <chrono>
#include <cstdint>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <variant>

#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include "metrics/metrics.h"
#include "nodes/connection_counter.h"
#include "nodes/feed.h"
#include "nodes/process.h"
#include "nodes/router.h"
#include "protocol/config.h"
#include "security/allow_list.h"
#include "security/certificate.h"
#include "security/zap.h"

namespace {

constexpr int kExitUsage = 100;
constexpr int kExitSystem = 111;
// How often the feed's counters are read into its metrics, and how long the proxy may take.
constexpr std::chrono::seconds kFeedMetricsEvery{1};
constexpr std::chrono::milliseconds kFeedStatisticsTimeout{100};

// With security = "curve": the mesh's keypair and the allowed clients, or a one-line reason
// (the program then exits 100: a config the operator must mend).
std::variant<bidmesh::RouterSecurity, std::string> load_security(const bidmesh::MeshConfig& cfg) {
  bidmesh::RouterSecurity security;
  auto mesh = bidmesh::read_secret_certificate(cfg.server_certificate);
  if (auto* error = std::get_if<std::string>(&mesh)) return "server_certificate: " + *error;
  security.mesh = std::move(std::get<bidmesh::Certificate>(mesh));
  auto clients = bidmesh::load_allow_list(cfg.clients_dir);
  if (auto* error = std::get_if<std::string>(&clients)) return "clients_dir: " + *error;
  security.clients = std::make_shared<const bidmesh::AllowList>(std::move(std::get<bidmesh::AllowList>(clients)));
  return security;
}

int serve(const bidmesh::MeshConfig& cfg, const bidmesh::NodeConfig& self) {
  const std::string who = "bidmesh-router " + self.name + ": ";
  // Declared first, so every socket below is closed before the context terminates.
  zmq::context_t ctx(1);
  // Kept and counted whether or not they are served (metrics/metrics.h).
  bidmesh::MetricsRegistry metrics;
  bidmesh::FeedMetrics feed_metrics(metrics.registry());
  bidmesh::RouterMetrics router_metrics(metrics.registry());

  std::optional<bidmesh::RouterSecurity> security;
  std::optional<bidmesh::ZapHandler> zap;
  if (cfg.security == bidmesh::Security::curve) {
    auto loaded = load_security(cfg);
    if (auto* error = std::get_if<std::string>(&loaded)) {
      std::cerr << who << *error << std::endl;
      return kExitUsage;
    }
    security = std::move(std::get<bidmesh::RouterSecurity>(loaded));
    zap.emplace(ctx, security->mesh.public_key, cfg.feed_public);
    zap->set_allow_list(security->clients);
    if (auto error = zap->start()) {
      std::cerr << who << *error << std::endl;
      return kExitSystem;
    }
  }

  bidmesh::RouterOptions router_options;
  router_options.metrics = &router_metrics;
  bidmesh::Router router(ctx, cfg, self, router_options, security);
  if (auto error = router.bind()) {
    std::cerr << who << *error << std::endl;
    return kExitSystem;
  }
  std::optional<bidmesh::FeedForwarder> feed;
  if (self.feed) {
    bidmesh::FeedOptions options;
    if (security) {
      const bidmesh::Certificate mesh = security->mesh;
      options.secure_collect = [mesh](zmq::socket_t& s) { bidmesh::make_curve_server(s, mesh, bidmesh::kZapDomainMesh); };
      options.secure_publish = [mesh](zmq::socket_t& s) { bidmesh::make_curve_server(s, mesh, bidmesh::kZapDomainFeed); };
    }
    feed.emplace(ctx, cfg.feed_collect, cfg.feed_publish, options);
    if (auto error = feed->start()) {
      std::cerr << who << *error << std::endl;
      return kExitSystem;
    }
  }
  std::optional<bidmesh::ConnectionCounter> subscribers;
  if (feed) subscribers.emplace(ctx, feed->subscriber_monitor(), feed_metrics.subscribers);
  // A metrics port that cannot be bound costs the metrics, not the auction: the router serves on.
  if (!self.metrics.empty()) {
    if (auto error = metrics.serve(self.metrics)) std::cerr << who << *error << "; serving without metrics" << std::endl;
  }

  bidmesh::SupervisorLink link(ctx, self.name);
  link.ready();
  std::cerr << who << "serving clients on " << router.client_endpoint() << ", "
            << cfg.bid_nodes().size() << " bid node(s), timeout " << cfg.request_timeout_ms << " ms, mesh config digest "
            << cfg.digest_hex();
  if (feed) std::cerr << "; feed " << cfg.feed_collect << " -> " << cfg.feed_publish;
  if (metrics.serving()) std::cerr << "; metrics on " << self.metrics;
  if (security) {
    std::cerr << "; security curve, " << security->clients->size() << " allowed clients from "
              << cfg.clients_dir.string();
  } else {
    std::cerr << "; security none (loopback only)";
  }
  std::cerr << std::endl;

  // SIGHUP (the supervisor's reload): the allow list is read again. A list that does not load
  // leaves the previous one in force, so a typo never opens or closes the mesh by accident.
  uint64_t feed_events = 0;
  auto feed_metrics_due = std::chrono::steady_clock::now();
  const auto update_feed_metrics = [&] {
    if (!feed || std::chrono::steady_clock::now() < feed_metrics_due) return;
    feed_metrics_due = std::chrono::steady_clock::now() + kFeedMetricsEvery;
    subscribers->poll();
    if (const auto events = feed->forwarded_events(kFeedStatisticsTimeout); events && *events >= feed_events) {
      feed_metrics.events.Increment(static_cast<double>(*events - feed_events));
      feed_events = *events;
    }
  };
  // Every loop turn: the feed's metrics when due, and SIGHUP (the supervisor's reload).
  const auto each_turn = [&] {
    update_feed_metrics();
    if (!bidmesh::take_reload_request() || !security) return;
    auto clients = bidmesh::load_allow_list(cfg.clients_dir);
    if (auto* error = std::get_if<std::string>(&clients)) {
      std::cerr << who << "reload refused, the previous clients stay allowed: clients_dir: " << *error << std::endl;
      return;
    }
    auto list = std::make_shared<const bidmesh::AllowList>(std::move(std::get<bidmesh::AllowList>(clients)));
    zap->set_allow_list(list);
    router.set_allowed_clients(list);
    std::cerr << who << "reloaded " << list->size() << " clients from " << cfg.clients_dir.string() << std::endl;
  };
  router.run(link, [&feed] { return bidmesh::stop_requested() || (feed && feed->failed()); }, each_turn);

  std::cerr << who << "stopped; read " << router.client_messages() << " client messages";
  if (zap) std::cerr << ", refused " << zap->refused() << " handshakes";
  std::cerr << std::endl;
  if (feed) {
    feed->stop();
    if (auto failure = feed->failure()) {
      std::cerr << who << *failure << std::endl;
      return kExitSystem;
    }
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh router: routes client requests to the bid nodes that own their items"};
  std::string config_file;
  std::string name;
  app.add_option("--config", config_file, "mesh config file (TOML)")->required();
  app.add_option("--name", name, "name of this router node in the config")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "bidmesh-router: " << e.what() << std::endl;
    return kExitUsage;
  }

  bidmesh::MeshConfig cfg;
  try {
    cfg = bidmesh::load_mesh_config(config_file);
  } catch (const bidmesh::ConfigError& e) {
    std::cerr << "bidmesh-router: " << e.what() << std::endl;
    return kExitUsage;
  }
  const bidmesh::NodeConfig* self = cfg.find(name);
  if (self == nullptr || self->kind != bidmesh::NodeKind::router) {
    std::cerr << "bidmesh-router: " << cfg.file.string() << ": nodes: no router named '" << name << "'"
              << std::endl;
    return kExitUsage;
  }

  bidmesh::install_node_signal_handlers();
  try {
    return serve(cfg, *self);
  } catch (const zmq::error_t& e) {
    std::cerr << "bidmesh-router " << name << ": " << e.what() << std::endl;
    return kExitSystem;
  } catch (const std::exception& e) {
    std::cerr << "bidmesh-router " << name << ": " << e.what() << std::endl;
    return kExitSystem;
  }
}
