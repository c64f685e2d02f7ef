// LogWriter: segments, the append path, recycling (storage/log_writer.h).
#include "storage/log_writer.h"

#include <algorithm>
#include <vector>

#include "storage/log_reader.h"

namespace bidmesh {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kMinSegmentBytes = 64;
// Prepared segments beyond the current one: the next one, plus up to 2 recycled.
constexpr uint64_t kMaxAhead = 3;
// Appends write whole pages of this size (see write_pages).
constexpr uint64_t kPageBytes = 4096;

}  // namespace

LogWriter::LogWriter(const LogOptions& options, FileLayer* files) : options_(options), files_(files) {}

LogWriter::~LogWriter() = default;

fs::path LogWriter::path_of(uint64_t segment) const { return options_.dir / log_segment_name(segment); }

uint64_t LogWriter::max_payload() const {
  return std::min<uint64_t>(options_.segment_bytes - kLogHeaderBytes, kMaxLogPayloadBytes);
}

Status LogWriter::open(const LogOptions& options, LogPosition end, std::unique_ptr<LogWriter>* out) {
  if (options.segment_bytes < kMinSegmentBytes) {
    return Status::invalid_argument("log segment_bytes " + std::to_string(options.segment_bytes) + " is below " +
                                    std::to_string(kMinSegmentBytes));
  }
  if (end.segment == 0) return Status::invalid_argument("log position " + end.to_string() + ": segments start at 1");
  FileLayer* files = options.files != nullptr ? options.files : &posix_file_layer();
  std::unique_ptr<LogWriter> w(new LogWriter(options, files));
  if (Status s = w->open_at(end); !s.ok()) return s;
  *out = std::move(w);
  return Status::OK();
}

Status LogWriter::open_at(LogPosition end) {
  if (Status s = files_->create_dir(options_.dir); !s.ok()) return s;
  std::vector<uint64_t> segments;
  if (Status s = list_log_segments(*files_, options_.dir, &segments); !s.ok()) return s;
  const auto later = std::upper_bound(segments.begin(), segments.end(), end.segment);
  behind_ = static_cast<uint64_t>(std::lower_bound(segments.begin(), later, end.segment) - segments.begin());
  for (auto it = later; it != segments.end(); ++it) {
    bool has_records = false;
    if (Status s = log_segment_starts_with_record(*files_, options_.dir, *it, &has_records); !s.ok()) return s;
    if (has_records) {
      return Status::invalid_argument("log position " + end.to_string() + " is not the end of the log in " +
                                      options_.dir.string() + ": segment " + std::to_string(*it) +
                                      " holds records (open at the end replay_log returned)");
    }
  }

  segment_ = end.segment;
  offset_ = end.offset;
  Status s = files_->open_existing(path_of(segment_), &file_);
  if (s.is_not_found() && end.offset == 0) s = files_->create_zeroed(path_of(segment_), options_.segment_bytes, &file_);
  if (s.is_not_found()) {
    return Status::invalid_argument("log position " + end.to_string() + ": segment file " +
                                    path_of(segment_).string() + " is missing");
  }
  if (!s.ok()) return s;
  size_ = file_->size();
  if (offset_ > size_) {
    return Status::invalid_argument("log position " + end.to_string() + " lies past the end of " +
                                    path_of(segment_).string() + " (" + std::to_string(size_) + " bytes)");
  }
  if (s = zero_torn_record(); !s.ok()) return s;
  const uint64_t page_start = offset_ - offset_ % kPageBytes;
  if (s = file_->read_at(page_start, offset_ - page_start, &page_head_); !s.ok()) return s;

  // The segments after the current one hold no records: keep those that continue it with the
  // right size as prepared ones, remove the others.
  for (auto it = later; it != segments.end(); ++it) {
    std::unique_ptr<LogFile> f;
    if (s = files_->open_existing(path_of(*it), &f); !s.ok()) return s;
    if (*it == segment_ + ahead_ + 1 && f->size() == options_.segment_bytes && ahead_ < kMaxAhead) {
      ++ahead_;
    } else if (s = files_->remove(path_of(*it)); !s.ok()) {
      return s;
    }
  }
  if (ahead_ == 0) {
    // Best effort: a full disk does not stop a node that can still append to its segment.
    if (s = prepare_next(); !s.ok() && !s.is_no_space()) return s;
  }
  return Status::OK();
}

// After a torn tail, the header at the end names this segment but fails its CRC. Zero the bytes
// it claims, so that nothing of it can pass for a record once shorter records are written over
// its start. A header of another segment (or zeros) needs nothing: what follows it cannot be a
// record of this segment, or replay would have reported corruption.
Status LogWriter::zero_torn_record() {
  if (size_ - offset_ < kLogHeaderBytes) return Status::OK();
  std::string bytes;
  if (Status s = file_->read_at(offset_, kLogHeaderBytes, &bytes); !s.ok()) return s;
  const LogHeader h = decode_log_header(bytes.data(), segment_);
  if (h.kind != LogHeaderKind::record) return Status::OK();
  const uint64_t room = size_ - offset_ - kLogHeaderBytes;
  const uint64_t n = kLogHeaderBytes + std::min<uint64_t>(h.length, room);
  if (Status s = file_->read_at(offset_, n, &bytes); !s.ok()) return s;
  if (log_record_valid(bytes, 0, segment_)) {
    return Status::invalid_argument("log position " + end().to_string() + " is not the end of the log in " +
                                    options_.dir.string() + ": a valid record lies there (open at the end replay_log returned)");
  }
  if (Status s = file_->write_at(offset_, std::string(n, '\0')); !s.ok()) return s;
  return file_->sync();
}

