// Event log lines of every bidmesh process (docs/operations.md, "Logs").
//
// One line per event that matters to an operator (start, ready, checkpoint, refusal burst,
// restart, reload, stop), never one per request: callers on a hot path count and report
// bursts at most once per interval. A line carries a timestamp, the writer's name, a level, the
// event's name, a human message and the event's fields:
//   text (default): [NAME YYYY-MM-DD HH:MM:SS.mmm] MESSAGE        (local time; fields are only
//                   in the message)
//   json:           {"ts":"2025-01-07T10:31:02.114Z","node":NAME,"level":"info","event":E,
//                    "msg":MESSAGE, <fields>}                       (one object per line, UTC)
// Each line is written with one write(2) to stderr, so lines of several threads never mix and
// a supervisor reading the pipe gets whole lines (PIPE_BUF) for every line under 4 KiB.
//
// Thread-safety: format_log_line is a pure function. set_log_identity must be called before
// any other thread logs (once the config is read); log_event may then be called from any thread.
#pragma once

#include <array>
#include <chrono>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>
#include <type_traits>
#include <variant>

#include "protocol/errors.h"

namespace bidmesh {

enum class LogFormat { text, json };
std::string_view log_format_name(LogFormat f);
std::optional<LogFormat> parse_log_format(std::string_view name);

enum class LogLevel { info, warning, error };

// One field of an event: a key and a string, an integer, a double or a bool. Holds views: it
// lives only for the call it is passed to.
struct LogField {
  template <typename T>
  LogField(std::string_view k, const T& v) : key(k) {
    if constexpr (std::is_same_v<T, bool>) {
      value = v;
    } else if constexpr (std::is_integral_v<T> && std::is_signed_v<T>) {
      value = static_cast<int64_t>(v);
    } else if constexpr (std::is_integral_v<T>) {
      value = static_cast<uint64_t>(v);
    } else if constexpr (std::is_floating_point_v<T>) {
      value = static_cast<double>(v);
    } else {
      value = std::string_view(v);
    }
  }
  std::string_view key;
  std::variant<std::string_view, int64_t, uint64_t, double, bool> value;
};

using LogFields = std::initializer_list<LogField>;

// The line (newline included) as described above, stamped with `unix_ms` (wall clock).
std::string format_log_line(LogFormat format, std::string_view name, LogLevel level, std::string_view event,
                            std::string_view msg, LogFields fields, int64_t unix_ms);
// The same, stamped now.
std::string format_log_line(LogFormat format, std::string_view name, LogLevel level, std::string_view event,
                            std::string_view msg, LogFields fields = {});

// "2025-01-07T10:31:02.114Z": RFC 3339, UTC, milliseconds (the json lines' ts).
std::string rfc3339_utc_ms(int64_t unix_ms);

// The name and format of this process's lines (default: "bidmesh", text).
void set_log_identity(std::string name, LogFormat format);
LogFormat current_log_format();
// Writes one line to stderr.
void log_event(LogLevel level, std::string_view event, std::string_view msg, LogFields fields = {});
inline void log_info(std::string_view event, std::string_view msg, LogFields fields = {}) {
  log_event(LogLevel::info, event, msg, fields);
}

// Refusals an operator should hear of, in bursts: the hot path adds (one array add per refused
// request), the loop calls flush() every turn, and at most once per interval one line per code
// is logged: "N requests refused `internal` in the last 5 s" (event "refusals", fields code,
// count, seconds). Auction outcomes (too_low, closed, ...) are the auction working: callers
// add only the codes that say something is wrong (internal, unavailable, forbidden, ...).
// Thread-compatible: one thread adds and flushes.
class RefusalBursts {
 public:
  using Clock = std::chrono::steady_clock;
  explicit RefusalBursts(std::chrono::seconds interval = std::chrono::seconds(5)) : interval_(interval) {}
  void add(ErrorCode code, uint64_t n = 1) { counts_[static_cast<std::size_t>(code)] += n; }
  // Logs what was added since the last line once `interval` has passed since it.
  void flush(Clock::time_point now);

 private:
  std::chrono::seconds interval_;
  std::array<uint64_t, static_cast<std::size_t>(ErrorCode::internal) + 1> counts_{};
  Clock::time_point last_{};
};

}  // namespace bidmesh
