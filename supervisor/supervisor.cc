#include "supervisor/supervisor.h"

#include <algorithm>
#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "protocol/control.h"
#include "protocol/log.h"
#include "security/certificate.h"
#include "supervisor/spawn.h"

namespace bidmesh {

namespace fs = std::filesystem;
using std::chrono::duration_cast;

namespace {

// ASan and TSan reserve terabytes of address space for their shadow memory when a process
// starts, and RLIMIT_DATA counts it: a sanitized router under router_memory_mb could not even
// start. A sanitizer build (tools/sanitize) runs its routers without the limit, and says so.
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
constexpr bool kRouterMemoryLimitUsable = false;
#else
constexpr bool kRouterMemoryLimitUsable = true;
#endif

// Signal handlers only set a flag and wake the loop through the self-pipe.
volatile std::sig_atomic_t g_shutdown = 0;
volatile std::sig_atomic_t g_reload = 0;
int g_wake_fd = -1;

void on_signal(int sig) {
  const int saved = errno;
  if (sig == SIGTERM || sig == SIGINT) g_shutdown = 1;
  if (sig == SIGHUP) g_reload = 1;
  if (g_wake_fd >= 0) {
    const char b = 0;
    (void)!::write(g_wake_fd, &b, 1);
  }
  errno = saved;
}

int g_wake_read_fd = -1;

bool install_signals(std::string& error) {
  int fds[2];
  if (::pipe2(fds, O_CLOEXEC | O_NONBLOCK) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    return false;
  }
  g_wake_read_fd = fds[0];
  g_wake_fd = fds[1];
  struct sigaction sa {};
  sa.sa_handler = on_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART;
  for (int sig : {SIGTERM, SIGINT, SIGHUP, SIGCHLD}) sigaction(sig, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  return true;
}

void drain_wake_pipe() {
  char buf[256];
  while (::read(g_wake_read_fd, buf, sizeof buf) > 0) {
  }
}

// sd_notify(3) without libsystemd: one datagram to $NOTIFY_SOCKET ("@..." is abstract).
void notify_systemd(const std::string& message) {
  const char* path = std::getenv("NOTIFY_SOCKET");
  if (path == nullptr || (path[0] != '/' && path[0] != '@')) return;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  const std::size_t len = std::strlen(path);
  if (len >= sizeof addr.sun_path) return;
  std::memcpy(addr.sun_path, path, len);
  if (path[0] == '@') addr.sun_path[0] = '\0';
  const int fd = ::socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return;
  (void)::sendto(fd, message.data(), message.size(), MSG_NOSIGNAL, reinterpret_cast<sockaddr*>(&addr),
                 static_cast<socklen_t>(offsetof(sockaddr_un, sun_path) + len));
  ::close(fd);
}

// The supervisor's own event lines (its stderr: the journal under systemd).
void say(std::string_view event, const std::string& line, LogFields fields = {}, LogLevel level = LogLevel::info) {
  log_event(level, event, line, fields);
}

CtlReply refuse(std::string message) { return CtlReply{false, std::move(message), {}}; }
CtlReply accept(std::string message) { return CtlReply{true, std::move(message), {}}; }

std::string slots_text(const std::vector<SlotRange>& slots) {
  std::string s;
  for (const auto& r : slots) s += std::to_string(r.first) + "-" + std::to_string(r.last) + ",";
  return s;
}

}  // namespace

bool node_runs_on(const NodeConfig& node, const std::string& host) { return node.host.empty() || node.host == host; }

std::string node_fingerprint(const MeshConfig& cfg, const NodeConfig& n) {
  std::string f;
  auto add = [&](std::string_view k, const std::string& v) {
    f += k;
    f += '=';
    f += v;
    f += ';';
  };
  add("kind", std::string(node_kind_name(n.kind)));
  add("host", n.host);
  add("listen", n.listen);
  add("client_listen", n.client_listen);  // bound at start, like listen
  add("feed_publish", cfg.feed_publish);
  add("feed_collect", cfg.feed_collect);
  add("heartbeat_interval_ms", std::to_string(cfg.heartbeat_interval_ms));
  add("max_request_bytes", std::to_string(cfg.max_request_bytes));
  add("security", std::string(security_name(cfg.security)));
  add("server_certificate", cfg.server_certificate.string());
  add("metrics", n.metrics);  // read at start only: a new address needs a new process
  if (n.kind == NodeKind::gateway) {
    const auto& g = n.gateway;  // every key is read at start
    add("gateway", g.users_file.string() + "|" + g.web_root.string() + "|" + g.client_certificate.string() + "|" +
                       g.router + "|" + std::to_string(g.max_connections) + "|" + (g.https ? "1" : "0"));
    for (const auto& o : g.allowed_origins) add("origin", o);
    for (const NodeConfig* r : cfg.routers()) add("router:" + r->name, r->listen);
    add("clients_dir", cfg.clients_dir.string());
  } else if (n.kind == NodeKind::bid) {
    add("slots", slots_text(n.slots));
    add("map_size", std::to_string(n.map_size_bytes != 0 ? n.map_size_bytes : cfg.default_map_size_bytes));
    add("unsafe_no_sync", n.unsafe_no_sync ? "1" : "0");
    add("batch_max", std::to_string(cfg.batch_max));
    // Its client endpoint answers `slots` and `moved` from the whole map, read at start.
    if (!n.client_listen.empty())
      for (const NodeConfig* b : cfg.bid_nodes()) add("map " + b->name, slots_text(b->slots) + b->client_listen);
  } else {
    add("feed", n.feed ? "1" : "0");
    add("request_timeout_ms", std::to_string(cfg.request_timeout_ms));
    add("router_memory_mb", std::to_string(cfg.router_memory_mb));
    add("clients_dir", cfg.clients_dir.string());
    add("feed_public", cfg.feed_public ? "1" : "0");
    for (const NodeConfig* b : cfg.bid_nodes()) add("bid:" + b->name, b->listen + "@" + slots_text(b->slots));
  }
  return f;
}

std::optional<std::string> check_security_files(const MeshConfig& cfg) {
  if (cfg.security != Security::curve) return std::nullopt;
  const std::string file = cfg.file.string();
  auto certificate = read_secret_certificate(cfg.server_certificate);
  if (const auto* error = std::get_if<std::string>(&certificate)) return file + ": server_certificate: " + *error;
  // Listing it is what a router does on every SIGHUP.
  std::error_code ec;
  fs::directory_iterator it(cfg.clients_dir, ec);
  if (ec) return file + ": clients_dir: " + cfg.clients_dir.string() + ": " + ec.message();
  return std::nullopt;
}

Supervisor::Supervisor(SupervisorOptions options, MeshConfig config)
    : options_(std::move(options)),
      cfg_(std::move(config)),
      params_(MachineParams::from_config(cfg_)),
      own_uid_(::geteuid()),
      node_metrics_(metrics_.registry(), [] {
        std::vector<std::string> states;
        for (NodeState s : {NodeState::starting, NodeState::running, NodeState::backoff, NodeState::stopping,
                            NodeState::stopped, NodeState::failed})
          states.emplace_back(node_state_name(s));
        return states;
      }()) {}

Supervisor::~Supervisor() {
  // Normally every node has exited by now; after a failure in setup, make sure none is left.
  for (auto& n : nodes_) {
    if (n->machine->pid() > 0) {
      ::kill(-n->machine->pid(), SIGKILL);
      ::waitpid(n->machine->pid(), nullptr, 0);
    }
    if (n->out_fd >= 0) ::close(n->out_fd);
  }
  if (control_) control_->close();
  if (lock_fd_ >= 0) ::close(lock_fd_);
}

bool Supervisor::setup(std::string& error) {
  if (!install_signals(error)) return false;
  const std::string prefix = "ipc://";
  if (cfg_.control.rfind(prefix, 0) == 0) {
    const fs::path sock = cfg_.control.substr(prefix.size());
    const fs::path dir = sock.parent_path();
    std::error_code ec;
    fs::create_directories(dir, ec);
    if (ec) {
      error = dir.string() + ": " + ec.message();
      return false;
    }
    if (::chmod(dir.c_str(), 0700) != 0) {
      error = dir.string() + ": chmod: " + std::strerror(errno);
      return false;
    }
    // One supervisor per data directory: binding an ipc endpoint would silently take the
    // socket of a running one away.
    const fs::path lock = dir / "supervisor.lock";
    lock_fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lock_fd_ < 0) {
      error = lock.string() + ": " + std::strerror(errno);
      return false;
    }
    if (::flock(lock_fd_, LOCK_EX | LOCK_NB) != 0) {
      error = "another supervisor runs on " + cfg_.data_dir.string() + " (" + lock.string() + " is locked)";
      return false;
    }
  }
  try {
    control_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::router);
    control_->set(zmq::sockopt::linger, 0);
    control_->set(zmq::sockopt::router_handover, 1);  // a restarted node takes its name over
    control_->set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxControlFrameBytes));
    control_->bind(cfg_.control);
  } catch (const zmq::error_t& e) {
    error = "cannot bind the control endpoint " + cfg_.control + ": " + e.what();
    return false;
  }
  const char* wd = std::getenv("WATCHDOG_USEC");
  const char* wd_pid = std::getenv("WATCHDOG_PID");
  if (wd != nullptr && (wd_pid == nullptr || std::atol(wd_pid) == ::getpid())) {
    const long long usec = std::atoll(wd);
    if (usec > 0) watchdog_every_ = std::chrono::microseconds(usec / 2);
  }
  return true;
}

