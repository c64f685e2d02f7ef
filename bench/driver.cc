// bidmesh-bench load generator (see bench_driver.h).
#include "bench/driver.h"

#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <memory>
#include <optional>
#include <random>
#include <thread>
#include <unordered_map>

#include <zmq_addon.hpp>

#include "protocol/clock.h"
#include "protocol/messages.h"
#include "client/client.h"
#include "client/feed_watcher.h"
#include "client/slot_table.h"

namespace bidmesh {
namespace {

std::unique_ptr<zmq::socket_t> make_socket(zmq::context_t& ctx, zmq::socket_type type, const BenchConfig& cfg,
                                           const std::string& endpoint) {
  auto s = std::make_unique<zmq::socket_t>(ctx, type);
  if (cfg.curve) apply_curve_keys(*s, *cfg.curve);
  s->set(zmq::sockopt::linger, 0);
  s->set(zmq::sockopt::maxmsgsize, kClientMaxReplyBytes);
  if (type == zmq::socket_type::dealer) {
    s->set(zmq::sockopt::sndhwm, 100000);
    s->set(zmq::sockopt::rcvhwm, 100000);
  }
  s->connect(endpoint);
  return s;
}

// ---------------------------------------------------------------------------------------------
// Open phase: one DEALER, a window of requests in flight, each resent (same frame, same id) a
// few times on timeout. `exists` is followed by a `get` to learn the item's max (ctr amounts must
// beat it).

struct OpenOutcome {
  bool ok = false;
  std::string error;
  uint64_t opened = 0;
  uint64_t existing = 0;
  uint64_t highest_max = 0;  // the largest max + increment - 1 among reused items
};

OpenOutcome open_items(zmq::context_t& ctx, const BenchConfig& cfg, const std::vector<std::string>& names) {
  OpenOutcome out;
  auto sock = make_socket(ctx, zmq::socket_type::dealer, cfg, cfg.endpoint);
  const std::string prefix = make_client_id_prefix() + "-open";
  uint64_t counter = 0;
  struct Pending {
    std::string frame;
    std::size_t item = 0;
    bool is_get = false;
    int tries = 1;
    int64_t deadline = 0;
  };
  std::unordered_map<std::string, Pending> pending;
  constexpr std::size_t kWindow = 256;
  constexpr int kTries = 4;
  const int64_t timeout_ns = static_cast<int64_t>(cfg.timeout_ms) * 1000000;
  std::size_t next = 0;
  auto send_frame = [&](const std::string& frame) {
    std::vector<zmq::const_buffer> parts{zmq::buffer(frame.data(), 0), zmq::buffer(frame)};
    return zmq::send_multipart(*sock, parts, zmq::send_flags::dontwait).has_value();
  };
  auto issue = [&](std::size_t item, bool is_get) {
    Request r;
    r.op = is_get ? Op::get : Op::open;
    r.id = prefix + "-" + std::to_string(++counter);
    r.item = names[item];
    Pending p{encode_request(r), item, is_get, 1, monotonic_ns() + timeout_ns};
    if (!send_frame(p.frame)) p.deadline = monotonic_ns();  // resent at the next scan
    pending.emplace(r.id, std::move(p));
  };
  // Bounded: every request ends in a reply or after kTries timeouts; next only grows.
  while (next < names.size() || !pending.empty()) {
    while (next < names.size() && pending.size() < kWindow) issue(next++, false);
    zmq::pollitem_t items[] = {{sock->handle(), 0, ZMQ_POLLIN, 0}};
    zmq::poll(items, 1, std::chrono::milliseconds(20));
    for (int n = 0; n < 1024 && (items[0].revents & ZMQ_POLLIN); ++n) {
      std::vector<zmq::message_t> parts;
      if (!zmq::recv_multipart(*sock, std::back_inserter(parts), zmq::recv_flags::dontwait)) break;
      if (parts.size() != 2) continue;
      auto reply = decode_reply(parts[1].to_string_view());
      if (!reply || !reply->id) continue;
      auto it = pending.find(*reply->id);
      if (it == pending.end()) continue;  // a reply to a resent request, already handled
      Pending p = std::move(it->second);
      pending.erase(it);
      const std::string& name = names[p.item];
      if (p.is_get) {
        if (!reply->ok) {
          out.error = "get " + name + ": " + reply->error.value_or("?") + ": " + reply->message.value_or("");
          return out;
        }
        if (reply->str("status") != std::optional<std::string>("open")) {
          out.error = "item " + name + " exists and is closed: choose another --item-prefix";
          return out;
        }
        const uint64_t inc = reply->u64("increment").value_or(1);
        if (cfg.ctr && inc != 1) {
          out.error = "item " + name + " exists with increment " + std::to_string(inc) + "; ctr amounts need 1";
          return out;
        }
        if (auto max = reply->u64("max")) out.highest_max = std::max(out.highest_max, *max);
        continue;
      }
      if (reply->ok) {
        ++out.opened;
      } else if (reply->error == std::optional<std::string>("exists")) {
        ++out.existing;
        issue(p.item, true);
      } else {
        out.error = "open " + name + ": " + reply->error.value_or("?") + ": " + reply->message.value_or("");
        return out;
      }
    }
    const int64_t now = monotonic_ns();
    for (auto& [id, p] : pending) {
      if (now < p.deadline) continue;
      if (p.tries >= kTries) {
        out.error = "no reply from " + cfg.endpoint + " to " + (p.is_get ? "get " : "open ") + names[p.item] + " after " +
                    std::to_string(kTries) + " tries of " + std::to_string(cfg.timeout_ms) + " ms";
        return out;
      }
      ++p.tries;
      p.deadline = now + timeout_ns;
      (void)send_frame(p.frame);
    }
  }
  out.ok = true;
  return out;
}

// ---------------------------------------------------------------------------------------------
// Shared state of a run: fixed before the threads start, but for the atomics.

struct Shared {
  const BenchConfig& cfg;
  std::vector<std::string> names;
  int64_t t0 = 0;        // start of warmup (and of the open-loop schedule)
  int64_t measure = 0;   // start of the measured window
  int64_t end = 0;       // end of sending
  std::atomic<uint64_t> next_amount{1};  // ctr
  // Feed run: send time (mono ns) by amount - amount_base; 0 = unknown.
  uint64_t amount_base = 1;
  std::size_t send_cap = 0;
  std::unique_ptr<std::atomic<int64_t>[]> send_ns;
  std::unique_ptr<std::atomic<int64_t>[]> ack_ns;  // reply receive time (mono ns), same index
  std::atomic<bool> senders_done{false};
  std::atomic<bool> stop_subscribers{false};
  // Where bids go: targets[0] is the router (cfg.endpoint); --direct adds the bid nodes' client
  // endpoints, and target_of[i] is names[i]'s owner (0 for every item without --direct).
  std::vector<std::string> targets;
  std::vector<uint16_t> target_of;
  std::vector<char> target_used;  // some item goes there: only those get sockets

