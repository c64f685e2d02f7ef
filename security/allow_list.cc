#include "security/allow_list.h"

#include <algorithm>
#include <map>
#include <system_error>
#include <vector>

#include "protocol/messages.h"
#include "security/certificate.h"
#include "security/keys.h"

namespace bidmesh {

namespace fs = std::filesystem;

const Principal* AllowList::find(std::string_view public_key_z85) const {
  const auto it = by_key_.find(public_key_z85);
  return it == by_key_.end() ? nullptr : &it->second;
}

std::optional<std::string> AllowList::add(std::string_view public_key_z85, Principal who) {
  if (!is_valid_z85_key(public_key_z85)) return "not a key of 40 Z85 characters";
  if (!by_key_.emplace(std::string(public_key_z85), std::move(who)).second) return "the key is allowed already";
  return std::nullopt;
}

std::variant<AllowList, std::string> load_allow_list(const fs::path& clients_dir) {
  std::error_code ec;
  fs::directory_iterator it(clients_dir, ec);
  if (ec) return clients_dir.string() + ": cannot list the clients folder: " + ec.message();
  std::vector<fs::path> files;
  for (; it != fs::directory_iterator(); it.increment(ec)) {
    const std::string ext = it->path().extension().string();
    if (ext == ".key" || ext == ".key_secret") files.push_back(it->path());
  }
  if (ec) return clients_dir.string() + ": cannot list the clients folder: " + ec.message();
  // Sorted, so that a refusal names the same file on every run.
  std::sort(files.begin(), files.end());

  AllowList list;
  std::map<std::string, fs::path> file_of_key;
  for (const fs::path& file : files) {
    if (file.extension() == ".key_secret")
      return file.string() + ": a secret certificate in the clients folder (it lets whoever reads the folder act as "
                             "that client): move it to the client and keep only its .key here";
    auto read = read_certificate(file);  // a folder or a FIFO named *.key is refused there
    if (auto* err = std::get_if<std::string>(&read)) return std::move(*err);
    const Certificate& cert = std::get<Certificate>(read);
    if (!cert.secret_key.empty())
      return file.string() + ": holds a secret-key (it lets whoever reads the folder act as that client): keep only "
                             "the public certificate here";
    Principal who;
    who.name = cert.meta("name").value_or(file.stem().string());
    if (!is_valid_identifier(who.name))
      return file.string() + ": client name '" + who.name + "' must be 1 to 64 of [A-Za-z0-9_-]" +
             (cert.meta("name") ? " (metadata name)" : " (the file name; or set metadata name)");
    who.roles = kRoleReader;
    if (auto roles_field = cert.meta("roles")) {
      std::string why;
      auto roles = parse_roles(*roles_field, &why);
      if (!roles) return file.string() + ": metadata roles: " + why;
      who.roles = *roles;
    }
    if (auto [at, fresh] = file_of_key.emplace(cert.public_key, file); !fresh)
      return file.string() + ": the same public key as " + at->second.string();
    if (auto err = list.add(cert.public_key, std::move(who))) return file.string() + ": " + *err;
  }
  return list;
}

}  // namespace bidmesh
