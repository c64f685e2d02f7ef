#include "security/zpl.h"

#include <cctype>

namespace bidmesh {

namespace {

bool is_name_char(char c) {
  return std::isalnum(static_cast<unsigned char>(c)) != 0 || std::string_view("$-_@.&+/").find(c) != std::string_view::npos;
}

bool is_blank(char c) { return c == ' ' || c == '\t' || c == '\r'; }

std::string_view trim_left(std::string_view s) {
  while (!s.empty() && is_blank(s.front())) s.remove_prefix(1);
  return s;
}

std::string_view trim_right(std::string_view s) {
  while (!s.empty() && is_blank(s.back())) s.remove_suffix(1);
  return s;
}

// True when what follows a value or a name is only blanks and perhaps a comment.
bool only_comment(std::string_view rest) {
  rest = trim_left(rest);
  return rest.empty() || rest.front() == '#';
}

}  // namespace

bool is_valid_zpl_name(std::string_view name) {
  if (name.empty() || name.front() == '/' || name.back() == '/') return false;
  for (char c : name)
    if (!is_name_char(c)) return false;
  return true;
}

std::variant<std::vector<ZplProperty>, std::string> parse_zpl(std::string_view text) {
  std::vector<ZplProperty> out;
  std::vector<std::string> sections;  // sections[k]: the name of the open property at level k
  int lineno = 0;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    std::string_view line = trim_right(text.substr(0, eol));
    text.remove_prefix(eol == std::string_view::npos ? text.size() : eol + 1);
    ++lineno;
    const auto fail = [lineno](const std::string& why) { return "line " + std::to_string(lineno) + ": " + why; };

    std::size_t indent = 0;
    while (indent < line.size() && line[indent] == ' ') ++indent;
    std::string_view rest = line.substr(indent);
    if (rest.empty() || rest.front() == '#') continue;  // blank or comment, at any indentation
    if (rest.front() == '\t') return fail("indent with spaces, not tabs");
    if (indent % 4 != 0) return fail("indent with 4 spaces per level");
    const std::size_t level = indent / 4;
    if (level > sections.size()) return fail("indented deeper than one level below the line above");

    std::size_t name_len = 0;
    while (name_len < rest.size() && is_name_char(rest[name_len])) ++name_len;
    const std::string_view name = rest.substr(0, name_len);
    if (!is_valid_zpl_name(name))
      return fail(name.empty() ? "expected a property name" : "bad property name '" + std::string(name) + "'");
    rest = trim_left(rest.substr(name_len));

    std::string value;
    if (!rest.empty() && rest.front() == '=') {
      rest = trim_left(rest.substr(1));
      if (!rest.empty() && (rest.front() == '"' || rest.front() == '\'')) {
        const std::size_t close = rest.find(rest.front(), 1);
        if (close == std::string_view::npos) return fail(std::string("missing closing ") + rest.front());
        value = std::string(rest.substr(1, close - 1));
        if (!only_comment(rest.substr(close + 1))) return fail("text after the closing quote");
      } else {
        value = std::string(trim_right(rest.substr(0, rest.find('#'))));
      }
    } else if (!only_comment(rest)) {
      return fail("expected '=' after '" + std::string(name) + "'");
    }

    sections.resize(level);
    std::string path;
    for (const auto& s : sections) path += s + "/";
    path += name;
    sections.emplace_back(name);
    out.push_back(ZplProperty{std::move(path), std::move(value), lineno});
  }
  return out;
}

}  // namespace bidmesh