  explicit Shared(const BenchConfig& c) : cfg(c) {}
};

struct WorkerOut {
  // Progress (read by the main thread while running).
  std::atomic<uint64_t> sent{0}, replies{0}, ok{0}, timeouts{0};
  // Results (read after join).
  BenchResult r;
};

struct Pending {
  int64_t intended = 0;
  int64_t sent = 0;
  int64_t deadline = 0;
  uint32_t local_item = 0;
  uint32_t conn = 0;
  uint16_t target = 0;  // the socket of the connection it went out on
  uint64_t amount = 0;  // feed runs: to note when the reply came
  bool active = false;
};

class Worker {
 public:
  Worker(zmq::context_t& ctx, Shared& sh, int index, WorkerOut& out)
      : ctx_(ctx), sh_(sh), cfg_(sh.cfg), index_(index), out_(out), rng_(std::random_device{}()) {
    const int n = cfg_.clients / cfg_.threads + (index < cfg_.clients % cfg_.threads ? 1 : 0);
    conns_.resize(static_cast<std::size_t>(n));
    for (std::size_t c = 0; c < conns_.size(); ++c) {
      open_conn(c);
      for (int s = 0; s < cfg_.pipeline; ++s) free_.push_back(static_cast<uint32_t>(c));
    }
    for (std::size_t i = static_cast<std::size_t>(index); i < sh_.names.size(); i += static_cast<std::size_t>(cfg_.threads))
      items_.push_back(static_cast<uint32_t>(i));
    busy_.assign(items_.size(), 0);
    id_prefix_ = make_client_id_prefix() + "-w" + std::to_string(index) + "-";
    if (cfg_.rate > 0) period_ns_ = 1e9 * cfg_.threads / cfg_.rate;
  }

