// Replay of the write-ahead log: the record walk, and the proof that the log ends where its
// records stop (storage/log_format.h, "Torn tail or corruption").
#include "storage/log_reader.h"

#include <algorithm>
#include <cstring>
#include <optional>

namespace bidmesh {
namespace {

namespace fs = std::filesystem;

// Replay reads segments in windows of this size. Small on purpose: a restart's tail is tens of KiB,
// and the end-of-log search reads up to 1 MiB of (usually zero) space after it. A 1 MiB buffer
// cost ~10 ms at start on the reference VM (its first touch is 256 page faults, and a second
// 2 MiB one when the window grew by a header); 64 KiB stays in the heap, already mapped.
constexpr uint64_t kChunkBytes = 64 << 10;

// A window on a segment file: the bytes a replay looks at, read in chunks into one reused buffer
// (no segment-sized allocation, no read of what lies before the start position).
class SegmentWindow {
 public:
  SegmentWindow(LogFile& file, std::string* buf) : file_(file), buf_(*buf), size_(file.size()) { buf_.clear(); }
  uint64_t size() const { return size_; }

  // The bytes [off, off + n) of the file (fewer when it ends first); valid until the next call.
  Status view(uint64_t off, uint64_t n, std::string_view* out) {
    n = std::min(n, size_ - std::min(off, size_));
    if (!(off >= start_ && off + n <= start_ + buf_.size())) {
      if (Status s = file_.read_at(off, std::min(std::max(n, kChunkBytes), size_ - off), &buf_); !s.ok()) return s;
      start_ = off;
      if (buf_.size() < n) return Status::io_error("short read of a log segment at offset " + std::to_string(off));
    }
    *out = std::string_view(buf_).substr(off - start_, n);
    return Status::OK();
  }

