// The CLI's side of the control endpoint: one DEALER, one request at a time, each with a
// deadline (a DEALER, not a REQ, so a lost reply never wedges the socket; a late reply to an
// earlier request is told apart by being unexpected and dropped: requests are sequential).
// Thread-compatible: one thread. The context must outlive the client.
#pragma once

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include <zmq.hpp>

#include "supervisor/control_wire.h"

namespace bidmesh {

// For an ipc:// endpoint, whether a process accepts connections on it now: false at once when
// the socket file is missing or nobody listens (e.g. the supervisor was killed), so the CLI
// need not wait for its timeout. True for other transports (only a request can tell).
bool control_endpoint_listening(const std::string& endpoint);

class CtlClient {
 public:
  CtlClient(zmq::context_t& ctx, std::string endpoint, std::chrono::milliseconds timeout);
  CtlClient(const CtlClient&) = delete;
  CtlClient& operator=(const CtlClient&) = delete;

  // Sends `request` and waits for the reply. nullopt when no well-formed reply came within
  // the timeout (`error` says which).
  std::optional<CtlReply> call(const CtlRequest& request, std::string& error);
  const std::string& endpoint() const { return endpoint_; }

 private:
  const std::string endpoint_;
  const std::chrono::milliseconds timeout_;
  zmq::socket_t socket_;
};

}  // namespace bidmesh
