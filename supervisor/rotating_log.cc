#include "supervisor/rotating_log.h"

#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

namespace bidmesh {

namespace fs = std::filesystem;

RotatingLog::RotatingLog(fs::path file, uint64_t max_bytes, uint32_t keep)
    : file_(std::move(file)), max_bytes_(max_bytes), keep_(keep) {}

RotatingLog::~RotatingLog() {
  if (fd_ >= 0) ::close(fd_);
}

void RotatingLog::set_limits(uint64_t max_bytes, uint32_t keep) {
  max_bytes_ = max_bytes;
  keep_ = keep;
}

bool RotatingLog::open_file() {
  std::error_code ec;
  fs::create_directories(file_.parent_path(), ec);
  fd_ = ::open(file_.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0640);
  if (fd_ < 0) {
    error_ = file_.string() + ": " + std::strerror(errno);
    return false;
  }
  struct stat st {};
  size_ = ::fstat(fd_, &st) == 0 ? static_cast<uint64_t>(st.st_size) : 0;
  return true;
}

void RotatingLog::rotate() {
  if (fd_ >= 0) {
    ::close(fd_);
    fd_ = -1;
  }
  std::error_code ec;
  if (keep_ == 0) {
    fs::remove(file_, ec);
  } else {
    auto numbered = [&](uint32_t i) { return fs::path(file_.string() + "." + std::to_string(i)); };
    fs::remove(numbered(keep_), ec);
    for (uint32_t i = keep_; i > 1; --i) fs::rename(numbered(i - 1), numbered(i), ec);
    fs::rename(file_, numbered(1), ec);
  }
  size_ = 0;
}

bool RotatingLog::append(std::string_view bytes) {
  if (bytes.empty()) return true;
  if (fd_ < 0 && !open_file()) return false;
  if (size_ > 0 && size_ + bytes.size() > max_bytes_) {
    rotate();
    if (!open_file()) return false;
  }
  while (!bytes.empty()) {
    const ssize_t n = ::write(fd_, bytes.data(), bytes.size());
    if (n < 0) {
      if (errno == EINTR) continue;
      error_ = file_.string() + ": " + std::strerror(errno);
      return false;
    }
    size_ += static_cast<uint64_t>(n);
    bytes.remove_prefix(static_cast<std::size_t>(n));
  }
  return true;
}

std::vector<std::string> tail_lines(const fs::path& file, std::size_t n, std::size_t max_bytes) {
  std::vector<std::string> lines;
  if (n == 0) return lines;
  const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return lines;
  struct stat st {};
  if (::fstat(fd, &st) != 0) {
    ::close(fd);
    return lines;
  }
  const auto size = static_cast<std::size_t>(st.st_size);
  const std::size_t from = size > max_bytes ? size - max_bytes : 0;
  std::string text(size - from, '\0');
  std::size_t got = 0;
  while (got < text.size()) {
    const ssize_t r = ::pread(fd, text.data() + got, text.size() - got, static_cast<off_t>(from + got));
    if (r < 0 && errno == EINTR) continue;
    if (r <= 0) break;
    got += static_cast<std::size_t>(r);
  }
  ::close(fd);
  text.resize(got);
  if (!text.empty() && text.back() == '\n') text.pop_back();
  if (text.empty()) return lines;
  std::size_t end = text.size();
  while (lines.size() < n) {
    const std::size_t nl = text.rfind('\n', end == 0 ? 0 : end - 1);
    if (nl == std::string::npos || end == 0) {
      // The first line kept is whole only if the read began at the start of the file.
      if (from == 0 || lines.empty()) lines.push_back(text.substr(0, end));
      break;
    }
    lines.push_back(text.substr(nl + 1, end - nl - 1));
    end = nl;
  }
  return {lines.rbegin(), lines.rend()};
}

}  // namespace bidmesh
