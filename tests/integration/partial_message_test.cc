// A peer that dies in the middle of a multipart message (docs/security.md, "Known risks"):
// libzmq 4.3.4's fair queue (fq.cpp, behind ROUTER and DEALER receive) asserts `!_more` and aborts
// the process if it has handed out frame 1 of a message and frame 2 is not there. A raw TCP peer
// does the ZMTP 3.0 NULL handshake (rfc 23), sends frame 1 with MORE and maybe part of the next
// frame, and closes (FIN or RST), 200 times with varied timing, while honest clients keep calling:
// - on the router's client listen and on a bid node's client_listen: any client on the network;
// - on a bid node's mesh listen (security none): a "router" that dies mid-send;
// - on the router's feed collect (XSUB): a "bid node" PUB that dies mid-event.
// The processes must keep running and serving. libzmq only flushes a multipart message to the
// reader's pipe once its last frame is decoded (ypipe "incomplete" writes, rolled back when the
// connection dies), so none of this is expected to reach fq; the test checks that it stays so.
#include <catch2/catch.hpp>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>

#include "client/client.h"
#include "protocol/config.h"
#include "protocol/messages.h"
#include "tests/support/mesh.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

// "tcp://127.0.0.1:PORT" -> PORT (the test mesh listens on loopback only).
int port_of(const std::string& endpoint) {
  const auto colon = endpoint.rfind(':');
  REQUIRE(colon != std::string::npos);
  return std::stoi(endpoint.substr(colon + 1));
}

// A raw TCP connection to loopback speaking just enough ZMTP 3.0 to start a message.
class RawZmtpPeer {
 public:
  explicit RawZmtpPeer(int port) : fd_(::socket(AF_INET, SOCK_STREAM, 0)) {
    REQUIRE(fd_ >= 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(static_cast<uint16_t>(port));
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    connected_ = ::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  }
  ~RawZmtpPeer() { close(false); }
  RawZmtpPeer(const RawZmtpPeer&) = delete;
  RawZmtpPeer& operator=(const RawZmtpPeer&) = delete;

  bool connected() const { return connected_; }

  // Greeting (64 bytes: signature, version 3.0, mechanism NULL, as-server 0, filler) and READY
  // with this Socket-Type, as rfc 23 lays them out.
  static std::string handshake(const std::string& value = "DEALER") {
    std::string g(64, '\0');
    g[0] = '\xff';
    g[9] = '\x7f';
    g[10] = 3;
    g[11] = 0;
    std::memcpy(&g[12], "NULL", 4);
    std::string ready_body = std::string("\x05READY", 6);
    const std::string name = "Socket-Type";
    ready_body += static_cast<char>(name.size()) + name;
    ready_body += std::string("\0\0\0", 3) + static_cast<char>(value.size()) + value;
    g += '\x04';  // command, short size
    g += static_cast<char>(ready_body.size());
    g += ready_body;
    return g;
  }
  // A short frame header: flags (MORE = 1) and a 1-byte size.
  static std::string frame(const std::string& body, bool more) {
    REQUIRE(body.size() < 256);
    return std::string(1, more ? '\x01' : '\x00') + static_cast<char>(body.size()) + body;
  }

  bool write_all(const std::string& bytes) {
    std::size_t done = 0;
    while (done < bytes.size()) {
      const ssize_t n = ::send(fd_, bytes.data() + done, bytes.size() - done, MSG_NOSIGNAL);
      if (n <= 0) return false;  // the peer closed first: fine for this test
      done += static_cast<std::size_t>(n);
    }
    return true;
  }
  // Reads the server's greeting and READY (64 bytes, then a short command frame); false after
  // `deadline` or on close.
  bool read_handshake(std::chrono::milliseconds deadline) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    if (!read_at_least(66, until)) return false;
    if (!read_at_least(66u + static_cast<unsigned char>(in_[65]), until)) return false;
    in_.erase(0, 66u + static_cast<unsigned char>(in_[65]));
    return true;
  }
  // The data frames of the next whole message (short or long frames; commands skipped), or
  // nullopt after `deadline` or on close.
  std::optional<std::vector<std::string>> read_message(std::chrono::milliseconds deadline) {
    const auto until = std::chrono::steady_clock::now() + deadline;
    std::vector<std::string> frames;
    while (true) {
      if (!read_at_least(2, until)) return std::nullopt;
      const auto flags = static_cast<unsigned char>(in_[0]);
      std::size_t header = 2, size = static_cast<unsigned char>(in_[1]);
      if (flags & 0x02) {  // long frame: 8-byte big-endian size
        if (!read_at_least(9, until)) return std::nullopt;
        header = 9;
        size = 0;
        for (int b = 1; b < 9; ++b) size = (size << 8) | static_cast<unsigned char>(in_[b]);
        if (size > (1u << 20)) return std::nullopt;
      }
      if (!read_at_least(header + size, until)) return std::nullopt;
      const std::string body = in_.substr(header, size);
      in_.erase(0, header + size);
      if (flags & 0x04) continue;  // a command (PING, ...)
      frames.push_back(body);
      if (!(flags & 0x01)) return frames;
    }
  }
  // Closes with FIN, or with RST (SO_LINGER 0) when `reset`.
  void close(bool reset) {
    if (fd_ < 0) return;
    if (reset) {
      linger l{1, 0};
      ::setsockopt(fd_, SOL_SOCKET, SO_LINGER, &l, sizeof l);
    }
    ::close(fd_);
    fd_ = -1;
  }

