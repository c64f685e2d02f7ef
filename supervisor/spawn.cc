#include "supervisor/spawn.h"

#include <cerrno>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <cctype>

extern char** environ;

namespace bidmesh {

namespace {

void write_all(int fd, const char* s) {
  std::size_t n = std::strlen(s);
  while (n > 0) {
    const ssize_t w = ::write(fd, s, n);
    if (w <= 0) return;
    s += w;
    n -= static_cast<std::size_t>(w);
  }
}

// The child, between fork and exec. Async-signal-safe calls only; never returns.
[[noreturn]] void exec_child(const SpawnSpec& spec, char* const* argv, char* const* envp,
                             const rlimit* data_limit, int out_w, pid_t parent) {
  ::setpgid(0, 0);
  ::prctl(PR_SET_PDEATHSIG, SIGKILL);
  if (::getppid() != parent) _exit(1);  // the supervisor died before prctl took effect

  sigset_t none;
  sigemptyset(&none);
  ::sigprocmask(SIG_SETMASK, &none, nullptr);
  for (int sig : {SIGPIPE, SIGHUP, SIGINT, SIGTERM, SIGCHLD}) ::signal(sig, SIG_DFL);

  const int devnull = ::open("/dev/null", O_RDONLY);
  if (devnull >= 0 && devnull != 0) {
    ::dup2(devnull, 0);
    ::close(devnull);
  }
  ::dup2(out_w, 1);
  ::dup2(out_w, 2);
  if (out_w > 2) ::close(out_w);
  // Every descriptor above stderr goes: the supervisor's sockets, pipes and lock are not the
  // node's business (they are close-on-exec already; this is a second fence).
  ::syscall(SYS_close_range, 3u, ~0u, 0u);

  // setrlimit is one system call (prlimit64) with no lock or allocation. A node that should run
  // under a limit never runs without it.
  if (data_limit != nullptr && ::setrlimit(RLIMIT_DATA, data_limit) != 0) {
    const char* desc = strerrordesc_np(errno);
    write_all(2, "bidmesh-supervisor: cannot set RLIMIT_DATA: ");
    write_all(2, desc != nullptr ? desc : "error");
    write_all(2, "\n");
    _exit(127);
  }

  ::execve(spec.path.c_str(), argv, envp);
  const int err = errno;
  write_all(2, "bidmesh-supervisor: cannot execute ");
  write_all(2, spec.path.c_str());
  write_all(2, ": ");
  const char* desc = strerrordesc_np(err);
  write_all(2, desc != nullptr ? desc : "error");
  write_all(2, "\n");
  _exit(127);
}

}  // namespace

std::optional<Spawned> spawn_process(const SpawnSpec& spec, std::string& error) {
  std::vector<char*> argv;
  for (const auto& a : spec.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  for (const auto& e : spec.env) envp.push_back(const_cast<char*>(e.c_str()));
  envp.push_back(nullptr);
  rlimit data_limit{};
  if (spec.max_data_bytes != 0) {
    rlimit now{};
    if (::getrlimit(RLIMIT_DATA, &now) != 0) {
      error = std::string("getrlimit: ") + std::strerror(errno);
      return std::nullopt;
    }
    data_limit.rlim_cur = data_limit.rlim_max = std::min<rlim_t>(spec.max_data_bytes, now.rlim_max);
  }

  int fds[2];
  if (::pipe2(fds, O_CLOEXEC) != 0) {
    error = std::string("pipe: ") + std::strerror(errno);
    return std::nullopt;
  }
  const pid_t parent = ::getpid();
  const pid_t pid = ::fork();
  if (pid < 0) {
    error = std::string("fork: ") + std::strerror(errno);
    ::close(fds[0]);
    ::close(fds[1]);
    return std::nullopt;
  }
  if (pid == 0) {
    ::close(fds[0]);
    exec_child(spec, argv.data(), envp.data(), spec.max_data_bytes != 0 ? &data_limit : nullptr, fds[1], parent);
  }
  ::setpgid(pid, pid);  // also done by the child: whichever runs first wins, no race
  ::close(fds[1]);
  ::fcntl(fds[0], F_SETFL, ::fcntl(fds[0], F_GETFL) | O_NONBLOCK);
  return Spawned{pid, fds[0]};
}

std::vector<std::string> make_child_env(const std::vector<std::string>& drop, const std::vector<std::string>& set) {
  auto key_of = [](std::string_view kv) { return kv.substr(0, kv.find('=')); };
  std::vector<std::string> env;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e) {
    const std::string_view kv(*e);
    const std::string_view key = key_of(kv);
    const bool dropped = std::any_of(drop.begin(), drop.end(), [&](const std::string& d) { return d == key; }) ||
                         std::any_of(set.begin(), set.end(), [&](const std::string& s) { return key_of(s) == key; });
    if (!dropped) env.emplace_back(kv);
  }
  env.insert(env.end(), set.begin(), set.end());
  return env;
}

std::optional<int> parse_signal(std::string_view name) {
  if (name.empty()) return std::nullopt;
  if (std::all_of(name.begin(), name.end(), [](char c) { return std::isdigit(static_cast<unsigned char>(c)); })) {
    if (name.size() > 3) return std::nullopt;
    const int n = std::atoi(std::string(name).c_str());
    if (n >= 1 && n < NSIG) return n;
    return std::nullopt;
  }
  std::string upper;
  for (char c : name) upper += static_cast<char>(std::toupper(static_cast<unsigned char>(c)));
  if (upper.rfind("SIG", 0) == 0) upper.erase(0, 3);
  for (int sig = 1; sig < NSIG; ++sig) {
    const char* abbrev = sigabbrev_np(sig);
    if (abbrev != nullptr && upper == abbrev) return sig;
  }
  return std::nullopt;
}

}  // namespace bidmesh
