#include "nodes/feed.h"

#include <cstdint>
#include <cstring>
#include <string_view>
#include <utility>
#include <vector>

#include "nodes/connection_counter.h"
#include "nodes/feed_access.h"
#include "protocol/log.h"

namespace bidmesh {

namespace {
// The owner's commands on the steering PAIR (the names libzmq's steerable proxy used).
constexpr std::string_view kTerminate = "TERMINATE";
// ... answered with one frame: the events taken from the bid nodes, a uint64 in host order.
constexpr std::string_view kStatistics = "STATISTICS";
// The longest the loop waits for its sockets: refusals are logged on time with no traffic.
constexpr long kPollMs = 1000;
constexpr std::chrono::seconds kRefusalLogEvery{1};
// A refused prefix is quoted in the log only this far, non-printable bytes as '?'.
constexpr std::size_t kLoggedPrefixBytes = 80;

std::string_view view(const zmq::message_t& m) { return {static_cast<const char*>(m.data()), m.size()}; }

std::string printable(std::string_view bytes) {
  std::string out(bytes.substr(0, kLoggedPrefixBytes));
  for (char& c : out)
    if (c < 0x20 || c > 0x7e) c = '?';
  if (bytes.size() > kLoggedPrefixBytes) out += "...";
  return out;
}
}  // namespace

// The forwarder's thread: the poll loop over the steering PAIR, the XSUB and the XPUB.
class FeedForwarder::Loop {
 public:
  Loop(FeedForwarder& owner, zmq::socket_t& xsub, zmq::socket_t& xpub, zmq::socket_t& control)
      : owner_(owner),
        options_(owner.options_),
        xsub_(xsub),
        xpub_(xpub),
        control_(control),
        vetting_(static_cast<bool>(options_.allowed_clients)),
        ledger_(options_.max_tracked_subscriptions) {}

  // Returns on TERMINATE; throws zmq::error_t when a socket fails.
  void run() {
    zmq::pollitem_t items[] = {{control_.handle(), 0, ZMQ_POLLIN, 0},
                               {xsub_.handle(), 0, ZMQ_POLLIN, 0},
                               {xpub_.handle(), 0, ZMQ_POLLIN, 0}};
    for (;;) {
      if (zmq_poll(items, 3, kPollMs) < 0) {
        if (zmq_errno() == EINTR) continue;
        throw zmq::error_t();
      }
      if ((items[0].revents & ZMQ_POLLIN) != 0 && !steer()) return;
      // Subscriptions first: libzmq 4.3.4 (Debian 12) lets ZMQ_SUBSCRIBE in XPUB_MANUAL reach a
      // connection that closed after its message was queued (fixed in 4.3.5, "XPUB socket allows
      // manual subscription on terminated pipe"). Closings are processed only inside calls on
      // the XPUB (poll, and sends while forwarding), so reading the queue before any send keeps
      // that window as small as it can be from here.
      if ((items[2].revents & ZMQ_POLLIN) != 0) take_subscriptions();
      if ((items[1].revents & ZMQ_POLLIN) != 0) forward_events();
      if (refused_unlogged_ > 0) log_refusals();
    }
  }

 private:
  // One steering command; false for TERMINATE.
  bool steer() {
    while (control_.recv(msg_, zmq::recv_flags::dontwait)) {
      if (view(msg_) == kTerminate) return false;
      if (view(msg_) == kStatistics) (void)control_.send(zmq::buffer(&events_, sizeof events_), zmq::send_flags::dontwait);
    }
    return true;
  }

  // Up to `burst` events, each passed whole (the frames after the first are already here).
  void forward_events() {
    for (int n = 0; n < options_.burst; ++n) {
      if (!xsub_.recv(msg_, zmq::recv_flags::dontwait)) return;
      ++events_;
      for (;;) {
        const bool more = msg_.more();
        // XPUB drops for a subscriber past its high-water mark (xpub_nodrop off): never blocks.
        xpub_.send(msg_, more ? zmq::send_flags::sndmore : zmq::send_flags::none);
        if (!more) break;
        (void)xsub_.recv(msg_);
      }
    }
  }

  void take_subscriptions() {
    for (int n = 0; n < options_.burst; ++n) {
      if (!xpub_.recv(msg_, zmq::recv_flags::dontwait)) return;
      if (vetting_) {
        vet();
      } else {
        // As the proxy did: every frame upstream unchanged (XPUB has already merged duplicates).
        xsub_.send(msg_, msg_.more() ? zmq::send_flags::sndmore : zmq::send_flags::none);
      }
    }
  }

