// The write-ahead log seen by an operator, through the real programs: bidmesh-wal on a bid node's
// log after a kill -9 (clean, with a tail past the checkpoint), then on the same log with a byte
// flipped inside a record that is not the last (damaged: exit 1); the node then refuses to start,
// and its log line names the file, the offset and what to do.
#include <catch2/catch.hpp>

#include <fstream>

#include <zmq.hpp>

#include "protocol/messages.h"
#include "storage/log_format.h"
#include "tests/support/mesh.h"
#include "tests/support/requests.h"
#include "client/client.h"

using namespace bidmesh;
using namespace bidmesh::test;
using namespace std::chrono_literals;

TEST_CASE("bidmesh-wal reads a node's log, and a damaged log stops the node with the place named",
          "[integration][wal]") {
  MeshOptions mo;
  mo.bid_nodes = 1;
  mo.extra_top_level = "checkpoint_interval_ms = 600000";  // no checkpoint: everything is in the tail
  TestMesh mesh(mo);
  mesh.start_all();
  zmq::context_t ctx;
  Client c(ctx, mesh.request_endpoint(), 3000, 2);
  const std::string item = mesh.item_on_node(0, 1);
  REQUIRE(c.call(make_request(Op::open, item))->ok);
  for (uint64_t a = 1; a <= 20; ++a) REQUIRE(c.call(make_bid(item, "wal", a * 10))->ok);
  mesh.kill_node("bid-1");

  const std::string node_dir = (mesh.dir() / "data" / "bid-1").string();
  const RunResult clean = run_program({program_path("bidmesh-wal"), "--dir", node_dir, "--records"});
  INFO(clean.out);
  CHECK(clean.exit_code == 0);
  CHECK_THAT(clean.out, Catch::Contains("result: clean"));
  CHECK_THAT(clean.out, Catch::Contains("past the checkpoint: 21 records"));

  // Flip a byte inside the payload of the 3rd record (records here are well under 200 bytes).
  const std::filesystem::path segment = mesh.dir() / "data" / "bid-1" / "wal" / log_segment_name(1);
  uint64_t third = 0;
  {
    std::ifstream in(segment, std::ios::binary);
    REQUIRE(in);
    for (int r = 0; r < 2; ++r) {
      char header[kLogHeaderBytes];
      in.seekg(static_cast<std::streamoff>(third));
      in.read(header, sizeof header);
      const LogHeader h = decode_log_header(header, 1);
      REQUIRE(h.kind == LogHeaderKind::record);
      third += kLogHeaderBytes + h.length;
    }
  }
  {
    std::fstream f(segment, std::ios::in | std::ios::out | std::ios::binary);
    f.seekg(static_cast<std::streamoff>(third + 20));
    char b = 0;
    f.read(&b, 1);
    b = static_cast<char>(b ^ 0x01);
    f.seekp(static_cast<std::streamoff>(third + 20));
    f.write(&b, 1);
  }
  const RunResult damaged = run_program({program_path("bidmesh-wal"), "--dir", node_dir});
  INFO(damaged.out);
  CHECK(damaged.exit_code == 1);
  CHECK_THAT(damaged.out, Catch::Contains("offset " + std::to_string(third)));

  // The node refuses to start on it: exit 111, and the line says where and what to do.
  const RunResult refused =
      run_program({program_path("bidmesh-bid-node"), "--config", mesh.config_path().string(), "--name", "bid-1"});
  INFO(refused.out);
  CHECK(refused.exit_code == 111);
  CHECK_THAT(refused.out, Catch::Contains(segment.string()));
  CHECK_THAT(refused.out, Catch::Contains("offset " + std::to_string(third)));
  CHECK_THAT(refused.out, Catch::Contains("restore the data directory from a backup"));
  std::printf("bidmesh-wal: clean log exit %d, flipped byte in record 3 at offset %llu: exit %d; the node exits %d\n",
              clean.exit_code, static_cast<unsigned long long>(third), damaged.exit_code, refused.exit_code);
}
