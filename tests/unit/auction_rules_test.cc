// The auction rules (nodes/auction_rules.h) as pure functions: a state in, a reply and a new
// state out. No store is opened (store_fixtures.h lends its request and reply helpers only).
#include "nodes/auction_rules.h"

#include <catch2/catch.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "protocol/errors.h"
#include "protocol/messages.h"
#include "tests/unit/store_fixtures.h"

namespace bidmesh {
namespace {

// An open item as judge_write makes it: start 100, increment 10, closing at kNow + 1000.
ItemState lamp() {
  ItemState s;
  s.seq = 1;
  s.start = 100;
  s.increment = 10;
  s.closes_at = kNow + 1000;
  return s;
}

}  // namespace

TEST_CASE("auction rules: open creates an item once", "[auction_rules]") {
  std::string reply;
  ItemState s;

  SECTION("a new item: seq 1, the request's terms, event open") {
    const auto change = judge_write(open_req("o1", "lamp", 100, 10, kNow + 1000), false, s, kNow, &reply);
    REQUIRE(change == EventKind::open);
    CHECK(s == lamp());
    const Reply r = decoded(reply);
    CHECK(r.ok);
    CHECK(r.id == "o1");
    CHECK(r.str("item") == "lamp");
    CHECK(r.u64("seq") == 1u);
  }
  SECTION("an item that exists: exists, nothing changes") {
    s = lamp();
    const auto change = judge_write(open_req("o2", "lamp", 5, 5), true, s, kNow, &reply);
    CHECK_FALSE(change);
    CHECK(s == lamp());
    CHECK(decoded(reply).error == "exists");
  }
}

TEST_CASE("auction rules: a bid is judged against the item's state and the time", "[auction_rules]") {
  std::string reply;
  ItemState s = lamp();

  SECTION("an item never opened: unknown_item") {
    CHECK_FALSE(judge_write(bid_req("b1", "vase", "ann", 500), false, s, kNow, &reply));
    const Reply r = decoded(reply);
    CHECK(r.error == "unknown_item");
    CHECK_THAT(*r.message, Catch::Contains("'vase'"));
  }
  SECTION("a closed item: closed") {
    s.closed = true;
    CHECK_FALSE(judge_write(bid_req("b1", "lamp", "ann", 500), true, s, kNow, &reply));
    CHECK(decoded(reply).error == "closed");
  }
  SECTION("at closes_at the item counts as closed, before any auto-close ran") {
    CHECK_FALSE(judge_write(bid_req("b1", "lamp", "ann", 500), true, s, kNow + 1000, &reply));
    const Reply r = decoded(reply);
    CHECK(r.error == "closed");
    CHECK_THAT(*r.message, Catch::Contains(std::to_string(kNow + 1000)));
    CHECK(s == lamp());
  }
  SECTION("a first bid below start: too_low with max nil") {
    CHECK_FALSE(judge_write(bid_req("b1", "lamp", "ann", 99), true, s, kNow, &reply));
    const Reply r = decoded(reply);
    CHECK(r.error == "too_low");
    CHECK(is_nil(r, "max"));
    CHECK(s == lamp());
  }
  SECTION("a first bid at start: accepted, seq and bids + 1, event max") {
    REQUIRE(judge_write(bid_req("b1", "lamp", "ann", 100), true, s, kNow, &reply) == EventKind::max);
    CHECK(s.seq == 2u);
    CHECK(s.bids == 1u);
    CHECK(s.max == 100u);
    CHECK(s.bidder == "ann");
    const Reply r = decoded(reply);
    CHECK(r.ok);
    CHECK(r.str("bidder") == "ann");
    CHECK(r.u64("amount") == 100u);
    CHECK(r.u64("seq") == 2u);
  }
  SECTION("a raise must reach max + increment") {
    s.max = 100;
    s.bidder = "ann";
    s.seq = 2;
    s.bids = 1;
    const ItemState before = s;
    CHECK_FALSE(judge_write(bid_req("b2", "lamp", "bob", 109), true, s, kNow, &reply));
    const Reply low = decoded(reply);
    CHECK(low.error == "too_low");
    CHECK(low.u64("max") == 100u);
    CHECK(s == before);
    REQUIRE(judge_write(bid_req("b3", "lamp", "bob", 110), true, s, kNow, &reply) == EventKind::max);
    CHECK(s.max == 110u);
    CHECK(s.bidder == "bob");
    CHECK(s.bids == 2u);
    CHECK(s.seq == 3u);
  }
  SECTION("max + increment past 2^64 refuses every bid without overflow") {
    s.increment = UINT64_MAX;
    s.max = 2;
    s.bidder = "ann";
    CHECK_FALSE(judge_write(bid_req("b2", "lamp", "bob", UINT64_MAX), true, s, kNow, &reply));
    CHECK(decoded(reply).error == "too_low");
  }
}

TEST_CASE("auction rules: close ends the auction", "[auction_rules]") {
  std::string reply;
  ItemState s = lamp();

  SECTION("an item never opened: unknown_item") {
    CHECK_FALSE(judge_write(item_req(Op::close, "c1", "vase"), false, s, kNow, &reply));
    CHECK(decoded(reply).error == "unknown_item");
  }
  SECTION("without bids: closed, seq + 1, winner and amount nil") {
    REQUIRE(judge_write(item_req(Op::close, "c1", "lamp"), true, s, kNow, &reply) == EventKind::closed);
    CHECK(s.closed);
    CHECK(s.seq == 2u);
    const Reply r = decoded(reply);
    CHECK(r.ok);
    CHECK(r.u64("seq") == 2u);
    CHECK(is_nil(r, "winner"));
    CHECK(is_nil(r, "amount"));
  }
  SECTION("after bids: the winner and the amount") {
    s.max = 130;
    s.bidder = "bob";
    s.seq = 3;
    REQUIRE(judge_write(item_req(Op::close, "c1", "lamp"), true, s, kNow, &reply) == EventKind::closed);
    const Reply r = decoded(reply);
    CHECK(r.u64("seq") == 4u);
    CHECK(r.str("winner") == "bob");
    CHECK(r.u64("amount") == 130u);
  }
  SECTION("a second close: closed, nothing changes") {
    s.closed = true;
    const ItemState before = s;
    CHECK_FALSE(judge_write(item_req(Op::close, "c2", "lamp"), true, s, kNow, &reply));
    CHECK(decoded(reply).error == "closed");
    CHECK(s == before);
  }
}

TEST_CASE("auction rules: a repeated write gets its stored reply or conflict", "[auction_rules]") {
  const Request r = bid_req("b1", "lamp", "ann", 100);
  const std::string fingerprint = r.fingerprint();
  const std::string stored = "\x83 any stored bytes";
  std::string reply;

  SECTION("the same content: the stored bytes, unchanged") {
    judge_repeat(r, fingerprint, fingerprint, stored, &reply);
    CHECK(reply == stored);
  }
  SECTION("other content under the same id: conflict naming the item") {
    judge_repeat(r, fingerprint, bid_req("b1", "lamp", "ann", 200).fingerprint(), stored, &reply);
    const Reply rep = decoded(reply);
    CHECK(rep.error == "conflict");
    CHECK(rep.id == "b1");
    CHECK_THAT(*rep.message, Catch::Contains("'lamp'"));
  }
}

TEST_CASE("auction rules: each judgment gives its reply's outcome beside it", "[auction_rules]") {
  std::string reply;
  std::optional<ErrorCode> error = ErrorCode::internal;  // overwritten by every judgment
  // The outcome says what the bytes say: nullopt for ok, else the error code.
  const auto outcome_of_bytes = [&] {
    const Reply r = decoded(reply);
    return r.ok ? std::optional<ErrorCode>() : parse_error_code(r.error.value_or(""));
  };
  const std::vector<std::pair<Request, bool>> writes = {
      {open_req("o1", "lamp", 100, 10), false},  {open_req("o2", "lamp"), true},
      {bid_req("b1", "vase", "ann", 500), false}, {bid_req("b2", "lamp", "ann", 99), true},
      {bid_req("b3", "lamp", "ann", 100), true},  {item_req(Op::close, "c1", "lamp"), true}};
  for (const auto& [request, found] : writes) {
    ItemState s = lamp();
    const auto change = judge_write(request, found, s, kNow, &reply, &error);
    CHECK(error == outcome_of_bytes());
    CHECK(change.has_value() == !error.has_value());  // a change exactly when ok
  }
  ItemState closed = lamp();
  closed.closed = true;
  judge_write(bid_req("b4", "lamp", "ann", 500), true, closed, kNow, &reply, &error);
  CHECK(error == ErrorCode::closed);

  const Request r = bid_req("b1", "lamp", "ann", 100);
  const std::string fp = r.fingerprint();
  SECTION("a remembered reply: read from its stored bytes, every code and every id shape") {
    judge_repeat(r, fp, fp, encode_ok("b1"), &reply, &error);
    CHECK_FALSE(error);
    // ids that take each MessagePack str header (fixstr, str8, str16), and none.
    const std::vector<std::optional<std::string>> ids = {std::nullopt, "b", std::string(40, 'x'), std::string(300, 'y')};
    for (std::size_t c = 0; c <= static_cast<std::size_t>(ErrorCode::internal); ++c) {
      for (const auto& id : ids) {
        error.reset();
        judge_repeat(r, fp, fp, encode_error(id, static_cast<ErrorCode>(c), "why"), &reply, &error);
        CHECK(error == static_cast<ErrorCode>(c));
      }
    }
  }
  SECTION("a stored reply that does not read as one (a damaged record) counts as internal") {
    for (const std::string& stored : {std::string(), std::string("\x81\xa2ok\xc2"), std::string("\x83 any stored bytes")}) {
      error.reset();
      judge_repeat(r, fp, fp, stored, &reply, &error);
      CHECK(reply == stored);
      CHECK(error == ErrorCode::internal);
    }
  }
  SECTION("other content under the id: conflict") {
    judge_repeat(r, fp, bid_req("b1", "lamp", "ann", 200).fingerprint(), encode_ok("b1"), &reply, &error);
    CHECK(error == ErrorCode::conflict);
  }
}

TEST_CASE("auction rules: a deadline entry closes only the open item that still has it", "[auction_rules]") {
  ItemState s = lamp();
  CHECK(deadline_closes(true, s, kNow + 1000));
  CHECK_FALSE(deadline_closes(false, s, kNow + 1000));  // the item is gone
  CHECK_FALSE(deadline_closes(true, s, kNow + 999));    // a stale entry of another deadline
  s.closed = true;
  CHECK_FALSE(deadline_closes(true, s, kNow + 1000));   // closed by hand before
  s = lamp();
  s.closes_at.reset();
  CHECK_FALSE(deadline_closes(true, s, kNow + 1000));

  SECTION("the auto-close step is the close's: closed, seq + 1") {
    s = lamp();
    mark_closed(s);
    CHECK(s.closed);
    CHECK(s.seq == 2u);
  }
}

TEST_CASE("auction rules: the event of a change", "[auction_rules]") {
  ItemState s = lamp();
  SECTION("open is bare") {
    const Event e = change_event("lamp", s, EventKind::open, kNow);
    CHECK(e.kind == EventKind::open);
    CHECK(e.item == "lamp");
    CHECK(e.seq == 1u);
    CHECK(e.ts == kNow);
    CHECK_FALSE(e.amount);
    CHECK_FALSE(e.bidder);
  }
  SECTION("max and closed carry the state's max and bidder") {
    s.max = 120;
    s.bidder = "ann";
    s.seq = 2;
    const Event e = change_event("lamp", s, EventKind::max, kNow + 7);
    CHECK(e.seq == 2u);
    CHECK(e.ts == kNow + 7);
    CHECK(e.amount == 120u);
    CHECK(e.bidder == "ann");
    CHECK(change_event("lamp", s, EventKind::closed, kNow).bidder == "ann");
  }
  SECTION("closed without bids has nil winner and amount") {
    mark_closed(s);
    const Event e = change_event("lamp", s, EventKind::closed, kNow);
    CHECK_FALSE(e.amount);
    CHECK_FALSE(e.bidder);
  }
}

TEST_CASE("auction rules: the replies of reads", "[auction_rules]") {
  ItemState s = lamp();
  s.max = 120;
  s.bidder = "ann";
  s.seq = 2;
  s.bids = 1;
  const Reply g = decoded(get_reply(item_req(Op::get, "g", "lamp"), s));
  CHECK(g.ok);
  CHECK(g.str("status") == "open");
  CHECK(g.u64("max") == 120u);
  CHECK(g.str("bidder") == "ann");
  CHECK(g.u64("seq") == 2u);
  CHECK(g.u64("bids") == 1u);
  CHECK(g.u64("start") == 100u);
  CHECK(g.u64("increment") == 10u);
  CHECK(g.u64("closes_at") == kNow + 1000);

  const Reply u = decoded(unknown_item_reply(item_req(Op::get, "g", "vase")));
  CHECK(u.error == "unknown_item");
  CHECK(u.id == "g");
}

}  // namespace bidmesh
