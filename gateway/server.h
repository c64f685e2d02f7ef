// Gateway: the web gateway's HTTP and WebSocket server (docs/web.md holds the contract).
//
// One io_context thread runs everything here: the acceptor, every HTTP session (Boost.Beast,
// one object per connection, as in Beast's example/advanced/server), every WebSocket session,
// the per-item event rings and the sign-in sessions. Two other kinds of threads feed it:
//   - the feed thread (gateway_main.cc) reads the feed through client/feed_watcher.h (in seq
//     order, gaps repaired with history) and posts each event with publish_event();
//   - MeshWorker threads answer list/get/history/bid and post their replies back.
// So nothing in this class is locked: every member is touched by the io_context thread only.
//
// Bounds (docs/web.md, "Limits"): max_connections open sockets (the next gets 503 and is
// closed); HTTP headers 8 KiB, bodies 4 KiB, 30 s to send a request; WebSocket messages 4 KiB
// in, a send queue of 256 events or 1 MiB per socket (past it the queue is dropped and the
// client gets {"type":"resync"}), one write per socket per flush tick (ws_write_interval) while
// busy (queued events go as one {"type":"events"} message), pings on idle sockets; per item the
// last 256 events and at most 200000 events in all are kept for watch-with-after; 100000 sign-in
// sessions; 10 sign-ins per minute per remote address.
//
// Fan-out: each event's JSON is made once; at each flush tick the events of the tick are joined
// once into a chunk shared by every socket watching everything, and each socket's message is a
// gather write over shared chunks (no per-socket copy). Sockets watching some items queue the
// events' own shared texts. Each socket still has its own queue, bound and resync.
#pragma once

#include <chrono>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>

#include "gateway/gateway_metrics.h"
#include "gateway/mesh_worker.h"
#include "gateway/users.h"
#include "protocol/messages.h"

namespace bidmesh::gateway {

struct GatewaySettings {
  std::string listen_host;          // an IP literal
  uint16_t listen_port = 0;         // 0 = any free port (port() tells)
  std::vector<std::string> allowed_origins;
  std::filesystem::path web_root;
  uint32_t max_connections = 2048;
  bool https = false;
  std::size_t send_queue_messages = 256;
  std::size_t send_queue_bytes = 1 << 20;
  std::size_t ring_per_item = 256;
  std::size_t ring_total = 200000;
  std::chrono::milliseconds http_idle{30000};
  std::chrono::seconds ws_idle{60};
  // The flush tick: live events wait for it, so each socket makes at most one write per
  // interval while events keep coming (0: flush as soon as the queued handlers ran). 1000 busy
  // sockets cost 1000 writes per interval, not one per event each. An event that comes when the
  // gateway was idle for an interval is flushed at once.
  std::chrono::milliseconds ws_write_interval{10};
};

class Gateway {
 public:
  // Loads the web root's files (the allow list of static paths). REQUIRES: io outlives it.
  Gateway(boost::asio::io_context& io, GatewaySettings settings, UserFile users, MeshWorker& mesh,
          GatewayMetrics& metrics);
  ~Gateway();
  Gateway(const Gateway&) = delete;
  Gateway& operator=(const Gateway&) = delete;

  // Binds and starts accepting; a reason when it cannot bind. Call on any thread before run.
  std::optional<std::string> start();
  uint16_t port() const;
  std::size_t static_files() const;

  // On the io_context thread: one event of the feed, in seq order per item; `received` is when
  // the feed thread read it (for the delivery histogram).
  void publish_event(const Event& event, std::chrono::steady_clock::time_point received);
  // On the io_context thread: SIGHUP: re-read the users file.
  void reload_users();
  // Closes the acceptor and every connection (on the io_context thread).
  void shutdown();

  struct Impl;

 private:
  std::shared_ptr<Impl> impl_;
};

// The JSON text of one WebSocket event message: {"type":"event","item","seq","event","ts",...}.
std::string event_message(const Event& e);

}  // namespace bidmesh::gateway
