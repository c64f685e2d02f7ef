// bidmesh-slots: moves a slot range from one stopped bid node to another (nodes/slot_move.h), and
// writes the mesh config with the range moved (nodes/slot_config.h).
//   bidmesh-slots move   --config FILE --slots A-B --from SRC --to DST [--new-config OUT]
//   bidmesh-slots export --config FILE --slots A-B --from SRC --file EXPORT     (on SRC's host)
//   bidmesh-slots import --config FILE --to DST --file EXPORT [--new-config OUT] (on DST's host)
//   bidmesh-slots drop   --config FILE --file EXPORT                           (on SRC's host, after import)
// A separate program from bidmesh-wal, which is read-only by contract: this one writes stores.
// Exit codes: 0 done (a rerun of a finished step is done too), 1 refused or failed (one line
// says why; nothing half done), 100 usage or config error.
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>

#include <CLI/CLI.hpp>

#include "nodes/slot_config.h"
#include "nodes/slot_move.h"
#include "protocol/config.h"

namespace {

using namespace bidmesh;
namespace sm = bidmesh::slot_move;

struct Refused {
  int code;
  std::string why;
};

[[noreturn]] void refuse(int code, const std::string& why) { throw Refused{code, why}; }
void check(const Status& st) {
  if (!st.ok()) refuse(1, st.message());
}

double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}

