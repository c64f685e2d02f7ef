#include "nodes/feed.h"

#include <cstdint>
#include <cstring>
#include <utility>

#include "nodes/connection_counter.h"

namespace bidmesh {

namespace {
// The proxy's command to return (libzmq zmq_proxy_steerable).
constexpr std::string_view kTerminate = "TERMINATE";
// ... and to answer with its counters: 8 frames of uint64 (frontend messages and bytes in and
// out, then the backend's); the frontend is the XSUB, so its first is the events taken in.
constexpr std::string_view kStatistics = "STATISTICS";
constexpr int kStatisticsFrames = 8;
}  // namespace

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
  // Bound before the thread connects, so the steering pipe exists as soon as the proxy runs.
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
  // Fails only when the proxy has already ended (failure): then there is nothing to stop.
  (void)control_.send(zmq::buffer(kTerminate), zmq::send_flags::dontwait);
  thread_.join();
  control_.close();
}

std::optional<uint64_t> FeedForwarder::forwarded_events(std::chrono::milliseconds timeout) {
  zmq::message_t frame;
  while (control_.recv(frame, zmq::recv_flags::dontwait)) {
  }  // a late answer to an earlier call
  if (!control_.send(zmq::buffer(kStatistics), zmq::send_flags::dontwait)) return std::nullopt;
  std::optional<uint64_t> events;
  for (int i = 0; i < kStatisticsFrames; ++i) {
    zmq::pollitem_t item{control_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, timeout) == 0 || !control_.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
    if (i == 0 && frame.size() == sizeof(uint64_t)) {
      uint64_t v;
      std::memcpy(&v, frame.data(), sizeof v);
      events = v;
    }
  }
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
    // A slow subscriber loses events past its high-water mark (xpub_nodrop stays off): the proxy
    // never blocks on it, so neither the bid nodes nor other subscribers notice.
    xpub.set(zmq::sockopt::sndhwm, options_.subscriber_hwm);
    xpub.set(zmq::sockopt::xpub_nodrop, false);
    xpub.set(zmq::sockopt::maxmsgsize, options_.max_subscription_bytes);
    xpub.set(zmq::sockopt::linger, 0);
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
    zmq::proxy_steerable(xsub, xpub, zmq::socket_ref(), control);
  } catch (const zmq::error_t& e) {
    set_failure(std::string("feed forwarder stopped: ") + e.what());
  }
}

}  // namespace bidmesh
