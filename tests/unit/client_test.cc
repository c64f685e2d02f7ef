// Unit tests of the client library (client/: the Lazy Pirate Client and the FeedWatcher), the
// tools' parse_u64 and the bench's LatencyHistogram, against in-process fakes of the router (a ROUTER socket on a thread) and of the
// feed (an XPUB on the test thread, so the test knows when the subscription is live).
#include <atomic>
#include <cmath>
#include <initializer_list>
#include <chrono>
#include <future>
#include <map>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include <catch2/catch.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "bench/histogram.h"
#include "client/client.h"
#include "client/feed_watcher.h"
#include "protocol/messages.h"
#include "tools/cli_args.h"

using namespace bidmesh;
using namespace std::chrono_literals;

namespace {

// A fake router on its own thread: records every request frame, drops the first `drop_first`,
// answers the next `unavailable_first` with `unavailable`, `history` from `events` and `get`
// with `state_seq`, everything else with {ok: true}.
// Only the test thread asserts; it reads `frames` after stop().
class FakeRouter {
 public:
  FakeRouter(zmq::context_t& ctx, int drop_first, std::vector<Event> events = {}, uint64_t state_seq = 0,
             int unavailable_first = 0)
      : ctx_(ctx), drop_first_(drop_first), unavailable_first_(unavailable_first), events_(std::move(events)),
        state_seq_(state_seq) {
    std::promise<std::string> bound;
    auto f = bound.get_future();
    thread_ = std::thread([this, p = std::move(bound)]() mutable { run(p); });
    endpoint_ = f.get();
  }
  ~FakeRouter() { stop(); }
  void stop() {
    stop_ = true;
    if (thread_.joinable()) thread_.join();
  }
  const std::string& endpoint() const { return endpoint_; }
  std::vector<std::string> frames() {
    std::lock_guard<std::mutex> lock(mu_);
    return frames_;
  }

