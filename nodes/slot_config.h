// The mesh config after a slot range moves from one bid node to another (bidmesh-slots,
// docs/deployment.md "Moving a slot range").
//
// Guarantees: only the `slots` values of the two nodes change, each rewritten as an array of
// "FIRST-LAST" strings (ascending, adjacent ranges merged); every other byte of the file,
// comments and layout included, stays as it was. The result is loaded with the real loader
// (parse_mesh_config: every slot 0-16383 owned exactly once) and checked to give the two nodes
// the intended slots before it is returned.
//
// Thread-safe: pure functions.
#pragma once

#include <filesystem>
#include <string>
#include <string_view>
#include <vector>

#include "protocol/config.h"
#include "protocol/slot_map.h"

namespace bidmesh::slot_move {

// `text` with `range` moved from bid node `from` (which must own all of it) to bid node `to`.
// `file` names the source in messages. Throws ConfigError with a one-line reason: the text does
// not load, a node is missing or not a bid node, from == to, `from` does not own the whole range,
// or `from` would be left without a slot (remove it from the file by hand instead).
std::string move_range_in_config(std::string_view text, const std::filesystem::path& file, std::string_view from,
                                 std::string_view to, SlotRange range);

// The slots of bid node `from` once it loses `range`. Throws ConfigError when `from` is not a bid
// node of `cfg`, does not own the whole range, or would be left without a slot.
std::vector<SlotRange> slots_without(const MeshConfig& cfg, std::string_view from, SlotRange range);

// The slot set `ranges` as sorted, merged ranges ("0-99", "200-299").
std::vector<SlotRange> normalize_ranges(std::vector<SlotRange> ranges);

}  // namespace bidmesh::slot_move
