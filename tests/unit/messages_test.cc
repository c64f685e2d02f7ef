// Decoding of every request and every class of malformed input; reply and event encoding.
#include <catch2/catch.hpp>

#include <msgpack.hpp>

#include "protocol/json.h"
#include "protocol/messages.h"

using namespace bidmesh;

namespace {

constexpr uint64_t kNow = 1'700'000'000'000;

// Packs a map from (key, value) pairs given as msgpack-packable values.
struct MapBuilder {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk{buf};
  explicit MapBuilder(uint32_t n) { pk.pack_map(n); }
  template <typename T>
  MapBuilder& kv(const std::string& k, const T& v) {
    pk.pack(k);
    pk.pack(v);
    return *this;
  }
  MapBuilder& nil(const std::string& k) {
    pk.pack(k);
    pk.pack_nil();
    return *this;
  }
  std::string str() const { return std::string(buf.data(), buf.size()); }
};

Request decode_ok(const std::string& frame) {
  auto r = decode_request(frame, kNow);
  if (auto* e = std::get_if<DecodeError>(&r)) FAIL("unexpected error: " << e->message);
  return std::get<Request>(r);
}

DecodeError decode_err(const std::string& frame, std::size_t max = kDefaultMaxRequestBytes) {
  auto r = decode_request(frame, kNow, max);
  REQUIRE(std::holds_alternative<DecodeError>(r));
  return std::get<DecodeError>(r);
}

}  // namespace

TEST_CASE("decode_request reads every op with its defaults", "[protocol]") {
  SECTION("open with defaults") {
    Request r = decode_ok(MapBuilder(3).kv("op", "open").kv("id", "c-1").kv("item", "lamp-1").str());
    CHECK(r.op == Op::open);
    CHECK(r.id == "c-1");
    CHECK(r.item == "lamp-1");
    CHECK(r.start == 1);
    CHECK(r.increment == 1);
    CHECK_FALSE(r.closes_at);
  }
  SECTION("open with every field, nil closes_at is absent") {
    Request r = decode_ok(MapBuilder(6).kv("op", "open").kv("id", "x").kv("item", "a").kv("start", 500)
                              .kv("increment", 25).nil("closes_at").str());
    CHECK(r.start == 500);
    CHECK(r.increment == 25);
    CHECK_FALSE(r.closes_at);
  }
  SECTION("open with a future deadline") {
    Request r = decode_ok(MapBuilder(4).kv("op", "open").kv("id", "x").kv("item", "a").kv("closes_at", kNow + 1).str());
    CHECK(r.closes_at == kNow + 1);
  }
  SECTION("bid, with a non-negative amount in a signed format") {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(5);
    pk.pack("op"); pk.pack("bid");
    pk.pack("id"); pk.pack("b-7");
    pk.pack("item"); pk.pack("lamp-1");
    pk.pack("bidder"); pk.pack("alice_2");
    pk.pack("amount"); pk.pack_int64(1500);
    Request r = decode_ok(std::string(buf.data(), buf.size()));
    CHECK(r.op == Op::bid);
    CHECK(r.bidder == "alice_2");
    CHECK(r.amount == 1500);
  }
  SECTION("bid with the largest amount") {
    Request r = decode_ok(MapBuilder(5).kv("op", "bid").kv("id", "i").kv("item", "a").kv("bidder", "b")
                              .kv("amount", UINT64_MAX).str());
    CHECK(r.amount == UINT64_MAX);
  }
  SECTION("close and get") {
    CHECK(decode_ok(MapBuilder(3).kv("op", "close").kv("id", "i").kv("item", "a").str()).op == Op::close);
    CHECK(decode_ok(MapBuilder(3).kv("op", "get").kv("id", "i").kv("item", "a").str()).op == Op::get);
  }
  SECTION("history defaults and the limit cap") {
    Request r = decode_ok(MapBuilder(3).kv("op", "history").kv("id", "i").kv("item", "a").str());
    CHECK(r.after == 0);
    CHECK(r.limit == 100);
    r = decode_ok(MapBuilder(5).kv("op", "history").kv("id", "i").kv("item", "a").kv("after", 7).kv("limit", 5000).str());
    CHECK(r.after == 7);
    CHECK(r.limit == 1000);
  }
  SECTION("ping needs no item") {
    CHECK(decode_ok(MapBuilder(2).kv("op", "ping").kv("id", "i").str()).op == Op::ping);
  }
  SECTION("unknown keys are ignored") {
    Request r = decode_ok(MapBuilder(4).kv("op", "get").kv("id", "i").kv("item", "a").kv("future", std::vector<int>{1, 2}).str());
    CHECK(r.item == "a");
  }
}

