// The on-disk format of a bid node's write-ahead log, and the small pure helpers that encode and
// check it. docs/log-format.md says the same for operators.
//
// Segments
//   The log is a sequence of segment files <dir>/<n>.wal, n the segment number written with 20
//   zero-padded decimal digits (00000000000000000001.wal). Numbers start at 1 and strictly
//   increase; every segment is `segment_bytes` long (LogOptions), allocated before use: a new
//   one is filled with zeros, a recycled one (an old segment no longer needed) is renamed to its
//   new number and still holds its old bytes. Records start at offset 0 and follow each other
//   with no gap; a record never spans two segments.
//
// Record (all integers little-endian):
//   offset 0   u32  masked CRC-32C (storage/crc32c.h) of bytes 4..16 of the header, then the payload
//   offset 4   u32  payload length
//   offset 8   u8   type: 1 full (one whole payload), 2 segment end (payload length 0); 0 never
//                   appears (a zero header is unwritten space); 3..255 are reserved
//   offset 9   u64  segment number of the file the record was written into
//   offset 17  the payload
//   The CRC covers the length, type and segment number as well as the payload.
//
// Reading a segment n from a record boundary, a header is:
//   - 17 zero bytes: the end of the records of n (unwritten space);
//   - one whose segment number is not n: the end as well (stale bytes of a recycled segment, or a
//     header whose last bytes never reached the disk);
//   - a record of n whose length fits in the file and whose CRC matches: valid;
//   - otherwise a damaged record of n.
//   Fewer than 17 bytes left in the file also ends the segment.
// When the next record does not fit in what is left of segment n, the writer ends n with a
// segment-end record (when 17 bytes are left for it), makes it durable, and writes the record at
// offset 0 of segment n+1. So the log goes on into n+1 only after a segment-end record or a full
// segment; records of n that end any other way end the log.
//
// Torn tail or corruption (storage/log_reader.h): where the records of a segment n stop before
// its end (a zero, stale or damaged header), the log really ends there only if nothing written
// later survives: no valid record of n anywhere after that point in the file (searched byte by
// byte: the 8-byte segment number must match before a CRC is computed), and no later segment
// starting with a valid record. Then a damaged record there is a torn tail (a crash cut its
// write; it was never acknowledged) and is cut off. Otherwise the log is damaged: replay stops
// with Status::corruption naming the file and the offset.
//
// Limit of the check: a later segment counts as holding records when its first record is valid.
// Two independent damages, the end of segment n and the first record of n+1, read as a torn tail
// at the end of n.
//
// Thread-safe: pure functions and constants.
#pragma once

#include <compare>
#include <cstdint>
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "storage/crc32c.h"

namespace bidmesh {

inline constexpr uint64_t kLogHeaderBytes = 17;
// The largest payload of a record. It bounds how far replay must look past the point where the
// records stop to know whether anything valid follows (the next record would start within one
// record's length), so a replay reads at most this much of the unwritten rest of a segment.
inline constexpr uint64_t kMaxLogPayloadBytes = 1ull << 20;
inline constexpr uint64_t kLogLengthOffset = 4;
inline constexpr uint64_t kLogTypeOffset = 8;
inline constexpr uint64_t kLogSegmentOffset = 9;

enum class LogRecordType : uint8_t { full = 1, segment_end = 2 };

// A place in the log: the byte offset of a record (or of the next record to be written) in
// segment `segment`. Positions order as the log does.
struct LogPosition {
  uint64_t segment = 1;
  uint64_t offset = 0;  // byte offset of the next record in that segment

