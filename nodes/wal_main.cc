// bidmesh-wal: the operator's view of a bid node's write-ahead log. Prints the segments, (with
// --records) every record, the checkpoint position stored in the node's LMDB, and checks every
// CRC. Read-only.
//   bidmesh-wal --config FILE --name NODE [--records]
//   bidmesh-wal --dir DATA_DIR_OF_THE_NODE [--records]
// Exit codes: 0 clean (a torn last record, cut at the next start, counts as clean and is shown),
// 1 damaged, 100 usage or config error, 111 cannot read.
#include <iostream>
#include <string>

#include <CLI/CLI.hpp>

#include "nodes/item_store.h"
#include "protocol/config.h"
#include "storage/log_inspect.h"

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-wal: inspect and verify a bid node's write-ahead log (read-only)"};
  std::string config_file, name, dir;
  bool records = false;
  auto* config_opt = app.add_option("--config", config_file, "the mesh config file (TOML)");
  app.add_option("--name", name, "the bid node's name in the config")->needs(config_opt);
  app.add_option("--dir", dir, "the node's data directory (<data_dir>/<node>) instead of --config/--name")
      ->excludes(config_opt);
  app.add_flag("--records", records, "print every record");
  app.footer("Exit codes: 0 clean, 1 damaged, 100 usage, 111 cannot read. Run it while the node is stopped: "
             "records a running node is appending can read as a torn tail.");
  try {
    app.parse(argc, argv);
    if (dir.empty() && (config_file.empty() || name.empty()))
      throw CLI::ValidationError("give --config and --name, or --dir");
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 100;
  }
  std::filesystem::path node_dir = dir;
  if (node_dir.empty()) {
    try {
      const bidmesh::MeshConfig cfg = bidmesh::load_mesh_config(config_file);
      const bidmesh::NodeConfig* node = cfg.find(name);
      if (node == nullptr || node->kind != bidmesh::NodeKind::bid) {
        std::cerr << "bidmesh-wal: " << cfg.file.string() << ": no bid node named '" << name << "'" << std::endl;
        return 100;
      }
      node_dir = cfg.node_data_dir(name);
    } catch (const bidmesh::ConfigError& e) {
      std::cerr << "bidmesh-wal: " << e.what() << std::endl;
      return 100;
    }
  }
  std::string error;
  const auto checkpoint = bidmesh::ItemStore::read_checkpoint_position(node_dir, &error);
  if (!error.empty()) {
    std::cerr << "bidmesh-wal: " << error << std::endl;
    return 111;
  }
  // No checkpoint yet: the node replays from the start of the log.
  return bidmesh::inspect_log(node_dir / "wal", checkpoint.value_or(bidmesh::LogPosition{}), records, std::cout);
}
