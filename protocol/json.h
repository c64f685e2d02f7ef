// JSON text for tools that print what the mesh said (`--json` output, status tables).
// Thread-safe: pure functions.
#pragma once

#include <string>
#include <string_view>

namespace bidmesh {

// `s` as a JSON string literal, quotes included: ", \ and control bytes escaped, valid UTF-8
// passed through, and every byte that is not part of valid UTF-8 (a node's log may hold anything)
// replaced by U+FFFD, so the output is always valid JSON.
std::string json_quote(std::string_view s);

}  // namespace bidmesh
