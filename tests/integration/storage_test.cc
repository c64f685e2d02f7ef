// The bid node's storage under stress, with real processes and real LMDB files
// (docs/reliability.md, "Disk full", "Stale readers and dead writers", "Durability switch"):
// - a map too small for the data: writes fail cleanly with `internal` "storage full", reads keep
//   working, nothing acknowledged is lost, the log says what the operator must do, and raising
//   map_size_mb and restarting is enough;
// - kill -9 under sustained write and `history` load while another process holds the environment
//   open (as a backup or mdb_stat would): the node always holds LMDB's writer mutex (its
//   checkpoint transaction stays open) and no reader slot, so every kill leaves the mutex with a
//   dead owner; the restarted node recovers it and serves at once;
// - durability can only be turned off by the plain-words value; anything else refuses to start.
#include <catch2/catch.hpp>

#include <sys/wait.h>

#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include <lmdb.h>
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

void write_file(const std::filesystem::path& p, const std::string& text) {
  std::ofstream out(p, std::ios::trunc);
  out << text;
}

// Replaces the first occurrence of `what` in the mesh config (REQUIREs that it is there).
void edit_config(const TestMesh& mesh, const std::string& what, const std::string& with) {
  std::string text = read_file(mesh.config_path());
  const auto at = text.find(what);
  REQUIRE(at != std::string::npos);
  text.replace(at, what.size(), with);
  write_file(mesh.config_path(), text);
}

bool log_contains(const TestMesh& mesh, const std::string& node, const std::string& text) {
  return read_file(mesh.log_file(node)).find(text) != std::string::npos;
}

Request bid_of_amount(const std::string& item, uint64_t amount, const std::string& id = "") {
  return make_bid(item, "b" + std::to_string(amount % 7), amount, id);
}

// A DEALER that keeps up to `window` requests in flight and hands back replies as they come.
class Pipeline {
 public:
  Pipeline(zmq::context_t& ctx, const std::string& endpoint) : socket_(ctx, zmq::socket_type::dealer) {
    socket_.set(zmq::sockopt::linger, 0);
    socket_.set(zmq::sockopt::sndtimeo, 5000);
    socket_.set(zmq::sockopt::maxmsgsize, kClientMaxReplyBytes);
    socket_.connect(endpoint);
  }
  bool send(const Request& r) {
    const std::string frame = encode_request(r);
    std::array<zmq::const_buffer, 2> parts{zmq::buffer(std::string_view()), zmq::buffer(frame)};
    if (!zmq::send_multipart(socket_, parts)) return false;
    ++in_flight_;
    return true;
  }
  std::optional<Reply> recv(std::chrono::milliseconds deadline) {
    zmq::pollitem_t items[] = {{socket_.handle(), 0, ZMQ_POLLIN, 0}};
    if (zmq::poll(items, 1, deadline) == 0) return std::nullopt;
    std::vector<zmq::message_t> frames;
    if (!zmq::recv_multipart(socket_, std::back_inserter(frames), zmq::recv_flags::dontwait)) return std::nullopt;
    if (frames.size() != 2) return std::nullopt;
    --in_flight_;
    return decode_reply(frames[1].to_string_view());
  }
  int in_flight() const { return in_flight_; }

 private:
  zmq::socket_t socket_;
  int in_flight_ = 0;
};

// Another process's view of a bid node's LMDB environment (read-only), as a backup tool or
// `mdb_stat -r` would hold it. While it is open, a restarted node does not get LMDB's exclusive
// lock, so the lock file's reader table is NOT reset on open: only mdb_reader_check clears the
// slots of a dead node.
class Observer {
 public:
  struct Slot {
    long pid = 0;
    bool in_txn = false;  // a read transaction was open
  };
  explicit Observer(const std::filesystem::path& dir) : dir_(dir) {
    REQUIRE(mdb_env_create(&env_) == 0);
    REQUIRE(mdb_env_set_maxdbs(env_, 8) == 0);
    const int rc = mdb_env_open(env_, dir.c_str(), MDB_RDONLY, 0600);
    INFO("mdb_env_open " << dir << ": " << mdb_strerror(rc));
    REQUIRE(rc == 0);
  }
  ~Observer() { mdb_env_close(env_); }
  Observer(const Observer&) = delete;
  Observer& operator=(const Observer&) = delete;

