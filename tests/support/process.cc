#include "tests/support/process.h"

#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <fstream>
#include <mutex>
#include <random>
#include <set>
#include <stdexcept>
#include <sstream>
#include <thread>

#include "protocol/slot_map.h"

namespace bidmesh::test {

TempDir::TempDir(const std::string& tag) {
  const char* tmp = std::getenv("TMPDIR");
  std::string tmpl = std::string(tmp && *tmp ? tmp : "/tmp") + "/bidmesh-" + tag + "-XXXXXX";
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (mkdtemp(buf.data()) == nullptr) throw std::runtime_error("mkdtemp failed");
  path_ = buf.data();
}

TempDir::~TempDir() {
  if (keep_) return;
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

// Ports are drawn below the kernel's ephemeral range (32768-60999 by default): a port taken from
// that range can be grabbed, before the mesh binds it, as the source port of some outgoing
// connection (the router's to a bid node, say), and the bind then fails.
uint16_t free_tcp_port() {
  // Never the same port twice in one process: a port that is free now is free again until the
  // mesh it was drawn for binds it, so two draws for one config could otherwise collide.
  static std::mutex mu;
  static std::set<uint16_t> handed_out;
  static std::mt19937 rng(std::random_device{}() ^ static_cast<unsigned>(getpid()));
  std::lock_guard<std::mutex> lock(mu);
  std::uniform_int_distribution<int> pick(20000, 32000);
  for (int attempt = 0; attempt < 1000; ++attempt) {
    const auto port = static_cast<uint16_t>(pick(rng));
    if (handed_out.count(port) != 0) continue;
    const int fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) throw std::runtime_error("socket() failed");
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(port);
    const bool bound = ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
    ::close(fd);
    if (bound) {
      handed_out.insert(port);
      return port;
    }
  }
  throw std::runtime_error("no free loopback port in 20000-32000");
}

std::string free_tcp_endpoint() { return "tcp://127.0.0.1:" + std::to_string(free_tcp_port()); }

std::string bid_node_name(int i) { return "bid-" + std::to_string(i + 1); }

namespace {
// Slots per bid node; node i owns [i * per, i * per + per - 1], the last one up to the end.
uint32_t slots_per_node(int bid_nodes) { return kSlotCount / static_cast<uint32_t>(bid_nodes); }
}  // namespace

std::string mesh_nodes_toml(const std::string& request_endpoint, const std::string& feed_endpoint, int bid_nodes,
                            bool client_endpoints) {
  std::ostringstream t;
  t << "[feed]\npublish = \"" << feed_endpoint << "\"\ncollect = \"" << free_tcp_endpoint() << "\"\n"
    << "[[node]]\nname = \"router\"\nkind = \"router\"\nlisten = \"" << request_endpoint << "\"\nfeed = true\n";
  const uint32_t per = slots_per_node(bid_nodes);
  for (int i = 0; i < bid_nodes; ++i) {
    const uint32_t first = per * static_cast<uint32_t>(i);
    const uint32_t last = i + 1 == bid_nodes ? kSlotCount - 1 : first + per - 1;
    t << "[[node]]\nname = \"" << bid_node_name(i) << "\"\nkind = \"bid\"\nlisten = \"" << free_tcp_endpoint()
      << "\"\nslots = [\"" << first << "-" << last << "\"]\n";
    if (client_endpoints) t << "client_listen = \"" << free_tcp_endpoint() << "\"\n";
  }
  return t.str();
}

std::string item_on_node(const std::string& prefix, int i, int n, int bid_nodes) {
  const uint32_t per = slots_per_node(bid_nodes);
  int found = 0;
  for (int k = 0; k < 10000000; ++k) {
    std::string item = prefix + std::to_string(k);
    const uint32_t owner = std::min<uint32_t>(slot_of(item) / per, static_cast<uint32_t>(bid_nodes - 1));
    if (owner == static_cast<uint32_t>(i) && found++ == n) return item;
  }
  throw std::runtime_error("no item of bid node " + std::to_string(i) + " among 10M names");
}

std::string read_file(const std::filesystem::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

std::string program_path(const std::string& name) { return std::string(BIDMESH_BIN_DIR) + "/" + name; }

double time_scale() {
  static const double scale = [] {
    const char* v = std::getenv("BIDMESH_TEST_TIME_SCALE");
    if (v == nullptr) return 1.0;
    char* end = nullptr;
    const double d = std::strtod(v, &end);
    return end != v && *end == '\0' && d >= 1.0 && d <= 100.0 ? d : 1.0;
  }();
  return scale;
}

std::chrono::milliseconds scaled(std::chrono::milliseconds d) {
  return std::chrono::milliseconds(static_cast<int64_t>(static_cast<double>(d.count()) * time_scale()));
}

bool wait_until(const std::function<bool()>& cond, std::chrono::milliseconds deadline, std::chrono::milliseconds step) {
  const auto end = std::chrono::steady_clock::now() + scaled(deadline);
  while (true) {
    if (cond()) return true;
    if (std::chrono::steady_clock::now() >= end) return cond();
    std::this_thread::sleep_for(step);
  }
}

Process::Process(std::vector<std::string> argv, const std::filesystem::path& log_file,
                 const std::map<std::string, std::string>& extra_env) {
  // Everything the child needs is built before fork: the tests have other threads (ZeroMQ's),
  // so between fork and exec the child may only make async-signal-safe calls (no malloc).
  std::vector<char*> args;
  for (auto& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  std::vector<std::string> env;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string_view kv(*e);
    if (extra_env.count(std::string(kv.substr(0, kv.find('=')))) == 0) env.emplace_back(kv);
  }
  for (const auto& [k, v] : extra_env) env.push_back(k + "=" + v);
  std::vector<char*> envp;
  for (auto& e : env) envp.push_back(e.data());
  envp.push_back(nullptr);
  const std::string log_path = log_file.string();

  pid_ = fork();
  if (pid_ < 0) throw std::runtime_error("fork failed");
  if (pid_ == 0) {
    setpgid(0, 0);
    const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      ::close(fd);
    }
    execve(args[0], args.data(), envp.data());
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
  wait_until([&] { return !running(); }, deadline, std::chrono::milliseconds(2));
  return status_;
}

void Process::kill_now() {
  if (pid_ <= 0 || status_) return;
  ::kill(-pid_, SIGKILL);
  ::kill(pid_, SIGKILL);
  int st = 0;
  if (waitpid(pid_, &st, 0) == pid_) status_ = st;
}

EnvGuard::EnvGuard(const char* name, const std::string& value) : name_(name) { ::setenv(name, value.c_str(), 1); }
EnvGuard::~EnvGuard() { ::unsetenv(name_); }

}  // namespace bidmesh::test
