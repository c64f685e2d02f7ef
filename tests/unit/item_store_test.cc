// ItemStore: the rules of PROTOCOL.md over LMDB, with explicit clocks (no sleeps).
#include "nodes/item_store.h"

#include <catch2/catch.hpp>

#include <cstddef>
#include <cstdlib>
#include <filesystem>
#include <iterator>
#include <optional>
#include <string>
#include <vector>

#include <lmdb.h>

#include "nodes/store_format.h"
#include "protocol/messages.h"
#include "tests/unit/store_fixtures.h"

namespace bidmesh {
namespace {

// Each reply's outcome (BatchResult::outcomes) is what its bytes say: ok, or the error code.
void check_outcomes(const BatchResult& b) {
  REQUIRE(b.outcomes.size() == b.replies.size());
  for (std::size_t i = 0; i < b.replies.size(); ++i) {
    const std::optional<Reply> rep = decode_reply(b.replies[i]);
    REQUIRE(rep);
    CHECK(rep->error == (b.outcomes[i] ? std::optional<std::string>(error_code_name(*b.outcomes[i])) : std::nullopt));
  }
}

// Applies one request alone; returns the raw reply bytes (its outcome checked).
std::string raw(ItemStore& s, const Request& r, uint64_t now = kNow) {
  BatchResult b = s.apply_batch({r}, now);
  REQUIRE(b.replies.size() == 1);
  check_outcomes(b);
  return b.replies[0];
}
Reply reply(ItemStore& s, const Request& r, uint64_t now = kNow) {
  auto rep = decode_reply(raw(s, r, now));
  REQUIRE(rep);
  return *rep;
}
Event event_of(const FeedMessage& m) {
  auto e = decode_event(m.body);
  REQUIRE(e);
  return *e;
}

}  // namespace

TEST_CASE("item store open creates an item once", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path());

  BatchResult b = store->apply_batch({open_req("o1", "lamp", 100, 5)}, kNow);
  REQUIRE(b.committed);
  Reply r = decoded(b.replies[0]);
  CHECK(r.ok);
  CHECK(r.id == "o1");
  CHECK(r.str("item") == "lamp");
  CHECK(r.u64("seq") == 1u);
  REQUIRE(b.events.size() == 1);
  CHECK(b.events[0].topic == feed_topic("lamp"));
  Event e = event_of(b.events[0]);
  CHECK(e.kind == EventKind::open);
  CHECK(e.seq == 1u);
  CHECK(e.ts == kNow);

  SECTION("a second open of the item is refused with exists") {
    Reply again = reply(*store, open_req("o2", "lamp"));
    CHECK_FALSE(again.ok);
    CHECK(again.error == "exists");
    CHECK(again.id == "o2");
  }
  SECTION("an open after the close is still exists") {
    REQUIRE(reply(*store, item_req(Op::close, "c1", "lamp")).ok);
    CHECK(reply(*store, open_req("o3", "lamp")).error == "exists");
  }
  SECTION("get shows the new item") {
    Reply g = reply(*store, item_req(Op::get, "g1", "lamp"));
    CHECK(g.ok);
    CHECK(g.str("status") == "open");
    CHECK(is_nil(g, "max"));
    CHECK(is_nil(g, "bidder"));
    CHECK(g.u64("seq") == 1u);
    CHECK(g.u64("bids") == 0u);
    CHECK(g.u64("start") == 100u);
    CHECK(g.u64("increment") == 5u);
    CHECK(is_nil(g, "closes_at"));
    CHECK(store->item_count() == 1u);
  }
}

TEST_CASE("item store bid applies the auction rules", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path());
  REQUIRE(reply(*store, open_req("o1", "lamp", 100, 10)).ok);

  SECTION("a bid on an item never opened is unknown_item") {
    Reply r = reply(*store, bid_req("b1", "vase", "ann", 500));
    CHECK(r.error == "unknown_item");
  }
  SECTION("a first bid below start is too_low with max nil") {
    Reply r = reply(*store, bid_req("b1", "lamp", "ann", 99));
    CHECK(r.error == "too_low");
    CHECK(is_nil(r, "max"));
  }
  SECTION("a first bid at start is accepted") {
    BatchResult b = store->apply_batch({bid_req("b1", "lamp", "ann", 100)}, kNow + 5);
    Reply r = decoded(b.replies[0]);
    CHECK(r.ok);
    CHECK(r.str("item") == "lamp");
    CHECK(r.str("bidder") == "ann");
    CHECK(r.u64("amount") == 100u);
    CHECK(r.u64("seq") == 2u);
    REQUIRE(b.events.size() == 1);
    Event e = event_of(b.events[0]);
    CHECK(e.kind == EventKind::max);
    CHECK(e.seq == 2u);
    CHECK(e.ts == kNow + 5);
    CHECK(e.amount == 100u);
    CHECK(e.bidder == "ann");
  }
  SECTION("a raise below max + increment is too_low and carries the max") {
    REQUIRE(reply(*store, bid_req("b1", "lamp", "ann", 100)).ok);
    Reply r = reply(*store, bid_req("b2", "lamp", "bob", 109));
    CHECK(r.error == "too_low");
    CHECK(r.u64("max") == 100u);
    CHECK(reply(*store, bid_req("b3", "lamp", "bob", 50)).error == "too_low");
    CHECK(reply(*store, bid_req("b4", "lamp", "bob", 110)).ok);
    Reply g = reply(*store, item_req(Op::get, "g", "lamp"));
    CHECK(g.u64("max") == 110u);
    CHECK(g.str("bidder") == "bob");
    CHECK(g.u64("bids") == 2u);
    CHECK(g.u64("seq") == 3u);
  }
  SECTION("max + increment past 2^64 refuses every bid without overflow") {
    REQUIRE(reply(*store, open_req("o2", "big", 1, UINT64_MAX)).ok);
    REQUIRE(reply(*store, bid_req("b1", "big", "ann", 2)).ok);
    Reply r = reply(*store, bid_req("b2", "big", "bob", UINT64_MAX));
    CHECK(r.error == "too_low");
    CHECK(r.u64("max") == 2u);
  }
  SECTION("a bid on a closed item is closed") {
    REQUIRE(reply(*store, item_req(Op::close, "c1", "lamp")).ok);
    CHECK(reply(*store, bid_req("b1", "lamp", "ann", 500)).error == "closed");
  }
}

