// store_bench: the item store alone, durable commits (no mesh, no ZeroMQ). For each batch size,
// commits of N accepted bids on random items out of --items, and per commit: the bytes the
// process wrote (write_bytes of /proc/self/io, i.e. what reached the block layer, both of LMDB's
// flushes included) and the apply_batch latency (decode-free: requests are built in memory).
//
//   store_bench --dir /var/tmp/sb --items 1000 --batches 1,50,200 --commits 200 [--no-compact]
//
// After the items are opened (1000 per commit) the store is copied compacted (mdb_env_copy2,
// MDB_CP_COMPACT) and reopened: the bulk load leaves a free list of tens of thousands of pages
// that LMDB rewrites on every commit until it is used up, which would hide the per-bid cost.
//
// Uses only ItemStore's public API, so it builds against any store format (A/B of layouts).
// Not a test: built only when tests/bench exists (tests/CMakeLists.txt), never registered.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <lmdb.h>

#include "nodes/item_store.h"

namespace {

uint64_t io_write_bytes() {
  std::ifstream f("/proc/self/io");
  std::string key;
  uint64_t v = 0;
  while (f >> key >> v) {
    if (key == "write_bytes:") return v;
  }
  return 0;
}

std::vector<std::string> split(const std::string& s) {
  std::vector<std::string> out;
  std::size_t b = 0;
  while (b <= s.size()) {
    std::size_t e = s.find(',', b);
    if (e == std::string::npos) e = s.size();
    out.push_back(s.substr(b, e - b));
    b = e + 1;
  }
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  std::string dir = "/var/tmp/store_bench";
  uint64_t items = 1000;
  std::string batches = "1,50,200";
  int commits = 200;
  bool keep = false, compact = true, read_ahead = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "store_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir") dir = next();
    else if (a == "--items") items = std::stoull(next());
    else if (a == "--batches") batches = next();
    else if (a == "--commits") commits = std::stoi(next());
    else if (a == "--keep") keep = true;
    else if (a == "--no-compact") compact = false;
    else if (a == "--read-ahead") read_ahead = true;
    else {
      std::fprintf(stderr, "usage: store_bench [--dir D] [--items N] [--batches 1,50,200] [--commits C] [--keep] [--no-compact] [--read-ahead]\n");
      return 2;
    }
  }
  std::filesystem::remove_all(dir);
  bidmesh::ItemStoreOptions o;
  o.dir = dir;
  o.map_size_bytes = 4ull << 30;
  o.read_ahead = read_ahead;
  auto opened = bidmesh::ItemStore::open(o);
  if (auto* err = std::get_if<std::string>(&opened)) {
    std::fprintf(stderr, "store_bench: %s\n", err->c_str());
    return 1;
  }
  auto store = std::move(std::get<std::unique_ptr<bidmesh::ItemStore>>(opened));

  uint64_t now = 1'800'000'000'000;
  auto item_name = [](uint64_t i) { return "item-" + std::to_string(i); };
  std::vector<bidmesh::Request> batch;
  for (uint64_t i = 0; i < items;) {
    batch.clear();
    for (int k = 0; k < 1000 && i < items; ++k, ++i) {
      bidmesh::Request r;
      r.op = bidmesh::Op::open;
      r.id = "open-" + std::to_string(i);
      r.item = item_name(i);
      batch.push_back(std::move(r));
    }
    if (!store->apply_batch(batch, now).committed) {
      std::fprintf(stderr, "store_bench: opening items failed\n");
      return 1;
    }
  }

  if (compact) {
    if (const bidmesh::Status st = store->checkpoint(); !st.ok()) {
      std::fprintf(stderr, "store_bench: checkpoint: %s\n", st.to_string().c_str());
      return 1;
    }
    store.reset();
    const std::string copy = dir + ".compact";
    std::filesystem::remove_all(copy);
    std::filesystem::create_directories(copy);
    MDB_env* env = nullptr;
    int rc = mdb_env_create(&env);
    if (rc == 0) rc = mdb_env_set_maxdbs(env, 8);
    if (rc == 0) rc = mdb_env_set_mapsize(env, o.map_size_bytes);
    if (rc == 0) rc = mdb_env_open(env, dir.c_str(), MDB_RDONLY, 0600);
    if (rc == 0) rc = mdb_env_copy2(env, copy.c_str(), MDB_CP_COMPACT);
    if (env != nullptr) mdb_env_close(env);
    if (rc != 0) {
      std::fprintf(stderr, "store_bench: compacting: %s\n", mdb_strerror(rc));
      return 1;
    }
    std::filesystem::rename(dir + "/wal", copy + "/wal");  // the log goes with the checkpoint it continues
    std::filesystem::remove_all(dir);
    std::filesystem::rename(copy, dir);
    auto again = bidmesh::ItemStore::open(o);
    if (auto* err = std::get_if<std::string>(&again)) {
      std::fprintf(stderr, "store_bench: %s\n", err->c_str());
      return 1;
    }
    store = std::move(std::get<std::unique_ptr<bidmesh::ItemStore>>(again));
  }

  std::mt19937_64 rng(42);
  std::vector<uint64_t> amount(items, 0);
  uint64_t req = 0;
  std::printf("items=%llu\n", static_cast<unsigned long long>(items));
  for (const std::string& bs : split(batches)) {
    const int n = std::stoi(bs);
    std::vector<double> ms;
    uint64_t bytes = 0;
    for (int c = 0; c < commits + 5; ++c) {
      batch.clear();
      for (int k = 0; k < n; ++k) {
        const uint64_t it = rng() % items;
        bidmesh::Request r;
        r.op = bidmesh::Op::bid;
        r.id = "c" + std::to_string(k % 50) + "-" + std::to_string(++req);  // bench-like ids
        r.item = item_name(it);
        r.bidder = "bidder-" + std::to_string(k % 50);
        r.amount = ++amount[it];
        batch.push_back(std::move(r));
      }
      now += 1;
      const uint64_t w0 = io_write_bytes();
      const auto t0 = std::chrono::steady_clock::now();
      bidmesh::BatchResult b = store->apply_batch(batch, now);
      const auto t1 = std::chrono::steady_clock::now();
      const uint64_t w1 = io_write_bytes();
      if (!b.committed) {
        std::fprintf(stderr, "store_bench: commit failed: %s\n", b.failure ? b.failure->c_str() : "?");
        return 1;
      }
      if (c < 5) continue;  // warm-up
      ms.push_back(std::chrono::duration<double, std::milli>(t1 - t0).count());
      bytes += w1 - w0;
    }
    std::sort(ms.begin(), ms.end());
    auto pct = [&](double p) { return ms[static_cast<std::size_t>(p * (ms.size() - 1))]; };
    std::printf("bids/commit=%4d  write KB/commit=%8.1f  KB/bid=%6.2f  latency ms p50=%7.2f p90=%7.2f  bids/s(p50)=%8.0f\n",
                n, bytes / 1024.0 / commits, bytes / 1024.0 / commits / n, pct(0.5), pct(0.9), n / pct(0.5) * 1000);
    std::fflush(stdout);
  }
  store.reset();
  if (!keep) std::filesystem::remove_all(dir);
  return 0;
}
