// The strict, bounded JSON reader and writer of json_value.h.
#include "gateway/json_value.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "protocol/json.h"

namespace bidmesh::gateway {

std::optional<uint64_t> JsonValue::u64() const {
  if (const auto* u = std::get_if<uint64_t>(&v_)) return *u;
  if (const auto* i = std::get_if<int64_t>(&v_); i && *i >= 0) return static_cast<uint64_t>(*i);
  return std::nullopt;
}

const JsonValue* JsonValue::get(std::string_view key) const {
  const auto* o = object();
  if (o == nullptr) return nullptr;
  for (const auto& [k, v] : *o)
    if (k == key) return &v;
  return nullptr;
}

void JsonValue::set(std::string key, JsonValue value) {
  auto& o = std::get<JsonObject>(v_);
  for (auto& [k, v] : o)
    if (k == key) {
      v = std::move(value);
      return;
    }
  o.emplace_back(std::move(key), std::move(value));
}

std::string JsonValue::dump() const {
  std::string out;
  dump_to(out);
  return out;
}

void JsonValue::dump_to(std::string& out) const {
  struct Writer {
    std::string& out;
    void operator()(std::nullptr_t) const { out += "null"; }
    void operator()(bool b) const { out += b ? "true" : "false"; }
    void operator()(int64_t i) const { out += std::to_string(i); }
    void operator()(uint64_t u) const { out += std::to_string(u); }
    void operator()(double d) const {
      if (!std::isfinite(d)) {
        out += "null";
        return;
      }
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.17g", d);
      out += buf;
    }
    void operator()(const std::string& s) const { out += json_quote(s); }
    void operator()(const JsonArray& a) const {
      out += '[';
      for (std::size_t i = 0; i < a.size(); ++i) {
        if (i) out += ',';
        a[i].dump_to(out);
      }
      out += ']';
    }
    void operator()(const JsonObject& o) const {
      out += '{';
      for (std::size_t i = 0; i < o.size(); ++i) {
        if (i) out += ',';
        out += json_quote(o[i].first);
        out += ':';
        o[i].second.dump_to(out);
      }
      out += '}';
    }
  };
  std::visit(Writer{out}, v_);
}

namespace {

class Reader {
 public:
  Reader(std::string_view text, int max_depth) : s_(text), max_depth_(max_depth) {}

  std::optional<JsonValue> document(std::string& why) {
    skip_ws();
    auto v = value(0);
    if (v) {
      skip_ws();
      if (pos_ != s_.size()) fail("text after the value");
    }
    if (!error_.empty()) {
      why = error_ + " at byte " + std::to_string(pos_);
      return std::nullopt;
    }
    return v;
  }

 private:
  void fail(std::string why) {
    if (error_.empty()) error_ = std::move(why);
  }
  void skip_ws() {
    while (pos_ < s_.size() && (s_[pos_] == ' ' || s_[pos_] == '\t' || s_[pos_] == '\n' || s_[pos_] == '\r')) ++pos_;
  }
  bool literal(std::string_view word) {
    if (s_.substr(pos_, word.size()) != word) return false;
    pos_ += word.size();
    return true;
  }

  std::optional<JsonValue> value(int depth) {
    if (depth > max_depth_) {
      fail("nested deeper than " + std::to_string(max_depth_));
      return std::nullopt;
    }
    if (pos_ >= s_.size()) {
      fail("unexpected end");
      return std::nullopt;
    }
    const char c = s_[pos_];
    if (c == '{') return object(depth);
    if (c == '[') return array(depth);
    if (c == '"') {
      auto str = string();
      if (!str) return std::nullopt;
      return JsonValue(std::move(*str));
    }
    if (literal("true")) return JsonValue(true);
    if (literal("false")) return JsonValue(false);
    if (literal("null")) return JsonValue(nullptr);
    if (c == '-' || (c >= '0' && c <= '9')) return number();
    fail("unexpected character");
    return std::nullopt;
  }

