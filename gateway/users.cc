// The token file of users.h, on libsodium.
#include "gateway/users.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <system_error>

#include <sys/stat.h>

#include <sodium.h>

#include "protocol/messages.h"

namespace bidmesh::gateway {

namespace {

constexpr std::size_t kSaltBytes = 32;
constexpr std::size_t kHashBytes = 32;
constexpr uintmax_t kMaxFileBytes = 16 * 1024 * 1024;

std::string to_hex(const unsigned char* p, std::size_t n) {
  std::string out(n * 2 + 1, '\0');
  sodium_bin2hex(out.data(), out.size(), p, n);
  out.pop_back();
  return out;
}

bool from_hex(std::string_view hex, unsigned char* out, std::size_t n) {
  std::size_t got = 0;
  return hex.size() == n * 2 &&
         sodium_hex2bin(out, n, hex.data(), hex.size(), nullptr, &got, nullptr) == 0 && got == n;
}

void keyed_hash(std::string_view token, const unsigned char* salt, unsigned char* out) {
  crypto_generichash(out, kHashBytes, reinterpret_cast<const unsigned char*>(token.data()), token.size(), salt,
                     kSaltBytes);
}

}  // namespace

bool init_sodium() { return sodium_init() >= 0; }

std::string random_token(std::size_t n) {
  std::vector<unsigned char> bytes(n);
  randombytes_buf(bytes.data(), n);
  std::string out(sodium_base64_ENCODED_LEN(n, sodium_base64_VARIANT_URLSAFE_NO_PADDING), '\0');
  sodium_bin2base64(out.data(), out.size(), bytes.data(), n, sodium_base64_VARIANT_URLSAFE_NO_PADDING);
  out.resize(std::char_traits<char>::length(out.c_str()));
  return out;
}

std::variant<UserFile, std::string> UserFile::load(const std::filesystem::path& file) {
  UserFile uf;
  uf.file_ = file;
  // One stat: its stamp is what reload_if_changed() compares later.
  struct stat st{};
  if (::stat(file.c_str(), &st) != 0) {
    if (errno == ENOENT) return uf;  // no users yet
    return file.string() + ": " + std::strerror(errno);
  }
  uf.stamp_ = stamp_from(st);
  if (uf.stamp_->size > kMaxFileBytes) return file.string() + ": larger than 16 MiB";
  std::ifstream in(file);
  if (!in) return file.string() + ": cannot be read";
  std::string line;
  int number = 0;
  while (std::getline(in, line)) {
    ++number;
    if (line.empty() || line[0] == '#') continue;
    const auto a = line.find(':');
    const auto b = a == std::string::npos ? a : line.find(':', a + 1);
    const std::string where = file.string() + ": line " + std::to_string(number) + ": ";
    if (b == std::string::npos) return where + "not NAME:SALT:HASH";
    std::string name = line.substr(0, a);
    UserEntry e{line.substr(a + 1, b - a - 1), line.substr(b + 1)};
    unsigned char probe[kSaltBytes];
    if (!is_valid_identifier(name)) return where + "the name is not 1..64 bytes of [A-Za-z0-9_-]";
    if (!from_hex(e.salt_hex, probe, kSaltBytes) || !from_hex(e.hash_hex, probe, kHashBytes))
      return where + "SALT and HASH must be 64 hex digits each";
    if (!uf.users_.emplace(std::move(name), std::move(e)).second) return where + "the name is used twice";
  }
  return uf;
}

bool UserFile::verify(std::string_view name, std::string_view token) const {
  unsigned char salt[kSaltBytes] = {}, want[kHashBytes] = {}, got[kHashBytes];
  const auto it = users_.find(std::string(name));
  const bool known = it != users_.end() && from_hex(it->second.salt_hex, salt, kSaltBytes) &&
                     from_hex(it->second.hash_hex, want, kHashBytes);
  // The same hash work whether or not the name is known: no timing tells names apart.
  keyed_hash(token.substr(0, 512), salt, got);
  return sodium_memcmp(got, want, kHashBytes) == 0 && known;
}

UserFile::Stamp UserFile::stamp_from(const struct stat& st) {
  return Stamp{static_cast<uint64_t>(st.st_dev), static_cast<uint64_t>(st.st_ino), static_cast<uint64_t>(st.st_size),
               static_cast<int64_t>(st.st_mtim.tv_sec), static_cast<int64_t>(st.st_mtim.tv_nsec)};
}

std::optional<UserFile::Stamp> UserFile::stamp_of(const std::filesystem::path& file) {
  struct stat st{};
  if (::stat(file.c_str(), &st) != 0) return std::nullopt;
  return stamp_from(st);
}

std::optional<std::string> UserFile::reload_if_changed() {
  if (stamp_of(file_) == stamp_) return std::nullopt;
  auto loaded = load(file_);
  if (auto* error = std::get_if<std::string>(&loaded)) return *error;
  *this = std::move(std::get<UserFile>(loaded));
  return std::nullopt;
}

std::variant<std::string, std::string> UserFile::add(const std::string& name) {
  if (!is_valid_identifier(name))
    return std::variant<std::string, std::string>(std::in_place_index<1>, "the name must be 1..64 bytes of [A-Za-z0-9_-]");
  if (users_.count(name))
    return std::variant<std::string, std::string>(std::in_place_index<1>, "user '" + name + "' exists (remove it first)");
  const std::string token = random_token();
  unsigned char salt[kSaltBytes], hash[kHashBytes];
  randombytes_buf(salt, kSaltBytes);
  keyed_hash(token, salt, hash);
  users_[name] = UserEntry{to_hex(salt, kSaltBytes), to_hex(hash, kHashBytes)};
  if (auto error = save()) return std::variant<std::string, std::string>(std::in_place_index<1>, *error);
  return std::variant<std::string, std::string>(std::in_place_index<0>, token);
}

std::optional<std::string> UserFile::remove(const std::string& name) {
  if (users_.erase(name) == 0) return "no user '" + name + "'";
  return save();
}

std::optional<std::string> UserFile::save() const {
  std::ostringstream text;
  text << "# bidmesh gateway users: NAME:SALT:HASH (BLAKE2b-256 of the token keyed with SALT).\n"
          "# Managed with bidmesh-gateway-users; tokens are never stored.\n";
  for (const auto& [name, e] : users_) text << name << ':' << e.salt_hex << ':' << e.hash_hex << '\n';
  const std::filesystem::path tmp = file_.string() + ".tmp";
  const mode_t old_mask = ::umask(077);
  {
    std::ofstream out(tmp, std::ios::trunc);
    out << text.str();
    out.flush();
    if (!out) {
      ::umask(old_mask);
      return tmp.string() + ": cannot be written";
    }
  }
  ::umask(old_mask);
  ::chmod(tmp.c_str(), 0600);
  std::error_code ec;
  std::filesystem::rename(tmp, file_, ec);
  if (ec) return file_.string() + ": " + ec.message();
  return std::nullopt;
}

}  // namespace bidmesh::gateway
