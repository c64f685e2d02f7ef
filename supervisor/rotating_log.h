// A node's log file, bounded in size: the supervisor writes what the node prints (read from
// the node's stdout/stderr pipe) with append(). When a write would take the file past
// `max_bytes`, the file is renamed <file>.1 (older ones shift to .2 ... .<keep>, the oldest is
// dropped; with keep = 0 the file is simply truncated) and a new file is begun. A single write
// is never split, so a file exceeds the bound by at most one write (the supervisor reads at
// most 64 KiB at a time).
// Thread-compatible. Owns its file descriptor.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

namespace bidmesh {

class RotatingLog {
 public:
  RotatingLog(std::filesystem::path file, uint64_t max_bytes, uint32_t keep);
  ~RotatingLog();
  RotatingLog(const RotatingLog&) = delete;
  RotatingLog& operator=(const RotatingLog&) = delete;

  // Appends `bytes`, opening the file (and creating its folder) first if needed. Returns false
  // with last_error() set when the file cannot be written; the bytes are then lost.
  bool append(std::string_view bytes);
  void set_limits(uint64_t max_bytes, uint32_t keep);
  const std::filesystem::path& path() const { return file_; }
  const std::string& last_error() const { return error_; }

 private:
  bool open_file();
  void rotate();

  const std::filesystem::path file_;
  uint64_t max_bytes_;
  uint32_t keep_;
  int fd_ = -1;
  uint64_t size_ = 0;
  std::string error_;
};

// The last `n` lines of `file` (without their newlines), read from at most the last
// `max_bytes` of it. Empty if the file cannot be read.
std::vector<std::string> tail_lines(const std::filesystem::path& file, std::size_t n,
                                    std::size_t max_bytes = 1 << 20);

}  // namespace bidmesh