  void run() {
    const bool open_loop = cfg_.rate > 0;
    int tfd = -1;
    if (open_loop) tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    const int64_t timeout_ns = static_cast<int64_t>(cfg_.timeout_ms) * 1000000;
    const int64_t hard_end = sh_.end + timeout_ns + 100000000;
    int64_t next_scan = monotonic_ns();
    std::vector<zmq::pollitem_t> items;
    // Bounded by hard_end: every turn waits at most 20 ms.
    for (;;) {
      int64_t now = monotonic_ns();
      const bool sending = now < sh_.end;
      if ((!sending && inflight_ == 0) || now >= hard_end) break;

      // Send what is due. `blocked`: a free slot but nothing could go (every item has a bid in
      // flight, or the socket is full): wait for a reply rather than spin.
      bool blocked = false;
      if (sending) {
        for (int n = 0; n < 256 && !free_.empty(); ++n) {
          int64_t intended = now;
          if (open_loop) {
            intended = sh_.t0 + static_cast<int64_t>(static_cast<double>(k_) * period_ns_);
            if (intended > now) break;
          }
          if (!send_one(intended, now)) {
            blocked = true;
            break;
          }
          if (open_loop) ++k_;
          now = monotonic_ns();
        }
        if (open_loop) {
          // Requests due and not sent: the backlog of a saturated server.
          const int64_t due = static_cast<int64_t>(static_cast<double>(now - sh_.t0) / period_ns_) + 1;
          if (due > static_cast<int64_t>(k_))
            out_.r.max_backlog = std::max<uint64_t>(out_.r.max_backlog, static_cast<uint64_t>(due) - k_);
        }
      }

      // Timeouts, every 20 ms.
      if (now >= next_scan) {
        scan_timeouts(now);
        next_scan = now + 20000000;
      }

      // Wait for replies, or for the next intended send time.
      items.clear();
      polled_.clear();
      for (std::size_t c = 0; c < conns_.size(); ++c)
        for (uint16_t t = 0; t < conns_[c].socks.size(); ++t)
          if (conns_[c].socks[t]) {
            items.push_back({conns_[c].socks[t]->handle(), 0, ZMQ_POLLIN, 0});
            polled_.push_back({static_cast<uint32_t>(c), t});
          }
      const std::size_t sockets = items.size();
      long wait_ms = 20;
      if (open_loop && sending && !free_.empty() && !blocked) {
        const int64_t intended = sh_.t0 + static_cast<int64_t>(static_cast<double>(k_) * period_ns_);
        if (intended <= monotonic_ns()) {
          wait_ms = 0;
        } else {
          itimerspec its{};
          its.it_value.tv_sec = intended / 1000000000;
          its.it_value.tv_nsec = intended % 1000000000;
          timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, nullptr);
          items.push_back({nullptr, tfd, ZMQ_POLLIN, 0});
        }
      }
      try {
        zmq::poll(items.data(), items.size(), std::chrono::milliseconds(wait_ms));
      } catch (const zmq::error_t& e) {
        if (e.num() != EINTR) throw;
        continue;
      }
      if (open_loop && items.size() > sockets && (items.back().revents & ZMQ_POLLIN)) {
        uint64_t expirations;
        (void)!read(tfd, &expirations, sizeof expirations);
      }
      for (std::size_t k = 0; k < sockets; ++k)
        if (items[k].revents & ZMQ_POLLIN) drain(polled_[k].first, polled_[k].second);
    }
    // Whatever is still in flight at the hard end is a timeout.
    scan_timeouts(INT64_MAX);
    if (tfd >= 0) close(tfd);
    conns_.clear();
    if (open_loop) {
      // Requests due in the window that never went out.
      const int64_t first = static_cast<int64_t>(std::ceil(static_cast<double>(sh_.measure - sh_.t0) / period_ns_));
      const int64_t last = static_cast<int64_t>(std::ceil(static_cast<double>(sh_.end - sh_.t0) / period_ns_));
      const int64_t sent_in_window = std::max<int64_t>(0, std::min<int64_t>(static_cast<int64_t>(k_), last) - first);
      out_.r.unsent = static_cast<uint64_t>(std::max<int64_t>(0, last - first - sent_in_window));
    }
  }