  std::optional<JsonValue> object(int depth) {
    ++pos_;  // {
    JsonObject o;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == '}') {
      ++pos_;
      return JsonValue(std::move(o));
    }
    while (true) {
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != '"') {
        fail("expected a string key");
        return std::nullopt;
      }
      auto key = string();
      if (!key) return std::nullopt;
      for (const auto& kv : o)
        if (kv.first == *key) {
          fail("duplicate key");
          return std::nullopt;
        }
      skip_ws();
      if (pos_ >= s_.size() || s_[pos_] != ':') {
        fail("expected ':'");
        return std::nullopt;
      }
      ++pos_;
      skip_ws();
      auto v = value(depth + 1);
      if (!v) return std::nullopt;
      o.emplace_back(std::move(*key), std::move(*v));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == '}') {
        ++pos_;
        return JsonValue(std::move(o));
      }
      fail("expected ',' or '}'");
      return std::nullopt;
    }
  }

  std::optional<JsonValue> array(int depth) {
    ++pos_;  // [
    JsonArray a;
    skip_ws();
    if (pos_ < s_.size() && s_[pos_] == ']') {
      ++pos_;
      return JsonValue(std::move(a));
    }
    while (true) {
      skip_ws();
      auto v = value(depth + 1);
      if (!v) return std::nullopt;
      a.push_back(std::move(*v));
      skip_ws();
      if (pos_ < s_.size() && s_[pos_] == ',') {
        ++pos_;
        continue;
      }
      if (pos_ < s_.size() && s_[pos_] == ']') {
        ++pos_;
        return JsonValue(std::move(a));
      }
      fail("expected ',' or ']'");
      return std::nullopt;
    }
  }

  static void put_utf8(std::string& out, uint32_t cp) {
    if (cp < 0x80) {
      out += static_cast<char>(cp);
    } else if (cp < 0x800) {
      out += static_cast<char>(0xC0 | (cp >> 6));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else if (cp < 0x10000) {
      out += static_cast<char>(0xE0 | (cp >> 12));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      out += static_cast<char>(0xF0 | (cp >> 18));
      out += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
      out += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      out += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::optional<uint32_t> hex4() {
    if (pos_ + 4 > s_.size()) return std::nullopt;
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = s_[pos_++];
      v <<= 4;
      if (c >= '0' && c <= '9') v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f') v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F') v |= static_cast<uint32_t>(c - 'A' + 10);
      else return std::nullopt;
    }
    return v;
  }

  // Length of the valid UTF-8 sequence at s_[pos_] (RFC 3629: no overlongs, no surrogates), or 0.
  std::size_t utf8_length() const {
    const auto b = [&](std::size_t i) { return static_cast<unsigned char>(s_[pos_ + i]); };
    const std::size_t left = s_.size() - pos_;
    const unsigned char c = b(0);
    auto cont = [&](std::size_t i) { return i < left && (b(i) & 0xC0) == 0x80; };
    if (c >= 0xC2 && c <= 0xDF) return cont(1) ? 2 : 0;
    if (c == 0xE0) return cont(1) && b(1) >= 0xA0 && cont(2) ? 3 : 0;
    if (c == 0xED) return cont(1) && b(1) < 0xA0 && cont(2) ? 3 : 0;
    if (c >= 0xE1 && c <= 0xEF) return cont(1) && cont(2) ? 3 : 0;
    if (c == 0xF0) return cont(1) && b(1) >= 0x90 && cont(2) && cont(3) ? 4 : 0;
    if (c >= 0xF1 && c <= 0xF3) return cont(1) && cont(2) && cont(3) ? 4 : 0;
    if (c == 0xF4) return cont(1) && b(1) < 0x90 && cont(2) && cont(3) ? 4 : 0;
    return 0;
  }

  std::optional<std::string> string() {
    ++pos_;  // "
    std::string out;
    while (true) {
      if (pos_ >= s_.size()) {
        fail("unterminated string");
        return std::nullopt;
      }
      const unsigned char c = static_cast<unsigned char>(s_[pos_]);
      if (c == '"') {
        ++pos_;
        return out;
      }
      if (c < 0x20) {
        fail("control character in a string");
        return std::nullopt;
      }
      if (c == '\\') {
        ++pos_;
        if (pos_ >= s_.size()) {
          fail("unterminated escape");
          return std::nullopt;
        }
        const char e = s_[pos_++];
        switch (e) {
          case '"': out += '"'; break;
          case '\\': out += '\\'; break;
          case '/': out += '/'; break;
          case 'b': out += '\b'; break;
          case 'f': out += '\f'; break;
          case 'n': out += '\n'; break;
          case 'r': out += '\r'; break;
          case 't': out += '\t'; break;
          case 'u': {
            auto cp = hex4();
            if (!cp) {
              fail("bad \\u escape");
              return std::nullopt;
            }
            if (*cp >= 0xD800 && *cp <= 0xDBFF) {
              if (!literal("\\u")) {
                fail("lone surrogate");
                return std::nullopt;
              }
              auto low = hex4();
              if (!low || *low < 0xDC00 || *low > 0xDFFF) {
                fail("lone surrogate");
                return std::nullopt;
              }
              *cp = 0x10000 + ((*cp - 0xD800) << 10) + (*low - 0xDC00);
            } else if (*cp >= 0xDC00 && *cp <= 0xDFFF) {
              fail("lone surrogate");
              return std::nullopt;
            }
            put_utf8(out, *cp);
            break;
          }
          default:
            fail("bad escape");
            return std::nullopt;
        }
        continue;
      }
      if (c < 0x80) {
        out += static_cast<char>(c);
        ++pos_;
        continue;
      }
      const std::size_t n = utf8_length();
      if (n == 0) {
        fail("invalid UTF-8");
        return std::nullopt;
      }
      out.append(s_.substr(pos_, n));
      pos_ += n;
    }
  }

  std::optional<JsonValue> number() {
    const std::size_t start = pos_;
    bool negative = false, fractional = false;
    if (s_[pos_] == '-') {
      negative = true;
      ++pos_;
    }
    auto digits = [&] {
      const std::size_t from = pos_;
      while (pos_ < s_.size() && s_[pos_] >= '0' && s_[pos_] <= '9') ++pos_;
      return pos_ - from;
    };
    if (pos_ >= s_.size() || !(s_[pos_] >= '0' && s_[pos_] <= '9')) {
      fail("bad number");
      return std::nullopt;
    }
    if (s_[pos_] == '0') ++pos_;
    else digits();
    if (pos_ < s_.size() && s_[pos_] == '.') {
      ++pos_;
      fractional = true;
      if (digits() == 0) {
        fail("bad number");
        return std::nullopt;
      }
    }
    if (pos_ < s_.size() && (s_[pos_] == 'e' || s_[pos_] == 'E')) {
      ++pos_;
      fractional = true;
      if (pos_ < s_.size() && (s_[pos_] == '+' || s_[pos_] == '-')) ++pos_;
      if (digits() == 0) {
        fail("bad number");
        return std::nullopt;
      }
    }
    const std::string text(s_.substr(start, pos_ - start));
    if (!fractional) {
      errno = 0;
      char* end = nullptr;
      if (negative) {
        const long long v = std::strtoll(text.c_str(), &end, 10);
        if (errno == 0) return JsonValue(static_cast<int64_t>(v));
      } else {
        const unsigned long long v = std::strtoull(text.c_str(), &end, 10);
        if (errno == 0) return JsonValue(static_cast<uint64_t>(v));
      }
    }
    return JsonValue(std::strtod(text.c_str(), nullptr));
  }

  std::string_view s_;
  std::size_t pos_ = 0;
  const int max_depth_;
  std::string error_;
};

}  // namespace

std::optional<JsonValue> parse_json(std::string_view text, std::string& why, JsonLimits limits) {
  if (text.size() > limits.max_bytes) {
    why = "larger than " + std::to_string(limits.max_bytes) + " bytes";
    return std::nullopt;
  }
  return Reader(text, limits.max_depth).document(why);
}

}  // namespace bidmesh::gateway
