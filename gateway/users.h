// UserFile: the gateway's sign-in tokens, stored as salted hashes (docs/web.md, "Tokens").
//
// File format, one user a line:  NAME:SALT:HASH
//   NAME  a mesh bidder identifier (1..64 bytes of [A-Za-z0-9_-]): the user bids under it;
//   SALT  32 random bytes, hex: the key of BLAKE2b for this line;
//   HASH  BLAKE2b-256 (libsodium crypto_generichash) of the token keyed with SALT, hex.
// Lines starting with '#' and blank lines are skipped. A token is 32 random bytes
// (randombytes_buf) written as base64url without padding (43 characters) and shown once.
// Why a fast keyed hash and not a password hash: the tokens carry 256 bits of entropy, so no
// guessing attack is helped by a slow hash; the salt keeps equal tokens from matching lines.
//
// Guarantees: verify() compares with sodium_memcmp (constant time) and does the same work for an
// unknown name as for a known one; add/remove rewrite the file through a temp file + rename with
// mode 0600. Failures are values (a one-line reason naming the file).
// Thread-safety: a UserFile is a value; reload() and verify() by one thread.
#pragma once

#include <sys/stat.h>

#include <cstdint>
#include <filesystem>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace bidmesh::gateway {

struct UserEntry {
  std::string salt_hex;
  std::string hash_hex;
};

class UserFile {
 public:
  // Reads `file`; a missing file is an empty list (the operator has not added anyone yet).
  static std::variant<UserFile, std::string> load(const std::filesystem::path& file);

  // True when `token` is `name`'s token.
  bool verify(std::string_view name, std::string_view token) const;
  const std::map<std::string, UserEntry>& users() const { return users_; }
  const std::filesystem::path& file() const { return file_; }

  // Re-reads the file when it changed since the last read: another file under its name (inode,
  // as bidmesh-gateway-users replaces it), or another modification time or size. A file that
  // does not load leaves the current list in force. Returns a reason when it failed.
  std::optional<std::string> reload_if_changed();

  // Adds `name` (refused when present or not an identifier) and returns its fresh token.
  std::variant<std::string, std::string> add(const std::string& name);  // index 0: token, 1: error
  // Removes `name`; a reason when it is absent.
  std::optional<std::string> remove(const std::string& name);

 private:
  std::optional<std::string> save() const;
  std::filesystem::path file_;
  std::map<std::string, UserEntry> users_;
  // What the last read saw of the file (stat): nullopt when it did not exist.
  struct Stamp {
    uint64_t device = 0, inode = 0, size = 0;
    int64_t mtime_sec = 0, mtime_nsec = 0;
    bool operator==(const Stamp&) const = default;
  };
  static Stamp stamp_from(const struct stat& st);
  static std::optional<Stamp> stamp_of(const std::filesystem::path& file);
  std::optional<Stamp> stamp_;
};

// Initialises libsodium once; false when it cannot (the caller exits 111).
bool init_sodium();
// `n` random bytes as base64url without padding.
std::string random_token(std::size_t n = 32);

}  // namespace bidmesh::gateway
