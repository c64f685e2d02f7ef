// Failpoints: faults compiled into the node, off by default, switched on by the environment, so
// the reliability tests (docs/reliability.md) can widen a window that is otherwise too short to
// hit, the way etcd's gofail and SQLite's test hooks do. A failpoint that is off costs one
// relaxed load of a value read once.
//
//   BIDMESH_FAILPOINT_COMMIT_DELAY_MS=N   sleep N ms (1..60000) just before each batch's
//                                         write-ahead log append (nodes/item_store.cc), the
//                                         batch's durability point: a test can show that no
//                                         reply and no feed event leaves before it, and kill the
//                                         node inside the window.
//   BIDMESH_FAILPOINT_CHECKPOINT_DELAY_MS=N   sleep N ms just before each checkpoint's LMDB
//                                         commit: kill -9 tests hit "during a checkpoint".
//                                         Each hold writes "failpoint: checkpoint held" first.
//
// The environment is read once per process, at the first call (the node's first write batch
// happens after start, so in practice at node start); a malformed or out-of-range value is
// ignored (the failpoint stays off) and said once on stderr. Never set these in production.
//
// Thread-safe: the value is read once under a function-local static.
#pragma once

#include <chrono>

namespace bidmesh::failpoint {

inline constexpr const char* kCommitDelayEnv = "BIDMESH_FAILPOINT_COMMIT_DELAY_MS";
inline constexpr const char* kCheckpointDelayEnv = "BIDMESH_FAILPOINT_CHECKPOINT_DELAY_MS";

// The configured commit delay (zero when off).
std::chrono::milliseconds commit_delay();

// Sleeps for commit_delay() when it is on; returns at once otherwise.
void before_commit();

std::chrono::milliseconds checkpoint_delay();
void before_checkpoint();

}  // namespace bidmesh::failpoint
