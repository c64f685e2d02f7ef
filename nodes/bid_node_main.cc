// bidmesh-bid-node --config FILE --name NAME: one bid node of the mesh (see nodes/bid_node.h).
// Exit codes (as every bidmesh program): 0 clean stop, 100 usage or config error, 111 system
// failure (cannot bind, cannot open LMDB, ZeroMQ failure); the reason is one line on stderr.
#include <exception>
#include <iostream>
#include <string>

#include <unistd.h>

#include <CLI/CLI.hpp>

#include "nodes/bid_node.h"
#include "nodes/process.h"
#include "protocol/config.h"
#include "protocol/log.h"

int main(int argc, char** argv) {
  CLI::App app{"bidmesh bid node: owns the items of its slots in LMDB and serves the routers"};
  std::string config_file;
  std::string name;
  app.add_option("--config", config_file, "the mesh config file (TOML)")->required();
  app.add_option("--name", name, "this node's name in the config")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 100;
  }

  bidmesh::MeshConfig cfg;
  try {
    cfg = bidmesh::load_mesh_config(config_file);
  } catch (const bidmesh::ConfigError& e) {
    std::cerr << e.what() << std::endl;
    return 100;
  }
  const bidmesh::NodeConfig* node = cfg.find(name);
  if (node == nullptr || node->kind != bidmesh::NodeKind::bid) {
    std::cerr << cfg.file.string() << ": nodes: no bid node named '" << name << "'" << std::endl;
    return 100;
  }

  bidmesh::set_log_identity(name, cfg.log_format);
  bidmesh::log_info("start", "starting: pid " + std::to_string(::getpid()) + ", config " + cfg.file.string(),
                    {{"pid", ::getpid()}, {"config", cfg.file.string()}});
  try {
    bidmesh::install_node_signal_handlers();
    bidmesh::BidNode bid_node(cfg, *node);
    if (auto err = bid_node.start()) {
      bidmesh::log_event(bidmesh::LogLevel::error, "stop", "cannot start: " + *err, {{"exit_code", 111}});
      return 111;
    }
    return bid_node.serve();
  } catch (const std::exception& e) {
    bidmesh::log_event(bidmesh::LogLevel::error, "stop", std::string("stopping: ") + e.what(), {{"exit_code", 111}});
    return 111;
  }
}
