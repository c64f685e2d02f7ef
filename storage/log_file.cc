// The POSIX file layer and the fault-injecting UnsyncedDropFileLayer (storage/log_file.h).
#include "storage/log_file.h"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <optional>

namespace bidmesh {

LogFile::~LogFile() = default;
FileLayer::~FileLayer() = default;

namespace {

namespace fs = std::filesystem;

Status errno_status(const std::string& what, const fs::path& path, int err) {
  const std::string msg = what + " " + path.string();
  if (err == ENOSPC || err == EDQUOT) return Status::no_space(msg + ": " + std::strerror(err));
  if (err == ENOENT) return Status::not_found(msg + ": " + std::strerror(err));
  return Status::io_error(msg, err);
}

fs::path dir_of(const fs::path& path) {
  fs::path dir = path.parent_path();
  return dir.empty() ? fs::path(".") : dir;
}

Status sync_dir(const fs::path& dir) {
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0) return errno_status("open directory", dir, errno);
  const int rc = ::fsync(fd);
  const int err = errno;
  ::close(fd);
  if (rc != 0) return Status::io_error("fsync directory " + dir.string(), err);
  return Status::OK();
}

class PosixLogFile : public LogFile {
 public:
  PosixLogFile(int fd, fs::path path, uint64_t size) : fd_(fd), path_(std::move(path)), size_(size) {}
  ~PosixLogFile() override { ::close(fd_); }
  PosixLogFile(const PosixLogFile&) = delete;
  PosixLogFile& operator=(const PosixLogFile&) = delete;

  Status write_at(uint64_t offset, std::string_view data) override {
    size_t done = 0;
    while (done < data.size()) {
      const ssize_t n = ::pwrite(fd_, data.data() + done, data.size() - done, static_cast<off_t>(offset + done));
      if (n < 0) {
        if (errno == EINTR) continue;
        return errno_status("write", path_, errno);
      }
      done += static_cast<size_t>(n);
    }
    size_ = std::max(size_, offset + data.size());
    return Status::OK();
  }

  Status sync() override {
    while (::fdatasync(fd_) != 0) {
      if (errno == EINTR) continue;
      return Status::io_error("fdatasync " + path_.string(), errno);
    }
    return Status::OK();
  }

  Status read_at(uint64_t offset, size_t n, std::string* out) override {
    out->resize(n);
    size_t done = 0;
    while (done < n) {
      const ssize_t r = ::pread(fd_, out->data() + done, n - done, static_cast<off_t>(offset + done));
      if (r < 0) {
        if (errno == EINTR) continue;
        return Status::io_error("read " + path_.string(), errno);
      }
      if (r == 0) break;
      done += static_cast<size_t>(r);
    }
    out->resize(done);
    return Status::OK();
  }

  uint64_t size() const override { return size_; }

 private:
  const int fd_;
  const fs::path path_;
  uint64_t size_;
};

class PosixFileLayer : public FileLayer {
 public:
  Status open_existing(const fs::path& path, std::unique_ptr<LogFile>* out) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) return errno_status("open", path, errno);
    struct stat st {};
    if (::fstat(fd, &st) != 0) {
      const int err = errno;
      ::close(fd);
      return Status::io_error("stat " + path.string(), err);
    }
    // Appends touch pages one after another and never read ahead: no readahead means no large
    // page-cache folios made by reads (see create_zeroed).
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    *out = std::make_unique<PosixLogFile>(fd, path, static_cast<uint64_t>(st.st_size));
    return Status::OK();
  }

  Status create_zeroed(const fs::path& path, uint64_t bytes, std::unique_ptr<LogFile>* out) override {
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) return errno_status("create", path, errno);
    auto file = std::make_unique<PosixLogFile>(fd, path, 0);
    // Zeros in 4 KiB writes, not larger ones: on a kernel with large page-cache folios (ext4,
    // Linux 6.x) a buffered write makes folios as large as itself, and a 100-byte append into a
    // 1 MiB folio made the next fdatasync write the whole MiB (docs/benchmarks.md). Page-sized
    // writes leave page-sized folios, so an append dirties and syncs only its own pages.
    const std::string zeros(4096, '\0');
    Status s;
    for (uint64_t done = 0; done < bytes && s.ok(); done += zeros.size()) {
      s = file->write_at(done, std::string_view(zeros).substr(0, std::min<uint64_t>(zeros.size(), bytes - done)));
    }
    if (s.ok()) s = file->sync();
    if (s.ok()) s = sync_dir(dir_of(path));
    if (!s.ok()) {
      file.reset();
      ::unlink(path.c_str());
      return s;
    }
    (void)::posix_fadvise(fd, 0, 0, POSIX_FADV_RANDOM);
    *out = std::move(file);
    return Status::OK();
  }

  Status rename(const fs::path& from, const fs::path& to) override {
    if (::rename(from.c_str(), to.c_str()) != 0) return errno_status("rename " + from.string() + " to", to, errno);
    Status s = sync_dir(dir_of(to));
    if (s.ok() && dir_of(from) != dir_of(to)) s = sync_dir(dir_of(from));
    return s;
  }

  Status remove(const fs::path& path) override {
    if (::unlink(path.c_str()) != 0) return errno_status("remove", path, errno);
    return sync_dir(dir_of(path));
  }

  Status list(const fs::path& dir, std::vector<std::string>* names) override {
    names->clear();
    DIR* d = ::opendir(dir.c_str());
    if (d == nullptr) return errno_status("list", dir, errno);
    errno = 0;
    while (const dirent* e = ::readdir(d)) {
      const std::string_view name(e->d_name);
      if (name != "." && name != "..") names->emplace_back(name);
    }
    const int err = errno;
    ::closedir(d);
    if (err != 0) return Status::io_error("list " + dir.string(), err);
    return Status::OK();
  }

  Status create_dir(const fs::path& dir) override {
    std::error_code ec;
    fs::path target = fs::absolute(dir, ec).lexically_normal();
    if (ec) return errno_status("create directory", dir, ec.value());
    if (!target.has_filename()) target = target.parent_path();  // "a/b/" names "a/b"
    if (fs::is_directory(target, ec)) return Status::OK();
    // The directories to create, deepest first; each new entry is made durable in its parent.
    std::vector<fs::path> missing;
    for (fs::path p = target; !p.empty() && !fs::exists(p, ec); p = p.parent_path()) {
      missing.push_back(p);
      if (p == p.root_path()) break;
    }
    fs::create_directories(target, ec);
    if (ec) return errno_status("create directory", dir, ec.value());
    for (auto it = missing.rbegin(); it != missing.rend(); ++it) {
      if (Status s = sync_dir(it->parent_path()); !s.ok()) return s;
    }
    return Status::OK();
  }
};

}  // namespace

