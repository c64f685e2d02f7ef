// Wire contract v2 at unit level (docs/protocol.md, "Auctions (v2)"): proxy bids against a small
// reference model written from the rule's words, soft close, reserve, item details, and their
// records (state layouts, details, log records). The same through real processes:
// tests/integration/auction_v2_test.cc.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cctype>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "nodes/auction_rules.h"
#include "nodes/batch_record.h"
#include "nodes/store_format.h"
#include "protocol/messages.h"
#include "tests/support/proxy_model.h"
#include "tests/unit/store_fixtures.h"

namespace bidmesh {
namespace {

using test::ProxyModel;

Request proxy_bid(std::string id, std::string bidder, uint64_t amount, std::optional<uint64_t> max) {
  Request r = bid_req(std::move(id), "lamp", std::move(bidder), amount);
  if (max && *max > amount) r.max = max;
  return r;
}

// Every number in a text, for the check that no message shows a secret max.
std::set<uint64_t> numbers_in(std::string_view text) {
  std::set<uint64_t> out;
  for (std::size_t i = 0; i < text.size();) {
    if (!std::isdigit(static_cast<unsigned char>(text[i]))) {
      ++i;
      continue;
    }
    std::size_t j = i;
    while (j < text.size() && std::isdigit(static_cast<unsigned char>(text[j]))) ++j;
    if (j - i < 19) out.insert(std::stoull(std::string(text.substr(i, j - i))));
    i = j;
  }
  return out;
}

// Fields a v2 bid reply may hold; `price` is the visible price, never a max.
const std::set<std::string> kBidReplyKeys{"item", "bidder", "amount", "seq", "leading", "price", "closes_at"};

}  // namespace

TEST_CASE("auction v2: random proxy bid sequences follow the reference model", "[auction_rules][v2]") {
  std::mt19937_64 rng(Catch::rngSeed() + 14);
  const std::vector<std::string> names{"ann", "bob", "cy", "dee"};
  for (int round = 0; round < 300; ++round) {
    const uint64_t start = 1 + rng() % 100, inc = 1 + rng() % 10;
    const std::optional<uint64_t> reserve =
        rng() % 3 == 0 ? std::optional<uint64_t>(start + rng() % 300) : std::nullopt;
    ProxyModel model(start, inc, reserve);
    Request open = open_req("o", "lamp", start, inc);
    open.reserve = reserve;
    ItemState s;
    std::string reply;
    REQUIRE(judge_write(open, false, s, kNow, &reply) == EventKind::open);
    const int steps = 1 + static_cast<int>(rng() % 25);
    for (int step = 0; step < steps; ++step) {
      const std::string bidder = names[rng() % names.size()];
      const uint64_t base = model.price() ? *model.price() + inc : start;
      // Mostly valid amounts, sometimes just below what is needed.
      const uint64_t amount = rng() % 6 == 0 ? std::max<uint64_t>(1, base - 1 - rng() % 3) : base + rng() % (3 * inc);
      const std::optional<uint64_t> max =
          rng() % 2 == 0 ? std::optional<uint64_t>(amount + rng() % (15 * inc)) : std::nullopt;
      INFO("round " << round << " step " << step << ": " << bidder << " bids " << amount << " max "
                    << (max ? std::to_string(*max) : "-") << " (start " << start << ", increment " << inc << ")");
      const ItemState before = s;
      const ProxyModel::Outcome want = model.bid(bidder, amount, max);
      const auto change = judge_write(proxy_bid("b" + std::to_string(step), bidder, amount, max), true, s, kNow, &reply);
      const Reply r = decoded(reply);
      REQUIRE(r.ok == want.accepted);
      const std::set<uint64_t> secrets = model.secrets();
      if (!want.accepted) {
        CHECK(r.error == "too_low");
        CHECK(s == before);
        for (uint64_t n : numbers_in(*r.message))
          CHECK((n == amount || n == inc || n == start || n == before.max.value_or(0) || !secrets.count(n)));
        continue;
      }
      REQUIRE(change == EventKind::max);
      CHECK(s.bidder == model.leader());
      CHECK(s.max == model.price());
      CHECK(s.seq == before.seq + 1);
      CHECK(s.bids == before.bids + 1);
      CHECK(s.max > before.max.value_or(0));  // every accepted bid changes the visible price
      const Value* leading = r.find("leading");
      CHECK((leading ? std::get<bool>(*leading) : true) == want.leading);
      if (max && *max > amount) CHECK(leading != nullptr);
      for (const Field& f : r.fields) {
        CHECK(kBidReplyKeys.count(f.key) == 1);
        if (const auto* v = std::get_if<uint64_t>(&f.value); v && f.key == "price") CHECK(*v == *s.max);
      }
      const Event e = change_event("lamp", s, EventKind::max, kNow);
      CHECK(e.amount == s.max);
      CHECK(e.bidder == s.bidder);
      CHECK(decode_event(encode_event(e)).has_value());
      // get shows the price and the leader; no field holds a max that is not the price.
      const Reply g = decoded(get_reply(item_req(Op::get, "g", "lamp"), s));
      for (const Field& f : g.fields)
        if (const auto* v = std::get_if<uint64_t>(&f.value); v && f.key != "seq" && f.key != "bids")
          CHECK((*v == start || *v == inc || !secrets.count(*v)));
    }
  }
}

TEST_CASE("auction v2: the proxy rule's cases, worked as in docs/protocol.md", "[auction_rules][v2]") {
  ItemState s;
  std::string reply;
  REQUIRE(judge_write(open_req("o", "lamp", 100, 10), false, s, kNow, &reply));
  // ann: 120 with max 500. The price is her amount: nobody else bid.
  REQUIRE(judge_write(proxy_bid("1", "ann", 120, 500), true, s, kNow, &reply));
  CHECK(s.max == 120u);
  CHECK(decoded(reply).find("leading") != nullptr);
  // bob: 200 (a v1 bid). ann's max beats it: price 210, ann leads, bob's reply says so.
  REQUIRE(judge_write(proxy_bid("2", "bob", 200, std::nullopt), true, s, kNow, &reply));
  CHECK(s.max == 210u);
  CHECK(s.bidder == "ann");
  Reply r = decoded(reply);
  CHECK(std::get<bool>(*r.find("leading")) == false);
  CHECK(r.u64("price") == 210u);
  // cy: max 500, a tie: the earlier max (ann's) wins, at 500.
  REQUIRE(judge_write(proxy_bid("3", "cy", 220, 500), true, s, kNow, &reply));
  CHECK(s.max == 500u);
  CHECK(s.bidder == "ann");
  // cy: max 800. cy leads at ann's max plus the increment.
  REQUIRE(judge_write(proxy_bid("4", "cy", 510, 800), true, s, kNow, &reply));
  CHECK(s.max == 510u);
  CHECK(s.bidder == "cy");
  CHECK(s.leader_max == 800u);
  // The v1 reply of a v1 bid that leads stays v1's: exactly the four fields.
  ItemState v1;
  REQUIRE(judge_write(open_req("o", "lamp", 100, 10), false, v1, kNow, &reply));
  REQUIRE(judge_write(proxy_bid("5", "ann", 100, std::nullopt), true, v1, kNow, &reply));
  CHECK(decoded(reply).fields.size() == 4u);
  CHECK_FALSE(v1.uses_v2());
}

TEST_CASE("auction v2: soft close moves the deadline with an extended event", "[auction_rules][v2]") {
  ItemState s;
  std::string reply;
  Request open = open_req("o", "lamp", 100, 10, kNow + 10'000);
  open.extend_ms = 3'000;
  REQUIRE(judge_write(open, false, s, kNow, &reply));

  SECTION("a bid before the window: no extension, the v1 reply") {
    const auto before = s.closes_at;
    REQUIRE(judge_write(proxy_bid("1", "ann", 100, std::nullopt), true, s, kNow + 6'999, &reply));
    CHECK_FALSE(bid_extended(s, before));
    CHECK(s.seq == 2u);
    CHECK(decoded(reply).fields.size() == 4u);
  }
  SECTION("a bid inside the window: closes_at = bid time + extend_ms, seq + 2") {
    const auto before = s.closes_at;
    REQUIRE(judge_write(proxy_bid("1", "ann", 100, std::nullopt), true, s, kNow + 9'000, &reply));
    CHECK(bid_extended(s, before));
    CHECK(s.closes_at == kNow + 12'000);
    CHECK(s.seq == 3u);
    const Reply r = decoded(reply);
    CHECK(r.u64("seq") == 3u);
    CHECK(r.u64("closes_at") == kNow + 12'000);
    const Event x = change_event("lamp", s, EventKind::extended, kNow + 9'000);
    CHECK(x.closes_at == kNow + 12'000);
    const auto back = decode_event(encode_event(x));
    REQUIRE(back);
    CHECK(back->kind == EventKind::extended);
    CHECK(back->closes_at == kNow + 12'000);
    // The old deadline no longer closes it; the new one does, and a bid at it is closed.
    CHECK_FALSE(deadline_closes(true, s, kNow + 10'000));
    CHECK(deadline_closes(true, s, kNow + 12'000));
    REQUIRE_FALSE(judge_write(proxy_bid("2", "bob", 200, std::nullopt), true, s, kNow + 12'000, &reply));
    CHECK(decoded(reply).error == "closed");
  }
  SECTION("a refused bid does not extend") {
    REQUIRE_FALSE(judge_write(proxy_bid("1", "ann", 50, std::nullopt), true, s, kNow + 9'000, &reply));
    CHECK(s.closes_at == kNow + 10'000);
  }
}

TEST_CASE("auction v2: the reserve decides the winner and is never shown", "[auction_rules][v2]") {
  ItemState s;
  std::string reply;
  Request open = open_req("o", "lamp", 100, 10);
  open.reserve = 1000;
  REQUIRE(judge_write(open, false, s, kNow, &reply));

  SECTION("not met: winner and amount nil, reserve_met false everywhere") {
    REQUIRE(judge_write(proxy_bid("1", "ann", 300, 900), true, s, kNow, &reply));
    Reply g = decoded(get_reply(item_req(Op::get, "g", "lamp"), s));
    CHECK(std::get<bool>(*g.find("reserve_met")) == false);
    CHECK_FALSE(numbers_in(get_reply(item_req(Op::get, "g", "lamp"), s)).count(1000));
    REQUIRE(judge_write(item_req(Op::close, "c", "lamp"), true, s, kNow, &reply) == EventKind::closed);
    const Reply c = decoded(reply);
    CHECK(is_nil(c, "winner"));
    CHECK(is_nil(c, "amount"));
    CHECK(std::get<bool>(*c.find("reserve_met")) == false);
    const Event e = change_event("lamp", s, EventKind::closed, kNow);
    CHECK_FALSE(e.bidder);
    CHECK(e.reserve_met == false);
    CHECK(decode_event(encode_event(e))->reserve_met == false);
  }
  SECTION("a max that reaches the reserve lifts the price to it: met, the leader wins there") {
    REQUIRE(judge_write(proxy_bid("1", "ann", 300, 1500), true, s, kNow, &reply));
    CHECK(s.max == 1000u);
    REQUIRE(judge_write(item_req(Op::close, "c", "lamp"), true, s, kNow, &reply));
    const Reply c = decoded(reply);
    CHECK(c.str("winner") == "ann");
    CHECK(c.u64("amount") == 1000u);
    CHECK(std::get<bool>(*c.find("reserve_met")) == true);
  }
  SECTION("an item without a reserve has no reserve_met anywhere (v1 maps)") {
    ItemState plain;
    REQUIRE(judge_write(open_req("o", "vase", 100, 10), false, plain, kNow, &reply));
    CHECK(decoded(get_reply(item_req(Op::get, "g", "vase"), plain)).find("reserve_met") == nullptr);
    REQUIRE(judge_write(item_req(Op::close, "c", "vase"), true, plain, kNow, &reply));
    CHECK(decoded(reply).find("reserve_met") == nullptr);
  }
}

TEST_CASE("auction v2: decoding the new fields", "[messages][v2]") {
  auto decode_open = [](Request r) { return decode_request(encode_request(r), kNow); };
  auto error_of = [](const std::variant<Request, DecodeError>& d) {
    return std::holds_alternative<DecodeError>(d) ? std::get<DecodeError>(d).message : std::string();
  };
  Request open = open_req("x", "lamp");
  SECTION("good details, reserve and extend_ms pass and round-trip") {
    open.title = "Brass lamp, 1920s \xc3\xa9t\xc3\xa9";
    open.description = "Two lines:\nworks.";
    open.image_url = "HTTPS://example.com/lamp.jpg?size=2";
    open.reserve = 500;
    open.extend_ms = 30'000;
    const auto d = decode_open(open);
    REQUIRE(error_of(d).empty());
    const Request& r = std::get<Request>(d);
    CHECK(r.title == open.title);
    CHECK(r.description == open.description);
    CHECK(r.image_url == open.image_url);
    CHECK(r.reserve == 500u);
    CHECK(r.extend_ms == 30'000u);
    CHECK(r.fingerprint() != open_req("x", "lamp").fingerprint());
  }
  SECTION("bad values are bad_request, with the field's name") {
    const std::string nul("nul\0", 4);
    // Each (field, value) is refused; the value goes into a copy of a good open.
    const std::vector<std::pair<std::string, std::string>> bads{
        {"title", std::string(121, 'a')}, {"title", "bad \xff utf8"}, {"title", "overlong \xc0\xaf"},
        {"title", "surrogate \xed\xa0\x80"}, {"title", "cut \xe2\x82"}, {"title", "tab\there"},
        {"title", "line\nfeed"}, {"title", "c1 \xc2\x85"}, {"description", std::string(2001, 'a')},
        {"description", nul}, {"description", "del \x7f"}, {"image_url", "ftp://example.com/a"},
        {"image_url", "javascript:alert(1)"}, {"image_url", "https://"}, {"image_url", "https://ex ample.com/"},
        {"image_url", "https://example.com/\xc3\xa9"}, {"image_url", "https://example.com/" + std::string(500, 'a')},
        {"extend_ms", ""},
    };
    for (const auto& [field, value] : bads) {
      Request r = open;
      if (field == "title") r.title = value;
      else if (field == "description") r.description = value;
      else if (field == "image_url") r.image_url = value;
      else r.extend_ms = kMaxExtendMs + 1;
      const auto d = decode_open(r);
      INFO(field);
      REQUIRE(std::holds_alternative<DecodeError>(d));
      CHECK(std::get<DecodeError>(d).code == ErrorCode::bad_request);
      CHECK_THAT(std::get<DecodeError>(d).message, Catch::Contains("'" + field + "'"));
    }
  }
  SECTION("max below amount is bad_request and the message does not show it") {
    Request bid = bid_req("x", "lamp", "ann", 500);
    bid.max = 437;
    const auto d = decode_request(encode_request(bid), kNow);
    REQUIRE(std::holds_alternative<DecodeError>(d));
    CHECK(std::get<DecodeError>(d).code == ErrorCode::bad_request);
    CHECK_FALSE(numbers_in(std::get<DecodeError>(d).message).count(437));
  }
  SECTION("max equal to amount is a v1 bid: same fingerprint, no v2 fields") {
    Request bid = bid_req("x", "lamp", "ann", 500);
    bid.max = 500;
    const auto d = decode_request(encode_request(bid), kNow);
    REQUIRE(std::holds_alternative<Request>(d));
    CHECK_FALSE(std::get<Request>(d).max);
    CHECK(std::get<Request>(d).fingerprint() == bid_req("x", "lamp", "ann", 500).fingerprint());
  }
}

TEST_CASE("auction v2: records: state layouts, details, log records", "[store_format][v2]") {
  std::string buf;
  SECTION("a v1-only state keeps layout 1 byte for byte; a v2 state round-trips in layout 2") {
    ItemState v1;
    v1.seq = 3;
    v1.bids = 2;
    v1.max = 110;
    v1.leader_max = 110;
    v1.bidder = "bob";
    const std::string raw(store_format::encode_state(buf, v1));
    CHECK(raw[0] == 1);
    CHECK(raw.size() == store_format::kStateFixedBytes + 3);
    ItemState back;
    REQUIRE(store_format::decode_state(raw, &back));
    CHECK(back == v1);

    ItemState v2 = v1;
    v2.leader_max = 900;
    v2.reserve = 1000;
    v2.extend_ms = 5000;
    v2.has_details = true;
    v2.closes_at = kNow;
    const std::string raw2(store_format::encode_state(buf, v2));
    CHECK(raw2[0] == 2);
    REQUIRE(store_format::decode_state(raw2, &back));
    CHECK(back == v2);
    CHECK_FALSE(store_format::decode_state(raw2.substr(0, store_format::kStateV2FixedBytes - 1), &back));
  }
  SECTION("details round-trip; damage is refused") {
    const ItemDetails d{"Lamp", std::string(2000, 'd'), "https://example.com/x"};
    const std::string raw = store_format::encode_details(d);
    ItemDetails back;
    REQUIRE(store_format::decode_details(raw, &back));
    CHECK(back == d);
    CHECK_FALSE(store_format::decode_details(raw.substr(0, raw.size() - 1), &back));
    CHECK_FALSE(store_format::decode_details(raw + "x", &back));
  }
  SECTION("a batch of v1 writes stays version 1; a v2 write makes version 2 and round-trips") {
    std::vector<Request> writes{open_req("o", "lamp", 100, 10, kNow + 5), bid_req("b", "lamp", "ann", 100)};
    encode_batch_record(kNow, writes, buf);
    CHECK(buf[0] == 1);
    Request open = open_req("o2", "vase", 1, 1, kNow + 9);
    open.reserve = 77;
    open.extend_ms = 1000;
    open.title = "Vase";
    open.description = std::string(2000, 'v');
    open.image_url = "http://x.example/v.png";
    Request bid = bid_req("b2", "vase", "bob", 5);
    bid.max = 50;
    writes.push_back(open);
    writes.push_back(bid);
    writes.push_back(item_req(Op::close, "c", "lamp"));
    encode_batch_record(kNow, writes, buf);
    CHECK(buf[0] == 2);
    BatchRecord rec;
    REQUIRE(decode_batch_record(buf, &rec).ok());
    REQUIRE(rec.writes.size() == 5u);
    for (std::size_t i = 0; i < writes.size(); ++i) CHECK(rec.writes[i].fingerprint() == writes[i].fingerprint());
    CHECK_FALSE(decode_batch_record(buf.substr(0, buf.size() - 1), &rec).ok());
  }
}

TEST_CASE("auction v2: an item store keeps proxy, reserve, extension and details across a reopen",
          "[item_store][v2]") {
  TempDir dir;
  Request open = open_req("o", "lamp", 100, 10, kNow + 10'000);
  open.reserve = 400;
  open.extend_ms = 2'000;
  open.title = "Lamp";
  open.description = "Brass.";
  std::string before_get;
  {
    auto store = open_store(dir.path());
    REQUIRE(store->apply_batch({open}, kNow).committed);
    Request b1 = bid_req("b1", "lamp", "ann", 100);
    b1.max = 700;
    REQUIRE(store->apply_batch({b1}, kNow + 1).committed);
    // ann's max reaches the reserve: the price is lifted to it at once.
    CHECK(store->get_item("lamp")->max == 400u);
    const BatchResult r = store->apply_batch({bid_req("b2", "lamp", "bob", 410)}, kNow + 9'500);
    REQUIRE(r.committed);
    INFO(msgpack_to_json(r.replies[0]));
    CHECK(r.events.size() == 2u);  // max, then extended
    before_get = store->apply_batch({item_req(Op::get, "g", "lamp")}, kNow + 9'600).replies[0];
    // No checkpoint: the next open replays the log.
  }
  auto store = open_store(dir.path());
  CHECK(store->replay_stats().writes == 3u);
  const std::string after_get = store->apply_batch({item_req(Op::get, "g", "lamp")}, kNow + 9'600).replies[0];
  CHECK(after_get == before_get);
  const Reply g = decoded(after_get);
  CHECK(g.u64("max") == 420u);  // bob's 410 + the increment, under ann's max
  CHECK(g.str("bidder") == "ann");
  CHECK(g.u64("closes_at") == kNow + 11'500);
  CHECK(g.str("title") == "Lamp");
  CHECK(g.str("description") == "Brass.");
  CHECK(std::get<bool>(*g.find("reserve_met")) == true);
  // A retry by id gets the first reply; the auto-close honours the moved deadline.
  Request b1 = bid_req("b1", "lamp", "ann", 100);
  b1.max = 700;
  const BatchResult retry = store->apply_batch({b1}, kNow + 9'700);
  CHECK(decoded(retry.replies[0]).u64("seq") == 2u);
  CHECK(store->next_auto_close_ms() == kNow + 11'500);
  CHECK(store->apply_batch({}, kNow + 10'500).events.empty());
  const BatchResult closed = store->apply_batch({}, kNow + 11'500);
  REQUIRE(closed.events.size() == 1u);
  const auto e = decode_event(closed.events[0].body);
  CHECK(e->kind == EventKind::closed);
  CHECK(e->bidder == "ann");
  CHECK(e->amount == 420u);
  CHECK(e->reserve_met == true);
}

}  // namespace bidmesh

namespace bidmesh {

TEST_CASE("auction v2: opens with long details past one log record are left for a retry", "[item_store][v2]") {
  TempDir dir;
  ItemStoreOptions o;
  o.dir = dir.path();
  o.map_size_bytes = 64ull << 20;
  o.log_segment_bytes = 16ull << 10;  // a log record of at most 16 KiB - 17 bytes
  auto store = open_store_with(o);
  std::vector<Request> opens;
  for (int i = 0; i < 12; ++i) {  // 12 x ~2 KiB: more than one record holds
    Request r = open_req("o" + std::to_string(i), "item" + std::to_string(i));
    r.description = std::string(kMaxDescriptionBytes, 'd');
    opens.push_back(r);
  }
  const BatchResult first = store->apply_batch(opens, kNow);
  REQUIRE(first.committed);
  std::size_t applied = 0;
  while (applied < opens.size() && decoded(first.replies[applied]).ok) ++applied;
  CHECK(applied > 0);
  CHECK(applied < opens.size());
  for (std::size_t i = applied; i < opens.size(); ++i) CHECK(decoded(first.replies[i]).error == "internal");
  // The rest succeed when sent again, and everything is in the log.
  const std::vector<Request> rest(opens.begin() + static_cast<std::ptrdiff_t>(applied), opens.end());
  const BatchResult second = store->apply_batch(rest, kNow + 1);
  for (const std::string& reply : second.replies) CHECK(decoded(reply).ok);
  store.reset();
  store = open_store_with(o);
  CHECK(store->item_count() == opens.size());
}

}  // namespace bidmesh