  // The reader table (mdb_reader_list; this process holds no slot: it never reads).
  std::vector<Slot> readers() const {
    std::vector<Slot> out;
    mdb_reader_list(
        env_,
        [](const char* msg, void* ctx) -> int {
          long pid = 0;
          unsigned long tid = 0;
          char txn[32] = {0};
          if (std::sscanf(msg, "%ld %lx %31s", &pid, &tid, txn) == 3)
            static_cast<std::vector<Slot>*>(ctx)->push_back(Slot{pid, std::string(txn) != "-"});
          return 0;
        },
        &out);
    return out;
  }
  // The futex word of LMDB's writer mutex (robust, process-shared) in lock.mdb: 0 when free, the
  // owner's thread id while held, and FUTEX_OWNER_DIED (0x40000000) once the kernel has seen its
  // owner die holding it, until the next writer recovers it. LMDB 0.9 on x86-64 glibc:
  // MDB_txninfo's first cache line (64 bytes) holds the reader mutex and txnid, then comes the
  // writer mutex, whose first int is the lock word. Read only to report where kills landed.
  uint32_t writer_lock_word() const {
    std::ifstream in(dir_ / "lock.mdb", std::ios::binary);
    uint32_t word = 0;
    in.seekg(64);
    in.read(reinterpret_cast<char*>(&word), sizeof word);
    return in ? word : 0;
  }
  std::vector<Slot> slots_of(long pid) const {
    std::vector<Slot> out;
    for (const Slot& s : readers())
      if (s.pid == pid) out.push_back(s);
    return out;
  }

 private:
  const std::filesystem::path dir_;
  MDB_env* env_ = nullptr;
};

}  // namespace

