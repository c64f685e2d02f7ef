// The write-ahead log (storage/): CRC-32C, append and replay, recycling, cuts and flipped bytes,
// power loss through UnsyncedDropFileLayer, a full disk, failed syncs, and the inspector.
#include <catch2/catch.hpp>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <vector>

#include "storage/crc32c.h"
#include "storage/log_file.h"
#include "storage/log_format.h"
#include "storage/log_inspect.h"
#include "storage/log_reader.h"
#include "storage/log_writer.h"
#include "storage/status.h"
#include "tests/support/process.h"

namespace bidmesh {
namespace {

namespace fs = std::filesystem;
using test::TempDir;

constexpr uint64_t kSegment = 4096;

// A payload that names its record, so a wrong or reordered record cannot pass for another.
std::string payload_of(uint64_t i, size_t len) {
  std::string p = "record " + std::to_string(i) + ":";
  while (p.size() < len) p.push_back(static_cast<char>((i * 31 + p.size() * 7) & 0xFF));
  p.resize(len);
  return p;
}

std::unique_ptr<LogWriter> open_writer(const fs::path& dir, LogPosition end, FileLayer* files = nullptr,
                                       uint64_t segment_bytes = kSegment, bool sync = true) {
  LogOptions o;
  o.dir = dir;
  o.segment_bytes = segment_bytes;
  o.sync = sync;
  o.files = files;
  std::unique_ptr<LogWriter> w;
  const Status s = LogWriter::open(o, end, &w);
  INFO(s.to_string());
  REQUIRE(s.ok());
  return w;
}

struct Replayed {
  Status status;
  ReplayResult result;
  std::vector<std::string> payloads;
  std::vector<LogPosition> nexts;
};

Replayed replay(const fs::path& dir, LogPosition from = {}, FileLayer* files = nullptr) {
  Replayed r;
  r.status = replay_log(
      dir, from,
      [&](std::string_view payload, LogPosition next) {
        r.payloads.emplace_back(payload);
        r.nexts.push_back(next);
        return Status::OK();
      },
      &r.result, files);
  return r;
}

// What a test wrote: each record's payload, start and end position.
struct Written {
  std::vector<std::string> payloads;
  std::vector<LogPosition> starts;
  std::vector<LogPosition> ends;
};

// Appends `n` records of random lengths up to max_len (numbered from first).
void append_records(LogWriter& w, Written* out, uint64_t first, int n, std::mt19937& rng, size_t max_len = 700) {
  std::uniform_int_distribution<size_t> len(0, max_len);
  for (int i = 0; i < n; ++i) {
    const std::string p = payload_of(first + static_cast<uint64_t>(i), len(rng));
    const LogPosition before = w.end();
    const Status s = w.append(p);
    INFO(s.to_string());
    REQUIRE(s.ok());
    // The record starts where end() was, or at the start of the next segment when it moved.
    const LogPosition start = w.end().segment == before.segment ? before : LogPosition{w.end().segment, 0};
    out->payloads.push_back(p);
    out->starts.push_back(start);
    out->ends.push_back(w.end());
  }
}

using Image = std::map<uint64_t, std::string>;  // segment number -> file bytes

Image read_image(const fs::path& dir) {
  Image image;
  for (const auto& e : fs::directory_iterator(dir)) {
    if (auto n = parse_log_segment_name(e.path().filename().string())) image[*n] = test::read_file(e.path());
  }
  return image;
}

void write_image(const fs::path& dir, const Image& image) {
  for (const auto& e : fs::directory_iterator(dir)) fs::remove(e.path());
  for (const auto& [n, bytes] : image) {
    std::ofstream f(dir / log_segment_name(n), std::ios::binary);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    REQUIRE(f.good());
  }
}

std::vector<std::string> slice(const std::vector<std::string>& v, size_t from, size_t to) {
  return std::vector<std::string>(v.begin() + static_cast<std::ptrdiff_t>(from), v.begin() + static_cast<std::ptrdiff_t>(to));
}

}  // namespace

TEST_CASE("log crc32c matches the standard check value and extends", "[log]") {
  CHECK(crc32c("123456789") == 0xE3069283u);
  CHECK(crc32c("") == 0u);
  CHECK(crc32c(std::string(32, '\0')) == 0x8A9136AAu);  // RFC 3720 B.4: 32 bytes of zeros
  std::mt19937 rng(7);
  std::string data(1000, '\0');
  for (char& c : data) c = static_cast<char>(rng());
  for (size_t cut : {size_t{0}, size_t{1}, size_t{17}, size_t{500}, size_t{999}, size_t{1000}}) {
    CHECK(crc32c(std::string_view(data).substr(cut), crc32c(std::string_view(data).substr(0, cut))) == crc32c(data));
  }
  for (uint32_t crc : {0u, 1u, 0xE3069283u, 0xFFFFFFFFu, crc32c(data)}) {
    CHECK(crc32c_unmask(crc32c_mask(crc)) == crc);
    CHECK(crc32c_mask(crc) != crc);
    CHECK(crc32c_mask(crc32c_mask(crc)) != crc);
  }
}

TEST_CASE("log status renders one line per code", "[log]") {
  CHECK(Status().ok());
  CHECK(Status::OK().to_string() == "ok");
  CHECK(Status::corruption("bad").to_string() == "corruption: bad");
  CHECK(Status::no_space("full").is_no_space());
  const Status io = Status::io_error("fdatasync x", EIO);
  CHECK(io.is_io_error());
  CHECK(io.err() == EIO);
  CHECK(io.to_string().find("io_error: fdatasync x (") == 0);
  CHECK(Status::invalid_argument("a").code() == Status::Code::invalid_argument);
  CHECK(Status::not_found("b").to_string() == "not_found: b");
}

TEST_CASE("log segment names are 20 zero-padded digits", "[log]") {
  CHECK(log_segment_name(3) == "00000000000000000003.wal");
  CHECK(parse_log_segment_name("00000000000000000003.wal") == 3u);
  CHECK(parse_log_segment_name(log_segment_name(UINT64_MAX)) == UINT64_MAX);
  CHECK_FALSE(parse_log_segment_name("00000000000000000000.wal"));
  CHECK_FALSE(parse_log_segment_name("0000000000000000003.wal"));
  CHECK_FALSE(parse_log_segment_name("0000000000000000000x.wal"));
  CHECK_FALSE(parse_log_segment_name("00000000000000000003.wal.tmp"));
  CHECK(LogPosition{3, 4096}.to_string() == "3:4096");
  CHECK(LogPosition{2, 9000} < LogPosition{3, 0});
}

TEST_CASE("log append and replay round trip across segments", "[log]") {
  TempDir dir("log");
  std::mt19937 rng(1);
  Written w;
  {
    auto writer = open_writer(dir.path(), LogPosition{});
    CHECK(writer->end() == LogPosition{1, 0});
    CHECK(writer->max_payload() == std::min(kSegment - kLogHeaderBytes, kMaxLogPayloadBytes));
    append_records(*writer, &w, 0, 60, rng);
    REQUIRE(writer->append("").ok());  // an empty payload is a record too
    w.payloads.emplace_back();
    w.starts.push_back(w.ends.back());
    w.ends.push_back(writer->end());
    CHECK(writer->end().segment >= 5);
  }
  Replayed r = replay(dir.path());
  REQUIRE(r.status.ok());
  CHECK(r.payloads == w.payloads);
  CHECK(r.nexts == w.ends);
  CHECK(r.result.records == w.payloads.size());
  CHECK_FALSE(r.result.torn);

  SECTION("reopened at the end it replayed, the writer goes on") {
    auto writer = open_writer(dir.path(), r.result.end);
    append_records(*writer, &w, 1000, 30, rng);
    Replayed again = replay(dir.path());
    REQUIRE(again.status.ok());
    CHECK(again.payloads == w.payloads);
    CHECK(again.result.end == writer->end());
  }
  SECTION("replay from any record's position gives exactly the records from there") {
    for (size_t i = 0; i < w.starts.size(); i += 3) {
      Replayed from = replay(dir.path(), w.starts[i]);
      REQUIRE(from.status.ok());
      CHECK(from.payloads == slice(w.payloads, i, w.payloads.size()));
    }
    Replayed at_end = replay(dir.path(), r.result.end);
    REQUIRE(at_end.status.ok());
    CHECK(at_end.payloads.empty());
  }
  SECTION("a payload of max_payload() fills a segment; one byte more is refused") {
    auto writer = open_writer(dir.path(), r.result.end);
    const std::string big(writer->max_payload(), 'b');
    REQUIRE(writer->append(big).ok());
    CHECK(writer->end().offset == kSegment);
    CHECK(writer->append(big + "x").is_invalid_argument());
    REQUIRE(writer->append("after").ok());
    Replayed again = replay(dir.path());
    REQUIRE(again.status.ok());
    REQUIRE(again.payloads.size() == w.payloads.size() + 2);
    CHECK(again.payloads.back() == "after");
  }
  SECTION("the writer refuses a position that is not the end of the log") {
    LogOptions o;
    o.dir = dir.path();
    o.segment_bytes = kSegment;
    std::unique_ptr<LogWriter> bad;
    CHECK(LogWriter::open(o, LogPosition{}, &bad).is_invalid_argument());
    CHECK(LogWriter::open(o, w.starts[w.starts.size() / 2], &bad).is_invalid_argument());
    CHECK(LogWriter::open(o, w.starts.back(), &bad).is_invalid_argument());
    CHECK(bad == nullptr);
  }
}

TEST_CASE("log replay of a missing or empty directory is an empty log", "[log]") {
  TempDir dir("log");
  Replayed r = replay(dir.path() / "absent");
  REQUIRE(r.status.ok());
  CHECK(r.result.end == LogPosition{});
  CHECK(r.payloads.empty());
  Replayed missing_promised = replay(dir.path(), LogPosition{4, 100});
  CHECK(missing_promised.status.is_corruption());
  auto writer = open_writer(dir.path() / "a" / "b", LogPosition{});  // parents are created
  CHECK(fs::exists(dir.path() / "a" / "b" / log_segment_name(1)));
  CHECK(fs::file_size(dir.path() / "a" / "b" / log_segment_name(1)) == kSegment);
}

TEST_CASE("log steady state: one write and one sync per append", "[log]") {
  TempDir dir("log");
  UnsyncedDropFileLayer files;
  auto writer = open_writer(dir.path(), LogPosition{}, &files, 1 << 20);
  for (int i = 0; i < 50; ++i) {
    const uint64_t writes = files.writes();
    const uint64_t syncs = files.syncs();
    REQUIRE(writer->append(payload_of(static_cast<uint64_t>(i), 100)).ok());
    CHECK(files.writes() == writes + 1);
    CHECK(files.syncs() == syncs + 1);
    CHECK(files.unsynced_bytes() == 0);
  }
}

TEST_CASE("log release_before recycles segments under strictly increasing numbers", "[log]") {
  TempDir dir("log");
  std::mt19937 rng(2);
  Written w;
  auto writer = open_writer(dir.path(), LogPosition{});
  LogPosition checkpoint{};
  size_t checkpoint_index = 0;
  std::vector<uint64_t> seen;
  for (int round = 0; round < 30; ++round) {
    append_records(*writer, &w, w.payloads.size(), 8, rng);
    if (round % 3 == 2) {
      checkpoint = writer->end();
      checkpoint_index = w.payloads.size();
      REQUIRE(writer->release_before(checkpoint).ok());
    }
    std::vector<uint64_t> segments;
    REQUIRE(list_log_segments(posix_file_layer(), dir.path(), &segments).ok());
    // Segments from the checkpoint's to the current one, plus at most 3 prepared ones.
    CHECK(segments.size() <= writer->end().segment - checkpoint.segment + 1 + 3);
    CHECK(segments.front() >= std::min(checkpoint.segment, writer->end().segment));
    CHECK(writer->segment_files() == segments.size());  // counted by the writer, never listed
    seen.push_back(writer->end().segment);
  }
  CHECK(std::is_sorted(seen.begin(), seen.end()));
  // A recycled segment ahead of the current one still holds its old bytes, which replay ignores.
  const Image image = read_image(dir.path());
  bool stale_ahead = false;
  for (const auto& [n, bytes] : image) {
    if (n > writer->end().segment) stale_ahead |= bytes.find_first_not_of('\0') != std::string::npos;
  }
  CHECK(stale_ahead);

  Replayed r = replay(dir.path(), checkpoint);
  REQUIRE(r.status.ok());
  CHECK(r.payloads == slice(w.payloads, checkpoint_index, w.payloads.size()));
  CHECK(r.result.end == writer->end());
  CHECK(replay(dir.path()).status.is_corruption());  // segment 1 is gone: replay from it is refused
  CHECK(writer->bytes_between(checkpoint, writer->end()) ==
        (writer->end().segment - checkpoint.segment) * kSegment + writer->end().offset - checkpoint.offset);
  CHECK(writer->bytes_between(writer->end(), checkpoint) == 0);

  writer.reset();
  auto reopened = open_writer(dir.path(), r.result.end);
  append_records(*reopened, &w, w.payloads.size(), 20, rng);
  Replayed after = replay(dir.path(), checkpoint);
  REQUIRE(after.status.ok());
  CHECK(after.payloads == slice(w.payloads, checkpoint_index, w.payloads.size()));
  std::vector<uint64_t> segments;
  REQUIRE(list_log_segments(posix_file_layer(), dir.path(), &segments).ok());
  CHECK(reopened->segment_files() == segments.size());  // a reopen counts what it found
  REQUIRE(reopened->release_before(reopened->end()).ok());
  REQUIRE(list_log_segments(posix_file_layer(), dir.path(), &segments).ok());
  CHECK(reopened->segment_files() == segments.size());
}

namespace {

// Every cut of the bytes written after `before` was taken: the log as it is when the writer's
// byte stream stopped at `cut` (what follows it in its segment, and every later segment, is as
// it was before). Replay from `from` must give exactly the records that end at or before the cut.
void check_cut(const fs::path& dir, const Image& before, const Image& after, LogPosition cut, LogPosition from,
               const Written& w, size_t first_record) {
  Image image;
  for (const auto& [n, bytes] : after) {
    const auto old = before.find(n);
    const std::string old_bytes = old != before.end() ? old->second : std::string(bytes.size(), '\0');
    if (n < cut.segment) {
      image[n] = bytes;
    } else if (n == cut.segment) {
      image[n] = bytes.substr(0, cut.offset) + old_bytes.substr(std::min<size_t>(cut.offset, old_bytes.size()));
    } else {
      image[n] = old_bytes;
    }
  }
  write_image(dir, image);
  size_t expected = first_record;
  while (expected < w.ends.size() && w.ends[expected] <= cut) ++expected;
  Replayed r = replay(dir, from);
  INFO("cut at " << cut.to_string() << ": " << r.status.to_string());
  REQUIRE(r.status.ok());
  REQUIRE(r.payloads == slice(w.payloads, first_record, expected));
  // Where the next record goes: right after the last whole one (or where a torn one starts).
  const LogPosition last_end = expected > first_record ? w.ends[expected - 1] : from;
  CHECK((r.result.end == last_end || r.result.end == LogPosition{last_end.segment + 1, 0}));
}

void check_every_cut(bool recycled) {
  TempDir dir("log");
  TempDir scratch("log-cut");
  std::mt19937 rng(recycled ? 11 : 12);
  Written w;
  auto writer = open_writer(dir.path(), LogPosition{});
  if (recycled) {
    // Phase A: enough log, checkpoints and releases that the segments ahead are recycled ones.
    append_records(*writer, &w, 0, 40, rng);
    REQUIRE(writer->release_before(writer->end()).ok());
  }
  const LogPosition from = writer->end();
  const size_t first = w.payloads.size();
  const Image before = read_image(dir.path());
  append_records(*writer, &w, first, 35, rng);
  const Image after = read_image(dir.path());
  REQUIRE(writer->end().segment >= from.segment + 2);

  std::vector<LogPosition> cuts;
  for (size_t i = first; i < w.ends.size(); ++i) {
    cuts.push_back(w.starts[i]);
    cuts.push_back(w.ends[i]);
    if (i + 1 < w.ends.size() && w.starts[i + 1].segment != w.ends[i].segment) {
      for (uint64_t k = 1; k <= kLogHeaderBytes; ++k) cuts.push_back({w.ends[i].segment, w.ends[i].offset + k});  // the segment-end record
    }
  }
  // Every byte of the last two records; random bytes inside the others.
  for (size_t i = w.ends.size() - 2; i < w.ends.size(); ++i) {
    for (uint64_t o = w.starts[i].offset; o < w.ends[i].offset; ++o) cuts.push_back({w.starts[i].segment, o});
  }
  for (int k = 0; k < 300; ++k) {
    const size_t i = first + rng() % (w.ends.size() - first);
    const uint64_t len = w.ends[i].offset - w.starts[i].offset;
    cuts.push_back({w.starts[i].segment, w.starts[i].offset + rng() % len});
  }
  for (const LogPosition& cut : cuts) check_cut(scratch.path(), before, after, cut, from, w, first);
}

}  // namespace

TEST_CASE("log cut at every record boundary and inside its last records replays the records before the cut", "[log]") {
  SECTION("fresh segments (zeros after the cut)") { check_every_cut(false); }
  SECTION("recycled segments (stale records after the cut)") { check_every_cut(true); }
}

namespace {

// One byte of the log flipped: replay gives exactly the records before the damaged one, or
// corruption naming its file and offset; never a record after the damage, never a wrong one.
void check_flips(bool recycled, bool every_byte) {
  TempDir dir("log");
  TempDir scratch("log-flip");
  std::mt19937 rng(recycled ? 21 : 22);
  Written w;
  auto writer = open_writer(dir.path(), LogPosition{}, nullptr, 1024);
  if (recycled) {
    append_records(*writer, &w, 0, 40, rng, 150);
    REQUIRE(writer->release_before(writer->end()).ok());
  }
  const LogPosition from = writer->end();
  const size_t first = w.payloads.size();
  append_records(*writer, &w, first, 24, rng, 150);
  const Image clean = read_image(dir.path());
  writer.reset();

  // Each damaged unit in log order: the records and the segment-end records between them.
  struct Unit {
    LogPosition start;
    uint64_t bytes;
    size_t records_before;  // records of w (from `first`) before it
  };
  std::vector<Unit> units;
  for (size_t i = first; i < w.ends.size(); ++i) {
    if (i > first && w.starts[i].segment != w.ends[i - 1].segment && w.ends[i - 1].offset + kLogHeaderBytes <= 1024) {
      units.push_back({w.ends[i - 1], kLogHeaderBytes, i - first});
    }
    units.push_back({w.starts[i], w.ends[i].offset - w.starts[i].offset, i - first});
  }
  const std::vector<std::string> expected_all = slice(w.payloads, first, w.payloads.size());

  std::vector<std::pair<uint64_t, uint64_t>> flips;  // (segment, offset)
  for (const auto& [n, bytes] : clean) {
    if (n < from.segment) continue;
    for (uint64_t o = 0; o < bytes.size(); ++o) {
      if (every_byte || rng() % 8 == 0) flips.emplace_back(n, o);
    }
  }
  for (const auto& [n, o] : flips) {
    Image image = clean;
    image[n][o] = static_cast<char>(image[n][o] ^ static_cast<char>(1 + rng() % 255));
    write_image(scratch.path(), image);
    const Unit* damaged = nullptr;
    for (const Unit& u : units) {
      if (u.start.segment == n && o >= u.start.offset && o < u.start.offset + u.bytes) damaged = &u;
    }
    const size_t before = damaged ? damaged->records_before : expected_all.size();
    const bool last = damaged == &units.back();
    Replayed r = replay(scratch.path(), from);
    INFO("flip at " << n << ":" << o << ": " << r.status.to_string());
    REQUIRE(r.payloads.size() <= before);
    REQUIRE(r.payloads == slice(expected_all, 0, r.payloads.size()));
    if (damaged == nullptr || last) {
      REQUIRE(r.status.ok());
      REQUIRE(r.payloads.size() == before);
    } else {
      REQUIRE(r.status.is_corruption());
      CHECK_THAT(r.status.message(), Catch::Contains(log_segment_name(damaged->start.segment) + " offset " +
                                                      std::to_string(damaged->start.offset) + ":"));
      CHECK_THAT(r.status.message(), Catch::Contains("restore the data directory from a backup"));
    }
  }
}

}  // namespace

TEST_CASE("log bytes flipped anywhere never yield a record after the damage", "[log]") {
  SECTION("every byte of a small log on fresh segments") { check_flips(false, true); }
  SECTION("a sample of the bytes on recycled segments") { check_flips(true, false); }
}

TEST_CASE("log torn tail is cut off at replay and zeroed before the next append", "[log]") {
  TempDir dir("log");
  std::mt19937 rng(3);
  Written w;
  auto writer = open_writer(dir.path(), LogPosition{});
  append_records(*writer, &w, 0, 5, rng, 300);
  const LogPosition end = writer->end();
  writer.reset();
  // A record of 1000 bytes whose write stopped after 600 of them.
  std::string torn;
  encode_log_record(end.segment, LogRecordType::full, std::string(1000 - kLogHeaderBytes, 't'), &torn);
  {
    std::fstream f(dir.path() / log_segment_name(end.segment), std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(static_cast<std::streamoff>(end.offset));
    f.write(torn.data(), 600);
  }
  Replayed r = replay(dir.path());
  REQUIRE(r.status.ok());
  CHECK(r.payloads == w.payloads);
  CHECK(r.result.torn);
  CHECK(r.result.torn_at == end);
  CHECK(r.result.torn_bytes == 1000);
  CHECK(r.result.end == end);

  writer = open_writer(dir.path(), r.result.end);
  const std::string bytes = test::read_file(dir.path() / log_segment_name(end.segment));
  CHECK(bytes.substr(end.offset, 1000) == std::string(1000, '\0'));
  append_records(*writer, &w, 5, 1, rng, 50);
  Replayed again = replay(dir.path());
  REQUIRE(again.status.ok());
  CHECK(again.payloads == w.payloads);
  CHECK_FALSE(again.result.torn);
}

TEST_CASE("log power loss keeps every acknowledged append", "[log]") {
  TempDir dir("log");
  std::mt19937 rng(4);
  UnsyncedDropFileLayer files;
  std::vector<std::string> acked;       // since the checkpoint
  LogPosition checkpoint{};
  uint64_t torn_tails = 0;
  uint64_t total = 0;
  for (int round = 0; round < 120; ++round) {
    Replayed r = replay(dir.path(), checkpoint, &files);
    INFO("round " << round << ": " << r.status.to_string());
    REQUIRE(r.status.ok());
    REQUIRE(r.payloads.size() >= acked.size());
    REQUIRE(slice(r.payloads, 0, acked.size()) == acked);
    REQUIRE(r.payloads.size() <= acked.size() + 1);  // at most the append that was cut
    total += r.payloads.size() - acked.size();
    acked = r.payloads;
    torn_tails += r.result.torn ? 1 : 0;

    auto writer = open_writer(dir.path(), r.result.end, &files);
    if (round % 4 == 3) {  // a checkpoint: the segments before it are recycled
      checkpoint = r.result.end;
      acked.clear();
      REQUIRE(writer->release_before(checkpoint).ok());
    }
    const int n = static_cast<int>(rng() % 6);
    for (int i = 0; i < n; ++i) {
      const std::string p = payload_of(total, rng() % 900);
      REQUIRE(writer->append(p).ok());
      acked.push_back(p);
      ++total;
    }
    const std::string p = payload_of(total, rng() % 900);
    if (round % 10 == 9) {
      files.crash();  // a power loss between appends: everything acknowledged is synced
      continue;
    }
    // Appends rewrite the head of their first page (whole-page writes): tear inside the record.
    const uint64_t head = writer->end().offset % 4096;
    files.crash_on_next_sync(head + rng() % (p.size() + 2 * kLogHeaderBytes + 1));
    const Status s = writer->append(p);
    REQUIRE(s.is_io_error());
    CHECK(writer->append("refused").is_io_error());
  }
  CHECK(torn_tails > 10);
  CHECK(total > 250);
}

TEST_CASE("log without sync loses what no fdatasync covered at a power loss", "[log]") {
  TempDir dir("log");
  UnsyncedDropFileLayer files;
  auto writer = open_writer(dir.path(), LogPosition{}, &files, kSegment, /*sync=*/false);
  for (int i = 0; i < 10; ++i) REQUIRE(writer->append(payload_of(static_cast<uint64_t>(i), 100)).ok());
  CHECK(files.unsynced_bytes() > 0);
  CHECK(replay(dir.path(), LogPosition{}, &files).payloads.size() == 10);  // the page cache has them
  files.crash();
  Replayed r = replay(dir.path(), LogPosition{}, &files);
  REQUIRE(r.status.ok());
  CHECK(r.payloads.empty());
}

TEST_CASE("log full disk: no_space while allocating a segment, nothing written, later appends succeed", "[log]") {
  TempDir dir("log");
  UnsyncedDropFileLayer files;
  std::vector<std::string> acked;
  auto writer = open_writer(dir.path(), LogPosition{}, &files);  // segments 1 and 2 exist
  files.fail_writes(ENOSPC);
  // Segment 2 was prepared before the disk filled: appends go on into it; preparing 3 fails.
  while (writer->end().segment < 2 || writer->end().offset + 300 + kLogHeaderBytes <= kSegment) {
    acked.push_back(payload_of(acked.size(), 300));
    REQUIRE(writer->append(acked.back()).ok());
  }
  const LogPosition end = writer->end();
  const uint64_t writes = files.writes();
  for (int i = 0; i < 3; ++i) {
    const Status s = writer->append(payload_of(999, 300));
    CHECK(s.is_no_space());
  }
  CHECK(files.writes() == writes);
  CHECK(writer->end() == end);
  Replayed r = replay(dir.path(), LogPosition{}, &files);
  REQUIRE(r.status.ok());
  CHECK(r.payloads == acked);

  SECTION("space comes back") {
    files.fail_writes(0);
    acked.push_back(payload_of(acked.size(), 300));
    REQUIRE(writer->append(acked.back()).ok());
    CHECK(writer->end().segment == 3);
  }
  SECTION("a checkpoint releases a segment, which is recycled while the disk is still full") {
    REQUIRE(writer->release_before(end).ok());
    acked.push_back(payload_of(acked.size(), 300));
    REQUIRE(writer->append(acked.back()).ok());
    CHECK(writer->end().segment == 3);
  }
  Replayed after = replay(dir.path(), LogPosition{end.segment, 0}, &files);
  REQUIRE(after.status.ok());
  CHECK(after.payloads.back() == acked.back());
  // A segment that could not be prepared is not counted: the count is the files there are.
  std::vector<uint64_t> segments;
  REQUIRE(list_log_segments(files, dir.path(), &segments).ok());
  CHECK(writer->segment_files() == segments.size());
}

TEST_CASE("log io errors: the writer refuses every later append", "[log]") {
  TempDir dir("log");
  UnsyncedDropFileLayer files;
  auto writer = open_writer(dir.path(), LogPosition{}, &files);
  REQUIRE(writer->append("one").ok());
  SECTION("a failed fdatasync") {
    files.fail_next_sync(EIO);
    const Status s = writer->append("two");
    CHECK(s.is_io_error());
    CHECK(s.err() == EIO);
  }
  SECTION("a failed write") {
    files.fail_writes(EIO);
    CHECK(writer->append("two").is_io_error());
    files.fail_writes(0);
  }
  const uint64_t writes = files.writes();
  const Status refused = writer->append("three");
  CHECK(refused.is_io_error());
  CHECK(refused.message().find("refuses appends") != std::string::npos);
  CHECK(files.writes() == writes);
  Replayed r = replay(dir.path(), LogPosition{}, &files);
  REQUIRE(r.status.ok());
  CHECK(r.payloads == std::vector<std::string>{"one"});
}

TEST_CASE("log inspect_log: 0 on a clean log, 1 on a damaged one", "[log]") {
  TempDir dir("log");
  std::mt19937 rng(5);
  Written w;
  auto writer = open_writer(dir.path(), LogPosition{});
  append_records(*writer, &w, 0, 30, rng);
  writer.reset();
  const LogPosition checkpoint = w.starts[10];
  std::ostringstream out;

  SECTION("clean") {
    CHECK(inspect_log(dir.path(), checkpoint, true, out) == 0);
    CHECK_THAT(out.str(), Catch::Contains(log_segment_name(1) + "  segment 1  4096 bytes"));
    CHECK_THAT(out.str(), Catch::Contains("record 1:0  length " + std::to_string(w.payloads[0].size()) + "  crc ok"));
    CHECK_THAT(out.str(), Catch::Contains("checkpoint: " + checkpoint.to_string()));
    CHECK_THAT(out.str(), Catch::Contains("past the checkpoint: 20 records"));
    CHECK_THAT(out.str(), Catch::Contains("records: 30"));
    CHECK_THAT(out.str(), Catch::Contains("result: clean"));
  }
  SECTION("a flipped byte in the middle") {
    Image image = read_image(dir.path());
    image[w.starts[12].segment][w.starts[12].offset + 5] ^= 0x40;  // its length
    write_image(dir.path(), image);
    CHECK(inspect_log(dir.path(), std::nullopt, false, out) == 1);
    CHECK_THAT(out.str(), Catch::Contains("result: damaged: corruption: the log of this node is damaged at"));
  }
  SECTION("a torn tail is clean, and reported") {
    Image image = read_image(dir.path());
    image[w.starts.back().segment][w.starts.back().offset + 1] ^= 0x01;
    write_image(dir.path(), image);
    CHECK(inspect_log(dir.path(), checkpoint, false, out) == 0);
    CHECK_THAT(out.str(), Catch::Contains("torn tail: at " + w.starts.back().to_string()));
  }
  SECTION("a checkpoint inside a record or past the end") {
    CHECK(inspect_log(dir.path(), LogPosition{checkpoint.segment, checkpoint.offset + 1}, false, out) == 1);
    CHECK(inspect_log(dir.path(), LogPosition{w.ends.back().segment + 5, 0}, false, out) == 1);
  }
}

}  // namespace bidmesh
