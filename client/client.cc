// Client: Lazy Pirate over one REQ socket (see client.h).
#include "client/client.h"

#include <algorithm>
#include <thread>
#include <utility>

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <random>
#include <vector>

namespace bidmesh {

std::string make_client_id_prefix() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0 || host[0] == '\0') std::snprintf(host, sizeof host, "host");
  std::string h(host);
  if (h.size() > 20) h.resize(20);
  std::random_device rd;
  char tail[40];
  std::snprintf(tail, sizeof tail, "-%ld-%08x", static_cast<long>(getpid()), static_cast<unsigned>(rd()));
  return h + tail;
}

Client::Client(zmq::context_t& ctx, std::string endpoint, int timeout_ms, int retries, std::string id_prefix,
               std::optional<CurveKeys> curve)
    : ctx_(ctx),
      endpoint_(std::move(endpoint)),
      timeout_ms_(timeout_ms > 0 ? timeout_ms : 1),
      retries_(retries >= 0 ? retries : 0),
      id_prefix_(id_prefix.empty() ? make_client_id_prefix() : std::move(id_prefix)),
      curve_(std::move(curve)) {
  open_socket();
}

Client::~Client() = default;

void Client::open_socket() {
  socket_.reset();  // close first: linger 0 drops whatever the old socket still held
  socket_ = std::make_unique<zmq::socket_t>(ctx_, zmq::socket_type::req);
  socket_->set(zmq::sockopt::linger, 0);
  socket_->set(zmq::sockopt::maxmsgsize, kClientMaxReplyBytes);
  if (curve_) apply_curve_keys(*socket_, *curve_);
  socket_->connect(endpoint_);
}

namespace {
// True for a reply whose error the contract calls safe to retry with the same id.
bool is_retryable(std::string_view frame) {
  const auto reply = decode_reply(frame);
  return reply && !reply->ok &&
         (reply->error == error_code_name(ErrorCode::unavailable) || reply->error == error_code_name(ErrorCode::internal));
}
}  // namespace

std::string Client::next_id() { return id_prefix_ + "-" + std::to_string(++counter_); }

std::optional<std::string> Client::await_reply() {
  using clock = std::chrono::steady_clock;
  const auto deadline = clock::now() + std::chrono::milliseconds(timeout_ms_);
  for (;;) {
    const auto left = std::chrono::ceil<std::chrono::milliseconds>(deadline - clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t items[] = {{socket_->handle(), 0, ZMQ_POLLIN, 0}};
    try {
      zmq::poll(items, 1, left);
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR) continue;  // a signal: go on until the deadline
      throw;
    }
    if (!(items[0].revents & ZMQ_POLLIN)) continue;
    std::vector<zmq::message_t> parts;
    try {
      if (!zmq::recv_multipart(*socket_, std::back_inserter(parts), zmq::recv_flags::dontwait)) continue;
    } catch (const zmq::error_t& e) {
      if (e.num() == EINTR || e.num() == EAGAIN) continue;
      throw;
    }
    if (!parts.empty()) return parts.front().to_string();
  }
}

std::optional<std::string> Client::call_raw(std::string_view frame) {
  using clock = std::chrono::steady_clock;
  const auto first_send = clock::now();
  last_attempts_ = 0;
  std::optional<std::string> retryable;  // the last `unavailable`/`internal` reply of this call
  for (int attempt = 0; attempt <= retries_; ++attempt) {
    // A REQ socket that lost its reply is stuck: replace it (not after a reply came back), also
    // when the try that lost it was the last one of the previous call.
    if (socket_stuck_) {
      open_socket();
      socket_stuck_ = false;
    }
    ++last_attempts_;
    // REQ queues the frame on the (possibly still connecting) pipe; dontwait so that a socket
    // with no pipe at all cannot block us: the try then simply times out.
    try {
      (void)socket_->send(zmq::buffer(frame.data(), frame.size()), zmq::send_flags::dontwait);
    } catch (const zmq::error_t&) {
      retryable.reset();
      socket_stuck_ = true;
      continue;  // EFSM/ETERM and the like: reopen and try again
    }
    std::optional<std::string> reply = await_reply();
    if (!reply) {
      retryable.reset();
      socket_stuck_ = true;
      continue;
    }
    last_elapsed_ = std::chrono::duration_cast<std::chrono::microseconds>(clock::now() - first_send);
    if (attempt < retries_ && is_retryable(*reply)) {
      // Safe to retry with the same id: back off, then resend on the same (ready) socket.
      std::this_thread::sleep_for(std::min(kRetryBackoffFirst * (1 << std::min(attempt, 6)), kRetryBackoffMax));
      retryable = std::move(reply);
      continue;
    }
    return reply;
  }
  // Out of tries: the last retryable reply if the last try got one, else nothing.
  return retryable;
}

std::optional<Reply> Client::call(const Request& request) {
  std::string frame;
  if (request.id.empty()) {
    Request r = request;
    r.id = next_id();
    last_id_ = r.id;
    frame = encode_request(r);
  } else {
    last_id_ = request.id;
    frame = encode_request(request);
  }
  auto raw = call_raw(frame);
  if (!raw) return std::nullopt;
  return decode_reply_or_bad(*raw);
}

Reply decode_reply_or_bad(std::string_view raw) {
  if (auto reply = decode_reply(raw)) return *reply;
  Reply bad;
  bad.ok = false;
  bad.error = std::string(kClientBadReply);
  bad.message = "the reply (" + std::to_string(raw.size()) + " bytes) is not a MessagePack map of the contract";
  return bad;
}

}  // namespace bidmesh