TEST_CASE("item store close ends the auction", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path());
  REQUIRE(reply(*store, open_req("o1", "lamp")).ok);

  SECTION("close of an item never opened is unknown_item") {
    CHECK(reply(*store, item_req(Op::close, "c1", "vase")).error == "unknown_item");
  }
  SECTION("close without bids has winner and amount nil") {
    BatchResult b = store->apply_batch({item_req(Op::close, "c1", "lamp")}, kNow);
    Reply r = decoded(b.replies[0]);
    CHECK(r.ok);
    CHECK(r.u64("seq") == 2u);
    CHECK(is_nil(r, "winner"));
    CHECK(is_nil(r, "amount"));
    REQUIRE(b.events.size() == 1);
    Event e = event_of(b.events[0]);
    CHECK(e.kind == EventKind::closed);
    CHECK_FALSE(e.bidder);
    CHECK_FALSE(e.amount);
  }
  SECTION("close after bids names the winner") {
    REQUIRE(reply(*store, bid_req("b1", "lamp", "ann", 7)).ok);
    REQUIRE(reply(*store, bid_req("b2", "lamp", "bob", 9)).ok);
    Reply r = reply(*store, item_req(Op::close, "c1", "lamp"));
    CHECK(r.ok);
    CHECK(r.u64("seq") == 4u);
    CHECK(r.str("winner") == "bob");
    CHECK(r.u64("amount") == 9u);
    Reply g = reply(*store, item_req(Op::get, "g", "lamp"));
    CHECK(g.str("status") == "closed");
    CHECK(g.u64("seq") == 4u);
  }
  SECTION("a second close is closed") {
    REQUIRE(reply(*store, item_req(Op::close, "c1", "lamp")).ok);
    CHECK(reply(*store, item_req(Op::close, "c2", "lamp")).error == "closed");
  }
}

TEST_CASE("item store reads answer get, history and ping", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path());
  REQUIRE(reply(*store, open_req("o1", "lamp")).ok);
  for (uint64_t i = 1; i <= 9; ++i) REQUIRE(reply(*store, bid_req("b" + std::to_string(i), "lamp", "ann", i)).ok);
  // seq 1 = open, seq 2..10 = the nine bids

  SECTION("get and history of an item never opened are unknown_item") {
    CHECK(reply(*store, item_req(Op::get, "g", "vase")).error == "unknown_item");
    CHECK(reply(*store, history_req("h", "vase")).error == "unknown_item");
  }
  SECTION("history returns every event oldest first, and get equals the last") {
    Reply h = reply(*store, history_req("h", "lamp"));
    CHECK(h.ok);
    CHECK(h.str("item") == "lamp");
    REQUIRE(h.events.size() == 10);
    for (std::size_t i = 0; i < h.events.size(); ++i) CHECK(h.events[i].seq == i + 1);
    CHECK(h.events[0].kind == EventKind::open);
    Reply g = reply(*store, item_req(Op::get, "g", "lamp"));
    CHECK(g.u64("seq") == h.events.back().seq);
    CHECK(g.u64("max") == h.events.back().amount);
    CHECK(g.str("bidder") == h.events.back().bidder);
  }
  SECTION("history pages with after and limit") {
    Reply p1 = reply(*store, history_req("h1", "lamp", 0, 4));
    REQUIRE(p1.events.size() == 4);
    CHECK(p1.events.front().seq == 1u);
    Reply p2 = reply(*store, history_req("h2", "lamp", p1.events.back().seq, 4));
    REQUIRE(p2.events.size() == 4);
    CHECK(p2.events.front().seq == 5u);
    Reply p3 = reply(*store, history_req("h3", "lamp", p2.events.back().seq, 4));
    REQUIRE(p3.events.size() == 2);
    CHECK(p3.events.back().seq == 10u);
    CHECK(reply(*store, history_req("h4", "lamp", 10, 4)).events.empty());
    CHECK(reply(*store, history_req("h5", "lamp", UINT64_MAX, 4)).events.empty());
  }
  SECTION("history of one item never shows another's events") {
    REQUIRE(reply(*store, open_req("o2", "lamp2")).ok);
    REQUIRE(reply(*store, open_req("o3", "lam")).ok);
    CHECK(reply(*store, history_req("h", "lamp")).events.size() == 10);
    CHECK(reply(*store, history_req("h", "lam")).events.size() == 1);
  }
  SECTION("ping is answered ok") {
    Request p;
    p.op = Op::ping;
    p.id = "p1";
    Reply r = reply(*store, p);
    CHECK(r.ok);
    CHECK(r.id == "p1");
  }
  SECTION("a batch of reads opens no write transaction") {
    BatchResult b = store->apply_batch({item_req(Op::get, "g", "lamp"), history_req("h", "lamp")}, kNow);
    CHECK_FALSE(b.committed);
    CHECK(b.events.empty());
    CHECK(decoded(b.replies[0]).ok);
    CHECK(decoded(b.replies[1]).ok);
  }
}