FileLayer& posix_file_layer() {
  static PosixFileLayer* layer = new PosixFileLayer();
  return *layer;
}

// ---- UnsyncedDropFileLayer ----

namespace {

struct PendingWrite {
  uint64_t seq;
  uint64_t offset;
  std::string data;
};

// One real file and the bytes written to it that no sync covered yet: the model of a file's
// dirty pages. Shared by every DropFile opened on it.
struct Inode {
  std::unique_ptr<LogFile> base;
  std::vector<PendingWrite> pending;

  uint64_t size() const {
    uint64_t s = base->size();
    for (const PendingWrite& w : pending) s = std::max(s, w.offset + w.data.size());
    return s;
  }
};

}  // namespace

struct UnsyncedDropFileLayer::State {
  FileLayer* base = nullptr;
  std::map<std::string, std::shared_ptr<Inode>> inodes;  // by path, while the path names them
  uint64_t generation = 0;                               // +1 at every crash
  uint64_t next_seq = 0;
  int fail_writes = 0;
  int fail_next_sync = 0;
  std::optional<uint64_t> crash_on_next_sync;
  uint64_t writes = 0;
  uint64_t syncs = 0;

  void crash(uint64_t torn_bytes) {
    std::vector<std::pair<const PendingWrite*, Inode*>> all;
    for (auto& [path, inode] : inodes) {
      for (const PendingWrite& w : inode->pending) all.emplace_back(&w, inode.get());
    }
    std::sort(all.begin(), all.end(), [](const auto& a, const auto& b) { return a.first->seq < b.first->seq; });
    for (const auto& [w, inode] : all) {
      if (torn_bytes == 0) break;
      const uint64_t n = std::min<uint64_t>(torn_bytes, w->data.size());
      (void)inode->base->write_at(w->offset, std::string_view(w->data).substr(0, n));
      torn_bytes -= n;
    }
    inodes.clear();
    ++generation;
  }
};

namespace {

using State = UnsyncedDropFileLayer::State;

class DropFile : public LogFile {
 public:
  DropFile(std::shared_ptr<State> state, std::shared_ptr<Inode> inode)
      : state_(std::move(state)), inode_(std::move(inode)), generation_(state_->generation) {}

  Status write_at(uint64_t offset, std::string_view data) override {
    if (Status s = alive(); !s.ok()) return s;
    ++state_->writes;
    if (state_->fail_writes == ENOSPC) {
      if (offset + data.size() > inode_->size()) return Status::no_space("write: no space left on device (injected)");
    } else if (state_->fail_writes != 0) {
      return Status::io_error("write (injected)", state_->fail_writes);
    }
    inode_->pending.push_back(PendingWrite{state_->next_seq++, offset, std::string(data)});
    return Status::OK();
  }