 private:
  LogFile& file_;
  std::string& buf_;
  const uint64_t size_;
  uint64_t start_ = 0;
};

// The first valid record of `segment` starting at or after `from`. A header holds the segment
// number at +9, so the search looks for the number's first non-zero byte with memchr, and checks
// the other seven bytes before it reads a payload and computes a CRC.
Status find_valid_record(SegmentWindow& window, LogFile& file, uint64_t from, uint64_t segment,
                         std::optional<uint64_t>* found) {
  found->reset();
  char pattern[8];
  log_format::put_le(pattern, segment, 8);
  int k = 0;
  while (k < 7 && pattern[k] == 0) ++k;  // segment >= 1: some byte is not zero
  const uint64_t lead = kLogSegmentOffset + static_cast<uint64_t>(k);
  const uint64_t size = window.size();
  if (size < kLogHeaderBytes) return Status::OK();
  // The last offset a header can start at: records are contiguous, so when one follows a damaged
  // or erased header at from - 1, the next one starts within one record's length of it.
  const uint64_t last_start = std::min(size - kLogHeaderBytes, from - 1 + kLogHeaderBytes + kMaxLogPayloadBytes);
  std::string record;
  for (uint64_t chunk = from; chunk <= last_start; chunk += kChunkBytes) {
    const uint64_t chunk_last = std::min(last_start, chunk + kChunkBytes - 1);  // headers starting in this chunk
    std::string_view bytes;
    if (Status s = window.view(chunk, chunk_last - chunk + kLogHeaderBytes, &bytes); !s.ok()) return s;
    for (uint64_t q = 0; q <= chunk_last - chunk;) {
      const void* hit = std::memchr(bytes.data() + q + lead, pattern[k], chunk_last - chunk - q + 1);
      if (hit == nullptr) break;
      q = static_cast<uint64_t>(static_cast<const char*>(hit) - bytes.data()) - lead;
      if (std::memcmp(bytes.data() + q + kLogSegmentOffset, pattern, 8) == 0) {
        const LogHeader h = decode_log_header(bytes.data() + q, segment);
        const uint64_t at = chunk + q;
        if (h.length <= size - at - kLogHeaderBytes) {
          if (Status s = file.read_at(at, kLogHeaderBytes + h.length, &record); !s.ok()) return s;
          if (log_record_valid(record, 0, segment)) {
            *found = at;
            return Status::OK();
          }
        }
      }
      ++q;
    }
  }
  return Status::OK();
}

// Why the records of a segment stopped at a header that is not a valid record.
enum class Stop { zero, other_segment, damaged };

std::string describe(Stop stop, const LogHeader& h, uint64_t room) {
  switch (stop) {
    case Stop::zero: return "the records stop (unwritten space)";
    case Stop::other_segment:
      return "the records stop (a header of segment " + std::to_string(h.segment) + ": stale bytes)";
    case Stop::damaged:
      if (h.length > room) {
        return "a damaged record (length " + std::to_string(h.length) + " runs past the segment's end)";
      }
      return "a damaged record (CRC mismatch, length " + std::to_string(h.length) + ")";
  }
  return "";
}

// The first segment after `after` (in `segments`) that starts with a valid record.
Status later_segment_with_records(FileLayer& files, const fs::path& dir, const std::vector<uint64_t>& segments,
                                  uint64_t after, std::optional<uint64_t>* found) {
  found->reset();
  for (auto it = std::upper_bound(segments.begin(), segments.end(), after); it != segments.end(); ++it) {
    bool yes = false;
    if (Status s = log_segment_starts_with_record(files, dir, *it, &yes); !s.ok()) return s;
    if (yes) {
      *found = *it;
      return Status::OK();
    }
  }
  return Status::OK();
}

}  // namespace

std::string log_damage_message(const fs::path& file, uint64_t offset, const std::string& what) {
  return "the log of this node is damaged at " + file.string() + " offset " + std::to_string(offset) + ": " + what +
         "; restore the data directory from a backup, or run bidmesh-wal to inspect it";
}

Status list_log_segments(FileLayer& files, const fs::path& dir, std::vector<uint64_t>* segments) {
  segments->clear();
  std::vector<std::string> names;
  Status s = files.list(dir, &names);
  if (s.is_not_found()) return Status::OK();
  if (!s.ok()) return s;
  for (const std::string& name : names) {
    if (auto n = parse_log_segment_name(name)) segments->push_back(*n);
  }
  std::sort(segments->begin(), segments->end());
  return Status::OK();
}

Status log_segment_starts_with_record(FileLayer& files, const fs::path& dir, uint64_t segment, bool* yes) {
  *yes = false;
  std::unique_ptr<LogFile> file;
  if (Status s = files.open_existing(dir / log_segment_name(segment), &file); !s.ok()) {
    return s.is_not_found() ? Status::OK() : s;
  }
  std::string bytes;
  if (Status s = file->read_at(0, kLogHeaderBytes, &bytes); !s.ok()) return s;
  if (bytes.size() < kLogHeaderBytes) return Status::OK();
  const LogHeader h = decode_log_header(bytes.data(), segment);
  if (h.kind != LogHeaderKind::record || h.length > file->size() - kLogHeaderBytes) return Status::OK();
  if (Status s = file->read_at(0, kLogHeaderBytes + h.length, &bytes); !s.ok()) return s;
  *yes = log_record_valid(bytes, 0, segment);
  return Status::OK();
}

Status replay_log(const fs::path& dir, LogPosition from,
                  const std::function<Status(std::string_view payload, LogPosition next)>& fn, ReplayResult* result,
                  FileLayer* files_or_null) {
  FileLayer& files = files_or_null != nullptr ? *files_or_null : posix_file_layer();
  *result = ReplayResult{};
  result->end = from;
  if (from.segment == 0) return Status::invalid_argument("log position " + from.to_string() + ": segments start at 1");

  std::vector<uint64_t> segments;
  if (Status s = list_log_segments(files, dir, &segments); !s.ok()) return s;

  LogPosition pos = from;
  std::string buf;  // the window's buffer, reused across segments
  std::optional<uint64_t> later;
  while (true) {
    const fs::path path = dir / log_segment_name(pos.segment);
    std::unique_ptr<LogFile> file;
    Status s = std::binary_search(segments.begin(), segments.end(), pos.segment) ? files.open_existing(path, &file)
                                                                                 : Status::not_found(path.string());
    if (s.is_not_found()) {
      // No file: the log ends here, unless records were promised in it or a later segment has some.
      if (s = later_segment_with_records(files, dir, segments, pos.segment, &later); !s.ok()) return s;
      if (later) {
        return Status::corruption(log_damage_message(
            path, pos.offset, "the segment file is missing, but segment " + std::to_string(*later) + " holds records"));
      }
      if (pos.offset > 0) {
        return Status::corruption(
            log_damage_message(path, pos.offset, "the segment file is missing, and position " + pos.to_string() +
                                                     " lies inside it"));
      }
      result->end = pos;
      return Status::OK();
    }
    if (!s.ok()) return s;
    SegmentWindow window(*file, &buf);
    const uint64_t size = window.size();
    if (pos.offset > size) {
      return Status::corruption(log_damage_message(
          path, pos.offset, "the position lies past the segment's end (" + std::to_string(size) + " bytes)"));
    }

    uint64_t off = pos.offset;
    std::optional<Stop> stop;
    LogHeader h;
    std::string_view bytes;
    while (size - off >= kLogHeaderBytes) {
      if (s = window.view(off, kLogHeaderBytes, &bytes); !s.ok()) return s;
      h = decode_log_header(bytes.data(), pos.segment);
      if (h.kind == LogHeaderKind::zero) {
        stop = Stop::zero;
        break;
      }
      if (h.kind == LogHeaderKind::other_segment) {
        stop = Stop::other_segment;
        break;
      }
      if (h.length > size - off - kLogHeaderBytes) {
        stop = Stop::damaged;
        break;
      }
      if (s = window.view(off, kLogHeaderBytes + h.length, &bytes); !s.ok()) return s;
      if (!log_record_valid(bytes, 0, pos.segment)) {
        stop = Stop::damaged;
        break;
      }
      if (h.type == static_cast<uint8_t>(LogRecordType::segment_end)) {
        if (h.length == 0) break;
        return Status::corruption(log_damage_message(
            path, off, "a segment-end record with a payload (" + std::to_string(h.length) + " bytes)"));
      }
      if (h.type != static_cast<uint8_t>(LogRecordType::full)) {
        return Status::corruption(log_damage_message(
            path, off, "a record of unknown type " + std::to_string(h.type) + " (length " + std::to_string(h.length) +
                           "; written by a newer bidmesh?)"));
      }
      const LogPosition next{pos.segment, off + kLogHeaderBytes + h.length};
      if (s = fn(bytes.substr(kLogHeaderBytes), next); !s.ok()) {
        result->end = LogPosition{pos.segment, off};
        // A payload the caller cannot parse passed its CRC: it was written so. Say where it is.
        if (s.is_corruption()) return Status::corruption(log_damage_message(path, off, s.message()));
        return s;
      }
      ++result->records;
      off = next.offset;
      result->end = next;
    }
    if (!stop) {
      // A segment-end record, or no room left for a header: the log goes on in the next segment.
      pos = LogPosition{pos.segment + 1, 0};
      result->end = pos;
      continue;
    }

    // The records stop early at `off`: the end of the log only if nothing written later survives.
    const uint64_t room = size - off - kLogHeaderBytes;
    const std::string what = describe(*stop, h, room);
    std::optional<uint64_t> q;
    if (s = find_valid_record(window, *file, off + 1, pos.segment, &q); !s.ok()) return s;
    if (q) {
      return Status::corruption(
          log_damage_message(path, off, what + ", but a valid record follows at offset " + std::to_string(*q)));
    }
    if (s = later_segment_with_records(files, dir, segments, pos.segment, &later); !s.ok()) return s;
    if (later) {
      return Status::corruption(log_damage_message(
          path, off, what + ", but segment " + std::to_string(*later) + " holds later records"));
    }
    result->end = LogPosition{pos.segment, off};
    if (*stop == Stop::damaged) {
      result->torn = true;
      result->torn_at = result->end;
      result->torn_bytes = kLogHeaderBytes + std::min<uint64_t>(h.length, room);
    }
    return Status::OK();
  }
}

}  // namespace bidmesh
