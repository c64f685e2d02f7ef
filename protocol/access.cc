#include "protocol/access.h"

#include <array>
#include <utility>

namespace bidmesh {

namespace {

constexpr std::array<std::pair<RoleSet, std::string_view>, 4> kRoleNames{{
    {kRoleReader, "reader"},
    {kRoleBidder, "bidder"},
    {kRoleAgent, "agent"},
    {kRoleAuctioneer, "auctioneer"},
}};

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

}  // namespace

std::optional<RoleSet> parse_roles(std::string_view list, std::string* error) {
  RoleSet roles = kRoleReader;
  std::size_t start = 0;
  for (;;) {
    const std::size_t comma = list.find(',', start);
    const std::string_view entry = trim(list.substr(start, comma == std::string_view::npos ? list.npos : comma - start));
    RoleSet found = 0;
    for (const auto& [bit, name] : kRoleNames)
      if (entry == name) found = bit;
    if (found == 0) {
      if (error != nullptr)
        *error = entry.empty() ? "empty role in '" + std::string(list) + "'"
                               : "unknown role '" + std::string(entry) + "' (known: reader, bidder, agent, auctioneer)";
      return std::nullopt;
    }
    roles |= found;
    if (comma == std::string_view::npos) return roles;
    start = comma + 1;
  }
}

std::string roles_text(RoleSet roles) {
  std::string out;
  for (const auto& [bit, name] : kRoleNames) {
    if ((roles & bit) == 0) continue;
    if (!out.empty()) out += ',';
    out += name;
  }
  return out;
}

std::optional<std::string> authorize(const Principal& who, const Request& request) {
  if ((who.roles & kRoleReader) == 0) return std::string("this client's key is no longer allowed (revoked)");
  switch (request.op) {
    case Op::get:
    case Op::history:
    case Op::list:
    case Op::slots:
    case Op::ping:
      return std::nullopt;
    case Op::open:
    case Op::close:
      if (who.roles & kRoleAuctioneer) return std::nullopt;
      return std::string(op_name(request.op)) + " needs the auctioneer role; '" + who.name + "' has " +
             roles_text(who.roles);
    case Op::bid:
      if (who.roles & kRoleAgent) return std::nullopt;
      if ((who.roles & kRoleBidder) == 0)
        return "bid needs the bidder role; '" + who.name + "' has " + roles_text(who.roles);
      if (request.bidder != who.name)
        return "'" + who.name + "' may bid only as itself, not as '" + request.bidder + "' (that needs the agent role)";
      return std::nullopt;
  }
  return "unknown op";
}

void encode_principal_into(const Principal& who, std::string& frame) {
  frame.assign(1, static_cast<char>(who.roles));
  frame += who.name;
}

std::string encode_principal(const Principal& who) {
  std::string frame;
  encode_principal_into(who, frame);
  return frame;
}

std::optional<Principal> decode_principal(std::string_view frame) {
  if (frame.empty()) return Principal{"", kAllRoles};
  const auto roles = static_cast<RoleSet>(frame[0]);
  if ((roles & ~kAllRoles) != 0 || frame.size() > 1 + kMaxIdBytes) return std::nullopt;
  return Principal{std::string(frame.substr(1)), roles};
}

}  // namespace bidmesh