  Status sync() override {
    if (Status s = alive(); !s.ok()) return s;
    ++state_->syncs;
    if (state_->crash_on_next_sync) {
      const uint64_t torn = *state_->crash_on_next_sync;
      state_->crash_on_next_sync.reset();
      state_->crash(torn);
      return Status::io_error("fdatasync: power lost (injected)", EIO);
    }
    if (state_->fail_next_sync != 0) {
      const int err = state_->fail_next_sync;
      state_->fail_next_sync = 0;
      inode_->pending.clear();
      return Status::io_error("fdatasync (injected)", err);
    }
    for (const PendingWrite& w : inode_->pending) {
      if (Status s = inode_->base->write_at(w.offset, w.data); !s.ok()) return s;
    }
    inode_->pending.clear();
    return inode_->base->sync();
  }

  Status read_at(uint64_t offset, size_t n, std::string* out) override {
    if (Status s = alive(); !s.ok()) return s;
    if (Status s = inode_->base->read_at(offset, n, out); !s.ok()) return s;
    const uint64_t size = inode_->size();
    const uint64_t want = offset >= size ? 0 : std::min<uint64_t>(n, size - offset);
    out->resize(want, '\0');
    for (const PendingWrite& w : inode_->pending) {
      const uint64_t from = std::max(offset, w.offset);
      const uint64_t to = std::min(offset + want, w.offset + w.data.size());
      if (from < to) std::memcpy(out->data() + (from - offset), w.data.data() + (from - w.offset), to - from);
    }
    return Status::OK();
  }

  uint64_t size() const override { return inode_->size(); }

 private:
  Status alive() const {
    if (generation_ != state_->generation) return Status::io_error("file opened before a simulated power loss", EIO);
    return Status::OK();
  }

  const std::shared_ptr<State> state_;
  const std::shared_ptr<Inode> inode_;
  const uint64_t generation_;
};

}  // namespace

UnsyncedDropFileLayer::UnsyncedDropFileLayer(FileLayer* base) : state_(std::make_shared<State>()) {
  state_->base = base != nullptr ? base : &posix_file_layer();
}

UnsyncedDropFileLayer::~UnsyncedDropFileLayer() = default;

Status UnsyncedDropFileLayer::open_existing(const std::filesystem::path& path, std::unique_ptr<LogFile>* out) {
  auto& inode = state_->inodes[path.string()];
  if (!inode) {
    auto fresh = std::make_shared<Inode>();
    if (Status s = state_->base->open_existing(path, &fresh->base); !s.ok()) {
      state_->inodes.erase(path.string());
      return s;
    }
    inode = std::move(fresh);
  }
  *out = std::make_unique<DropFile>(state_, inode);
  return Status::OK();
}

Status UnsyncedDropFileLayer::create_zeroed(const std::filesystem::path& path, uint64_t bytes,
                                            std::unique_ptr<LogFile>* out) {
  if (state_->fail_writes == ENOSPC) return Status::no_space("create " + path.string() + ": no space left on device (injected)");
  if (state_->fail_writes != 0) return Status::io_error("create " + path.string() + " (injected)", state_->fail_writes);
  auto inode = std::make_shared<Inode>();
  if (Status s = state_->base->create_zeroed(path, bytes, &inode->base); !s.ok()) return s;
  state_->inodes[path.string()] = inode;
  *out = std::make_unique<DropFile>(state_, inode);
  return Status::OK();
}

Status UnsyncedDropFileLayer::rename(const std::filesystem::path& from, const std::filesystem::path& to) {
  if (Status s = state_->base->rename(from, to); !s.ok()) return s;
  auto node = state_->inodes.extract(from.string());
  state_->inodes.erase(to.string());
  if (!node.empty()) {
    node.key() = to.string();
    state_->inodes.insert(std::move(node));
  }
  return Status::OK();
}

Status UnsyncedDropFileLayer::remove(const std::filesystem::path& path) {
  if (Status s = state_->base->remove(path); !s.ok()) return s;
  state_->inodes.erase(path.string());
  return Status::OK();
}

Status UnsyncedDropFileLayer::list(const std::filesystem::path& dir, std::vector<std::string>* names) {
  return state_->base->list(dir, names);
}

Status UnsyncedDropFileLayer::create_dir(const std::filesystem::path& dir) { return state_->base->create_dir(dir); }

void UnsyncedDropFileLayer::crash(uint64_t torn_bytes) { state_->crash(torn_bytes); }
void UnsyncedDropFileLayer::crash_on_next_sync(uint64_t torn_bytes) { state_->crash_on_next_sync = torn_bytes; }
void UnsyncedDropFileLayer::fail_writes(int err) { state_->fail_writes = err; }
void UnsyncedDropFileLayer::fail_next_sync(int err) { state_->fail_next_sync = err; }
uint64_t UnsyncedDropFileLayer::writes() const { return state_->writes; }
uint64_t UnsyncedDropFileLayer::syncs() const { return state_->syncs; }

uint64_t UnsyncedDropFileLayer::unsynced_bytes() const {
  uint64_t n = 0;
  for (const auto& [path, inode] : state_->inodes) {
    for (const PendingWrite& w : inode->pending) n += w.data.size();
  }
  return n;
}

}  // namespace bidmesh
