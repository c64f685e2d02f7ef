// The framing of the internal hop between a router and a bid node (docs/protocol.md, "Internal
// framing"): what the token frame says about the reply, and the one-frame reply.
//
// Why replies travel in one frame: the router's DEALER to a node runs with ZMQ_IMMEDIATE, and
// when that node's connection drops, libzmq (4.3.4, and its master as of 2026-12) ends the
// socket's pipe at once on the next command pass, even between two frames of a message the
// router is reading; the next frame's read then fails and libzmq aborts the router process
// ("Assertion failed: !_more (src/fq.cpp:112)"). A reply of one frame is read whole or not at all.
//
//   router -> node: [token frame, digest, principal, request]; the token frame is the router's
//                   8-byte token, then kOneFrameReplies (9 bytes) from routers that read one-frame
//                   replies; older routers send the 8 bytes alone.
//   node -> router: after a 9-byte token frame, ONE frame: token (8) | kind (1) | the node's
//                   config digest (8, only when kind is kDigestRefused) | reply.
//                   After an 8-byte one, the older frames: [token frame, reply(, node digest)].
//
// Thread-safe: pure functions and constants.
#pragma once

#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

namespace bidmesh::node_wire {

inline constexpr std::size_t kTokenBytes = 8;
inline constexpr char kOneFrameReplies = 1;  // the byte after the token: "answer in one frame"
inline constexpr std::size_t kTokenFrameBytes = kTokenBytes + 1;
inline constexpr char kPlain = 0;           // kind: the reply follows
inline constexpr char kDigestRefused = 1;   // kind: the node's digest (8 bytes) then its `unavailable`

// The token frame a router sends.
inline std::string token_frame(uint64_t token) {
  std::string frame(kTokenFrameBytes, kOneFrameReplies);
  std::memcpy(frame.data(), &token, kTokenBytes);
  return frame;
}

// True when the request's token frame asks for a one-frame reply.
inline bool wants_one_frame(std::string_view token_frame) {
  return token_frame.size() == kTokenFrameBytes && token_frame[kTokenBytes] == kOneFrameReplies;
}

// The one-frame reply to a request whose token frame is `token_frame` (wants_one_frame), into
// `out` (cleared first).
inline void encode_reply(std::string_view token_frame, std::string_view reply, const uint64_t* refused_by_digest,
                         std::string& out) {
  out.assign(token_frame.substr(0, kTokenBytes));
  out.push_back(refused_by_digest != nullptr ? kDigestRefused : kPlain);
  if (refused_by_digest != nullptr)
    out.append(reinterpret_cast<const char*>(refused_by_digest), sizeof *refused_by_digest);
  out.append(reply);
}

struct Reply {
  uint64_t token = 0;
  std::optional<uint64_t> node_digest;  // set when the node refused the router's config digest
  std::string_view body;                // a view into the parsed frame
};

// Parses a one-frame reply; nullopt when it is not one (too short, unknown kind).
inline std::optional<Reply> parse_reply(std::string_view frame) {
  if (frame.size() < kTokenFrameBytes) return std::nullopt;
  Reply r;
  std::memcpy(&r.token, frame.data(), kTokenBytes);
  const char kind = frame[kTokenBytes];
  frame.remove_prefix(kTokenFrameBytes);
  if (kind == kDigestRefused) {
    if (frame.size() < sizeof(uint64_t)) return std::nullopt;
    uint64_t digest = 0;
    std::memcpy(&digest, frame.data(), sizeof digest);
    r.node_digest = digest;
    frame.remove_prefix(sizeof digest);
  } else if (kind != kPlain) {
    return std::nullopt;
  }
  r.body = frame;
  return r;
}

}  // namespace bidmesh::node_wire
