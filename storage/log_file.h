// The file layer under the write-ahead log, in the manner of leveldb's Env: every system call the
// log makes goes through a FileLayer, so tests can put a fault-injecting one underneath
// (UnsyncedDropFileLayer below) and the log's code stays the same.
//
// Guarantees of the POSIX layer (posix_file_layer()):
// - write_at() is pwrite(2) (no O_APPEND, no O_DIRECT): durable only after sync(), which is
//   fdatasync(2) (it also syncs the file size when a write grew it).
// - create_zeroed() writes real zeros rather than fallocate(2): overwriting blocks that were
//   written syncs faster than writing into unwritten extents, whose conversion is a journalled
//   metadata change. Then fdatasync, then fsync of the directory: the file and its name survive a
//   crash once it returns.
// - rename(), remove() and create_dir() fsync the directories they change.
// Errors: ENOSPC and EDQUOT are Status::no_space; a missing file or directory is not_found; every
// other failure is io_error with its errno.
//
// Thread-safety: a FileLayer may be shared by threads that use different files; a LogFile is
// thread-compatible (one user at a time). A LogFile is owned by whoever opened it.
#pragma once

#include <cerrno>
#include <cstdint>
#include <filesystem>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "storage/status.h"

namespace bidmesh {

class LogFile {
 public:
  virtual ~LogFile();
  // Writes all of `data` at `offset` (the file grows when it ends past the end).
  virtual Status write_at(uint64_t offset, std::string_view data) = 0;
  // fdatasync: everything written before is durable when it returns ok. When it fails, what is on
  // disk is unknown (Linux may drop the dirty pages of a failed fsync).
  virtual Status sync() = 0;
  // Replaces *out with the n bytes at `offset`, or fewer when the file ends first.
  virtual Status read_at(uint64_t offset, size_t n, std::string* out) = 0;
  virtual uint64_t size() const = 0;
};

class FileLayer {
 public:
  virtual ~FileLayer();
  // Opens a file for reading and writing. not_found when it does not exist.
  virtual Status open_existing(const std::filesystem::path& path, std::unique_ptr<LogFile>* out) = 0;
  // Creates `path` (which must not exist) holding `bytes` zero bytes, durably (see above). On
  // failure nothing is left behind.
  virtual Status create_zeroed(const std::filesystem::path& path, uint64_t bytes, std::unique_ptr<LogFile>* out) = 0;
  // Renames (replacing `to` if it exists), then fsyncs the directory.
  virtual Status rename(const std::filesystem::path& from, const std::filesystem::path& to) = 0;
  virtual Status remove(const std::filesystem::path& path) = 0;
  // The names in `dir` (no "." or ".."), in no particular order. not_found when dir is missing.
  virtual Status list(const std::filesystem::path& dir, std::vector<std::string>* names) = 0;
  // Creates `dir` and its missing parents; ok when it exists.
  virtual Status create_dir(const std::filesystem::path& dir) = 0;
};

// The process-wide POSIX layer. Never destroyed.
FileLayer& posix_file_layer();

// A FileLayer for power-loss tests, over another one (the POSIX layer by default) that holds the
// real files. It models the page cache: bytes given to write_at() are kept apart, in memory, per
// file (reads see them), and reach the real file only at that file's sync(). crash() is the power
// loss: the bytes no sync covered are dropped, or, with torn_bytes > 0, the first torn_bytes of
// them (in write order, across files) reach the disk and the rest is dropped (a torn write).
// Files opened before a crash() then fail every call with io_error; open them again.
// create_zeroed(), rename() and remove() are durable when they return, as in the POSIX layer.
//
// Faults on demand:
// - fail_writes(ENOSPC): a full disk as ext4 has it: create_zeroed() and writes that would grow a
//   file fail with no_space; overwriting bytes a file already has still works.
//   fail_writes(EIO) (or any other errno): every write_at() and create_zeroed() fails with
//   io_error. fail_writes(0) ends the fault.
// - fail_next_sync(err): the next sync() fails with io_error and drops the file's unsynced bytes,
//   as Linux may after a failed fsync.
// - crash_on_next_sync(torn_bytes): the next sync() is where the power goes: crash(torn_bytes),
//   then that sync() fails with io_error.
//
// Thread-compatible.
class UnsyncedDropFileLayer : public FileLayer {
 public:
  explicit UnsyncedDropFileLayer(FileLayer* base = nullptr);
  ~UnsyncedDropFileLayer() override;
  UnsyncedDropFileLayer(const UnsyncedDropFileLayer&) = delete;
  UnsyncedDropFileLayer& operator=(const UnsyncedDropFileLayer&) = delete;

  Status open_existing(const std::filesystem::path& path, std::unique_ptr<LogFile>* out) override;
  Status create_zeroed(const std::filesystem::path& path, uint64_t bytes, std::unique_ptr<LogFile>* out) override;
  Status rename(const std::filesystem::path& from, const std::filesystem::path& to) override;
  Status remove(const std::filesystem::path& path) override;
  Status list(const std::filesystem::path& dir, std::vector<std::string>* names) override;
  Status create_dir(const std::filesystem::path& dir) override;

  void crash(uint64_t torn_bytes = 0);
  void crash_on_next_sync(uint64_t torn_bytes = 0);
  void fail_writes(int err);
  void fail_next_sync(int err = EIO);

  uint64_t writes() const;          // write_at() calls so far
  uint64_t syncs() const;           // sync() calls so far
  uint64_t unsynced_bytes() const;  // bytes written and not yet covered by a sync

  struct State;  // shared with the files it opened

 private:
  std::shared_ptr<State> state_;
};

}  // namespace bidmesh