  // One message read from the XPUB in manual mode: a subscription (first byte 1), an
  // unsubscribe (0), or anything else a peer sent, which is dropped.
  void vet() {
    const std::string_view body = view(msg_);
    if (body.empty() || (body[0] != 0 && body[0] != 1)) {
      // libzmq queues such a message without the connection it came from, so until its queue is
      // empty the next subscriptions may be applied to another connection than their sender's:
      // those are refused rather than risked.
      unattributed_ = true;
      return;
    }
    const bool subscribe = body[0] == 1;
    const std::string_view requested = body.substr(1);
    const char* key = zmq_msg_gets(msg_.handle(), "User-Id");
    if (!subscribe && key == nullptr) {
      // libzmq's unsubscribe for a connection that closed (its own trie already dropped it).
      ledger_.remove_unknown(requested, upstream_);
      send_upstream(false);
      return;
    }
    const std::shared_ptr<const AllowList> clients = options_.allowed_clients();
    const Principal* who = key != nullptr && clients ? clients->find(key) : nullptr;
    std::vector<std::string> granted = grant_feed_prefixes(requested, who);
    if (subscribe) {
      if (unattributed_) granted.clear();
      if (!ledger_.add(requested, granted)) granted.clear();
      // With XPUB_MANUAL these apply to the connection whose message was read last: this one.
      for (const std::string& prefix : granted) xpub_.set(zmq::sockopt::subscribe, prefix);
      upstream_ = std::move(granted);
      if (upstream_.empty()) refuse(who, requested);
      send_upstream(true);
    } else {
      if (!unattributed_) {
        // Whatever `requested` may have been granted on this connection (as asked, or narrowed).
        xpub_.set(zmq::sockopt::unsubscribe, requested);
        for (const std::string& prefix : granted)
          if (prefix != requested) xpub_.set(zmq::sockopt::unsubscribe, prefix);
      }
      ledger_.remove(requested, granted, upstream_);
      send_upstream(false);
    }
    // Attribution is right again once libzmq's queue is empty (checked only after the
    // ZMQ_(UN)SUBSCRIBE calls above: the check processes libzmq's commands, closings too).
    if (unattributed_ && !has_pending_input()) unattributed_ = false;
  }

  // Sends upstream_ to the bid nodes as (un)subscriptions; the XSUB counts references.
  void send_upstream(bool subscribe) {
    for (const std::string& prefix : upstream_) {
      frame_.assign(1, subscribe ? '\1' : '\0');
      frame_ += prefix;
      xsub_.send(zmq::buffer(frame_), zmq::send_flags::dontwait);
    }
    upstream_.clear();
  }

  bool has_pending_input() { return (xpub_.get(zmq::sockopt::events) & ZMQ_POLLIN) != 0; }

  void refuse(const Principal* who, std::string_view requested) {
    owner_.refused_.fetch_add(1, std::memory_order_relaxed);
    if (options_.refused_metric != nullptr) options_.refused_metric->Increment();
    if (refused_unlogged_++ == 0) {
      refused_example_ = (who != nullptr ? "key of '" + who->name + "'" : std::string("a nameless key")) + " asked for '" +
                         printable(requested) + "'";
    }
  }

  // At most one line a second, however many subscriptions are refused.
  void log_refusals() {
    const auto now = std::chrono::steady_clock::now();
    if (now < next_log_) return;
    next_log_ = now + kRefusalLogEvery;
    log_event(LogLevel::warning, "feed",
              "refused " + std::to_string(refused_unlogged_) +
                  " feed subscription(s) (a bidder/ topic not the key's own, or the forwarder could not vet it); e.g. " +
                  refused_example_,
              {{"refused", refused_unlogged_}});
    refused_unlogged_ = 0;
  }

