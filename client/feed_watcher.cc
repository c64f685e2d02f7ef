// FeedWatcher: ordered, de-duplicated, gap-repaired feed reading (see feed_watcher.h).
#include "client/feed_watcher.h"

#include <algorithm>
#include <cerrno>
#include <iterator>

namespace bidmesh {

FeedWatcher::FeedWatcher(zmq::context_t& ctx, const std::string& feed_endpoint, FeedWatcherOptions options)
    : options_(std::move(options)) {
  sub_ = std::make_unique<zmq::socket_t>(ctx, zmq::socket_type::sub);
  sub_->set(zmq::sockopt::linger, 0);
  sub_->set(zmq::sockopt::rcvhwm, options_.rcvhwm > 0 ? options_.rcvhwm : 1000);
  sub_->set(zmq::sockopt::maxmsgsize, kClientMaxReplyBytes);
  if (!options_.topic_prefix.empty()) {
    sub_->set(zmq::sockopt::subscribe, options_.topic_prefix);
  } else if (options_.items.empty()) {
    sub_->set(zmq::sockopt::subscribe, std::string(kFeedTopicPrefix));
  } else {
    for (const auto& item : options_.items) sub_->set(zmq::sockopt::subscribe, feed_topic(item));
  }
  if (options_.curve) apply_curve_keys(*sub_, *options_.curve);
  sub_->connect(feed_endpoint);
  if (!options_.request_endpoint.empty())
    client_ = std::make_unique<Client>(ctx, options_.request_endpoint, options_.request_timeout_ms,
                                       options_.request_retries, std::string(), options_.curve);
}

FeedWatcher::~FeedWatcher() = default;

std::optional<uint64_t> FeedWatcher::last_seq(const std::string& item) const {
  auto it = last_seen_.find(item);
  if (it == last_seen_.end()) return std::nullopt;
  return it->second;
}

void FeedWatcher::accept_live(Event ev) {
  auto it = last_seen_.find(ev.item);
  if (it == last_seen_.end()) {
    // First event of this item: it sets the baseline.
    uint64_t base = ev.seq > 0 ? ev.seq - 1 : 0;
    if (options_.late_join && client_) {
      ++stats_.late_join_gets;
      Request get;
      get.op = Op::get;
      get.item = ev.item;
      auto reply = client_->call(get);
      std::optional<uint64_t> state_seq;
      if (reply && reply->ok) state_seq = reply->u64("seq");
      if (state_seq) {
        if (options_.on_state) options_.on_state(*reply);
        base = *state_seq;
      } else {
        ++stats_.late_join_failures;
      }
      if (ev.seq <= base) {
        last_seen_.emplace(ev.item, base);
        ++stats_.late_join_dropped;
        return;
      }
    }
    it = last_seen_.emplace(ev.item, base).first;
  }
  const uint64_t last = it->second;
  if (ev.seq <= last) {
    ++stats_.duplicates;
    return;
  }
  if (ev.seq > last + 1) {
    ++stats_.gaps_detected;
    Repair r;
    r.item = ev.item;
    r.after = last;
    r.trigger = std::move(ev);
    repair_ = std::move(r);
    return;
  }
  ready_.emplace_back(std::move(ev), false);
}

void FeedWatcher::repair_step() {
  Repair& r = *repair_;
  const uint64_t want_last = r.trigger.seq - 1;
  bool progressed = false;
  if (client_ && r.after < want_last && r.fetched < options_.max_repair_events) {
    Request h;
    h.op = Op::history;
    h.item = r.item;
    h.after = r.after;
    h.limit = std::min<uint64_t>({kMaxHistoryLimit, want_last - r.after, options_.max_repair_events - r.fetched});
    auto reply = client_->call(h);
    if (reply && reply->ok) {
      for (auto& ev : reply->events) {
        if (ev.item != r.item || ev.seq <= r.after || ev.seq > want_last) continue;
        r.after = ev.seq;
        ++r.fetched;
        progressed = true;
        ready_.emplace_back(std::move(ev), true);
      }
    }
  }
  if (progressed && r.after < want_last && r.fetched < options_.max_repair_events) return;  // more pages
  if (r.after >= want_last) {
    ++stats_.gaps_repaired;
  } else {
    stats_.events_lost += want_last - r.after;
  }
  ready_.emplace_back(std::move(r.trigger), false);
  repair_.reset();
}

std::optional<Event> FeedWatcher::next(std::chrono::milliseconds timeout) {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + timeout;
  // Bounded: each turn either hands out an event, makes a repair step (which ends the repair or
  // adds events), reads one message, or waits until the deadline.
  uint64_t reads = 0;
  for (;;) {
    if (!ready_.empty()) {
      auto [ev, repaired] = std::move(ready_.front());
      ready_.pop_front();
      auto& last = last_seen_[ev.item];
      if (ev.seq <= last) {  // cannot happen by construction; kept as the rule's last guard
        ++stats_.duplicates;
        continue;
      }
      last = ev.seq;
      last_repaired_ = repaired;
      ++stats_.delivered;
      if (repaired) ++stats_.events_repaired;
      return std::move(ev);
    }
    if (repair_) {
      repair_step();
      continue;
    }
    // Only dropped messages (duplicates, malformed) since the deadline: give the caller its turn.
    if (clock::now() >= deadline && reads > 0) return std::nullopt;
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
    zmq::pollitem_t items[] = {{sub_->handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, left.count() > 0 ? left : std::chrono::milliseconds(0));
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return std::nullopt;  // let the caller look at its stop flag
      throw;
    }
    if (!(items[0].revents & ZMQ_POLLIN)) {
      if (clock::now() >= deadline) return std::nullopt;
      continue;
    }
    std::vector<zmq::message_t> parts;
    try {
      if (!zmq::recv_multipart(*sub_, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) return std::nullopt;
      if (e.num() == EAGAIN) continue;
      throw;
    }
    ++stats_.received;
    ++reads;
    if (parts.size() != 2) {
      ++stats_.malformed;
      continue;
    }
    auto ev = decode_event(parts[1].to_string_view());
    if (!ev || parts[0].to_string_view() != feed_topic(ev->item)) {
      ++stats_.malformed;
      continue;
    }
    accept_live(std::move(*ev));
  }
}

std::string format_event(const Event& e) {
  std::string s = "item " + e.item + " seq " + std::to_string(e.seq) + " ";
  switch (e.kind) {
    case EventKind::open:
      s += "open";
      break;
    case EventKind::max:
      s += "max " + (e.amount ? std::to_string(*e.amount) : std::string("?")) + " by " +
           e.bidder.value_or("?");
      break;
    case EventKind::closed:
      if (e.bidder && e.amount)
        s += "closed: won by " + *e.bidder + " at " + std::to_string(*e.amount);
      else if (e.reserve_met == false)
        s += "closed: reserve not met, no winner";
      else
        s += "closed: no bids";
      break;
    case EventKind::extended:
      s += "extended: closes at " + (e.closes_at ? std::to_string(*e.closes_at) : std::string("?")) + " (unix ms)";
      break;
  }
  return s;
}

}  // namespace bidmesh
