// Crash under load and retries across restarts (docs/reliability.md, tests 1 and 3).
//   - The history checker: client processes bid while a bid node is killed with SIGKILL every
//     2 s; every acknowledged bid is stored once, nothing twice (tests/reliability/history.h).
//     The 10 s run is here; `tools/reliability crash --seconds 60` is the long one. A second 8 s
//     run gives the clients a 4 ms deadline, so that some requests end `unknown`.
//   - A client that times out and retries with the same id while the node restarts gets one
//     stored bid and the first reply; abandoned sockets (linger 0) never replay a request.
#include <catch2/catch.hpp>

#include <cstdlib>
#include <iostream>
#include <set>

#include <zmq.hpp>

#include "nodes/failpoint.h"
#include "protocol/messages.h"
#include "tests/reliability/scenarios.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

std::vector<Event> full_history(Client& c, const std::string& item) {
  std::vector<Event> out;
  uint64_t after = 0;
  for (int page = 0; page < 1000; ++page) {
    Request h = make_request(Op::history, item);
    h.after = after;
    h.limit = kMaxHistoryLimit;
    auto r = c.call(h);
    REQUIRE(r);
    REQUIRE(r->ok);
    out.insert(out.end(), r->events.begin(), r->events.end());
    if (r->events.size() < kMaxHistoryLimit) break;
    after = r->events.back().seq;
  }
  return out;
}

// Sends `frame` on a fresh REQ socket and waits up to `wait` for the reply; the socket is then
// closed with linger 0, whatever happened (a client that gives up).
std::optional<std::string> one_try(zmq::context_t& ctx, const std::string& endpoint, const std::string& frame,
                                   std::chrono::milliseconds wait) {
  zmq::socket_t s(ctx, zmq::socket_type::req);
  s.set(zmq::sockopt::linger, 0);
  s.connect(endpoint);
  (void)s.send(zmq::buffer(frame), zmq::send_flags::dontwait);
  zmq::pollitem_t items[] = {{s.handle(), 0, ZMQ_POLLIN, 0}};
  zmq::poll(items, 1, wait);
  if (!(items[0].revents & ZMQ_POLLIN)) return std::nullopt;
  zmq::message_t m;
  if (!s.recv(m, zmq::recv_flags::dontwait)) return std::nullopt;
  return m.to_string();
}

// Checks every guarantee of the history checker (history.h) on a crash scenario's result.
void run_and_check_crash(const rel::CrashResult& r) {
  std::cout << r.summary() << std::endl;
  INFO(r.summary());
  REQUIRE(r.error.empty());
  CHECK(r.kills >= 3);
  CHECK(r.check.requests > 100);
  CHECK(r.check.ok > 0);
  CHECK(r.check.lost == 0);
  CHECK(r.check.duplicated == 0);
  CHECK(r.check.refused_stored == 0);
  CHECK(r.check.phantom == 0);
  CHECK(r.check.order == 0);
  CHECK(r.check.get_mismatch == 0);
  CHECK(r.check.read_failures == 0);
  CHECK(r.passed());
}
void run_and_check_crash(const rel::CrashOptions& o) { run_and_check_crash(rel::run_crash(o)); }

}  // namespace

TEST_CASE("crash under load: SIGKILL every 2 s for 10 s loses no acknowledged bid and stores none twice",
          "[reliability][crash]") {
  rel::CrashOptions o;
  o.seconds = 10;
  o.clients = 3;
  run_and_check_crash(o);
}

TEST_CASE("crash under direct load: SIGKILL of a bid node while clients send to it directly loses no acknowledged "
          "bid and stores none twice",
          "[reliability][crash][direct]") {
  // Direct clients (protocol v1.2): each bid goes to its item's bid node; while bid-1 is down
  // they fall back to the router (which answers unavailable until the supervisor has restarted
  // it) and go back to direct once it listens again. Same ids on both paths.
  rel::CrashOptions o;
  o.seconds = 10;
  o.clients = 3;
  o.direct = true;
  const rel::CrashResult r = rel::run_crash(o);
  run_and_check_crash(r);
  CHECK(r.direct_answers > 0);   // the direct path carried the load...
  CHECK(r.router_answers > 0);   // ...the router took over while bid-1 was down...
  CHECK(r.direct_answers > r.router_answers);  // ...and the clients went back to direct
}