TEST_CASE("disk full: writes fail with internal 'storage full', reads and acknowledged data survive",
          "[integration][storage]") {
  MeshOptions options;
  options.bid_nodes = 1;
  options.map_size_mb = 1;
  options.request_timeout_ms = 5000;  // a loaded machine must not turn a slow batch into `unavailable`
  TestMesh mesh(options);
  mesh.start_all();
  zmq::context_t ctx;
  const std::string node = mesh.bid_node_name(0);

  // Fill: items of 40 bids each, pipelined (group commit keeps it fast), until the map is full
  // and 200 writes have been refused.
  struct Outcome {
    std::string item;
    uint64_t amount = 0;  // 0: the open
  };
  std::map<std::string, Outcome> sent;                 // id -> what it was
  std::map<std::string, std::vector<uint64_t>> acked;  // item -> acknowledged bid amounts
  std::set<std::string> opened;
  int full_replies = 0, other_failures = 0, oks = 0;
  std::string full_message;
  {
    Pipeline p(ctx, mesh.request_endpoint());
    uint64_t n = 0;
    const uint64_t kMaxWrites = 400000;  // far more than 1 MiB can hold
    auto handle = [&](const Reply& r) {
      REQUIRE(r.id.has_value());
      const Outcome& o = sent.at(*r.id);
      if (r.ok) {
        ++oks;
        if (o.amount == 0) opened.insert(o.item);
        else acked[o.item].push_back(o.amount);
      } else if (r.error == std::optional<std::string>("internal") &&
                 r.message.value_or("").find("storage full") != std::string::npos) {
        ++full_replies;
        full_message = r.message.value_or("");
      } else {
        ++other_failures;  // e.g. unknown_item for bids on an item whose open was refused
      }
    };
    while (full_replies < 200 && n < kMaxWrites) {
      while (p.in_flight() < 256 && n < kMaxWrites) {
        const std::string item = "full-" + std::to_string(n / 41);
        const uint64_t k = n % 41;
        const std::string id = "f-" + std::to_string(n);
        Request r = k == 0 ? make_request(Op::open, item, id) : bid_of_amount(item, k, id);
        sent[id] = Outcome{item, k};
        REQUIRE(p.send(r));
        ++n;
      }
      auto reply = p.recv(10s);
      REQUIRE(reply.has_value());
      handle(*reply);
    }
    while (p.in_flight() > 0) {
      auto reply = p.recv(10s);
      REQUIRE(reply.has_value());
      handle(*reply);
    }
    std::printf("disk full: %llu writes sent, %d acknowledged, %d refused 'storage full', %d other refusals\n",
                static_cast<unsigned long long>(n), oks, full_replies, other_failures);
  }
  REQUIRE(full_replies > 0);
  CHECK(full_message.find("raise map_size_mb") != std::string::npos);
  REQUIRE(oks > 0);

  // Every acknowledged write is there, and reads keep working on the full store.
  auto check_all_acknowledged = [&](const char* when) {
    Client c(ctx, mesh.request_endpoint(), 3000, 2);
    for (const std::string& item : opened) {
      INFO(when << ": item " << item);
      const auto& amounts = acked[item];
      auto g = c.call(make_request(Op::get, item));
      REQUIRE(g.has_value());
      REQUIRE(g->ok);
      CHECK(g->u64("bids") == amounts.size());
      if (!amounts.empty()) CHECK(g->u64("max") == amounts.back());
      auto h = c.call(make_request(Op::history, item));
      REQUIRE(h.has_value());
      REQUIRE(h->ok);
      REQUIRE(h->events.size() == amounts.size() + 1);
      for (std::size_t i = 0; i < amounts.size(); ++i) CHECK(h->events[i + 1].amount == amounts[i]);
    }
  };
  check_all_acknowledged("full");

  // Single writes one at a time: a batch of 256 no longer fits, but a transaction of one write
  // may still (LMDB reuses the pages older transactions freed), so they go on until the map
  // holds no more, and then get the same refusal. Those acknowledged are checked like the rest.
  int single_oks = 0;
  {
    Client c(ctx, mesh.request_endpoint(), 3000, 2);
    std::string last_error;
    for (int i = 0; i < 20000 && last_error != "internal"; ++i) {
      const std::string item = "full-new-" + std::to_string(i);
      auto r = c.call(make_request(Op::open, item));
      REQUIRE(r.has_value());
      last_error = r->ok ? "ok" : r->error.value_or("");
      if (r->ok) {
        ++single_oks;
        opened.insert(item);
      } else {
        CHECK(r->message.value_or("").find("storage full") != std::string::npos);
      }
    }
    CHECK(last_error == "internal");
    CHECK(c.call(make_request(Op::ping, "")).value_or(Reply{}).ok);
  }
  std::printf("disk full: then %d single opens acknowledged before one was refused\n", single_oks);
  check_all_acknowledged("full, after single writes");

  // The operator is told what to do.
  REQUIRE(wait_until([&] { return log_contains(mesh, node, "storage full"); }, 5s));
  const std::string log = read_file(mesh.log_file(node));
  CHECK(log.find("Operator: raise map_size_mb for node " + node) != std::string::npos);
  CHECK(log.find("reads still work") != std::string::npos);

  // The full store survives a crash with everything acknowledged, and serves reads at once.
  mesh.kill_node(node);
  mesh.start_node(node);
  REQUIRE(mesh.wait_node_serving(0, 20s));
  check_all_acknowledged("restarted full");

  // What the operator does: raise map_size_mb and restart. Writes work again.
  mesh.stop_node(node, SIGTERM);
  edit_config(mesh, "map_size_mb = 1\n", "map_size_mb = 8\n");
  mesh.start_node(node);
  REQUIRE(mesh.wait_node_serving(0, 20s));
  check_all_acknowledged("map raised");
  Client c(ctx, mesh.request_endpoint(), 3000, 2);
  auto open = c.call(make_request(Op::open, "full-after-raise"));
  REQUIRE(open.has_value());
  CHECK(open->ok);
  CHECK(c.call(bid_of_amount("full-after-raise", 5)).value_or(Reply{}).ok);
}

