// Who may subscribe to outbid notices (docs/protocol.md "Outbid notices", docs/security.md "The
// feed"), end to end: a real router with the feed and two real bid nodes with security =
// "curve", client certificates written into the mesh's clients_dir by the security library
// (TestMesh::add_client, as bidmesh-keygen writes them), subscribers on real CurveZMQ SUB
// sockets. Every item lives on bid-1, so one bid node's PUB carries every event in order: once a
// subscriber has the final marker event, it has had everything published before it.
#include <catch2/catch.hpp>

#include <functional>
#include <map>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include <zmq.hpp>
#include <zmq_addon.hpp>

#include "protocol/messages.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

std::string item_topic(const std::string& item) { return "item/" + item + "/"; }

// One SUB of the feed with a client's key, and every topic it has received.
struct Watcher {
  Watcher(zmq::context_t& ctx, const TestMesh& mesh, const CurveKeys& keys, const std::vector<std::string>& prefixes)
      : socket(ctx, zmq::socket_type::sub) {
    socket.set(zmq::sockopt::linger, 0);
    socket.set(zmq::sockopt::rcvhwm, 0);  // the test's bursts are small; nothing may be dropped
    apply_curve_keys(socket, keys);
    for (const auto& p : prefixes) socket.set(zmq::sockopt::subscribe, p);
    socket.connect(mesh.feed_endpoint());
  }
  // Reads whatever has arrived, without waiting.
  void drain() {
    for (;;) {
      std::vector<zmq::message_t> frames;
      if (!zmq::recv_multipart(socket, std::back_inserter(frames), zmq::recv_flags::dontwait)) return;
      if (!frames.empty()) ++topics[frames[0].to_string()];
    }
  }
  bool has(const std::string& topic) const { return topics.count(topic) != 0; }
  bool has_item_event() const {
    for (const auto& [t, n] : topics)
      if (t.rfind("item/", 0) == 0) return true;
    return false;
  }
  // Topics received other than `allowed` ones (by exact topic or by prefix).
  std::set<std::string> beyond(const std::vector<std::string>& allowed_prefixes) const {
    std::set<std::string> out;
    for (const auto& [t, n] : topics) {
      bool ok = false;
      for (const auto& p : allowed_prefixes) ok = ok || t.rfind(p, 0) == 0;
      if (!ok) out.insert(t);
    }
    return out;
  }
  zmq::socket_t socket;
  std::map<std::string, int> topics;
};

std::string error_of(const std::optional<Reply>& r) {
  if (!r) return "<no reply>";
  return r->ok ? "ok" : r->error.value_or("<none>");
}

// Subscriptions reach the feed asynchronously (a SUB's subscribe returns before the feed has
// applied it), so a test publishes until its watchers have heard what it waits for: calls
// `publish()`, then drains `watchers`, every `interval`, until `heard()` holds. False at the
// deadline (stretched by BIDMESH_TEST_TIME_SCALE, as every wait_until).
bool publish_until_heard(const std::vector<Watcher*>& watchers, const std::function<void()>& publish,
                         const std::function<bool()>& heard, std::chrono::milliseconds deadline,
                         std::chrono::milliseconds interval) {
  return wait_until(
      [&] {
        publish();
        for (Watcher* w : watchers) w->drain();
        return heard();
      },
      deadline, interval);
}

}  // namespace

