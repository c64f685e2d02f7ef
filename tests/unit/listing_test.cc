// The `list` op (v2, docs/protocol.md "Listing"): the order key and cursor encoding, decoding of
// list requests, and the item store's listing index (kept with the item changes, through replay,
// and built at open for a store from before it).
#include <catch2/catch.hpp>

#include <lmdb.h>

#include <algorithm>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "protocol/listing.h"
#include "protocol/messages.h"
#include "store_fixtures.h"

namespace bidmesh {
namespace {

Request list_req(std::string id, bool closed, uint64_t limit, std::string cursor = "") {
  Request r;
  r.op = Op::list;
  r.id = std::move(id);
  r.list_closed = closed;
  r.limit = limit;
  r.cursor = std::move(cursor);
  return r;
}

ListPage page_of(const std::string& frame) {
  auto page = decode_list_ok(frame);
  if (!page) FAIL("not a list reply: " << msgpack_to_json(frame));
  return *page;
}

// Every entry of a status, page by page; checks each page's size and the strict order.
std::vector<ListKey> list_all(ItemStore& store, bool closed, uint64_t limit) {
  std::vector<ListKey> all;
  std::string cursor;
  for (int pages = 0; pages < 1000; ++pages) {
    BatchResult res = store.apply_batch({list_req("l" + std::to_string(pages), closed, limit, cursor)}, kNow);
    const ListPage page = page_of(res.replies[0]);
    CHECK_FALSE(page.partial);
    CHECK(page.missing.empty());
    CHECK(page.entries.size() <= limit);
    for (const ListEntry& e : page.entries) {
      if (!all.empty()) CHECK(list_key_less(all.back(), e.key));
      all.push_back(e.key);
    }
    if (!page.cursor) return all;
    CHECK(page.entries.size() == limit);  // a next page only after a full one
    cursor = *page.cursor;
  }
  FAIL("the cursor never ended");
  return all;
}

}  // namespace

TEST_CASE("list keys sort as the contract says, as bytes and as keys", "[v2][list]") {
  const std::vector<ListKey> sorted{
      {false, 5, "b"}, {false, 7, "a"}, {false, 7, "ab"}, {false, 7, "b"}, {false, UINT64_MAX, "a"},
      {false, std::nullopt, "A"}, {false, std::nullopt, "a"}, {true, 1, "z"}, {true, std::nullopt, "a"}};
  for (std::size_t i = 0; i + 1 < sorted.size(); ++i) {
    INFO(i);
    CHECK(list_key_less(sorted[i], sorted[i + 1]));
    CHECK_FALSE(list_key_less(sorted[i + 1], sorted[i]));
    CHECK(list_key_bytes(sorted[i]) < list_key_bytes(sorted[i + 1]));
  }
  for (const ListKey& k : sorted) {
    CHECK(parse_list_key_bytes(list_key_bytes(k)) == k);
    std::string why;
    CHECK(decode_cursor(encode_cursor(k), k.closed, &why) == k);
  }
}

TEST_CASE("list cursors are refused with a reason when they are not ours or for the other status", "[v2][list]") {
  std::string why;
  const std::string open_cursor = encode_cursor(ListKey{false, 42, "lamp-1"});
  CHECK(open_cursor.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") ==
        std::string::npos);
  CHECK_FALSE(decode_cursor(open_cursor, true, &why));
  CHECK(why.find("open items") != std::string::npos);
  for (std::string bad : std::vector<std::string>{"", "x", "!!!!", "AAAA", open_cursor + "A", std::string(200, 'A'),
                          encode_cursor(ListKey{false, 1, "bad item"}), encode_cursor(ListKey{false, 1, ""})}) {
    INFO(bad);
    CHECK_FALSE(decode_cursor(bad, false, &why));
  }
}

TEST_CASE("list requests decode with their defaults and limits", "[v2][list]") {
  auto decode = [](const Request& r) { return decode_request(encode_request(r), kNow); };
  Request r = list_req("l1", false, 7);
  auto ok = decode(r);
  REQUIRE(std::holds_alternative<Request>(ok));
  CHECK(std::get<Request>(ok).op == Op::list);
  CHECK(std::get<Request>(ok).limit == 7u);
  CHECK_FALSE(std::get<Request>(ok).list_closed);

  r.cursor = encode_cursor(ListKey{false, std::nullopt, "vase"});
  ok = decode(r);
  REQUIRE(std::holds_alternative<Request>(ok));
  CHECK(std::get<Request>(ok).cursor == r.cursor);

  auto error_of = [&](const Request& q) {
    auto d = decode(q);
    REQUIRE(std::holds_alternative<DecodeError>(d));
    CHECK(std::get<DecodeError>(d).code == ErrorCode::bad_request);
    CHECK(std::get<DecodeError>(d).id == q.id);
    return std::get<DecodeError>(d).message;
  };
  CHECK(error_of(list_req("l2", false, 0)) == "field 'limit' must be at least 1");
  CHECK(error_of(list_req("l3", false, 101)) == "field 'limit' must be 1 to 100");
  CHECK(error_of(list_req("l4", true, 5, r.cursor)).find("cursor") != std::string::npos);
  CHECK(error_of(list_req("l5", false, 5, "not a cursor")).find("cursor") != std::string::npos);

  // status: required, open or closed; limit absent: 20.
  const std::string no_status = encode_map({{"op", std::string("list")}, {"id", std::string("l6")}});
  auto d = decode_request(no_status, kNow);
  REQUIRE(std::holds_alternative<DecodeError>(d));
  CHECK(std::get<DecodeError>(d).message.find("status") != std::string::npos);
  d = decode_request(encode_map({{"op", std::string("list")}, {"id", std::string("l7")}, {"status", std::string("sold")}}), kNow);
  REQUIRE(std::holds_alternative<DecodeError>(d));
  d = decode_request(encode_map({{"op", std::string("list")}, {"id", std::string("l8")}, {"status", std::string("closed")}}), kNow);
  REQUIRE(std::holds_alternative<Request>(d));
  CHECK(std::get<Request>(d).limit == kDefaultListLimit);
  CHECK(std::get<Request>(d).list_closed);
}

TEST_CASE("the item store lists by status, deadline and item, page by page", "[v2][list]") {
  TempDir dir;
  auto store = open_store(dir.path());
  // 30 items: deadlines in a few groups (ties broken by name), and some without one.
  std::vector<Request> opens;
  std::vector<ListKey> expected_open;
  for (int i = 0; i < 30; ++i) {
    const std::string item = "item-" + std::to_string(i);
    std::optional<uint64_t> closes_at;
    if (i % 5 != 0) closes_at = kNow + 60'000 + static_cast<uint64_t>(i % 3) * 1000;
    Request o = open_req("o" + std::to_string(i), item, 10, 1, closes_at);
    if (i == 3) {
      o.title = "Brass lamp";
      o.description = "never in a list";
      o.reserve = 500;
    }
    opens.push_back(o);
    expected_open.push_back(ListKey{false, closes_at, item});
  }
  REQUIRE(store->apply_batch(opens, kNow).committed);
  std::sort(expected_open.begin(), expected_open.end(), list_key_less);

  SECTION("every open item exactly once, in order, at several page sizes") {
    for (uint64_t limit : {1u, 7u, 30u, 100u}) {
      INFO("limit " << limit);
      CHECK(list_all(*store, false, limit) == expected_open);
    }
    CHECK(list_all(*store, true, 7).empty());
  }

  SECTION("an entry has get's fields and the title, never the description or the reserve") {
    const ListPage page = page_of(store->apply_batch({list_req("l", false, 100)}, kNow).replies[0]);
    auto it = std::find_if(page.entries.begin(), page.entries.end(), [](const ListEntry& e) { return e.key.item == "item-3"; });
    REQUIRE(it != page.entries.end());
    const Reply get = decoded(store->apply_batch({item_req(Op::get, "g", "item-3")}, kNow).replies[0]);
    for (const Field& f : get.fields) {
      if (f.key == "description" || f.key == "image_url") {
        CHECK(it->find(f.key) == nullptr);
      } else {
        INFO(f.key);
        REQUIRE(it->find(f.key) != nullptr);
        CHECK(msgpack_to_json(encode_map({{f.key, *it->find(f.key)}})) == msgpack_to_json(encode_map({f})));
      }
    }
    CHECK(it->find("reserve") == nullptr);
    CHECK(it->find("reserve_met") != nullptr);
    CHECK(std::get<std::string>(*it->find("title")) == "Brass lamp");
  }

  SECTION("closes move items to the closed list; a soft-close extension moves an open one") {
    REQUIRE(store->apply_batch({item_req(Op::close, "c1", "item-1"), item_req(Op::close, "c0", "item-0")}, kNow).committed);
    Request soft = open_req("o-soft", "soft", 10, 1, kNow + 1000);
    soft.extend_ms = 5000;
    REQUIRE(store->apply_batch({soft}, kNow).committed);
    REQUIRE(store->apply_batch({bid_req("b1", "soft", "ann", 20)}, kNow + 900).committed);  // closes_at -> now + 5900

    std::vector<ListKey> open = expected_open;
    open.erase(std::remove_if(open.begin(), open.end(), [](const ListKey& k) { return k.item == "item-0" || k.item == "item-1"; }),
               open.end());
    open.push_back(ListKey{false, kNow + 900 + 5000, "soft"});
    std::sort(open.begin(), open.end(), list_key_less);
    CHECK(list_all(*store, false, 4) == open);
    const std::vector<ListKey> closed{{true, kNow + 61'000, "item-1"}, {true, std::nullopt, "item-0"}};
    CHECK(list_all(*store, true, 1) == closed);

    // The auto-close at the deadline moves it too; replay after a restart keeps all of it.
    REQUIRE(store->apply_batch({}, kNow + 10'000).auto_closes == 1);
    store.reset();
    store = open_store(dir.path());
    CHECK(list_all(*store, true, 100).size() == 3);
    CHECK(list_all(*store, false, 100).size() == open.size() - 1);
  }

  SECTION("a page starts strictly after its cursor, and a cursor outlives the item it names") {
    const ListPage first = page_of(store->apply_batch({list_req("l1", false, 7)}, kNow).replies[0]);
    REQUIRE(first.cursor);
    // The cursor's item closes: the next page still starts right after its key.
    REQUIRE(store->apply_batch({item_req(Op::close, "c", first.entries.back().key.item)}, kNow).committed);
    const ListPage second = page_of(store->apply_batch({list_req("l2", false, 7, *first.cursor)}, kNow).replies[0]);
    REQUIRE_FALSE(second.entries.empty());
    CHECK(second.entries.front().key == expected_open[7]);
  }
}

TEST_CASE("a store without the listing index gets it built once at open", "[v2][list]") {
  TempDir dir;
  std::vector<ListKey> expected;
  {
    auto store = open_store(dir.path());
    std::vector<Request> opens;
    for (int i = 0; i < 12; ++i) {
      const std::string item = "lot-" + std::to_string(i);
      const std::optional<uint64_t> at = i % 4 ? std::optional<uint64_t>(kNow + 1000 * (12 - i)) : std::nullopt;
      opens.push_back(open_req("o" + std::to_string(i), item, 1, 1, at));
      expected.push_back(ListKey{false, at, item});
    }
    REQUIRE(store->apply_batch(opens, kNow).committed);
    REQUIRE(store->apply_batch({item_req(Op::close, "c", "lot-5")}, kNow).committed);
    expected[5].closed = true;
    REQUIRE(store->checkpoint().ok());
  }
  // What a format-4 store from before the index looks like: no listing tree, no meta record.
  {
    MDB_env* env = nullptr;
    REQUIRE(mdb_env_create(&env) == 0);
    REQUIRE(mdb_env_set_maxdbs(env, 8) == 0);
    REQUIRE(mdb_env_set_mapsize(env, 64ull << 20) == 0);
    REQUIRE(mdb_env_open(env, dir.path().c_str(), 0, 0644) == 0);
    MDB_txn* txn = nullptr;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    MDB_dbi meta = 0, listing = 0;
    REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
    REQUIRE(mdb_dbi_open(txn, "listing", 0, &listing) == 0);
    REQUIRE(mdb_drop(txn, listing, 1) == 0);
    MDB_val k{7, const_cast<char*>("listing")};
    REQUIRE(mdb_del(txn, meta, &k, nullptr) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
  }
  auto store = open_store(dir.path());
  std::vector<ListKey> open, closed;
  for (const ListKey& k : expected) (k.closed ? closed : open).push_back(k);
  std::sort(open.begin(), open.end(), list_key_less);
  CHECK(list_all(*store, false, 5) == open);
  CHECK(list_all(*store, true, 5) == closed);
}

}  // namespace bidmesh