 private:
  // One client: a socket per target (the router, or with --direct each bid node, as a Redis
  // Cluster client holds one connection per node); one request in flight over all of them
  // (REQ) or `pipeline` (DEALER).
  struct Conn {
    std::vector<std::unique_ptr<zmq::socket_t>> socks;  // by target; null for a target no item uses
    Pending req;  // REQ: the one request in flight
  };

  bool dealer() const { return cfg_.pipeline > 1; }

  void open_conn(std::size_t c) {
    conns_[c].socks.resize(sh_.targets.size());
    for (uint16_t t = 0; t < sh_.targets.size(); ++t)
      if (sh_.target_used[t]) open_socket(c, t);
    conns_[c].req.active = false;
  }
  void open_socket(std::size_t c, uint16_t t) {
    conns_[c].socks[t].reset();
    conns_[c].socks[t] = make_socket(ctx_, dealer() ? zmq::socket_type::dealer : zmq::socket_type::req, cfg_, sh_.targets[t]);
  }

  bool in_window(int64_t t) const { return t >= sh_.measure && t < sh_.end; }

  // Picks an item: ctr, the next one with no bid in flight (round robin); rand, any.
  std::optional<uint32_t> pick_item() {
    if (items_.empty()) return std::nullopt;
    if (!cfg_.ctr) return static_cast<uint32_t>(rng_() % items_.size());
    for (std::size_t n = 0; n < items_.size(); ++n) {
      const uint32_t i = static_cast<uint32_t>(cursor_++ % items_.size());
      if (!busy_[i]) return i;
    }
    return std::nullopt;
  }

  bool send_one(int64_t intended, int64_t now) {
    auto local = pick_item();
    if (!local) return false;
    const uint32_t conn = free_.back();
    Request r;
    r.op = Op::bid;
    r.id = id_prefix_ + std::to_string(++counter_);
    r.item = sh_.names[items_[*local]];
    r.bidder = "bench" + std::to_string(index_) + "c" + std::to_string(conn);
    r.amount = cfg_.ctr ? sh_.next_amount.fetch_add(1, std::memory_order_relaxed)
                        : 1 + rng_() % std::max<uint64_t>(cfg_.max_amount, 1);
    const std::string frame = encode_request(r);
    const uint16_t target = sh_.target_of[items_[*local]];
    zmq::socket_t& sock = *conns_[conn].socks[target];
    const int64_t t_send = monotonic_ns();
    if (sh_.send_ns && r.amount >= sh_.amount_base && r.amount - sh_.amount_base < sh_.send_cap)
      sh_.send_ns[r.amount - sh_.amount_base].store(t_send, std::memory_order_release);
    std::optional<std::size_t> sent;
    try {
      if (dealer()) {
        std::vector<zmq::const_buffer> parts{zmq::buffer(frame.data(), 0), zmq::buffer(frame)};
        sent = zmq::send_multipart(sock, parts, zmq::send_flags::dontwait);
      } else {
        sent = sock.send(zmq::buffer(frame), zmq::send_flags::dontwait);
      }
    } catch (const zmq::error_t&) {
      sent.reset();
    }
    if (!sent) {
      ++out_.r.send_failures;
      return false;
    }
    free_.pop_back();
    Pending p;
    p.intended = intended;
    p.sent = t_send;
    p.deadline = now + static_cast<int64_t>(cfg_.timeout_ms) * 1000000;
    p.local_item = *local;
    p.conn = conn;
    p.target = target;
    p.amount = r.amount;
    p.active = true;
    if (cfg_.ctr) busy_[*local] = 1;
    if (dealer()) {
      pending_.emplace(std::move(r.id), p);
    } else {
      conns_[conn].req = p;
      req_ids_[conn] = std::move(r.id);
    }
    ++inflight_;
    if (in_window(intended)) ++out_.r.sent;
    out_.sent.fetch_add(1, std::memory_order_relaxed);
    return true;
  }

