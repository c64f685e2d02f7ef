// Decoding of every request and every class of malformed input; reply and event encoding.
#include <catch2/catch.hpp>

#include <string_view>
#include <utility>
#include <vector>

#include <msgpack.hpp>

#include "protocol/json.h"
#include "protocol/messages.h"
#include "tests/support/requests.h"

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

namespace {

// Raw MessagePack with the width chosen by the test (msgpack-c's packer always picks the
// smallest): fix, 8, 16 or 32 bits of length (or count).
enum class Width { fix, w8, w16, w32 };
constexpr Width kWidths[] = {Width::fix, Width::w8, Width::w16, Width::w32};

std::string big_endian(uint64_t v, int bytes) {
  std::string out;
  for (int i = bytes - 1; i >= 0; --i) out.push_back(static_cast<char>((v >> (8 * i)) & 0xff));
  return out;
}

std::string str_as(std::string_view s, Width w) {  // fix holds at most 31 bytes: str8 past that
  if (w == Width::fix && s.size() > 31) w = Width::w8;
  switch (w) {
    case Width::fix: return std::string(1, static_cast<char>(0xa0 | s.size())) + std::string(s);
    case Width::w8: return "\xd9" + big_endian(s.size(), 1) + std::string(s);
    case Width::w16: return "\xda" + big_endian(s.size(), 2) + std::string(s);
    case Width::w32: return "\xdb" + big_endian(s.size(), 4) + std::string(s);
  }
  return {};
}

std::string bin_as(std::string_view s, Width w) {  // fix has no bin: bin8
  switch (w) {
    case Width::fix:
    case Width::w8: return "\xc4" + big_endian(s.size(), 1) + std::string(s);
    case Width::w16: return "\xc5" + big_endian(s.size(), 2) + std::string(s);
    case Width::w32: return "\xc6" + big_endian(s.size(), 4) + std::string(s);
  }
  return {};
}

std::string map_as(std::size_t n, Width w) {  // fix holds at most 15 entries; 8 has no map: map16
  if (w == Width::fix && n > 15) w = Width::w16;
  switch (w) {
    case Width::fix: return std::string(1, static_cast<char>(0x80 | n));
    case Width::w8:
    case Width::w16: return "\xde" + big_endian(n, 2);
    case Width::w32: return "\xdf" + big_endian(n, 4);
  }
  return {};
}

// A request map of (key, already encoded value) pairs, keys and root in the given widths.
std::string raw_map(const std::vector<std::pair<std::string, std::string>>& kvs, Width keys = Width::fix,
                    Width root = Width::fix) {
  std::string out = map_as(kvs.size(), root);
  for (const auto& [k, v] : kvs) out += str_as(k, keys) + v;
  return out;
}

// The property the router relies on: a route from scan_route is the route peek_route reads.
void check_agrees(const std::string& frame, std::size_t max = kDefaultMaxRequestBytes) {
  const auto fast = scan_route(frame, max);
  if (!fast) return;
  const auto slow = peek_route(frame, max);
  REQUIRE(std::holds_alternative<RouteInfo>(slow));
  CHECK(std::get<RouteInfo>(slow).op == fast->op);
  CHECK(std::get<RouteInfo>(slow).id == fast->id);
  CHECK(std::get<RouteInfo>(slow).item == fast->item);
}

// The fast path is taken, and agrees; the view points into `frame`.
RouteView fast_route(const std::string& frame, std::size_t max = kDefaultMaxRequestBytes) {
  INFO("frame of " << frame.size() << " bytes");
  const auto fast = scan_route(frame, max);
  REQUIRE(fast);
  check_agrees(frame, max);
  return *fast;
}

// A frame peek_route refuses: scan_route gives up on it.
void refused_by_both(const std::string& frame, std::size_t max = kDefaultMaxRequestBytes) {
  INFO("frame of " << frame.size() << " bytes");
  CHECK(std::holds_alternative<DecodeError>(peek_route(frame, max)));
  CHECK_FALSE(scan_route(frame, max));
}

}  // namespace

