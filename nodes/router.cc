#include "nodes/router.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <utility>
#include <variant>

#include "protocol/errors.h"
#include "protocol/messages.h"

namespace bidmesh {

// ---------------------------------------------------------------------------------------------
// PendingTable

PendingTable::PendingTable(std::size_t capacity) : capacity_(capacity) {}

PendingTable::Entry& PendingTable::acquire(Clock::time_point deadline) {
  uint32_t index;
  if (!free_.empty()) {
    index = free_.back();
    free_.pop_back();
  } else {
    index = static_cast<uint32_t>(entries_.size());
    entries_.emplace_back();
  }
  if (++sequence_ == 0) sequence_ = 1;  // a token is never 0: 0 marks a free entry
  Entry& e = entries_[index];
  e.token = (static_cast<uint64_t>(sequence_) << 32) | index;
  e.deadline = deadline;
  order_.push_back(e.token);
  ++live_;
  return e;
}

PendingTable::Entry* PendingTable::find(uint64_t token) {
  if (token == 0) return nullptr;
  const uint32_t index = index_of(token);
  if (index >= entries_.size()) return nullptr;
  Entry& e = entries_[index];
  return e.token == token ? &e : nullptr;
}

void PendingTable::release(Entry& entry) {
  if (entry.token == 0) return;
  free_.push_back(index_of(entry.token));
  entry.token = 0;
  --live_;
}

void PendingTable::pop_answered() {
  while (!order_.empty() && find(order_.front()) == nullptr) order_.pop_front();
}

void PendingTable::expire(Clock::time_point now, const std::function<void(Entry&)>& fn) {
  for (;;) {
    pop_answered();
    if (order_.empty()) return;
    Entry* e = find(order_.front());
    if (e->deadline > now) return;
    order_.pop_front();
    fn(*e);
    release(*e);
  }
}

std::optional<PendingTable::Clock::time_point> PendingTable::next_deadline() {
  pop_answered();
  if (order_.empty()) return std::nullopt;
  return find(order_.front())->deadline;
}

// ---------------------------------------------------------------------------------------------
// Router

namespace {

using Clock = PendingTable::Clock;

constexpr zmq::send_flags kMore = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
constexpr zmq::send_flags kLast = zmq::send_flags::dontwait;

const char kEmpty[1] = {0};

std::string_view view(const zmq::message_t& m) {
  return std::string_view(static_cast<const char*>(m.data()), m.size());
}

}  // namespace

Router::Router(zmq::context_t& ctx, const MeshConfig& cfg, const NodeConfig& self, RouterOptions options)
    : ctx_(ctx),
      cfg_(cfg),
      self_(self),
      options_(options),
      slot_map_(cfg.slot_map()),
      timeout_(cfg.request_timeout_ms),
      pending_(options.max_pending),
      framing_error_reply_(encode_error(std::nullopt, ErrorCode::bad_request,
                                        "a request is one frame after an empty delimiter frame")),
      full_reply_message_("router " + self.name + " has too many requests in flight") {}

Router::~Router() = default;

std::optional<std::string> Router::bind() {
  // ZMQ_STREAM: raw bytes per connection; ZmtpPeer speaks ZMTP to REQ and DEALER clients. It
  // needs a byte stream: tcp:// or ipc://, not inproc:// (which carries messages, not bytes).
  if (self_.listen.rfind("inproc://", 0) == 0)
    return "client endpoint " + self_.listen + ": a router listens on tcp:// or ipc:// (inproc:// is not supported)";
  client_ = zmq::socket_t(ctx_, zmq::socket_type::stream);
  client_.set(zmq::sockopt::sndhwm, options_.client_hwm);
  client_.set(zmq::sockopt::rcvhwm, options_.client_read_chunks);
  client_.set(zmq::sockopt::stream_notify, true);  // an empty message on connect and disconnect
  client_.set(zmq::sockopt::linger, 0);
  try {
    client_.bind(self_.listen);
  } catch (const zmq::error_t& e) {
    return "cannot bind client endpoint " + self_.listen + ": " + e.what();
  }

  nodes_.clear();
  for (const NodeConfig* n : cfg_.bid_nodes()) {  // index i is owner i of the slot map
    Node node{n->name,
              n->listen,
              "bid node " + n->name + " did not answer within " + std::to_string(timeout_.count()) + " ms",
              "bid node " + n->name + " is not reachable",
              zmq::socket_t(ctx_, zmq::socket_type::dealer)};
    // Immediate: nothing queues for a node that is not connected, so a send fails at once and
    // the client gets `unavailable` instead of a timeout.
    node.socket.set(zmq::sockopt::immediate, true);
    node.socket.set(zmq::sockopt::sndhwm, options_.node_hwm);
    node.socket.set(zmq::sockopt::rcvhwm, options_.node_hwm);
    node.socket.set(zmq::sockopt::linger, 0);
    // A restarted node is found again within kNodeReconnectMs (libzmq's default is 100 ms, which
    // alone would miss the restart target of docs/benchmarks.md); refused connects are cheap.
    node.socket.set(zmq::sockopt::reconnect_ivl, kNodeReconnectMs);
    try {
      node.socket.connect(n->listen);
    } catch (const zmq::error_t& e) {
      return "cannot connect to bid node " + n->name + " at " + n->listen + ": " + e.what();
    }
    nodes_.push_back(std::move(node));
  }

  poll_items_.clear();
  poll_items_.push_back({client_.handle(), 0, ZMQ_POLLIN, 0});
  for (Node& n : nodes_) poll_items_.push_back({n.socket.handle(), 0, ZMQ_POLLIN, 0});
  return std::nullopt;
}

std::string Router::client_endpoint() const { return client_.get(zmq::sockopt::last_endpoint); }

void Router::run(SupervisorLink& link, const std::function<bool()>& should_stop) {
  bool stopping = false;
  for (;;) {
    if (!stopping && should_stop()) stopping = true;
    // Draining ends when everything in flight is answered; expiry bounds it by the timeout.
    if (stopping && pending_.size() == 0) break;

    try {
      zmq::poll(poll_items_, poll_timeout(Clock::now(), link));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;  // a signal: the loop's top sees the stop flag
    }

    // Bounded bursts: a busy client side or node cannot starve the others.
    const Clock::time_point now = Clock::now();
    if (poll_items_[0].revents & ZMQ_POLLIN) {
      for (std::size_t i = 0; i < options_.burst && handle_client_message(now, stopping); ++i) {
      }
    }
    for (std::size_t n = 0; n < nodes_.size(); ++n) {
      if ((poll_items_[n + 1].revents & ZMQ_POLLIN) == 0) continue;
      for (std::size_t i = 0; i < options_.burst && handle_node_message(n); ++i) {
      }
    }
    expire(Clock::now());
    sweep_connections(Clock::now());
    link.tick();
  }
  close();
}

std::chrono::milliseconds Router::poll_timeout(Clock::time_point now, const SupervisorLink& link) {
  std::chrono::milliseconds wait = std::min(options_.max_poll_wait, link.max_wait());
  if (auto deadline = pending_.next_deadline()) {
    if (*deadline <= now) return std::chrono::milliseconds(0);
    // Rounded up, so the poll does not wake just before the deadline and spin.
    wait = std::min(wait, std::chrono::ceil<std::chrono::milliseconds>(*deadline - now));
  }
  return wait;
}

bool Router::handle_client_message(Clock::time_point now, bool stopping) {
  // ZMQ_STREAM delivers [routing id, bytes]: the next bytes of one connection.
  if (!client_.recv(identity_, zmq::recv_flags::dontwait)) return false;
  (void)client_.recv(frame_);
  client_id_.assign(view(identity_));
  if (frame_.size() == 0) {
    on_connection_event(client_id_, now);
    return true;
  }
  auto it = connections_.find(client_id_);
  if (it == connections_.end()) return true;  // bytes of a connection already closed
  if (it->second.closing) {
    close_connection(client_id_);
    return true;
  }
  to_peer_.clear();
  const bool ok = it->second.zmtp.consume(
      view(frame_), [&](const ZmtpMessage& m) { handle_request(client_id_, m, now, stopping); }, to_peer_);
  if (!to_peer_.empty()) (void)send_to_connection(client_id_, to_peer_);
  // A protocol violation or a frame over the limit: the connection is dropped, as libzmq's own
  // sockets do (the wire contract allows it past 64 KiB).
  if (!ok) close_connection(client_id_);
  return true;
}

void Router::on_connection_event(const std::string& client, Clock::time_point now) {
  if (connections_.erase(client) > 0) return;  // a known connection closed
  // A new connection (or the close of one this router dropped: then the hello cannot be sent).
  if (connections_.size() >= options_.max_clients) {
    close_connection(client);
    return;
  }
  if (!send_to_connection(client, ZmtpPeer::server_hello())) return;
  const ZmtpPeer::Limits limits{kTransportMaxBytes, cfg_.max_request_bytes};
  connections_.emplace(client, ClientConnection{ZmtpPeer(limits), now + options_.handshake_timeout});
}

void Router::handle_request(const std::string& client, const ZmtpMessage& message, Clock::time_point now,
                            bool stopping) {
  if (message.frames != 2 || !message.delimited) {
    reply_to_client(client, framing_error_reply_);
    return;
  }
  if (!message.body_held) {  // over max_request_bytes: counted as it streamed by, never held
    reply_to_client(client, encode_error(too_large_error(message.body_bytes, cfg_.max_request_bytes)));
    return;
  }
  const std::string_view body = message.body;
  // The common request takes the non-allocating scan; anything else (errors included) is judged
  // and worded by peek_route.
  RouteView info;
  RouteInfo peeked;
  if (auto scanned = scan_route(body, cfg_.max_request_bytes)) {
    info = *scanned;
  } else {
    auto route = peek_route(body, cfg_.max_request_bytes);
    if (const auto* err = std::get_if<DecodeError>(&route)) {
      reply_to_client(client, encode_error(*err));
      return;
    }
    peeked = std::move(std::get<RouteInfo>(route));
    info = RouteView{peeked.op, peeked.id, peeked.item};
  }
  if (info.op == Op::ping) {
    reply_to_client(client, encode_ok(info.id));
    return;
  }
  if (stopping) {
    reply_to_client(client,
                    encode_error(std::string(info.id), ErrorCode::unavailable, "router " + self_.name + " is stopping"));
    return;
  }
  if (pending_.full()) {
    reply_to_client(client, encode_error(std::string(info.id), ErrorCode::unavailable, full_reply_message_));
    return;
  }

  const std::size_t owner = slot_map_.owner_of_item(info.item);
  Node& node = nodes_[owner];
  PendingTable::Entry& entry = pending_.acquire(now + timeout_);
  const uint64_t token = entry.token;
  // With ZMQ_IMMEDIATE the first part fails (EAGAIN) when the node is not connected or its queue
  // is full; once it is queued, libzmq queues the rest of the message with it.
  if (!node.socket.send(zmq::const_buffer(&token, sizeof token), kMore) ||
      !node.socket.send(zmq::const_buffer(body.data(), body.size()), kLast)) {
    pending_.release(entry);
    reply_to_client(client, encode_error(std::string(info.id), ErrorCode::unavailable, node.refused_message));
    return;
  }
  entry.client.assign(client);  // assign, not move: the entry's buffers are reused
  entry.id.assign(info.id);
  entry.node = owner;
}

bool Router::handle_node_message(std::size_t n) {
  Node& node = nodes_[n];
  if (!node.socket.recv(frame_, zmq::recv_flags::dontwait)) return false;

  // Expected: [token (8 bytes), reply]. Anything else is a fault of the node: dropped.
  bool well_formed = frame_.size() == sizeof(uint64_t) && frame_.more();
  uint64_t token = 0;
  if (frame_.size() == sizeof token) std::memcpy(&token, frame_.data(), sizeof token);
  bool more = frame_.more();
  if (more) {
    (void)node.socket.recv(body_);
    more = body_.more();
  }
  while (more) {
    well_formed = false;
    (void)node.socket.recv(frame_);
    more = frame_.more();
  }
  if (!well_formed) return true;

  PendingTable::Entry* entry = pending_.find(token);
  // Unknown: the request timed out and was answered `unavailable`; the late reply is dropped.
  if (entry == nullptr || entry->node != n) return true;
  reply_to_client(entry->client, view(body_));
  pending_.release(*entry);
  return true;
}

void Router::reply_to_client(const std::string& client, std::string_view body) {
  // Framed straight into the message that is sent: the reply is copied once.
  zmq::message_t framed(ZmtpPeer::reply_size(body.size()));
  ZmtpPeer::write_reply(static_cast<char*>(framed.data()), body);
  (void)send_to_connection(client, framed);
}

bool Router::send_to_connection(const std::string& client, std::string_view bytes) {
  zmq::message_t m(bytes.data(), bytes.size());
  return send_to_connection(client, m);
}

bool Router::send_to_connection(const std::string& client, zmq::message_t& bytes) {
  // Never blocks: a full queue (a client that stopped reading) drops the message, as a ROUTER
  // does; a connection that is gone is EHOSTUNREACH.
  try {
    if (!client_.send(zmq::const_buffer(client.data(), client.size()), kMore)) return false;
    (void)client_.send(bytes, kLast);
    return true;
  } catch (const zmq::error_t& e) {
    if (e.num() == EHOSTUNREACH) return false;
    throw;
  }
}

void Router::close_connection(const std::string& client) {
  // On ZMQ_STREAM an empty message closes the connection.
  try {
    if (!client_.send(zmq::const_buffer(client.data(), client.size()), kMore)) {
      // Its queue is full: keep it (counted, its bytes ignored) and try again later.
      if (auto it = connections_.find(client); it != connections_.end()) it->second.closing = true;
      return;
    }
    (void)client_.send(zmq::const_buffer(kEmpty, 0), kLast);
  } catch (const zmq::error_t& e) {
    if (e.num() != EHOSTUNREACH) throw;
  }
  connections_.erase(client);
}

void Router::sweep_connections(Clock::time_point now) {
  if (now < next_connection_sweep_) return;
  next_connection_sweep_ = now + std::chrono::seconds(1);
  std::vector<std::string> to_close;
  for (const auto& [client, c] : connections_)
    if (c.closing || (!c.zmtp.ready() && c.handshake_deadline <= now)) to_close.push_back(client);
  for (const std::string& client : to_close) close_connection(client);
}

void Router::expire(Clock::time_point now) {
  pending_.expire(now, [this](PendingTable::Entry& e) {
    reply_to_client(e.client, encode_error(e.id, ErrorCode::unavailable, nodes_[e.node].timeout_message));
  });
}

void Router::close() {
  // A bounded linger lets the last replies reach their clients; the node sockets have nothing
  // worth flushing.
  client_.set(zmq::sockopt::linger, static_cast<int>(options_.close_linger.count()));
  client_.close();
  for (Node& n : nodes_) n.socket.close();
  poll_items_.clear();
}

}  // namespace bidmesh