  void finish(const Pending& p) {
    if (cfg_.ctr) busy_[p.local_item] = 0;
    free_.push_back(p.conn);
    --inflight_;
  }

  void drain(uint32_t c, uint16_t t) {
    // REQ holds at most one reply (and refuses recv in its send state); DEALER may hold many.
    const int most = dealer() ? 4096 : 1;
    for (int n = 0; n < most; ++n) {
      std::vector<zmq::message_t> parts;
      std::optional<std::size_t> got;
      try {
        got = zmq::recv_multipart(*conns_[c].socks[t], std::back_inserter(parts), zmq::recv_flags::dontwait);
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) return;
        throw;
      }
      if (!got) return;
      const int64_t now = monotonic_ns();
      if (parts.empty()) continue;
      auto reply = decode_reply(parts.back().to_string_view());
      if (!reply) {
        ++out_.r.bad_replies;
        if (!dealer() && conns_[c].req.active && conns_[c].req.target == t) {  // REQ: our request's answer
          Pending p = conns_[c].req;
          conns_[c].req.active = false;
          finish(p);
        }
        continue;
      }
      Pending p;
      if (dealer()) {
        auto it = reply->id ? pending_.find(*reply->id) : pending_.end();
        if (it == pending_.end()) {
          ++out_.r.late;
          continue;
        }
        p = it->second;
        pending_.erase(it);
      } else {
        if (!conns_[c].req.active || conns_[c].req.target != t || reply->id != std::optional<std::string>(req_ids_[c])) {
          ++out_.r.late;
          continue;
        }
        p = conns_[c].req;
        conns_[c].req.active = false;
      }
      finish(p);
      out_.replies.fetch_add(1, std::memory_order_relaxed);
      if (reply->ok) out_.ok.fetch_add(1, std::memory_order_relaxed);
      if (reply->ok && sh_.ack_ns && p.amount >= sh_.amount_base && p.amount - sh_.amount_base < sh_.send_cap)
        sh_.ack_ns[p.amount - sh_.amount_base].store(now, std::memory_order_release);
      if (reply->ok && in_window(p.sent)) ++out_.r.accepted_sent_in_window;
      if (!in_window(p.intended)) continue;
      ++out_.r.replies;
      if (reply->ok) ++out_.r.accepted;
      ++out_.r.outcomes[reply->ok ? std::string("ok") : reply->error.value_or("?")];
      out_.r.latency.record(static_cast<uint64_t>(std::max<int64_t>(0, now - p.intended)));
    }
  }

  void scan_timeouts(int64_t now) {
    auto expire = [&](const Pending& p) {
      if (in_window(p.intended)) ++out_.r.timeouts;
      out_.timeouts.fetch_add(1, std::memory_order_relaxed);
      finish(p);
    };
    if (dealer()) {
      for (auto it = pending_.begin(); it != pending_.end();) {
        if (it->second.deadline <= now) {
          expire(it->second);
          it = pending_.erase(it);
        } else {
          ++it;
        }
      }
      return;
    }
    for (std::size_t c = 0; c < conns_.size(); ++c) {
      if (!conns_[c].req.active || conns_[c].req.deadline > now) continue;
      Pending p = conns_[c].req;
      if (now != INT64_MAX) open_socket(c, p.target);  // Lazy Pirate: a REQ that lost its reply is stuck
      conns_[c].req.active = false;
      expire(p);
    }
  }