TEST_CASE("scan_route takes the fast path for common requests in every encoding width", "[protocol]") {
  // Every key width with every value width.
  const auto each_width = [](const auto& body) {
    for (Width kw : kWidths)
      for (Width vw : kWidths) {
        INFO("key width " << static_cast<int>(kw) << ", value width " << static_cast<int>(vw));
        body(kw, vw);
      }
  };
  SECTION("bid, get, open and ping") {
    each_width([](Width kw, Width vw) {
      const std::string bid = raw_map({{"op", str_as("bid", vw)}, {"id", str_as("b-1", vw)},
                                       {"item", str_as("lamp-1", vw)}, {"bidder", str_as("alice", vw)},
                                       {"amount", "\xcd\x05\xdc"}},
                                      kw);
      const RouteView r = fast_route(bid);
      CHECK(r.op == Op::bid);
      CHECK(r.id == "b-1");
      CHECK(r.item == "lamp-1");
      CHECK((r.item.data() > bid.data() && r.item.data() < bid.data() + bid.size()));  // a view into the frame
      const std::string get =
          raw_map({{"id", str_as("g", vw)}, {"item", str_as("x_Y-9", vw)}, {"op", str_as("get", vw)}}, kw);
      CHECK(fast_route(get).op == Op::get);
      const std::string open = raw_map({{"op", str_as("open", vw)}, {"id", str_as(std::string(64, 'i'), vw)},
                                        {"item", str_as("a", vw)}, {"start", "\x64"}, {"increment", "\xcc\xff"},
                                        {"closes_at", std::string("\xcf\x00\x00\x01\x8b\xcf\xe5\x68\x00", 9)}},
                                       kw);
      CHECK(fast_route(open).id.size() == 64);
      const std::string ping = raw_map({{"op", str_as("ping", vw)}, {"id", str_as("p", vw)}}, kw);
      CHECK(fast_route(ping).op == Op::ping);
      CHECK(fast_route(ping).item.empty());
    });
  }
  SECTION("every scalar value format in other fields") {
    each_width([](Width kw, Width vw) {
      const std::string frame = raw_map(
          {{"op", str_as("get", vw)}, {"id", str_as("v", vw)}, {"item", str_as("it", vw)},
           {"nil", "\xc0"}, {"t", "\xc3"}, {"f", "\xc2"}, {"pos", "\x7f"}, {"zero", std::string(1, '\0')},
           {"neg", "\xe0"}, {"u8", "\xcc\x01"}, {"u16", "\xcd\x01\x02"},
           {"u32", std::string("\xce\x00\x00\x00\x01", 5)},
           {"u64", std::string("\xcf\xff\xff\xff\xff\xff\xff\xff\xff", 9)}, {"i8", "\xd0\x80"},
           {"i16", std::string("\xd1\xff\x00", 3)}, {"i32", std::string("\xd2\x80\x00\x00\x00", 5)},
           {"i64", std::string("\xd3\x80\x00\x00\x00\x00\x00\x00\x00", 9)},
           {"f32", std::string("\xca\x3f\x80\x00\x00", 5)},
           {"f64", std::string("\xcb\x00\x00\x00\x00\x00\x00\x00\x00", 9)},
           {"bin", bin_as(std::string("\x00\xff", 2), vw)}, {"empty", str_as("", vw)}},
          kw);
      CHECK(fast_route(frame).item == "it");
    });
  }
  SECTION("map16 and map32 roots, up to 64 entries") {
    each_width([](Width kw, Width vw) {
      std::vector<std::pair<std::string, std::string>> kvs{
          {"op", str_as("close", vw)}, {"id", str_as("c", vw)}, {"item", str_as("z", vw)}};
      for (int i = 0; kvs.size() < 64; ++i) kvs.emplace_back("k" + std::to_string(i), "\x01");
      CHECK(fast_route(raw_map(kvs, kw, Width::w16)).op == Op::close);
      CHECK(fast_route(raw_map(kvs, kw, Width::w32)).op == Op::close);
      CHECK(fast_route(raw_map({{"op", str_as("ping", vw)}, {"id", str_as("c", vw)}}, kw, Width::w16)).op == Op::ping);
    });
  }
  SECTION("frames made by encode_request, at the size limit") {
    for (const Request& q : {test::make_bid("lamp", "bob", 150, "b1"), test::make_request(Op::open, "lamp", "o1"),
                             test::make_request(Op::history, "lamp", "h1"), test::make_request(Op::ping, "", "p1")}) {
      const std::string frame = encode_request(q);
      const RouteView r = fast_route(frame, frame.size());
      CHECK(r.op == q.op);
      CHECK(r.id == q.id);
      CHECK(r.item == q.item);
    }
  }
  SECTION("nil fields are absent; ping ignores item whatever it holds") {
    CHECK(fast_route(raw_map({{"op", str_as("ping", Width::fix)}, {"id", str_as("p", Width::fix)}, {"item", "\xc0"}})).item.empty());
    CHECK(fast_route(raw_map({{"op", str_as("ping", Width::fix)}, {"id", str_as("p", Width::fix)},
                              {"item", str_as("not an identifier", Width::fix)}})).item.empty());
    CHECK(fast_route(raw_map({{"op", str_as("ping", Width::fix)}, {"id", str_as("p", Width::fix)}, {"item", "\x05"}})).item.empty());
  }
}