TEST_CASE("item store remembers each write's reply by item and id", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path());
  const std::string first = raw(*store, open_req("o1", "lamp", 10));

  SECTION("a retried open gets the identical reply bytes and changes nothing") {
    BatchResult b = store->apply_batch({open_req("o1", "lamp", 10)}, kNow + 1000);
    CHECK(b.replies[0] == first);
    CHECK(b.events.empty());
    CHECK(store->get_item("lamp")->seq == 1u);
  }
  SECTION("a retried bid is not applied twice") {
    const std::string bid = raw(*store, bid_req("b1", "lamp", "ann", 10));
    REQUIRE(decoded(bid).ok);
    BatchResult b = store->apply_batch({bid_req("b1", "lamp", "ann", 10)}, kNow + 1);
    CHECK(b.replies[0] == bid);
    CHECK(b.events.empty());
    CHECK(store->get_item("lamp")->bids == 1u);
    CHECK(store->get_item("lamp")->seq == 2u);
  }
  SECTION("a remembered error is replayed even after the state changed") {
    const std::string low = raw(*store, bid_req("b1", "lamp", "ann", 5));
    REQUIRE(decoded(low).error == "too_low");
    REQUIRE(reply(*store, bid_req("b2", "lamp", "bob", 50)).ok);
    CHECK(raw(*store, bid_req("b1", "lamp", "ann", 5)) == low);
    const std::string unknown = raw(*store, bid_req("b3", "vase", "ann", 5));
    REQUIRE(decoded(unknown).error == "unknown_item");
    REQUIRE(reply(*store, open_req("o2", "vase")).ok);
    CHECK(raw(*store, bid_req("b3", "vase", "ann", 5)) == unknown);
  }
  SECTION("the same id with other content is a conflict, not stored") {
    Reply r = reply(*store, open_req("o1", "lamp", 11));
    CHECK(r.error == "conflict");
    CHECK(r.id == "o1");
    CHECK(reply(*store, bid_req("o1", "lamp", "ann", 10)).error == "conflict");
    CHECK(raw(*store, open_req("o1", "lamp", 10)) == first);
  }
  SECTION("the same id on another item is another write") {
    CHECK(reply(*store, open_req("o1", "vase", 10)).ok);
  }
  SECTION("a retry inside the same batch gets the first one's reply") {
    BatchResult b = store->apply_batch(
        {bid_req("b1", "lamp", "ann", 10), bid_req("b1", "lamp", "ann", 10), bid_req("b1", "lamp", "ann", 20)}, kNow);
    CHECK(decoded(b.replies[0]).ok);
    CHECK(b.replies[1] == b.replies[0]);
    CHECK(decoded(b.replies[2]).error == "conflict");
    CHECK(b.events.size() == 1);
    check_outcomes(b);
    CHECK(b.outcomes == std::vector<std::optional<ErrorCode>>{std::nullopt, std::nullopt, ErrorCode::conflict});
  }
  SECTION("a remembered reply keeps its outcome: ok and too_low alike") {
    REQUIRE(reply(*store, bid_req("b1", "lamp", "ann", 5)).error == "too_low");
    BatchResult b = store->apply_batch({open_req("o1", "lamp", 10), bid_req("b1", "lamp", "ann", 5)}, kNow + 1);
    check_outcomes(b);
    CHECK(b.outcomes == std::vector<std::optional<ErrorCode>>{std::nullopt, ErrorCode::too_low});
  }
  SECTION("decisions survive a reopen of the store") {
    store.reset();
    store = open_store(dir.path());
    CHECK(raw(*store, open_req("o1", "lamp", 10)) == first);
  }
}

TEST_CASE("item store applies a batch in one transaction in arrival order", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path());
  BatchResult b = store->apply_batch({open_req("o1", "lamp", 10), item_req(Op::get, "g1", "lamp"),
                                      bid_req("b1", "lamp", "ann", 10), bid_req("b2", "lamp", "bob", 10),
                                      bid_req("b3", "lamp", "bob", 11), open_req("o2", "vase"),
                                      item_req(Op::close, "c1", "lamp"), history_req("h1", "lamp")},
                                     kNow);
  REQUIRE(b.committed);
  REQUIRE_FALSE(b.failure);
  REQUIRE(b.replies.size() == 8);
  check_outcomes(b);
  CHECK(b.outcomes[3] == ErrorCode::too_low);
  CHECK(decoded(b.replies[0]).ok);
  CHECK(decoded(b.replies[2]).u64("seq") == 2u);
  CHECK(decoded(b.replies[3]).error == "too_low");
  CHECK(decoded(b.replies[4]).u64("seq") == 3u);
  CHECK(decoded(b.replies[5]).ok);
  Reply close = decoded(b.replies[6]);
  CHECK(close.str("winner") == "bob");
  CHECK(close.u64("amount") == 11u);

  SECTION("reads see the whole committed batch") {
    Reply g = decoded(b.replies[1]);
    CHECK(g.str("status") == "closed");
    CHECK(g.u64("seq") == 4u);
    CHECK(decoded(b.replies[7]).events.size() == 4);
  }
  SECTION("the events come in commit order") {
    REQUIRE(b.events.size() == 6);
    std::vector<std::pair<std::string, uint64_t>> got;
    for (const auto& m : b.events) {
      if (m.topic == bidder_topic("ann")) {  // bob took the lead from ann (docs/protocol.md)
        CHECK(m.body == encode_outbid("lamp", 3, kNow, 11));
        got.emplace_back("outbid ann", 3);
        continue;
      }
      Event e = event_of(m);
      got.emplace_back(e.item, e.seq);
    }
    CHECK(got == std::vector<std::pair<std::string, uint64_t>>{
                     {"lamp", 1}, {"lamp", 2}, {"lamp", 3}, {"outbid ann", 3}, {"vase", 1}, {"lamp", 4}});
  }
}