TEST_CASE("stale locks: a bid node killed -9 under write and read load recovers LMDB's writer lock and serves at once",
          "[integration][storage]") {
  MeshOptions options;
  options.bid_nodes = 1;
  options.request_timeout_ms = 5000;  // a loaded machine must not turn a slow batch into `unavailable`
  TestMesh mesh(options);
  mesh.start_all();
  zmq::context_t ctx;
  const std::string node = mesh.bid_node_name(0);

  // Items with long histories, so a `history` of 1000 events is a long read.
  const int kItems = 4, kEventsPerItem = 1000;
  std::vector<std::string> items;
  std::map<std::string, uint64_t> next_amount, acked_max;
  {
    Pipeline p(ctx, mesh.request_endpoint());
    for (int i = 0; i < kItems; ++i) {
      items.push_back("stale-" + std::to_string(i));
      REQUIRE(p.send(make_request(Op::open, items.back(), "open-" + std::to_string(i))));
    }
    while (p.in_flight() > 0) REQUIRE(p.recv(10s).value_or(Reply{}).ok);
    int n = 0;
    for (int k = 1; k < kEventsPerItem; ++k) {
      for (const auto& item : items) {
        REQUIRE(p.send(bid_of_amount(item, k, "seed-" + std::to_string(n++))));
        while (p.in_flight() >= 256) REQUIRE(p.recv(10s).value_or(Reply{}).ok);
      }
    }
    while (p.in_flight() > 0) REQUIRE(p.recv(10s).value_or(Reply{}).ok);
    for (const auto& item : items) next_amount[item] = acked_max[item] = kEventsPerItem - 1;
  }

  Observer observer(mesh.dir() / "data" / node);
  std::mt19937 rng(20240501);
  const int kKills = 8;
  int kills_with_stale_slots = 0, kills_mid_read = 0, kills_mid_write = 0;
  // The checkpoint transaction is always open, so the node holds the writer mutex even at rest
  // (its owner's thread id), and a kill -9 always lands inside a write transaction.
  REQUIRE((observer.writer_lock_word() & 0x3fffffffu) != 0);
  uint64_t writes_acked = 0, reads_answered = 0;
  long max_restart_ms = 0;
  std::vector<long> restart_ms;
  int id_counter = 0;
  for (int kill = 0; kill < kKills; ++kill) {
    const bool read_heavy = kill % 2 == 1;
    const pid_t pid = mesh.process(node)->pid();
    {
      // Sustained load for a random while, then SIGKILL with a full window in flight.
      Pipeline p(ctx, mesh.request_endpoint());
      const auto load_for = std::chrono::milliseconds(150 + rng() % 450);
      const auto end = std::chrono::steady_clock::now() + load_for;
      std::map<std::string, std::pair<std::string, uint64_t>> bids;  // id -> (item, amount)
      while (std::chrono::steady_clock::now() < end) {
        while (p.in_flight() < 128) {
          const std::string& item = items[rng() % items.size()];
          const std::string id = "load-" + std::to_string(id_counter++);
          if (read_heavy ? rng() % 10 != 0 : rng() % 10 == 0) {
            Request h = make_request(Op::history, item, id);
            h.limit = 1000;
            REQUIRE(p.send(h));
          } else {
            const uint64_t amount = ++next_amount[item];
            bids[id] = {item, amount};
            REQUIRE(p.send(bid_of_amount(item, amount, id)));
          }
        }
        auto reply = p.recv(5s);
        REQUIRE(reply.has_value());
        INFO(reply->error.value_or("") << " " << reply->message.value_or(""));
        REQUIRE(reply->ok);
        if (auto it = bids.find(reply->id.value_or("")); it != bids.end()) {
          ++writes_acked;
          acked_max[it->second.first] = std::max(acked_max[it->second.first], it->second.second);
        } else {
          ++reads_answered;
        }
      }
      mesh.kill_node(node);
    }

    // A writer killed inside its transaction leaves the writer mutex held by a dead owner.
    const uint32_t word = observer.writer_lock_word();
    if (word & 0x40000000u) ++kills_mid_write;
    // Reads are served from the write transaction: the node takes no reader slot to leave behind.
    const auto stale = observer.slots_of(pid);
    if (!stale.empty()) ++kills_with_stale_slots;
    for (const auto& s : stale)
      if (s.in_txn) {
        ++kills_mid_read;
        break;
      }

    const auto t0 = std::chrono::steady_clock::now();
    mesh.start_node(node);
    const bool serving = mesh.wait_node_serving(0, 20s);
    INFO("kill " << kill << ": not serving after the restart\n" << mesh.log_tail(node) << mesh.log_tail("router"));
    REQUIRE(serving);
    const long ms = static_cast<long>(
        std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::steady_clock::now() - t0).count());
    restart_ms.push_back(ms);
    max_restart_ms = std::max(max_restart_ms, ms);
    INFO("kill " << kill << ": the restarted node left slots of the dead pid " << pid << "\n" << mesh.log_tail(node));
    CHECK(observer.slots_of(pid).empty());
    // Serves writes at once too: the writer lock of a writer killed mid-commit was recovered.
    Client c(ctx, mesh.request_endpoint(), 3000, 2);
    const std::string& item = items[static_cast<std::size_t>(kill) % items.size()];
    auto r = c.call(bid_of_amount(item, ++next_amount[item]));
    REQUIRE(r.has_value());
    INFO(r->error.value_or("") << " " << r->message.value_or(""));
    REQUIRE(r->ok);
    acked_max[item] = next_amount[item];
    CHECK((observer.writer_lock_word() & 0x40000000u) == 0);  // the dead writer's lock was recovered
  }
  // This test only shows anything if every kill left the writer mutex with a dead owner.
  CHECK(kills_mid_write == kKills);
  CHECK(kills_with_stale_slots == 0);

  // Nothing acknowledged was lost across the kills.
  Client c(ctx, mesh.request_endpoint(), 3000, 2);
  for (const auto& item : items) {
    auto g = c.call(make_request(Op::get, item));
    REQUIRE(g.has_value());
    REQUIRE(g->ok);
    INFO("item " << item);
    CHECK(g->u64("max").value_or(0) >= acked_max[item]);
  }
  std::printf("stale locks: %d kills -9 under load (%llu writes acknowledged, %llu reads answered), stale slots "
              "found after %d kills (%d inside a read transaction, %d inside a write transaction), all cleared on "
              "restart; restart to serving:",
              kKills, static_cast<unsigned long long>(writes_acked), static_cast<unsigned long long>(reads_answered),
              kills_with_stale_slots, kills_mid_read, kills_mid_write);
  for (long ms : restart_ms) std::printf(" %ld", ms);
  std::printf(" ms (max %ld)\n", max_restart_ms);
}

