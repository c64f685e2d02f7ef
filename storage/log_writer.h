// LogWriter: appends records to a bid node's write-ahead log (format: storage/log_format.h), the
// node's durability point: a reply leaves only after the record of its batch is durable.
//
// Guarantees
// - append() returning ok means the record is on disk (with `sync`): one write_at() and one
//   fdatasync in the steady state, into a preallocated segment (overwriting blocks that were
//   already written: no file growth, no metadata to journal).
// - Records are replayed (storage/log_reader.h) in append order; a crash loses at most the
//   record whose append had not returned, and a torn copy of it is cut off at replay.
// - Failures (each append documents its Status):
//     ok                the record is durable;
//     no_space          nothing was written: no segment could be allocated for a record that
//                       does not fit in the current one; a later append may succeed (after
//                       release_before() freed a segment, or the disk got space);
//     io_error          a write or an fdatasync failed (or a segment could not be created for
//                       another reason): what is on disk is unknown, as Linux may drop the dirty
//                       pages of a failed fsync. The writer refuses every later append with
//                       io_error; the caller must stop the process and replay at restart
//                       (PostgreSQL's PANIC rule);
//     invalid_argument  the payload is larger than max_payload(); nothing written.
// - Segments: a record never spans two. When it does not fit in what is left of the current
//   segment, the writer ends that segment with a segment-end record, syncs it, and writes the
//   record at the start of the next one, which is prepared ahead (a segment recycled by
//   release_before(), renamed, or a new file of zeros). That append costs two writes and two
//   syncs, plus the preparation of the following segment: a rename and a directory fsync for a
//   recycled one, or writing segment_bytes of zeros for a new one (tens of ms for 16 MiB).
//   Keep checkpointing and calling release_before() so that recycled segments are at hand.
// - Segment numbers strictly increase; at most 3 prepared segments wait beyond the current one.
//
// Caveats
// - `sync = false` (the unsafe durability mode) keeps the order of records but not their
//   durability: after a power loss any suffix may be lost, and holes may appear that replay then
//   reports as corruption. A killed process loses nothing (the page cache survives it).
// - One writer per directory; replay_log() may read the log between appends, never during one.
//   Nothing locks the directory: the bid node's own lock (its LMDB environment) keeps a second
//   process out.
//
// Thread-compatible: one thread owns a LogWriter.
#pragma once

#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>

#include "storage/log_file.h"
#include "storage/log_format.h"
#include "storage/status.h"

namespace bidmesh {

struct LogOptions {
  std::filesystem::path dir;             // created if missing
  uint64_t segment_bytes = 16ull << 20;  // fixed segment size, preallocated with zeros (>= 64)
  bool sync = true;                      // false: no fdatasync (the unsafe durability mode only)
  FileLayer* files = nullptr;            // null: posix_file_layer()
};

class LogWriter {
 public:
  // Opens the log in options.dir for appending at `end`: the position replay_log() returned
  // (LogPosition{} for an empty log). A torn record at `end` is zeroed (write and sync), so that
  // no byte after `end` can ever be read as a record. Creates the directory, the segment of
  // `end` and the next one when missing.
  // Errors: invalid_argument (bad options; `end` is not the end of the log: a valid record lies at
  // or after it), no_space, io_error.
  static Status open(const LogOptions& options, LogPosition end, std::unique_ptr<LogWriter>* out);
  ~LogWriter();
  LogWriter(const LogWriter&) = delete;
  LogWriter& operator=(const LogWriter&) = delete;

  // Appends ONE record holding `payload` (see the guarantees above for the Status).
  Status append(std::string_view payload);

  LogPosition end() const { return LogPosition{segment_, offset_}; }  // position of the next record
  uint64_t max_payload() const;

  // Segments wholly before `checkpoint` (numbered below checkpoint.segment, and below the current
  // one) are no longer needed: up to 2 of them are kept for reuse (renamed to future numbers, so
  // that at most 3 prepared segments wait beyond the current one), the others are removed.
  // REQUIRES: the state that covers every record before `checkpoint` is durable (a synced LMDB
  // commit): those records are gone once this returns.
  // Errors: io_error (the appends are not affected).
  Status release_before(LogPosition checkpoint);

  // The log bytes from `from` to `to` (0 when to <= from), counting segment_bytes per segment:
  // for "checkpoint every N bytes".
  uint64_t bytes_between(LogPosition from, LogPosition to) const;

  // The segment files of the log on disk: those before the current one that release_before()
  // has not removed or recycled yet, the current one, and the prepared ones. Counted as the
  // writer creates, renames and removes them (no directory listing), so a file put into the
  // directory by someone else is not counted.
  uint64_t segment_files() const { return behind_ + 1 + ahead_; }

 private:
  LogWriter(const LogOptions& options, FileLayer* files);
  Status open_at(LogPosition end);
  Status zero_torn_record();
  Status prepare_next();  // creates segment segment_ + ahead_ + 1, zeroed
  Status move_to_next_segment();
  Status write_pages();
  Status fail(const Status& s);  // remembers s as an io_error and returns it
  std::filesystem::path path_of(uint64_t segment) const;

  const LogOptions options_;
  FileLayer* const files_;
  std::unique_ptr<LogFile> file_;  // the current segment
  uint64_t segment_ = 1;
  uint64_t offset_ = 0;
  uint64_t size_ = 0;   // of the current segment's file
  uint64_t ahead_ = 0;  // files segment_+1 .. segment_+ahead_ exist: segment_bytes long, no records
  uint64_t behind_ = 0;  // segment files numbered below segment_, not yet released
  Status failed_;       // ok until a write or a sync failed
  std::string record_;  // the record being written (kept to reuse its buffer)
  std::string page_head_;  // the current page's bytes before offset_ (offset_ % 4096 of them)
  std::string write_buf_;  // page_head_ + record_ + zero padding, as written
};

}  // namespace bidmesh
