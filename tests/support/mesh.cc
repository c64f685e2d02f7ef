#include "tests/support/mesh.h"

#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <fstream>

#include <zmq.hpp>

#include "protocol/config.h"
#include "security/certificate.h"
#include "client/client.h"

namespace bidmesh::test {

Reply must_call(Client& c, const Request& r) {
  auto reply = c.call(r);
  REQUIRE(reply.has_value());
  return *reply;
}

RunResult run_program(std::vector<std::string> argv, std::chrono::milliseconds timeout) {
  TempDir dir;
  const auto out_file = dir.path() / "out";
  RunResult result;
  {
    Process p(std::move(argv), out_file);
    auto st = p.wait_exit(timeout);
    if (st && WIFEXITED(*st)) result.exit_code = WEXITSTATUS(*st);
  }
  result.out = read_file(out_file);
  return result;
}

TestMesh::TestMesh(MeshOptions options) : options_(std::move(options)) {
  request_endpoint_ = free_tcp_endpoint();
  feed_endpoint_ = free_tcp_endpoint();
  config_path_ = dir() / "mesh.toml";
  std::string security_lines;
  if (options_.curve) {
    std::filesystem::create_directories(keys_dir());
    std::filesystem::create_directories(clients_dir());
    Certificate mesh;
    const auto error = write_certificate_pair(keys_dir(), "mesh", {}, &mesh);
    INFO(error.value_or(""));
    REQUIRE_FALSE(error.has_value());
    server_public_key_ = mesh.public_key;
    admin_keys_ = add_client("admin", "auctioneer,agent,bidder");
    security_lines = "security = \"curve\"\nserver_certificate = \"keys/mesh.key_secret\"\nclients_dir = \"clients\"\n";
  }
  std::ofstream cfg(config_path_);
  cfg << options_.extra_top_level << "\n" << security_lines
      << "data_dir = \"data\"\n"
      << "request_timeout_ms = " << options_.request_timeout_ms << "\n"
      << "map_size_mb = " << options_.map_size_mb << "\n"
      << mesh_nodes_toml(request_endpoint_, feed_endpoint_, options_.bid_nodes, options_.client_listen);
  names_.push_back("router");
  for (int i = 0; i < options_.bid_nodes; ++i) names_.push_back(bid_node_name(i));
  cfg.close();
  std::filesystem::create_directories(dir() / "data" / "logs");
}

TestMesh::~TestMesh() {
  // Routers first, so nodes never see a half-closed mesh in their logs; then everything else.
  for (auto& [name, p] : processes_) p->kill_now();
}

CurveKeys TestMesh::add_client(const std::string& name, const std::string& roles) {
  Certificate written;
  std::vector<std::pair<std::string, std::string>> metadata;
  if (!roles.empty()) metadata.emplace_back("roles", roles);
  const auto error = write_certificate_pair(keys_dir(), name, metadata, &written);
  INFO(error.value_or(""));
  REQUIRE_FALSE(error.has_value());
  std::filesystem::rename(keys_dir() / (name + ".key"), clients_dir() / (name + ".key"));
  return CurveKeys{server_public_key_, written.public_key, written.secret_key};
}

std::string TestMesh::client_endpoint(int i) const {
  const MeshConfig cfg = load_mesh_config(config_path_);
  const NodeConfig* node = cfg.find(bid_node_name(i));
  REQUIRE(node != nullptr);
  REQUIRE_FALSE(node->client_listen.empty());
  return node->client_listen;
}

std::filesystem::path TestMesh::log_file(const std::string& node) const { return dir() / "data" / "logs" / (node + ".log"); }

void TestMesh::start_node(const std::string& name) {
  const std::string program = name == "router" ? "bidmesh-router" : "bidmesh-bid-node";
  processes_[name] = std::make_unique<Process>(
      std::vector<std::string>{program_path(program), "--config", config_path_.string(), "--name", name}, log_file(name));
}

void TestMesh::start_all(std::chrono::milliseconds deadline) {
  for (const auto& name : names_) start_node(name);
  for (int i = 0; i < options_.bid_nodes; ++i) {
    const bool serving = wait_node_serving(i, deadline);
    INFO("bid node " << bid_node_name(i) << " not serving:\n" << log_tail(bid_node_name(i)) << log_tail("router"));
    REQUIRE(serving);
  }
}

void TestMesh::stop_node(const std::string& name, int sig) {
  Process* p = process(name);
  if (p == nullptr) return;
  p->signal(sig);
  if (!p->wait_exit(std::chrono::seconds(10))) p->kill_now();
}

void TestMesh::kill_node(const std::string& name) {
  if (Process* p = process(name)) p->kill_now();
}

Process* TestMesh::process(const std::string& name) {
  auto it = processes_.find(name);
  return it == processes_.end() ? nullptr : it->second.get();
}

std::string TestMesh::item_on_node(int i, int n) const {
  return test::item_on_node("item-", i, n, options_.bid_nodes);
}

bool TestMesh::wait_node_serving(int i, std::chrono::milliseconds deadline) {
  zmq::context_t ctx;
  const std::string item = item_on_node(i, 0);
  return wait_until(
      [&] {
        Client client(ctx, request_endpoint_, 300, 0, {}, admin_keys_);
        Request get;
        get.op = Op::get;
        get.item = item;
        auto reply = client.call(get);
        return reply && (reply->ok || reply->error == std::optional<std::string>("unknown_item"));
      },
      deadline, std::chrono::milliseconds(20));
}

std::string TestMesh::log_tail(const std::string& node) const {
  std::ifstream in(log_file(node));
  std::deque<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    lines.push_back(line);
    if (lines.size() > 20) lines.pop_front();
  }
  std::string out = "--- " + node + " log ---\n";
  for (auto& l : lines) out += l + "\n";
  return out;
}

}  // namespace bidmesh::test
