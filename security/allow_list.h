// The allowed clients of a mesh with security = "curve" (docs/security.md; the wire contract's
// Security section): the public certificates in `clients_dir`, by public key.
//
// The folder
// - Every `*.key` file is one client. Its name is the metadata field `name` if present, else
//   the file name without ".key"; either must be an identifier ([A-Za-z0-9_-], 1 to 64 bytes).
//   Its roles are the metadata field `roles` (protocol/access.h parse_roles); without it, reader.
// - Other files (README, editor backups "alice.key~", dot files) and subfolders are ignored; a
//   `*.key` that is not a regular file (a folder, a FIFO) is refused like an unreadable one.
// - Refused, each with a reason naming the file, and then the whole list is refused (a half
//   loaded list would silently lock out or let in the wrong clients):
//   - a `*.key` file that cannot be read or parsed, or whose name or roles are invalid;
//   - the same public key in two files;
//   - any secret key in the folder: a `*.key_secret` file, or a `*.key` holding a secret-key.
//     The folder is read by the mesh and often copied around; a client's secret there means it
//     has leaked, and whoever holds it can act as that client. The reason says to move it out.
// - Two keys may share a name (a client rotating its key keeps both in the folder for a while);
//   each key has its own roles.
// - An empty folder is a valid, empty list: every client is refused.
//
// Thread-safety: an AllowList is immutable once loaded; share it as shared_ptr<const AllowList>
// and replace the pointer to apply a reload (security/zap.h).
#pragma once

#include <cstddef>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <variant>

#include "protocol/access.h"

namespace bidmesh {

class AllowList {
 public:
  AllowList() = default;  // empty: allows nobody

  // The client of a public key (Z85, 40 characters), or null when it is not allowed. The
  // pointer lives as long as this list.
  const Principal* find(std::string_view public_key_z85) const;
  std::size_t size() const { return by_key_.size(); }

  // Adds a client. Refused (the reason) when the key is not a Z85 key or is already present.
  std::optional<std::string> add(std::string_view public_key_z85, Principal who);

 private:
  // Transparent hashing: find() looks up a string_view without building a string.
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(std::string_view s) const { return std::hash<std::string_view>{}(s); }
  };
  std::unordered_map<std::string, Principal, Hash, std::equal_to<>> by_key_;
};

// Loads the folder as described above; on failure the one-line reason.
std::variant<AllowList, std::string> load_allow_list(const std::filesystem::path& clients_dir);

}  // namespace bidmesh
