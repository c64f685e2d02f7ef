// ZapHandler: the ZAP handler (RFC 27) of a process's ZeroMQ context, which decides during the
// CurveZMQ handshake (RFC 26) which keys may connect to the sockets made CURVE servers with
// make_curve_server. libzmq asks it before the session pipe exists, so a refused peer never
// delivers one message frame to the application (docs/security.md, "Who may do what").
//
// Verdicts, by the socket's ZAP domain (make_curve_server sets it):
//   "clients"  the mechanism is CURVE and the client's key is in the current AllowList:
//              200, User-Id = the client's public key in Z85 (read it from each message with
//              zmq_msg_gets(msg, "User-Id") and look the key up again per request, so that a
//              reload revokes a key even on a connection that is already open);
//   "feed"     CURVE and a key in the AllowList, or any CURVE key when feed_public:
//              200, User-Id = the key in Z85;
//   "mesh"     CURVE and exactly the mesh's own node key: 200, User-Id "mesh";
//   otherwise  400 (another domain or mechanism, an unknown key), or 500 for a request that
//              is not ZAP 1.0. Refusals are counted (refused()), never logged: a scan must not
//              flood the log.
//
// Guarantees and caveats
// - Fail closed: make_curve_server sets ZMQ_ZAP_ENFORCE_DOMAIN, so while no handler is bound in
//   the context (before start(), after stop()) libzmq refuses every peer of such a socket: the
//   peer's connection stalls in its handshake (libzmq neither admits nor closes it) and none of
//   its messages arrive. Without that option libzmq would let any key in when no handler
//   answers (the "Stonehouse" pattern). So: start() the handler before binding, stop() it after
//   closing the sockets.
// - Every CURVE server socket of the context is judged here, whichever code made it: one
//   handler per context (a second start() in the same context fails: the address is in use).
// - set_allow_list() applies to the handshakes that start after it returns; open connections
//   keep going (revoking them is the caller's per-request lookup, above).
// - The thread waits at most 100 ms at a time, so stop() returns within about that.
//
// Thread-safety: set_allow_list, allow_list, refused and allowed may be called from any thread.
// start and stop from the owning thread only. The handler's socket lives on its own thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "security/allow_list.h"
#include "security/certificate.h"

namespace bidmesh {

inline constexpr std::string_view kZapDomainClients = "clients";
inline constexpr std::string_view kZapDomainFeed = "feed";
inline constexpr std::string_view kZapDomainMesh = "mesh";
inline constexpr std::string_view kMeshUserId = "mesh";
inline constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";  // fixed by RFC 27

class ZapHandler {
 public:
  // mesh_public_key_z85: the key a "mesh" peer must hold (the mesh's node key); empty refuses
  // every "mesh" peer. feed_public: any CURVE key may subscribe to the feed.
  // REQUIRES: ctx outlives this handler.
  ZapHandler(zmq::context_t& ctx, std::string mesh_public_key_z85, bool feed_public);
  ~ZapHandler();  // stop()
  ZapHandler(const ZapHandler&) = delete;
  ZapHandler& operator=(const ZapHandler&) = delete;

  // Binds the ZAP endpoint and starts the thread. nullopt on success; else the reason (a mesh
  // key that is not Z85; another handler bound in this context). Calling it while running is a
  // no-op.
  std::optional<std::string> start();
  // Stops the thread and unbinds; returns within about 100 ms. Idempotent.
  void stop();

  // The list the next handshakes are judged by. Starts empty (every client refused); null is
  // taken as empty.
  void set_allow_list(std::shared_ptr<const AllowList> list);
  std::shared_ptr<const AllowList> allow_list() const;

  uint64_t refused() const { return refused_.load(std::memory_order_relaxed); }  // 400 and 500
  uint64_t allowed() const { return allowed_.load(std::memory_order_relaxed); }  // 200

 private:
  void run(zmq::socket_t socket);
  // The reply frames for one request (RFC 27): version, request id, status code, status text,
  // user id, metadata.
  std::vector<zmq::message_t> answer(const std::vector<zmq::message_t>& request);

  zmq::context_t& ctx_;
  const std::string mesh_public_key_z85_;
  std::string mesh_key_;  // binary, set by start()
  const bool feed_public_;

  mutable std::mutex list_mu_;
  std::shared_ptr<const AllowList> list_;  // GUARDED_BY(list_mu_); never null

  std::atomic<uint64_t> refused_{0};
  std::atomic<uint64_t> allowed_{0};
  std::atomic<bool> stopping_{false};
  std::thread thread_;
};

// Makes `socket` a CurveZMQ server judged by the ZapHandler under `domain`: ZMQ_CURVE_SERVER,
// ZMQ_CURVE_SECRETKEY, ZMQ_ZAP_DOMAIN and ZMQ_ZAP_ENFORCE_DOMAIN (fail closed, see above).
// REQUIRES: before bind; server_secret holds a secret key. Throws zmq::error_t (EINVAL) for a
// bad key, as cppzmq's set() does.
void make_curve_server(zmq::socket_t& socket, const Certificate& server_secret, std::string_view domain);

// Makes `socket` a CurveZMQ client with its own keypair, trusting the server key given.
// REQUIRES: before connect; own_secret holds a secret key. Throws zmq::error_t for a bad key.
void make_curve_client(zmq::socket_t& socket, const Certificate& own_secret, std::string_view server_public_z85);

}  // namespace bidmesh