TEST_CASE("decode_request refuses malformed input with the contract's codes", "[protocol]") {
  SECTION("over the size limit is too_large with a nil id, before decoding") {
    std::string big = MapBuilder(4).kv("op", "get").kv("id", "i").kv("item", "a").kv("pad", std::string(5000, 'x')).str();
    DecodeError e = decode_err(big);
    CHECK(e.code == ErrorCode::too_large);
    CHECK_FALSE(e.id);
    CHECK(decode_err(std::string(5000, '\xc1')).code == ErrorCode::too_large);
    CHECK(decode_err(MapBuilder(3).kv("op", "get").kv("id", "i").kv("item", "a").str(), 8).code == ErrorCode::too_large);
  }
  SECTION("not MessagePack, not a map, trailing bytes, truncated") {
    CHECK(decode_err("").code == ErrorCode::bad_request);
    CHECK(decode_err("\xc1").code == ErrorCode::bad_request);  // never-used byte
    CHECK(decode_err(MapBuilder(0).str().substr(0, 0) + "\x93\x01\x02\x03").code == ErrorCode::bad_request);  // array
    std::string ok = MapBuilder(3).kv("op", "get").kv("id", "i").kv("item", "a").str();
    CHECK(decode_err(ok + std::string(1, '\0')).code == ErrorCode::bad_request);
    CHECK(decode_err(ok.substr(0, ok.size() - 1)).code == ErrorCode::bad_request);
  }
  SECTION("headers that claim gigabytes are refused without allocating") {
    CHECK(decode_err(std::string("\xdd\x7f\xff\xff\xff", 5)).code == ErrorCode::bad_request);  // array32
    CHECK(decode_err(std::string("\xdf\x7f\xff\xff\xff", 5)).code == ErrorCode::bad_request);  // map32
    CHECK(decode_err(std::string("\xdb\x7f\xff\xff\xff", 5)).code == ErrorCode::bad_request);  // str32
    CHECK(decode_err(std::string("\xc6\x7f\xff\xff\xff", 5)).code == ErrorCode::bad_request);  // bin32
  }
  SECTION("deep nesting") {
    std::string deep = "\x81\xa1k";
    for (int i = 0; i < 100; ++i) deep += "\x91";
    deep += "\x01";
    CHECK(decode_err(deep).code == ErrorCode::bad_request);
  }
  SECTION("id missing, mistyped, empty or too long gives a nil id") {
    CHECK_FALSE(decode_err(MapBuilder(2).kv("op", "get").kv("item", "a").str()).id);
    CHECK_FALSE(decode_err(MapBuilder(3).kv("op", "get").kv("id", 5).kv("item", "a").str()).id);
    CHECK_FALSE(decode_err(MapBuilder(3).kv("op", "get").kv("id", "").kv("item", "a").str()).id);
    CHECK_FALSE(decode_err(MapBuilder(3).kv("op", "get").kv("id", std::string(65, 'i')).kv("item", "a").str()).id);
    CHECK(decode_ok(MapBuilder(3).kv("op", "get").kv("id", std::string(64, 'i')).kv("item", "a").str()).id.size() == 64);
  }
  SECTION("a readable id is echoed in the error") {
    DecodeError e = decode_err(MapBuilder(2).kv("op", "fly").kv("id", "c-9").str());
    CHECK(e.code == ErrorCode::bad_request);
    CHECK(e.id == std::optional<std::string>("c-9"));
  }
  SECTION("op missing or not a string") {
    CHECK(decode_err(MapBuilder(2).kv("id", "i").kv("item", "a").str()).code == ErrorCode::bad_request);
    CHECK(decode_err(MapBuilder(3).kv("op", 1).kv("id", "i").kv("item", "a").str()).code == ErrorCode::bad_request);
  }
  SECTION("identifiers outside [A-Za-z0-9_-]{1,64}") {
    for (std::string bad_item : {std::string(""), std::string("a b"), std::string("a/b"), std::string(65, 'a'),
                                 std::string("caf\xc3\xa9")})
      CHECK(decode_err(MapBuilder(3).kv("op", "get").kv("id", "i").kv("item", bad_item).str()).code ==
            ErrorCode::bad_request);
    CHECK(decode_err(MapBuilder(5).kv("op", "bid").kv("id", "i").kv("item", "a").kv("bidder", "x y").kv("amount", 5).str())
              .code == ErrorCode::bad_request);
  }
  SECTION("amounts: floats, negatives, zero, strings, missing") {
    auto bid = [](auto amount) {
      return MapBuilder(5).kv("op", "bid").kv("id", "i").kv("item", "a").kv("bidder", "b").kv("amount", amount).str();
    };
    CHECK(decode_err(bid(12.5)).code == ErrorCode::bad_request);
    CHECK(decode_err(bid(-3)).code == ErrorCode::bad_request);
    CHECK(decode_err(bid(0)).code == ErrorCode::bad_request);
    CHECK(decode_err(bid("100")).code == ErrorCode::bad_request);
    CHECK(decode_err(bid(true)).code == ErrorCode::bad_request);
    CHECK(decode_err(MapBuilder(4).kv("op", "bid").kv("id", "i").kv("item", "a").kv("bidder", "b").str()).code ==
          ErrorCode::bad_request);
  }
  SECTION("open: zero start or increment, past deadline") {
    CHECK(decode_err(MapBuilder(4).kv("op", "open").kv("id", "i").kv("item", "a").kv("start", 0).str()).code ==
          ErrorCode::bad_request);
    CHECK(decode_err(MapBuilder(4).kv("op", "open").kv("id", "i").kv("item", "a").kv("increment", 0).str()).code ==
          ErrorCode::bad_request);
    CHECK(decode_err(MapBuilder(4).kv("op", "open").kv("id", "i").kv("item", "a").kv("closes_at", kNow).str()).code ==
          ErrorCode::bad_request);
  }
  SECTION("non-string keys and duplicate keys") {
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    pk.pack_map(3);
    pk.pack(1); pk.pack("x");
    pk.pack("op"); pk.pack("ping");
    pk.pack("id"); pk.pack("i");
    CHECK(decode_err(std::string(buf.data(), buf.size())).code == ErrorCode::bad_request);
    CHECK(decode_err(MapBuilder(3).kv("op", "ping").kv("id", "i").kv("id", "j").str()).code == ErrorCode::bad_request);
  }
}

