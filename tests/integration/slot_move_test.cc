// Moving a slot range between bid nodes with bidmesh-slots (docs/deployment.md, "Moving a slot
// range"), through the real programs: a mesh takes opens, bids, closes and a deadline, the bid
// nodes are stopped (bid-1 by SIGKILL, so its log holds a tail past its checkpoint), the tool
// moves slots 0-4095 from bid-1 to bid-2 and writes the new config, and the mesh started on it
// answers every request exactly as before (byte for byte), retries by id included, from the new
// owner. Then the refusals: a running node, a range the source does not own, a destination that
// holds another item of the same name, a damaged export file; and reruns that change nothing.
#include <catch2/catch.hpp>

#include <csignal>
#include <fstream>
#include <map>
#include <vector>

#include <zmq.hpp>

#include "nodes/item_store.h"
#include "nodes/slot_move.h"
#include "protocol/config.h"
#include "protocol/messages.h"
#include "protocol/slot_map.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

namespace {

constexpr SlotRange kMoved{0, 4095};  // half of bid-1's 0-8191

std::string raw_call(Client& c, const Request& r) {
  auto reply = c.call_raw(encode_request(r));
  REQUIRE(reply.has_value());
  return *reply;
}

RunResult slots_tool(std::vector<std::string> args) {
  args.insert(args.begin(), program_path("bidmesh-slots"));
  return run_program(std::move(args), 60s);
}

// The raw replies of a get and a full history of `item`, with fixed ids.
std::string read_item(Client& c, const std::string& item) {
  Request get = make_request(Op::get, item, "read-get");
  Request history = make_request(Op::history, item, "read-history");
  history.limit = kMaxHistoryLimit;
  return raw_call(c, get) + "\n" + raw_call(c, history);
}

// An item of bid node `node` (0 or 1 of 2) whose slot is (or is not) in kMoved.
std::vector<std::string> items_where(int node, bool moved, int count) {
  std::vector<std::string> out;
  for (int n = 0; static_cast<int>(out.size()) < count; ++n) {
    const std::string item = item_on_node("item-", node, n, 2);
    if (slot_move::in_range(kMoved, item) == moved) out.push_back(item);
  }
  return out;
}

std::map<std::string, std::string> read_all(Client& c, const std::vector<std::string>& items) {
  std::map<std::string, std::string> out;
  for (const auto& item : items) out[item] = read_item(c, item);
  return out;
}

}  // namespace

