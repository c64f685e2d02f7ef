// ZPL, the ZeroMQ Property Language (rfc.zeromq.org/spec/4), the text format of CurveZMQ
// certificates. Parsed as CZMQ's zconfig parses it, which is what writes and reads certificates
// elsewhere (zcert; pyzmq writes the same layout):
// - one property per line: indentation (4 spaces per level), a name, then optionally
//   `= value`; a line that is only a name opens a section for the deeper lines below it;
// - a value is "double-quoted", 'single-quoted' (no escapes: it ends at the next same quote) or
//   bare; a bare value ends at '#' and loses trailing spaces, so a value holding '#' (Z85 keys
//   may) must be quoted;
// - '#' starts a comment, on a line of its own or after a value; blank lines are ignored; CR LF
//   line ends are accepted.
// Refused, with the line number: indentation that is not a multiple of 4 spaces or that holds a
// tab, a line indented more than one level below the property above it, a name with characters
// other than [A-Za-z0-9$-_@.&+/], a missing closing quote, anything after a value but a comment.
//
// Thread-safe: pure functions over values.
#pragma once

#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace bidmesh {

struct ZplProperty {
  std::string path;   // the names of its sections and its own, joined by '/': "curve/public-key"
  std::string value;  // "" for a section line or a name without '='
  int line = 0;       // from 1
};

// The properties in file order; on failure "line N: reason".
std::variant<std::vector<ZplProperty>, std::string> parse_zpl(std::string_view text);

// True when `name` may be a property name (the characters above, not starting or ending in '/').
bool is_valid_zpl_name(std::string_view name);

}  // namespace bidmesh
