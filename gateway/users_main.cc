// bidmesh-gateway-users: manages the gateway's token file (gateway/users.h, docs/web.md).
//
//   bidmesh-gateway-users add NAME --file F      prints NAME's fresh token once
//   bidmesh-gateway-users remove NAME --file F
//   bidmesh-gateway-users list --file F          the names, one a line
// Exit codes: 0 ok, 1 refused (a name that exists or is absent), 100 usage, 111 the file.
#include <cstdio>
#include <iostream>
#include <variant>

#include <CLI/CLI.hpp>

#include "gateway/users.h"

int main(int argc, char** argv) {
  namespace gw = bidmesh::gateway;
  CLI::App app{"bidmesh-gateway-users: sign-in tokens of the web gateway (stored as salted BLAKE2b hashes)"};
  app.require_subcommand(1);
  std::string file, name;
  auto* add = app.add_subcommand("add", "add NAME and print its token (shown once)");
  add->add_option("NAME", name, "the user's name: the bidder it bids as ([A-Za-z0-9_-], 1-64)")->required();
  auto* remove = app.add_subcommand("remove", "remove NAME");
  remove->add_option("NAME", name, "the user's name")->required();
  auto* list = app.add_subcommand("list", "list the names");
  for (auto* sub : {add, remove, list}) sub->add_option("--file", file, "the users file (users_file in the config)")->required();
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);
    std::cerr << "bidmesh-gateway-users: " << e.what() << std::endl;
    return 100;
  }
  if (!gw::init_sodium()) {
    std::cerr << "bidmesh-gateway-users: libsodium cannot start" << std::endl;
    return 111;
  }
  auto loaded = gw::UserFile::load(file);
  if (auto* error = std::get_if<std::string>(&loaded)) {
    std::cerr << "bidmesh-gateway-users: " << *error << std::endl;
    return 111;
  }
  gw::UserFile& users = std::get<gw::UserFile>(loaded);
  if (*list) {
    for (const auto& [n, entry] : users.users()) std::cout << n << "\n";
    return 0;
  }
  if (*add) {
    auto result = users.add(name);
    if (result.index() == 1) {
      std::cerr << "bidmesh-gateway-users: " << std::get<1>(result) << std::endl;
      return 1;
    }
    std::cout << std::get<0>(result) << std::endl;
    return 0;
  }
  if (auto error = users.remove(name)) {
    std::cerr << "bidmesh-gateway-users: " << *error << std::endl;
    return 1;
  }
  return 0;
}
