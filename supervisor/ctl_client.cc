#include "supervisor/ctl_client.h"

#include <cstring>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

namespace bidmesh {

bool control_endpoint_listening(const std::string& endpoint) {
  const std::string prefix = "ipc://";
  if (endpoint.rfind(prefix, 0) != 0) return true;
  const std::string path = endpoint.substr(prefix.size());
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (path.size() >= sizeof addr.sun_path) return true;  // let the request tell
  std::memcpy(addr.sun_path, path.data(), path.size());
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return true;
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

CtlClient::CtlClient(zmq::context_t& ctx, std::string endpoint, std::chrono::milliseconds timeout)
    : endpoint_(std::move(endpoint)), timeout_(timeout), socket_(ctx, zmq::socket_type::dealer) {
  socket_.set(zmq::sockopt::linger, 0);
  socket_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kMaxControlFrameBytes));
  socket_.connect(endpoint_);
}

std::optional<CtlReply> CtlClient::call(const CtlRequest& request, std::string& error) {
  const std::string body = encode_ctl_request(request);
  if (!socket_.send(zmq::buffer(body), zmq::send_flags::dontwait)) {
    error = "cannot send to " + endpoint_;
    return std::nullopt;
  }
  const auto deadline = std::chrono::steady_clock::now() + timeout_;
  while (true) {
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      error = "no reply from " + endpoint_ + " within " + std::to_string(timeout_.count()) + " ms";
      return std::nullopt;
    }
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, left);
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
      continue;
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    zmq::message_t msg;
    if (!socket_.recv(msg, zmq::recv_flags::dontwait)) continue;
    bool more = msg.more();
    while (more) {  // a reply is one frame; drain anything else
      zmq::message_t extra;
      if (!socket_.recv(extra, zmq::recv_flags::dontwait)) break;
      more = extra.more();
    }
    auto reply = decode_ctl_reply(msg.to_string_view());
    if (!reply) {
      error = "malformed reply from " + endpoint_;
      return std::nullopt;
    }
    return reply;
  }
}

}  // namespace bidmesh
