#include "security/zap.h"

#include <chrono>
#include <iterator>
#include <utility>

#include <zmq_addon.hpp>

#include "security/keys.h"

namespace bidmesh {

namespace {

// ZMQ_ZAP_ENFORCE_DOMAIN is declared only under ZMQ_BUILD_DRAFT_API, but Debian 12's libzmq
// 4.3.4 honours it (a CURVE server with it refuses every peer while no ZAP handler is bound;
// tests/unit/security_test.cc checks that). Its number is fixed in zmq.h.
constexpr int kZapEnforceDomain = 93;

constexpr std::chrono::milliseconds kPollStep{100};

std::string_view view(const zmq::message_t& m) { return {static_cast<const char*>(m.data()), m.size()}; }

}  // namespace

ZapHandler::ZapHandler(zmq::context_t& ctx, std::string mesh_public_key_z85, bool feed_public)
    : ctx_(ctx),
      mesh_public_key_z85_(std::move(mesh_public_key_z85)),
      feed_public_(feed_public),
      list_(std::make_shared<const AllowList>()) {}

ZapHandler::~ZapHandler() { stop(); }

std::optional<std::string> ZapHandler::start() {
  if (thread_.joinable()) return std::nullopt;
  if (!mesh_public_key_z85_.empty()) {
    auto key = z85_key_to_binary(mesh_public_key_z85_);
    if (!key) return "the mesh public key is not a key of 40 Z85 characters";
    mesh_key_ = std::move(*key);
  }
  zmq::socket_t socket(ctx_, zmq::socket_type::rep);
  socket.set(zmq::sockopt::linger, 0);
  try {
    socket.bind(kZapEndpoint);
  } catch (const zmq::error_t& e) {
    return std::string("cannot bind the ZAP handler at ") + kZapEndpoint + ": " + e.what() +
           (e.num() == EADDRINUSE ? " (another handler runs in this context)" : "");
  }
  stopping_.store(false);
  // The socket moves to the thread; starting a thread is the full memory barrier libzmq
  // requires when a socket changes threads.
  thread_ = std::thread(&ZapHandler::run, this, std::move(socket));
  return std::nullopt;
}

void ZapHandler::stop() {
  if (!thread_.joinable()) return;
  stopping_.store(true);
  thread_.join();
}

void ZapHandler::set_allow_list(std::shared_ptr<const AllowList> list) {
  if (!list) list = std::make_shared<const AllowList>();
  std::lock_guard lock(list_mu_);
  list_ = std::move(list);
}

std::shared_ptr<const AllowList> ZapHandler::allow_list() const {
  std::lock_guard lock(list_mu_);
  return list_;
}

void ZapHandler::run(zmq::socket_t socket) {
  while (!stopping_.load()) {
    try {
      std::vector<zmq::pollitem_t> items{{socket.handle(), 0, ZMQ_POLLIN, 0}};
      zmq::poll(items, kPollStep);
      if ((items[0].revents & ZMQ_POLLIN) == 0) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(socket, std::back_inserter(request), zmq::recv_flags::dontwait)) continue;
      // REP answers over libzmq's router logic: a reply for a peer that is gone, or whose pipe
      // is full, is dropped rather than blocking, so dontwait never leaves the REP stuck.
      zmq::send_multipart(socket, answer(request), zmq::send_flags::dontwait);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) break;  // the context is closing: nothing left to judge
      // EINTR from poll: try again.
    }
  }
  // The socket closes here (linger 0), which unbinds the ZAP endpoint.
}

std::vector<zmq::message_t> ZapHandler::answer(const std::vector<zmq::message_t>& request) {
  // Request (RFC 27): version, request id, domain, address, routing id, mechanism, credentials.
  const auto reply = [&request](std::string_view code, std::string_view text, std::string_view user) {
    std::vector<zmq::message_t> out;
    out.emplace_back(std::string_view("1.0"));
    out.emplace_back(request.size() > 1 ? view(request[1]) : std::string_view());
    out.emplace_back(code);
    out.emplace_back(text);
    out.emplace_back(user);
    out.emplace_back();  // metadata: none
    return out;
  };
  if (request.size() < 6 || view(request[0]) != "1.0") {
    refused_.fetch_add(1, std::memory_order_relaxed);
    return reply("500", "not a ZAP 1.0 request", "");
  }
  const std::string_view domain = view(request[2]);
  const bool curve = view(request[5]) == "CURVE" && request.size() == 7 && request[6].size() == kCurveKeyBytes;
  std::optional<std::string> key_z85 = curve ? binary_key_to_z85(view(request[6])) : std::nullopt;
  const auto allow = [&](std::string_view user) {
    allowed_.fetch_add(1, std::memory_order_relaxed);
    return reply("200", "OK", user);
  };
  if (key_z85) {
    if (domain == kZapDomainMesh) {
      if (!mesh_key_.empty() && view(request[6]) == mesh_key_) return allow(kMeshUserId);
    } else if (domain == kZapDomainClients || domain == kZapDomainFeed) {
      if ((domain == kZapDomainFeed && feed_public_) || allow_list()->find(*key_z85) != nullptr) return allow(*key_z85);
    }
  }
  refused_.fetch_add(1, std::memory_order_relaxed);
  return reply("400", key_z85 ? "key not allowed" : "CURVE required", "");
}

void make_curve_server(zmq::socket_t& socket, const Certificate& server_secret, std::string_view domain) {
  socket.set(zmq::sockopt::curve_server, true);
  socket.set(zmq::sockopt::curve_secretkey, server_secret.secret_key);
  socket.set(zmq::sockopt::zap_domain, domain);
  const int on = 1;
  if (zmq_setsockopt(socket.handle(), kZapEnforceDomain, &on, sizeof on) != 0) throw zmq::error_t();
}

void make_curve_client(zmq::socket_t& socket, const Certificate& own_secret, std::string_view server_public_z85) {
  socket.set(zmq::sockopt::curve_serverkey, server_public_z85);
  socket.set(zmq::sockopt::curve_publickey, own_secret.public_key);
  socket.set(zmq::sockopt::curve_secretkey, own_secret.secret_key);
}

}  // namespace bidmesh