TEST_CASE("bidmesh-slots moves a slot range with every item's history and idempotency records",
          "[integration][slots]") {
  MeshOptions mo;
  mo.extra_top_level = "checkpoint_interval_ms = 600000";  // bid-1's writes stay in its log tail
  TestMesh mesh(mo);
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 3000, 2);

  const std::vector<std::string> moving = items_where(0, true, 6);
  const std::vector<std::string> staying = items_where(0, false, 3);
  const std::vector<std::string> on_dst = items_where(1, false, 3);
  std::vector<std::string> all = moving;
  all.insert(all.end(), staying.begin(), staying.end());
  all.insert(all.end(), on_dst.begin(), on_dst.end());

  // Writes with their ids and first replies, to be retried after the move.
  std::vector<std::pair<Request, std::string>> writes;
  auto write = [&](const Request& r) { writes.emplace_back(r, raw_call(c, r)); };
  const uint64_t far = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::milliseconds>(std::chrono::system_clock::now().time_since_epoch()).count()) +
      24ull * 3600 * 1000;
  for (std::size_t i = 0; i < all.size(); ++i) {
    Request open = make_request(Op::open, all[i], "open-" + all[i]);
    open.start = 100;
    open.increment = 5;
    if (i % 3 == 1) open.closes_at = far;  // a deadline entry to move
    write(open);
    for (uint64_t k = 1; k <= 3 + i % 2; ++k) write(make_bid(all[i], "bidder" + std::to_string(k), 100 + 10 * k,
                                                             "bid-" + all[i] + "-" + std::to_string(k)));
    write(make_bid(all[i], "late", 101, "low-" + all[i]));  // too_low: its reply is remembered too
    if (i % 3 == 2) write(make_request(Op::close, all[i], "close-" + all[i]));
  }
  // A bid on an item never opened: only an idempotency record (unknown_item) in the moved range.
  write(make_bid(items_where(0, true, 7).back(), "ghost", 100, "ghost-1"));
  const auto before = read_all(c, all);

  // A running node is refused: its store's lock is held.
  const RunResult running = slots_tool({"move", "--config", mesh.config_path().string(), "--slots", "0-4095", "--from",
                                        "bid-1", "--to", "bid-2"});
  INFO(running.out);
  CHECK(running.exit_code == 1);
  CHECK_THAT(running.out, Catch::Contains("in use by another process"));

  mesh.kill_node("bid-1");  // its tail past the checkpoint must be replayed by the tool
  mesh.stop_node("bid-2", SIGTERM);
  const auto new_config = mesh.dir() / "mesh.new.toml";
  const RunResult moved = slots_tool({"move", "--config", mesh.config_path().string(), "--slots", "0-4095", "--from",
                                      "bid-1", "--to", "bid-2", "--new-config", new_config.string()});
  INFO(moved.out);
  REQUIRE(moved.exit_code == 0);
  CHECK_THAT(moved.out, Catch::Contains("bid-1: store"));
  CHECK_THAT(moved.out, Catch::Contains("moved slots 0-4095 from bid-1 to bid-2: 6 items"));
  CHECK_THAT(moved.out, Catch::Contains("bidmesh-ctl --config " + mesh.config_path().string() + " reload"));
  std::printf("%s", moved.out.c_str());

  // The new config: only the two slots lines differ, and the real loader accepts it.
  const std::string old_text = read_file(mesh.config_path());
  const std::string new_text = read_file(new_config);
  std::string expected = old_text;
  auto replace = [&](const std::string& what, const std::string& with) {
    const auto at = expected.find(what);
    REQUIRE(at != std::string::npos);
    expected.replace(at, what.size(), with);
  };
  replace("slots = [\"0-8191\"]", "slots = [\"4096-8191\"]");
  replace("slots = [\"8192-16383\"]", "slots = [\"0-4095\", \"8192-16383\"]");
  CHECK(new_text == expected);
  const MeshConfig loaded = load_mesh_config(new_config);
  CHECK(loaded.slot_map().owner_of_slot(0) == 1);
  CHECK(loaded.slot_map().owner_of_slot(4096) == 0);

  // A second run with the same (old) config is harmless: nothing left to move.
  const RunResult again = slots_tool({"move", "--config", mesh.config_path().string(), "--slots", "0-4095", "--from",
                                      "bid-1", "--to", "bid-2", "--new-config", new_config.string()});
  INFO(again.out);
  CHECK(again.exit_code == 0);
  CHECK_THAT(again.out, Catch::Contains("0 items, 0 records"));
  CHECK(read_file(new_config) == new_text);

  // The mesh on the new config: the router restarts with the new slot map.
  mesh.stop_node("router", SIGTERM);
  std::filesystem::copy_file(new_config, mesh.config_path(), std::filesystem::copy_options::overwrite_existing);
  mesh.start_all();
  CHECK(read_all(c, all) == before);
  for (const auto& [r, first] : writes) {
    INFO(r.id);
    CHECK(raw_call(c, r) == first);  // the remembered reply: nothing applied twice
  }
  CHECK(read_all(c, all) == before);

  // The source holds none of the moved items, the destination holds them: read both stores.
  mesh.stop_node("router", SIGTERM);
  mesh.stop_node("bid-1", SIGTERM);
  mesh.stop_node("bid-2", SIGTERM);
  for (const char* node : {"bid-1", "bid-2"}) {
    std::unique_ptr<slot_move::LockedStore> store;
    REQUIRE(slot_move::LockedStore::open(mesh.dir() / "data" / node, 64ull << 20, &store).ok());
    slot_move::RangeData data;
    REQUIRE(store->read_range(kMoved, &data).ok());
    CHECK(data.items == (std::string(node) == "bid-1" ? 0u : moving.size()));
    CHECK(store->item_count() == (std::string(node) == "bid-1" ? staying.size() : moving.size() + on_dst.size()));
  }
}

