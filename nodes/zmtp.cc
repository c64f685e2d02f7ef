#include "nodes/zmtp.h"

#include <algorithm>
#include <cctype>
#include <cstring>

namespace bidmesh {

namespace {

constexpr std::size_t kGreetingBytes = 64;
constexpr std::size_t kMechanismAt = 12;   // 20 bytes: the mechanism name, zero-padded
constexpr std::size_t kMechanismBytes = 20;
constexpr std::size_t kMaxCommandBytes = 8192;  // READY with the longest routing id fits easily

constexpr unsigned char kMore = 0x01;
constexpr unsigned char kLong = 0x02;
constexpr unsigned char kCommand = 0x04;

std::string make_server_hello() {
  std::string s(kGreetingBytes, '\0');
  s[0] = static_cast<char>(0xff);  // signature: 0xff, 8 bytes of padding, 0x7f
  s[9] = 0x7f;
  s[10] = 3;  // version 3.0
  s[11] = 0;
  s.replace(kMechanismAt, 4, "NULL");
  // as-server (byte 32) and the filler stay 0.
  std::string ready;
  ready += '\x05';
  ready += "READY";
  ready += '\x0b';
  ready += "Socket-Type";
  ready += std::string("\x00\x00\x00\x06", 4);
  ready += "ROUTER";
  s += static_cast<char>(kCommand);
  s += static_cast<char>(ready.size());
  s += ready;
  return s;
}

bool equals_ignoring_case(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) == std::tolower(static_cast<unsigned char>(y));
         });
}

uint32_t read_u32(const char* p) {
  const auto* u = reinterpret_cast<const unsigned char*>(p);
  return (uint32_t{u[0]} << 24) | (uint32_t{u[1]} << 16) | (uint32_t{u[2]} << 8) | uint32_t{u[3]};
}

}  // namespace

std::string_view ZmtpPeer::server_hello() {
  static const std::string hello = make_server_hello();
  return hello;
}

std::size_t ZmtpPeer::reply_size(std::size_t body_size) {
  return 2 + (body_size <= 255 ? 2 : 9) + body_size;  // delimiter frame, body frame header, body
}

void ZmtpPeer::write_reply(char* out, std::string_view body) {
  *out++ = static_cast<char>(kMore);  // the empty delimiter frame
  *out++ = '\0';
  if (body.size() <= 255) {
    *out++ = '\0';
    *out++ = static_cast<char>(body.size());
  } else {
    *out++ = static_cast<char>(kLong);
    const uint64_t n = body.size();
    for (int shift = 56; shift >= 0; shift -= 8) *out++ = static_cast<char>((n >> shift) & 0xff);
  }
  std::memcpy(out, body.data(), body.size());
}

void ZmtpPeer::append_reply(std::string& out, std::string_view body) {
  const std::size_t at = out.size();
  out.resize(at + reply_size(body.size()));
  write_reply(out.data() + at, body);
}

bool ZmtpPeer::fail(std::string why) {
  error_ = std::move(why);
  return false;
}

bool ZmtpPeer::consume(std::string_view bytes, const MessageHandler& on_message, std::string& out) {
  if (!error_.empty()) return false;
  std::size_t pos = 0;
  while (pos < bytes.size()) {
    switch (state_) {
      case State::greeting: {
        const std::size_t n = std::min(kGreetingBytes - greeting_.size(), bytes.size() - pos);
        greeting_.append(bytes.data() + pos, n);
        pos += n;
        const auto byte = [this](std::size_t i) { return static_cast<unsigned char>(greeting_[i]); };
        // Judged as soon as each part is there, so a peer of another protocol is dropped early.
        if (byte(0) != 0xff) return fail("not a ZMTP greeting (a ZeroMQ 3.x or later peer is required)");
        if (greeting_.size() > 9 && (byte(9) & 0x01) == 0) return fail("ZMTP 1.0 peers are not supported");
        if (greeting_.size() > 10 && byte(10) < 3)
          return fail("ZMTP version " + std::to_string(byte(10)) + " is not supported (3.0 or later)");
        if (greeting_.size() < kGreetingBytes) break;
        const std::string_view mechanism(greeting_.data() + kMechanismAt, kMechanismBytes);
        if (mechanism != std::string_view("NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", kMechanismBytes))
          return fail("security mechanism not supported (only NULL)");
        state_ = State::header;
        break;
      }
      case State::header: {
        header_[header_len_++] = static_cast<unsigned char>(bytes[pos++]);
        const std::size_t needed = (header_[0] & kLong) ? 9 : 2;
        if (header_len_ < needed) break;
        if (!on_header()) return false;
        if (frame_size_ == 0) {
          if (command_) return fail("empty command frame");
          end_frame(on_message);
        } else {
          state_ = State::body;
        }
        break;
      }
      case State::body: {
        const uint64_t left = frame_size_ - frame_read_;
        const std::size_t n = static_cast<std::size_t>(std::min<uint64_t>(left, bytes.size() - pos));
        if (keep_) {
          // A frame that arrived in one piece is used in place; others are collected.
          if (frame_read_ == 0 && n == left)
            frame_view_ = bytes.substr(pos, n);
          else
            held_.append(bytes.data() + pos, n);
        }
        pos += n;
        frame_read_ += n;
        if (frame_read_ < frame_size_) break;
        if (keep_ && frame_view_.empty()) frame_view_ = held_;
        if (command_) {
          if (!on_command(frame_view_, out)) return false;
          frame_view_ = {};
          held_.clear();
          state_ = State::header;
          header_len_ = 0;
          break;
        }
        end_frame(on_message);
        break;
      }
    }
  }
  return true;
}