std::string read_text(const std::filesystem::path& file) {
  std::ifstream in(file, std::ios::binary);
  if (!in) refuse(100, "cannot read " + file.string());
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// Writes `text` to `file` through a temp file and a rename: a reader sees the old or the new file.
void write_text(const std::filesystem::path& file, const std::string& text) {
  const std::filesystem::path tmp = file.string() + ".tmp";
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    out << text;
    out.close();
    if (!out) refuse(1, "cannot write " + tmp.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, file, ec);
  if (ec) refuse(1, "cannot rename " + tmp.string() + " to " + file.string() + ": " + ec.message());
}

// The node's store options, as the bid node opens them (nodes/bid_node.cc).
ItemStoreOptions store_options(const MeshConfig& cfg, const NodeConfig& node) {
  ItemStoreOptions o;
  o.dir = cfg.node_data_dir(node.name);
  o.map_size_bytes = node.map_size_bytes > 0 ? node.map_size_bytes : cfg.default_map_size_bytes;
  o.log_segment_bytes = uint64_t{cfg.wal_segment_mb} << 20;
  return o;
}

// Replays and checkpoints the node's store, then opens it under its lock.
std::unique_ptr<sm::LockedStore> open_complete(const MeshConfig& cfg, const std::string& name) {
  const NodeConfig& node = *cfg.find(name);
  const ItemStoreOptions o = store_options(cfg, node);
  ItemStore::ReplayStats replayed;
  check(sm::complete_store(o, &replayed));
  std::printf("%s: store %s complete: %llu log records replayed and checkpointed\n", name.c_str(), o.dir.c_str(),
              static_cast<unsigned long long>(replayed.records));
  std::unique_ptr<sm::LockedStore> store;
  check(sm::LockedStore::open(o.dir, o.map_size_bytes, &store));
  return store;
}

// Writes the config with the range moved and says what the operator does next.
void write_new_config(const MeshConfig& cfg, const std::string& text, std::string out, const std::string& from,
                      const std::string& to, SlotRange range) {
  const std::string moved = sm::move_range_in_config(text, cfg.file, from, to, range);
  if (out.empty()) out = cfg.file.string() + ".new";
  write_text(out, moved);
  std::printf("new config: %s (slots %s moved from %s to %s; digest %s)\n", out.c_str(), sm::range_text(range).c_str(),
              from.c_str(), to.c_str(), parse_mesh_config(moved, cfg.file).digest_hex().c_str());
  std::printf("next: copy %s over %s on every host, then on every host: bidmesh-ctl --config %s reload; "
              "then bidmesh-ctl --config %s start %s and start %s on their hosts\n",
              out.c_str(), cfg.file.c_str(), cfg.file.c_str(), cfg.file.c_str(), from.c_str(), to.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh-slots: move a slot range from one stopped bid node to another"};
  app.require_subcommand(1);
  std::string config_file, slots, from, to, file, new_config;
  auto add_config = [&](CLI::App* c) { c->add_option("--config", config_file, "the mesh config file (TOML)")->required(); };
  auto add_range = [&](CLI::App* c) {
    c->add_option("--slots", slots, "the slot range FIRST-LAST (all owned by --from)")->required();
    c->add_option("--from", from, "the bid node that owns the range now")->required();
  };
  auto add_out = [&](CLI::App* c) {
    c->add_option("--new-config", new_config, "where the config with the range moved is written (default FILE.new)");
  };
  CLI::App* move = app.add_subcommand("move", "export, import and drop on one host, and write the new config");
  add_config(move);
  add_range(move);
  move->add_option("--to", to, "the bid node that gets the range")->required();
  add_out(move);
  CLI::App* exp = app.add_subcommand("export", "write the range's records of --from to --file (on its host)");
  add_config(exp);
  add_range(exp);
  exp->add_option("--file", file, "the export file")->required();
  CLI::App* imp = app.add_subcommand("import", "write an export file into --to (on its host), and the new config");
  add_config(imp);
  imp->add_option("--to", to, "the bid node that gets the range")->required();
  imp->add_option("--file", file, "the export file")->required();
  add_out(imp);
  CLI::App* drop = app.add_subcommand("drop", "after a successful import: delete the exported records from the source");
  add_config(drop);
  drop->add_option("--file", file, "the export file")->required();
  app.footer("Stop both nodes first (bidmesh-ctl stop NAME): a running node holds its store's lock and is refused. "
             "Exit codes: 0 done, 1 refused or failed, 100 usage or config error. See docs/deployment.md.");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? 0 : 100;
  }

  try {
    const auto started = std::chrono::steady_clock::now();
    const std::string text = read_text(config_file);
    const MeshConfig cfg = parse_mesh_config(text, std::filesystem::absolute(config_file));
    SlotRange range{};
    sm::RangeData data;
    if (*imp || *drop) {
      check(sm::read_export(file, &data));
      range = data.range;
      from = data.source;
    } else if (auto r = sm::parse_slot_range(slots)) {
      range = *r;
    } else {
      refuse(100, "--slots: bad slot range '" + slots + "' (want FIRST-LAST within 0-16383)");
    }
    if (*drop) {
      // The source must still own the range in this config or another bid node must: either is fine.
      if (cfg.find(from) == nullptr || cfg.find(from)->kind != NodeKind::bid)
        refuse(100, cfg.file.string() + ": no bid node named '" + from + "' (the export's source)");
    } else if (*exp) {
      sm::slots_without(cfg, from, range);  // refuses a range --from does not own
    } else {
      sm::move_range_in_config(text, cfg.file, from, to, range);  // refuses what the move cannot do
    }

    if (*exp || *move) {
      auto src = open_complete(cfg, from);
      check(src->read_range(range, &data));
      data.source = from;
      if (*exp) {
        check(sm::write_export(file, data));
        std::printf("exported slots %s of %s: %llu items, %zu records, %llu bytes to %s in %.0f ms\n",
                    sm::range_text(range).c_str(), from.c_str(), static_cast<unsigned long long>(data.items),
                    data.records.size(), static_cast<unsigned long long>(data.bytes()), file.c_str(), ms_since(started));
        return 0;
      }
      auto dst = open_complete(cfg, to);
      uint64_t imported = 0, already = 0, dropped = 0;
      check(dst->import_range(data, &imported, &already));
      check(src->drop_range(data, &dropped));
      std::printf("moved slots %s from %s to %s: %llu items, %zu records, %llu bytes (%llu written, %llu already "
                  "there, %llu dropped from %s) in %.0f ms\n",
                  sm::range_text(range).c_str(), from.c_str(), to.c_str(), static_cast<unsigned long long>(data.items),
                  data.records.size(), static_cast<unsigned long long>(data.bytes()),
                  static_cast<unsigned long long>(imported), static_cast<unsigned long long>(already),
                  static_cast<unsigned long long>(dropped), from.c_str(), ms_since(started));
      write_new_config(cfg, text, new_config, from, to, range);
    } else if (*imp) {
      auto dst = open_complete(cfg, to);
      uint64_t imported = 0, already = 0;
      check(dst->import_range(data, &imported, &already));
      std::printf("imported slots %s of %s into %s: %llu items (%llu written, %llu already there) in %.0f ms\n",
                  sm::range_text(range).c_str(), from.c_str(), to.c_str(), static_cast<unsigned long long>(data.items),
                  static_cast<unsigned long long>(imported), static_cast<unsigned long long>(already), ms_since(started));
      write_new_config(cfg, text, new_config, from, to, range);
      std::printf("then, on the host of %s: bidmesh-slots drop --config %s --file %s\n", from.c_str(), cfg.file.c_str(),
                  file.c_str());
    } else {
      auto src = open_complete(cfg, from);
      uint64_t dropped = 0;
      check(src->drop_range(data, &dropped));
      std::printf("dropped slots %s from %s: %llu items in %.0f ms\n", sm::range_text(range).c_str(), from.c_str(),
                  static_cast<unsigned long long>(dropped), ms_since(started));
    }
    return 0;
  } catch (const ConfigError& e) {
    std::cerr << "bidmesh-slots: " << e.what() << std::endl;
    return 100;
  } catch (const Refused& r) {
    std::cerr << "bidmesh-slots: " << r.why << std::endl;
    return r.code;
  }
}