  zmq::context_t& ctx_;
  Shared& sh_;
  const BenchConfig& cfg_;
  const int index_;
  WorkerOut& out_;
  std::mt19937_64 rng_;
  std::vector<Conn> conns_;
  std::unordered_map<uint32_t, std::string> req_ids_;  // REQ conn -> id in flight
  std::vector<std::pair<uint32_t, uint16_t>> polled_;  // poll item k -> (connection, target)
  std::unordered_map<std::string, Pending> pending_;  // DEALER: id -> request in flight
  std::vector<uint32_t> free_;                        // one entry per free slot: its connection
  std::vector<uint32_t> items_;                       // global item indexes owned by this worker
  std::vector<char> busy_;                            // ctr: a bid in flight for items_[i]
  std::size_t cursor_ = 0;
  std::string id_prefix_;
  uint64_t counter_ = 0;
  uint64_t k_ = 0;  // open loop: index of the next request of the schedule
  double period_ns_ = 0;
  uint64_t inflight_ = 0;
};

// One event received by a subscriber: its latencies, matched by amount to the bid that made it.
void record_event(const Shared& sh, const Event& ev, int64_t now, SubscriberResult& out) {
  ++out.received;
  if (ev.kind != EventKind::max || !ev.amount) return;
  const uint64_t a = *ev.amount;
  int64_t sent = 0;
  if (sh.send_ns && a >= sh.amount_base && a - sh.amount_base < sh.send_cap)
    sent = sh.send_ns[a - sh.amount_base].load(std::memory_order_acquire);
  if (sent == 0) {
    ++out.unmatched;
    return;
  }
  if (sent < sh.measure || sent >= sh.end) return;
  ++out.matched;
  out.latency.record(static_cast<uint64_t>(std::max<int64_t>(0, now - sent)));
  const int64_t acked = sh.ack_ns[a - sh.amount_base].load(std::memory_order_acquire);
  out.publish_latency.record(static_cast<uint64_t>(acked == 0 ? 0 : std::max<int64_t>(0, now - acked)));
  const uint64_t wall = unix_now_ms();
  out.ts_latency.record(wall > ev.ts ? wall - ev.ts : 0);
}

// Feed subscribers served by one thread: each its own SUB socket and connection, subscribed to
// every bench item, no repair (gaps are what it measures). By default each subscriber has a thread
// of its own; fewer threads polling many subscribers each (--subscriber-threads) were measured
// slower on 2 vCPUs (docs/benchmarks.md): decoding 100 copies of every event is the work.
void run_subscribers(zmq::context_t& ctx, Shared& sh, const std::string& prefix, std::vector<SubscriberResult*> outs,
                     std::atomic<uint64_t>& events) {
  FeedWatcherOptions o;
  o.topic_prefix = std::string(kFeedTopicPrefix) + prefix + "-";
  o.rcvhwm = sh.cfg.sub_rcvhwm;
  o.curve = sh.cfg.curve;
  std::vector<std::unique_ptr<FeedWatcher>> watchers;
  std::vector<zmq::pollitem_t> items;
  for (std::size_t i = 0; i < outs.size(); ++i) {
    watchers.push_back(std::make_unique<FeedWatcher>(ctx, sh.cfg.feed, o));
    items.push_back({watchers.back()->socket().handle(), 0, ZMQ_POLLIN, 0});
  }
  // Bounded: the main thread sets stop_subscribers after the senders' hard end plus a drain.
  while (!sh.stop_subscribers.load(std::memory_order_acquire)) {
    try {
      zmq::poll(items, std::chrono::milliseconds(50));
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;
    }
    for (std::size_t i = 0; i < watchers.size(); ++i) {
      if ((items[i].revents & ZMQ_POLLIN) == 0) continue;
      while (auto ev = watchers[i]->next(std::chrono::milliseconds(0))) {
        record_event(sh, *ev, monotonic_ns(), *outs[i]);
        events.fetch_add(1, std::memory_order_relaxed);
      }
    }
  }
  for (std::size_t i = 0; i < watchers.size(); ++i) {
    const FeedStats& s = watchers[i]->stats();
    outs[i]->gaps = s.gaps_detected;
    outs[i]->lost = s.events_lost;
    outs[i]->duplicates = s.duplicates;
  }
}