int Supervisor::run() {
  std::string error;
  if (!setup(error)) {
    say("stop", error, {{"exit_code", 111}}, LogLevel::error);
    return 111;
  }
  for (const NodeConfig& n : cfg_.nodes) {
    if (node_runs_on(n, options_.host)) add_node(n);
  }
  // A metrics port that cannot be bound costs the metrics, not the mesh.
  if (!cfg_.supervisor_metrics.empty()) {
    if (auto err = metrics_.serve(cfg_.supervisor_metrics)) say("metrics", *err + "; supervising without metrics", {}, LogLevel::warning);
    else say("metrics", "metrics on " + cfg_.supervisor_metrics);
  }
  say("start", "supervising " + std::to_string(nodes_.size()) + " node(s) of " + cfg_.file.string() + " (host \"" +
      options_.host + "\"), control " + cfg_.control);
  start_all();
  log_transitions();
  while (!exit_now_) turn();
  say("stop", "all nodes stopped; exiting", {{"exit_code", 0}});
  return 0;
}

void Supervisor::add_node(const NodeConfig& cfg) {
  auto n = std::make_unique<Node>();
  n->cfg = cfg;
  n->machine = std::make_unique<NodeMachine>(cfg.name, cfg.restart, params_, static_cast<ProcessOps&>(*this));
  n->log = std::make_unique<RotatingLog>(cfg_.node_log_file(cfg.name), cfg_.log_max_bytes, cfg_.log_keep);
  node_metrics_.add_node(cfg.name);
  nodes_.push_back(std::move(n));
}

