// bidmesh-ctl: the supervisor's command line (docs/supervisor.md).
//   bidmesh-ctl [--config FILE | --control ENDPOINT] [--json] [--timeout MS] COMMAND ...
// With neither flag it reads tools/local-mesh.toml (relative to the current folder) and talks to
// the supervisor of that config. Exit codes (as in s6): 0 done, 1 refused by the supervisor
// (unknown node, ...), 100 bad usage or a config that does not load, 111 system failure
// (supervisor not running, no reply in time).
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "protocol/config.h"
#include "protocol/clock.h"
#include "protocol/json.h"
#include "protocol/log.h"
#include "supervisor/control_wire.h"
#include "supervisor/ctl_client.h"
#include "supervisor/rotating_log.h"
#include "supervisor/top.h"

namespace {

namespace fs = std::filesystem;
using namespace bidmesh;

constexpr int kOk = 0;
constexpr int kRefused = 1;
constexpr int kUsage = 100;
constexpr int kSystem = 111;

int fail(int code, const std::string& message) {
  std::fprintf(stderr, "bidmesh-ctl: %s\n", message.c_str());
  return code;
}

std::string uptime_text(uint64_t ms) {
  if (ms == 0) return "-";
  const uint64_t s = ms / 1000;
  char buf[32];
  if (s < 60) {
    std::snprintf(buf, sizeof buf, "%.1fs", static_cast<double>(ms) / 1000.0);
  } else if (s < 3600) {
    std::snprintf(buf, sizeof buf, "%llum%02llus", static_cast<unsigned long long>(s / 60),
                  static_cast<unsigned long long>(s % 60));
  } else if (s < 86400) {
    std::snprintf(buf, sizeof buf, "%lluh%02llum", static_cast<unsigned long long>(s / 3600),
                  static_cast<unsigned long long>((s % 3600) / 60));
  } else {
    std::snprintf(buf, sizeof buf, "%llud%02lluh", static_cast<unsigned long long>(s / 86400),
                  static_cast<unsigned long long>((s % 86400) / 3600));
  }
  return buf;
}

void print_table(const std::vector<NodeStatus>& list) {
  std::vector<std::vector<std::string>> rows;
  rows.push_back({"NAME", "KIND", "STATE", "PID", "UPTIME", "RESTARTS", "LAST EXIT", "REASON"});
  for (const auto& s : list) {
    rows.push_back({s.name, s.kind, s.state, s.pid ? std::to_string(s.pid) : "-", uptime_text(s.uptime_ms),
                    std::to_string(s.restarts), s.last_exit.empty() ? "-" : s.last_exit,
                    s.note.empty() ? s.reason : s.reason.empty() ? s.note : s.reason + "; " + s.note});
  }
  std::fputs(align_columns(rows).c_str(), stdout);
  for (const auto& s : list) {
    if (s.log_tail.empty()) continue;
    std::printf("--- %s: last lines of its log ---\n", s.name.c_str());
    for (const auto& l : s.log_tail) std::printf("%s\n", l.c_str());
  }
}

// Prints what is appended to `path` from `offset` on, following rotation, until killed.
[[noreturn]] void follow(const fs::path& path, uint64_t offset) {
  std::ifstream in;
  ino_t inode = 0;
  auto reopen = [&](uint64_t from) {
    in.close();
    in.clear();
    in.open(path, std::ios::binary);
    struct stat st {};
    inode = ::stat(path.c_str(), &st) == 0 ? st.st_ino : 0;
    if (in) in.seekg(static_cast<std::streamoff>(from));
    offset = from;
  };
  reopen(offset);
  std::string buf(64 * 1024, '\0');
  while (true) {
    bool got = false;
    if (in) {
      in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
      const auto n = in.gcount();
      if (n > 0) {
        std::fwrite(buf.data(), 1, static_cast<std::size_t>(n), stdout);
        std::fflush(stdout);
        offset += static_cast<uint64_t>(n);
        got = true;
      }
      in.clear();
    }
    if (got) continue;
    struct stat st {};
    if (::stat(path.c_str(), &st) == 0) {
      // Rotated (a new file under the name) or truncated: start again from the new file's top,
      // once what was left in the old one has been read.
      if (st.st_ino != inode || static_cast<uint64_t>(st.st_size) < offset) reopen(0);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
}

int tail(const fs::path& path, std::size_t n, bool follow_it) {
  std::error_code ec;
  if (!fs::exists(path, ec) && !follow_it) return fail(kRefused, path.string() + ": no log yet");
  for (const auto& l : tail_lines(path, n)) std::printf("%s\n", l.c_str());
  std::fflush(stdout);
  if (follow_it) follow(path, fs::exists(path, ec) ? fs::file_size(path, ec) : 0);
  return kOk;
}

// `top`: a `status` sample now and one every second; each printed sample holds the rates since
// the previous one (supervisor/top.h). count 0: until interrupted.
int top(CtlClient& client, bool json, int count) {
  const auto sample = [&](std::string& error) -> std::optional<std::vector<NodeStatus>> {
    const auto reply = client.call(CtlRequest{"status", {}}, error);
    if (!reply) return std::nullopt;
    const auto* list = std::get_if<std::vector<NodeStatus>>(&reply->data);
    if (!reply->ok || list == nullptr) {
      error = reply->message;
      return std::nullopt;
    }
    return *list;
  };
  std::string error;
  auto before = sample(error);
  if (!before) return fail(kSystem, "supervisor not running at " + client.endpoint() + " (" + error + ")");
  const bool screen = !json && ::isatty(STDOUT_FILENO) == 1;
  const auto start = std::chrono::steady_clock::now();
  for (int i = 1; count == 0 || i <= count; ++i) {
    std::this_thread::sleep_until(start + std::chrono::seconds(i));  // the refresh period
    auto now = sample(error);
    if (!now) return fail(kSystem, "supervisor not running at " + client.endpoint() + " (" + error + ")");
    const auto rows = top_rows(*before, *now);
    if (json) {
      std::printf("%s\n", top_to_json(rows, static_cast<int64_t>(unix_now_ms())).c_str());
    } else {
      if (screen) std::fputs("\x1b[H\x1b[2J", stdout);  // home and clear, as top does
      std::printf("bidmesh top  %s  every 1 s, rates over the last second%s\n\n",
                  rfc3339_utc_ms(static_cast<int64_t>(unix_now_ms())).c_str(), screen ? "; Ctrl-C quits" : "");
      std::fputs(top_to_table(rows).c_str(), stdout);
      if (!screen) std::fputs("\n", stdout);
    }
    std::fflush(stdout);
    before = std::move(now);
  }
  return kOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-ctl: see and control the nodes run by a bidmesh supervisor"};
  app.require_subcommand(1);
  app.fallthrough();
  std::string config_file;
  std::string control;
  bool json = false;
  int timeout_ms = 3000;
  auto* config_opt =
      app.add_option("--config", config_file, "mesh config (default: tools/local-mesh.toml in the current folder)");
  app.add_option("--control", control, "supervisor control endpoint (instead of a config)")->excludes(config_opt);
  app.add_flag("--json", json, "machine-readable output");
  app.add_option("--timeout", timeout_ms, "milliseconds to wait for the supervisor's reply")
      ->capture_default_str()
      ->check(CLI::Range(1, 600000));

  std::string name;
  std::string sig;
  std::size_t lines = 10;
  bool follow_flag = false;
  bool wait_flag = false;

  auto* status = app.add_subcommand("status", "show every node (or one): state, pid, uptime, restarts, last exit");
  status->add_option("name", name, "node name");
  auto* start = app.add_subcommand("start", "start a node (or all: bid nodes first); clears `failed`");
  start->add_option("name", name, "node name, or all")->required();
  auto* stop = app.add_subcommand("stop", "stop a node (or all: routers first): SIGTERM, SIGKILL after the stop timeout");
  stop->add_option("name", name, "node name, or all")->required();
  auto* restart = app.add_subcommand("restart", "stop then start a node (or all)");
  restart->add_option("name", name, "node name, or all")->required();
  auto* signal = app.add_subcommand("signal", "send a signal to a node's process");
  signal->add_option("name", name, "node name")->required();
  signal->add_option("signal", sig, "signal name or number (TERM, SIGUSR1, 9, ...)")->required();
  auto* tail_cmd = app.add_subcommand("tail", "print the end of a node's log");
  tail_cmd->add_option("name", name, "node name")->required();
  tail_cmd->add_option("-n,--lines", lines, "lines to print")->capture_default_str();
  tail_cmd->add_flag("-f,--follow", follow_flag, "keep printing what is appended (follows rotation)");
  int top_count = 0;
  auto* top_cmd = app.add_subcommand("top", "live view, every second: state, bids/s, refusals/s, p99 commit, log, store, restarts");
  top_cmd->add_option("--count", top_count, "print this many samples and exit (default: until Ctrl-C)")
      ->check(CLI::Range(0, 1000000));
  app.add_subcommand("reload", "re-read the config: start added nodes, stop removed ones, restart changed ones");
  auto* shutdown = app.add_subcommand("shutdown", "stop every node (routers first) and the supervisor");
  shutdown->add_flag("--wait", wait_flag, "return once the supervisor has exited");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    const int rc = app.exit(e);
    return rc == 0 ? kOk : kUsage;
  }

  std::optional<MeshConfig> cfg;
  if (control.empty()) {
    const fs::path file = config_file.empty() ? fs::path("tools/local-mesh.toml") : fs::path(config_file);
    try {
      cfg = load_mesh_config(file);
    } catch (const std::exception& e) {
      return fail(kUsage, std::string(e.what()) + (config_file.empty() ? " (give --config or --control)" : ""));
    }
    control = cfg->control;
  }

  if (tail_cmd->parsed() && cfg) {
    // From the config: the log is readable even when the supervisor is down.
    if (cfg->find(name) == nullptr) return fail(kRefused, "unknown node: " + name);
    return tail(cfg->node_log_file(name), lines, follow_flag);
  }

  CtlRequest req;
  CLI::App* sub = app.get_subcommands().front();
  req.cmd = sub->get_name();
  if (tail_cmd->parsed()) {
    req.cmd = "logfile";
    req.args = {name};
  } else if (signal->parsed()) {
    req.args = {name, sig};
  } else if (!name.empty()) {
    req.args = {name};
  }

  const std::string not_running = "supervisor not running at " + control;
  if (!control_endpoint_listening(control)) return fail(kSystem, not_running);
  zmq::context_t ctx(1);
  CtlClient client(ctx, control, std::chrono::milliseconds(timeout_ms));
  if (top_cmd->parsed()) return top(client, json, top_count);
  std::string error;
  const auto reply = client.call(req, error);
  if (!reply) return fail(kSystem, not_running + " (" + error + ")");

  if (tail_cmd->parsed()) {
    if (!reply->ok) return fail(kRefused, reply->message);
    const auto* path = std::get_if<std::string>(&reply->data);
    if (path == nullptr) return fail(kSystem, "supervisor sent no log path");
    return tail(*path, lines, follow_flag);
  }
  if (status->parsed() && reply->ok) {
    const auto* list = std::get_if<std::vector<NodeStatus>>(&reply->data);
    const std::vector<NodeStatus> empty;
    if (json) {
      std::printf("%s\n", status_list_to_json(list ? *list : empty).c_str());
    } else {
      print_table(list ? *list : empty);
    }
    return kOk;
  }
  if (json) {
    std::printf("{\"ok\":%s,\"message\":%s}\n", reply->ok ? "true" : "false", json_quote(reply->message).c_str());
  }
  if (!reply->ok) return fail(kRefused, reply->message);
  if (!json) std::printf("%s\n", reply->message.c_str());
  if (shutdown->parsed() && wait_flag) {
    // The supervisor closes its socket as it exits.
    const auto bound = cfg ? std::chrono::milliseconds(2 * cfg->stop_timeout_ms + 5000) : std::chrono::milliseconds(30000);
    const auto end = std::chrono::steady_clock::now() + bound;
    while (control_endpoint_listening(control)) {
      if (std::chrono::steady_clock::now() >= end) return fail(kSystem, "supervisor still running after shutdown");
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
  }
  return kOk;
}