 private:
  bool read_at_least(std::size_t n, std::chrono::steady_clock::time_point until) {
    while (in_.size() < n) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - std::chrono::steady_clock::now());
      if (left <= 0ms) return false;
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
      char buf[4096];
      const ssize_t got = ::recv(fd_, buf, sizeof buf, 0);
      if (got <= 0) return false;
      in_.append(buf, static_cast<std::size_t>(got));
    }
    return true;
  }

  int fd_;
  std::string in_;  // read, not yet consumed
  bool connected_ = false;
};

// One dying peer, variant picked by `i`: frame 1 (MORE) then close; + half of frame 2; + a whole
// frame 2 (MORE) and half of frame 3; all of it in one write before the handshake reply. Frames
// in separate writes, 0-2 ms apart, so that the server's reads split them differently; FIN or
// RST. `frames` are the message's frames (each under 256 bytes, the first sent whole).
void one_dying_peer(int port, int i, const std::vector<std::string>& frames, const std::string& socket_type) {
  RawZmtpPeer peer(port);
  if (!peer.connected()) return;
  const int variant = i % 4;
  const bool reset = (i / 4) % 2 == 1;
  const auto gap = std::chrono::milliseconds(i % 3);  // varies the timing, waits on nothing
  std::string first = RawZmtpPeer::frame(frames[0], true);
  const std::string second_whole = RawZmtpPeer::frame(frames[1], true);
  const std::string second_half = second_whole.substr(0, 2 + frames[1].size() / 2);
  const std::string third_half = RawZmtpPeer::frame(frames[2], true).substr(0, 2 + frames[2].size() / 2);
  if (variant == 3) {
    peer.write_all(RawZmtpPeer::handshake(socket_type) + first + second_half);
    peer.close(reset);
    return;
  }
  if (!peer.write_all(RawZmtpPeer::handshake(socket_type)) || !peer.read_handshake(5s)) return;
  if (!peer.write_all(first)) return;
  std::this_thread::sleep_for(gap);
  if (variant == 1) peer.write_all(second_half);
  if (variant == 2) {
    peer.write_all(second_whole);
    std::this_thread::sleep_for(gap);
    peer.write_all(third_half);
  }
  peer.close(reset);
}

// Honest calls in a thread while the peers die: counts answered and unanswered `get`s.
struct HonestLoad {
  HonestLoad(const std::string& endpoint, std::vector<std::string> items)
      : thread([this, endpoint, items = std::move(items)] {
          zmq::context_t ctx;
          Client c(ctx, endpoint, 3000, 2);
          for (uint64_t n = 0; !stop; ++n) {
            Request get;
            get.op = Op::get;
            get.item = items[n % items.size()];
            auto reply = c.call(get);
            (reply.has_value() && reply->ok ? answered : failed)++;
          }
        }) {}
  ~HonestLoad() { finish(); }
  void finish() {
    stop = true;
    if (thread.joinable()) thread.join();
  }
  std::atomic<bool> stop{false};
  std::atomic<int> answered{0}, failed{0};
  std::thread thread;
};

}  // namespace

