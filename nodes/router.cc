#include "nodes/router.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <variant>

#include "protocol/access.h"
#include "protocol/control.h"
#include "protocol/errors.h"
#include "protocol/log.h"
#include "protocol/messages.h"
#include "security/zap.h"

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

std::string_view view(const zmq::message_t& m) { return frame_view(m); }

}  // namespace


Router::Router(zmq::context_t& ctx, const MeshConfig& cfg, const NodeConfig& self, RouterOptions options,
               std::optional<RouterSecurity> security)
    : ctx_(ctx),
      cfg_(cfg),
      self_(self),
      options_(options),
      own_registry_(options.metrics ? nullptr : std::make_unique<MetricsRegistry>()),
      own_metrics_(options.metrics ? nullptr : std::make_unique<RouterMetrics>(own_registry_->registry())),
      metrics_(options.metrics ? *options.metrics : *own_metrics_),
      slots_(cfg),
      timeout_(cfg.request_timeout_ms),
      front_(ctx, options, security),  // its ClientFrontOptions part
      pending_(options.max_pending),
      mesh_key_(security ? std::optional<Certificate>(security->mesh) : std::nullopt),
      config_digest_(cfg.digest()),
      full_reply_message_("router " + self.name + " has too many requests in flight") {}

Router::~Router() = default;

void Router::set_allowed_clients(std::shared_ptr<const AllowList> clients) {
  front_.set_allowed_clients(std::move(clients));
}

std::optional<std::string> Router::bind() {
  if (auto error = front_.bind(self_.listen)) return error;
  connections_.emplace(ctx_, ConnectionCounter::start_monitor(front_.socket()), metrics_.client_connections);

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
    // Replies are larger than requests: a `history` of 1000 events is about 200 KB.
    set_peer_limits(node.socket, kMaxNodeReplyBytes, options_.handshake_timeout, options_.node_heartbeat_interval,
                    options_.node_heartbeat_timeout);
    if (mesh_key_ && !endpoint_is_local(n->listen)) make_curve_client(node.socket, *mesh_key_, mesh_key_->public_key);
    // A restarted node is found again within kNodeReconnectMs (libzmq's default is 100 ms, which
    // alone would miss the restart target of docs/benchmarks.md); refused connects are cheap.
    node.socket.set(zmq::sockopt::reconnect_ivl, kNodeReconnectMs);
    // A connect whose SYNs are lost (the link is cut) is given up and tried afresh, so the link
    // comes back within about this much of the network healing, not at TCP's next SYN backoff.
    node.socket.set(zmq::sockopt::connect_timeout, kNodeConnectTimeoutMs);
    try {
      node.socket.connect(n->listen);
    } catch (const zmq::error_t& e) {
      return "cannot connect to bid node " + n->name + " at " + n->listen + ": " + e.what();
    }
    nodes_.push_back(std::move(node));
  }

  poll_items_.clear();
  poll_items_.push_back({front_.socket().handle(), 0, ZMQ_POLLIN, 0});
  for (Node& n : nodes_) poll_items_.push_back({n.socket.handle(), 0, ZMQ_POLLIN, 0});
  return std::nullopt;
}

std::string Router::client_endpoint() const { return front_.endpoint(); }

void Router::run(SupervisorLink& link, const std::function<bool()>& should_stop,
                 const std::function<void()>& each_turn) {
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
    update_gauges(Clock::now());
    if (note_due_ && Clock::now() >= next_note_check_) update_note(link, Clock::now());
    link.tick();
    if (each_turn) each_turn();
  }
  close();
}

void Router::update_note(SupervisorLink& link, Clock::time_point now) {
  std::string note;
  bool holding = false;
  for (Node& node : nodes_) {
    if (!node.digest_refused_at) continue;
    if (now - *node.digest_refused_at > kDigestNoteHold) {
      node.digest_refused_at.reset();
      continue;
    }
    holding = true;
    char digests[80];
    std::snprintf(digests, sizeof digests, "%016llx there, %016llx here",
                  static_cast<unsigned long long>(node.their_digest), static_cast<unsigned long long>(config_digest_));
    note += (note.empty() ? "" : "; ") + std::string("bid node ") + node.name +
            " refuses this router: mesh config digest " + digests;
  }
  if (note != note_) {
    log_event(note.empty() ? LogLevel::info : LogLevel::warning, "digest_mismatch",
              note.empty() ? std::string("every bid node accepts this router's mesh config digest again")
                           : note + ": make the hosts' configs agree (docs/deployment.md)");
    note_ = note;
    link.set_note(note);
  }
  // While a note is shown it is checked once a second, to clear it kDigestNoteHold after the
  // last refusal.
  note_due_ = holding;
  next_note_check_ = now + std::chrono::seconds(1);
}

void Router::update_gauges(Clock::time_point now) {
  metrics_.in_flight.Set(static_cast<double>(pending_.size()));
  if (now < next_connection_poll_) return;
  next_connection_poll_ = now + kConnectionPollInterval;
  connections_->poll();
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
  switch (front_.receive(identity_, body_)) {
    case ClientFront::Received::none: return false;
    case ClientFront::Received::bad_framing:
      metrics_.requests.error(std::nullopt, ErrorCode::bad_request).Increment();
      return true;
    case ClientFront::Received::request: break;
  }
  handle_request(now, stopping);
  return true;
}