  FeedForwarder& owner_;
  const FeedOptions& options_;
  zmq::socket_t& xsub_;
  zmq::socket_t& xpub_;
  zmq::socket_t& control_;
  const bool vetting_;
  FeedSubscriptionLedger ledger_;
  zmq::message_t msg_;                // reused for every frame: no allocation per event
  uint64_t events_ = 0;
  bool unattributed_ = false;         // a non-subscription message was read, see vet()
  std::vector<std::string> upstream_;
  std::string frame_;
  uint64_t refused_unlogged_ = 0;
  std::string refused_example_;
  std::chrono::steady_clock::time_point next_log_{};
};

FeedForwarder::FeedForwarder(zmq::context_t& ctx, std::string collect_endpoint, std::string publish_endpoint,
                             FeedOptions options)
    : ctx_(ctx),
      collect_endpoint_(std::move(collect_endpoint)),
      publish_endpoint_(std::move(publish_endpoint)),
      options_(options),
      control_endpoint_("inproc://bidmesh-feed-control-" +
                        std::to_string(reinterpret_cast<std::uintptr_t>(this))) {}

FeedForwarder::~FeedForwarder() { stop(); }

std::optional<std::string> FeedForwarder::start() {
  // Bound before the thread connects, so the steering pipe exists as soon as the loop runs.
  control_ = zmq::socket_t(ctx_, zmq::socket_type::pair);
  control_.set(zmq::sockopt::linger, 0);
  control_.bind(control_endpoint_);

  std::promise<std::optional<std::string>> bound;
  std::future<std::optional<std::string>> result = bound.get_future();
  thread_ = std::thread(&FeedForwarder::thread_main, this, &bound);
  std::optional<std::string> error = result.get();
  if (error) {
    thread_.join();  // the thread ends right after reporting a bind failure
    control_.close();
  }
  return error;
}

void FeedForwarder::stop() {
  if (!thread_.joinable()) return;
  // Fails only when the loop has already ended (failure): then there is nothing to stop.
  (void)control_.send(zmq::buffer(kTerminate), zmq::send_flags::dontwait);
  thread_.join();
  control_.close();
}

std::optional<uint64_t> FeedForwarder::forwarded_events(std::chrono::milliseconds timeout) {
  zmq::message_t frame;
  while (control_.recv(frame, zmq::recv_flags::dontwait)) {
  }  // a late answer to an earlier call
  if (!control_.send(zmq::buffer(kStatistics), zmq::send_flags::dontwait)) return std::nullopt;
  zmq::pollitem_t item{control_.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) == 0 || !control_.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
  if (frame.size() != sizeof(uint64_t)) return std::nullopt;
  uint64_t events;
  std::memcpy(&events, frame.data(), sizeof events);
  return events;
}

std::optional<std::string> FeedForwarder::failure() const {
  std::lock_guard<std::mutex> lock(mu_);
  return failure_;
}

void FeedForwarder::set_failure(std::string reason) {
  std::lock_guard<std::mutex> lock(mu_);
  failure_ = std::move(reason);
  failed_.store(true, std::memory_order_release);
}

// REQUIRES: `bound` is set exactly once; it belongs to start(), which returns once it is set, so
// it is not touched after.
void FeedForwarder::thread_main(std::promise<std::optional<std::string>>* bound) {
  zmq::socket_t xsub;
  zmq::socket_t xpub;
  zmq::socket_t control;
  try {
    xsub = zmq::socket_t(ctx_, zmq::socket_type::xsub);
    xsub.set(zmq::sockopt::rcvhwm, options_.collect_hwm);
    xsub.set(zmq::sockopt::linger, 0);

    xpub = zmq::socket_t(ctx_, zmq::socket_type::xpub);
    // A slow subscriber loses events past its high-water mark (xpub_nodrop stays off): the loop
    // never blocks on it, so neither the bid nodes nor other subscribers notice.
    xpub.set(zmq::sockopt::sndhwm, options_.subscriber_hwm);
    xpub.set(zmq::sockopt::xpub_nodrop, false);
    xpub.set(zmq::sockopt::maxmsgsize, options_.max_subscription_bytes);
    xpub.set(zmq::sockopt::linger, 0);
    // Vetting: subscriptions come to the loop, which applies what each key may have.
    if (options_.allowed_clients) xpub.set(zmq::sockopt::xpub_manual, true);
    // Peers reach both sockets: dead ones are found by heartbeats, stalled handshakes end.
    for (zmq::socket_t* s : {&xsub, &xpub}) {
      s->set(zmq::sockopt::handshake_ivl, options_.handshake_timeout_ms);
      s->set(zmq::sockopt::heartbeat_ivl, options_.heartbeat_interval_ms);
      s->set(zmq::sockopt::heartbeat_timeout, options_.heartbeat_timeout_ms);
      s->set(zmq::sockopt::heartbeat_ttl, options_.heartbeat_timeout_ms);
    }
    // Events are one topic and one small map; a bid node never sends anything near this.
    xsub.set(zmq::sockopt::maxmsgsize, options_.max_event_bytes);
    if (options_.secure_collect) options_.secure_collect(xsub);
    if (options_.secure_publish) options_.secure_publish(xpub);

    control = zmq::socket_t(ctx_, zmq::socket_type::pair);
    control.set(zmq::sockopt::linger, 0);
    control.connect(control_endpoint_);
  } catch (const zmq::error_t& e) {
    bound->set_value(std::string("cannot set up the feed sockets: ") + e.what());
    return;
  }
  try {
    xsub.bind(collect_endpoint_);
  } catch (const zmq::error_t& e) {
    bound->set_value("cannot bind feed collect endpoint " + collect_endpoint_ + ": " + e.what());
    return;
  }
  try {
    xpub.bind(publish_endpoint_);
  } catch (const zmq::error_t& e) {
    bound->set_value("cannot bind feed publish endpoint " + publish_endpoint_ + ": " + e.what());
    return;
  }
  try {
    subscriber_monitor_ = ConnectionCounter::start_monitor(xpub);
  } catch (const zmq::error_t& e) {
    bound->set_value(std::string("cannot monitor the feed's subscribers: ") + e.what());
    return;
  }
  bound->set_value(std::nullopt);

  try {
    // Returns when the owner sends TERMINATE on the control socket.
    Loop(*this, xsub, xpub, control).run();
  } catch (const zmq::error_t& e) {
    set_failure(std::string("feed forwarder stopped: ") + e.what());
  }
}

}  // namespace bidmesh