TEST_CASE("feed vetting: bidder/ topics reach only their bidder and agents, item events reach everyone, unsubscribe works",
          "[integration][feed][security]") {
  MeshOptions options;
  options.curve = true;
  TestMesh mesh(options);
  const CurveKeys alice = mesh.add_client("alice", "bidder");
  const CurveKeys bob = mesh.add_client("bob", "bidder");
  const CurveKeys agent = mesh.add_client("agent7", "agent");
  const CurveKeys rita = mesh.add_client("rita", "");  // a reader
  mesh.start_all();
  zmq::context_t ctx;
  Client admin(ctx, mesh.request_endpoint(), 2000, 2, "admin", *mesh.admin_keys());  // every role

  const std::string fin = mesh.item_on_node(0, 1000);  // the marker item everybody watches
  REQUIRE(error_of(admin.call(make_request(Op::open, fin))) == "ok");
  const std::string fin_topic = item_topic(fin);
  const auto with_fin = [&](std::vector<std::string> prefixes) {
    prefixes.push_back(fin_topic);
    return prefixes;
  };
  Watcher alice_own(ctx, mesh, alice, with_fin({"bidder/alice/"}));
  Watcher alice_bob(ctx, mesh, alice, with_fin({"bidder/bob/"}));      // someone else's: refused
  Watcher alice_all(ctx, mesh, alice, with_fin({""}));                 // narrowed to item/ + her own
  Watcher alice_b(ctx, mesh, alice, with_fin({"b"}));                  // narrowed to her own
  Watcher alice_wide(ctx, mesh, alice, with_fin({"bidder/"}));         // narrowed to her own
  Watcher bob_own(ctx, mesh, bob, with_fin({"bidder/bob/"}));
  Watcher agent_all(ctx, mesh, agent, with_fin({"bidder/"}));          // an agent sees everyone's
  Watcher rita_all(ctx, mesh, rita, with_fin({""}));                   // a reader: item events only
  Watcher rita_alice(ctx, mesh, rita, with_fin({"bidder/alice/"}));    // refused
  std::vector<Watcher*> all{&alice_own, &alice_bob, &alice_all, &alice_b, &alice_wide,
                            &bob_own,   &agent_all, &rita_all,  &rita_alice};

  // One round: alice leads, bob takes the lead (alice's notice), alice takes it back (bob's).
  int round = 0;
  const auto play_round = [&] {
    const std::string item = mesh.item_on_node(0, round++);
    REQUIRE(error_of(admin.call(make_request(Op::open, item))) == "ok");
    REQUIRE(error_of(admin.call(make_bid(item, "alice", 10))) == "ok");
    REQUIRE(error_of(admin.call(make_bid(item, "bob", 20))) == "ok");
    REQUIRE(error_of(admin.call(make_bid(item, "alice", 30))) == "ok");
  };
  // Rounds until each allowed topic arrived.
  REQUIRE(publish_until_heard(
      all, play_round,
      [&] {
        return alice_own.has("bidder/alice/") && bob_own.has("bidder/bob/") && agent_all.has("bidder/alice/") &&
               agent_all.has("bidder/bob/") && alice_all.has("bidder/alice/") && alice_all.has_item_event() &&
               alice_b.has("bidder/alice/") && alice_wide.has("bidder/alice/") && rita_all.has_item_event();
      },
      20s, 100ms));
  play_round();  // every subscription is live now
  // Marker: bids on `fin` until every watcher has one of its events after that round.
  uint64_t fin_amount = 1;
  const auto sync_on_fin = [&](std::vector<Watcher*> watchers) {
    std::map<Watcher*, int> before;
    for (Watcher* w : watchers) before[w] = w->topics[fin_topic];
    return publish_until_heard(
        all, [&] { REQUIRE(error_of(admin.call(make_bid(fin, "someone", fin_amount++))) == "ok"); },
        [&] {
          for (Watcher* w : watchers)
            if (w->topics[fin_topic] == before[w]) return false;
          return true;
        },
        10s, 20ms);
  };
  REQUIRE(sync_on_fin(all));

  // Never a topic beyond what each key may see.
  CHECK(alice_own.beyond({"bidder/alice/", fin_topic}).empty());
  CHECK(alice_bob.beyond({fin_topic}).empty());  // nothing of bob's
  CHECK(alice_all.beyond({"item/", "bidder/alice/"}).empty());
  CHECK(alice_b.beyond({"bidder/alice/", fin_topic}).empty());
  CHECK(alice_wide.beyond({"bidder/alice/", fin_topic}).empty());
  CHECK(bob_own.beyond({"bidder/bob/", fin_topic}).empty());
  CHECK(agent_all.beyond({"bidder/", fin_topic}).empty());
  CHECK(rita_all.beyond({"item/"}).empty());
  CHECK(rita_alice.beyond({fin_topic}).empty());
  // Item events reach every subscriber that asked for them, whatever its role.
  CHECK(alice_all.topics.size() > 2);  // several items' events, and her notices
  CHECK(rita_all.topics.size() > 2);
  // The refusals are in the router's log (at most a line a second).
  CHECK(wait_until([&] { return read_file(mesh.log_file("router")).find("feed subscription(s)") != std::string::npos; },
                   5s));

  // Unsubscribe: alice drops "" and asks for one more marker item on the same connection; once
  // that marker arrives her unsubscribe has been applied (the feed reads a connection in order).
  const std::string after = mesh.item_on_node(0, 1001);
  REQUIRE(error_of(admin.call(make_request(Op::open, after))) == "ok");
  alice_all.socket.set(zmq::sockopt::unsubscribe, "");
  alice_all.socket.set(zmq::sockopt::subscribe, item_topic(after));
  uint64_t after_amount = 1;
  REQUIRE(publish_until_heard(
      {&alice_all}, [&] { REQUIRE(error_of(admin.call(make_bid(after, "someone", after_amount++))) == "ok"); },
      [&] { return alice_all.has(item_topic(after)); }, 10s, 20ms));
  alice_all.topics.clear();
  play_round();  // alice is outbid again, on a new item
  REQUIRE(sync_on_fin({&alice_all, &alice_own, &agent_all}));
  CHECK(alice_all.beyond({fin_topic, item_topic(after)}).empty());  // neither the item nor her notice
  CHECK(alice_own.topics["bidder/alice/"] >= 2);  // while her other connection still gets hers
}

