// Replay of a bid node's write-ahead log (format: storage/log_format.h).
//
// Guarantees of replay_log():
// - It hands over every record from `from` to the end of the log, in order, each exactly once,
//   and only records whose CRC matches. It never skips a record: where the records stop early,
//   it either proves that the log ends there or fails with Status::corruption.
// - A torn tail (a crash cut the last write, which was never acknowledged) is expected: it is
//   cut off and reported in ReplayResult (torn, torn_at, torn_bytes); replay returns ok.
// - A damaged record that is not the last (a valid record of the log follows it, in its segment
//   or in a later one), a missing segment file, or a record of an unknown type is corruption. The
//   message names the file and the offset, and says what to do: "the log of this node is damaged
//   at <file> offset N: <what>; restore the data directory from a backup, or run bidmesh-wal to
//   inspect it".
// - It only reads. After a torn tail the writer (storage/log_writer.h) zeroes the torn bytes when
//   it is opened at result.end.
//
// Cost: the log is read from `from` on, in 64 KiB windows (one reused buffer, grown only for a
// larger record), and every record's CRC is computed (about 400 MB/s, storage/crc32c.h). Where
// the records stop, the next kMaxLogPayloadBytes + one header are searched for a valid record
// (memchr speed), and the first record of each later segment file is read. Measured on the
// reference VM with the page cache warm: an empty tail (1 MiB searched), under 1 ms; a whole
// 16 MiB segment of records, 40-48 ms (the CRC).
//
// Thread-safety: replay_log() may run in several threads on different directories. On a log that
// a LogWriter has open, it may run between appends (in the writer's thread), never during one.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string_view>
#include <vector>

#include "storage/log_file.h"
#include "storage/log_format.h"
#include "storage/status.h"

namespace bidmesh {

struct ReplayResult {
  LogPosition end;              // where the next record goes: pass it to LogWriter::open
  uint64_t records = 0;         // records handed to fn
  bool torn = false;            // a torn last record was cut off
  LogPosition torn_at;          // ... its position (== end)
  uint64_t torn_bytes = 0;      // ... and the bytes it claims (header and payload, within its segment)
};

// Reads every record from `from` to the end of the log in `dir`, calling fn(payload, next) for
// each, `next` being the position just after it (payload points into a buffer valid during the
// call only). When fn fails, replay stops with fn's status, result->end at that record; a
// corruption from fn (a payload it cannot parse) gets the record's file and offset, as above.
// A missing directory is an empty log. files: null for posix_file_layer().
// Errors: corruption (above), io_error, invalid_argument (from.segment == 0).
Status replay_log(const std::filesystem::path& dir, LogPosition from,
                  const std::function<Status(std::string_view payload, LogPosition next)>& fn, ReplayResult* result,
                  FileLayer* files = nullptr);

// For the writer and the inspector:
// The segment numbers in `dir`, ascending (a missing directory has none).
Status list_log_segments(FileLayer& files, const std::filesystem::path& dir, std::vector<uint64_t>* segments);
// Whether segment file `segment` of `dir` starts with a valid record (of its own number).
Status log_segment_starts_with_record(FileLayer& files, const std::filesystem::path& dir, uint64_t segment, bool* yes);
// The message of every corruption: names the file, the offset and what to do.
std::string log_damage_message(const std::filesystem::path& file, uint64_t offset, const std::string& what);

}  // namespace bidmesh
