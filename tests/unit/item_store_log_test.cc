// ItemStore over its write-ahead log: replay after a crash, checkpoints, a damaged log, a power
// loss and a full log disk. A "crash" is the store destroyed without a checkpoint: LMDB then
// holds only the last checkpoint (the open transaction is aborted), exactly as after kill -9.
#include <catch2/catch.hpp>

#include <fstream>
#include <random>
#include <string>
#include <vector>

#include "nodes/item_store.h"
#include "storage/log_file.h"
#include "storage/log_format.h"
#include "storage/log_reader.h"
#include "tests/unit/store_fixtures.h"

namespace bidmesh {
namespace {

ItemStoreOptions log_options(const std::filesystem::path& dir, FileLayer* files = nullptr) {
  ItemStoreOptions o;
  o.dir = dir;
  o.map_size_bytes = 64ull << 20;
  o.log_segment_bytes = 64ull << 10;  // small segments: the tests cross segment boundaries
  o.checkpoint_bytes = 16ull << 10;
  o.checkpoint_interval = std::chrono::hours(1);  // only the size makes a checkpoint due here
  o.log_files = files;
  return o;
}

// What a client could observe of an item: its state and its whole history, as reply bytes.
std::string observe(ItemStore& s, const std::string& item) {
  BatchResult b = s.apply_batch({item_req(Op::get, "g", item), history_req("h", item, 0, 1000)}, kNow);
  return msgpack_to_json(b.replies[0]) + "\n" + msgpack_to_json(b.replies[1]) + "\n";
}

// Every bid in its own batch, on 3 items; returns the log end after each batch.
std::vector<LogPosition> bid_batches(ItemStore& s, int batches, int first = 0) {
  std::vector<LogPosition> ends;
  for (int i = first; i < first + batches; ++i) {
    const std::string item = "item" + std::to_string(i % 3);
    BatchResult b = s.apply_batch({bid_req("b" + std::to_string(i), item, "ann", 10 + static_cast<uint64_t>(i))},
                                  kNow + static_cast<uint64_t>(i));
    REQUIRE(b.committed);
    ends.push_back(s.log_end());
  }
  return ends;
}

void open_items(ItemStore& s) {
  REQUIRE(s.apply_batch({open_req("o0", "item0"), open_req("o1", "item1"), open_req("o2", "item2")}, kNow).committed);
}

std::string observe_all(ItemStore& s) { return observe(s, "item0") + observe(s, "item1") + observe(s, "item2"); }

// "" when equal, else the first place where they differ (readable in a failed CHECK).
std::string difference(const std::string& got, const std::string& want) {
  if (got == want) return "";
  std::size_t i = 0;
  while (i < got.size() && i < want.size() && got[i] == want[i]) ++i;
  const std::size_t from = i > 80 ? i - 80 : 0;
  return "got ..." + got.substr(from, 160) + "\nwant ..." + want.substr(from, 160);
}

std::filesystem::path segment_file(const std::filesystem::path& dir, uint64_t segment) {
  return dir / "wal" / log_segment_name(segment);
}

// Overwrites `n` bytes at `pos` of the log with zeros (a cut) or flips one byte.
void zero_from(const std::filesystem::path& dir, LogPosition pos, uint64_t n) {
  std::fstream f(segment_file(dir, pos.segment), std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f);
  f.seekp(static_cast<std::streamoff>(pos.offset));
  const std::string zeros(n, '\0');
  f.write(zeros.data(), static_cast<std::streamsize>(n));
}
void flip_byte(const std::filesystem::path& dir, LogPosition pos) {
  std::fstream f(segment_file(dir, pos.segment), std::ios::in | std::ios::out | std::ios::binary);
  REQUIRE(f);
  f.seekg(static_cast<std::streamoff>(pos.offset));
  char c = 0;
  f.read(&c, 1);
  c = static_cast<char>(c ^ 0x5a);
  f.seekp(static_cast<std::streamoff>(pos.offset));
  f.write(&c, 1);
}

}  // namespace

TEST_CASE("item store log replays every acknowledged batch after a crash", "[item_store][wal]") {
  TempDir dir;
  std::string before;
  {
    auto s = open_store_with(log_options(dir.path()));
    open_items(*s);
    bid_batches(*s, 200);  // past several segments and checkpoint sizes, no checkpoint taken
    CHECK(s->checkpoints() == 0u);
    before = observe_all(*s);
  }  // crash
  auto s = open_store_with(log_options(dir.path()));
  CHECK(s->replay_stats().records == 201u);
  CHECK(s->replay_stats().writes == 203u);
  CHECK(difference(observe_all(*s), before) == "");
  CHECK(s->item_count() == 3u);
  SECTION("a retry by id after the replay gets the remembered reply") {
    BatchResult b = s->apply_batch({bid_req("b5", "item2", "ann", 15)}, kNow + 5);
    auto r = decode_reply(b.replies[0]);
    REQUIRE(r);
    CHECK(r->ok);
    CHECK(r->u64("seq") == 3u);  // the reply of the first time, not a new bid
    CHECK(s->get_item("item2")->bids == 66u);
  }
  SECTION("seq goes on where it stopped") {
    BatchResult b = s->apply_batch({bid_req("new", "item0", "bob", 100000)}, kNow + 1000);
    CHECK(decode_reply(b.replies[0])->u64("seq") == 69u);
  }
}

TEST_CASE("item store log: a checkpoint bounds the replay and trims the log", "[item_store][wal]") {
  TempDir dir;
  std::string before;
  {
    auto s = open_store_with(log_options(dir.path()));
    open_items(*s);
    bid_batches(*s, 600);
    REQUIRE(s->checkpoint_due());  // 16 KiB of log
    REQUIRE(s->checkpoint().ok());
    CHECK(s->checkpoint_position() == s->log_end());
    CHECK_FALSE(s->checkpoint_due());
    bid_batches(*s, 7, 600);
    before = observe_all(*s);
  }
  auto s = open_store_with(log_options(dir.path()));
  CHECK(s->replay_stats().records == 7u);
  CHECK(difference(observe_all(*s), before) == "");
  // Segments wholly before the checkpoint are gone or recycled: at most a few files remain.
  std::size_t files = 0;
  for (const auto& e : std::filesystem::directory_iterator(dir.path() / "wal")) files += e.is_regular_file() ? 1 : 0;
  CHECK(files <= 5u);
}

TEST_CASE("item store log cut at every record boundary recovers exactly the batches before it", "[item_store][wal]") {
  TempDir dir;
  std::vector<LogPosition> ends;
  std::vector<std::string> states;  // states[k]: after k bid batches
  {
    auto s = open_store_with(log_options(dir.path()));
    open_items(*s);
    states.push_back(observe_all(*s));
    for (int i = 0; i < 12; ++i) {
      ends.push_back(bid_batches(*s, 1, i)[0]);
      states.push_back(observe_all(*s));
    }
  }
  // Cut the log after batch k (zero everything from ends[k-1]) for k = 12 .. 0: each cut is
  // shorter than the last, so one copy of the log serves every k.
  for (int k = 12; k >= 0; --k) {
    if (k < 12) {
      const LogPosition cut = k == 0 ? LogPosition{ends[0].segment, 0} : ends[static_cast<std::size_t>(k - 1)];
      if (k == 0) continue;  // the open batch is before ends[0]; cutting it is the same case
      zero_from(dir.path(), cut, ends[static_cast<std::size_t>(k)].offset - cut.offset);
    }
    auto s = open_store_with(log_options(dir.path()));
    INFO("cut after batch " << k);
    CHECK(difference(observe_all(*s), states[static_cast<std::size_t>(k)]) == "");
    s.reset();
    // Opening cut the tail for good? No: nothing was written, the next open sees the same log.
  }
}

TEST_CASE("item store log with a torn or damaged record", "[item_store][wal]") {
  TempDir dir;
  std::vector<LogPosition> ends;
  std::string before_last, all;
  {
    auto s = open_store_with(log_options(dir.path()));
    open_items(*s);
    ends = bid_batches(*s, 9);
    before_last = observe_all(*s);
    ends.push_back(bid_batches(*s, 1, 9)[0]);
    all = observe_all(*s);
  }
  const LogPosition last = ends[ends.size() - 2];  // the start of the last record
  REQUIRE(last.segment == ends.back().segment);
  SECTION("a byte flipped in the last record: it is cut off as torn") {
    flip_byte(dir.path(), LogPosition{last.segment, last.offset + (ends.back().offset - last.offset) / 2});
    auto s = open_store_with(log_options(dir.path()));
    CHECK(s->replay_stats().torn_tail);
    CHECK(difference(observe_all(*s), before_last) == "");
    SECTION("and the store goes on from there") {
      REQUIRE(s->apply_batch({bid_req("after", "item0", "cy", 1000)}, kNow + 100).committed);
      s.reset();
      auto again = open_store_with(log_options(dir.path()));
      CHECK(again->get_item("item0")->max == 1000u);
    }
  }
  SECTION("the last record cut short: it is cut off") {
    zero_from(dir.path(), LogPosition{last.segment, last.offset + 5}, ends.back().offset - last.offset - 5);
    auto s = open_store_with(log_options(dir.path()));
    CHECK(difference(observe_all(*s), before_last) == "");
  }
  SECTION("a byte flipped in a record before the last: open refuses, naming the file and offset") {
    const LogPosition bad = ends[2];
    flip_byte(dir.path(), LogPosition{bad.segment, bad.offset + 12});
    ItemStoreOptions o = log_options(dir.path());
    auto opened = ItemStore::open(o);
    REQUIRE(std::holds_alternative<std::string>(opened));
    const std::string err = std::get<std::string>(opened);
    CHECK_THAT(err, Catch::Contains(segment_file(dir.path(), bad.segment).filename().string()));
    CHECK_THAT(err, Catch::Contains(std::to_string(bad.offset)));
  }
}

TEST_CASE("item store log: a record that passes its CRC but does not parse fails the open, naming the file and offset",
          "[item_store][wal]") {
  TempDir dir;
  {
    auto s = open_store_with(log_options(dir.path()));
    open_items(*s);
  }
  // Append a record of an unknown batch record version where the store's log ends.
  ReplayResult replayed;
  REQUIRE(replay_log(dir.path() / "wal", LogPosition{}, [](std::string_view, LogPosition) { return Status::OK(); },
                     &replayed)
              .ok());
  const LogPosition bad = replayed.end;
  {
    LogOptions o;
    o.dir = dir.path() / "wal";
    o.segment_bytes = log_options(dir.path()).log_segment_bytes;
    std::unique_ptr<LogWriter> w;
    REQUIRE(LogWriter::open(o, bad, &w).ok());
    REQUIRE(w->append(std::string("\x09 not a batch record")).ok());
  }
  auto opened = ItemStore::open(log_options(dir.path()));
  REQUIRE(std::holds_alternative<std::string>(opened));
  const std::string err = std::get<std::string>(opened);
  CHECK_THAT(err, Catch::Contains(segment_file(dir.path(), bad.segment).string() + " offset " +
                                  std::to_string(bad.offset)));
  CHECK_THAT(err, Catch::Contains("batch record version 9"));
}

TEST_CASE("item store log survives a power loss: unsynced bytes are lost, nothing acknowledged", "[item_store][wal]") {
  TempDir dir;
  std::mt19937_64 rng(7);
  constexpr uint64_t kLostAmount = 1'000'000'000;
  for (int round = 0; round < 20; ++round) {
    INFO("round " << round);
    std::string acknowledged, acknowledged_item1;
    {
      UnsyncedDropFileLayer files;
      auto s = open_store_with(log_options(dir.path(), &files));
      if (round == 0) open_items(*s);
      bid_batches(*s, static_cast<int>(rng() % 40), round * 100);
      if (rng() % 3 == 0) REQUIRE(s->checkpoint().ok());
      acknowledged = observe(*s, "item0") + observe(*s, "item2");
      acknowledged_item1 = observe(*s, "item1");
      // The power goes during the next batch's log sync: that batch is not acknowledged (it is
      // answered `internal`). A torn write may still carry its whole record to the disk: then
      // the replay applies it, which a client that retries by id sees as its write done.
      files.crash_on_next_sync(rng() % 128);
      BatchResult lost = s->apply_batch({bid_req("lost" + std::to_string(round), "item1", "zed", kLostAmount)}, kNow);
      CHECK_FALSE(lost.committed);
      CHECK(lost.fatal);
    }
    auto s = open_store_with(log_options(dir.path()));
    CHECK(difference(observe(*s, "item0") + observe(*s, "item2"), acknowledged) == "");
    if (s->get_item("item1")->max != kLostAmount) CHECK(difference(observe(*s, "item1"), acknowledged_item1) == "");
  }
}

TEST_CASE("item store log on a full disk refuses writes with internal and serves reads", "[item_store][wal]") {
  TempDir dir;
  UnsyncedDropFileLayer files;
  ItemStoreOptions o = log_options(dir.path(), &files);
  o.log_segment_bytes = 8ull << 10;
  o.checkpoint_bytes = 4ull << 10;
  auto s = open_store_with(o);
  open_items(*s);
  files.fail_writes(ENOSPC);
  // Bids until the segments prepared ahead are used up and a new one cannot be made.
  bool refused = false;
  std::string acknowledged = observe_all(*s);
  for (int i = 0; i < 2000 && !refused; ++i) {
    BatchResult b = s->apply_batch({bid_req("f" + std::to_string(i), "item0", "ann", 10 + static_cast<uint64_t>(i))}, kNow);
    if (b.committed) {
      acknowledged = observe_all(*s);
      continue;
    }
    refused = true;
    CHECK_FALSE(b.fatal);
    auto r = decode_reply(b.replies[0]);
    REQUIRE(r);
    CHECK(r->error == "internal");
    CHECK_THAT(*r->message, Catch::Contains("storage full"));
  }
  REQUIRE(refused);
  CHECK(difference(observe_all(*s), acknowledged) == "");  // reads go on
  files.fail_writes(0);
  CHECK(s->apply_batch({bid_req("back", "item0", "bob", 100000)}, kNow).committed);
  acknowledged = observe_all(*s);
  s.reset();
  auto again = open_store_with(log_options(dir.path()));
  CHECK(difference(observe_all(*again), acknowledged) == "");
}

}  // namespace bidmesh
