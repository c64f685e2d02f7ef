// bidmesh-keygen: writes a CurveZMQ certificate pair, NAME.key (public, 0644) and
// NAME.key_secret (both keys, 0600), in the ZPL layout of CZMQ's zcert and pyzmq's
// zmq.auth.create_certificates, with the metadata `roles` (and `name`, if given) in both files:
// the public file goes into the mesh's clients_dir, the secret one stays with the client.
// Never overwrites a file.
//
// Exit codes (the same on every bidmesh tool, after s6):
//   0    ok: the two paths and the public key on stdout
//   100  usage (a bad command line, a bad NAME, --name or --roles)
//   111  system failure (a file exists, cannot be written, no such folder)
#include <cstdio>
#include <filesystem>
#include <string>
#include <utility>
#include <vector>

#include <CLI/CLI.hpp>

#include "protocol/access.h"
#include "protocol/messages.h"
#include "security/certificate.h"

namespace {

using namespace bidmesh;

constexpr int kExitOk = 0;
constexpr int kExitUsage = 100;
constexpr int kExitSystem = 111;

const CLI::Validator kIdentifier = CLI::Validator(
    [](std::string& s) -> std::string {
      return is_valid_identifier(s) ? std::string() : "must be 1 to 64 of [A-Za-z0-9_-]: '" + s + "'";
    },
    "IDENTIFIER", "IDENTIFIER");

const CLI::Validator kRoles = CLI::Validator(
    [](std::string& s) -> std::string {
      std::string why;
      return parse_roles(s, &why) ? std::string() : why;
    },
    "ROLES", "ROLES");

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-keygen: write a CurveZMQ certificate pair NAME.key and NAME.key_secret"};
  std::string name;
  std::string dir = ".";
  std::string roles = "reader";
  std::string client_name;
  app.add_option("NAME", name, "file name of the pair ([A-Za-z0-9_-], 1 to 64 bytes)")->required()->check(kIdentifier);
  app.add_option("--dir", dir, "folder to write into (must exist)")->capture_default_str();
  app.add_option("--roles", roles, "comma-separated: reader, bidder, agent, auctioneer")
      ->capture_default_str()
      ->check(kRoles);
  app.add_option("--name", client_name, "the client's name in the mesh (default: NAME)")->check(kIdentifier);
  // One line, as on every bidmesh tool.
  app.failure_message([](const CLI::App*, const CLI::Error& e) {
    return "bidmesh-keygen: " + std::string(e.what()) + " (see --help)\n";
  });
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  }

  // Canonical spelling ("reader,bidder"), so that every file names roles the same way.
  std::vector<std::pair<std::string, std::string>> metadata;
  if (!client_name.empty()) metadata.emplace_back("name", client_name);
  metadata.emplace_back("roles", roles_text(*parse_roles(roles, nullptr)));  // checked by kRoles

  Certificate cert;
  if (auto err = write_certificate_pair(dir, name, metadata, &cert)) {
    std::fprintf(stderr, "bidmesh-keygen: %s\n", err->c_str());
    return kExitSystem;
  }
  const std::filesystem::path base = std::filesystem::path(dir) / name;
  std::printf("%s.key\n%s.key_secret\npublic-key %s\n", base.c_str(), base.c_str(), cert.public_key.c_str());
  return kExitOk;
}
