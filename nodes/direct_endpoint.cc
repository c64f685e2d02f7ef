#include "nodes/direct_endpoint.h"

#include <utility>
#include <variant>

#include "nodes/router.h"
#include "protocol/access.h"

namespace bidmesh {

DirectEndpoint::DirectEndpoint(zmq::context_t& ctx, const MeshConfig& cfg, const NodeConfig& self,
                               std::optional<ClientSecurity> security)
    : endpoint_(self.client_listen),
      max_request_bytes_(cfg.max_request_bytes),
      directory_(cfg),
      self_(directory_.index_of(self.name)),
      // The router's own options: the same limits on both client endpoints.
      front_(ctx, RouterOptions{}, std::move(security)) {
  for (const NodeConfig* n : cfg.bid_nodes())
    if (n->name != self.name) other_bid_nodes_.push_back(n->name);
}

DirectEndpoint::Got DirectEndpoint::receive(zmq::message_t& identity, uint64_t now_ms, Request& request,
                                            std::string& reply, std::optional<ErrorCode>& outcome,
                                            std::optional<Op>& op) {
  switch (front_.receive(identity, body_)) {
    case ClientFront::Received::none: return Got::none;
    case ClientFront::Received::bad_framing: return Got::answered;
    case ClientFront::Received::request: break;
  }
  op.reset();
  auto decoded = decode_request(frame_view(body_), now_ms, max_request_bytes_);
  if (auto* err = std::get_if<DecodeError>(&decoded)) {
    reply = encode_error(*err);
    outcome = err->code;
    return Got::reply;
  }
  Request& r = std::get<Request>(decoded);
  op = r.op;
  const Principal* who = front_.sender(body_);
  if (r.op == Op::list) {
    if (auto forbidden = authorize(who != nullptr ? *who : Principal{}, r)) {
      reply = encode_error(r.id, ErrorCode::forbidden, *forbidden);
      outcome = ErrorCode::forbidden;
      return Got::reply;
    }
    r.list_missing = other_bid_nodes_;  // this node's items only: a partial page
    request = std::move(r);
    return Got::request;
  }
  if (!op_names_item(r.op)) {
    reply = ClientFront::local_reply(r.op, r.id, who, directory_, &outcome);
    return Got::reply;
  }
  if (const std::size_t owner = directory_.owner_of_item(r.item); owner != self_) {
    reply = directory_.moved_reply(r.id, r.item, owner);
    outcome = ErrorCode::moved;
    return Got::reply;
  }
  // Judged after the fields and `moved`, before anything of the item; not remembered.
  if (auto forbidden = authorize(who != nullptr ? *who : Principal{}, r)) {
    reply = encode_error(r.id, ErrorCode::forbidden, *forbidden);
    outcome = ErrorCode::forbidden;
    return Got::reply;
  }
  request = std::move(r);
  return Got::request;
}

}  // namespace bidmesh
