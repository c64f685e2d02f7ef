// Who may do what (docs/security.md; the wire contract's Security section): the roles a client's
// key holds, and the judgment of one decoded request against them.
//
// With security = "none" every client may do everything: callers pass kAllRoles.
// Thread-safe: pure functions over values.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "protocol/messages.h"

namespace bidmesh {

// A set of roles, one bit each. 0 is "no role at all": a key revoked while its connection was
// open; every request of it is `forbidden`.
using RoleSet = uint8_t;
inline constexpr RoleSet kRoleReader = 1;       // get, history, ping, the feed (every allowed key)
inline constexpr RoleSet kRoleBidder = 2;       // bid in its own name
inline constexpr RoleSet kRoleAgent = 4;        // bid in any bidder's name
inline constexpr RoleSet kRoleAuctioneer = 8;   // open and close
inline constexpr RoleSet kAllRoles = kRoleReader | kRoleBidder | kRoleAgent | kRoleAuctioneer;

// A comma-separated list ("bidder, agent"; spaces around names ignored; empty entries refused).
// Every listed key is a reader too. On failure: nullopt and a one-line reason in *error.
std::optional<RoleSet> parse_roles(std::string_view list, std::string* error);
// "reader,bidder" (canonical order), "" for none.
std::string roles_text(RoleSet roles);

// The client a request comes from, as the mesh authenticated it.
struct Principal {
  std::string name;       // identifier rules; the name a `bidder` role may bid in
  RoleSet roles = 0;
};

// nullopt when `who` may make `request`, else the message of its `forbidden` reply.
std::optional<std::string> authorize(const Principal& who, const Request& request);

// The principal as one frame on the router -> bid node link: one byte of roles, then the name.
// An empty frame means security is off (every role).
std::string encode_principal(const Principal& who);
// The same into `frame` (replacing its content; its capacity is reused).
void encode_principal_into(const Principal& who, std::string& frame);
// nullopt for a frame that is not one (the node then drops the message as malformed).
std::optional<Principal> decode_principal(std::string_view frame);

}  // namespace bidmesh