TEST_CASE("durability switch: only the plain-words value turns fsync off", "[integration][storage]") {
  MeshOptions options;
  options.bid_nodes = 1;
  TestMesh mesh(options);
  const std::string node = mesh.bid_node_name(0);
  const std::string pristine = read_file(mesh.config_path());
  auto with_durability = [&](const std::string& value) {
    std::string text = pristine;
    const std::string anchor = "kind = \"bid\"\n";
    const auto at = text.find(anchor);
    REQUIRE(at != std::string::npos);
    text.insert(at + anchor.size(), "durability = " + value + "\n");
    write_file(mesh.config_path(), text);
  };

  SECTION("any other value: the node exits 100 with the config error line") {
    const std::vector<std::string> refused{"\"nosync\"", "\"NOSYNC\"", "\"MDB_NOSYNC\"", "\"off\"", "\"none\"",
                                           "\"\"", "\"Fsync\"", "\"unsafe-no-fsync\"", "false", "0"};
    for (const auto& value : refused) {
      INFO("durability = " << value);
      with_durability(value);
      std::filesystem::remove(mesh.log_file(node));
      mesh.start_node(node);
      auto status = mesh.process(node)->wait_exit(20s);
      REQUIRE(status.has_value());
      REQUIRE(WIFEXITED(*status));
      CHECK(WEXITSTATUS(*status) == 100);
      const std::string log = read_file(mesh.log_file(node));
      INFO(log);
      CHECK(log.find(mesh.config_path().string() + ": node '" + node + "'.durability: ") != std::string::npos);
      CHECK(log.find("serving") == std::string::npos);
      if (value == refused.front()) std::printf("durability switch: exit 100, %s", log.c_str());
    }
  }

  SECTION("\"fsync\" starts with fsync on and no warning") {
    with_durability("\"fsync\"");
    mesh.start_all();
    CHECK(mesh.process(node)->running());
    CHECK_FALSE(log_contains(mesh, node, "NOT synced"));
  }

  SECTION("the plain-words value starts, and the log says fsync is off") {
    with_durability("\"unsafe-no-fsync-acknowledged-bids-can-be-lost\"");
    mesh.start_all();
    REQUIRE(wait_until([&] { return log_contains(mesh, node, "NOT synced"); }, 5s));
    const std::string log = read_file(mesh.log_file(node));
    CHECK(log.find("WARNING: unsafe_no_sync is set: the write-ahead log is NOT synced to disk") != std::string::npos);
    CHECK(log.find("acknowledged bids can be lost") != std::string::npos);
    zmq::context_t ctx;
    Client c(ctx, mesh.request_endpoint(), 3000, 2);
    CHECK(c.call(make_request(Op::open, "unsafe-1")).value_or(Reply{}).ok);
  }
}
