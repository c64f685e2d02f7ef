// DirectEndpoint: a bid node's client endpoint (`client_listen`, wire contract v1.2 "Direct
// clients"), where clients send requests straight to the node that owns their item.
//
// The endpoint is a ClientFront (nodes/client_front.h) with the router's options, so limits,
// framing, CURVE/ZAP and replies are the router's. Each request is judged in the contract's
// order (docs/protocol.md): size, decoding and fields (decode_request, as for the router's
// requests), then `moved` when another bid node owns the item's slot (the owner's `node` and
// `endpoint`), then `forbidden` (the sender's roles, looked up per request so a revoked key is
// refused at once), then, in the store, `conflict` and the item's state. `ping` and `slots` are
// answered here. What passes joins the node's group-commit batch with the router's requests.
// `list` (v2) is answered from this node's own items only: the reply is partial, its `missing`
// names every other bid node (a router merges all of them; docs/protocol.md "Listing").
//
// Thread-compatible: belongs to the bid node's serving thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include <zmq.hpp>

#include "nodes/client_front.h"
#include "protocol/config.h"
#include "protocol/messages.h"
#include "protocol/slot_directory.h"

namespace bidmesh {

class DirectEndpoint {
 public:
  enum class Got {
    none,       // nothing waiting
    answered,   // a framing error, answered by the front already
    reply,      // judged here: send `reply` to the identity
    request,    // `request` is this node's to apply: it joins the batch
  };

  // REQUIRES: self is a bid node of cfg with a client_listen; security given exactly when cfg
  // runs with curve (then a ZapHandler with the allow list serves ctx before bind()).
  DirectEndpoint(zmq::context_t& ctx, const MeshConfig& cfg, const NodeConfig& self,
                 std::optional<ClientSecurity> security);

  std::optional<std::string> bind() { return front_.bind(endpoint_); }

  // Reads and judges one message (see above). `identity` is the client's routing id. For the
  // metrics: `op` is the request's op when it decoded, and with Got::reply, `outcome` is what
  // `reply` says (nullopt for ok, else its error code).
  Got receive(zmq::message_t& identity, uint64_t now_ms, Request& request, std::string& reply,
              std::optional<ErrorCode>& outcome, std::optional<Op>& op);

  ClientFront& front() { return front_; }

 private:
  const std::string endpoint_;
  const std::size_t max_request_bytes_;
  const SlotDirectory directory_;
  const std::size_t self_;  // this node's index in the directory
  std::vector<std::string> other_bid_nodes_;  // a list reply's `missing`
  ClientFront front_;
  zmq::message_t body_;     // reused for every message
};

}  // namespace bidmesh