TEST_CASE("scan_route gives up on every malformed class", "[protocol]") {
  const auto s = [](std::string_view x) { return str_as(x, Width::fix); };
  const std::string good = raw_map({{"op", s("bid")}, {"id", s("b-1")}, {"item", s("lamp")}, {"amount", "\x05"}});
  REQUIRE(scan_route(good));
  SECTION("truncated anywhere, or a trailing byte") {
    for (std::size_t n = 0; n < good.size(); ++n) refused_by_both(good.substr(0, n));
    refused_by_both(good + std::string(1, '\0'));
    refused_by_both(good + good);
  }
  SECTION("a root that is not a map") {
    refused_by_both("\x93\x01\x02\x03");
    refused_by_both(s("op"));
    refused_by_both("\x01");
    refused_by_both("\xc0");
    refused_by_both("\xc1");
  }
  SECTION("a root map over the unpack limit of 64 entries") {
    std::vector<std::pair<std::string, std::string>> kvs{{"op", s("get")}, {"id", s("i")}, {"item", s("a")}};
    for (int i = 0; kvs.size() < 65; ++i) kvs.emplace_back("k" + std::to_string(i), "\x01");
    refused_by_both(raw_map(kvs, Width::fix, Width::w16));
  }
  SECTION("a key that is not a string, or a key given twice") {
    refused_by_both("\x85\x01\x01" + good.substr(1));  // an int key before the good ones
    refused_by_both("\x84" + bin_as("op", Width::w8) + s("bid") + s("id") + s("b-1") + s("item") + s("lamp") +
                    s("amount") + "\x05");  // "op" as bin
    refused_by_both(raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")}, {"id", s("j")}}));
    refused_by_both(raw_map({{"x", "\xc0"}, {"op", s("get")}, {"id", s("i")}, {"item", s("a")}, {"x", "\xc0"}}));
    // the same key in two widths is still the same key
    refused_by_both("\x84" + s("op") + s("get") + s("id") + s("i") + s("item") + s("a") + str_as("op", Width::w32) + s("get"));
  }
  SECTION("id missing, nil, not a string, empty or 65 bytes") {
    refused_by_both(raw_map({{"op", s("get")}, {"item", s("a")}}));
    refused_by_both(raw_map({{"op", s("get")}, {"id", "\xc0"}, {"item", s("a")}}));
    refused_by_both(raw_map({{"op", s("get")}, {"id", "\x05"}, {"item", s("a")}}));
    refused_by_both(raw_map({{"op", s("get")}, {"id", bin_as("i", Width::w8)}, {"item", s("a")}}));
    refused_by_both(raw_map({{"op", s("get")}, {"id", s("")}, {"item", s("a")}}));
    refused_by_both(raw_map({{"op", s("get")}, {"id", str_as(std::string(65, 'i'), Width::w8)}, {"item", s("a")}}));
  }
  SECTION("op missing, nil, not a string or unknown") {
    refused_by_both(raw_map({{"id", s("i")}, {"item", s("a")}}));
    refused_by_both(raw_map({{"op", "\xc0"}, {"id", s("i")}, {"item", s("a")}}));
    refused_by_both(raw_map({{"op", "\x01"}, {"id", s("i")}, {"item", s("a")}}));
    for (std::string_view op : {"fly", "", "GET", "get ", "pin"})
      refused_by_both(raw_map({{"op", s(op)}, {"id", s("i")}, {"item", s("a")}}));
  }
  SECTION("item missing, nil, not a string or not an identifier (all ops but ping)") {
    for (std::string_view op : {"open", "bid", "close", "get", "history"}) {
      refused_by_both(raw_map({{"op", s(op)}, {"id", s("i")}}));
      refused_by_both(raw_map({{"op", s(op)}, {"id", s("i")}, {"item", "\xc0"}}));
      refused_by_both(raw_map({{"op", s(op)}, {"id", s("i")}, {"item", "\x07"}}));
      refused_by_both(raw_map({{"op", s(op)}, {"id", s("i")}, {"item", bin_as("a", Width::w8)}}));
      for (const std::string& bad_item : {std::string(""), std::string("a b"), std::string("a/b"), std::string(65, 'a'),
                                          std::string("caf\xc3\xa9")})
        refused_by_both(raw_map({{"op", s(op)}, {"id", s("i")}, {"item", str_as(bad_item, Width::w8)}}));
    }
  }
  SECTION("over the size limit") {
    refused_by_both(good, good.size() - 1);
    refused_by_both(raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")}, {"pad", str_as(std::string(5000, 'x'), Width::w16)}}));
  }
  SECTION("a str or bin over the unpack limit, under a larger size limit") {
    const std::size_t max = 2 * kTransportMaxBytes;
    for (const std::string& pad : {str_as(std::string(kTransportMaxBytes + 1, 'x'), Width::w32),
                                   bin_as(std::string(kTransportMaxBytes + 1, 'x'), Width::w32)})
      refused_by_both(raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")}, {"pad", pad}}), max);
    CHECK(fast_route(raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")},
                              {"pad", str_as(std::string(kTransportMaxBytes, 'x'), Width::w32)}}),
                     max).item == "a");
  }
  SECTION("lengths past the end of the frame, up to 2^32-1") {
    const std::string head = "\x84" + s("op") + s("get") + s("id") + s("i") + s("item") + s("a") + s("x");
    for (const std::string& value :
         {std::string("\xdb\xff\xff\xff\xff", 5), std::string("\xdb\x7f\xff\xff\xff", 5),
          std::string("\xc6\xff\xff\xff\xff", 5), std::string("\xda\xff\xff", 3), std::string("\xd9\xff", 2),
          std::string("\xcf\x01", 2), std::string("\xbf")})
      refused_by_both(head + value + "abc");
    refused_by_both(std::string("\xdf\xff\xff\xff\xff", 5) + good.substr(1));
    refused_by_both(std::string("\xde\xff\xff", 3) + good.substr(1));
  }
}

TEST_CASE("scan_route agrees with peek_route", "[protocol]") {
  const auto s = [](std::string_view x) { return str_as(x, Width::fix); };
  SECTION("on a table of frames, with the unusual ones left to peek_route") {
    const std::vector<std::string> frames{
        raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")}, {"future", "\x92\x01\x02"}}),  // array value
        raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")}, {"m", "\x81\xa1k\x01"}}),      // map value
        raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")}, {"e", "\xd4\x01\x02"}}),       // fixext
        raw_map({{"op", s("get")}, {"id", s("i")}, {"item", s("a")}}, Width::fix, Width::w32),
        raw_map({{"op", s("bid")}, {"id", s("i")}, {"item", s("a")}, {"amount", std::string("\xcb\x40\x29\x00\x00\x00\x00\x00\x00", 9)}}),
        raw_map({{"op", s("history")}, {"id", s("i")}, {"item", s("a")}, {"limit", "\xff"}}),
        raw_map({}),
        std::string("\x81\xa1k", 3) + std::string(100, '\x91') + "\x01",
        encode_request(test::make_bid("lamp", "bob", 150, "b1")),
    };
    for (const std::string& f : frames) check_agrees(f);
    CHECK_FALSE(scan_route(frames[0]));  // left to peek_route, which routes it
    CHECK(std::holds_alternative<RouteInfo>(peek_route(frames[0])));
  }
  SECTION("on every one-byte change of typical frames") {
    const std::vector<std::string> seeds{
        encode_request(test::make_bid("lamp-1", "alice", 1500, "b-17")),
        raw_map({{"op", str_as("open", Width::w16)}, {"id", str_as("o", Width::w32)}, {"item", str_as("it", Width::w8)},
                 {"k", bin_as("xy", Width::w16)}, {"f", std::string("\xca\x3f\x80\x00\x00", 5)}},
                Width::w8, Width::w16),
        raw_map({{"op", s("ping")}, {"id", s("p")}, {"item", s("a")}, {"a", s("a")}}),
    };
    std::size_t fast = 0;
    for (const std::string& seed : seeds)
      for (std::size_t at = 0; at < seed.size(); ++at)
        for (int b = 0; b < 256; ++b) {
          std::string f = seed;
          f[at] = static_cast<char>(b);
          if (scan_route(f)) ++fast;
          check_agrees(f);
          check_agrees(f.substr(0, at));
          check_agrees(f + f.substr(at));
        }
    CHECK(fast > 0);
  }
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
    Event open{EventKind::open, "a", 1, 10, {}, {}, {}, {}};
    Event max{EventKind::max, "a", 2, 11, 500, "bob", {}, {}};
    Event closed{EventKind::closed, "a", 3, 12, {}, {}, {}, {}};
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
