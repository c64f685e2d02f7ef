// The gateway's JSON, on Debian's nlohmann-json3-dev (header-only): the strict reader of
// untrusted text (request bodies, WebSocket messages, mesh replies turned to JSON) and the
// writer of what goes to browsers.
//
// Guarantees of parse_untrusted_json, on top of the library's RFC 8259 parser (no comments, no
// trailing commas, no NaN; one value with whitespace around it; invalid UTF-8 and lone
// surrogates refused by its lexer): at most max_bytes of text, containers nested at most
// max_depth deep, and no duplicate key in an object (a browser never sends one; two readings of
// one message are a classic smuggling trick). Integers that fit int64/uint64 keep them exactly;
// anything else is a double. Failure is a value: nullopt and a reason; nothing throws out.
// dump_json never throws: a string that is not UTF-8 (say, from the mesh) is written with
// U+FFFD in place of the bad bytes.
//
// Thread-safe: functions are pure.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include <nlohmann/json.hpp>

namespace bidmesh::gateway {

// Objects keep their keys' insertion order (output reads as it was built).
using Json = nlohmann::ordered_json;

std::optional<Json> parse_untrusted_json(std::string_view text, std::string& why, std::size_t max_bytes,
                                         int max_depth);
// Compact JSON text.
std::string dump_json(const Json& value);

// In an object: the member `key`, or nullptr (also when `object` is not an object).
const Json* member(const Json& object, std::string_view key);
// The string, or nullptr when `v` is null or not a string.
const std::string* as_string(const Json* v);
// The string, or `fallback` when `v` is null or not a string.
std::string string_or(const Json* v, std::string_view fallback);
// The value as an unsigned integer when it is a non-negative integer (not a double).
std::optional<uint64_t> as_u64(const Json* v);
// True when `v` is the boolean true.
bool is_true(const Json* v);

}  // namespace bidmesh::gateway
