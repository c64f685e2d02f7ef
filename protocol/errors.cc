#include "protocol/errors.h"

#include <array>
#include <utility>

namespace bidmesh {

namespace {
constexpr std::array<std::pair<ErrorCode, std::string_view>, 11> kNames{{
    {ErrorCode::bad_request, "bad_request"},
    {ErrorCode::too_large, "too_large"},
    {ErrorCode::unknown_item, "unknown_item"},
    {ErrorCode::exists, "exists"},
    {ErrorCode::closed, "closed"},
    {ErrorCode::too_low, "too_low"},
    {ErrorCode::conflict, "conflict"},
    {ErrorCode::moved, "moved"},
    {ErrorCode::forbidden, "forbidden"},
    {ErrorCode::unavailable, "unavailable"},
    {ErrorCode::internal, "internal"},
}};
}  // namespace

std::string_view error_code_name(ErrorCode code) {
  for (const auto& [c, name] : kNames)
    if (c == code) return name;
  return "internal";
}

std::optional<ErrorCode> parse_error_code(std::string_view name) {
  for (const auto& [c, n] : kNames)
    if (n == name) return c;
  return std::nullopt;
}

bool error_is_remembered(ErrorCode code) {
  switch (code) {
    case ErrorCode::too_low:
    case ErrorCode::closed:
    case ErrorCode::exists:
    case ErrorCode::unknown_item:
      return true;
    default:
      return false;
  }
}

}  // namespace bidmesh