TEST_CASE("bidmesh-slots refuses what it cannot do safely, and export/import/drop across hosts",
          "[integration][slots]") {
  TestMesh mesh;
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 3000, 2);
  const std::vector<std::string> moving = items_where(0, true, 3);
  for (const auto& item : moving) {
    REQUIRE(c.call(make_request(Op::open, item))->ok);
    REQUIRE(c.call(make_bid(item, "alice", 10))->ok);
  }
  const auto before = read_all(c, moving);
  mesh.stop_node("router", SIGTERM);
  mesh.stop_node("bid-1", SIGTERM);
  mesh.stop_node("bid-2", SIGTERM);
  const std::string cfg = mesh.config_path().string();
  const std::string file = (mesh.dir() / "range.export").string();

  // A range the source does not own: a config error, nothing touched.
  RunResult r = slots_tool({"move", "--config", cfg, "--slots", "8000-8200", "--from", "bid-1", "--to", "bid-2"});
  INFO(r.out);
  CHECK(r.exit_code == 100);
  CHECK_THAT(r.out, Catch::Contains("slots 8000-8200 are not all owned by node 'bid-1'"));

  // Export, then a damaged copy is refused by import.
  r = slots_tool({"export", "--config", cfg, "--slots", "0-4095", "--from", "bid-1", "--file", file});
  INFO(r.out);
  REQUIRE(r.exit_code == 0);
  CHECK_THAT(r.out, Catch::Contains("3 items"));
  std::string bytes = read_file(file);
  bytes[bytes.size() / 2] ^= 0x20;
  const std::string damaged = file + ".damaged";
  std::ofstream(damaged, std::ios::binary) << bytes;
  r = slots_tool({"import", "--config", cfg, "--to", "bid-2", "--file", damaged});
  INFO(r.out);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out, Catch::Contains("is damaged (checksum mismatch)"));
  // A file of the version before store format 6 (request records as data keys) is refused.
  bytes = read_file(file);
  bytes.replace(0, 8, "BMSLOTS1");
  const std::string older = file + ".v1";
  std::ofstream(older, std::ios::binary) << bytes;
  r = slots_tool({"import", "--config", cfg, "--to", "bid-2", "--file", older});
  INFO(r.out);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out, Catch::Contains("older bidmesh-slots") && Catch::Contains("export it again"));

  // The destination holds another item of the same name: the import refuses and writes nothing.
  {
    ItemStoreOptions o;
    o.dir = mesh.dir() / "data" / "bid-2";
    o.map_size_bytes = 64ull << 20;
    auto opened = ItemStore::open(o);
    REQUIRE(std::holds_alternative<std::unique_ptr<ItemStore>>(opened));
    auto& store = *std::get<std::unique_ptr<ItemStore>>(opened);
    Request open = make_request(Op::open, moving[0], "other-open");
    open.start = 7;
    REQUIRE(store.apply_batch({open}, 1).committed);
  }
  r = slots_tool({"import", "--config", cfg, "--to", "bid-2", "--file", file});
  INFO(r.out);
  CHECK(r.exit_code == 1);
  CHECK_THAT(r.out, Catch::Contains("already holds item '" + moving[0] + "' with other records"));
  r = slots_tool({"move", "--config", cfg, "--slots", "0-4095", "--from", "bid-1", "--to", "bid-2"});
  CHECK(r.exit_code == 1);
  {
    std::unique_ptr<slot_move::LockedStore> dst;
    REQUIRE(slot_move::LockedStore::open(mesh.dir() / "data" / "bid-2", 64ull << 20, &dst).ok());
    CHECK(dst->item_count() == 1);  // only the other item: nothing of the range was written
  }
  std::filesystem::remove_all(mesh.dir() / "data" / "bid-2");  // that destination is given up

  // Across hosts: import on the destination, then drop on the source; each a second time too.
  const std::string new_config = (mesh.dir() / "mesh.new.toml").string();
  for (int run = 0; run < 2; ++run) {
    r = slots_tool({"import", "--config", cfg, "--to", "bid-2", "--file", file, "--new-config", new_config});
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains(run == 0 ? "(3 written, 0 already there)" : "(0 written, 3 already there)"));
    r = slots_tool({"drop", "--config", cfg, "--file", file});
    INFO(r.out);
    CHECK(r.exit_code == 0);
    CHECK_THAT(r.out, Catch::Contains(run == 0 ? "3 items" : "0 items"));
  }
  std::filesystem::copy_file(new_config, mesh.config_path(), std::filesystem::copy_options::overwrite_existing);
  mesh.start_all();
  CHECK(read_all(c, moving) == before);
}
