// Fixtures of the item store's unit tests: a temp directory, a store in it, request builders,
// reply helpers.
#pragma once

#include <catch2/catch.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include "nodes/item_store.h"
#include "protocol/messages.h"

namespace bidmesh {

inline constexpr uint64_t kNow = 1'800'000'000'000;  // a fixed wall clock, unix ms

// A fresh directory, removed with everything in it at the end of the test.
class TempDir {
 public:
  TempDir() {
    std::string tmpl = (std::filesystem::temp_directory_path() / "item_store_test.XXXXXX").string();
    REQUIRE(mkdtemp(tmpl.data()) != nullptr);
    path_ = tmpl;
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

inline std::unique_ptr<ItemStore> open_store_with(const ItemStoreOptions& o) {
  auto opened = ItemStore::open(o);
  if (auto* err = std::get_if<std::string>(&opened)) FAIL("open failed: " << *err);
  return std::move(std::get<std::unique_ptr<ItemStore>>(opened));
}

inline std::unique_ptr<ItemStore> open_store(const std::filesystem::path& dir, uint64_t map_size = 64ull << 20,
                                      std::chrono::milliseconds retention = kDefaultRequestRetention) {
  ItemStoreOptions o;
  o.dir = dir;
  o.map_size_bytes = map_size;
  o.retention = retention;
  return open_store_with(o);
}

inline Request open_req(std::string id, std::string item, uint64_t start = 1, uint64_t increment = 1,
                 std::optional<uint64_t> closes_at = std::nullopt) {
  Request r;
  r.op = Op::open;
  r.id = std::move(id);
  r.item = std::move(item);
  r.start = start;
  r.increment = increment;
  r.closes_at = closes_at;
  return r;
}
inline Request bid_req(std::string id, std::string item, std::string bidder, uint64_t amount) {
  Request r;
  r.op = Op::bid;
  r.id = std::move(id);
  r.item = std::move(item);
  r.bidder = std::move(bidder);
  r.amount = amount;
  return r;
}
inline Request item_req(Op op, std::string id, std::string item) {
  Request r;
  r.op = op;
  r.id = std::move(id);
  r.item = std::move(item);
  return r;
}
inline Request history_req(std::string id, std::string item, uint64_t after = 0, uint64_t limit = kDefaultHistoryLimit) {
  Request r = item_req(Op::history, std::move(id), std::move(item));
  r.after = after;
  r.limit = limit;
  return r;
}

// A reply frame decoded (the test fails when it does not decode).
inline Reply decoded(const std::string& frame) {
  auto rep = decode_reply(frame);
  REQUIRE(rep);
  return *rep;
}
inline bool is_nil(const Reply& r, std::string_view key) {
  const Value* v = r.find(key);
  return v != nullptr && std::holds_alternative<Nil>(*v);
}

}  // namespace bidmesh
