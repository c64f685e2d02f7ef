#include "tests/support/mesh.h"

#include <catch2/catch.hpp>

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdlib>
#include <fstream>
#include <random>
#include <sstream>

#include <zmq.hpp>

#include "protocol/slot_map.h"
#include "tools/client.h"

namespace bidmesh::test {

TempDir::TempDir() {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/bidmesh-test-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

uint16_t free_tcp_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  addr.sin_port = 0;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
    ::close(fd);
    throw std::runtime_error("cannot bind a loopback port");
  }
  socklen_t len = sizeof addr;
  ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len);
  ::close(fd);
  return ntohs(addr.sin_port);
}

std::string free_tcp_endpoint() { return "tcp://127.0.0.1:" + std::to_string(free_tcp_port()); }

std::string program_path(const std::string& name) { return std::string(BIDMESH_BIN_DIR) + "/" + name; }

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline, std::chrono::milliseconds step) {
  const auto end = std::chrono::steady_clock::now() + deadline;
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= end) return cond();
    std::this_thread::sleep_for(step);
  }
}

Process::Process(std::vector<std::string> argv, const std::filesystem::path& log_file,
                 const std::map<std::string, std::string>& extra_env) {
  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    setpgid(0, 0);
    const int fd = ::open(log_file.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      ::close(fd);
    }
    for (const auto& [k, v] : extra_env) setenv(k.c_str(), v.c_str(), 1);
    std::vector<char*> args;
    for (auto& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    execv(args[0], args.data());
    _exit(127);
  }
  setpgid(pid_, pid_);
}

Process::~Process() { kill_now(); }

bool Process::running() {
  if (status_) return false;
  int st = 0;
  const pid_t r = waitpid(pid_, &st, WNOHANG);
  if (r == pid_) {
    status_ = st;
    return false;
  }
  return r == 0;
}

void Process::signal(int sig) {
  if (running()) ::kill(pid_, sig);
}

std::optional<int> Process::wait_exit(std::chrono::milliseconds deadline) {
  wait_until([&] { return !running(); }, deadline, std::chrono::milliseconds(5));
  return status_;
}

void Process::kill_now() {
  if (pid_ <= 0 || status_) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  int st = 0;
  if (waitpid(pid_, &st, 0) == pid_) status_ = st;
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
  std::ifstream in(out_file);
  std::stringstream ss;
  ss << in.rdbuf();
  result.out = ss.str();
  return result;
}

TestMesh::TestMesh(MeshOptions options) : options_(std::move(options)) {
  request_endpoint_ = free_tcp_endpoint();
  feed_endpoint_ = free_tcp_endpoint();
  config_path_ = dir() / "mesh.toml";
  std::ofstream cfg(config_path_);
  cfg << options_.extra_top_level << "\n"
      << "data_dir = \"data\"\n"
      << "request_timeout_ms = " << options_.request_timeout_ms << "\n"
      << "map_size_mb = " << options_.map_size_mb << "\n"
      << "[feed]\npublish = \"" << feed_endpoint_ << "\"\ncollect = \"" << free_tcp_endpoint() << "\"\n"
      << "[[node]]\nname = \"router\"\nkind = \"router\"\nlisten = \"" << request_endpoint_ << "\"\nfeed = true\n";
  names_.push_back("router");
  const uint32_t per = kSlotCount / static_cast<uint32_t>(options_.bid_nodes);
  for (int i = 0; i < options_.bid_nodes; ++i) {
    const uint32_t first = per * static_cast<uint32_t>(i);
    const uint32_t last = i + 1 == options_.bid_nodes ? kSlotCount - 1 : first + per - 1;
    cfg << "[[node]]\nname = \"" << bid_node_name(i) << "\"\nkind = \"bid\"\nlisten = \"" << free_tcp_endpoint()
        << "\"\nslots = [\"" << first << "-" << last << "\"]\n";
    names_.push_back(bid_node_name(i));
  }
  cfg.close();
  std::filesystem::create_directories(dir() / "data" / "logs");
}

TestMesh::~TestMesh() {
  // Routers first, so nodes never see a half-closed mesh in their logs; then everything else.
  for (auto& [name, p] : processes_) p->kill_now();
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
  const uint32_t per = kSlotCount / static_cast<uint32_t>(options_.bid_nodes);
  int found = 0;
  for (int k = 0;; ++k) {
    std::string item = "item-" + std::to_string(k);
    uint32_t owner = std::min<uint32_t>(slot_of(item) / per, static_cast<uint32_t>(options_.bid_nodes - 1));
    if (owner == static_cast<uint32_t>(i) && found++ == n) return item;
  }
}

bool TestMesh::wait_node_serving(int i, std::chrono::milliseconds deadline) {
  zmq::context_t ctx;
  const std::string item = item_on_node(i, 0);
  return wait_until(
      [&] {
        Client client(ctx, request_endpoint_, 300, 0);
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
