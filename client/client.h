// Client: a Lazy Pirate request client for the router's request endpoint (PROTOCOL.md,
// "Requests"). One REQ socket; each call sends one request frame and waits at most `timeout_ms`
// for the reply. On a timeout the REQ socket is closed (linger 0) and reopened, and THE SAME
// frame, with the same `id`, is sent again, up to `retries` more times. Resending is safe: the
// mesh remembers each write's reply by (item, id), so a retried write never takes effect twice.
// A reply `unavailable` or `internal` (which the contract calls safe to retry with the same id)
// is retried the same way, on the same socket, after a backoff of 10 ms doubling up to 500 ms;
// after the last try that reply is returned. A call therefore waits at most
// timeout_ms * (retries + 1) plus those backoffs, plus the time to reopen.
//
// Request ids are "<prefix>-<counter>", the prefix being "<hostname>-<pid>-<random hex>" (at most
// 40 bytes, so an id stays within the 64 bytes of the contract) unless the caller names one;
// a request that carries its own `id` keeps it.
//
// Errors: no exceptions for what the mesh or the network does: a lost reply is nullopt, a refusal
// is a Reply with ok false, an undecodable reply is kClientBadReply. zmq::error_t escapes only
// for misuse (a malformed endpoint at construction, a terminated context).
//
// Thread-safety: NOT thread-safe. A Client owns one ZeroMQ socket; use it from one thread only
// (ZeroMQ sockets must not be shared). Several Clients may share the process's one context.
// Ownership: the context must outlive the Client. Replies are returned by value.
//
// Part of bidmesh_client (installed as bidmesh::client, docs/client-library.md).
#pragma once

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "client/curve_keys.h"
#include "protocol/messages.h"

namespace bidmesh {

// The client-side code put in `Reply::error` when a reply arrived but could not be decoded. It is
// not a wire code (the mesh never sends it): the tools treat it as a system failure.
inline constexpr std::string_view kClientBadReply = "bad_reply";

// Largest reply frame a client accepts (ZMQ_MAXMSGSIZE on its sockets): a `history` reply of
// 1000 events with 64-byte identifiers is about 200 KB; anything past this is not the mesh.
inline constexpr int64_t kClientMaxReplyBytes = 16 * 1024 * 1024;

// "<hostname>-<pid>-<8 random hex digits>", at most 40 bytes (the hostname is cut to 20).
std::string make_client_id_prefix();

// The decoded reply frame, or {ok: false, error: kClientBadReply} when it is not a reply of the
// contract (shared by Client::call and DirectClient::call).
Reply decode_reply_or_bad(std::string_view raw);

class Client {
 public:
  static constexpr int kDefaultTimeoutMs = 1500;
  static constexpr int kDefaultRetries = 3;

  // REQUIRES: timeout_ms > 0, retries >= 0. `id_prefix` empty = make_client_id_prefix().
  // The socket connects at once (ZeroMQ connects in the background; nothing blocks here). With
  // `curve`, every socket it opens is a CurveZMQ client with those keys.
  Client(zmq::context_t& ctx, std::string endpoint, int timeout_ms = kDefaultTimeoutMs,
         int retries = kDefaultRetries, std::string id_prefix = {}, std::optional<CurveKeys> curve = std::nullopt);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  // Sends `request` (encode_request; an empty `id` is replaced by next_id()) and returns the
  // decoded reply, or nullopt if no reply came after all the tries. A reply that arrived but did
  // not decode is returned as {ok: false, error: kClientBadReply}.
  std::optional<Reply> call(const Request& request);

  // Sends one raw frame, exactly as given, with the same Lazy Pirate retries, and returns the raw
  // reply frame (the first frame if the peer sent several), or nullopt. For tests that send
  // malformed frames.
  std::optional<std::string> call_raw(std::string_view frame);

  // A fresh id: "<prefix>-<counter>", the counter counting from 1 per Client.
  std::string next_id();

  // The id sent by the last call() (after defaulting).
  const std::string& last_id() const { return last_id_; }
  // Sends made by the last call: 1 when the first try was answered.
  int last_attempts() const { return last_attempts_; }
  // Round-trip time of the last answered call, from its first send.
  std::chrono::microseconds last_elapsed() const { return last_elapsed_; }

  const std::string& endpoint() const { return endpoint_; }
  int timeout_ms() const { return timeout_ms_; }
  int retries() const { return retries_; }

 private:
  void open_socket();
  // The first frame of the next reply within timeout_ms_, or nullopt.
  std::optional<std::string> await_reply();

  zmq::context_t& ctx_;
  const std::string endpoint_;
  const int timeout_ms_;
  const int retries_;
  const std::string id_prefix_;
  const std::optional<CurveKeys> curve_;
  uint64_t counter_ = 0;
  std::unique_ptr<zmq::socket_t> socket_;
  // The REQ socket sent and got no reply (a timeout, a failed send): it cannot send again and is
  // replaced before the next try, in this call or the next one.
  bool socket_stuck_ = false;
  static constexpr std::chrono::milliseconds kRetryBackoffFirst{10};
  static constexpr std::chrono::milliseconds kRetryBackoffMax{500};
  std::string last_id_;
  int last_attempts_ = 0;
  std::chrono::microseconds last_elapsed_{0};
};

}  // namespace bidmesh
