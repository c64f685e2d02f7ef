// The reliability harness: see harness.h.
#include "tests/reliability/harness.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <deque>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <thread>

#include "protocol/messages.h"
#include "supervisor/ctl_client.h"
#include "client/client.h"

namespace bidmesh::rel {

namespace fs = std::filesystem;

double ms_since(Clock::time_point t) {
  return std::chrono::duration<double, std::milli>(Clock::now() - t).count();
}

std::string program(const std::string& name) {
  std::error_code ec;
  const fs::path self = fs::read_symlink("/proc/self/exe", ec);
  return (self.parent_path() / name).string();
}

SupervisedMesh::SupervisedMesh(MeshSpec spec) : dir_("rel"), spec_(std::move(spec)) {
  request_ = free_endpoint();
  feed_ = free_endpoint();
  config_ = dir() / "mesh.toml";
  std::ofstream cfg(config_);
  cfg << spec_.extra << "\n"
      << "data_dir = \"data\"\nmap_size_mb = 256\n"
      << "stop_timeout_ms = " << spec_.stop_timeout_ms << "\n"
      << "request_timeout_ms = " << spec_.request_timeout_ms << "\n"
      // A node killed every 2 s is restarted every time: the intensity is not what is tested.
      << "restart_intensity = 1000\nrestart_period_ms = 1000\n"
      << test::mesh_nodes_toml(request_, feed_, spec_.bid_nodes, spec_.client_endpoints);
}

SupervisedMesh::~SupervisedMesh() {
  if (sup_ && sup_->running()) {
    sup_->signal(SIGTERM);
    if (!sup_->wait_exit(Ms(20000))) sup_->kill_now();
  }
  sup_.reset();
}

std::string SupervisedMesh::control() const { return "ipc://" + (dir() / "data" / "control" / "supervisor.sock").string(); }

fs::path SupervisedMesh::node_log(const std::string& node) const { return dir() / "data" / "logs" / (node + ".log"); }

std::optional<std::string> SupervisedMesh::start(Ms deadline) {
  const auto began = Clock::now();
  const std::size_t ready_before = [&] {
    const std::string out = test::read_file(supervisor_out());
    std::size_t n = 0;
    for (auto p = out.find("bidmesh: mesh ready: "); p != std::string::npos; p = out.find("bidmesh: mesh ready: ", p + 1)) ++n;
    return n;
  }();
  sup_ = std::make_unique<Child>(std::vector<std::string>{program("bidmesh-supervisor"), "--config", config_.string()},
                                 supervisor_out(), spec_.env);
  const bool ready = wait_for(
      [&] {
        const std::string out = test::read_file(supervisor_out());
        std::size_t n = 0;
        for (auto p = out.find("bidmesh: mesh ready: "); p != std::string::npos; p = out.find("bidmesh: mesh ready: ", p + 1)) ++n;
        return n > ready_before || !sup_->running();
      },
      deadline, Ms(10));
  if (!ready || !sup_->running()) return "the mesh did not become ready\n" + diagnostics();
  for (int i = 0; i < spec_.bid_nodes; ++i) {
    const auto left = deadline - std::chrono::duration_cast<Ms>(Clock::now() - began);
    if (!wait_serving(item_on_node(i, 0), std::max(left, Ms(1000))))
      return bid_node_name(i) + " does not serve through the router\n" + diagnostics();
  }
  return std::nullopt;
}

std::optional<int> SupervisedMesh::stop(Ms deadline) {
  if (!sup_) return std::nullopt;
  sup_->signal(SIGTERM);
  return sup_->wait_exit(deadline);
}

void SupervisedMesh::kill_supervisor() {
  if (sup_) sup_->kill_now();
}

bool SupervisedMesh::supervisor_running() { return sup_ && sup_->running(); }

pid_t SupervisedMesh::running_pid(const std::string& node) {
  CtlClient client(ctx_, control(), Ms(2000));
  std::string error;
  auto reply = client.call({"status", {node}}, error);
  if (!reply || !reply->ok) return 0;
  const auto* list = std::get_if<std::vector<NodeStatus>>(&reply->data);
  if (list == nullptr) return 0;
  for (const auto& s : *list) {
    if (s.name == node && s.state == "running") return static_cast<pid_t>(s.pid);
  }
  return 0;
}

std::string SupervisedMesh::item_on_node(int i, int n) const {
  return test::item_on_node("rel-", i, n, spec_.bid_nodes);
}

bool SupervisedMesh::wait_serving(const std::string& item, Ms deadline) {
  return wait_for(
      [&] {
        Client client(ctx_, request_, 300, 0);
        Request get;
        get.op = Op::get;
        get.item = item;
        auto reply = client.call(get);
        return reply && (reply->ok || reply->error == std::optional<std::string>("unknown_item"));
      },
      deadline, Ms(20));
}

std::string SupervisedMesh::diagnostics() const {
  auto tail = [](const fs::path& p, std::size_t lines) {
    std::istringstream in(test::read_file(p));
    std::deque<std::string> last;
    std::string line;
    while (std::getline(in, line)) {
      last.push_back(line);
      if (last.size() > lines) last.pop_front();
    }
    std::string out;
    for (auto& l : last) out += l + "\n";
    return out;
  };
  std::string out = "--- supervisor ---\n" + tail(supervisor_out(), 30);
  out += "--- router ---\n" + tail(node_log("router"), 10);
  for (int i = 0; i < spec_.bid_nodes; ++i) out += "--- " + bid_node_name(i) + " ---\n" + tail(node_log(bid_node_name(i)), 10);
  return out;
}

}  // namespace bidmesh::rel