std::string random_hex(int digits) {
  std::random_device rd;
  std::string s;
  static const char* hex = "0123456789abcdef";
  for (int i = 0; i < digits; ++i) s += hex[rd() % 16];
  return s;
}

}  // namespace

BenchResult run_bench(zmq::context_t& ctx, const BenchConfig& cfg, const ProgressFn& progress) {
  BenchResult result;
  Shared sh(cfg);
  result.item_prefix = cfg.item_prefix.empty() ? "bench-" + random_hex(8) : cfg.item_prefix;
  sh.names.reserve(cfg.items);
  for (uint64_t i = 0; i < cfg.items; ++i) sh.names.push_back(result.item_prefix + "-" + std::to_string(i));

  // --direct: the slot map, fetched once; each item's bids go to its owner's client endpoint.
  sh.targets.push_back(cfg.endpoint);
  sh.target_of.assign(sh.names.size(), 0);
  if (cfg.direct) {
    Client c(ctx, cfg.endpoint, cfg.timeout_ms, Client::kDefaultRetries, std::string(), cfg.curve);
    std::string why = "no reply";
    std::optional<SlotTable> table;
    if (auto raw = c.call_raw(encode_slots_request(c.next_id()))) table = decode_slots_reply(*raw, &why);
    if (!table) {
      result.error = "--direct: no slot map from " + cfg.endpoint + ": " + why;
      return result;
    }
    for (const auto& e : table->endpoints()) sh.targets.push_back(e);
    for (std::size_t i = 0; i < sh.names.size(); ++i) {
      const std::size_t owner = table->endpoint_of_item(sh.names[i]);
      sh.target_of[i] = owner == SlotTable::kViaRouter ? 0 : static_cast<uint16_t>(owner + 1);
    }
    result.direct_endpoints = table->endpoints();
  }
  sh.target_used.assign(sh.targets.size(), 0);
  for (const uint16_t t : sh.target_of) sh.target_used[t] = 1;

  // Subscribers first, so that their subscriptions are live by the end of the warmup.
  std::vector<SubscriberResult> subs(static_cast<std::size_t>(std::max(cfg.subscribers, 0)));
  std::atomic<uint64_t> feed_events{0};
  std::vector<std::thread> sub_threads;
  auto stop_subs = [&] {
    sh.stop_subscribers.store(true, std::memory_order_release);
    for (auto& t : sub_threads) t.join();
    sub_threads.clear();
  };

  // Stalled subscribers: subscribed to every event, never read. Their queues fill to the
  // high-water marks (theirs and the feed's), and past them the feed drops their events.
  std::vector<std::unique_ptr<zmq::socket_t>> stalled;
  for (int i = 0; i < cfg.stalled_subscribers; ++i) {
    auto s = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::sub);
    s->set(zmq::sockopt::linger, 0);
    s->set(zmq::sockopt::subscribe, kFeedTopicPrefix);
    if (cfg.curve) apply_curve_keys(*s, *cfg.curve);
    s->connect(cfg.feed);
    stalled.push_back(std::move(s));
  }

  const int64_t open_start = monotonic_ns();
  OpenOutcome opened = open_items(ctx, cfg, sh.names);
  result.open_seconds = static_cast<double>(monotonic_ns() - open_start) / 1e9;
  result.items_opened = opened.opened;
  result.items_existing = opened.existing;
  if (!opened.ok) {
    result.error = opened.error;
    return result;
  }
  sh.next_amount.store(opened.highest_max + 1);
  sh.amount_base = opened.highest_max + 1;
  if (!subs.empty() && cfg.ctr) {
    // Room for every bid of the run at the target rate (closed loop: 100k/s), within 64 MiB.
    const double per_s = cfg.rate > 0 ? cfg.rate : 100000.0;
    const double want = per_s * (cfg.warmup + cfg.seconds + cfg.timeout_ms / 1000.0) * 1.25 + 10000;
    sh.send_cap = static_cast<std::size_t>(std::min(want, 8.0 * 1024 * 1024));
    sh.send_ns = std::make_unique<std::atomic<int64_t>[]>(sh.send_cap);
    sh.ack_ns = std::make_unique<std::atomic<int64_t>[]>(sh.send_cap);
    for (std::size_t i = 0; i < sh.send_cap; ++i) {
      sh.send_ns[i].store(0, std::memory_order_relaxed);
      sh.ack_ns[i].store(0, std::memory_order_relaxed);
    }
  }
  const std::size_t sub_thread_count =
      cfg.subscriber_threads <= 0 ? subs.size() : std::min(subs.size(), static_cast<std::size_t>(cfg.subscriber_threads));
  for (std::size_t t = 0; t < sub_thread_count; ++t) {
    std::vector<SubscriberResult*> mine;
    for (std::size_t s = t; s < subs.size(); s += sub_thread_count) mine.push_back(&subs[s]);
    sub_threads.emplace_back(run_subscribers, std::ref(ctx), std::ref(sh), result.item_prefix, std::move(mine),
                             std::ref(feed_events));
  }

  sh.t0 = monotonic_ns();
  sh.measure = sh.t0 + static_cast<int64_t>(cfg.warmup * 1e9);
  sh.end = sh.measure + static_cast<int64_t>(cfg.seconds * 1e9);
  result.window_seconds = cfg.seconds;

  std::vector<std::unique_ptr<WorkerOut>> outs;
  std::vector<std::thread> workers;
  for (int w = 0; w < cfg.threads; ++w) outs.push_back(std::make_unique<WorkerOut>());
  std::atomic<int> running{cfg.threads};
  for (int w = 0; w < cfg.threads; ++w) {
    workers.emplace_back([&, w] {
      Worker worker(ctx, sh, w, *outs[static_cast<std::size_t>(w)]);
      worker.run();
      running.fetch_sub(1);
    });
  }

  // Progress, about once a second, until the workers are done (they end by their hard end).
  int64_t next_report = monotonic_ns() + 1000000000;
  while (running.load() > 0) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    const int64_t now = monotonic_ns();
    if (now < next_report || !progress) continue;
    next_report += 1000000000;
    Progress p;
    p.elapsed_s = static_cast<double>(now - sh.t0) / 1e9;
    p.warming_up = now < sh.measure;
    for (auto& o : outs) {
      p.sent += o->sent.load(std::memory_order_relaxed);
      p.replies += o->replies.load(std::memory_order_relaxed);
      p.ok += o->ok.load(std::memory_order_relaxed);
      p.timeouts += o->timeouts.load(std::memory_order_relaxed);
    }
    p.feed_events = feed_events.load(std::memory_order_relaxed);
    progress(p);
  }
  for (auto& t : workers) t.join();

  // Let the feed catch up: until no event for 300 ms, at most 3 s.
  if (!sub_threads.empty()) {
    const int64_t limit = monotonic_ns() + 3000000000;
    uint64_t last = feed_events.load();
    int64_t quiet_since = monotonic_ns();
    while (monotonic_ns() < limit) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
      const uint64_t now_events = feed_events.load();
      if (now_events != last) {
        last = now_events;
        quiet_since = monotonic_ns();
      } else if (monotonic_ns() - quiet_since > 300000000) {
        break;
      }
    }
    stop_subs();
  }

  for (auto& o : outs) {
    BenchResult& r = o->r;
    result.sent += r.sent;
    result.replies += r.replies;
    result.accepted += r.accepted;
    result.accepted_sent_in_window += r.accepted_sent_in_window;
    for (auto& [k, v] : r.outcomes) result.outcomes[k] += v;
    result.timeouts += r.timeouts;
    result.late += r.late;
    result.bad_replies += r.bad_replies;
    result.send_failures += r.send_failures;
    result.unsent += r.unsent;
    result.max_backlog += r.max_backlog;
    result.latency.merge(r.latency);
  }
  result.subscribers = std::move(subs);
  result.ok = true;
  return result;
}

}  // namespace bidmesh