TEST_CASE("partial multipart: peers dying mid-message do not abort the router or a bid node",
          "[integration][hostile]") {
  const std::string where = GENERATE(as<std::string>{}, "router client listen", "bid node client_listen",
                                     "bid node mesh listen", "router feed collect");
  MeshOptions options;
  options.request_timeout_ms = 5000;  // a loaded machine must not turn a slow node into `unavailable`
  options.client_listen = true;
  TestMesh mesh(options);
  mesh.start_all();
  const std::string item0 = mesh.item_on_node(0, 5), item1 = mesh.item_on_node(1, 5);
  {
    zmq::context_t ctx;
    Client c(ctx, mesh.request_endpoint(), 3000, 2);
    for (const auto& item : {item0, item1}) {
      Request open;
      open.op = Op::open;
      open.item = item;
      REQUIRE(must_call(c, open).ok);
    }
  }

  int port = 0;
  std::string socket_type = "DEALER";
  // Frames a client (delimiter, request) or the router (id, token, digest, principal, body) sends.
  std::vector<std::string> frames{"", std::string(120, 'x'), std::string(200, 'y')};
  if (where == "router client listen") port = port_of(mesh.request_endpoint());
  if (where == "bid node client_listen") port = port_of(mesh.client_endpoint(0));
  if (where == "bid node mesh listen") {
    const MeshConfig cfg = load_mesh_config(mesh.config_path());
    const NodeConfig* node = cfg.find(mesh.bid_node_name(0));
    REQUIRE(node != nullptr);
    port = port_of(node->listen);
    frames = {"id-1", std::string(8, '\x01'), std::string(32, 'd')};
  }
  if (where == "router feed collect") {  // the XSUB bid nodes' PUBs connect to: a dying "bid node"
    port = port_of(load_mesh_config(mesh.config_path()).feed_collect);
    socket_type = "PUB";
    frames = {"item-topic", std::string(100, 'e'), std::string(100, 'f')};
  }
  INFO("dying peers on " << where << " (port " << port << ")");

  if (socket_type == "DEALER" && where != "bid node mesh listen") {
    // The raw peer's bytes are right: the same handshake and a whole ping get a reply.
    RawZmtpPeer peer(port);
    REQUIRE(peer.connected());
    REQUIRE(peer.write_all(RawZmtpPeer::handshake()));
    REQUIRE(peer.read_handshake(5s));
    const std::string ping = "\x82\xa2op\xa4ping\xa2id\xa3raw";  // {op: ping, id: raw}
    REQUIRE(peer.write_all(RawZmtpPeer::frame("", true) + RawZmtpPeer::frame(ping, false)));
    const auto reply = peer.read_message(10s);
    REQUIRE(reply.has_value());
    REQUIRE(reply->size() == 2);
    CHECK(reply->at(0).empty());
    const auto decoded = decode_reply(reply->at(1));
    REQUIRE(decoded.has_value());
    CHECK(decoded->ok);
    CHECK(decoded->id == std::optional<std::string>("raw"));
  }

  // Honest calls through the endpoint under attack where clients may call it, so that its socket
  // reads whole messages from other connections while the dying ones come and go.
  HonestLoad load(where == "bid node client_listen" ? mesh.client_endpoint(0) : mesh.request_endpoint(),
                  where == "bid node client_listen" ? std::vector<std::string>{item0} : std::vector<std::string>{item0, item1});
  const int kPeers = 200;
  for (int i = 0; i < kPeers; ++i) one_dying_peer(port, i, frames, socket_type);
  // Calls keep being answered after the last dying peer (not only before it).
  const int answered_before = load.answered;
  const auto until = std::chrono::steady_clock::now() + 20s;
  while (load.answered < answered_before + 20 && std::chrono::steady_clock::now() < until)
    std::this_thread::sleep_for(10ms);
  load.finish();
  std::printf("partial multipart on %s: %d dying peers, %d honest gets answered, %d not\n", where.c_str(), kPeers,
              load.answered.load(), load.failed.load());

  for (const std::string& name : {std::string("router"), mesh.bid_node_name(0), mesh.bid_node_name(1)}) {
    INFO(name << " log:\n" << mesh.log_tail(name));
    CHECK(mesh.process(name)->running());
  }
  CHECK(load.answered >= answered_before + 20);
  CHECK(load.failed == 0);
}
