// The LMDB environment of the item store: see lmdb_env.h.
#include "nodes/lmdb_env.h"

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

namespace bidmesh {

namespace {
constexpr unsigned kMaxTrees = 8;  // LMDB's slots for named trees: the store uses five
}  // namespace

LmdbEnv::~LmdbEnv() {
  if (env != nullptr) mdb_env_close(env);
  if (lock_fd >= 0) ::close(lock_fd);  // releases the flock
}

Status open_lmdb_env(const std::filesystem::path& dir, uint64_t map_size_bytes, bool read_ahead, LmdbEnv* env) {
  const std::string where = dir.string();
  const std::string lock_path = (dir / "bidmesh.lock").string();
  env->lock_fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (env->lock_fd < 0) {
    const int err = errno;
    return Status::io_error("cannot open " + lock_path + ": " + std::strerror(err), err);
  }
  if (::flock(env->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    if (err == EWOULDBLOCK) return Status::io_error("the store " + where + " is in use by another process");
    return Status::io_error("cannot lock " + lock_path + ": " + std::strerror(err), err);
  }

  auto fail = [&](const char* call, int rc) { return Status::io_error(lmdb_open_failure(dir, call, rc)); };
  int rc = mdb_env_create(&env->env);
  if (rc != 0) {
    env->env = nullptr;
    return fail("mdb_env_create", rc);
  }
  if ((rc = mdb_env_set_maxdbs(env->env, kMaxTrees)) != 0) return fail("mdb_env_set_maxdbs", rc);
  if (map_size_bytes > 0 && (rc = mdb_env_set_mapsize(env->env, map_size_bytes)) != 0)
    return fail("mdb_env_set_mapsize", rc);
  // Every commit is synced (no MDB_NOSYNC, even in the unsafe mode, which only skips the log's
  // fdatasync): lmdb.h says an unsynced commit can be corrupted by a system crash, and the log
  // cannot repair that. Commits are checkpoints, a few per second at most.
  // No MDB_WRITEMAP: it did not pay here (docs/durability.md), and a full disk under a written
  // map is a SIGBUS rather than an error code. Disk blocks are still reserved ahead
  // (reserve_disk_ahead), so a full disk fails a checkpoint early and cleanly.
  // MDB_NORDAHEAD (madvise MADV_RANDOM on the map): bids touch pages at random, and with
  // readahead a kernel with large page-cache folios (ext4, Linux 6.x) reads the map in folios of
  // many pages; a commit that dirties one 4 KiB page of such a folio then writes the whole folio
  // (docs/benchmarks.md).
  unsigned flags = 0;
  if (!read_ahead) flags |= MDB_NORDAHEAD;
  if ((rc = mdb_env_open(env->env, where.c_str(), flags, 0600)) != 0) return fail("mdb_env_open", rc);
  int dead = 0;
  if ((rc = mdb_reader_check(env->env, &dead)) != 0) return fail("mdb_reader_check", rc);
  return Status::OK();
}

std::string lmdb_open_failure(const std::filesystem::path& dir, const char* call, int rc) {
  return "cannot open LMDB in " + dir.string() + ": " + call + ": " + mdb_strerror(rc);
}

int open_lmdb_env_read_only(const std::filesystem::path& dir, LmdbEnv* env, const char** failed_at) {
  *failed_at = "mdb_env_create";
  int rc = mdb_env_create(&env->env);
  if (rc != 0) {
    env->env = nullptr;
    return rc;
  }
  if ((rc = mdb_env_set_maxdbs(env->env, kMaxTrees)) != 0) {
    *failed_at = "mdb_env_set_maxdbs";
    return rc;
  }
  if ((rc = mdb_env_open(env->env, dir.c_str(), MDB_RDONLY, 0600)) != 0) *failed_at = "mdb_env_open";
  return rc;
}

int reserve_disk_ahead(MDB_env* env, uint64_t ahead, uint64_t* reserved_bytes) {
  MDB_envinfo info{};
  MDB_stat st{};
  if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0) return EIO;
  const uint64_t used = (static_cast<uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
  if (used + ahead / 2 <= *reserved_bytes) return 0;
  const uint64_t want = std::min<uint64_t>(used + ahead, info.me_mapsize);
  if (want <= *reserved_bytes) return 0;
  int fd = -1;
  if (mdb_env_get_fd(env, &fd) != 0) return EIO;
  const int rc = ::posix_fallocate(fd, static_cast<off_t>(*reserved_bytes), static_cast<off_t>(want - *reserved_bytes));
  // Filesystems without fallocate (EOPNOTSUPP): nothing to reserve with.
  if (rc != 0 && rc != EOPNOTSUPP && rc != EINVAL) return rc;
  *reserved_bytes = want;
  return 0;
}

uint64_t lmdb_map_size(MDB_env* env) {
  MDB_envinfo info{};
  if (mdb_env_info(env, &info) != 0) return 0;
  return info.me_mapsize;
}

uint64_t lmdb_used_bytes(MDB_env* env) {
  MDB_envinfo info{};
  MDB_stat st{};
  if (mdb_env_info(env, &info) != 0 || mdb_env_stat(env, &st) != 0) return 0;
  return (static_cast<uint64_t>(info.me_last_pgno) + 1) * st.ms_psize;
}

}  // namespace bidmesh