  auto operator<=>(const LogPosition&) const = default;
  // "<segment>:<offset>", e.g. "3:4096".
  std::string to_string() const { return std::to_string(segment) + ":" + std::to_string(offset); }
};

// "00000000000000000003.wal" for segment 3.
inline std::string log_segment_name(uint64_t segment) {
  std::string digits = std::to_string(segment);
  return std::string(20 - digits.size(), '0') + digits + ".wal";
}

// The segment number of a file name written by log_segment_name; nullopt for any other name.
inline std::optional<uint64_t> parse_log_segment_name(std::string_view name) {
  if (name.size() != 24 || name.substr(20) != ".wal") return std::nullopt;
  uint64_t n = 0;
  for (char c : name.substr(0, 20)) {
    if (c < '0' || c > '9') return std::nullopt;
    const auto digit = static_cast<uint64_t>(c - '0');
    if (n > (UINT64_MAX - digit) / 10) return std::nullopt;
    n = n * 10 + digit;
  }
  if (n == 0) return std::nullopt;
  return n;
}

namespace log_format {

inline void put_le(char* p, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) p[i] = static_cast<char>((v >> (8 * i)) & 0xFF);
}

inline uint64_t get_le(const char* p, int bytes) {
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | static_cast<unsigned char>(p[i]);
  return v;
}

}  // namespace log_format

// Replaces *out with one whole record (header and payload).
// REQUIRES: payload.size() < 2^32.
inline void encode_log_record(uint64_t segment, LogRecordType type, std::string_view payload, std::string* out) {
  out->resize(kLogHeaderBytes + payload.size());
  char* p = out->data();
  log_format::put_le(p + kLogLengthOffset, payload.size(), 4);
  p[kLogTypeOffset] = static_cast<char>(type);
  log_format::put_le(p + kLogSegmentOffset, segment, 8);
  if (!payload.empty()) std::memcpy(p + kLogHeaderBytes, payload.data(), payload.size());
  const uint32_t crc = crc32c(std::string_view(p + kLogHeaderBytes, payload.size()),
                              crc32c(std::string_view(p + kLogLengthOffset, kLogHeaderBytes - kLogLengthOffset)));
  log_format::put_le(p, crc32c_mask(crc), 4);
}

// What a header at a record boundary says (see the format above).
enum class LogHeaderKind { zero, other_segment, record };

struct LogHeader {
  LogHeaderKind kind = LogHeaderKind::zero;
  uint32_t masked_crc = 0;
  uint32_t length = 0;
  uint8_t type = 0;
  uint64_t segment = 0;
};

// REQUIRES: p points at kLogHeaderBytes readable bytes.
inline LogHeader decode_log_header(const char* p, uint64_t expected_segment) {
  LogHeader h;
  h.masked_crc = static_cast<uint32_t>(log_format::get_le(p, 4));
  h.length = static_cast<uint32_t>(log_format::get_le(p + kLogLengthOffset, 4));
  h.type = static_cast<uint8_t>(p[kLogTypeOffset]);
  h.segment = log_format::get_le(p + kLogSegmentOffset, 8);
  bool all_zero = true;
  for (uint64_t i = 0; i < kLogHeaderBytes && all_zero; ++i) all_zero = p[i] == 0;
  h.kind = all_zero ? LogHeaderKind::zero
                    : (h.segment == expected_segment ? LogHeaderKind::record : LogHeaderKind::other_segment);
  return h;
}

// Whether bytes[pos..] holds a valid record of `segment`: its header names `segment`, its payload
// fits in `bytes` and its CRC matches. Any type counts (an unknown one is judged by the reader).
inline bool log_record_valid(std::string_view bytes, uint64_t pos, uint64_t segment) {
  if (pos > bytes.size() || bytes.size() - pos < kLogHeaderBytes) return false;
  const char* p = bytes.data() + pos;
  const LogHeader h = decode_log_header(p, segment);
  if (h.kind != LogHeaderKind::record) return false;
  if (h.length > bytes.size() - pos - kLogHeaderBytes) return false;
  const uint32_t crc = crc32c(std::string_view(p + kLogHeaderBytes, h.length),
                              crc32c(std::string_view(p + kLogLengthOffset, kLogHeaderBytes - kLogLengthOffset)));
  return crc32c_unmask(h.masked_crc) == crc;
}

}  // namespace bidmesh