TEST_CASE("crash under load with a 4 ms client deadline: requests that end unknown are stored once or not at all",
          "[reliability][crash]") {
  // Tries of 2 ms and a request deadline of 4 ms, shorter than a restart plus the client's
  // retries: requests in flight at a kill, sent while bid-1 is down, or slowed by the loaded
  // machine end `unknown`, and the checker classifies each (stored once, or not at all: a second
  // copy would count as duplicated). How many end unknown depends on the machine (tens in 8 s on
  // the project's VM, both kinds), so the test requires the guarantees, not a count.
  // Under a sanitizer (time_scale() > 1) a round trip takes longer than 4 ms on the loaded VM (ASan:
  // 0 of 474 requests ok with tries of 6 ms and a 12 ms deadline, 275 of 532 with 20 and 40 ms);
  // 20 and 40 ms are still far shorter than a restart (300-600 ms there), so requests in flight
  // at a kill still end unknown.
  const bool sanitized = time_scale() > 1;
  rel::CrashOptions o;
  o.seconds = 8;
  o.clients = 3;
  o.kill_every_ms = 1500;
  o.client_timeout_ms = sanitized ? 20 : 2;
  o.client_deadline_ms = sanitized ? 40 : 4;
  run_and_check_crash(o);
}

TEST_CASE("crash under load with kills inside checkpoints: the log replay loses nothing and repeats nothing",
          "[reliability][crash][wal]") {
  // Checkpoints every 16 KiB of log, each held 300 ms before its LMDB commit (failpoint); each
  // kill waits for the node to announce a hold, so it lands inside a checkpoint with a full tail.
  rel::CrashOptions o;
  o.seconds = 10;
  o.clients = 3;
  o.kill_every_ms = 1500;
  o.checkpoint_kb = 16;
  o.checkpoint_hold_ms = 300;
  const rel::CrashResult r = rel::run_crash(o);
  run_and_check_crash(r);
  CHECK(r.kills_in_checkpoint >= 1);  // each kill waits for a hold (scenarios.h)
}

TEST_CASE("a retry with the same id while the node restarts gets one stored bid and the first reply",
          "[reliability][retry]") {
  // The commit is held 400 ms, so the first try times out (100 ms) while its bid is being stored.
  EnvGuard fp(failpoint::kCommitDelayEnv, "400");
  MeshOptions mo;
  mo.bid_nodes = 1;
  TestMesh mesh(mo);
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 3000, 3);
  const std::string item = mesh.item_on_node(0, 1);
  REQUIRE(c.call(make_request(Op::open, item))->ok);
  const std::string frame = encode_request(make_bid(item, "rita", 10, "retry-1"));

  // Try 1 times out and is abandoned; its bid is committed after all (the reply goes nowhere).
  CHECK_FALSE(one_try(ctx, mesh.request_endpoint(), frame, 100ms));
  REQUIRE(wait_until([&] { auto g = c.call(make_request(Op::get, item)); return g && g->u64("bids") == 1u; }, 10s));
  // The node dies; the client retries the same frame while it is down, then while it restarts.
  mesh.kill_node("bid-1");
  auto down = one_try(ctx, mesh.request_endpoint(), frame, 2000ms);
  REQUIRE(down);  // the router answers at once: the owner is not connected
  CHECK(decode_reply(*down)->error == std::optional<std::string>("unavailable"));
  mesh.start_node("bid-1");
  std::optional<Reply> retried;
  int tries = 1;
  REQUIRE(wait_until(
      [&] {
        ++tries;
        auto raw = one_try(ctx, mesh.request_endpoint(), frame, 1500ms);
        if (!raw) return false;
        auto r = decode_reply(*raw);
        if (!r || r->error == std::optional<std::string>("unavailable")) return false;
        retried = r;
        return true;
      },
      20s, 20ms));
  INFO("tries " << tries);
  REQUIRE(retried->ok);
  CHECK(retried->id == std::optional<std::string>("retry-1"));
  CHECK(retried->u64("seq") == 2u);  // the first try's reply: its seq, not a new one
  CHECK(retried->u64("amount") == 10u);
  // Exactly one stored bid; the same frame again still gets the same bytes.
  const auto h = full_history(c, item);
  int stored = 0;
  for (const auto& e : h) stored += e.kind == EventKind::max && e.bidder == std::optional<std::string>("rita");
  CHECK(stored == 1);
  CHECK(c.call(make_request(Op::get, item))->u64("bids") == 1u);
  auto again = one_try(ctx, mesh.request_endpoint(), frame, 5000ms);
  REQUIRE(again);
  CHECK(decode_reply(*again)->u64("seq") == 2u);
  std::printf("retry: first try abandoned after 100 ms, node killed, %d more tries until the remembered reply\n", tries);
}