 private:
  void run(std::promise<std::string>& bound) {
    zmq::socket_t sock(ctx_, zmq::socket_type::router);
    sock.set(zmq::sockopt::linger, 0);
    sock.bind("tcp://127.0.0.1:*");
    bound.set_value(sock.get(zmq::sockopt::last_endpoint));
    const auto deadline = std::chrono::steady_clock::now() + 20s;
    int seen = 0;
    while (!stop_ && std::chrono::steady_clock::now() < deadline) {
      zmq::pollitem_t items[] = {{sock.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, 1, 20ms);
      if (!(items[0].revents & ZMQ_POLLIN)) continue;
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(sock, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
      if (parts.size() != 3) continue;  // identity, empty, request
      const std::string frame = parts[2].to_string();
      {
        std::lock_guard<std::mutex> lock(mu_);
        frames_.push_back(frame);
      }
      if (seen++ < drop_first_) continue;
      std::string reply;
      auto decoded = decode_request(frame, 0);
      if (auto* req = std::get_if<Request>(&decoded)) {
        if (seen <= drop_first_ + unavailable_first_) {
          reply = encode_error(req->id, ErrorCode::unavailable, "the owner is restarting");
        } else if (req->op == Op::history) {
          std::vector<std::string> enc;
          for (const auto& e : events_)
            if (e.item == req->item && e.seq > req->after && enc.size() < req->limit) enc.push_back(encode_event(e));
          std::vector<std::string_view> views(enc.begin(), enc.end());
          reply = encode_history_ok(req->id, req->item, views);
        } else if (req->op == Op::get) {
          reply = encode_ok(req->id, {{"item", req->item}, {"status", std::string("open")}, {"seq", state_seq_}});
        } else {
          reply = encode_ok(req->id);
        }
      } else {
        reply = encode_error(std::get<DecodeError>(decoded));
      }
      std::vector<zmq::message_t> out;
      out.emplace_back(std::move(parts[0]));
      out.emplace_back();
      out.emplace_back(reply.data(), reply.size());
      (void)zmq::send_multipart(sock, out, zmq::send_flags::dontwait);
    }
  }

  zmq::context_t& ctx_;
  const int drop_first_;
  const int unavailable_first_;
  const std::vector<Event> events_;
  const uint64_t state_seq_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
  std::string endpoint_;
  std::mutex mu_;
  std::vector<std::string> frames_;
};

Event max_event(const std::string& item, uint64_t seq) {
  Event e;
  e.kind = seq == 1 ? EventKind::open : EventKind::max;
  e.item = item;
  e.seq = seq;
  e.ts = 1000 + seq;
  if (seq > 1) {
    e.amount = 100 * seq;
    e.bidder = "b" + std::to_string(seq);
  }
  return e;
}

// A fake feed: an XPUB bound on loopback; wait_subscribed() returns once a subscriber's
// subscription message has arrived, so what is published next reaches it.
struct FakeFeed {
  explicit FakeFeed(zmq::context_t& ctx) : pub(ctx, zmq::socket_type::xpub) {
    pub.set(zmq::sockopt::linger, 0);
    pub.bind("tcp://127.0.0.1:*");
    endpoint = pub.get(zmq::sockopt::last_endpoint);
  }
  bool wait_subscribed() {
    zmq::pollitem_t items[] = {{pub.handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, 5000ms);
    if (!(items[0].revents & ZMQ_POLLIN)) return false;
    zmq::message_t sub;
    return pub.recv(sub, zmq::recv_flags::dontwait).has_value() && sub.size() > 0 && sub.data<char>()[0] == 1;
  }
  void publish(const Event& e) {
    const std::string topic = feed_topic(e.item);
    const std::string body = encode_event(e);
    (void)pub.send(zmq::buffer(topic), zmq::send_flags::sndmore);
    (void)pub.send(zmq::buffer(body), zmq::send_flags::none);
  }
  zmq::socket_t pub;
  std::string endpoint;
};

std::vector<uint64_t> drain(FeedWatcher& w, size_t want, std::vector<bool>* repaired = nullptr) {
  std::vector<uint64_t> seqs;
  for (int i = 0; i < 50 && seqs.size() < want; ++i) {
    auto ev = w.next(100ms);
    if (!ev) continue;
    seqs.push_back(ev->seq);
    if (repaired) repaired->push_back(w.last_repaired());
  }
  return seqs;
}

}  // namespace

TEST_CASE("parse_u64 accepts only plain unsigned 64-bit decimals", "[client]") {
  CHECK(parse_u64("0") == 0u);
  CHECK(parse_u64("1500") == 1500u);
  CHECK(parse_u64("18446744073709551615") == UINT64_MAX);
  CHECK_FALSE(parse_u64("18446744073709551616"));
  CHECK_FALSE(parse_u64(""));
  CHECK_FALSE(parse_u64("-3"));
  CHECK_FALSE(parse_u64("+3"));
  CHECK_FALSE(parse_u64("12.5"));
  CHECK_FALSE(parse_u64("1e3"));
  CHECK_FALSE(parse_u64(" 12"));
  CHECK_FALSE(parse_u64("0x10"));
}

TEST_CASE("Client ids are unique, bounded and keep a caller-given prefix", "[client]") {
  const std::string prefix = make_client_id_prefix();
  CHECK(prefix.size() <= 40);
  zmq::context_t ctx(1);
  Client c(ctx, "tcp://127.0.0.1:1", 10, 0, "me");
  CHECK(c.next_id() == "me-1");
  CHECK(c.next_id() == "me-2");
  CHECK(make_client_id_prefix() != prefix);  // random part (1 in 2^32 to collide)
}

TEST_CASE("Client replaces a socket whose last try of a call timed out, before the next call", "[client]") {
  zmq::context_t ctx(1);
  FakeRouter router(ctx, /*drop_first=*/1);
  Client client(ctx, router.endpoint(), 150, /*retries=*/0, "t");
  Request ping;
  ping.op = Op::ping;
  CHECK_FALSE(client.call(ping).has_value());  // dropped: the one try times out
  auto reply = client.call(ping);              // a stuck REQ socket could not even send this
  router.stop();
  REQUIRE(reply.has_value());
  CHECK(reply->ok);
  CHECK(router.frames().size() == 2);
}

TEST_CASE("Client retries a lost request with the same frame and id", "[client]") {
  zmq::context_t ctx(1);
  FakeRouter router(ctx, /*drop_first=*/2);
  Client client(ctx, router.endpoint(), 150, 3, "t");
  Request bid;
  bid.op = Op::bid;
  bid.item = "lamp-1";
  bid.bidder = "alice";
  bid.amount = 1500;
  auto reply = client.call(bid);
  router.stop();
  REQUIRE(reply);
  CHECK(reply->ok);
  CHECK(reply->id == std::optional<std::string>("t-1"));
  CHECK(client.last_attempts() == 3);
  auto frames = router.frames();
  REQUIRE(frames.size() == 3);
  CHECK(frames[0] == frames[1]);
  CHECK(frames[1] == frames[2]);
}

TEST_CASE("Client retries an unavailable reply with the same frame, after a backoff", "[client]") {
  zmq::context_t ctx(1);
  FakeRouter router(ctx, /*drop_first=*/0, {}, 0, /*unavailable_first=*/2);
  Client client(ctx, router.endpoint(), 1000, 3, "u");
  Request ping;
  ping.op = Op::ping;
  const auto t0 = std::chrono::steady_clock::now();
  auto reply = client.call(ping);
  const auto took = std::chrono::steady_clock::now() - t0;
  router.stop();
  REQUIRE(reply);
  CHECK(reply->ok);
  CHECK(client.last_attempts() == 3);
  CHECK(took >= 30ms);  // backoffs of 10 and 20 ms
  auto frames = router.frames();
  REQUIRE(frames.size() == 3);
  CHECK(frames[0] == frames[2]);

  SECTION("out of tries, the last unavailable reply is returned") {
    FakeRouter always(ctx, 0, {}, 0, /*unavailable_first=*/100);
    Client c(ctx, always.endpoint(), 1000, 1);
    auto r = c.call(ping);
    always.stop();
    REQUIRE(r);
    CHECK(r->error == std::optional<std::string>("unavailable"));
    CHECK(c.last_attempts() == 2);
  }
}

TEST_CASE("Client gives up after the retries", "[client]") {
  zmq::context_t ctx(1);
  FakeRouter router(ctx, /*drop_first=*/100);
  Client client(ctx, router.endpoint(), 50, 2);
  const auto t0 = std::chrono::steady_clock::now();
  Request ping;
  ping.op = Op::ping;
  auto reply = client.call(ping);
  const auto took = std::chrono::steady_clock::now() - t0;
  router.stop();
  CHECK_FALSE(reply);
  CHECK(client.last_attempts() == 3);
  CHECK(took >= 150ms);
  CHECK(took < 2s);
  CHECK(router.frames().size() == 3);
}

TEST_CASE("Client call_raw sends malformed frames as they are", "[client]") {
  zmq::context_t ctx(1);
  FakeRouter router(ctx, 0);
  Client client(ctx, router.endpoint(), 500, 1);
  auto raw = client.call_raw("\xc1not msgpack");
  router.stop();
  REQUIRE(raw);
  auto reply = decode_reply(*raw);
  REQUIRE(reply);
  CHECK_FALSE(reply->ok);
  CHECK(reply->error == std::optional<std::string>("bad_request"));
  REQUIRE(router.frames().size() == 1);
  CHECK(router.frames()[0] == "\xc1not msgpack");
}

TEST_CASE("FeedWatcher orders, de-duplicates and repairs gaps", "[client]") {
  zmq::context_t ctx(1);
  std::vector<Event> all;
  for (uint64_t s = 1; s <= 6; ++s) all.push_back(max_event("lamp-1", s));
  FakeRouter router(ctx, 0, all);
  FakeFeed feed(ctx);

  SECTION("a gap is filled from history, in order") {
    FeedWatcherOptions o;
    o.items = {"lamp-1"};
    o.request_endpoint = router.endpoint();
    o.request_timeout_ms = 500;
    FeedWatcher w(ctx, feed.endpoint, o);
    REQUIRE(feed.wait_subscribed());
    for (uint64_t s : {1, 2, 5, 5, 3, 6}) feed.publish(all[s - 1]);
    std::vector<bool> repaired;
    auto seqs = drain(w, 6, &repaired);
    CHECK(seqs == std::vector<uint64_t>{1, 2, 3, 4, 5, 6});
    CHECK(repaired == std::vector<bool>{false, false, true, true, false, false});
    CHECK(w.stats().gaps_detected == 1);
    CHECK(w.stats().gaps_repaired == 1);
    CHECK(w.stats().events_repaired == 2);
    CHECK(w.stats().duplicates == 2);
    CHECK(w.stats().events_lost == 0);
    CHECK(w.last_seq("lamp-1") == 6u);
  }
  SECTION("without a request endpoint a gap is counted as lost") {
    FeedWatcher w(ctx, feed.endpoint);
    REQUIRE(feed.wait_subscribed());
    for (uint64_t s : {1, 3}) feed.publish(all[s - 1]);
    auto seqs = drain(w, 2);
    CHECK(seqs == std::vector<uint64_t>{1, 3});
    CHECK(w.stats().gaps_detected == 1);
    CHECK(w.stats().events_lost == 1);
  }
  SECTION("a subscription to one item does not match its prefix") {
    FeedWatcherOptions o;
    o.items = {"lamp-1"};
    FeedWatcher w(ctx, feed.endpoint, o);
    REQUIRE(feed.wait_subscribed());
    feed.publish(max_event("lamp-12", 1));
    feed.publish(all[0]);
    auto ev = w.next(1s);
    REQUIRE(ev);
    CHECK(ev->item == "lamp-1");
    CHECK_FALSE(w.next(100ms));
  }
  router.stop();
}

TEST_CASE("FeedWatcher late join drops events not above the get state", "[client]") {
  zmq::context_t ctx(1);
  std::vector<Event> all;
  for (uint64_t s = 1; s <= 6; ++s) all.push_back(max_event("lamp-1", s));
  FakeRouter router(ctx, 0, all, /*state_seq=*/4);
  FakeFeed feed(ctx);
  int states = 0;
  FeedWatcherOptions o;
  o.request_endpoint = router.endpoint();
  o.request_timeout_ms = 500;
  o.late_join = true;
  o.on_state = [&states](const Reply& r) {
    if (r.u64("seq") == 4u) ++states;
  };
  FeedWatcher w(ctx, feed.endpoint, o);
  REQUIRE(feed.wait_subscribed());
  for (uint64_t s : {3, 4, 5, 6}) feed.publish(all[s - 1]);
  auto seqs = drain(w, 2);
  router.stop();
  CHECK(seqs == std::vector<uint64_t>{5, 6});
  CHECK(states == 1);
  CHECK(w.stats().late_join_gets == 1);
  CHECK(w.stats().late_join_dropped == 1);
  CHECK(w.stats().duplicates == 1);
  CHECK(w.stats().gaps_detected == 0);
}

TEST_CASE("format_event gives one readable line", "[client]") {
  CHECK(format_event(max_event("lamp-1", 3)) == "item lamp-1 seq 3 max 300 by b3");
  CHECK(format_event(max_event("lamp-1", 1)) == "item lamp-1 seq 1 open");
  Event c;
  c.kind = EventKind::closed;
  c.item = "x";
  c.seq = 2;
  CHECK(format_event(c) == "item x seq 2 closed: no bids");
}

TEST_CASE("LatencyHistogram buckets keep 1% precision over the whole range", "[client]") {
  // Every bucket's bounds contain the values mapped to it, and buckets tile the range.
  for (uint64_t v : std::initializer_list<uint64_t>{0, 1, 127, 128, 129, 255, 256, 1000, 123456789, uint64_t{1} << 40,
                     UINT64_MAX - 1, UINT64_MAX}) {
    const auto b = LatencyHistogram::bucket_of(v);
    CHECK(b < LatencyHistogram::kBuckets);
    CHECK(LatencyHistogram::bucket_low(b) <= v);
    CHECK(LatencyHistogram::bucket_high(b) >= v);
    CHECK(static_cast<double>(LatencyHistogram::bucket_high(b) - LatencyHistogram::bucket_low(b)) <=
          static_cast<double>(v) / 128.0 + 1);
  }
  for (std::size_t b = 0; b + 1 < LatencyHistogram::kBuckets; ++b)
    REQUIRE(LatencyHistogram::bucket_high(b) + 1 == LatencyHistogram::bucket_low(b + 1));
  CHECK(LatencyHistogram::bucket_high(LatencyHistogram::kBuckets - 1) == UINT64_MAX);
}

TEST_CASE("LatencyHistogram percentiles", "[client]") {
  LatencyHistogram h;
  CHECK(h.percentile(0.99) == 0);
  for (uint64_t v = 1; v <= 1000; ++v) h.record(v * 1000);  // 1 us .. 1 ms
  CHECK(h.count() == 1000);
  CHECK(h.min() == 1000);
  CHECK(h.max() == 1000000);
  CHECK(h.mean() == Approx(500500.0));
  auto near = [](uint64_t got, double want) { return std::abs(static_cast<double>(got) - want) <= want / 100; };
  CHECK(near(h.percentile(0.5), 500000));
  CHECK(near(h.percentile(0.99), 990000));
  CHECK(h.percentile(0.999) >= 999000);
  CHECK(h.percentile(1.0) == 1000000);
  CHECK(h.percentile(0.0) == 1000);
  LatencyHistogram other;
  other.record(5000000, 10);
  h.merge(other);
  CHECK(h.count() == 1010);
  CHECK(h.max() == 5000000);
  CHECK(h.percentile(1.0) == 5000000);
}
