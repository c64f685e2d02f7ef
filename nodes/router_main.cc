// bidmesh-router: the client endpoint of the mesh, and (when its node has `feed = true`) the
// feed forwarder.
//
//   bidmesh-router --config FILE --name NAME
//
// Exit codes (as every bidmesh program): 0 after a clean stop (SIGTERM/SIGINT: requests in
// flight are answered or time out first), 100 for a bad command line or config, 111 for a
// system failure (an endpoint cannot be bound, the feed forwarder failed). Every failure is one
// line on stderr.
#include <exception>
#include <iostream>
#include <optional>
#include <string>

#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include "nodes/feed.h"
#include "nodes/process.h"
#include "nodes/router.h"
#include "protocol/config.h"

namespace {

constexpr int kExitUsage = 100;
constexpr int kExitSystem = 111;

int serve(const bidmesh::MeshConfig& cfg, const bidmesh::NodeConfig& self) {
  const std::string who = "bidmesh-router " + self.name + ": ";
  // Declared first, so every socket below is closed before the context terminates.
  zmq::context_t ctx(1);

  bidmesh::Router router(ctx, cfg, self);
  if (auto error = router.bind()) {
    std::cerr << who << *error << std::endl;
    return kExitSystem;
  }
  std::optional<bidmesh::FeedForwarder> feed;
  if (self.feed) {
    feed.emplace(ctx, cfg.feed_collect, cfg.feed_publish);
    if (auto error = feed->start()) {
      std::cerr << who << *error << std::endl;
      return kExitSystem;
    }
  }

  bidmesh::SupervisorLink link(ctx, self.name);
  link.ready();
  std::cerr << who << "serving clients on " << router.client_endpoint() << ", "
            << cfg.bid_nodes().size() << " bid node(s), timeout " << cfg.request_timeout_ms << " ms";
  if (feed) std::cerr << "; feed " << cfg.feed_collect << " -> " << cfg.feed_publish;
  std::cerr << std::endl;

  router.run(link, [&feed] { return bidmesh::stop_requested() || (feed && feed->failed()); });

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