void Supervisor::start_all() {
  const auto now = std::chrono::steady_clock::now();
  for (auto& n : nodes_) {
    if (n->removed) continue;
    if (n->cfg.kind == NodeKind::bid) n->machine->start(now, false);
  }
  for (auto& n : nodes_) {
    if (n->removed) continue;
    if (n->cfg.kind == NodeKind::router) n->machine->start(now, true);
  }
  for (auto& n : nodes_) {  // gateways are the mesh's clients: after the routers
    if (n->removed) continue;
    if (n->cfg.kind == NodeKind::gateway) n->machine->start(now, true);
  }
}

Supervisor::Node* Supervisor::find(std::string_view name) {
  for (auto& n : nodes_) {
    if (n->cfg.name == name && !n->removed) return n.get();
  }
  return nullptr;
}

pid_t Supervisor::spawn(std::string_view name, std::string& error) {
  Node* n = nullptr;
  for (auto& c : nodes_) {
    if (c->cfg.name == name) n = c.get();
  }
  if (n == nullptr) {
    error = "unknown node";
    return -1;
  }
  close_output(*n);  // what is left of the previous run's output
  SpawnSpec spec;
  spec.path = (n->cfg.kind == NodeKind::router    ? options_.router_bin
               : n->cfg.kind == NodeKind::gateway ? options_.gateway_bin
                                                  : options_.bid_node_bin).string();
  spec.argv = {spec.path, "--config", cfg_.file.string(), "--name", n->cfg.name};
  if (n->cfg.kind == NodeKind::router && kRouterMemoryLimitUsable) {
    spec.max_data_bytes = uint64_t{cfg_.router_memory_mb} << 20;
  }
  spec.env = make_child_env({"NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "LISTEN_FDS", "LISTEN_PID"},
                            {std::string(kEnvSupervisorEndpoint) + "=" + cfg_.control,
                             std::string(kEnvNodeName) + "=" + n->cfg.name,
                             std::string(kEnvHeartbeatMs) + "=" + std::to_string(cfg_.heartbeat_interval_ms)});
  auto child = spawn_process(spec, error);
  if (!child) {
    note(*n, "launch_failed", "cannot launch " + spec.path + ": " + error);
    return -1;
  }
  n->out_fd = child->out_fd;
  note(*n, "launch", "launched pid " + std::to_string(child->pid) + ": " + spec.path + " --config " + cfg_.file.string() +
               " --name " + n->cfg.name +
               (spec.max_data_bytes != 0 ? " (RLIMIT_DATA " + std::to_string(cfg_.router_memory_mb) + " MiB)" : "") +
               (n->cfg.kind == NodeKind::router && !kRouterMemoryLimitUsable ? " (no RLIMIT_DATA: sanitizer build)" : ""));
  return child->pid;
}

void Supervisor::signal(pid_t pid, int sig) {
  if (pid <= 0) return;
  // The node leads its own process group: signal the group, so anything it started goes too.
  if (::kill(-pid, sig) != 0) ::kill(pid, sig);
}

void Supervisor::note(Node& n, std::string_view event, const std::string& line) {
  // In json, `node` is the node whose log this is (what a log shipper files it under) and
  // `source` says the supervisor wrote it; in text the writer's name comes first, as before.
  const LogFormat format = current_log_format();
  n.log->append(format == LogFormat::json
                    ? format_log_line(format, n.cfg.name, LogLevel::info, event, line, {{"source", "supervisor"}})
                    : format_log_line(format, "bidmesh-supervisor", LogLevel::info, event, line));
}

void Supervisor::read_output(Node& n, bool until_eof) {
  if (n.out_fd < 0) return;
  char buf[64 * 1024];
  for (int rounds = 0; until_eof || rounds < 4; ++rounds) {
    const ssize_t r = ::read(n.out_fd, buf, sizeof buf);
    if (r > 0) {
      if (!n.log->append(std::string_view(buf, static_cast<std::size_t>(r)))) {
        say("log_failed", n.cfg.name + ": log: " + n.log->last_error(), {{"subject", n.cfg.name}}, LogLevel::error);
      }
      continue;
    }
    if (r < 0 && errno == EINTR) continue;
    if (r == 0) {  // every writer is gone
      ::close(n.out_fd);
      n.out_fd = -1;
    }
    return;  // EAGAIN: nothing more now
  }
}

void Supervisor::close_output(Node& n) {
  if (n.out_fd < 0) return;
  read_output(n, true);
  if (n.out_fd >= 0) {
    ::close(n.out_fd);
    n.out_fd = -1;
  }
}

void Supervisor::reap_children() {
  const auto now = std::chrono::steady_clock::now();
  while (true) {
    int status = 0;
    const pid_t pid = ::waitpid(-1, &status, WNOHANG);
    if (pid <= 0) return;
    ExitInfo info;
    if (WIFSIGNALED(status)) {
      info.signaled = true;
      info.value = WTERMSIG(status);
    } else {
      info.value = WEXITSTATUS(status);
    }
    for (auto& n : nodes_) {
      if (n->machine->pid() != pid) continue;
      // The node is gone, so everything it wrote is in the pipe already.
      close_output(*n);
      note(*n, "exit", "pid " + std::to_string(pid) + " ended: " + info.describe());
      n->machine->on_exit(pid, info, now);
      break;
    }
  }
}

void Supervisor::handle_control() {
  const auto now = std::chrono::steady_clock::now();
  for (int i = 0; i < 1000; ++i) {
    std::vector<zmq::message_t> frames;
    zmq::message_t msg;
    if (!control_->recv(msg, zmq::recv_flags::dontwait)) return;
    frames.push_back(std::move(msg));
    while (frames.back().more()) {
      zmq::message_t part;
      if (!control_->recv(part, zmq::recv_flags::none)) break;
      frames.push_back(std::move(part));
    }
    if (frames.size() != 2) continue;  // [routing id, body] from a DEALER; anything else is noise
    // Who sent it, before a byte of it is decoded.
    std::optional<PeerCredentials> peer;
    try {
      peer = parse_peer_credentials(frames[1].gets("Peer-Address"));
    } catch (const zmq::error_t&) {
      // no such property: the credentials are unknown, and control_refusal refuses
    }
    if (auto refusal = control_refusal(peer, own_uid_)) {
      if (refused_uids_.insert(peer ? peer->uid : UINT32_MAX).second) say("control_refused", *refusal + " (logged once per uid)", {}, LogLevel::warning);
      send_reply(frames[0], refuse(*refusal));
      continue;
    }
    const auto decoded = decode_control_frame(frames[1].to_string_view());
    if (!decoded) {
      send_reply(frames[0], refuse("malformed control frame"));
      continue;
    }
    if (const auto* m = std::get_if<NodeMessage>(&*decoded)) {
      Node* n = find(m->name);
      if (n == nullptr) {
        for (auto& c : nodes_) {
          if (c->cfg.name == m->name) n = c.get();  // removed but still stopping
        }
      }
      if (n == nullptr || m->pid == 0 || m->pid > static_cast<uint64_t>(INT32_MAX)) continue;
      const auto pid = static_cast<pid_t>(m->pid);
      // Twice a second per node, nearly always the same note: compared, copied only on a change.
      if (n->note != m->note) n->note = m->note;
      n->note_pid = pid;
      if (m->stats) {
        n->stats = m->stats;
        n->stats_pid = pid;
      }
      if (m->type == kMsgReady) {
        n->machine->on_ready(pid, now);
      } else if (m->type == kMsgHeartbeat) {
        n->machine->on_heartbeat(pid, now);
      }
      continue;
    }
    send_reply(frames[0], handle_request(std::get<CtlRequest>(*decoded)));
  }
}

void Supervisor::send_reply(const zmq::message_t& routing_id, const CtlReply& reply) {
  const std::string body = encode_ctl_reply(reply);
  (void)control_->send(zmq::buffer(routing_id.data(), routing_id.size()),
                       zmq::send_flags::sndmore | zmq::send_flags::dontwait);
  (void)control_->send(zmq::buffer(body), zmq::send_flags::dontwait);
}

NodeStatus Supervisor::status_of(const Node& n, SteadyTime now) const {
  const NodeMachine& m = *n.machine;
  NodeStatus s;
  s.name = n.cfg.name;
  s.kind = std::string(node_kind_name(n.cfg.kind));
  s.state = std::string(node_state_name(m.state()));
  s.pid = static_cast<uint64_t>(m.pid());
  s.restarts = m.restarts();
  s.uptime_ms = static_cast<uint64_t>(m.uptime(now).count());
  if (const ExitInfo* e = m.last_exit()) s.last_exit = e->describe();
  s.reason = m.reason();
  if (m.waiting_for_gate()) s.reason = "waiting for the bid nodes";
  s.policy = std::string(restart_policy_name(n.cfg.restart));
  s.host = n.cfg.host;
  if (n.note_pid != 0 && n.note_pid == m.pid()) s.note = n.note;
  if (n.stats && n.stats_pid == m.pid() && m.pid() != 0) {
    const NodeStats& st = *n.stats;
    s.stats_at_ms = st.at_ms;
    s.bids = st.bids;
    s.refusals = st.refusals;
    s.commit_bounds = st.commit_bounds;
    s.commit_counts = st.commit_counts;
    s.log_bytes = st.log_bytes ? static_cast<int64_t>(*st.log_bytes) : -1;
    s.store_used = st.store_used ? static_cast<int64_t>(*st.store_used) : -1;
    s.store_size = st.store_size ? static_cast<int64_t>(*st.store_size) : -1;
  }
  for (const Millis d : m.backoffs()) s.backoff_ms.push_back(static_cast<uint64_t>(d.count()));
  if (m.state() == NodeState::failed) s.log_tail = tail_lines(n.log->path(), 5);
  return s;
}

CtlReply Supervisor::handle_request(const CtlRequest& r) {
  const auto now = std::chrono::steady_clock::now();
  const auto& a = r.args;
  auto need = [&](std::size_t n, const char* usage) -> std::optional<CtlReply> {
    if (a.size() != n) return refuse(std::string("usage: ") + usage);
    return std::nullopt;
  };
  if (r.cmd == "status") {
    if (a.size() > 1) return refuse("usage: status [NAME]");
    CtlReply reply = accept("");
    std::vector<NodeStatus> list;
    for (auto& n : nodes_) {
      if (n->removed && n->machine->pid() == 0) continue;
      if (!a.empty() && n->cfg.name != a[0]) continue;
      list.push_back(status_of(*n, now));
    }
    if (!a.empty() && list.empty()) return refuse("unknown node: " + a[0]);
    reply.message = std::to_string(list.size()) + " node(s)";
    reply.data = std::move(list);
    return reply;
  }
  if (r.cmd == "logfile") {
    if (auto u = need(1, "logfile NAME")) return *u;
    Node* n = find(a[0]);
    if (n == nullptr) return refuse("unknown node: " + a[0]);
    CtlReply reply = accept(n->log->path().string());
    reply.data = n->log->path().string();
    return reply;
  }
  if (r.cmd == "start" || r.cmd == "stop" || r.cmd == "restart") {
    if (auto u = need(1, (r.cmd + " NAME|all").c_str())) return *u;
    if (shutting_down_ && r.cmd != "stop") return refuse("the supervisor is shutting down");
    if (a[0] == "all") {
      if (r.cmd == "stop") {
        begin_group_stop(false, false);
        return accept("stopping all nodes (routers first)");
      }
      if (r.cmd == "restart") {
        begin_group_stop(true, false);
        return accept("restarting all nodes (routers stop first, bid nodes start first)");
      }
      group_.reset();
      start_all();
      return accept("starting all nodes (bid nodes first)");
    }
    Node* n = find(a[0]);
    if (n == nullptr) return refuse("unknown node: " + a[0]);
    if (group_) {
      group_->bids_pending.erase(n->cfg.name);
      group_->members.erase(n->cfg.name);
    }
    if (r.cmd == "start") return accept(n->machine->start(now, false));
    if (r.cmd == "stop") return accept(n->machine->stop(now));
    return accept(n->machine->restart(now));
  }
  if (r.cmd == "signal") {
    if (auto u = need(2, "signal NAME SIG")) return *u;
    Node* n = find(a[0]);
    if (n == nullptr) return refuse("unknown node: " + a[0]);
    const auto sig = parse_signal(a[1]);
    if (!sig) return refuse("unknown signal: " + a[1]);
    const pid_t pid = n->machine->pid();
    if (pid == 0) {
      return refuse(n->cfg.name + " has no process (" + std::string(node_state_name(n->machine->state())) + ")");
    }
    if (::kill(pid, *sig) != 0) return refuse(n->cfg.name + ": kill: " + std::strerror(errno));
    note(*n, "signal", "signal " + std::to_string(*sig) + " sent by the operator");
    return accept("sent signal " + std::to_string(*sig) + " to " + n->cfg.name + " (pid " + std::to_string(pid) + ")");
  }
  if (r.cmd == "reload") {
    if (auto u = need(0, "reload")) return *u;
    if (shutting_down_) return refuse("the supervisor is shutting down");
    return reload();
  }
  if (r.cmd == "shutdown") {
    if (auto u = need(0, "shutdown")) return *u;
    begin_shutdown("shutdown requested by the CLI");
    return accept("shutting down: routers first, then bid nodes");
  }
  return refuse("unknown command: " + r.cmd);
}

CtlReply Supervisor::reload() {
  MeshConfig next;
  try {
    next = load_mesh_config(options_.config_file);
  } catch (const std::exception& e) {
    say("reload", std::string("reload refused: ") + e.what(), {{"refused", true}}, LogLevel::warning);
    return refuse(std::string("reload refused, config unchanged: ") + e.what());
  }
  if (next.data_dir != cfg_.data_dir || next.control != cfg_.control) {
    return refuse("reload refused: data_dir and control cannot change while running; restart the supervisor");
  }
  if (auto error = check_security_files(next)) {
    say("reload", "reload refused: " + *error, {{"refused", true}}, LogLevel::warning);
    return refuse("reload refused, config unchanged: " + *error);
  }
  const auto now = std::chrono::steady_clock::now();
  const MeshConfig prev = std::move(cfg_);
  cfg_ = std::move(next);
  params_ = MachineParams::from_config(cfg_);
  std::vector<std::string> added, removed, changed, signalled;
  for (auto& n : nodes_) {
    n->machine->set_params(params_);
    n->log->set_limits(cfg_.log_max_bytes, cfg_.log_keep);
    if (n->removed) continue;
    const NodeConfig* nc = cfg_.find(n->cfg.name);
    if (nc == nullptr || !node_runs_on(*nc, options_.host)) {
      n->removed = true;
      n->machine->stop(now);
      removed.push_back(n->cfg.name);
      continue;
    }
    const bool differs = node_fingerprint(prev, n->cfg) != node_fingerprint(cfg_, *nc);
    n->cfg = *nc;
    n->machine->set_policy(nc->restart);
    if (differs) {
      changed.push_back(n->cfg.name);
      // Apply the new config to a node that runs; one that is down stays down.
      const NodeState s = n->machine->state();
      if (s != NodeState::stopped && s != NodeState::failed) n->machine->restart(now);
      n->hup_pid = 0;  // the new process reads everything afresh
      continue;
    }
    // Unchanged: it keeps running and re-reads clients_dir. A process that has not said
    // `ready` may not have its SIGHUP handler yet (the default action ends it): it is told
    // once it runs. One that is stopping, or not started yet, reads the folder when it starts.
    if (n->machine->state() == NodeState::running) {
      send_reload_signal(*n);
      signalled.push_back(n->cfg.name);
    } else if (n->machine->state() == NodeState::starting && n->machine->pid() > 0) {
      n->hup_pid = n->machine->pid();
      signalled.push_back(n->cfg.name + "(once ready)");
    }
  }
  // Added nodes, in config order; bid nodes start at once, routers after the bid nodes.
  for (const NodeConfig& nc : cfg_.nodes) {
    if (!node_runs_on(nc, options_.host) || find(nc.name) != nullptr) continue;
    // A node removed by an earlier reload may still be stopping under the same name: it keeps
    // its record (and log) and is started again.
    Node* old = nullptr;
    for (auto& c : nodes_) {
      if (c->cfg.name == nc.name) old = c.get();
    }
    if (old != nullptr) {
      old->removed = false;
      old->cfg = nc;
      old->machine->set_policy(nc.restart);
      old->machine->start(now, false);
    } else {
      add_node(nc);
      nodes_.back()->machine->start(now, nc.kind != NodeKind::bid);
    }
    added.push_back(nc.name);
  }
  auto join = [](const std::vector<std::string>& v) {
    std::string s;
    for (const auto& x : v) s += (s.empty() ? "" : ",") + x;
    return s.empty() ? std::string("none") : s;
  };
  const std::string summary = "reloaded: added " + join(added) + "; removed " + join(removed) + "; changed " +
                              join(changed) + "; SIGHUP to " + join(signalled);
  set_log_identity("bidmesh-supervisor", cfg_.log_format);  // host-local: applies at once
  say("reload", summary, {{"refused", false}});
  return accept(summary);
}

void Supervisor::send_reload_signal(Node& n) {
  const pid_t pid = n.machine->pid();
  n.hup_pid = 0;
  // The node alone, not its group: SIGHUP ends a process that has no handler for it.
  if (pid <= 0 || ::kill(pid, SIGHUP) != 0) return;
  note(n, "reload", "SIGHUP sent: the config was reloaded (re-read clients_dir)");
}

void Supervisor::deliver_pending_reload_signals() {
  for (auto& n : nodes_) {
    if (n->hup_pid == 0) continue;
    if (n->machine->pid() != n->hup_pid) {
      n->hup_pid = 0;  // that process is gone; its successor reads the folder when it starts
    } else if (n->machine->state() == NodeState::running) {
      send_reload_signal(*n);
    }
  }
}

void Supervisor::begin_shutdown(const std::string& why) {
  if (shutting_down_) return;
  say("stopping", why);
  notify_systemd("STOPPING=1");
  shutting_down_ = true;
  begin_group_stop(false, true);
}

void Supervisor::begin_group_stop(bool then_start, bool then_exit) {
  const auto now = std::chrono::steady_clock::now();
  GroupStop g;
  g.then_start = then_start;
  g.then_exit = then_exit || (group_ && group_->then_exit);
  for (auto& n : nodes_) {
    g.members.insert(n->cfg.name);
    if (n->cfg.kind != NodeKind::bid) {  // routers and gateways first, then the bid nodes
      n->machine->stop(now);
    } else {
      g.bids_pending.insert(n->cfg.name);
    }
  }
  group_ = std::move(g);
  advance_group_stop();
}

void Supervisor::advance_group_stop() {
  if (!group_) return;
  const auto now = std::chrono::steady_clock::now();
  auto alive = [&](NodeKind kind) {
    for (auto& n : nodes_) {
      if (group_->members.count(n->cfg.name) && n->cfg.kind == kind && n->machine->pid() != 0) return true;
    }
    return false;
  };
  if (!group_->bids_pending.empty() && !alive(NodeKind::router) && !alive(NodeKind::gateway)) {
    for (auto& n : nodes_) {
      if (group_->bids_pending.count(n->cfg.name)) n->machine->stop(now);
    }
    group_->bids_pending.clear();
  }
  if (!group_->bids_pending.empty() || alive(NodeKind::router) || alive(NodeKind::bid) || alive(NodeKind::gateway))
    return;
  const GroupStop done = std::move(*group_);
  group_.reset();
  if (done.then_exit) {
    exit_now_ = true;
  } else if (done.then_start) {
    start_all();
  }
}

bool Supervisor::bid_nodes_settled() const {
  for (const auto& n : nodes_) {
    if (n->cfg.kind != NodeKind::bid || n->removed) continue;
    const NodeState s = n->machine->state();
    if (s == NodeState::starting || s == NodeState::backoff) return false;
    if (s == NodeState::stopping && n->machine->wanted_up()) return false;
  }
  return true;
}

void Supervisor::tick_nodes() {
  const auto now = std::chrono::steady_clock::now();
  const bool gate = bid_nodes_settled();
  for (auto& n : nodes_) n->machine->tick(now, gate);
  // Nodes removed by a reload are forgotten once their process is gone.
  std::erase_if(nodes_, [&](const std::unique_ptr<Node>& n) {
    if (!n->removed || n->machine->pid() != 0) return false;
    close_output(*n);
    note(*n, "removed", "removed from the config");
    say("removed", n->cfg.name + ": removed from the config", {{"subject", n->cfg.name}});
    node_metrics_.remove_node(n->cfg.name);
    return true;
  });
}

void Supervisor::update_metrics() {
  for (auto& n : nodes_) {
    const NodeMachine& m = *n->machine;
    node_metrics_.set_state(n->cfg.name, node_state_name(m.state()));
    for (; n->metered_restarts < m.restarts(); ++n->metered_restarts) node_metrics_.count_restart(n->cfg.name);
    if (const ExitInfo* e = m.last_exit())
      node_metrics_.set_last_exit(n->cfg.name, e->signaled ? 0 : e->value, e->signaled ? e->value : 0);
  }
}

void Supervisor::log_transitions() {
  for (auto& n : nodes_) {
    const NodeState s = n->machine->state();
    if (s == n->last_state) continue;
    std::string line = n->cfg.name + ": " + std::string(node_state_name(n->last_state)) + " -> " +
                       std::string(node_state_name(s));
    if (n->machine->pid() != 0) line += " (pid " + std::to_string(n->machine->pid()) + ")";
    if (!n->machine->reason().empty() && s != NodeState::running) line += ": " + n->machine->reason();
    // A launch after an automatic restart is the event an operator looks for.
    const bool restart = s == NodeState::starting && n->machine->restarts() > n->logged_restarts;
    n->logged_restarts = n->machine->restarts();
    say(restart ? "restart" : "state", line,
        {{"subject", n->cfg.name}, {"from", node_state_name(n->last_state)}, {"to", node_state_name(s)},
         {"restarts", n->machine->restarts()}},
        s == NodeState::failed ? LogLevel::error : LogLevel::info);
    n->last_state = s;
  }
}

void Supervisor::check_ready() {
  if (announced_ready_ || shutting_down_) return;
  for (const auto& n : nodes_) {
    if (n->machine->state() != NodeState::running) return;
  }
  announced_ready_ = true;
  std::string requests;
  for (const NodeConfig* r : cfg_.routers()) requests += (requests.empty() ? "" : " ") + r->listen;
  std::printf("bidmesh: mesh ready: requests %s, feed %s, control %s\n", requests.c_str(),
              cfg_.feed_publish.c_str(), cfg_.control.c_str());
  std::fflush(stdout);
  say("ready", "mesh ready: " + std::to_string(nodes_.size()) + " node(s) running", {{"nodes", nodes_.size()}});
  notify_systemd("READY=1\nSTATUS=mesh ready: " + std::to_string(nodes_.size()) + " node(s) running");
}

void Supervisor::watchdog() {
  if (watchdog_every_.count() == 0) return;
  const auto now = std::chrono::steady_clock::now();
  if (now < next_watchdog_) return;
  notify_systemd("WATCHDOG=1");
  next_watchdog_ = now + watchdog_every_;
}

std::chrono::milliseconds Supervisor::poll_timeout() const {
  const auto now = std::chrono::steady_clock::now();
  SteadyTime next = now + Millis(100);
  for (const auto& n : nodes_) next = std::min(next, n->machine->next_deadline());
  if (next <= now) return Millis(0);
  // Round up: waking a hair early would only spin once more.
  return duration_cast<Millis>(next - now) + Millis(1);
}

void Supervisor::turn() {
  std::vector<zmq::pollitem_t> items;
  items.push_back({control_->handle(), 0, ZMQ_POLLIN, 0});
  items.push_back({nullptr, g_wake_read_fd, ZMQ_POLLIN, 0});
  std::vector<Node*> readers;
  for (auto& n : nodes_) {
    if (n->out_fd < 0) continue;
    items.push_back({nullptr, n->out_fd, ZMQ_POLLIN, 0});
    readers.push_back(n.get());
  }
  try {
    zmq::poll(items, poll_timeout());
  } catch (const zmq::error_t& e) {
    if (e.num() != EINTR) throw;
  }
  drain_wake_pipe();
  if (g_shutdown) {
    g_shutdown = 0;
    begin_shutdown("shutdown requested by signal");
  }
  if (g_reload) {
    g_reload = 0;
    if (!shutting_down_) {
      say("reload", "reload requested by SIGHUP");
      reload();
    }
  }
  for (std::size_t i = 0; i < readers.size(); ++i) {
    if (items[i + 2].revents & (ZMQ_POLLIN | ZMQ_POLLERR)) read_output(*readers[i], false);
  }
  reap_children();
  handle_control();
  tick_nodes();
  advance_group_stop();
  deliver_pending_reload_signals();
  log_transitions();
  update_metrics();
  check_ready();
  watchdog();
}

}  // namespace bidmesh
