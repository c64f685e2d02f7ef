#include "nodes/connection_counter.h"

#include <atomic>
#include <cstdint>
#include <cstring>

namespace bidmesh {

std::string ConnectionCounter::start_monitor(zmq::socket_t& socket) {
  static std::atomic<uint64_t> next{0};
  const std::string endpoint = "inproc://bidmesh-connections-" + std::to_string(next.fetch_add(1));
  if (zmq_socket_monitor(socket.handle(), endpoint.c_str(), ZMQ_EVENT_ACCEPTED | ZMQ_EVENT_DISCONNECTED) != 0)
    throw zmq::error_t();
  return endpoint;
}

ConnectionCounter::ConnectionCounter(zmq::context_t& ctx, const std::string& endpoint, prometheus::Gauge& gauge)
    : monitor_(ctx, zmq::socket_type::pair), gauge_(gauge) {
  monitor_.set(zmq::sockopt::linger, 0);
  monitor_.connect(endpoint);
}

void ConnectionCounter::poll() {
  // An event is two frames: 6 bytes (uint16 event, uint32 value: the descriptor, host order),
  // then the endpoint.
  zmq::message_t event, address;
  for (int i = 0; i < kMaxEventsPerPoll; ++i) {
    if (!monitor_.recv(event, zmq::recv_flags::dontwait)) break;
    if (event.more()) (void)monitor_.recv(address, zmq::recv_flags::dontwait);
    if (event.size() < 6) continue;
    uint16_t id;
    uint32_t fd;
    std::memcpy(&id, event.data(), sizeof id);
    std::memcpy(&fd, static_cast<const char*>(event.data()) + 2, sizeof fd);
    if (id == ZMQ_EVENT_ACCEPTED) open_.insert(static_cast<int>(fd));
    else if (id == ZMQ_EVENT_DISCONNECTED) open_.erase(static_cast<int>(fd));
  }
  gauge_.Set(static_cast<double>(open_.size()));
}

}  // namespace bidmesh
