// bidmesh-ws-bench: the web gateway's WebSocket load test (issue 15, point 6; docs/web.md).
//
//   bidmesh-ws-bench --gateway 127.0.0.1:8080 --router tcp://127.0.0.1:5555
//                    [--subscribers 1000] [--rate 500] [--seconds 10] [--items 20] [--threads 2]
//                    [--feed tcp://127.0.0.1:5556]
//
// N WebSocket subscribers connect to the gateway and watch every item ({"type":"watch","all":
// true}); a driver sends R bids per second through the router (one DEALER, pipelined) on fresh
// items, each bid one more than the last on its item, so every bid is one `max` event.
// Delivery time: the event's `ts` (unix ms, stamped by the bid node when it commits the bid)
// to the moment a subscriber has read the message (system clock, same machine). So it spans the
// bid node's publish, the feed forwarder, the gateway and the socket; `ts` is whole
// milliseconds, so each figure may read up to 1 ms high.
// With --feed, also feed-to-socket delivery (`from_feed_ms`): from the moment the bench's own
// subscriber of the feed reads the event (a FeedWatcher thread, steady clock) to the moment a
// WebSocket subscriber reads it; that leaves out the bid node's fsync and the forwarder.
// Events may come one per message or in batches ({"type":"events","events":[...]}): each
// event inside a batch counts, with the batch's read time.
// Lost events: per subscriber and item, every seq from the first seen to the item's last must
// arrive once, in order; a missing or repeated seq counts, and so does a resync message.
// Prints one JSON line; exit 0 when it ran (whatever the figures), 100 usage, 111 failure.
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include <CLI/CLI.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/websocket.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "client/feed_watcher.h"
#include "protocol/messages.h"

namespace {

namespace beast = boost::beast;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;

double steady_ms() {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now().time_since_epoch()).count();
}

// The item's number in this run: the digits after the name's last '-' ("wsb-TAG-7": 7).
std::optional<std::size_t> item_index(std::string_view item) {
  const auto dash = item.rfind('-');
  if (dash == std::string_view::npos || dash + 1 >= item.size()) return std::nullopt;
  std::size_t v = 0;
  for (char c : item.substr(dash + 1)) {
    if (c < '0' || c > '9') return std::nullopt;
    v = v * 10 + static_cast<std::size_t>(c - '0');
  }
  return v;
}

// One event read by a subscriber, for the feed-to-socket figure (12 bytes: 5M fit in 60 MB).
struct Sample {
  uint32_t seq;
  uint16_t item;
  float read_ms;  // steady_ms() - the run's origin
};

double unix_now_ms_precise() {
  return std::chrono::duration<double, std::milli>(std::chrono::system_clock::now().time_since_epoch()).count();
}

// A cursor over the gateway's compact JSON: `take` steps over a literal, `number` over digits.
bool take(std::string_view text, std::size_t& i, std::string_view literal) {
  if (text.substr(i, literal.size()) != literal) return false;
  i += literal.size();
  return true;
}

std::optional<uint64_t> number(std::string_view text, std::size_t& i) {
  if (i >= text.size() || text[i] < '0' || text[i] > '9') return std::nullopt;
  uint64_t v = 0;
  for (; i < text.size() && text[i] >= '0' && text[i] <= '9'; ++i) v = v * 10 + static_cast<uint64_t>(text[i] - '0');
  return v;
}

// Lookup by string_view: the bench parses 500k events/s in place, with no string per event.
struct NameHash {
  using is_transparent = void;
  std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
};

struct Subscriber : std::enable_shared_from_this<Subscriber> {
  Subscriber(net::io_context& io, std::string host, std::string port, std::string origin, std::atomic<int>& ready,
             bool keep_samples, double origin_ms)
      : resolver(io), ws(io), host(std::move(host)), port(std::move(port)), origin(std::move(origin)), ready(ready),
        keep_samples(keep_samples), origin_ms(origin_ms) {}