void Router::handle_request(Clock::time_point now, bool stopping) {
  const std::string_view client = view(identity_);
  const std::string_view body = view(body_);
  if (body.size() > cfg_.max_request_bytes) {
    metrics_.requests.error(std::nullopt, ErrorCode::too_large).Increment();
    reply_to_client(client, encode_error(too_large_error(body.size(), cfg_.max_request_bytes)));
    return;
  }
  // The common request takes the non-allocating scan; anything else (errors included) is judged
  // and worded by peek_route.
  RouteView info;
  RouteInfo peeked;
  if (auto scanned = scan_route(body, cfg_.max_request_bytes)) {
    info = *scanned;
  } else {
    auto route = peek_route(body, cfg_.max_request_bytes);
    if (const auto* err = std::get_if<DecodeError>(&route)) {
      metrics_.requests.error(std::nullopt, err->code).Increment();
      reply_to_client(client, encode_error(*err));
      return;
    }
    peeked = std::move(std::get<RouteInfo>(route));
    info = RouteView{peeked.op, peeked.id, peeked.item};
  }
  const Principal* who = front_.sender(body_);
  if (!op_names_item(info.op)) {
    // ping and slots: answered here, judged whole (`forbidden` included).
    if (who != nullptr) metrics_.requests.ok(info.op).Increment();
    else metrics_.requests.error(info.op, ErrorCode::forbidden).Increment();
    reply_to_client(client, ClientFront::local_reply(info.op, info.id, who, slots_));
    return;
  }
  // Built in place: the buffer keeps its capacity, so this allocates nothing per request. With
  // security off the frame is empty (every role). A revoked key's requests go on to the owner
  // with no role at all, which answers `forbidden` once it has judged the fields (the
  // contract's order).
  principal_frame_.clear();
  if (mesh_key_) encode_principal_into(who != nullptr ? *who : Principal{}, principal_frame_);
  if (stopping || pending_.full()) metrics_.requests.error(info.op, ErrorCode::unavailable).Increment();
  if (stopping) {
    reply_to_client(client,
                    encode_error(std::string(info.id), ErrorCode::unavailable, "router " + self_.name + " is stopping"));
    return;
  }
  if (pending_.full()) {
    reply_to_client(client, encode_error(std::string(info.id), ErrorCode::unavailable, full_reply_message_));
    return;
  }

  const std::size_t owner = slots_.owner_of_item(info.item);
  Node& node = nodes_[owner];
  PendingTable::Entry& entry = pending_.acquire(now + timeout_);
  const uint64_t token = entry.token;
  // With ZMQ_IMMEDIATE the first part fails (EAGAIN) when the node is not connected or its queue
  // is full; once it is queued, libzmq queues the rest of the message with it.
  if (!node.socket.send(zmq::const_buffer(&token, sizeof token), kMore) ||
      !node.socket.send(zmq::const_buffer(&config_digest_, sizeof config_digest_), kMore) ||
      !node.socket.send(zmq::const_buffer(principal_frame_.data(), principal_frame_.size()), kMore) ||
      !node.socket.send(zmq::const_buffer(body.data(), body.size()), kLast)) {
    pending_.release(entry);
    metrics_.requests.error(info.op, ErrorCode::unavailable).Increment();
    reply_to_client(client, encode_error(std::string(info.id), ErrorCode::unavailable, node.refused_message));
    return;
  }
  entry.client.assign(client);  // assign, not move: the entry's buffers are reused
  entry.id.assign(info.id);
  entry.node = owner;
  entry.op = info.op;
}

bool Router::handle_node_message(std::size_t n) {
  Node& node = nodes_[n];
  if (!node.socket.recv(frame_, zmq::recv_flags::dontwait)) return false;

  // Expected: [token (8 bytes), reply], or [token, reply, the node's config digest (8 bytes)]
  // when the node refused this router's digest. Anything else is a fault of the node: dropped.
  bool well_formed = frame_.size() == sizeof(uint64_t) && frame_.more();
  uint64_t token = 0;
  if (frame_.size() == sizeof token) std::memcpy(&token, frame_.data(), sizeof token);
  bool more = frame_.more();
  if (more) {
    (void)node.socket.recv(body_);
    more = body_.more();
  }
  if (more) {
    (void)node.socket.recv(frame_);
    more = frame_.more();
    if (frame_.size() == sizeof node.their_digest && !more) {
      std::memcpy(&node.their_digest, frame_.data(), sizeof node.their_digest);
      if (!node.digest_refused_at) next_note_check_ = {};  // a new refusal is shown at once
      node.digest_refused_at = PendingTable::Clock::now();
      note_due_ = true;
    } else {
      well_formed = false;
    }
  }
  discard_rest(node.socket, frame_, more);
  if (!well_formed) return true;

  PendingTable::Entry* entry = pending_.find(token);
  // Unknown: the request timed out and was answered `unavailable`; the late reply is dropped.
  if (entry == nullptr || entry->node != n) return true;
  metrics_.requests.answered(entry->op).Increment();
  reply_to_client(entry->client, view(body_));
  pending_.release(*entry);
  return true;
}

void Router::expire(Clock::time_point now) {
  pending_.expire(now, [this](PendingTable::Entry& e) {
    metrics_.timeouts.Increment();
    metrics_.requests.error(e.op, ErrorCode::unavailable).Increment();
    reply_to_client(e.client, encode_error(e.id, ErrorCode::unavailable, nodes_[e.node].timeout_message));
  });
}

void Router::close() {
  // A bounded linger lets the last replies reach their clients; the node sockets have nothing
  // worth flushing.
  front_.close();
  connections_.reset();
  for (Node& n : nodes_) n.socket.close();
  poll_items_.clear();
}

}  // namespace bidmesh
