// bidmesh-bid-node --config FILE --name NAME: one bid node of the mesh (see nodes/bid_node.h).
// Exit codes (as every bidmesh program): 0 clean stop, 100 usage or config error, 111 system
// failure (cannot bind, cannot open LMDB, ZeroMQ failure); the reason is one line on stderr.
#include <exception>
#include <string>

#include "nodes/bid_node.h"
#include "nodes/process.h"
#include "protocol/config.h"
#include "protocol/log.h"

int main(int argc, char** argv) {
  const bidmesh::NodeStart start = bidmesh::start_node(
      argc, argv, "bidmesh-bid-node", "owns the items of its slots in LMDB and serves the routers", bidmesh::NodeKind::bid);
  if (!start.ok) return start.exit_code;
  try {
    bidmesh::BidNode bid_node(start.config, start.self());
    if (auto err = bid_node.start()) {
      bidmesh::log_event(bidmesh::LogLevel::error, "stop", "cannot start: " + *err, {{"exit_code", bidmesh::kExitSystem}});
      return bidmesh::kExitSystem;
    }
    return bid_node.serve();
  } catch (const std::exception& e) {
    bidmesh::log_event(bidmesh::LogLevel::error, "stop", std::string("stopping: ") + e.what(),
                       {{"exit_code", bidmesh::kExitSystem}});
    return bidmesh::kExitSystem;
  }
}
