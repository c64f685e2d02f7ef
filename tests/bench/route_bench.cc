// route_bench: the router's request peek alone (no ZeroMQ): ns per call and heap allocations per
// call of peek_route (full msgpack unpack) and scan_route (the non-allocating fast path) on one
// typical bid frame, in the same process, best of --repeats rounds of --calls calls each.
//
//   route_bench [--calls 2000000] [--repeats 5]
//
// Allocations are counted by replacing the global operator new in this program only.
// Not a test: built only when tests/bench exists (tests/CMakeLists.txt), never registered.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <new>
#include <string>
#include <variant>

#include "protocol/messages.h"

namespace {
std::atomic<uint64_t> g_allocations{0};
}  // namespace

void* operator new(std::size_t n) {
  g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (void* p = std::malloc(n == 0 ? 1 : n)) return p;
  throw std::bad_alloc();
}
void operator delete(void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }

namespace {

struct Result {
  double ns_per_call = 0;
  double allocations_per_call = 0;
};

// Runs `call` `calls` times per round; keeps the fastest round. `call` returns a value folded
// into a sink so the work cannot be optimized away.
template <typename Call>
Result measure(const char* name, uint64_t calls, int repeats, Call call) {
  Result best{1e18, 0};
  volatile std::size_t sink = 0;
  for (int r = 0; r < repeats; ++r) {
    const uint64_t allocs_before = g_allocations.load();
    const auto t0 = std::chrono::steady_clock::now();
    std::size_t acc = 0;
    for (uint64_t i = 0; i < calls; ++i) acc += call();
    const auto t1 = std::chrono::steady_clock::now();
    sink = sink + acc;
    const double ns = std::chrono::duration<double, std::nano>(t1 - t0).count() / static_cast<double>(calls);
    if (ns < best.ns_per_call) best.ns_per_call = ns;
    best.allocations_per_call = static_cast<double>(g_allocations.load() - allocs_before) / static_cast<double>(calls);
  }
  std::printf("%-10s %8.1f ns/call  %5.2f allocations/call\n", name, best.ns_per_call, best.allocations_per_call);
  return best;
}

}  // namespace

int main(int argc, char** argv) {
  uint64_t calls = 2'000'000;
  int repeats = 5;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--calls" && i + 1 < argc) calls = std::stoull(argv[++i]);
    else if (a == "--repeats" && i + 1 < argc) repeats = std::stoi(argv[++i]);
    else {
      std::fprintf(stderr, "usage: route_bench [--calls N] [--repeats R]\n");
      return 100;
    }
  }
  bidmesh::Request bid;
  bid.op = bidmesh::Op::bid;
  bid.id = "c7f1e2a4-0001";
  bid.item = "lamp-1";
  bid.bidder = "alice";
  bid.amount = 1500;
  const std::string frame = bidmesh::encode_request(bid);
  if (!bidmesh::scan_route(frame) || !std::holds_alternative<bidmesh::RouteInfo>(bidmesh::peek_route(frame))) {
    std::fprintf(stderr, "route_bench: the bid frame is not routable\n");
    return 111;
  }
  std::printf("bid frame: %zu bytes, %llu calls x %d rounds (best round)\n", frame.size(),
              static_cast<unsigned long long>(calls), repeats);
  const Result slow = measure("peek_route", calls, repeats, [&] {
    auto r = bidmesh::peek_route(frame);
    return std::get<bidmesh::RouteInfo>(r).item.size();
  });
  const Result fast = measure("scan_route", calls, repeats, [&] { return bidmesh::scan_route(frame)->item.size(); });
  std::printf("speed-up   %8.1fx\n", slow.ns_per_call / fast.ns_per_call);
  return 0;
}
