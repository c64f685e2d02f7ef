// Failpoints: see failpoint.h.
#include "nodes/failpoint.h"

#include <cstdlib>
#include <string>
#include <string_view>
#include <thread>

#include "protocol/log.h"

namespace bidmesh::failpoint {

namespace {
std::chrono::milliseconds read_delay(const char* env, const char* what) {
  const char* text = std::getenv(env);
  if (text == nullptr || *text == '\0') return std::chrono::milliseconds(0);
  long long ms = 0;
  for (const char* p = text; *p != '\0'; ++p) {
    if (*p < '0' || *p > '9' || ms > 60000) {
      log_event(LogLevel::warning, "failpoint", std::string("failpoint: ignored ") + env + "=" + text + " (want 1..60000 ms)");
      return std::chrono::milliseconds(0);
    }
    ms = ms * 10 + (*p - '0');
  }
  if (ms > 60000) ms = 0;
  if (ms > 0) {
    log_event(LogLevel::warning, "failpoint",
              std::string("failpoint: ON: ") + what + " is delayed " + std::to_string(ms) + " ms (" + env + "); never in production");
  }
  return std::chrono::milliseconds(ms);
}
}  // namespace

std::chrono::milliseconds commit_delay() {
  static const std::chrono::milliseconds delay = read_delay(kCommitDelayEnv, "every batch's log write");
  return delay;
}

std::chrono::milliseconds checkpoint_delay() {
  static const std::chrono::milliseconds delay = read_delay(kCheckpointDelayEnv, "every checkpoint commit");
  return delay;
}

void before_commit() {
  const auto d = commit_delay();
  if (d.count() > 0) std::this_thread::sleep_for(d);
}

void before_checkpoint() {
  const auto d = checkpoint_delay();
  if (d.count() == 0) return;
  // One line per hold, so that a test can kill the node while it waits here.
  log_event(LogLevel::warning, "failpoint", "failpoint: checkpoint held " + std::to_string(d.count()) + " ms");
  std::this_thread::sleep_for(d);
}

}  // namespace bidmesh::failpoint
