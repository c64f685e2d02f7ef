// bidmesh-supervisor: runs the nodes of one host of a mesh config (docs/supervisor.md).
//   bidmesh-supervisor --config FILE [--host NAME] [--bid-node-bin PATH] [--router-bin PATH]
// Exit codes: 0 after a shutdown (SIGTERM, SIGINT or `bidmesh-ctl shutdown`), 100 bad usage, a
// config that does not load, or (security = "curve") a server certificate or clients_dir that
// cannot be read, 111 system failure (control endpoint, another supervisor).
#include <climits>
#include <cstdio>
#include <filesystem>
#include <string>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "protocol/config.h"
#include "protocol/log.h"
#include "supervisor/supervisor.h"

namespace {

std::filesystem::path self_dir() {
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::filesystem::current_path() : exe.parent_path();
}

std::string host_name() {
  char buf[HOST_NAME_MAX + 1] = {};
  if (::gethostname(buf, sizeof buf - 1) != 0) return "";
  return buf;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-supervisor: launches, watches and restarts the nodes of a bidmesh mesh config"};
  std::string config;
  std::string host = host_name();
  std::string bid_bin = (self_dir() / "bidmesh-bid-node").string();
  std::string router_bin = (self_dir() / "bidmesh-router").string();
  app.add_option("--config", config, "mesh config file (TOML)")->required();
  app.add_option("--host", host, "run the nodes whose host is this name or empty")->capture_default_str();
  app.add_option("--bid-node-bin", bid_bin, "bid node program")->capture_default_str();
  app.add_option("--router-bin", router_bin, "router program")->capture_default_str();
  std::string gateway_bin = (self_dir() / "bidmesh-gateway").string();
  app.add_option("--gateway-bin", gateway_bin, "web gateway program")->capture_default_str();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? 0 : 100;
  }

  bidmesh::MeshConfig cfg;
  try {
    cfg = bidmesh::load_mesh_config(config);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bidmesh-supervisor: %s\n", e.what());
    return 100;
  }
  // Keys that would stop every router are refused here, as a config error.
  if (const auto error = bidmesh::check_security_files(cfg)) {
    std::fprintf(stderr, "bidmesh-supervisor: %s\n", error->c_str());
    return 100;
  }
  bidmesh::set_log_identity("bidmesh-supervisor", cfg.log_format);
  bidmesh::SupervisorOptions options;
  options.config_file = cfg.file;
  options.host = host;
  options.bid_node_bin = std::filesystem::absolute(bid_bin);
  options.router_bin = std::filesystem::absolute(router_bin);
  options.gateway_bin = std::filesystem::absolute(gateway_bin);
  try {
    bidmesh::Supervisor supervisor(options, std::move(cfg));
    return supervisor.run();
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bidmesh-supervisor: %s\n", e.what());
    return 111;
  }
}