TEST_CASE("peek_route reads only op, id and item", "[protocol]") {
  auto info = peek_route(MapBuilder(5).kv("op", "bid").kv("id", "r1").kv("item", "lamp").kv("bidder", "not valid!")
                             .kv("amount", 1).str());
  REQUIRE(std::holds_alternative<RouteInfo>(info));
  CHECK(std::get<RouteInfo>(info).item == "lamp");
  CHECK(std::get<RouteInfo>(info).op == Op::bid);
  auto ping = peek_route(MapBuilder(2).kv("op", "ping").kv("id", "p").str());
  REQUIRE(std::holds_alternative<RouteInfo>(ping));
  auto no_item = peek_route(MapBuilder(2).kv("op", "get").kv("id", "p").str());
  REQUIRE(std::holds_alternative<DecodeError>(no_item));
  CHECK(std::get<DecodeError>(no_item).id == std::optional<std::string>("p"));
}

TEST_CASE("fingerprint tells retries from conflicts", "[protocol]") {
  Request a;
  a.op = Op::bid; a.id = "1"; a.item = "x"; a.bidder = "b"; a.amount = 10;
  Request b = a;
  CHECK(a.fingerprint() == b.fingerprint());
  b.amount = 11;
  CHECK(a.fingerprint() != b.fingerprint());
  Request open_default;
  open_default.op = Op::open; open_default.item = "x";
  Request open_explicit = open_default;
  open_explicit.start = 1; open_explicit.increment = 1;
  CHECK(open_default.fingerprint() == open_explicit.fingerprint());
  open_explicit.closes_at = 5;
  CHECK(open_default.fingerprint() != open_explicit.fingerprint());
}