  void start() {
    resolver.async_resolve(host, port, [self = shared_from_this()](beast::error_code ec, tcp::resolver::results_type r) {
      if (ec) return self->fail("resolve", ec);
      beast::get_lowest_layer(self->ws).async_connect(r, [self](beast::error_code ec2, const tcp::endpoint&) {
        if (ec2) return self->fail("connect", ec2);
        self->ws.set_option(websocket::stream_base::decorator([o = self->origin](websocket::request_type& req) {
          req.set(beast::http::field::origin, o);
        }));
        self->ws.async_handshake(self->host + ":" + self->port, "/ws", [self](beast::error_code ec3) {
          if (ec3) return self->fail("handshake", ec3);
          self->out = R"({"type":"watch","all":true})";
          self->ws.text(true);
          self->ws.async_write(net::buffer(self->out), [self](beast::error_code ec4, std::size_t) {
            if (ec4) return self->fail("watch", ec4);
            ++self->ready;
            self->read();
          });
        });
      });
    });
  }

  void read() {
    ws.async_read(buffer, [self = shared_from_this()](beast::error_code ec, std::size_t) {
      if (ec) {
        if (!self->stopping) self->fail("read", ec);
        return;
      }
      // A flat_buffer holds the message in one piece: parsed in place, not copied.
      const auto data = self->buffer.data();
      self->on_message(std::string_view(static_cast<const char*>(data.data()), data.size()));
      self->buffer.consume(self->buffer.size());
      self->read();
    });
  }

  // One message: an event, a batch {"type":"events","events":[...]} of them, or a resync.
  // The gateway writes each event object compactly with its fields in one order (event_message
  // in gateway/server.cc: type, item, seq, event, ts, then the kind's own), so one pass over the
  // message reads them in place: at 1000 subscribers the bench parses 500k events/s on the
  // cores the gateway needs.
  void on_message(std::string_view all) {
    const double now = unix_now_ms_precise();
    const float read_ms = keep_samples ? static_cast<float>(steady_ms() - origin_ms) : 0.0f;
    ++messages;
    if (all.substr(0, 16) == R"({"type":"resync")") {
      ++resyncs;
      return;
    }
    static constexpr std::string_view kEvent = R"({"type":"event","item":")";
    for (auto at = all.find(kEvent); at != std::string_view::npos; at = all.find(kEvent, at)) {
      std::size_t i = at + kEvent.size();
      const auto item_end = all.find('"', i);
      if (item_end == std::string_view::npos) break;
      const std::string_view item = all.substr(i, item_end - i);
      i = item_end;
      std::optional<uint64_t> seq, ts;
      bool max = false;
      if (take(all, i, R"(","seq":)") && (seq = number(all, i)) && take(all, i, R"(,"event":")")) {
        max = take(all, i, "max");
        i = all.find(R"(","ts":)", i);  // right here after "max"; after the kind's name otherwise
        if (i != std::string_view::npos && take(all, i, R"(","ts":)")) ts = number(all, i);
      }
      at = std::min(i, all.size());
      if (!item.empty() && seq && ts) on_event(item, *seq, *ts, max, now, read_ms);
    }
  }

  void on_event(std::string_view item, uint64_t seq, uint64_t ts, bool max, double now, float read_ms) {
    ++received;
    auto it = last_seq.find(item);
    const bool first = it == last_seq.end();
    if (first) it = last_seq.emplace(std::string(item), seq).first;
    if (!first) {
      if (seq != it->second + 1) {
        if (seq > it->second) gaps += seq - it->second - 1;
        else ++repeats;
      }
      it->second = std::max(it->second, seq);
    }
    if (max) {
      delivery_us.push_back(static_cast<float>((now - static_cast<double>(ts)) * 1000.0));
      if (keep_samples)
        if (auto index = item_index(item); index && *index <= UINT16_MAX && seq <= UINT32_MAX)
          samples.push_back({static_cast<uint32_t>(seq), static_cast<uint16_t>(*index), read_ms});
    }
  }

  void fail(const char* what, beast::error_code ec) {
    if (error.empty()) error = std::string(what) + ": " + ec.message();
  }

