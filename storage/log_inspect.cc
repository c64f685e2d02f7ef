// inspect_log (storage/log_inspect.h): a replay that prints instead of applying.
#include "storage/log_inspect.h"

#include <memory>
#include <vector>

#include "storage/log_file.h"
#include "storage/log_reader.h"

namespace bidmesh {
namespace {

constexpr int kClean = 0;
constexpr int kDamaged = 1;
constexpr int kSystemFailure = 111;

int fail(std::ostream& out, const Status& s) {
  out << (s.is_corruption() ? "result: damaged: " : "result: cannot read the log: ") << s.to_string() << "\n";
  return s.is_corruption() ? kDamaged : kSystemFailure;
}

}  // namespace

int inspect_log(const std::filesystem::path& dir, std::optional<LogPosition> checkpoint, bool verbose,
                std::ostream& out) {
  FileLayer& files = posix_file_layer();
  out << "log " << dir.string() << "\n";
  std::vector<uint64_t> segments;
  if (Status s = list_log_segments(files, dir, &segments); !s.ok()) return fail(out, s);
  out << "segments: " << segments.size() << "\n";
  for (uint64_t n : segments) {
    std::unique_ptr<LogFile> f;
    if (Status s = files.open_existing(dir / log_segment_name(n), &f); !s.ok()) return fail(out, s);
    out << "  " << log_segment_name(n) << "  segment " << n << "  " << f->size() << " bytes\n";
  }
  if (checkpoint) {
    out << "checkpoint: " << checkpoint->to_string() << "\n";
  } else {
    out << "checkpoint: none given\n";
  }

  const LogPosition first{segments.empty() ? 1 : segments.front(), 0};
  uint64_t after_checkpoint = 0;
  uint64_t bytes_after_checkpoint = 0;
  ReplayResult r;
  const Status s = replay_log(
      dir, first,
      [&](std::string_view payload, LogPosition next) {
        const LogPosition at{next.segment, next.offset - kLogHeaderBytes - payload.size()};
        if (verbose) out << "  record " << at.to_string() << "  length " << payload.size() << "  crc ok\n";
        if (checkpoint && at >= *checkpoint) {
          ++after_checkpoint;
          bytes_after_checkpoint += kLogHeaderBytes + payload.size();
        }
        return Status::OK();
      },
      &r, &files);
  out << "records: " << r.records << "\n";
  if (!s.ok()) return fail(out, s);
  out << "end: " << r.end.to_string() << "\n";
  if (r.torn) {
    out << "torn tail: at " << r.torn_at.to_string() << ", " << r.torn_bytes
        << " bytes (a write cut by a crash, never acknowledged; the writer zeroes it when it opens)\n";
  }
  if (checkpoint) {
    out << "past the checkpoint: " << after_checkpoint << " records, " << bytes_after_checkpoint << " bytes\n";
    if (checkpoint->segment < first.segment) {
      out << "result: damaged: the checkpoint lies in segment " << checkpoint->segment
          << ", which was removed (the oldest is " << first.segment << ")\n";
      return kDamaged;
    }
    if (*checkpoint > r.end) {
      out << "result: damaged: the checkpoint lies past the end of the log (" << r.end.to_string() << ")\n";
      return kDamaged;
    }
    ReplayResult from_checkpoint;
    const Status cs = replay_log(
        dir, *checkpoint, [](std::string_view, LogPosition) { return Status::OK(); }, &from_checkpoint, &files);
    if (!cs.ok() || from_checkpoint.end != r.end) {
      out << "result: damaged: a replay from the checkpoint (as the node does at start) "
          << (cs.ok() ? "ends at " + from_checkpoint.end.to_string() + ": the checkpoint is not at a record boundary"
                      : "fails: " + cs.to_string())
          << "\n";
      return cs.ok() || cs.is_corruption() ? kDamaged : kSystemFailure;
    }
  }
  out << "result: clean" << (r.torn ? " (torn tail cut off)" : "") << "\n";
  return kClean;
}

}  // namespace bidmesh