TEST_CASE("item store state survives a reopen", "[item_store]") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    REQUIRE(reply(*store, open_req("o1", "lamp", 5, 2, kNow + 60'000)).ok);
    REQUIRE(reply(*store, bid_req("b1", "lamp", "ann", 7)).ok);
  }
  auto store = open_store(dir.path());
  CHECK(store->item_count() == 1u);
  auto s = store->get_item("lamp");
  REQUIRE(s);
  CHECK_FALSE(s->closed);
  CHECK(s->seq == 2u);
  CHECK(s->max == 7u);
  CHECK(s->bidder == "ann");
  CHECK(s->start == 5u);
  CHECK(s->increment == 2u);
  CHECK(s->closes_at == kNow + 60'000);
  CHECK(store->next_auto_close_ms() == kNow + 60'000);
  Reply r = reply(*store, bid_req("b2", "lamp", "bob", 9));
  CHECK(r.u64("seq") == 3u);  // seq goes on
  CHECK(reply(*store, history_req("h", "lamp")).events.size() == 3);

  SECTION("a second process cannot open the same store") {
    ItemStoreOptions o;
    o.dir = dir.path();
    auto second = ItemStore::open(o);
    REQUIRE(std::holds_alternative<std::string>(second));
    CHECK_THAT(std::get<std::string>(second), Catch::Contains("in use"));
  }
}

TEST_CASE("item store closes an item by itself at its deadline", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path());
  const uint64_t deadline = kNow + 10'000;
  REQUIRE(reply(*store, open_req("o1", "lamp", 1, 1, deadline)).ok);
  REQUIRE(reply(*store, bid_req("b1", "lamp", "ann", 3)).ok);
  CHECK(store->next_auto_close_ms() == deadline);

  SECTION("nothing happens before the deadline") {
    BatchResult b = store->apply_batch({}, deadline - 1);
    CHECK_FALSE(b.committed);
    CHECK(b.events.empty());
    CHECK(reply(*store, bid_req("b2", "lamp", "bob", 4), deadline - 1).ok);
  }
  SECTION("at the deadline an empty batch closes it, as close would") {
    BatchResult b = store->apply_batch({}, deadline);
    CHECK(b.committed);
    REQUIRE(b.events.size() == 1);
    Event e = event_of(b.events[0]);
    CHECK(e.kind == EventKind::closed);
    CHECK(e.seq == 3u);
    CHECK(e.bidder == "ann");
    CHECK(e.amount == 3u);
    CHECK(e.ts == deadline);
    CHECK(store->get_item("lamp")->closed);
    CHECK_FALSE(store->next_auto_close_ms());
    CHECK(reply(*store, item_req(Op::close, "c1", "lamp"), deadline + 1).error == "closed");
  }
  SECTION("a bid at the deadline is closed, and the close comes first") {
    BatchResult b = store->apply_batch({bid_req("b2", "lamp", "bob", 4)}, deadline);
    CHECK(decoded(b.replies[0]).error == "closed");
    REQUIRE(b.events.size() == 1);
    CHECK(event_of(b.events[0]).kind == EventKind::closed);
    CHECK(store->get_item("lamp")->max == 3u);
  }
  SECTION("a manual close removes the deadline") {
    REQUIRE(reply(*store, item_req(Op::close, "c1", "lamp"), deadline - 5).ok);
    CHECK_FALSE(store->next_auto_close_ms());
    CHECK(store->apply_batch({}, deadline + 1).events.empty());
    CHECK(store->get_item("lamp")->seq == 3u);
  }
  SECTION("deadlines close earliest first across items") {
    REQUIRE(reply(*store, open_req("o2", "vase", 1, 1, deadline - 100)).ok);
    REQUIRE(reply(*store, open_req("o3", "sofa", 1, 1, deadline + 100)).ok);
    CHECK(store->next_auto_close_ms() == deadline - 100);
    BatchResult b = store->apply_batch({}, deadline);
    REQUIRE(b.events.size() == 2);
    CHECK(event_of(b.events[0]).item == "vase");
    CHECK(event_of(b.events[1]).item == "lamp");
    CHECK(store->next_auto_close_ms() == deadline + 100);
    CHECK(is_nil(reply(*store, item_req(Op::get, "g", "vase"), deadline), "max"));
  }
  SECTION("a deadline that passed while the store was closed is due at reopen") {
    store.reset();
    store = open_store(dir.path());
    BatchResult b = store->apply_batch({}, deadline + 5'000);
    REQUIRE(b.events.size() == 1);
    CHECK(event_of(b.events[0]).kind == EventKind::closed);
  }
}

TEST_CASE("item store prunes idempotency records after the retention", "[item_store]") {
  TempDir dir;
  const auto retention = std::chrono::milliseconds(1000);
  auto store = open_store(dir.path(), 64ull << 20, retention);
  REQUIRE(reply(*store, open_req("o1", "lamp")).ok);
  CHECK(store->idempotency_record_count() == 1u);

  SECTION("a record is kept for the whole retention") {
    REQUIRE(reply(*store, bid_req("b1", "lamp", "ann", 1), kNow + 1000).ok);
    CHECK(store->idempotency_record_count() == 2u);
  }
  SECTION("an expired record is pruned by a later write, and its id is then new") {
    REQUIRE(reply(*store, bid_req("b1", "lamp", "ann", 1), kNow + 1001).ok);
    CHECK(store->idempotency_record_count() == 1u);
    CHECK(reply(*store, open_req("o1", "lamp"), kNow + 1002).error == "exists");
  }
  SECTION("each write transaction prunes a bounded number") {
    std::vector<Request> batch;
    for (int i = 0; i < 100; ++i) batch.push_back(bid_req("b" + std::to_string(i), "lamp", "ann", 1000 + i));
    REQUIRE(store->apply_batch(batch, kNow).committed);
    REQUIRE(store->idempotency_record_count() == 101u);
    REQUIRE(reply(*store, item_req(Op::close, "c1", "lamp"), kNow + 5000).ok);
    // The sweep examines kPrunePerTxn + kPrunePerWrite per write (1 here) records, all expired.
    CHECK(store->idempotency_record_count() == 101u + 1 - (kPrunePerTxn + kPrunePerWrite));
    // More closes (each refused `closed`, and remembered) until only their records are left.
    uint64_t closes = 1;
    while (store->idempotency_record_count() > closes && closes < 100) {
      REQUIRE(reply(*store, item_req(Op::close, "c" + std::to_string(++closes), "lamp"), kNow + 5000).error == "closed");
    }
    CHECK(store->idempotency_record_count() == closes);
    CHECK(closes <= 101 / (kPrunePerTxn + kPrunePerWrite) + 2);
  }
}

TEST_CASE("item store sweep prunes every expired record, across items, wrapping around", "[item_store]") {
  TempDir dir;
  const auto retention = std::chrono::milliseconds(1000);
  auto store = open_store(dir.path(), 64ull << 20, retention);
  // 40 items x 10 records (open + 9 bids) = 400 records, all stored at kNow.
  std::vector<Request> batch;
  for (int i = 0; i < 40; ++i) {
    const std::string item = "item" + std::to_string(i);
    batch.push_back(open_req("o", item));
    for (int b = 1; b <= 9; ++b) batch.push_back(bid_req("b" + std::to_string(b), item, "ann", b));
  }
  REQUIRE(store->apply_batch(batch, kNow).committed);
  REQUIRE(store->idempotency_record_count() == 400u);

  SECTION("nothing is pruned within the retention, however many txns pass") {
    for (int t = 0; t < 20; ++t)
      REQUIRE(reply(*store, item_req(Op::close, "c" + std::to_string(t), "nope"), kNow + 1000).error == "unknown_item");
    CHECK(store->idempotency_record_count() == 420u);
    CHECK(store->get_item("item7")->bids == 9u);
  }
  SECTION("each txn deletes a bounded number; one cycle removes all, then new writes are kept") {
    const uint64_t later = kNow + 2000;
    uint64_t before = store->idempotency_record_count();
    int txns = 0;
    // Each txn: one write (a new record, kept) and a sweep of at most kPrunePerTxn + kPrunePerWrite.
    while (txns < 100) {
      REQUIRE(reply(*store, item_req(Op::close, "x" + std::to_string(txns), "nope"), later).error == "unknown_item");
      ++txns;
      const uint64_t now_count = store->idempotency_record_count();
      CHECK(before + 1 - now_count <= kPrunePerTxn + kPrunePerWrite);
      before = now_count;
      if (now_count == static_cast<uint64_t>(txns)) break;  // only the new records are left
    }
    // 400 expired records at <= kPrunePerTxn + kPrunePerWrite per txn, and a cycle is bounded.
    const int per_txn = static_cast<int>(kPrunePerTxn + kPrunePerWrite);
    CHECK(txns >= 400 / per_txn);
    CHECK(txns <= 400 / per_txn + 5);
    CHECK(store->idempotency_record_count() == static_cast<uint64_t>(txns));
    // An expired id is new again; the items themselves are untouched.
    CHECK(reply(*store, bid_req("b9", "item3", "bob", 100), later).ok);
    CHECK(store->get_item("item3")->bids == 10u);
    CHECK(reply(*store, history_req("h", "item3"), later).events.size() == 11u);
  }
  SECTION("after a reopen the sweep goes on and completes its cycle") {
    REQUIRE(reply(*store, item_req(Op::close, "y", "nope"), kNow + 2000).error == "unknown_item");
    const uint64_t after_one = store->idempotency_record_count();
    CHECK(after_one == 400u + 1 - (kPrunePerTxn + kPrunePerWrite));
    store.reset();
    store = open_store(dir.path(), 64ull << 20, retention);
    const int txns = static_cast<int>(400 / (kPrunePerTxn + kPrunePerWrite)) + 5;  // more than a cycle
    for (int t = 0; t < txns; ++t)
      REQUIRE(reply(*store, item_req(Op::close, "z" + std::to_string(t), "nope"), kNow + 2000).error == "unknown_item");
    // y and the z's: only the unexpired records.
    CHECK(store->idempotency_record_count() == static_cast<uint64_t>(txns) + 1);
  }
}

namespace {

// The (closed) store's LMDB environment, opened straight, for tests that change or inspect it.
MDB_env* open_raw_env(const std::filesystem::path& dir, unsigned flags) {
  MDB_env* env = nullptr;
  REQUIRE(mdb_env_create(&env) == 0);
  REQUIRE(mdb_env_set_maxdbs(env, 8) == 0);
  REQUIRE(mdb_env_open(env, dir.c_str(), flags, 0600) == 0);
  return env;
}

// Calls fn(key, value) for every record of a tree, in key order.
template <typename Fn>
void each_raw_record(MDB_txn* txn, MDB_dbi dbi, Fn fn) {
  MDB_cursor* c = nullptr;
  REQUIRE(mdb_cursor_open(txn, dbi, &c) == 0);
  MDB_val k{}, v{};
  for (int rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT))
    fn(std::string_view(static_cast<const char*>(k.mv_data), k.mv_size), v);
  mdb_cursor_close(c);
}

// Writes one record straight into a tree of the (closed) store in `dir`, as damage would: puts
// it, or with no value deletes it.
void put_raw(const std::filesystem::path& dir, const char* tree, std::string_view key,
             std::optional<std::string_view> value) {
  MDB_env* env = open_raw_env(dir, 0);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
  MDB_dbi dbi = 0;
  REQUIRE(mdb_dbi_open(txn, tree, 0, &dbi) == 0);
  MDB_val k{key.size(), const_cast<char*>(key.data())};
  if (value) {
    MDB_val v{value->size(), const_cast<char*>(value->data())};
    REQUIRE(mdb_put(txn, dbi, &k, &v, 0) == 0);
  } else {
    REQUIRE(mdb_del(txn, dbi, &k, nullptr) == 0);
  }
  REQUIRE(mdb_txn_commit(txn) == 0);
  mdb_env_close(env);
}

}  // namespace

TEST_CASE("item store keeps the counts of its metrics through prunes, closes, checkpoints and reopens",
          "[item_store][metrics]") {
  TempDir dir;
  const auto retention = std::chrono::milliseconds(1000);
  auto store = open_store(dir.path(), 64ull << 20, retention);
  const auto counts_hold = [&] {
    CHECK(store->idempotency_records() == store->idempotency_record_count());
    // The log's own count of its segment files is what the wal directory holds.
    const auto files = std::distance(std::filesystem::directory_iterator(dir.path() / "wal"),
                                     std::filesystem::directory_iterator());
    CHECK(store->log_segments() == static_cast<uint64_t>(files));
  };
  // 40 items x 10 records (open + 9 bids), one with a deadline.
  std::vector<Request> batch;
  for (int i = 0; i < 40; ++i) {
    const std::string item = "item" + std::to_string(i);
    batch.push_back(i == 0 ? open_req("o", item, 1, 1, kNow + 500) : open_req("o", item));
    for (int b = 1; b <= 9; ++b) batch.push_back(bid_req("b" + std::to_string(b), item, "ann", b));
  }
  BatchResult first = store->apply_batch(batch, kNow);
  REQUIRE(first.committed);
  CHECK(first.log_bytes > 0);
  CHECK(first.log_ns > 0);
  CHECK(store->items_open() == 40u);
  CHECK(store->idempotency_records() == 400u);
  CHECK(store->log_bytes_since_checkpoint() > 0);
  // A repeat and a refused close change no count; a close does.
  CHECK(reply(*store, bid_req("b1", "item1", "ann", 1), kNow + 100).ok);
  CHECK(reply(*store, item_req(Op::close, "c", "item1"), kNow + 100).ok);
  CHECK(reply(*store, item_req(Op::close, "c2", "item1"), kNow + 100).error == "closed");
  CHECK(store->items_open() == 39u);
  CHECK(store->idempotency_records() == 402u);
  // The deadline of item0 closes it by itself.
  BatchResult due = store->apply_batch({}, kNow + 500);
  CHECK(due.auto_closes == 1u);
  CHECK(due.log_ns > 0);
  CHECK(store->items_open() == 38u);
  // Past the retention every write prunes some.
  for (int t = 0; t < 10; ++t)
    REQUIRE(reply(*store, item_req(Op::close, "x" + std::to_string(t), "nope"), kNow + 5000).error == "unknown_item");
  CHECK(store->idempotency_records() < 402u);
  counts_hold();

  SECTION("a reopen replays the log onto the last checkpoint's counts") {
    REQUIRE(store->checkpoint().ok());
    CHECK(store->log_bytes_since_checkpoint() == 0u);
    CHECK(store->store_used_bytes() > 0u);
    CHECK(store->store_used_bytes() <= store->map_size_bytes());
    REQUIRE(reply(*store, item_req(Op::close, "c", "item2"), kNow + 5000).ok);
    const uint64_t records = store->idempotency_records();
    store.reset();
    store = open_store(dir.path(), 64ull << 20, retention);
    CHECK(store->items_open() == 37u);
    CHECK(store->idempotency_records() == records);
    counts_hold();
  }
  SECTION("a store without the saved counts is counted once at open") {
    REQUIRE(store->checkpoint().ok());
    const uint64_t records = store->idempotency_records();
    store.reset();
    put_raw(dir.path(), "meta", "open", std::nullopt);
    put_raw(dir.path(), "meta", "records", std::nullopt);
    store = open_store(dir.path(), 64ull << 20, retention);
    CHECK(store->items_open() == 38u);
    CHECK(store->idempotency_records() == records);
  }
}

TEST_CASE("item store names the stored record that does not parse", "[item_store]") {
  TempDir dir;
  const uint64_t deadline = kNow + 10;
  {
    auto store = open_store(dir.path());
    REQUIRE(reply(*store, open_req("o1", "lamp", 1, 1, deadline)).ok);
    REQUIRE(store->checkpoint().ok());  // LMDB holds it all: the reopen replays nothing over the damage
  }
  std::string key;
  const char* want = "";
  Request write = open_req("o1", "lamp", 1, 1, deadline);
  uint64_t at = kNow;
  SECTION("a request record too short for its header") {
    put_raw(dir.path(), "requests", store_format::request_key(key, "lamp", "o1"), "short");
    want = "(request record)";
  }
  SECTION("a deadline key too short for its time, met by the auto-close") {
    put_raw(dir.path(), "deadlines", "\xff", "");  // sorts after the due deadline
    write = bid_req("b1", "lamp", "ann", 5);
    at = deadline + 1;
    want = "(deadline key)";
  }
  SECTION("a request key shorter than its id length says, met by the prune sweep") {
    put_raw(dir.path(), "requests", "\x40no item here", "");
    write = bid_req("b1", "lamp", "ann", 5);
    want = "(request key)";
  }
  auto store = open_store(dir.path());
  BatchResult b = store->apply_batch({write}, at);
  CHECK_FALSE(b.committed);
  REQUIRE(b.failure);
  CHECK_THAT(*b.failure, Catch::Contains("a stored record is malformed " + std::string(want)));
  const Reply r = decoded(b.replies[0]);
  CHECK(r.error == "internal");
  CHECK(r.message == b.failure);
}

TEST_CASE("item store refuses a store of another format, naming the directory", "[item_store]") {
  TempDir dir;
  {
    auto store = open_store(dir.path());
    REQUIRE(reply(*store, open_req("o1", "lamp")).ok);
  }
  // Make it look like format 1 (what the previous build wrote in meta).
  put_raw(dir.path(), "meta", "format", "1");
  ItemStoreOptions o;
  o.dir = dir.path();
  auto opened = ItemStore::open(o);
  REQUIRE(std::holds_alternative<std::string>(opened));
  const std::string& err = std::get<std::string>(opened);
  CHECK_THAT(err, Catch::Contains(dir.path().string()) && Catch::Contains("format 1") &&
                      Catch::Contains("format 2") && Catch::Contains("move"));
  CHECK(err.find('\n') == std::string::npos);
  // Refusing changed nothing: a second try says the same.
  auto again = ItemStore::open(o);
  REQUIRE(std::holds_alternative<std::string>(again));
  CHECK(std::get<std::string>(again) == err);
}

TEST_CASE("item store moves the request records of a format-5 store into their own tree at open", "[item_store]") {
  TempDir dir;
  std::string first_open, bid, refused;
  uint64_t records = 0;
  {
    auto store = open_store(dir.path());
    first_open = raw(*store, open_req("o1", "lamp", 10));
    bid = raw(*store, bid_req("b1", "lamp", "ann", 10));
    REQUIRE(reply(*store, open_req("o1", "vase")).ok);  // the same id on another item
    refused = raw(*store, bid_req("b2", "lamp", "bob", 3));
    REQUIRE(decoded(refused).error == "too_low");
    REQUIRE(store->checkpoint().ok());
    records = store->idempotency_records();
    REQUIRE(records == 4u);
  }
  // Back to an older layout: `back` of the records as data keys "item \0 0x03 id" (all of them: no
  // requests tree, format 5), or some with the marker of a move stopped part-way (format 6).
  std::size_t chunk = 100000;
  {
    int back = 4;
    std::string_view format = "5";
    SECTION("a format-5 store, moved in commits of one record") { chunk = 1; }
    SECTION("a format-5 store, moved in one commit") {}
    SECTION("a move stopped part-way is finished by the next open") {
      back = 2;
      format = "6";
    }
    MDB_env* env = open_raw_env(dir.path(), 0);
    MDB_txn* txn = nullptr;
    REQUIRE(mdb_txn_begin(env, nullptr, 0, &txn) == 0);
    MDB_dbi meta = 0, data = 0, requests = 0;
    REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
    REQUIRE(mdb_dbi_open(txn, "data", 0, &data) == 0);
    REQUIRE(mdb_dbi_open(txn, "requests", 0, &requests) == 0);
    std::vector<std::pair<std::string, std::string>> moved;
    each_raw_record(txn, requests, [&](std::string_view key, MDB_val& v) {
      if (static_cast<int>(moved.size()) < back)
        moved.emplace_back(std::string(key), std::string(static_cast<const char*>(v.mv_data), v.mv_size));
    });
    REQUIRE(static_cast<int>(moved.size()) == back);
    for (auto& [key, value] : moved) {
      const std::size_t id_bytes = static_cast<unsigned char>(key[0]);
      std::string old_key = key.substr(1 + id_bytes);
      old_key.push_back('\0');
      old_key.push_back(store_format::kTagRequestBeforeFormat6);
      old_key += key.substr(1, id_bytes);
      MDB_val ok{old_key.size(), old_key.data()}, ov{value.size(), value.data()}, nk{key.size(), key.data()};
      REQUIRE(mdb_put(txn, data, &ok, &ov, 0) == 0);
      REQUIRE(mdb_del(txn, requests, &nk, nullptr) == 0);
    }
    if (format == "5") {
      REQUIRE(mdb_drop(txn, requests, 1) == 0);
    } else {
      MDB_val mk{store_format::kMovingRequestsMetaKey.size(), const_cast<char*>(store_format::kMovingRequestsMetaKey.data())},
          mv{1, const_cast<char*>("1")};
      REQUIRE(mdb_put(txn, meta, &mk, &mv, 0) == 0);
    }
    MDB_val fk{6, const_cast<char*>("format")}, fv{format.size(), const_cast<char*>(format.data())};
    REQUIRE(mdb_put(txn, meta, &fk, &fv, 0) == 0);
    REQUIRE(mdb_txn_commit(txn) == 0);
    mdb_env_close(env);
  }
  ItemStoreOptions o;
  o.dir = dir.path();
  o.map_size_bytes = 64ull << 20;
  o.request_move_chunk = chunk;
  auto opened = ItemStore::open(o);
  REQUIRE(std::holds_alternative<std::unique_ptr<ItemStore>>(opened));
  auto store = std::move(std::get<std::unique_ptr<ItemStore>>(opened));
  CHECK(store->idempotency_records() == records);
  CHECK(store->idempotency_record_count() == records);
  // Every remembered reply is found where the writes now look, and nothing is applied twice.
  CHECK(raw(*store, open_req("o1", "lamp", 10)) == first_open);
  CHECK(raw(*store, bid_req("b1", "lamp", "ann", 10)) == bid);
  CHECK(raw(*store, bid_req("b2", "lamp", "bob", 3)) == refused);
  CHECK(reply(*store, bid_req("b1", "lamp", "ann", 11)).error == "conflict");
  CHECK(store->get_item("lamp")->bids == 1u);
  CHECK(store->idempotency_records() == records);
  // The data tree kept no request record.
  store.reset();
  MDB_env* env = open_raw_env(dir.path(), MDB_RDONLY);
  MDB_txn* txn = nullptr;
  REQUIRE(mdb_txn_begin(env, nullptr, MDB_RDONLY, &txn) == 0);
  MDB_dbi data = 0;
  REQUIRE(mdb_dbi_open(txn, "data", 0, &data) == 0);
  int old_records = 0;
  each_raw_record(txn, data, [&](std::string_view key, MDB_val&) {
    const auto end = store_format::data_key_item_end(key);
    REQUIRE(end);
    if (key[*end + 1] == store_format::kTagRequestBeforeFormat6) ++old_records;
  });
  MDB_dbi meta = 0;
  REQUIRE(mdb_dbi_open(txn, "meta", 0, &meta) == 0);
  MDB_val fk{6, const_cast<char*>("format")}, fv{};
  REQUIRE(mdb_get(txn, meta, &fk, &fv) == 0);
  CHECK(std::string_view(static_cast<const char*>(fv.mv_data), fv.mv_size) == store_format::kFormatVersion);
  MDB_val mk{store_format::kMovingRequestsMetaKey.size(), const_cast<char*>(store_format::kMovingRequestsMetaKey.data())};
  CHECK(mdb_get(txn, meta, &mk, &fv) == MDB_NOTFOUND);
  mdb_txn_abort(txn);
  mdb_env_close(env);
  CHECK(old_records == 0);
}

TEST_CASE("item store reports a full map as internal and keeps serving reads", "[item_store]") {
  TempDir dir;
  auto store = open_store(dir.path(), 256 * 1024);
  REQUIRE(reply(*store, open_req("o1", "lamp")).ok);

  // Fill the map with bids until a batch fails.
  const std::string bidder(64, 'b');
  uint64_t amount = 1;
  std::optional<BatchResult> failed;
  std::vector<Request> batch;
  for (int round = 0; round < 1000 && !failed; ++round) {
    batch.clear();
    for (int i = 0; i < 50; ++i, ++amount)
      batch.push_back(bid_req(std::string(40, 'x') + std::to_string(amount), "lamp", bidder, amount));
    batch.push_back(item_req(Op::get, "g", "lamp"));
    BatchResult b = store->apply_batch(batch, kNow);
    if (!b.committed) failed = std::move(b);
  }
  REQUIRE(failed);
  REQUIRE(failed->failure);
  CHECK_THAT(*failed->failure, Catch::StartsWith("storage full") && Catch::Contains("map_size_mb"));
  CHECK(failed->events.empty());
  check_outcomes(*failed);  // the refused writes count as internal, the read as ok
  for (std::size_t i = 0; i + 1 < failed->replies.size(); ++i) {
    Reply r = decoded(failed->replies[i]);
    CHECK(r.error == "internal");
    CHECK_THAT(*r.message, Catch::StartsWith("storage full"));
  }
  // The read of the failed batch is answered from the last committed state.
  Reply g = decoded(failed->replies.back());
  CHECK(g.ok);
  const auto seq = g.u64("seq");
  REQUIRE(seq);
  CHECK(*seq > 1u);

  SECTION("earlier data stays readable") {
    Reply h = reply(*store, history_req("h", "lamp", *seq - 1));
    REQUIRE(h.events.size() == 1);
    CHECK(h.events[0].seq == *seq);
    CHECK(store->get_item("lamp")->seq == *seq);
  }
  SECTION("a reopen with a larger map accepts the same writes again: internal was not remembered") {
    store.reset();
    store = open_store(dir.path(), 64ull << 20);
    BatchResult b = store->apply_batch(batch, kNow);
    REQUIRE(b.committed);
    Reply r = decoded(b.replies[0]);
    CHECK(r.ok);
    CHECK(r.u64("seq") == *seq + 1);
    CHECK(b.events.size() == batch.size() - 1);
  }
}

}  // namespace bidmesh
