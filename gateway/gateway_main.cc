// bidmesh-gateway: the web gateway node (kind = "gateway"; docs/web.md).
//
//   bidmesh-gateway --config FILE --name NAME
//
// Threads: the main thread runs the io_context (HTTP, WebSocket, the supervisor heartbeat, which
// so proves the io_context turns); one feed thread reads the feed with FeedWatcher (gap repair
// through the router) and posts each event to the io_context, waiting when 100000 posts are
// pending (the feed's high-water mark then drops, and the watcher repairs the gap with history);
// MeshWorker threads carry list/get/history/bid to the router.
// Exit codes: 0 after SIGTERM/SIGINT, 100 for a bad command line or config (a users file that
// does not load, keys that do not load), 111 for a system failure (the address cannot be bound).
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <thread>

#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <zmq.hpp>

#include "client/curve_keys.h"
#include "client/feed_watcher.h"
#include "gateway/gateway_metrics.h"
#include "gateway/mesh_worker.h"
#include "gateway/server.h"
#include "gateway/users.h"
#include "metrics/metrics.h"
#include "nodes/process.h"
#include "protocol/config.h"
#include "protocol/log.h"

namespace {

using bidmesh::kExitSystem;
using bidmesh::kExitUsage;
constexpr int64_t kMaxPendingPosts = 100000;
constexpr std::chrono::milliseconds kTurn{100};

namespace gw = bidmesh::gateway;

// The web root when the config names none: the installed share/bidmesh/web beside the program's
// bin/, else the source tree's web/ (a build tree's program).
std::filesystem::path default_web_root() {
  std::error_code ec;
  const auto self = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (!ec) {
    const auto installed = self.parent_path().parent_path() / "share" / "bidmesh" / "web";
    if (std::filesystem::is_directory(installed, ec)) return installed;
  }
  return BIDMESH_SOURCE_WEB_DIR;
}

int serve(const bidmesh::MeshConfig& cfg, const bidmesh::NodeConfig& self) {
  const auto& g = self.gateway;
  auto users = gw::UserFile::load(g.users_file);
  if (auto* error = std::get_if<std::string>(&users)) {
    bidmesh::log_event(bidmesh::LogLevel::error, "stop", *error, {{"exit_code", kExitUsage}});
    return kExitUsage;
  }
  const bidmesh::NodeConfig* router = nullptr;
  for (const bidmesh::NodeConfig* r : cfg.routers())
    if (router == nullptr && (g.router.empty() || r->name == g.router)) router = r;
  if (router == nullptr) {
    bidmesh::log_event(bidmesh::LogLevel::error, "stop",
                       cfg.file.string() + ": node '" + self.name + "'.router: no such router", {{"exit_code", kExitUsage}});
    return kExitUsage;
  }
  std::optional<bidmesh::CurveKeys> curve;
  if (cfg.security == bidmesh::Security::curve) {
    auto keys = bidmesh::load_curve_keys(g.client_certificate, cfg.server_certificate);
    if (auto* error = std::get_if<std::string>(&keys)) {
      bidmesh::log_event(bidmesh::LogLevel::error, "stop", *error, {{"exit_code", kExitUsage}});
      return kExitUsage;
    }
    curve = std::get<bidmesh::CurveKeys>(keys);
  }

  zmq::context_t ctx(1);
  // Before the io_context: handlers it still holds at exit end sessions, which count in these.
  bidmesh::MetricsRegistry metrics;
  gw::GatewayMetrics gateway_metrics(metrics.registry());
  boost::asio::io_context io(1);

  gw::MeshWorker::Options worker_options;
  worker_options.endpoint = router->listen;
  worker_options.curve = curve;
  worker_options.timeout_ms = static_cast<int>(cfg.request_timeout_ms) + 500;
  gw::MeshWorker worker(ctx, io, worker_options);

  gw::GatewaySettings settings;
  const auto colon = self.listen.rfind(':');
  settings.listen_host = self.listen.substr(0, colon);
  if (!settings.listen_host.empty() && settings.listen_host.front() == '[')
    settings.listen_host = settings.listen_host.substr(1, settings.listen_host.size() - 2);
  settings.listen_port = static_cast<uint16_t>(std::stoul(self.listen.substr(colon + 1)));
  settings.allowed_origins = g.allowed_origins;
  settings.web_root = g.web_root.empty() ? default_web_root() : g.web_root;
  settings.max_connections = g.max_connections;
  settings.https = g.https;
  // For tests of the idle timeout only (docs/web.md): a shorter wait than the 30 s default.
  if (const char* idle = std::getenv("BIDMESH_GATEWAY_HTTP_IDLE_MS"); idle && std::atoi(idle) > 0)
    settings.http_idle = std::chrono::milliseconds(std::atoi(idle));
  gw::Gateway gateway(io, settings, std::move(std::get<gw::UserFile>(users)), worker, gateway_metrics);
  if (auto error = gateway.start()) {
    bidmesh::log_event(bidmesh::LogLevel::error, "stop", *error, {{"exit_code", kExitSystem}});
    return kExitSystem;
  }
  if (!self.metrics.empty()) {
    if (auto error = metrics.serve(self.metrics))
      bidmesh::log_event(bidmesh::LogLevel::warning, "metrics", *error + "; serving without metrics");
  }

  // The feed thread: every item's events in seq order, gaps repaired through the router.
  std::atomic<bool> feed_stop{false};
  std::atomic<int64_t> pending_posts{0};
  std::thread feed_thread([&] {
    bidmesh::FeedWatcherOptions options;
    options.request_endpoint = router->listen;
    options.curve = curve;
    bidmesh::FeedWatcher watcher(ctx, cfg.feed_publish, options);
    while (!feed_stop.load()) {
      std::optional<bidmesh::Event> event = watcher.next(kTurn);
      if (!event) continue;
      const auto received = std::chrono::steady_clock::now();
      while (pending_posts.load() > kMaxPendingPosts && !feed_stop.load())
        std::this_thread::sleep_for(std::chrono::milliseconds(1));  // backpressure, bounded by feed_stop
      ++pending_posts;
      boost::asio::post(io, [&gateway, &pending_posts, e = std::move(*event), received] {
        --pending_posts;
        gateway.publish_event(e, received);
      });
    }
  });

  bidmesh::SupervisorLink link(ctx, self.name);
  boost::asio::steady_timer timer(io);
  std::function<void()> turn = [&] {
    link.tick();
    if (bidmesh::take_reload_request()) gateway.reload_users();
    if (bidmesh::stop_requested()) {
      gateway.shutdown();
      io.stop();
      return;
    }
    timer.expires_after(std::min<std::chrono::milliseconds>(kTurn, link.max_wait()));
    timer.async_wait([&](boost::system::error_code) { turn(); });
  };
  link.ready();
  const std::string serving = "serving http://" + self.listen + " (web root " + settings.web_root.string() + ", " +
                              std::to_string(gateway.static_files()) + " files); router " + router->listen + "; feed " +
                              cfg.feed_publish + "; users from " + g.users_file.string() +
                              (cfg.security == bidmesh::Security::curve ? "; security curve" : "; security none (loopback only)");
  bidmesh::log_info("ready", serving, {{"listen", self.listen}, {"router", router->listen}});
  turn();
  io.run();

  feed_stop = true;
  feed_thread.join();
  worker.stop();
  bidmesh::log_info("stop", "stopped", {{"exit_code", 0}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bidmesh::NodeStart start = bidmesh::start_node(
      argc, argv, "bidmesh-gateway", "the web gateway (HTTP and WebSocket) of a bidmesh mesh", bidmesh::NodeKind::gateway);
  if (!start.ok) return start.exit_code;
  if (!gw::init_sodium()) {
    std::cerr << "bidmesh-gateway: libsodium cannot start" << std::endl;
    return kExitSystem;
  }
  try {
    return serve(start.config, start.self());
  } catch (const std::exception& e) {
    bidmesh::log_event(bidmesh::LogLevel::error, "stop", std::string("stopping: ") + e.what(), {{"exit_code", kExitSystem}});
    return kExitSystem;
  }
}