TEST_CASE("abandoned client sockets (linger 0) never replay a request as a new one", "[reliability][retry]") {
  MeshOptions mo;
  mo.bid_nodes = 1;
  TestMesh mesh(mo);
  std::optional<EnvGuard> fp;
  fp.emplace(failpoint::kCommitDelayEnv, "300");
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 3000, 3);
  const std::string item = mesh.item_on_node(0, 2);
  REQUIRE(c.call(make_request(Op::open, item))->ok);

  // 30 requests whose sockets are closed at once (linger 0), then the node is killed while it
  // holds a commit: each is stored once now, or never.
  std::set<std::string> abandoned;
  for (int k = 1; k <= 30; ++k) {
    const std::string who = "ab-" + std::to_string(k);
    abandoned.insert(who);
    (void)one_try(ctx, mesh.request_endpoint(), encode_request(make_bid(item, who, 100 + k, who)), 50ms);
  }
  mesh.kill_node("bid-1");
  // 10 more while the node is down.
  for (int k = 1; k <= 10; ++k) {
    const std::string who = "down-" + std::to_string(k);
    abandoned.insert(who);
    (void)one_try(ctx, mesh.request_endpoint(), encode_request(make_bid(item, who, 200 + k, who)), 50ms);
  }
  fp.reset();  // the restarted node commits at full speed
  mesh.start_node("bid-1");
  REQUIRE(mesh.wait_node_serving(0, 20s));
  const auto before = full_history(c, item);
  // Live bids for 2.5 s (past the router's request timeout, 1 s): a replayed request would show
  // up among them.
  uint64_t amount = 1000;
  int live = 0;
  const auto until = std::chrono::steady_clock::now() + 2500ms;
  while (std::chrono::steady_clock::now() < until && live < 5000) {
    ++amount;
    auto r = c.call(make_bid(item, "live", amount, "live-" + std::to_string(amount)));
    REQUIRE(r);
    CHECK(r->ok);
    ++live;
  }
  const auto after = full_history(c, item);
  std::map<std::string, int> count;
  int stored_before = 0, replayed = 0;
  for (const auto& e : after) {
    if (e.kind != EventKind::max || !e.bidder || !abandoned.count(*e.bidder)) continue;
    ++count[*e.bidder];
    if (e.seq > before.back().seq) ++replayed;
    else ++stored_before;
  }
  for (const auto& [who, n] : count) CHECK(n == 1);
  CHECK(replayed == 0);
  std::printf("abandoned sockets: %zu requests abandoned, %d stored once before the restart, %d replayed during %d live bids\n",
              abandoned.size(), stored_before, replayed, live);
}
