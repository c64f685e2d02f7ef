#include "nodes/router.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <utility>
#include <variant>

#include "nodes/node_wire.h"
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
  if (link.set_note(note)) {  // a change: logged once
    log_event(note.empty() ? LogLevel::info : LogLevel::warning, "digest_mismatch",
              note.empty() ? std::string("every bid node accepts this router's mesh config digest again")
                           : note + ": make the hosts' configs agree (docs/deployment.md)");
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
  if (info.op == Op::list && !stopping) {
    handle_list(now, client, body, who);
    return;
  }
  if (!op_names_item(info.op) && info.op != Op::list) {
    // ping and slots: answered here, judged whole (`forbidden` included).
    std::optional<ErrorCode> outcome;
    const std::string reply = ClientFront::local_reply(info.op, info.id, who, slots_, &outcome);
    metrics_.requests.count(info.op, outcome);
    reply_to_client(client, reply);
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
  entry.gather = PendingTable::kNoGather;
  if (!send_to_node(node, token, body)) {
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

bool Router::send_to_node(Node& node, uint64_t token, std::string_view body) {
  // With ZMQ_IMMEDIATE the first part fails (EAGAIN) when the node is not connected or its queue
  // is full; once it is queued, libzmq queues the rest of the message with it.
  const std::string token_frame = node_wire::token_frame(token);  // 9 bytes: no allocation
  return node.socket.send(zmq::const_buffer(token_frame.data(), token_frame.size()), kMore) &&
         node.socket.send(zmq::const_buffer(&config_digest_, sizeof config_digest_), kMore) &&
         node.socket.send(zmq::const_buffer(principal_frame_.data(), principal_frame_.size()), kMore) &&
         node.socket.send(zmq::const_buffer(body.data(), body.size()), kLast);
}

void Router::handle_list(Clock::time_point now, std::string_view client, std::string_view body, const Principal* who) {
  // Judged whole here (the pages are merged here): fields, then `forbidden`.
  auto decoded = decode_request(body, unix_now_ms(), cfg_.max_request_bytes);
  if (const auto* err = std::get_if<DecodeError>(&decoded)) {
    metrics_.requests.error(Op::list, err->code).Increment();
    reply_to_client(client, encode_error(*err));
    return;
  }
  const Request& r = std::get<Request>(decoded);
  if (auto forbidden = authorize(who != nullptr ? *who : Principal{}, r)) {
    metrics_.requests.error(Op::list, ErrorCode::forbidden).Increment();
    reply_to_client(client, encode_error(r.id, ErrorCode::forbidden, *forbidden));
    return;
  }
  if (live_gathers_ >= kMaxListsInFlight || pending_.free_entries() < nodes_.size()) {
    metrics_.requests.error(Op::list, ErrorCode::unavailable).Increment();
    reply_to_client(client, encode_error(r.id, ErrorCode::unavailable, full_reply_message_));
    return;
  }
  uint32_t g;
  if (!free_gathers_.empty()) {
    g = free_gathers_.back();
    free_gathers_.pop_back();
  } else {
    g = static_cast<uint32_t>(gathers_.size());
    gathers_.emplace_back();
  }
  ++live_gathers_;
  ListGather& gather = gathers_[g];
  gather.client.assign(client);
  gather.id = r.id;
  gather.limit = r.limit;
  gather.pages.assign(nodes_.size(), std::nullopt);
  gather.waiting = nodes_.size();
  principal_frame_.clear();
  if (mesh_key_) encode_principal_into(who != nullptr ? *who : Principal{}, principal_frame_);
  std::vector<std::size_t> refused;
  for (std::size_t n = 0; n < nodes_.size(); ++n) {
    PendingTable::Entry& entry = pending_.acquire(now + timeout_);
    if (!send_to_node(nodes_[n], entry.token, body)) {
      pending_.release(entry);
      refused.push_back(n);
      continue;
    }
    entry.client.assign(client);
    entry.id = r.id;
    entry.node = n;
    entry.op = Op::list;
    entry.gather = g;
  }
  // Not connected: missing at once (the last of them may answer the client).
  for (std::size_t n : refused) gather_page(g, n, std::nullopt);
}

void Router::gather_page(uint32_t g, std::size_t node, std::optional<std::string> page) {
  ListGather& gather = gathers_[g];
  gather.pages[node] = std::move(page);
  if (--gather.waiting > 0) return;

  // Every node answered or is missing: merge the sorted pages and take the first `limit`.
  std::vector<ListPage> pages;
  std::vector<std::string> missing;
  bool more = false;
  for (std::size_t n = 0; n < gather.pages.size(); ++n) {
    std::optional<ListPage> p = gather.pages[n] ? decode_list_ok(*gather.pages[n]) : std::nullopt;
    // A node's error (its digest refused, its store failing) leaves its items out, named.
    if (!p || p->partial) {
      missing.push_back(nodes_[n].name);
      continue;
    }
    more = more || p->cursor.has_value();
    pages.push_back(std::move(*p));
  }
  std::vector<std::size_t> next(pages.size(), 0);
  std::vector<std::string_view> taken;
  const ListEntry* last = nullptr;
  for (;;) {
    std::size_t best = pages.size();
    for (std::size_t i = 0; i < pages.size(); ++i) {
      if (next[i] == pages[i].entries.size()) continue;
      if (best == pages.size() || list_key_less(pages[i].entries[next[i]].key, pages[best].entries[next[best]].key))
        best = i;
    }
    if (best == pages.size()) break;  // every page used up
    if (taken.size() == gather.limit) {
      more = true;  // entries left past the page
      break;
    }
    last = &pages[best].entries[next[best]++];
    taken.push_back(last->encoded);
  }
  const std::optional<std::string> cursor =
      more && last != nullptr ? std::optional<std::string>(encode_cursor(last->key)) : std::nullopt;
  metrics_.requests.ok(Op::list).Increment();
  reply_to_client(gather.client, encode_list_ok(gather.id, taken, cursor, !missing.empty(), missing));
  gather.pages.clear();
  free_gathers_.push_back(g);
  --live_gathers_;
}

bool Router::handle_node_message(std::size_t n) {
  Node& node = nodes_[n];
  if (!node.socket.recv(frame_, zmq::recv_flags::dontwait)) return false;

  uint64_t token = 0;
  std::string_view reply;
  std::optional<uint64_t> their_digest;
  if (!frame_.more()) {
    // One frame (node_wire.h): read whole, so a node that dies now cannot leave half of it.
    const std::optional<node_wire::Reply> r = node_wire::parse_reply(view(frame_));
    if (!r) return true;  // a fault of the node: dropped
    token = r->token;
    their_digest = r->node_digest;
    reply = r->body;
  } else {
    // A bid node older than node_wire.h: [token frame, reply], or [token frame, reply, the node's
    // config digest (8 bytes)] when it refused this router's digest. Anything else: dropped.
    bool well_formed = frame_.size() == node_wire::kTokenBytes || frame_.size() == node_wire::kTokenFrameBytes;
    if (well_formed) std::memcpy(&token, frame_.data(), sizeof token);
    (void)node.socket.recv(body_);
    bool more = body_.more();
    if (more) {
      (void)node.socket.recv(frame_);
      more = frame_.more();
      if (frame_.size() == sizeof(uint64_t) && !more) {
        uint64_t digest = 0;
        std::memcpy(&digest, frame_.data(), sizeof digest);
        their_digest = digest;
      } else {
        well_formed = false;
      }
    }
    discard_rest(node.socket, frame_, more);
    if (!well_formed) return true;
    reply = view(body_);
  }
  if (their_digest) {
    node.their_digest = *their_digest;
    if (!node.digest_refused_at) next_note_check_ = {};  // a new refusal is shown at once
    node.digest_refused_at = PendingTable::Clock::now();
    note_due_ = true;
  }

  PendingTable::Entry* entry = pending_.find(token);
  // Unknown: the request timed out and was answered `unavailable`; the late reply is dropped.
  if (entry == nullptr || entry->node != n) return true;
  if (entry->gather != PendingTable::kNoGather) {
    const uint32_t g = entry->gather;
    pending_.release(*entry);
    gather_page(g, n, std::string(reply));
    return true;
  }
  metrics_.requests.answered(entry->op).Increment();
  reply_to_client(entry->client, reply);
  pending_.release(*entry);
  return true;
}

void Router::expire(Clock::time_point now) {
  pending_.expire(now, [this](PendingTable::Entry& e) {
    metrics_.timeouts.Increment();
    if (e.gather != PendingTable::kNoGather) {
      // Released by expire() after this call; the gather no longer needs it.
      const uint32_t g = e.gather;
      e.gather = PendingTable::kNoGather;
      gather_page(g, e.node, std::nullopt);
      return;
    }
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