// Writes record_ at offset_ as whole pages: the head of the current page (bytes already written,
// kept in page_head_), the record, and zeros to the end of its last page. A write that covers
// whole pages never makes the kernel read a page first, and it never dirties a large page-cache
// folio made by the zero fill (those are dropped at creation, storage/log_file.cc): on ext4 with
// large folios, one small write into a 1 MiB folio made the next fdatasync write all of it
// (measured: 1 MiB per 100-byte append, docs/benchmarks.md). The head's bytes are rewritten as
// they are, so a torn rewrite cannot change them; the zeros lie past the end of the log.
// Does not move offset_; sets page_head_ for the position after the record.
Status LogWriter::write_pages() {
  const uint64_t start = offset_ - page_head_.size();
  const uint64_t end = offset_ + record_.size();
  const uint64_t padded = std::min(size_, (end + kPageBytes - 1) / kPageBytes * kPageBytes);
  write_buf_.assign(page_head_);
  write_buf_.append(record_);
  write_buf_.resize(padded - start, '\0');
  if (Status s = file_->write_at(start, write_buf_); !s.ok()) return s;
  const uint64_t new_page = end - end % kPageBytes;
  page_head_.assign(write_buf_, new_page - start, end - new_page);
  return Status::OK();
}

Status LogWriter::prepare_next() {
  std::unique_ptr<LogFile> f;
  if (Status s = files_->create_zeroed(path_of(segment_ + ahead_ + 1), options_.segment_bytes, &f); !s.ok()) return s;
  ++ahead_;
  return Status::OK();
}

Status LogWriter::fail(const Status& s) {
  failed_ = s.is_io_error() ? s : Status::io_error(s.to_string(), s.err());
  return failed_;
}

// Ends the current segment (a segment-end record when 17 bytes are left for it, synced) and makes
// the next one current. Nothing is written when no next segment can be had.
Status LogWriter::move_to_next_segment() {
  if (ahead_ == 0) {
    if (Status s = prepare_next(); !s.ok()) return s.is_no_space() ? s : fail(s);
  }
  std::unique_ptr<LogFile> next;
  if (Status s = files_->open_existing(path_of(segment_ + 1), &next); !s.ok()) return fail(s);
  if (size_ - offset_ >= kLogHeaderBytes) {
    encode_log_record(segment_, LogRecordType::segment_end, {}, &record_);
    if (Status s = write_pages(); !s.ok()) return fail(s);
    if (options_.sync) {
      if (Status s = file_->sync(); !s.ok()) return fail(s);
    }
  }
  file_ = std::move(next);
  ++segment_;
  ++behind_;  // the segment just ended stays until release_before()
  offset_ = 0;
  page_head_.clear();
  size_ = file_->size();
  --ahead_;
  return Status::OK();
}

Status LogWriter::append(std::string_view payload) {
  if (!failed_.ok()) {
    return Status::io_error("the log refuses appends after an earlier failure (" + failed_.message() + ")",
                            failed_.err());
  }
  if (payload.size() > max_payload()) {
    return Status::invalid_argument("log record of " + std::to_string(payload.size()) + " bytes is over the maximum of " +
                                    std::to_string(max_payload()));
  }
  const uint64_t need = kLogHeaderBytes + payload.size();
  const bool move = need > size_ - offset_;
  if (move) {
    if (Status s = move_to_next_segment(); !s.ok()) return s;
    if (need > size_) return fail(Status::io_error("segment " + path_of(segment_).string() + " is too short"));
  }
  encode_log_record(segment_, LogRecordType::full, payload, &record_);
  if (Status s = write_pages(); !s.ok()) return fail(s);
  if (options_.sync) {
    if (Status s = file_->sync(); !s.ok()) return fail(s);
  }
  offset_ += need;
  if (move && ahead_ == 0) (void)prepare_next();  // best effort: the next move tries again
  return Status::OK();
}

Status LogWriter::release_before(LogPosition checkpoint) {
  std::vector<uint64_t> segments;
  if (Status s = list_log_segments(*files_, options_.dir, &segments); !s.ok()) return s;
  for (uint64_t n : segments) {
    if (n >= checkpoint.segment || n >= segment_) break;
    std::unique_ptr<LogFile> f;
    if (Status s = files_->open_existing(path_of(n), &f); !s.ok()) return s;
    const bool reusable = f->size() == options_.segment_bytes;
    f.reset();
    if (reusable && ahead_ < kMaxAhead) {
      if (Status s = files_->rename(path_of(n), path_of(segment_ + ahead_ + 1)); !s.ok()) return s;
      ++ahead_;
    } else if (Status s = files_->remove(path_of(n)); !s.ok()) {
      return s;
    }
    --behind_;
  }
  return Status::OK();
}

uint64_t LogWriter::bytes_between(LogPosition from, LogPosition to) const {
  if (to <= from) return 0;
  const uint64_t upto = (to.segment - from.segment) * options_.segment_bytes + to.offset;
  return upto > from.offset ? upto - from.offset : 0;
}

}  // namespace bidmesh
