// getpid() answered from memory for the mesh's long-running programs (router, bid node, bench).
//
// Why: libzmq calls getpid() on every signal between its I/O thread and a socket's owner (its
// fork check in signaler_t), and glibc (since 2.25) makes each call a real syscall. On this
// project's VMs a syscall costs a few microseconds, and a routed bid took about 3 of them in the
// router and 12 in the load client (docs/benchmarks.md, "Where each bid's CPU goes").
//
// How: this definition, linked into the executable itself (an OBJECT library, never a static
// archive member nobody references), comes first in the dynamic symbol lookup, so libzmq and
// everything else in the process call it instead of glibc's. The first call asks the kernel; a
// fork() clears the cache in the child (pthread_atfork), so libzmq's fork check still works.
// Children made by posix_spawn/vfork share the parent's memory until they exec and call nothing
// that needs their own pid; the supervisor, which spawns, does not link this.
//
// Thread-safe: the cache is one atomic pid, written with the same value by any racing first call.
#include <pthread.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>

namespace {

std::atomic<pid_t> cached_pid{0};

void forget_pid_in_child() { cached_pid.store(0, std::memory_order_relaxed); }

[[maybe_unused]] const int registered = pthread_atfork(nullptr, nullptr, forget_pid_in_child);

}  // namespace

extern "C" pid_t getpid() noexcept {
  pid_t pid = cached_pid.load(std::memory_order_relaxed);
  if (pid == 0) {
    pid = static_cast<pid_t>(::syscall(SYS_getpid));
    cached_pid.store(pid, std::memory_order_relaxed);
  }
  return pid;
}
