// The restart bench of bidmesh-bench: how long a bid node's items are unavailable after a kill -9.
//
// The bench owns the bid node it measures: it stops nothing else. It starts the node program
// (`bidmesh-bid-node --config FILE --name NODE`, its output to `log_file`), waits until a bid on
// one of the node's items is accepted, then `times` times: SIGKILL, reap, start it again at once
// (a supervisor that restarts without delay), and bid on that item (a fresh id per try, each try
// given `probe_timeout_ms`, `unavailable_pause_ms` after each `unavailable` reply) until one is
// accepted. The figure is the time from the kill to that
// first accepted bid: process start, LMDB open, bind, the router's reconnect, the first commit.
// Between restarts `gap_ms` of light load (one bid at a time) runs. The router and the rest of
// the mesh must already run; the node must NOT be running (the bench starts it).
//
// With `worst_tail`, each kill lands at the worst moment for the restart: just before a
// checkpoint, with the longest log tail the configuration allows. The node is started with the
// failpoint BIDMESH_FAILPOINT_CHECKPOINT_DELAY_MS (nodes/failpoint.h), which holds it just before
// each checkpoint's commit; between restarts the bench bids one at a time (one write per logged
// batch: the most replay work per byte of log) until a bid goes unanswered, which is the node
// waiting in its checkpoint with a full tail, and kills it there. Give the mesh config a long
// checkpoint_interval_ms, so that the size (checkpoint_kb) is what makes the checkpoint due.
//
// Thread-compatible: one call from one thread.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <zmq.hpp>

namespace bidmesh {

struct RestartBenchConfig {
  std::string endpoint;        // the router's request endpoint
  std::string config_file;     // the mesh config
  std::string node;            // name of the bid node to kill
  std::string node_program;    // path of bidmesh-bid-node
  std::string log_file;        // the node's stdout and stderr (appended)
  int times = 10;
  int probe_timeout_ms = 20;
  int unavailable_pause_ms = 1;  // after an `unavailable` reply, before the next probe
  int gap_ms = 300;
  int give_up_ms = 10000;      // one restart that takes longer than this fails the run
  bool worst_tail = false;     // kill just before a checkpoint, with a full log tail (above)
};

struct RestartBenchResult {
  bool ok = false;
  std::string error;
  std::string item;                   // the probed item
  std::vector<double> restart_ms;     // kill -> first accepted bid, one per restart
  uint64_t probes = 0;                // bids sent while the node was down or starting
};

RestartBenchResult run_restart_bench(zmq::context_t& ctx, const RestartBenchConfig& cfg);

}  // namespace bidmesh