TEST_CASE("replies and events round-trip", "[protocol]") {
  SECTION("ok reply with nil fields") {
    auto r = decode_reply(encode_ok("c-1", {{"item", std::string("a")}, {"max", Value{Nil{}}}, {"seq", uint64_t{3}}}));
    REQUIRE(r);
    CHECK(r->ok);
    CHECK(r->id == std::optional<std::string>("c-1"));
    CHECK(r->str("item") == std::optional<std::string>("a"));
    CHECK(std::holds_alternative<Nil>(*r->find("max")));
    CHECK(r->u64("seq") == 3u);
  }
  SECTION("error reply with nil id") {
    auto r = decode_reply(encode_error(std::nullopt, ErrorCode::too_large, "big"));
    REQUIRE(r);
    CHECK_FALSE(r->ok);
    CHECK_FALSE(r->id);
    CHECK(r->error == std::optional<std::string>("too_large"));
    CHECK(r->message == std::optional<std::string>("big"));
  }
  SECTION("events, alone and spliced into history") {
    Event open{EventKind::open, "a", 1, 10, {}, {}};
    Event max{EventKind::max, "a", 2, 11, 500, "bob"};
    Event closed{EventKind::closed, "a", 3, 12, {}, {}};
    const std::string eo = encode_event(open), em = encode_event(max), ec = encode_event(closed);
    auto d = decode_event(em);
    REQUIRE(d);
    CHECK(d->kind == EventKind::max);
    CHECK(d->amount == 500u);
    CHECK(d->bidder == std::optional<std::string>("bob"));
    CHECK(msgpack_to_json(ec) == R"({"event":"closed","item":"a","seq":3,"ts":12,"amount":null,"winner":null})");
    auto h = decode_reply(encode_history_ok("h", "a", {eo, em, ec}));
    REQUIRE(h);
    REQUIRE(h->events.size() == 3);
    CHECK(h->events[1].seq == 2);
    CHECK(h->events[2].kind == EventKind::closed);
  }
  SECTION("encode_request decodes back") {
    Request q;
    q.op = Op::open; q.id = "z"; q.item = "it"; q.start = 7; q.closes_at = kNow + 5000;
    Request back = decode_ok(encode_request(q));
    CHECK(back.fingerprint() == q.fingerprint());
  }
  SECTION("feed topics are exact per item") {
    CHECK(feed_topic("42") == "item/42/");
    CHECK(feed_topic("421").rfind(feed_topic("42"), 0) != 0);
  }
}

TEST_CASE("json_quote escapes quotes, backslashes and control bytes", "[protocol]") {
  CHECK(json_quote("plain") == "\"plain\"");
  CHECK(json_quote("a\"b\\c") == "\"a\\\"b\\\\c\"");
  CHECK(json_quote(std::string("x\n\t\x01", 4)) == "\"x\\n\\t\\u0001\"");
  CHECK(json_quote("caf\xc3\xa9") == "\"caf\xc3\xa9\"");
}
