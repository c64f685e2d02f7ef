// Launching a node process, and signal names.
//
// spawn_process forks and execs `path` with `argv` in a new process group (the child leads it,
// so the supervisor can signal the node and anything it starts at once), stdin from /dev/null
// and stdout+stderr into one pipe whose read end (non-blocking, close-on-exec) is returned for
// the supervisor to copy into the node's log. Between fork and exec the child sets
// PR_SET_PDEATHSIG(SIGKILL) and re-checks getppid(), so it never outlives the supervisor even if
// the supervisor dies before the node's own code runs; it closes every other descriptor and
// restores default signal dispositions, and sets RLIMIT_DATA when the spec asks for one. Only
// async-signal-safe calls run in the child: argv, the environment and the limit are made
// before fork.
// Thread-safe.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <sys/types.h>

namespace bidmesh {

struct SpawnSpec {
  std::string path;                 // executable
  std::vector<std::string> argv;    // argv[0] included
  std::vector<std::string> env;     // the whole environment, "KEY=value"
  // RLIMIT_DATA of the child (soft and hard), in bytes; 0: inherited. Clamped to the
  // supervisor's own hard limit, which an unprivileged child could not exceed anyway.
  uint64_t max_data_bytes = 0;
};

struct Spawned {
  pid_t pid = -1;
  int out_fd = -1;  // read end of the child's stdout/stderr pipe; the caller closes it
};

// nullopt with `error` set when the pipe or fork fails. A failed exec shows as the child
// exiting with 127 after writing the reason into the pipe.
std::optional<Spawned> spawn_process(const SpawnSpec& spec, std::string& error);

// The current environment with the entries named in `drop` removed and `set` ("KEY=value")
// added or replacing.
std::vector<std::string> make_child_env(const std::vector<std::string>& drop, const std::vector<std::string>& set);

// "TERM", "SIGTERM", "term", "15" -> 15. nullopt if unknown.
std::optional<int> parse_signal(std::string_view name);

}  // namespace bidmesh
