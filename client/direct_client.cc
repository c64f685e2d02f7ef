// DirectClient: slot routing with the router as fallback (see direct_client.h).
#include "client/direct_client.h"

#include <cerrno>
#include <iterator>
#include <utility>
#include <vector>

#include <zmq_addon.hpp>

namespace bidmesh {

namespace {
// Waits up to `wait` for `events` on `sock`; false on timeout. EINTR goes on until the deadline.
bool wait_for(zmq::socket_t& sock, short events, std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (;;) {
    zmq::pollitem_t items[] = {{sock.handle(), 0, events, 0}};
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    try {
      zmq::poll(items, 1, std::max(left, std::chrono::milliseconds(0)));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR && left.count() > 0) continue;
      if (e.num() != EINTR) throw;
    }
    if (items[0].revents & events) return true;
    if (left.count() <= 0 || std::chrono::steady_clock::now() >= deadline) return false;
  }
}

bool has_error(const std::optional<Reply>& r, std::string_view code) { return r && !r->ok && r->error == code; }
}  // namespace

DirectClient::DirectClient(zmq::context_t& ctx, std::string router_endpoint, DirectOptions options,
                           std::string id_prefix, std::optional<CurveKeys> curve)
    : ctx_(ctx),
      opt_(options),
      curve_(curve),
      router_(ctx, std::move(router_endpoint), options.timeout_ms, options.retries, std::move(id_prefix), std::move(curve)) {}

DirectClient::~DirectClient() = default;

void DirectClient::open(Link& l, const std::string& endpoint) {
  l.sock.reset();  // linger 0: whatever the old socket held is dropped
  l.sock = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::req);
  l.sock->set(zmq::sockopt::linger, 0);
  l.sock->set(zmq::sockopt::maxmsgsize, kClientMaxReplyBytes);
  // Queue nothing on a connection that is not up: POLLOUT then tells whether the node is there.
  l.sock->set(zmq::sockopt::immediate, 1);
  if (curve_) apply_curve_keys(*l.sock, *curve_);
  l.sock->connect(endpoint);
}

DirectClient::Link& DirectClient::link(const std::string& endpoint) {
  auto [it, added] = links_.try_emplace(endpoint);
  if (added) open(it->second, endpoint);
  return it->second;
}

void DirectClient::note_fallback(Link& l, bool hold) {
  ++stats_.fallbacks;
  l.down = true;
  if (hold) l.held_until = clock::now() + std::chrono::milliseconds(opt_.holdoff_ms);
}

std::optional<std::string> DirectClient::exchange(Link& l, const std::string& endpoint, std::string_view frame) {
  // A node believed up may be reconnecting (a new socket, or a restart): give it connect_wait_ms.
  // A node marked down is only probed, so its items cost nothing while it is away.
  const auto wait = l.down ? std::chrono::milliseconds(0) : std::chrono::milliseconds(opt_.connect_wait_ms);
  if (!wait_for(*l.sock, ZMQ_POLLOUT, wait)) {
    note_fallback(l, false);
    return std::nullopt;
  }
  ++last_attempts_;
  std::optional<std::size_t> sent;
  try {
    sent = l.sock->send(zmq::buffer(frame.data(), frame.size()), zmq::send_flags::dontwait);
  } catch (const zmq::error_t&) {
    sent.reset();
  }
  if (!sent) {
    open(l, endpoint);
    note_fallback(l, false);
    return std::nullopt;
  }
  if (wait_for(*l.sock, ZMQ_POLLIN, std::chrono::milliseconds(opt_.node_timeout_ms))) {
    std::vector<zmq::message_t> parts;
    try {
      if (zmq::recv_multipart(*l.sock, std::back_inserter(parts), zmq::recv_flags::dontwait) && !parts.empty()) {
        l.down = false;
        return parts.front().to_string();
      }
    } catch (const zmq::error_t&) {
    }
  }
  // No reply: the REQ socket is stuck in its receive state. Reopen it (it reconnects in the
  // background while the node is held off) and send this request through the router.
  open(l, endpoint);
  note_fallback(l, true);
  return std::nullopt;
}

std::optional<std::string> DirectClient::via_router(std::string_view frame) {
  auto reply = router_.call_raw(frame);
  last_attempts_ += router_.last_attempts();
  if (reply) {
    ++stats_.router;
    last_path_ = "router";
  } else {
    last_path_ = "none";
  }
  return reply;
}

bool DirectClient::refresh_slots() {
  const std::string frame = encode_slots_request(router_.next_id());
  auto take = [&](const std::optional<std::string>& raw) {
    if (!raw) return false;
    std::string why;
    auto t = decode_slots_reply(*raw, &why);
    if (!t) {
      // A refusal from the router is an older mesh: route everything through it from now on.
      auto r = decode_reply(*raw);
      if (r && !r->ok && r->error == error_code_name(ErrorCode::bad_request)) slots_refused_ = true;
      return false;
    }
    table_ = std::move(t);
    slots_refused_ = false;
    ++stats_.refreshes;
    return true;
  };
  last_refresh_ = clock::now();
  if (take(router_.call_raw(frame))) return true;
  // The router is gone: every bid node answers `slots` too.
  if (!table_) return false;
  for (const auto& endpoint : std::vector<std::string>(table_->endpoints())) {
    Link& l = link(endpoint);
    if (clock::now() < l.held_until) continue;
    if (take(exchange(l, endpoint, frame))) return true;
  }
  return false;
}

std::optional<std::string> DirectClient::call_raw(std::string_view frame) {
  last_attempts_ = 0;
  std::string item;
  if (auto route = scan_route(frame)) {
    item = std::string(route->item);
  } else if (auto info = peek_route(frame); std::holds_alternative<RouteInfo>(info)) {
    item = std::get<RouteInfo>(info).item;
  }
  if (item.empty()) return via_router(frame);  // ping, or a frame the router must judge
  if (!table_ && !slots_refused_) refresh_slots();
  if (!table_) return via_router(frame);

  const std::size_t owner = table_->endpoint_of_item(item);
  if (owner == SlotTable::kViaRouter) return via_router(frame);  // its node has no client endpoint
  std::string endpoint = table_->endpoints()[owner];
  for (int hop = 0; hop <= kMaxMoved; ++hop) {
    Link& l = link(endpoint);
    if (clock::now() < l.held_until) break;
    auto raw = exchange(l, endpoint, frame);
    if (!raw) break;
    auto reply = decode_reply(*raw);
    if (has_error(reply, "moved")) {
      ++stats_.moved;
      auto to = reply->str("endpoint");
      refresh_slots();
      if (hop == kMaxMoved || !to || to->empty()) break;
      endpoint = *to;
      continue;
    }
    if (has_error(reply, error_code_name(ErrorCode::unavailable)) ||
        has_error(reply, error_code_name(ErrorCode::internal))) {
      ++stats_.fallbacks;  // the node is stopping, or faulty: the router retries with backoff
      break;
    }
    ++stats_.direct;
    last_path_ = "direct";
    return raw;
  }
  // Falling back: the map may be stale (a node moved to another endpoint); look again, at most
  // once per hold-off.
  if (clock::now() - last_refresh_ >= std::chrono::milliseconds(opt_.holdoff_ms)) refresh_slots();
  return via_router(frame);
}

std::optional<Reply> DirectClient::call(const Request& request) {
  Request r = request;
  if (r.id.empty()) r.id = next_id();
  last_id_ = r.id;
  auto raw = call_raw(encode_request(r));
  if (!raw) return std::nullopt;
  return decode_reply_or_bad(*raw);
}

}  // namespace bidmesh
