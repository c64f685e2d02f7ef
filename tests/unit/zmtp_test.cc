// The ZMTP 3.0 server side (nodes/zmtp.h), byte by byte. Interoperation with real libzmq REQ and
// DEALER sockets is tested through the router (router_test.cc, the integration tests and the
// Python contract test).
#include <string>
#include <vector>

#include <catch2/catch.hpp>

#include "nodes/zmtp.h"

using namespace bidmesh;

namespace {

std::string greeting(unsigned char major = 3, unsigned char minor = 1, const std::string& mechanism = "NULL") {
  std::string g(64, '\0');
  g[0] = static_cast<char>(0xff);
  g[9] = 0x7f;
  g[10] = static_cast<char>(major);
  g[11] = static_cast<char>(minor);
  g.replace(12, mechanism.size(), mechanism);
  return g;
}

std::string frame(const std::string& body, bool more, bool command = false) {
  std::string f;
  unsigned char flags = (more ? 0x01 : 0) | (command ? 0x04 : 0);
  if (body.size() > 255) {
    f += static_cast<char>(flags | 0x02);
    for (int shift = 56; shift >= 0; shift -= 8) f += static_cast<char>((body.size() >> shift) & 0xff);
  } else {
    f += static_cast<char>(flags);
    f += static_cast<char>(body.size());
  }
  return f + body;
}

std::string ready(const std::string& socket_type) {
  std::string cmd = "\x05READY";
  cmd += "\x0bSocket-Type";
  cmd += std::string("\x00\x00\x00", 3) + static_cast<char>(socket_type.size()) + socket_type;
  cmd += "\x08Identity" + std::string(4, '\0');
  return frame(cmd, false, true);
}

std::string hello(const std::string& socket_type = "DEALER") { return greeting() + ready(socket_type); }

struct Seen {
  std::size_t frames;
  bool delimited;
  std::size_t body_bytes;
  bool body_held;
  std::string body;
};

// Feeds `bytes` in chunks of `chunk` bytes; returns false at the first violation.
bool feed(ZmtpPeer& peer, const std::string& bytes, std::vector<Seen>& seen, std::string& out,
          std::size_t chunk = std::string::npos) {
  auto on_message = [&](const ZmtpMessage& m) {
    seen.push_back({m.frames, m.delimited, m.body_bytes, m.body_held, std::string(m.body)});
  };
  for (std::size_t pos = 0; pos < bytes.size(); pos += chunk) {
    if (!peer.consume(std::string_view(bytes).substr(pos, chunk), on_message, out)) return false;
    if (chunk == std::string::npos) break;
  }
  return true;
}

const ZmtpPeer::Limits kLimits{1000, 100};

}  // namespace