bool ZmtpPeer::on_header() {
  const unsigned char flags = header_[0];
  if (flags & ~(kMore | kLong | kCommand)) return fail("frame flags with reserved bits set");
  if (flags & kLong) {
    frame_size_ = 0;
    for (std::size_t i = 1; i < 9; ++i) frame_size_ = (frame_size_ << 8) | header_[i];
  } else {
    frame_size_ = header_[1];
  }
  more_ = (flags & kMore) != 0;
  command_ = (flags & kCommand) != 0;
  frame_read_ = 0;
  frame_view_ = {};
  held_.clear();
  if (command_) {
    if (more_) return fail("command frame with the MORE flag");
    if (message_.frames != 0) return fail("command frame inside a message");
    if (frame_size_ > kMaxCommandBytes) return fail("command of " + std::to_string(frame_size_) + " bytes");
    keep_ = true;
    return true;
  }
  if (!ready_) return fail("message frame before the READY command");
  if (frame_size_ > limits_.max_frame_bytes)
    return fail("frame of " + std::to_string(frame_size_) + " bytes is over the limit of " +
                std::to_string(limits_.max_frame_bytes) + " bytes");
  // Only a body that can be a request is held: the second frame, and the last one.
  keep_ = message_.frames == 1 && !more_ && frame_size_ <= limits_.max_body_bytes;
  return true;
}

void ZmtpPeer::end_frame(const MessageHandler& on_message) {
  if (message_.frames == 0) {
    message_.delimited = frame_size_ == 0;
  } else if (message_.frames == 1) {
    message_.body_bytes = frame_size_;
    message_.body_held = keep_;
    if (keep_) message_.body = frame_view_;
  }
  ++message_.frames;
  state_ = State::header;
  header_len_ = 0;
  if (more_) return;
  on_message(message_);
  message_ = ZmtpMessage{};
  frame_view_ = {};
  held_.clear();
}

bool ZmtpPeer::on_command(std::string_view command, std::string& out) {
  const auto name_size = static_cast<unsigned char>(command[0]);
  if (1 + std::size_t{name_size} > command.size()) return fail("malformed command");
  const std::string_view name = command.substr(1, name_size);
  const std::string_view data = command.substr(1 + name_size);
  if (!ready_) {
    if (name != "READY") return fail("expected the READY command, got '" + std::string(name) + "'");
    return on_ready(data);
  }
  if (name == "PING") {
    // PING: TTL (2 bytes) and up to 16 bytes of context, which PONG echoes.
    if (data.size() < 2 || data.size() > 18) return fail("malformed PING");
    const std::string_view context = data.substr(2);
    out += static_cast<char>(kCommand);
    out += static_cast<char>(5 + context.size());
    out += '\x04';
    out += "PONG";
    out.append(context);
    return true;
  }
  if (name == "ERROR") return fail("the peer sent ERROR");
  return true;  // PONG and commands of later versions: nothing to do
}

bool ZmtpPeer::on_ready(std::string_view properties) {
  bool typed = false;
  while (!properties.empty()) {
    const auto key_size = static_cast<unsigned char>(properties[0]);
    if (1 + std::size_t{key_size} + 4 > properties.size()) return fail("malformed READY property");
    const std::string_view key = properties.substr(1, key_size);
    const uint32_t value_size = read_u32(properties.data() + 1 + key_size);
    const std::size_t value_at = 1 + key_size + 4;
    if (value_size > properties.size() - value_at) return fail("malformed READY property");
    const std::string_view value = properties.substr(value_at, value_size);
    if (equals_ignoring_case(key, "Socket-Type")) {
      if (value != "REQ" && value != "DEALER" && value != "ROUTER")
        return fail("socket type " + std::string(value.substr(0, 32)) + " cannot talk to a ROUTER (use REQ or DEALER)");
      typed = true;
    }
    properties.remove_prefix(value_at + value_size);
  }
  if (!typed) return fail("READY without Socket-Type");
  ready_ = true;
  return true;
}

}  // namespace bidmesh
