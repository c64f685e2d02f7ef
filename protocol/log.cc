#include "protocol/log.h"

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <unistd.h>

#include "protocol/json.h"

namespace bidmesh {

namespace {

struct Identity {
  std::string name = "bidmesh";
  LogFormat format = LogFormat::text;
};
Identity& identity() {
  static Identity id;
  return id;
}

std::string_view level_name(LogLevel level) {
  switch (level) {
    case LogLevel::info: return "info";
    case LogLevel::warning: return "warning";
    case LogLevel::error: return "error";
  }
  return "info";
}

// "2025-01-07 10:31:02.114" (local time) for text; "2025-01-07T10:31:02.114Z" (UTC) for json.
std::string timestamp(int64_t unix_ms, bool rfc3339_utc) {
  const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  if (rfc3339_utc) {
    gmtime_r(&secs, &tm);
  } else {
    localtime_r(&secs, &tm);
  }
  char buf[40];
  const std::size_t n = std::strftime(buf, sizeof buf, rfc3339_utc ? "%Y-%m-%dT%H:%M:%S" : "%Y-%m-%d %H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof buf - n, rfc3339_utc ? ".%03dZ" : ".%03d", static_cast<int>(unix_ms % 1000));
  return buf;
}

void append_json_value(std::string& out, const LogField& f) {
  if (const auto* s = std::get_if<std::string_view>(&f.value)) {
    out += json_quote(*s);
  } else if (const auto* i = std::get_if<int64_t>(&f.value)) {
    out += std::to_string(*i);
  } else if (const auto* u = std::get_if<uint64_t>(&f.value)) {
    out += std::to_string(*u);
  } else if (const auto* d = std::get_if<double>(&f.value)) {
    if (!std::isfinite(*d)) {
      out += "null";  // JSON has no NaN or infinity
    } else {
      char buf[32];
      std::snprintf(buf, sizeof buf, "%.6g", *d);
      out += buf;
    }
  } else {
    out += std::get<bool>(f.value) ? "true" : "false";
  }
}

}  // namespace

std::string rfc3339_utc_ms(int64_t unix_ms) { return timestamp(unix_ms, true); }

std::string_view log_format_name(LogFormat f) { return f == LogFormat::json ? "json" : "text"; }

std::optional<LogFormat> parse_log_format(std::string_view name) {
  if (name == "text") return LogFormat::text;
  if (name == "json") return LogFormat::json;
  return std::nullopt;
}

std::string format_log_line(LogFormat format, std::string_view name, LogLevel level, std::string_view event,
                            std::string_view msg, LogFields fields, int64_t unix_ms) {
  std::string out;
  if (format == LogFormat::text) {
    out.reserve(msg.size() + name.size() + 30);
    out += '[';
    out += name;
    out += ' ';
    out += timestamp(unix_ms, false);
    out += "] ";
    out += msg;
    out += '\n';
    return out;
  }
  out.reserve(msg.size() + 96 + 24 * fields.size());
  out += "{\"ts\":\"" + timestamp(unix_ms, true) + "\",\"node\":" + json_quote(name) + ",\"level\":\"";
  out += level_name(level);
  out += "\",\"event\":" + json_quote(event) + ",\"msg\":" + json_quote(msg);
  for (const LogField& f : fields) {
    out += ',' + json_quote(f.key) + ':';
    append_json_value(out, f);
  }
  out += "}\n";
  return out;
}

std::string format_log_line(LogFormat format, std::string_view name, LogLevel level, std::string_view event,
                            std::string_view msg, LogFields fields) {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  const int64_t unix_ms = static_cast<int64_t>(ts.tv_sec) * 1000 + ts.tv_nsec / 1000000;
  return format_log_line(format, name, level, event, msg, fields, unix_ms);
}

void set_log_identity(std::string name, LogFormat format) {
  identity().name = std::move(name);
  identity().format = format;
}

LogFormat current_log_format() { return identity().format; }

void log_event(LogLevel level, std::string_view event, std::string_view msg, LogFields fields) {
  const std::string line = format_log_line(identity().format, identity().name, level, event, msg, fields);
  std::size_t done = 0;
  while (done < line.size()) {
    const ssize_t w = ::write(STDERR_FILENO, line.data() + done, line.size() - done);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return;  // nowhere to log to: the event is lost, the node serves on
    done += static_cast<std::size_t>(w);
  }
}

void RefusalBursts::flush(Clock::time_point now) {
  if (now - last_ < interval_) return;
  const auto seconds = std::chrono::duration_cast<std::chrono::seconds>(interval_).count();
  for (std::size_t i = 0; i < counts_.size(); ++i) {
    if (counts_[i] == 0) continue;
    const std::string_view code = error_code_name(static_cast<ErrorCode>(i));
    log_event(code == "internal" ? LogLevel::error : LogLevel::warning, "refusals",
              std::to_string(counts_[i]) + " requests refused `" + std::string(code) + "` in the last " +
                  std::to_string(seconds) + " s",
              {{"code", code}, {"count", counts_[i]}, {"seconds", seconds}});
    counts_[i] = 0;
  }
  last_ = now;
}

}  // namespace bidmesh
