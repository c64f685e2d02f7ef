#include "nodes/client_front.h"

#include <utility>

#include "protocol/errors.h"
#include "security/zap.h"

namespace bidmesh {

namespace {
constexpr zmq::send_flags kMore = zmq::send_flags::sndmore | zmq::send_flags::dontwait;
constexpr zmq::send_flags kLast = zmq::send_flags::dontwait;
// With security off every client may do everything (the wire contract, v1).
const Principal kEveryone{"", kAllRoles};
}  // namespace

void set_peer_limits(zmq::socket_t& socket, int64_t max_message_bytes, std::chrono::milliseconds handshake_timeout,
                     std::chrono::milliseconds heartbeat_interval, std::chrono::milliseconds heartbeat_timeout) {
  socket.set(zmq::sockopt::maxmsgsize, max_message_bytes);
  socket.set(zmq::sockopt::handshake_ivl, static_cast<int>(handshake_timeout.count()));
  socket.set(zmq::sockopt::heartbeat_ivl, static_cast<int>(heartbeat_interval.count()));
  socket.set(zmq::sockopt::heartbeat_timeout, static_cast<int>(heartbeat_timeout.count()));
  socket.set(zmq::sockopt::heartbeat_ttl, static_cast<int>(heartbeat_timeout.count()));
}

void discard_rest(zmq::socket_t& socket, zmq::message_t& scratch, bool more) {
  while (more) {
    (void)socket.recv(scratch);
    more = scratch.more();
  }
}

std::variant<ClientSecurity, std::string> load_client_security(const MeshConfig& cfg) {
  ClientSecurity security;
  auto mesh = read_secret_certificate(cfg.server_certificate);
  if (auto* error = std::get_if<std::string>(&mesh)) return "server_certificate: " + *error;
  security.mesh = std::move(std::get<Certificate>(mesh));
  auto clients = reload_allowed_clients(cfg);
  if (auto* error = std::get_if<std::string>(&clients)) return *error;
  security.clients = std::move(std::get<std::shared_ptr<const AllowList>>(clients));
  return security;
}

std::variant<std::shared_ptr<const AllowList>, std::string> reload_allowed_clients(const MeshConfig& cfg) {
  auto clients = load_allow_list(cfg.clients_dir);
  if (auto* error = std::get_if<std::string>(&clients)) return "clients_dir: " + *error;
  return std::make_shared<const AllowList>(std::move(std::get<AllowList>(clients)));
}

ClientFront::ClientFront(zmq::context_t& ctx, ClientFrontOptions options, std::optional<ClientSecurity> security)
    : ctx_(ctx),
      options_(options),
      security_(std::move(security)),
      framing_error_reply_(encode_error(std::nullopt, ErrorCode::bad_request,
                                        "a request is one frame after an empty delimiter frame")) {}

std::optional<std::string> ClientFront::bind(const std::string& endpoint) {
  try {
    socket_ = zmq::socket_t(ctx_, zmq::socket_type::router);
    socket_.set(zmq::sockopt::sndhwm, options_.client_hwm);
    socket_.set(zmq::sockopt::rcvhwm, options_.client_read_hwm);
    socket_.set(zmq::sockopt::linger, 0);
    set_peer_limits(socket_, static_cast<int64_t>(kTransportMaxBytes), options_.handshake_timeout,
                    options_.heartbeat_interval, options_.heartbeat_timeout);
    if (security_) make_curve_server(socket_, security_->mesh, kZapDomainClients);
    socket_.bind(endpoint);
  } catch (const zmq::error_t& e) {
    return "cannot bind client endpoint " + endpoint + ": " + e.what();
  }
  return std::nullopt;
}

ClientFront::Received ClientFront::receive(zmq::message_t& identity, zmq::message_t& body) {
  // ROUTER delivers [routing id, frames...]; a request is ["", body].
  if (!socket_.recv(identity, zmq::recv_flags::dontwait)) return Received::none;
  ++messages_;
  if (!identity.more()) return Received::none;  // cannot happen on ROUTER; nothing to answer
  (void)socket_.recv(scratch_);
  if (scratch_.size() != 0 || !scratch_.more()) {
    discard_rest(socket_, body, scratch_.more());
    reply(frame_view(identity), framing_error_reply_);
    return Received::bad_framing;
  }
  (void)socket_.recv(body);
  if (body.more()) {
    discard_rest(socket_, scratch_, true);
    reply(frame_view(identity), framing_error_reply_);
    return Received::bad_framing;
  }
  return Received::request;
}

const Principal* ClientFront::sender(const zmq::message_t& body) const {
  if (!security_) return &kEveryone;
  // Set by the ZAP handler at the handshake: the client's public key in Z85.
  const char* key = zmq_msg_gets(body.handle(), "User-Id");
  return key != nullptr && security_->clients ? security_->clients->find(key) : nullptr;
}

std::string ClientFront::local_reply(Op op, std::string_view id, const Principal* who, const SlotDirectory& slots,
                                     std::optional<ErrorCode>* outcome) {
  // No fields beyond op and id, so the endpoint judges the request whole, `forbidden` included.
  Request request;
  request.op = op;
  if (auto forbidden = authorize(who != nullptr ? *who : Principal{}, request)) {
    *outcome = ErrorCode::forbidden;
    return encode_error(std::string(id), ErrorCode::forbidden, *forbidden);
  }
  *outcome = std::nullopt;
  return op == Op::slots ? slots.slots_reply(id) : encode_ok(id);
}

void ClientFront::reply(std::string_view identity, std::string_view body) {
  if (!socket_.send(zmq::const_buffer(identity.data(), identity.size()), kMore)) return;
  (void)socket_.send(zmq::const_buffer(nullptr, 0), kMore);
  (void)socket_.send(zmq::const_buffer(body.data(), body.size()), kLast);
}

void ClientFront::set_allowed_clients(std::shared_ptr<const AllowList> clients) {
  if (security_) security_->clients = std::move(clients);
}

void ClientFront::close() {
  if (!socket_) return;
  socket_.set(zmq::sockopt::linger, static_cast<int>(options_.close_linger.count()));
  socket_.close();
}

}  // namespace bidmesh
