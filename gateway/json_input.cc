// The gateway's JSON on nlohmann-json (json_input.h).
#include "gateway/json_input.h"

#include <set>
#include <vector>

namespace bidmesh::gateway {

std::optional<Json> parse_untrusted_json(std::string_view text, std::string& why, std::size_t max_bytes,
                                         int max_depth) {
  if (text.size() > max_bytes) {
    why = "longer than " + std::to_string(max_bytes) + " bytes";
    return std::nullopt;
  }
  // The parser callback sees every container open and every key: it notes the first breach
  // (the parse goes on over bounded text, and its result is then thrown away).
  std::vector<std::set<std::string>> keys;  // one set per open object
  std::string breach;
  auto check = [&](int depth, Json::parse_event_t event, Json& parsed) {
    switch (event) {
      case Json::parse_event_t::object_start:
      case Json::parse_event_t::array_start:
        if (depth + 1 > max_depth && breach.empty()) breach = "nested deeper than " + std::to_string(max_depth);
        if (event == Json::parse_event_t::object_start) keys.emplace_back();
        break;
      case Json::parse_event_t::key:
        if (!keys.empty() && !keys.back().insert(parsed.get<std::string>()).second && breach.empty())
          breach = "duplicate key \"" + parsed.get<std::string>() + "\"";
        break;
      case Json::parse_event_t::object_end:
        if (!keys.empty()) keys.pop_back();
        break;
      default:
        break;
    }
    return breach.empty();
  };
  try {
    Json value = Json::parse(text.begin(), text.end(), check, /*allow_exceptions=*/true, /*ignore_comments=*/false);
    if (!breach.empty()) {
      why = breach;
      return std::nullopt;
    }
    return value;
  } catch (const Json::exception& e) {
    why = breach.empty() ? e.what() : breach;
    return std::nullopt;
  }
}

std::string dump_json(const Json& value) { return value.dump(-1, ' ', false, Json::error_handler_t::replace); }

const Json* member(const Json& object, std::string_view key) {
  if (!object.is_object()) return nullptr;
  auto it = object.find(key);
  return it == object.end() ? nullptr : &*it;
}

const std::string* as_string(const Json* v) { return v && v->is_string() ? v->get_ptr<const std::string*>() : nullptr; }

std::string string_or(const Json* v, std::string_view fallback) {
  const std::string* s = as_string(v);
  return s ? *s : std::string(fallback);
}

std::optional<uint64_t> as_u64(const Json* v) {
  if (v == nullptr) return std::nullopt;
  if (v->is_number_unsigned()) return v->get<uint64_t>();
  if (v->is_number_integer() && v->get<int64_t>() >= 0) return static_cast<uint64_t>(v->get<int64_t>());
  return std::nullopt;
}

bool is_true(const Json* v) { return v && v->is_boolean() && v->get<bool>(); }

}  // namespace bidmesh::gateway
