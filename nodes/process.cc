#include "nodes/process.h"

#include <csignal>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <unistd.h>

#include <CLI/CLI.hpp>

#include "protocol/control.h"
#include "protocol/log.h"

namespace bidmesh {

namespace {
volatile std::sig_atomic_t g_stop = 0;
volatile std::sig_atomic_t g_reload = 0;
void on_stop_signal(int) { g_stop = 1; }
void on_reload_signal(int) { g_reload = 1; }
}  // namespace

void install_node_signal_handlers() {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGTERM, &sa, nullptr);
  sigaction(SIGINT, &sa, nullptr);
  sa.sa_handler = on_reload_signal;
  sigaction(SIGHUP, &sa, nullptr);
  std::signal(SIGPIPE, SIG_IGN);
  // The supervisor's death is handled once, in supervisor/spawn.cc: between fork and exec the
  // child sets PR_SET_PDEATHSIG(SIGKILL) and compares getppid() with the pid taken before fork.
  // Only there is that pid known for certain (after exec, a node adopted by a subreaper cannot
  // tell it from a live supervisor), and the setting survives execve of these binaries (not
  // set-user-ID), so doing it again here would add nothing.
}

bool stop_requested() { return g_stop != 0; }

NodeStart start_node(int argc, char** argv, std::string_view program, std::string_view about, NodeKind kind) {
  NodeStart start;
  const std::string prefix = std::string(program) + ": ";
  CLI::App app{std::string(program) + ": " + std::string(about)};
  std::string config_file;
  app.add_option("--config", config_file, "mesh config file (TOML)")->required();
  app.add_option("--name", start.name, "name of this " + std::string(node_kind_name(kind)) + " node in the config")
      ->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) {  // --help
      start.exit_code = app.exit(e);
      return start;
    }
    std::cerr << prefix << e.what() << std::endl;
    return start;
  }
  try {
    start.config = load_mesh_config(config_file);
  } catch (const ConfigError& e) {
    std::cerr << prefix << e.what() << std::endl;
    return start;
  }
  const NodeConfig* self = start.config.find(start.name);
  if (self == nullptr || self->kind != kind) {
    const std::string_view noun = kind == NodeKind::bid ? "bid node" : node_kind_name(kind);
    std::cerr << prefix << start.config.file.string() << ": nodes: no " << noun << " named '" << start.name << "'"
              << std::endl;
    return start;
  }
  start.index = static_cast<std::size_t>(self - start.config.nodes.data());
  start.ok = true;
  start.exit_code = 0;

  set_log_identity(start.name, start.config.log_format);
  log_info("start", "starting: pid " + std::to_string(::getpid()) + ", config " + start.config.file.string(),
           {{"pid", ::getpid()}, {"config", start.config.file.string()}});
  install_node_signal_handlers();
  return start;
}

bool take_reload_request() {
  if (g_reload == 0) return false;
  g_reload = 0;
  return true;
}

SupervisorLink::SupervisorLink(zmq::context_t& ctx, std::string node_name) : name_(std::move(node_name)) {
  const char* endpoint = std::getenv(kEnvSupervisorEndpoint);
  if (endpoint == nullptr || *endpoint == '\0') return;
  if (const char* ms = std::getenv(kEnvHeartbeatMs)) {
    const long v = std::strtol(ms, nullptr, 10);
    if (v > 0) interval_ = std::chrono::milliseconds(v);
  }
  socket_ = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::dealer);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::sndhwm, 16);
  socket_->set(zmq::sockopt::routing_id, name_);
  socket_->connect(endpoint);
}

void SupervisorLink::send(std::string_view type) {
  if (!socket_) return;
  std::optional<NodeStats> stats;
  if (stats_source_ && type == kMsgHeartbeat) stats = stats_source_();
  const std::string frame = encode_node_message({std::string(type), name_, static_cast<uint64_t>(getpid()), note_, std::move(stats)});
  // Dropped when the supervisor is not there yet: the next beat says the same.
  (void)socket_->send(zmq::buffer(frame), zmq::send_flags::dontwait);
}

void SupervisorLink::ready() {
  send(kMsgReady);
  next_beat_ = std::chrono::steady_clock::now() + interval_;
}

bool SupervisorLink::set_note(std::string_view note) {
  if (note == note_) return false;  // compared, not copied: loops call this often
  note_.assign(note);
  next_beat_ = {};  // the next tick says it
  return true;
}

void SupervisorLink::tick() {
  if (!socket_) return;
  const auto now = std::chrono::steady_clock::now();
  if (now < next_beat_) return;
  send(kMsgHeartbeat);
  next_beat_ = now + interval_;
}

}  // namespace bidmesh
