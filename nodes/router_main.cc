// bidmesh-router: the client endpoint of the mesh, and (when its node has `feed = true`) the
// feed forwarder.
//
//   bidmesh-router --config FILE --name NAME
//
// Exit codes (as every bidmesh program): 0 after a clean stop (SIGTERM/SIGINT: requests in
// flight are answered or time out first), 100 for a bad command line or config (a server
// certificate that others may read, a clients_dir that does not load), 111 for a
// system failure (an endpoint cannot be bound, the feed forwarder failed). Every failure is one
// line on stderr.
#include <array>
#include <chrono>
#include <cstdint>
#include <exception>
#include <optional>
#include <string>
#include <variant>

#include <zmq.hpp>

#include "metrics/metrics.h"
#include "metrics/snapshot.h"
#include "nodes/connection_counter.h"
#include "nodes/feed.h"
#include "nodes/process.h"
#include "nodes/router.h"
#include "protocol/config.h"
#include "protocol/log.h"
#include "security/allow_list.h"
#include "security/certificate.h"
#include "security/zap.h"

namespace {

using bidmesh::kExitSystem;
using bidmesh::kExitUsage;
// How often the feed's counters are read into its metrics, and how long the proxy may take.
constexpr std::chrono::seconds kFeedMetricsEvery{1};
constexpr std::chrono::milliseconds kFeedStatisticsTimeout{100};
// How often the refusal counters are read for the log's refusal bursts.
constexpr std::chrono::seconds kRefusalCheckEvery{1};

// With security = "curve": the mesh's keypair and the allowed clients, or a one-line reason
// (the program then exits 100: a config the operator must mend).
std::variant<bidmesh::RouterSecurity, std::string> load_security(const bidmesh::MeshConfig& cfg) {
  return bidmesh::load_client_security(cfg);  // the same rules as a bid node's client endpoint
}

int serve(const bidmesh::MeshConfig& cfg, const bidmesh::NodeConfig& self) {
  // Declared first, so every socket below is closed before the context terminates.
  zmq::context_t ctx(1);
  // Kept and counted whether or not they are served (metrics/metrics.h).
  bidmesh::MetricsRegistry metrics;
  bidmesh::FeedMetrics feed_metrics(metrics.registry());
  bidmesh::RouterMetrics router_metrics(metrics.registry());

  std::optional<bidmesh::RouterSecurity> security;
  std::optional<bidmesh::ZapHandler> zap;
  if (cfg.security == bidmesh::Security::curve) {
    auto loaded = load_security(cfg);
    if (auto* error = std::get_if<std::string>(&loaded)) {
      bidmesh::log_event(bidmesh::LogLevel::error, "stop", *error, {{"exit_code", kExitUsage}});
      return kExitUsage;
    }
    security = std::move(std::get<bidmesh::RouterSecurity>(loaded));
    zap.emplace(ctx, security->mesh.public_key, cfg.feed_public);
    zap->set_allow_list(security->clients);
    if (auto error = zap->start()) {
      bidmesh::log_event(bidmesh::LogLevel::error, "stop", *error, {{"exit_code", kExitSystem}});
      return kExitSystem;
    }
  }

  bidmesh::RouterOptions router_options;
  router_options.metrics = &router_metrics;
  bidmesh::Router router(ctx, cfg, self, router_options, security);
  if (auto error = router.bind()) {
    bidmesh::log_event(bidmesh::LogLevel::error, "stop", *error, {{"exit_code", kExitSystem}});
    return kExitSystem;
  }
  std::optional<bidmesh::FeedForwarder> feed;
  if (self.feed) {
    bidmesh::FeedOptions options;
    options.refused_metric = &feed_metrics.refused_subscriptions;
    if (security) {
      const bidmesh::Certificate mesh = security->mesh;
      options.secure_collect = [mesh](zmq::socket_t& s) { bidmesh::make_curve_server(s, mesh, bidmesh::kZapDomainMesh); };
      options.secure_publish = [mesh](zmq::socket_t& s) { bidmesh::make_curve_server(s, mesh, bidmesh::kZapDomainFeed); };
      options.allowed_clients = [&zap] { return zap->allow_list(); };  // vets bidder/ subscriptions
    }
    feed.emplace(ctx, cfg.feed_collect, cfg.feed_publish, options);
    if (auto error = feed->start()) {
      bidmesh::log_event(bidmesh::LogLevel::error, "stop", *error, {{"exit_code", kExitSystem}});
      return kExitSystem;
    }
  }
  std::optional<bidmesh::ConnectionCounter> subscribers;
  if (feed) subscribers.emplace(ctx, feed->subscriber_monitor(), feed_metrics.subscribers);
  // A metrics port that cannot be bound costs the metrics, not the auction: the router serves on.
  if (!self.metrics.empty()) {
    if (auto error = metrics.serve(self.metrics))
      bidmesh::log_event(bidmesh::LogLevel::warning, "metrics", *error + "; serving without metrics");
  }

  bidmesh::SupervisorLink link(ctx, self.name);
  link.set_stats_source([&router_metrics] { return bidmesh::node_stats(router_metrics); });  // for bidmesh-ctl top
  link.ready();
  std::string serving = "serving clients on " + router.client_endpoint() + ", " + std::to_string(cfg.bid_nodes().size()) +
                        " bid node(s), timeout " + std::to_string(cfg.request_timeout_ms) + " ms, mesh config digest " +
                        cfg.digest_hex();
  if (feed) serving += "; feed " + cfg.feed_collect + " -> " + cfg.feed_publish;
  if (metrics.serving()) serving += "; metrics on " + self.metrics;
  if (security) {
    serving += "; security curve, " + std::to_string(security->clients->size()) + " allowed clients from " +
               cfg.clients_dir.string();
  } else {
    serving += "; security none (loopback only)";
  }
  bidmesh::log_info("ready", serving, {{"listen", router.client_endpoint()}, {"digest", cfg.digest_hex()}, {"feed", feed.has_value()}});

  // Refusals that say something is wrong, read from the router's own request counters (so
  // nothing is added per request) and logged in bursts of at most one line per 5 s.
  bidmesh::RefusalBursts refusals;
  std::array<uint64_t, bidmesh::kErrorCodeCount> refused_before{};
  auto refusals_due = std::chrono::steady_clock::now();
  const auto log_refusals = [&] {
    const auto now = std::chrono::steady_clock::now();
    if (now < refusals_due) return;
    refusals_due = now + kRefusalCheckEvery;
    for (const auto code : {bidmesh::ErrorCode::bad_request, bidmesh::ErrorCode::too_large, bidmesh::ErrorCode::forbidden,
                            bidmesh::ErrorCode::unavailable, bidmesh::ErrorCode::internal}) {
      uint64_t total = 0;
      for (std::size_t op = 0; op <= bidmesh::kOpCount; ++op) {
        const auto which = op < bidmesh::kOpCount ? std::optional<bidmesh::Op>(static_cast<bidmesh::Op>(op)) : std::nullopt;
        total += static_cast<uint64_t>(router_metrics.requests.error(which, code).Value());
      }
      uint64_t& before = refused_before[static_cast<std::size_t>(code)];
      refusals.add(code, total - before);
      before = total;
    }
    refusals.flush(now);
  };

  // SIGHUP (the supervisor's reload): the allow list is read again. A list that does not load
  // leaves the previous one in force, so a typo never opens or closes the mesh by accident.
  uint64_t feed_events = 0;
  auto feed_metrics_due = std::chrono::steady_clock::now();
  const auto update_feed_metrics = [&] {
    if (!feed || std::chrono::steady_clock::now() < feed_metrics_due) return;
    feed_metrics_due = std::chrono::steady_clock::now() + kFeedMetricsEvery;
    subscribers->poll();
    if (const auto events = feed->forwarded_events(kFeedStatisticsTimeout); events && *events >= feed_events) {
      feed_metrics.events.Increment(static_cast<double>(*events - feed_events));
      feed_events = *events;
    }
  };
  // Every loop turn: the feed's metrics when due, and SIGHUP (the supervisor's reload).
  const auto each_turn = [&] {
    update_feed_metrics();
    log_refusals();
    if (!bidmesh::take_reload_request()) return;
    if (!security) {
      bidmesh::log_info("reload", "SIGHUP: nothing to re-read (security none: no clients_dir)");
      return;
    }
    auto clients = bidmesh::load_allow_list(cfg.clients_dir);
    if (auto* error = std::get_if<std::string>(&clients)) {
      bidmesh::log_event(bidmesh::LogLevel::warning, "reload",
                         "reload refused, the previous clients stay allowed: clients_dir: " + *error);
      return;
    }
    auto list = std::make_shared<const bidmesh::AllowList>(std::move(std::get<bidmesh::AllowList>(clients)));
    zap->set_allow_list(list);
    router.set_allowed_clients(list);
    bidmesh::log_info("reload", "reloaded " + std::to_string(list->size()) + " clients from " + cfg.clients_dir.string(),
                      {{"clients", list->size()}});
  };
  router.run(link, [&feed] { return bidmesh::stop_requested() || (feed && feed->failed()); }, each_turn);

  std::string stopped = "stopped; read " + std::to_string(router.client_messages()) + " client messages";
  if (zap) stopped += ", refused " + std::to_string(zap->refused()) + " handshakes";
  if (feed) {
    feed->stop();
    if (auto failure = feed->failure()) {
      bidmesh::log_event(bidmesh::LogLevel::error, "stop", stopped + "; " + *failure, {{"exit_code", kExitSystem}});
      return kExitSystem;
    }
  }
  bidmesh::log_info("stop", stopped, {{"exit_code", 0}, {"client_messages", router.client_messages()}});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const bidmesh::NodeStart start = bidmesh::start_node(
      argc, argv, "bidmesh-router", "routes client requests to the bid nodes that own their items", bidmesh::NodeKind::router);
  if (!start.ok) return start.exit_code;
  try {
    return serve(start.config, start.self());
  } catch (const std::exception& e) {  // zmq::error_t included
    bidmesh::log_event(bidmesh::LogLevel::error, "stop", std::string("stopping: ") + e.what(), {{"exit_code", kExitSystem}});
    return kExitSystem;
  }
}
