// ConnectionCounter: the open connections of a bound ZeroMQ socket, as a gauge, from libzmq's
// socket monitor (ZMQ_EVENT_ACCEPTED and ZMQ_EVENT_DISCONNECTED, matched by file descriptor).
// A connection counts from its accept until it ends, handshake or not.
//
// libzmq drops monitor events when the monitor's queue (its default high-water mark, 1000) is
// full; poll() on every loop turn keeps it from filling, and a disconnect of a connection not
// seen accepted is ignored, so the gauge never goes below zero.
//
// Threads: start_monitor() on the thread that owns the monitored socket; the counter (its
// constructor and poll()) on one thread, which may be another one.
#pragma once

#include <string>
#include <unordered_set>

#include <prometheus/gauge.h>
#include <zmq.hpp>

namespace bidmesh {

class ConnectionCounter {
 public:
  // Starts libzmq's monitor of `socket` on a fresh inproc endpoint and returns it.
  // Throws zmq::error_t when libzmq refuses.
  static std::string start_monitor(zmq::socket_t& socket);

  // Connects to the endpoint start_monitor() returned. REQUIRES: ctx is the socket's context.
  ConnectionCounter(zmq::context_t& ctx, const std::string& endpoint, prometheus::Gauge& gauge);
  ConnectionCounter(const ConnectionCounter&) = delete;
  ConnectionCounter& operator=(const ConnectionCounter&) = delete;

  // Reads the events waiting (at most kMaxEventsPerPoll, without blocking) into the gauge.
  void poll();

 private:
  static constexpr int kMaxEventsPerPoll = 1000;
  zmq::socket_t monitor_;
  prometheus::Gauge& gauge_;
  std::unordered_set<int> open_;   // descriptors of the open connections
};

}  // namespace bidmesh
