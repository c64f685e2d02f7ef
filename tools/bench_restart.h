// The restart bench of bidmesh-bench: how long a bid node's items are unavailable after a kill -9.
//
// The bench owns the bid node it measures: it stops nothing else. It starts the node program
// (`bidmesh-bid-node --config FILE --name NODE`, its output to `log_file`), waits until a bid on
// one of the node's items is accepted, then `times` times: SIGKILL, reap, start it again at once
// (a supervisor that restarts without delay), and bid on that item (a fresh id per try, each try
// given `probe_timeout_ms`) until one is accepted. The figure is the time from the kill to that
// first accepted bid: process start, LMDB open, bind, the router's reconnect, the first commit.
// Between restarts `gap_ms` of light load (one bid at a time) runs. The router and the rest of
// the mesh must already run; the node must NOT be running (the bench starts it).
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
  int gap_ms = 300;
  int give_up_ms = 10000;      // one restart that takes longer than this fails the run
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
