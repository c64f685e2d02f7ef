// ClientFront: the client side of the wire contract (docs/protocol.md) as one component, shared
// by the router's `listen` and a bid node's `client_listen` (v1.2 direct clients), so both
// endpoints give exactly the same transport limits, framing, security and replies.
//
// Socket: a libzmq ROUTER. A request arrives as [identity, "", body] (REQ, or DEALER with an
// empty delimiter); any other framing is answered `bad_request` (id nil) here. libzmq's own
// engine enforces the transport: a frame over kTransportMaxBytes (ZMQ_MAXMSGSIZE) drops the
// connection, ZMTP heartbeats drop dead peers, a handshake must finish within
// handshake_timeout. With security = "curve" the socket is a CurveZMQ server under the ZAP domain
// "clients" (security/zap.h): a ZapHandler with the allow list must serve the context before
// bind(), and nothing of a refused peer reaches this code. Each request still carries its key
// (User-Id), looked up per request in the current list (sender()), so a key revoked by a reload
// gets `forbidden` even on a connection opened before.
//
// Replies never block: ROUTER drops a reply to a gone peer or past its high-water mark, so a
// client that stopped reading loses only its own replies.
//
// Thread-compatible: a ClientFront and its socket belong to the thread that binds and reads it.
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>

#include <zmq.hpp>

#include "protocol/access.h"
#include "protocol/config.h"
#include "protocol/messages.h"
#include "protocol/slot_directory.h"
#include "security/allow_list.h"
#include "security/certificate.h"

namespace bidmesh {

// The socket options every endpoint that peers reach gets: ZMQ_MAXMSGSIZE, heartbeats and the
// handshake timeout.
void set_peer_limits(zmq::socket_t& socket, int64_t max_message_bytes, std::chrono::milliseconds handshake_timeout,
                     std::chrono::milliseconds heartbeat_interval, std::chrono::milliseconds heartbeat_timeout);

// The bytes of a frame (valid while the message is).
inline std::string_view frame_view(const zmq::message_t& m) {
  return std::string_view(static_cast<const char*>(m.data()), m.size());
}
// Reads the rest of a message whose frames are not wanted (libzmq holds it whole already).
void discard_rest(zmq::socket_t& socket, zmq::message_t& scratch, bool more);

struct ClientFrontOptions {
  int client_hwm = 1000;              // replies queued per client connection
  int client_read_hwm = 64;           // messages read ahead per client connection
  // A connection that has not finished the ZMTP (and CURVE) handshake by then is closed.
  std::chrono::milliseconds handshake_timeout{5000};
  // ZMTP heartbeats: a PING after this much silence; no traffic for heartbeat_timeout closes.
  std::chrono::milliseconds heartbeat_interval{10000};
  std::chrono::milliseconds heartbeat_timeout{30000};
  // Linger of the client socket at close: time to flush the last replies. Bounded, so a client
  // that stopped reading cannot hold the process.
  std::chrono::milliseconds close_linger{1000};
};

// What a client endpoint needs when the mesh runs with security = "curve".
struct ClientSecurity {
  Certificate mesh;                                // the mesh's keypair (server_certificate)
  std::shared_ptr<const AllowList> clients;        // the allowed clients, replaced on reload
};

// The mesh's keypair and the allowed clients of cfg (security = "curve"), or a one-line reason
// (a config the operator must mend: the programs exit 100).
std::variant<ClientSecurity, std::string> load_client_security(const MeshConfig& cfg);

// clients_dir read again (SIGHUP): the new list, or the reason it did not load (the caller keeps
// the previous list, so a typo never opens or closes the mesh by accident).
std::variant<std::shared_ptr<const AllowList>, std::string> reload_allowed_clients(const MeshConfig& cfg);

class ClientFront {
 public:
  enum class Received { none, request, bad_framing };

  // `security` is given exactly when the mesh runs with curve.
  ClientFront(zmq::context_t& ctx, ClientFrontOptions options, std::optional<ClientSecurity> security);
  ClientFront(const ClientFront&) = delete;
  ClientFront& operator=(const ClientFront&) = delete;

  // Makes the socket and binds it. nullopt on success, else a one-line reason.
  std::optional<std::string> bind(const std::string& endpoint);

  // Reads one message without waiting. `request`: identity and body are set (the body not yet
  // judged in any way). `bad_framing`: it was answered `bad_request` here (the caller counts
  // it). `none`: nothing waiting.
  Received receive(zmq::message_t& identity, zmq::message_t& body);

  // The client that sent `body` (received by this front): null when security is on and its key
  // is not (or no longer) allowed; with security off, a principal with every role.
  const Principal* sender(const zmq::message_t& body) const;
  bool secure() const { return security_.has_value(); }

  // The reply to the requests a client endpoint answers itself, ping and slots (with the role
  // check: a revoked key gets `forbidden`), and its outcome in *outcome (nullopt for ok, else the
  // error code). REQUIRES: op is ping or slots.
  static std::string local_reply(Op op, std::string_view id, const Principal* who, const SlotDirectory& slots,
                                 std::optional<ErrorCode>* outcome);

  // Sends [identity, "", body]; never blocks.
  void reply(std::string_view identity, std::string_view body);

  // With security on: from the next request on, keys are judged against `clients`.
  void set_allowed_clients(std::shared_ptr<const AllowList> clients);

  zmq::socket_t& socket() { return socket_; }
  // The endpoint as bound (with the actual port for a wildcard port).
  std::string endpoint() const { return socket_.get(zmq::sockopt::last_endpoint); }
  // Client messages read since bind() (refused peers never count).
  uint64_t messages() const { return messages_; }
  // Closes the socket with the bounded linger, so the last replies may leave. Idempotent.
  void close();

 private:
  zmq::context_t& ctx_;
  const ClientFrontOptions options_;
  std::optional<ClientSecurity> security_;
  zmq::socket_t socket_;
  zmq::message_t scratch_;
  uint64_t messages_ = 0;
  const std::string framing_error_reply_;
};

}  // namespace bidmesh
