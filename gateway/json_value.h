// JsonValue: the JSON the gateway reads from browsers (request bodies, WebSocket messages) and
// builds for them, and the reader that turns untrusted text into it.
//
// Why here: Boost.JSON arrives with Boost 1.75, Debian 12 ships 1.74, and the project keeps
// nlohmann-json out of its stack; protocol/json.h only quotes strings. The gateway's inputs are
// small (4 KiB bodies and frames), so a strict reader with hard bounds fits in one file.
//
// Guarantees of parse_json: RFC 8259 grammar only (no comments, no trailing commas, no NaN),
// the whole text must be one value (whitespace around it allowed), depth at most max_depth,
// strings must be valid UTF-8 after escapes (\uXXXX surrogate pairs joined; a lone surrogate is
// refused). Numbers: an integer that fits int64/uint64 keeps it exactly, anything else is a
// double. A duplicate key in an object is refused (a browser never sends one; two readings of
// one message are a classic smuggling trick). Failure is a value: nullopt and a reason.
//
// Thread-safe: values are plain data; functions are pure.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>
#include <vector>

namespace bidmesh::gateway {

class JsonValue;
using JsonArray = std::vector<JsonValue>;
// Objects keep their keys' insertion order (output reads as it was built).
using JsonObject = std::vector<std::pair<std::string, JsonValue>>;

class JsonValue {
 public:
  using Storage = std::variant<std::nullptr_t, bool, int64_t, uint64_t, double, std::string, JsonArray, JsonObject>;
  JsonValue() : v_(nullptr) {}
  JsonValue(std::nullptr_t) : v_(nullptr) {}
  JsonValue(bool b) : v_(b) {}
  JsonValue(int v) : v_(static_cast<int64_t>(v)) {}
  JsonValue(int64_t v) : v_(v) {}
  JsonValue(uint64_t v) : v_(v) {}
  JsonValue(double v) : v_(v) {}
  JsonValue(const char* s) : v_(std::string(s)) {}
  JsonValue(std::string s) : v_(std::move(s)) {}
  JsonValue(std::string_view s) : v_(std::string(s)) {}
  JsonValue(JsonArray a) : v_(std::move(a)) {}
  JsonValue(JsonObject o) : v_(std::move(o)) {}

  bool is_null() const { return std::holds_alternative<std::nullptr_t>(v_); }
  const std::string* string() const { return std::get_if<std::string>(&v_); }
  const bool* boolean() const { return std::get_if<bool>(&v_); }
  const JsonArray* array() const { return std::get_if<JsonArray>(&v_); }
  const JsonObject* object() const { return std::get_if<JsonObject>(&v_); }
  JsonObject* object() { return std::get_if<JsonObject>(&v_); }
  // The value as an unsigned integer when it is a non-negative integer (not a double).
  std::optional<uint64_t> u64() const;
  // In an object: the member `key`, or nullptr (also when this is not an object).
  const JsonValue* get(std::string_view key) const;
  // In an object: sets `key` (replacing it when present). REQUIRES: this is an object.
  void set(std::string key, JsonValue value);

  // Compact JSON text (strings through protocol/json.h's json_quote: always valid UTF-8 out).
  std::string dump() const;
  void dump_to(std::string& out) const;

 private:
  Storage v_;
};

struct JsonLimits {
  std::size_t max_bytes = 4096;
  int max_depth = 8;
};

// One JSON text as a value, or nullopt with `why` set.
std::optional<JsonValue> parse_json(std::string_view text, std::string& why, JsonLimits limits = {});

}  // namespace bidmesh::gateway
