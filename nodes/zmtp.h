// The server side of ZMTP 3.0 (the ZeroMQ wire protocol, RFC 23/ZMTP) with the NULL mechanism:
// enough for REQ, DEALER and ROUTER peers (libzmq, pyzmq, any binding) to talk to the router
// through a ZMQ_STREAM socket, which hands over the raw bytes of each TCP connection.
//
// Why not a ROUTER socket: libzmq 4.3 limits each frame (ZMQ_MAXMSGSIZE) but holds every frame of
// a message until its last one arrives, so one message of many small frames could grow the
// router without bound. Here every frame is counted as it streams through, and at most one
// request body (up to Limits::max_body_bytes) is held per connection, whatever the message is.
//
// Limits, guarantees:
// - A frame over max_frame_bytes, a malformed frame, a greeting that is not ZMTP 3.x with the
//   NULL mechanism, or a peer type other than REQ, DEALER or ROUTER is a protocol violation:
//   consume() returns false and the caller drops the connection (the wire contract allows it
//   past 64 KiB; libzmq's own sockets drop such peers too).
// - A message of any number of frames is reported once, with its frame count, whether its first
//   frame was empty, and its second frame when that is the last and fits max_body_bytes.
// - PING commands are answered with PONG; other commands after the handshake are ignored.
//
// Thread-compatible: one ZmtpPeer per connection, used by one thread.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace bidmesh {

// One complete message from a peer. Framing the router accepts: exactly ["", body].
struct ZmtpMessage {
  std::size_t frames = 0;        // frames in the message
  bool delimited = false;        // its first frame was empty
  std::size_t body_bytes = 0;    // size of its second frame (0 when it has none)
  bool body_held = false;        // the second frame is the last one and fits max_body_bytes
  std::string_view body;         // that frame when held; valid during the callback only
};

class ZmtpPeer {
 public:
  struct Limits {
    std::size_t max_frame_bytes = 64 * 1024;  // larger frames: protocol violation
    std::size_t max_body_bytes = 4096;        // larger bodies are counted, not held
  };
  using MessageHandler = std::function<void(const ZmtpMessage&)>;

  explicit ZmtpPeer(Limits limits) : limits_(limits) {}

  // What the server sends as soon as a peer connects: its greeting (ZMTP 3.0, NULL, not as-server)
  // and its READY command (Socket-Type ROUTER). NULL needs no reply to wait for before READY.
  static std::string_view server_hello();

  // Parses the next bytes of the connection. Calls on_message for each message completed by
  // them, and appends to `out` what is owed to the peer (PONG). Returns false on a protocol
  // violation (error() says which); the peer must not be fed again.
  bool consume(std::string_view bytes, const MessageHandler& on_message, std::string& out);

  // The greeting and READY of the peer were received and accepted.
  bool ready() const { return ready_; }
  const std::string& error() const { return error_; }

  // One message ["", body] in ZMTP framing, what a REQ or DEALER peer expects back: reply_size
  // bytes, which write_reply writes to `out` (room for them REQUIRED), or append_reply appends.
  static std::size_t reply_size(std::size_t body_size);
  static void write_reply(char* out, std::string_view body);
  static void append_reply(std::string& out, std::string_view body);

 private:
  enum class State { greeting, header, body };
  bool fail(std::string why);
  bool on_header();
  bool on_command(std::string_view command, std::string& out);
  bool on_ready(std::string_view properties);
  void end_frame(const MessageHandler& on_message);

  const Limits limits_;
  State state_ = State::greeting;
  bool ready_ = false;
  std::string error_;

  std::string greeting_;              // the peer's greeting, up to 64 bytes
  unsigned char header_[9] = {};      // flags and size of the frame being read
  std::size_t header_len_ = 0;

  // The frame being read.
  bool more_ = false;
  bool command_ = false;
  bool keep_ = false;                 // its bytes are collected (a command, or a held body)
  uint64_t frame_size_ = 0;
  uint64_t frame_read_ = 0;
  std::string held_;                  // collected bytes when a frame spans several chunks
  std::string_view frame_view_;       // the whole frame, when it arrived in one chunk

  // The message being read.
  ZmtpMessage message_;
};

}  // namespace bidmesh