  tcp::resolver resolver;
  websocket::stream<beast::tcp_stream> ws;
  beast::flat_buffer buffer;
  std::string host, port, origin, out, error;
  std::atomic<int>& ready;
  const bool keep_samples;
  const double origin_ms;
  std::vector<Sample> samples;
  bool stopping = false;
  std::atomic<uint64_t> received{0};  // read by the main thread while the run settles
  uint64_t messages = 0, gaps = 0, repeats = 0, resyncs = 0;
  std::unordered_map<std::string, uint64_t, NameHash, std::equal_to<>> last_seq;
  std::vector<float> delivery_us;
};

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-ws-bench: N WebSocket subscribers of the web gateway under R bids/s through the router"};
  std::string gateway = "127.0.0.1:8080", router = "tcp://127.0.0.1:5555", origin;
  std::string feed;
  int subscribers = 1000, rate = 500, seconds = 10, items = 20, threads = 2;
  app.add_option("--gateway", gateway, "the gateway's HOST:PORT")->capture_default_str();
  app.add_option("--origin", origin, "Origin header (default http://GATEWAY)");
  app.add_option("--router", router, "the router's request endpoint")->capture_default_str();
  app.add_option("--feed", feed, "the feed's publish endpoint: also measure feed-to-socket delivery");
  app.add_option("--subscribers", subscribers, "WebSocket subscribers")->capture_default_str()->check(CLI::Range(1, 100000));
  app.add_option("--rate", rate, "bids (events) per second")->capture_default_str()->check(CLI::Range(1, 1000000));
  app.add_option("--seconds", seconds, "how long the driver bids")->capture_default_str()->check(CLI::Range(1, 3600));
  app.add_option("--items", items, "items bid on, in turn")->capture_default_str()->check(CLI::Range(1, 10000));
  app.add_option("--threads", threads, "io threads of the subscribers")->capture_default_str()->check(CLI::Range(1, 64));
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "bidmesh-ws-bench: " << e.what() << std::endl;
    return 100;
  }
  const auto colon = gateway.rfind(':');
  if (colon == std::string::npos) {
    std::cerr << "bidmesh-ws-bench: --gateway is HOST:PORT" << std::endl;
    return 100;
  }
  if (origin.empty()) origin = "http://" + gateway;

  // Subscribers, each on one of `threads` io_contexts (no handler of one socket runs twice at once).
  std::vector<std::unique_ptr<net::io_context>> ios;
  for (int i = 0; i < threads; ++i) ios.push_back(std::make_unique<net::io_context>(1));
  std::atomic<int> ready{0};
  std::vector<std::shared_ptr<Subscriber>> subs;
  const double origin_ms = steady_ms();
  for (int i = 0; i < subscribers; ++i) {
    subs.push_back(std::make_shared<Subscriber>(*ios[i % threads], gateway.substr(0, colon), gateway.substr(colon + 1),
                                                origin, ready, !feed.empty(), origin_ms));
    subs.back()->start();
  }
  std::vector<std::thread> io_threads;
  std::vector<std::unique_ptr<net::executor_work_guard<net::io_context::executor_type>>> guards;
  for (auto& io : ios) {
    guards.push_back(std::make_unique<net::executor_work_guard<net::io_context::executor_type>>(io->get_executor()));
    io_threads.emplace_back([&io] { io->run(); });
  }
  const auto connect_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while (ready.load() < subscribers && std::chrono::steady_clock::now() < connect_deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  const int connected = ready.load();

  // The driver: open the items, then R bids/s, pipelined on one DEALER.
  zmq::context_t ctx(1);
  zmq::socket_t dealer(ctx, zmq::socket_type::dealer);
  dealer.set(zmq::sockopt::linger, 0);
  dealer.connect(router);
  std::mt19937_64 rng(std::random_device{}());
  char tag[9];
  std::snprintf(tag, sizeof tag, "%08x", static_cast<unsigned>(rng()));
  std::vector<std::string> names;
  for (int i = 0; i < items; ++i) names.push_back(std::string("wsb-") + tag + "-" + std::to_string(i));
  // The feed side: when this run's events appear on the feed (item x seq -> ms since origin).
  const std::size_t max_seq = static_cast<std::size_t>(rate) * static_cast<std::size_t>(seconds) / static_cast<std::size_t>(items) + 16;
  std::vector<std::vector<float>> feed_ms;
  std::atomic<bool> feed_stop{false};
  std::atomic<bool> feed_failed{false};
  std::thread feed_thread;
  if (!feed.empty()) {
    feed_ms.assign(static_cast<std::size_t>(items), std::vector<float>(max_seq + 1, -1.0f));
    std::atomic<bool> subscribed{false};
    feed_thread = std::thread([&] {
      try {
        bidmesh::FeedWatcherOptions options;
        options.topic_prefix = std::string(bidmesh::kFeedTopicPrefix) + "wsb-" + tag + "-";
        bidmesh::FeedWatcher watcher(ctx, feed, options);
        subscribed = true;
        while (!feed_stop.load()) {
          auto e = watcher.next(std::chrono::milliseconds(100));
          if (!e) continue;
          const float at = static_cast<float>(steady_ms() - origin_ms);
          auto index = item_index(e->item);
          if (index && *index < feed_ms.size() && e->seq <= max_seq && feed_ms[*index][e->seq] < 0)
            feed_ms[*index][e->seq] = at;
        }
      } catch (const std::exception& e) {
        std::cerr << "bidmesh-ws-bench: feed: " << e.what() << std::endl;
        feed_failed = true;
        subscribed = true;
      }
    });
    // A SUB socket misses what is published before its subscription reaches the publisher.
    const auto joined = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!subscribed.load() && std::chrono::steady_clock::now() < joined)
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
  }
  uint64_t next_id = 0, sent = 0, replies = 0, refused = 0;
  auto send = [&](bidmesh::Request r) {
    r.id = std::string("wsb-") + tag + "-" + std::to_string(++next_id);
    const std::string frame = bidmesh::encode_request(r);
    dealer.send(zmq::message_t(), zmq::send_flags::sndmore);
    dealer.send(zmq::buffer(frame), zmq::send_flags::none);
    ++sent;
  };
  std::map<std::string, uint64_t> final_seq;
  auto drain = [&](std::chrono::milliseconds wait) {
    wait = std::max(wait, std::chrono::milliseconds(0));  // a negative wait is forever to zmq_poll
    std::vector<zmq::pollitem_t> poll{{dealer.handle(), 0, ZMQ_POLLIN, 0}};
    while (zmq::poll(poll, wait) > 0) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(dealer, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
      ++replies;
      if (auto reply = bidmesh::decode_reply(parts.back().to_string_view())) {
        if (!reply->ok) ++refused;
        if (auto item = reply->str("item"); item && reply->u64("seq"))
          final_seq[*item] = std::max(final_seq[*item], *reply->u64("seq"));
      }
      wait = std::chrono::milliseconds(0);
    }
  };
  for (const auto& name : names) {
    bidmesh::Request r;
    r.op = bidmesh::Op::open;
    r.item = name;
    send(r);
  }
  while (replies < sent && std::chrono::steady_clock::now() < connect_deadline) drain(std::chrono::milliseconds(100));
  std::vector<uint64_t> amount(names.size(), 0);
  const auto start = std::chrono::steady_clock::now();
  const auto end = start + std::chrono::seconds(seconds);
  uint64_t bids = 0;
  while (std::chrono::steady_clock::now() < end) {
    const auto due = start + std::chrono::microseconds(bids * 1000000 / static_cast<uint64_t>(rate));
    if (std::chrono::steady_clock::now() < due) {
      // Rounded up: a wait truncated to 0 ms made this loop spin on zmq_poll (a third of the
      // bench's CPU, measured with perf), stealing a core from the gateway it measures.
      drain(std::chrono::ceil<std::chrono::milliseconds>(due - std::chrono::steady_clock::now()));
      continue;
    }
    const std::size_t i = bids % names.size();
    bidmesh::Request r;
    r.op = bidmesh::Op::bid;
    r.item = names[i];
    r.bidder = "wsbench";
    r.amount = ++amount[i];
    send(r);
    ++bids;
    drain(std::chrono::milliseconds(0));
  }
  const auto drive_end = std::chrono::steady_clock::now();
  const auto reply_deadline = drive_end + std::chrono::seconds(10);
  while (replies < sent && std::chrono::steady_clock::now() < reply_deadline) drain(std::chrono::milliseconds(100));
  // Let the last events reach every subscriber: until all have arrived, or 30 s (what has not
  // arrived by then counts as lost).
  const auto settle_deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  while (std::chrono::steady_clock::now() < settle_deadline) {
    uint64_t total = 0;
    for (auto& s : subs) total += s->received.load(std::memory_order_relaxed);
    const uint64_t expected = static_cast<uint64_t>(connected) * (bids + names.size());  // opens too
    if (total >= expected) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  for (auto& s : subs)
    net::post(s->ws.get_executor(), [s] {
      s->stopping = true;
      beast::error_code ec;
      beast::get_lowest_layer(s->ws).socket().close(ec);
    });
  for (auto& g : guards) g->reset();
  for (auto& io : ios) io->stop();
  for (auto& t : io_threads) t.join();
  feed_stop = true;
  if (feed_thread.joinable()) feed_thread.join();
  // Feed-to-socket: each subscriber's read of a `max` event minus the feed's read of it.
  std::vector<float> from_feed;
  uint64_t unmatched = 0;
  for (auto& s : subs)
    for (const Sample& x : s->samples) {
      const float at = x.item < feed_ms.size() && x.seq < feed_ms[x.item].size() ? feed_ms[x.item][x.seq] : -1.0f;
      if (at < 0) ++unmatched;
      else from_feed.push_back(x.read_ms - at);
    }
  std::sort(from_feed.begin(), from_feed.end());
  auto pct_of = [](const std::vector<float>& v, double p) {
    if (v.empty()) return 0.0;
    return static_cast<double>(v[std::min(v.size() - 1, static_cast<std::size_t>(p * static_cast<double>(v.size())))]);
  };

  uint64_t received = 0, messages = 0, gaps = 0, repeats = 0, resyncs = 0, tail_lost = 0;
  std::vector<float> all;
  std::string first_error;
  for (auto& s : subs) {
    received += s->received;
    messages += s->messages;
    gaps += s->gaps;
    repeats += s->repeats;
    resyncs += s->resyncs;
    if (first_error.empty()) first_error = s->error;
    if (s->error.empty() || s->received > 0)
      for (const auto& [item, seq] : final_seq) {
        auto it = s->last_seq.find(item);
        if (it == s->last_seq.end()) tail_lost += seq > 1 ? seq - 1 : 0;  // its bids, not the open
        else if (it->second < seq) tail_lost += seq - it->second;
      }
    all.insert(all.end(), s->delivery_us.begin(), s->delivery_us.end());
  }
  std::sort(all.begin(), all.end());
  auto pct = [&](double p) { return pct_of(all, p) / 1000.0; };
  std::string feed_figures;
  if (!feed.empty()) {
    char text[256];
    std::snprintf(text, sizeof text,
                  "\"from_feed_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f,\"unmatched\":%llu%s},",
                  pct_of(from_feed, 0.5), pct_of(from_feed, 0.9), pct_of(from_feed, 0.99), pct_of(from_feed, 0.999),
                  from_feed.empty() ? 0.0 : static_cast<double>(from_feed.back()), static_cast<unsigned long long>(unmatched),
                  feed_failed.load() ? ",\"failed\":true" : "");
    feed_figures = text;
  }
  const double drive_s = std::chrono::duration<double>(drive_end - start).count();
  std::printf("{\"subscribers\":%d,\"connected\":%d,\"rate\":%d,\"seconds\":%.2f,\"bids\":%llu,\"replies\":%llu,"
              "\"refused\":%llu,\"events_expected\":%llu,\"events_received\":%llu,\"messages\":%llu,\"lost\":%llu,\"repeats\":%llu,"
              "\"resyncs\":%llu,\"delivery_ms\":{\"p50\":%.2f,\"p90\":%.2f,\"p99\":%.2f,\"p999\":%.2f,\"max\":%.2f},"
              "%s\"error\":\"%s\"}\n",
              subscribers, connected, rate, drive_s, static_cast<unsigned long long>(bids),
              static_cast<unsigned long long>(replies), static_cast<unsigned long long>(refused),
              static_cast<unsigned long long>(static_cast<uint64_t>(connected) * (bids + names.size())),
              static_cast<unsigned long long>(received), static_cast<unsigned long long>(messages), static_cast<unsigned long long>(gaps + tail_lost),
              static_cast<unsigned long long>(repeats), static_cast<unsigned long long>(resyncs), pct(0.5), pct(0.9),
              pct(0.99), pct(0.999), all.empty() ? 0.0 : static_cast<double>(all.back()) / 1000.0, feed_figures.c_str(),
              first_error.c_str());
  return connected == subscribers ? 0 : 111;
}
