// inspect_log: the operator's view of a bid node's write-ahead log, for the bidmesh-wal command.
// It reads the whole log (every segment in the directory, from the oldest), checks every CRC,
// and prints to `out`:
//   - each segment file: name, number, size;
//   - with `verbose`, each record: position (segment:offset), payload length, "crc ok";
//   - the checkpoint position when given, and whether a replay from it (what the node does at
//     start) reaches the same end;
//   - a summary: records, end position, records and bytes past the checkpoint, a torn tail if
//     any, and the verdict.
// Returns 0 when the log is clean (a torn tail counts as clean, and is reported), 1 when it is
// damaged (corruption as replay_log reports it, or a checkpoint the log cannot serve: in a removed
// segment, past the end, or not at a record boundary), 111 when it cannot be read (an I/O error;
// the exit code of the project's tools for a system failure).
//
// Read-only: it never writes to the log. Do not run it while a writer appends (the last records
// would read as a torn tail). Thread-safe on different directories.
#pragma once

#include <filesystem>
#include <optional>
#include <ostream>

#include "storage/log_format.h"

namespace bidmesh {

int inspect_log(const std::filesystem::path& dir, std::optional<LogPosition> checkpoint, bool verbose,
                std::ostream& out);

}  // namespace bidmesh