TEST_CASE("feed vetting: with feed_public a key outside clients_dir is nameless and gets item topics only",
          "[integration][feed][security]") {
  MeshOptions options;
  options.curve = true;
  options.extra_top_level = "feed_public = true";
  TestMesh mesh(options);
  // A key the mesh does not list: written like the others, then taken out of clients_dir.
  const CurveKeys stranger = mesh.add_client("stranger", "agent");
  std::filesystem::remove(mesh.clients_dir() / "stranger.key");
  mesh.start_all();
  zmq::context_t ctx;
  Client admin(ctx, mesh.request_endpoint(), 2000, 2, "admin", *mesh.admin_keys());

  const std::string fin = mesh.item_on_node(0, 1000);
  REQUIRE(error_of(admin.call(make_request(Op::open, fin))) == "ok");
  Watcher everything(ctx, mesh, stranger, {""});
  Watcher alice_topic(ctx, mesh, stranger, {"bidder/alice/", item_topic(fin)});
  int round = 0;
  uint64_t fin_amount = 1;
  // Rounds (alice outbid on each) until both have an event of `fin`, bid on after each round.
  REQUIRE(publish_until_heard(
      {&everything, &alice_topic},
      [&] {
        const std::string item = mesh.item_on_node(0, round++);
        REQUIRE(error_of(admin.call(make_request(Op::open, item))) == "ok");
        REQUIRE(error_of(admin.call(make_bid(item, "alice", 10))) == "ok");
        REQUIRE(error_of(admin.call(make_bid(item, "bob", 20))) == "ok");
        REQUIRE(error_of(admin.call(make_bid(fin, "someone", fin_amount++))) == "ok");
      },
      [&] { return everything.has(item_topic(fin)) && alice_topic.has(item_topic(fin)) && round >= 3; }, 20s, 100ms));
  CHECK(everything.has_item_event());
  CHECK(everything.beyond({"item/"}).empty());            // "" narrowed to item/: no notices
  CHECK(alice_topic.beyond({item_topic(fin)}).empty());   // bidder/alice/ refused
}

TEST_CASE("feed vetting: subscribers that vanish at once and a peer sending non-subscriptions leave the feed serving",
          "[integration][feed][security]") {
  MeshOptions options;
  options.curve = true;
  TestMesh mesh(options);
  const CurveKeys alice = mesh.add_client("alice", "bidder");
  const CurveKeys bob = mesh.add_client("bob", "bidder");
  mesh.start_all();
  zmq::context_t ctx;
  Client admin(ctx, mesh.request_endpoint(), 2000, 2, "admin", *mesh.admin_keys());
  const std::string item = mesh.item_on_node(0, 1);
  REQUIRE(error_of(admin.call(make_request(Op::open, item))) == "ok");

  // An XSUB may send the feed anything: frames that are not subscriptions, and cancels of
  // subscriptions it never made.
  zmq::socket_t rogue(ctx, zmq::socket_type::xsub);
  rogue.set(zmq::sockopt::linger, 0);
  apply_curve_keys(rogue, alice);
  rogue.connect(mesh.feed_endpoint());
  uint64_t amount = 1;
  // Meanwhile subscribers come and go, some closing right after subscribing, while events flow.
  for (int i = 0; i < 150; ++i) {
    for (std::string_view junk : {std::string_view("\x02junk"), std::string_view(""), std::string_view("\x00item/", 6),
                                  std::string_view("\x01bidder/bob/", 12)})
      (void)rogue.send(zmq::buffer(junk), zmq::send_flags::dontwait);
    Watcher quick(ctx, mesh, i % 2 == 0 ? alice : bob, {"", "bidder/bob/"});
    if (i % 10 == 0) REQUIRE(error_of(admin.call(make_bid(item, i % 20 == 0 ? "alice" : "bob", amount++))) == "ok");
    if (i % 3 == 0) std::this_thread::sleep_for(1ms);  // varied lifetimes, not a wait for an outcome
  }
  // Still forwarding, and still vetting: bob gets his notices, alice never bob's.
  Watcher bob_own(ctx, mesh, bob, {"bidder/bob/"});
  Watcher alice_all(ctx, mesh, alice, {""});
  // A subscription that met the rogue's frames in libzmq's queue may have been refused (the
  // feed cannot tell whose it was): a subscriber that hears nothing subscribes again.
  int turns = 0;
  REQUIRE(publish_until_heard(
      {&bob_own, &alice_all},
      [&] {
        if (++turns % 20 == 0) {
          bob_own.socket.set(zmq::sockopt::subscribe, "bidder/bob/");
          alice_all.socket.set(zmq::sockopt::subscribe, "");
        }
        REQUIRE(error_of(admin.call(make_bid(item, "bob", amount++))) == "ok");
        REQUIRE(error_of(admin.call(make_bid(item, "alice", amount++))) == "ok");
      },
      [&] { return bob_own.has("bidder/bob/") && alice_all.has(item_topic(item)) && alice_all.has("bidder/alice/"); },
      20s, 50ms));
  CHECK(alice_all.beyond({"item/", "bidder/alice/"}).empty());
  CHECK(mesh.process("router")->running());
}
