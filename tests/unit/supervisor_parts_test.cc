// The supervisor's parts that need no process: log rotation, the control wire, signal names.
#include <catch2/catch.hpp>

#include <csignal>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <unistd.h>

#include "protocol/json.h"
#include "supervisor/control_wire.h"
#include "supervisor/rotating_log.h"
#include "supervisor/spawn.h"
#include "supervisor/supervisor.h"

using namespace bidmesh;
namespace fs = std::filesystem;

namespace {

struct ScratchDir {
  fs::path path;
  ScratchDir() {
    std::string tmpl = (fs::temp_directory_path() / "bidmesh-sup-unit-XXXXXX").string();
    path = ::mkdtemp(tmpl.data());
  }
  ~ScratchDir() {
    std::error_code ec;
    fs::remove_all(path, ec);
  }
};

std::string read(const fs::path& p) {
  std::ifstream in(p);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace

TEST_CASE("rotating log keeps its size bound and the newest files", "[supervisor]") {
  ScratchDir dir;
  const fs::path file = dir.path / "logs" / "n.log";
  RotatingLog log(file, 100, 2);
  const std::string line(40, 'a');
  for (int i = 0; i < 10; ++i) REQUIRE(log.append(line + std::to_string(i) + "\n"));
  CHECK(fs::file_size(file) <= 100);
  CHECK(fs::exists(file.string() + ".1"));
  CHECK(fs::exists(file.string() + ".2"));
  CHECK_FALSE(fs::exists(file.string() + ".3"));
  CHECK(read(file).find("a9") != std::string::npos);
  CHECK(read(file.string() + ".1").find("a7") != std::string::npos);

  SECTION("tail_lines gives the last lines") {
    const auto lines = tail_lines(file, 1);
    REQUIRE(lines.size() == 1);
    CHECK(lines[0] == line + "9");
    CHECK(tail_lines(file, 10).size() == 2);
    CHECK(tail_lines(dir.path / "missing", 3).empty());
  }
}

TEST_CASE("rotating log with keep 0 truncates", "[supervisor]") {
  ScratchDir dir;
  const fs::path file = dir.path / "n.log";
  RotatingLog log(file, 10, 0);
  log.append("0123456789");
  log.append("abc\n");
  CHECK(read(file) == "abc\n");
  CHECK_FALSE(fs::exists(file.string() + ".1"));
}

TEST_CASE("control wire round trips and refuses bad frames", "[supervisor]") {
  SECTION("request") {
    auto f = decode_control_frame(encode_ctl_request({"signal", {"bid-1", "TERM"}}));
    REQUIRE(f);
    const auto& r = std::get<CtlRequest>(*f);
    CHECK(r.cmd == "signal");
    CHECK(r.args == std::vector<std::string>{"bid-1", "TERM"});
  }
  SECTION("node message") {
    auto f = decode_control_frame(encode_node_message({"heartbeat", "bid-1", 1234}));
    REQUIRE(f);
    const auto& m = std::get<NodeMessage>(*f);
    CHECK(m.type == "heartbeat");
    CHECK(m.pid == 1234);
  }
  SECTION("reply with status") {
    NodeStatus s;
    s.name = "bid-1";
    s.state = "backoff";
    s.backoff_ms = {10, 20};
    CtlReply r{true, "1 node(s)", std::vector<NodeStatus>{s}};
    auto d = decode_ctl_reply(encode_ctl_reply(r));
    REQUIRE(d);
    CHECK(d->ok);
    const auto& list = std::get<std::vector<NodeStatus>>(d->data);
    REQUIRE(list.size() == 1);
    CHECK(list[0].backoff_ms == std::vector<uint64_t>{10, 20});
    CHECK(status_list_to_json(list).find("\"state\":\"backoff\"") != std::string::npos);
  }
  SECTION("garbage") {
    CHECK_FALSE(decode_control_frame(""));
    CHECK_FALSE(decode_control_frame("\xc1"));
    CHECK_FALSE(decode_control_frame(std::string("\x91\x01", 2)));              // not a map
    CHECK_FALSE(decode_control_frame(std::string("\xdd\xff\xff\xff\xff", 5)));  // huge array header
    CHECK_FALSE(decode_ctl_reply(encode_ctl_request({"status", {}})));
    // trailing bytes
    CHECK_FALSE(decode_control_frame(encode_ctl_request({"status", {}}) + "x"));
  }
}

TEST_CASE("json strings are escaped", "[supervisor]") {
  CHECK(json_quote("a\"b\\c\n\x01") == "\"a\\\"b\\\\c\\n\\u0001\"");
  CHECK(json_quote("caf\xc3\xa9") == "\"caf\xc3\xa9\"");      // UTF-8 passes
  CHECK(json_quote("x\xff\xc3") == "\"x\\ufffd\\ufffd\"");  // invalid bytes are replaced
  CHECK(json_quote("\xed\xa0\x80") == "\"\\ufffd\\ufffd\\ufffd\"");  // surrogate
}

TEST_CASE("signal names", "[supervisor]") {
  CHECK(parse_signal("TERM") == SIGTERM);
  CHECK(parse_signal("sigkill") == SIGKILL);
  CHECK(parse_signal("SIGUSR1") == SIGUSR1);
  CHECK(parse_signal("9") == 9);
  CHECK_FALSE(parse_signal("FOO"));
  CHECK_FALSE(parse_signal("0"));
  CHECK_FALSE(parse_signal("99999"));
  CHECK_FALSE(parse_signal(""));
}

TEST_CASE("reload fingerprints", "[supervisor]") {
  const char* base = R"(
data_dir = "d"
[feed]
publish = "tcp://127.0.0.1:7001"
collect = "tcp://127.0.0.1:7002"
[[node]]
name = "r1"
kind = "router"
listen = "tcp://127.0.0.1:7000"
feed = true
[[node]]
name = "b1"
kind = "bid"
listen = "tcp://127.0.0.1:7011"
slots = ["0-16383"]
)";
  const MeshConfig a = parse_mesh_config(base, "/tmp/x/mesh.toml");
  SECTION("same config, same fingerprints") {
    const MeshConfig b = parse_mesh_config(base, "/tmp/x/mesh.toml");
    for (const auto& n : a.nodes) CHECK(node_fingerprint(a, n) == node_fingerprint(b, *b.find(n.name)));
  }
  SECTION("a bid node's endpoint change also changes the routers") {
    std::string text = base;
    text.replace(text.find("7011"), 4, "7012");
    const MeshConfig b = parse_mesh_config(text, "/tmp/x/mesh.toml");
    CHECK(node_fingerprint(a, *a.find("b1")) != node_fingerprint(b, *b.find("b1")));
    CHECK(node_fingerprint(a, *a.find("r1")) != node_fingerprint(b, *b.find("r1")));
  }
  SECTION("a new metrics address restarts that node only (it binds it at start)") {
    std::string text = base;
    text.insert(text.find("slots = "), "metrics = \"127.0.0.1:9102\"\n");
    const MeshConfig b = parse_mesh_config(text, "/tmp/x/mesh.toml");
    CHECK(node_fingerprint(a, *a.find("b1")) != node_fingerprint(b, *b.find("b1")));
    CHECK(node_fingerprint(a, *a.find("r1")) == node_fingerprint(b, *b.find("r1")));
  }
  SECTION("hosts") {
    NodeConfig n;
    CHECK(node_runs_on(n, "h1"));
    n.host = "h2";
    CHECK_FALSE(node_runs_on(n, "h1"));
    CHECK(node_runs_on(n, "h2"));
  }
}
