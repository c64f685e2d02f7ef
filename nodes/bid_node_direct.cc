// BidNode: the client endpoint for direct clients (client_listen); see bid_node.h.
#include <variant>

#include "nodes/bid_node.h"

namespace bidmesh {

std::optional<std::string> BidNode::start_direct() {
  if (node_.client_listen.empty()) return std::nullopt;
  std::optional<ClientSecurity> security;
  if (security_ == Security::curve) {
    auto clients = reload_allowed_clients(cfg_);
    if (auto* error = std::get_if<std::string>(&clients)) return *error;
    security = ClientSecurity{mesh_key_, std::get<std::shared_ptr<const AllowList>>(clients)};
    // One ZAP handler per context judges every CURVE server of it: the router-facing one (domain
    // "mesh") when there is one, and this one (domain "clients"). Started before the bind, so no
    // handshake is ever judged without it.
    if (!zap_) {
      zap_.emplace(ctx_, mesh_key_.public_key, false);
      if (auto error = zap_->start()) return *error;
    }
    zap_->set_allow_list(security->clients);
  }
  direct_ = std::make_unique<DirectEndpoint>(ctx_, cfg_, node_, std::move(security));
  return direct_->bind();
}

std::string BidNode::reload_direct_clients() {
  auto clients = reload_allowed_clients(cfg_);
  if (auto* error = std::get_if<std::string>(&clients))
    return "reload refused, the previous clients stay allowed: " + *error;
  auto& list = std::get<std::shared_ptr<const AllowList>>(clients);
  zap_->set_allow_list(list);
  direct_->front().set_allowed_clients(list);
  return "reloaded " + std::to_string(list->size()) + " clients from " + cfg_.clients_dir.string() +
         " for the client endpoint";
}

}  // namespace bidmesh