TEST_CASE("zmtp: the server hello is a ZMTP 3.0 NULL greeting and READY as a ROUTER", "[zmtp]") {
  const std::string_view h = ZmtpPeer::server_hello();
  REQUIRE(h.size() > 64);
  CHECK(static_cast<unsigned char>(h[0]) == 0xff);
  CHECK(h[9] == 0x7f);
  CHECK(h[10] == 3);
  CHECK(h.substr(12, 20) == std::string_view("NULL\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 20));
  CHECK(h[64] == 0x04);  // a command frame
  CHECK(h.substr(66) == std::string_view("\x05READY\x0bSocket-Type\x00\x00\x00\x06ROUTER", 28));
}

TEST_CASE("zmtp: a request arrives whole however the bytes are cut", "[zmtp]") {
  const std::string body = "request-body";
  const std::string bytes = hello() + frame("", true) + frame(body, false) + frame("", true) + frame("b2", false);
  for (std::size_t chunk : {std::string::npos, std::size_t{1}, std::size_t{3}, std::size_t{64}, std::size_t{65}}) {
    ZmtpPeer peer(kLimits);
    std::vector<Seen> seen;
    std::string out;
    REQUIRE(feed(peer, bytes, seen, out, chunk));
    CHECK(peer.ready());
    REQUIRE(seen.size() == 2);
    CHECK(seen[0].frames == 2);
    CHECK(seen[0].delimited);
    CHECK(seen[0].body_held);
    CHECK(seen[0].body == body);
    CHECK(seen[1].body == "b2");
    CHECK(out.empty());
  }
}

TEST_CASE("zmtp: other framings are reported with what the router needs to refuse them", "[zmtp]") {
  ZmtpPeer peer(kLimits);
  std::vector<Seen> seen;
  std::string out;
  std::string bytes = hello("REQ");
  bytes += frame("no-delimiter", false);
  bytes += frame("x", true) + frame("body", false);
  bytes += frame("", true) + frame("body", true) + frame("third", false);
  bytes += frame("", true) + frame(std::string(101, 'b'), false);  // body over max_body_bytes
  bytes += frame("", true) + frame(std::string(300, 'l'), false);  // a long frame, over it too
  REQUIRE(feed(peer, bytes, seen, out, 7));
  REQUIRE(seen.size() == 5);
  CHECK((seen[0].frames == 1 && !seen[0].delimited));
  CHECK((seen[1].frames == 2 && !seen[1].delimited));
  CHECK((seen[2].frames == 3 && seen[2].delimited && !seen[2].body_held));
  CHECK((seen[3].frames == 2 && !seen[3].body_held && seen[3].body_bytes == 101));
  CHECK((seen[4].frames == 2 && !seen[4].body_held && seen[4].body_bytes == 300));
}

TEST_CASE("zmtp: a message of many frames is counted, never held", "[zmtp]") {
  ZmtpPeer peer(ZmtpPeer::Limits{1000, 100});
  std::vector<Seen> seen;
  std::string out;
  REQUIRE(feed(peer, hello(), seen, out));
  const std::string part = frame(std::string(900, 'm'), true);
  for (int i = 0; i < 10000; ++i) REQUIRE(feed(peer, part, seen, out));  // 9 MB in one message
  CHECK(seen.empty());
  REQUIRE(feed(peer, frame("end", false), seen, out));
  REQUIRE(seen.size() == 1);
  CHECK(seen[0].frames == 10001);
  CHECK_FALSE(seen[0].delimited);
}

TEST_CASE("zmtp: PING is answered with PONG and its context", "[zmtp]") {
  ZmtpPeer peer(kLimits);
  std::vector<Seen> seen;
  std::string out;
  REQUIRE(feed(peer, hello() + frame(std::string("\x04PING\x00\x64", 7) + "ctx", false, true), seen, out));
  CHECK(out == frame("\x04PONGctx", false, true));
}

TEST_CASE("zmtp: protocol violations end the connection with a reason", "[zmtp]") {
  struct Case {
    const char* what;
    std::string bytes;
    const char* reason;
  };
  const std::vector<Case> cases{
      {"HTTP", "GET / HTTP/1.1\r\n\r\n", "not a ZMTP greeting"},
      {"ZMTP 2.0", greeting(1, 0), "not supported"},
      {"CURVE", greeting(3, 1, "CURVE"), "mechanism"},
      {"a PUB peer", greeting() + ready("PUB"), "socket type PUB"},
      {"no socket type", greeting() + frame("\x05READY", false, true), "without Socket-Type"},
      {"a message before READY", greeting() + frame("x", false), "before the READY"},
      {"another command first", greeting() + frame("\x04PING\x00\x00", false, true), "expected the READY"},
      {"a frame over the limit", hello() + frame("", true) + frame(std::string(1001, 'x'), false), "over the limit"},
      {"a huge long-frame size", hello() + "\x02\xff\xff\xff\xff\xff\xff\xff\xff", "over the limit"},
      {"reserved flag bits", hello() + "\x08\x01x", "reserved"},
      {"a command with MORE", hello() + frame("\x04PING\x00\x00", true, true), "MORE"},
      {"a truncated property", greeting() + frame("\x05READY\x0bSocket-Type\x00\x00\x00\x09REQ", false, true),
       "malformed READY"},
      {"ERROR from the peer", hello() + frame("\x05" "ERROR\x03" "bad", false, true), "ERROR"},
  };
  for (const Case& c : cases) {
    INFO(c.what);
    ZmtpPeer peer(kLimits);
    std::vector<Seen> seen;
    std::string out;
    CHECK_FALSE(feed(peer, c.bytes, seen, out));
    CHECK(peer.error().find(c.reason) != std::string::npos);
    CHECK(seen.empty());
    // Once failed, it stays failed.
    CHECK_FALSE(peer.consume("more", [](const ZmtpMessage&) {}, out));
  }
}

TEST_CASE("zmtp: replies are framed as [\"\", body], long frames past 255 bytes", "[zmtp]") {
  std::string out;
  ZmtpPeer::append_reply(out, "ok");
  CHECK(out == frame("", true) + frame("ok", false));
  out.clear();
  const std::string big(300, 'r');
  ZmtpPeer::append_reply(out, big);
  CHECK(out == frame("", true) + frame(big, false));
  CHECK(out[2] == 0x02);
}
