// Error codes of the wire contract (docs/protocol.md, v1.2).
// Thread-safe: pure functions over constants.
#pragma once

#include <optional>
#include <string_view>

namespace bidmesh {

enum class ErrorCode {
  bad_request,   // not a map, missing/mistyped field, unknown op, bad identifier, value out of range
  too_large,     // request over the size limit; the reply's id is nil
  unknown_item,  // the item was never opened
  exists,        // open of an item opened before
  closed,        // bid or close on a closed item, or a bid at/after closes_at
  too_low,       // amount below start or below max + increment; reply carries `max`
  conflict,      // an id reused with other content
  moved,         // (v1.2) at a bid node's client endpoint: another node owns the item's slot; not remembered
  forbidden,     // (security on) the client's key lacks the role, or bids in another name; not remembered
  unavailable,   // the owner could not be reached in time; safe to retry
  internal,      // a fault of the mesh; safe to retry
};

// The code as it goes on the wire ("bad_request", ...).
std::string_view error_code_name(ErrorCode code);
std::optional<ErrorCode> parse_error_code(std::string_view name);

// True for the replies the owner decides and remembers with the write's (item, id).
bool error_is_remembered(ErrorCode code);

}  // namespace bidmesh
