// JSON text for tools that print what the mesh said (`--json` output, status tables).
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace bidmesh {

// `s` as a JSON string literal, quotes included: ", \ and control bytes escaped; other bytes
// (UTF-8) pass through as they are.
std::string json_quote(std::string_view s);

}  // namespace bidmesh
