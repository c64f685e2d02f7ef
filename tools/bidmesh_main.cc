// bidmesh: the client command line of a bidmesh mesh. Sends one request (open, bid, close, get,
// history, list, ping) through a Lazy Pirate Client, or watches the feed with a FeedWatcher.
//
// Exit codes (the same on every bidmesh tool, after s6):
//   0    ok
//   1    the mesh refused the request (an error reply; "bidmesh: refused: <code>: <message>" on stderr)
//   3    list: a page was partial (a bid node did not answer; its items are missing, named on stderr)
//   100  usage (a bad command line)
//   111  system failure: no reply after the retries, an undecodable reply, or `watch --count`
//        not reached within `--seconds`
#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <optional>
#include <string>
#include <vector>

#include <CLI/CLI.hpp>
#include <zmq.hpp>

#include "client/client.h"
#include "client/direct_client.h"
#include "client/feed_watcher.h"
#include "client/slot_table.h"
#include "protocol/json.h"
#include "protocol/clock.h"
#include "protocol/messages.h"
#include "tools/cli_args.h"

namespace {

using namespace bidmesh;

constexpr int kExitOk = 0;
constexpr int kExitRefused = 1;
constexpr int kExitPartial = 3;
constexpr int kExitUsage = 100;
constexpr int kExitSystem = 111;

std::atomic<bool> g_stop{false};
extern "C" void on_stop_signal(int) { g_stop.store(true); }


// "2026-11-25T22:33:15.123Z"
std::string iso_utc(uint64_t unix_ms) {
  std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[64];
  std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
                tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<unsigned>(unix_ms % 1000));
  return buf;
}

// A CLI11 check for the strict unsigned 64-bit integers of the contract.
const CLI::Validator kU64 = CLI::Validator(
    [](std::string& s) -> std::string {
      return parse_u64(s) ? std::string() : "not an unsigned 64-bit integer: '" + s + "'";
    },
    "UINT64", "UINT64");

std::string value_text(const Value* v) {
  if (!v) return "-";
  if (std::holds_alternative<Nil>(*v)) return "none";
  if (auto* b = std::get_if<bool>(v)) return *b ? "true" : "false";
  if (auto* u = std::get_if<uint64_t>(v)) return std::to_string(*u);
  return std::get<std::string>(*v);
}

std::string json_value(const Value& v) {
  if (std::holds_alternative<Nil>(v)) return "null";
  if (auto* b = std::get_if<bool>(&v)) return *b ? "true" : "false";
  if (auto* u = std::get_if<uint64_t>(&v)) return std::to_string(*u);
  return json_quote(std::get<std::string>(v));
}

// A decoded reply as one JSON line (used where the raw frame is not at hand: late-join state).
std::string reply_json(const Reply& r) {
  std::string out = "{";
  bool first = true;
  auto add = [&](std::string_view key, const std::string& val) {
    if (!first) out += ",";
    first = false;
    out += json_quote(key) + ":" + val;
  };
  if (!r.find("ok")) add("ok", r.ok ? "true" : "false");
  if (!r.find("id")) add("id", r.id ? json_quote(*r.id) : "null");
  for (const auto& f : r.fields) add(f.key, json_value(f.value));
  return out + "}";
}

std::string state_line(const Reply& r) {
  std::string s = "item " + r.str("item").value_or("?") + ": " + r.str("status").value_or("?");
  if (auto max = r.u64("max"))
    s += ", max " + std::to_string(*max) + " by " + r.str("bidder").value_or("?");
  else
    s += ", no bids yet";
  const auto bids = r.u64("bids");
  s += ", " + value_text(r.find("bids")) + (bids == 1u ? " bid" : " bids") + ", seq " + value_text(r.find("seq"));
  s += "; start " + value_text(r.find("start")) + ", increment " + value_text(r.find("increment"));
  if (auto at = r.u64("closes_at")) {
    s += ", closes at " + iso_utc(*at);
    const uint64_t now = unix_now_ms();
    if (*at > now) s += " (in " + std::to_string((*at - now + 999) / 1000) + " s)";
  }
  // v2 fields, present only for items opened with them.
  if (auto ext = r.u64("extend_ms")) s += ", extends by " + std::to_string(*ext) + " ms";
  if (const Value* met = r.find("reserve_met")) s += std::string(", reserve ") + (value_text(met) == "true" ? "met" : "not met");
  if (auto title = r.str("title")) s += "\n  title: " + *title;
  if (auto url = r.str("image_url")) s += "\n  image: " + *url;
  if (auto text = r.str("description")) s += "\n  description: " + *text;
  return s;
}

// The human line of a successful reply (history prints its events instead).
std::string ok_line(Op op, const Reply& r, const std::string& endpoint, std::chrono::microseconds rtt) {
  const std::string item = r.str("item").value_or("?");
  const std::string seq = value_text(r.find("seq"));
  switch (op) {
    case Op::open:
      return "opened: item " + item + " (seq " + seq + ")";
    case Op::bid: {
      std::string line = "accepted: item " + item + " bid " + value_text(r.find("amount")) + " by " +
                         r.str("bidder").value_or("?") + " (seq " + seq + ")";
      // v2: present when the bid carried --max, did not lead, or extended the deadline.
      if (const Value* leading = r.find("leading"))
        line += std::string(value_text(leading) == "true" ? ", leading" : ", NOT leading") + " at " +
                value_text(r.find("price"));
      if (auto at = r.u64("closes_at")) line += ", deadline extended to " + iso_utc(*at);
      return line;
    }
    case Op::close:
      if (auto w = r.str("winner"))
        return "closed: item " + item + " won by " + *w + " at " + value_text(r.find("amount")) + " (seq " + seq + ")";
      if (const Value* met = r.find("reserve_met"); met && value_text(met) == "false")
        return "closed: item " + item + ", reserve not met, no winner (seq " + seq + ")";
      return "closed: item " + item + ", no bids (seq " + seq + ")";
    case Op::get:
      return state_line(r);
    case Op::ping: {
      char ms[32];
      std::snprintf(ms, sizeof ms, "%.3f", static_cast<double>(rtt.count()) / 1000.0);
      return "pong: " + endpoint + " in " + ms + " ms";
    }
    case Op::history:
    case Op::list:   // printed by run_list
    case Op::slots:  // printed from the raw reply (run_request)
      break;
  }
  return "ok";
}

struct Globals {
  std::string endpoint = "tcp://127.0.0.1:5555";
  std::string feed = "tcp://127.0.0.1:5556";
  bool json = false;
  int timeout_ms = Client::kDefaultTimeoutMs;
  int retries = Client::kDefaultRetries;
  std::string id;
  std::optional<CurveKeys> curve;   // --cert and --server-cert, with security = "curve"
  bool direct = false;              // --direct: to the owning bid node by the slot map
};

int run_request(const Globals& g, Request req) {
  zmq::context_t ctx(1);
  // --direct: the same frame goes to the item's owner (DirectClient), the router only as fallback.
  std::optional<Client> client;
  std::optional<DirectClient> direct;
  if (g.direct) {
    DirectOptions opt;
    opt.timeout_ms = g.timeout_ms;
    opt.retries = g.retries;
    direct.emplace(ctx, g.endpoint, opt, std::string(), g.curve);
  } else {
    client.emplace(ctx, g.endpoint, g.timeout_ms, g.retries, std::string(), g.curve);
  }
  req.id = g.id.empty() ? (direct ? direct->next_id() : client->next_id()) : g.id;
  const std::string frame = encode_request(req);
  const auto started = std::chrono::steady_clock::now();
  auto raw = direct ? direct->call_raw(frame) : client->call_raw(frame);
  const auto rtt = client ? client->last_elapsed()
                          : std::chrono::duration_cast<std::chrono::microseconds>(std::chrono::steady_clock::now() - started);
  if (!raw) {
    if (direct)
      std::fprintf(stderr, "bidmesh: no reply from the owning node nor from %s after %d tries of %d ms (request id %s%s)\n",
                   g.endpoint.c_str(), g.retries + 1, g.timeout_ms, req.id.c_str(),
                   op_is_write(req.op) ? "; resend with --id to retry safely" : "");
    else
      std::fprintf(stderr, "bidmesh: no reply from %s after %d tries of %d ms (request id %s%s)\n", g.endpoint.c_str(),
                   client->last_attempts(), g.timeout_ms, req.id.c_str(),
                   op_is_write(req.op) ? "; resend with --id to retry safely" : "");
    return kExitSystem;
  }
  auto reply = decode_reply(*raw);
  if (!reply) {
    std::fprintf(stderr, "bidmesh: undecodable reply (%zu bytes) from %s\n", raw->size(), g.endpoint.c_str());
    return kExitSystem;
  }
  if (g.json) {
    std::printf("%s\n", msgpack_to_json(*raw).c_str());
  }
  if (!reply->ok) {
    const std::string code = reply->error.value_or("error");
    const std::string msg = reply->message.value_or("");
    std::string extra;
    if (auto max = reply->u64("max")) extra = " (current max " + std::to_string(*max) + ")";
    // One line, on stderr: stdout carries only what succeeded (and --json's reply).
    std::fflush(stdout);
    std::fprintf(stderr, "bidmesh: refused: %s: %s%s\n", code.c_str(), msg.c_str(), extra.c_str());
    return kExitRefused;
  }
  if (!g.json) {
    if (req.op == Op::slots) {
      std::string why;
      auto table = decode_slots_reply(*raw, &why);
      if (!table) {
        std::fprintf(stderr, "bidmesh: %s\n", why.c_str());
        return kExitSystem;
      }
      std::printf("slot map %s\n", table->digest().c_str());
      for (const auto& r : table->ranges())
        std::printf("slots %u-%u: %s at %s\n", r.first, r.last, r.node.c_str(),
                    r.endpoint.empty() ? "(no client endpoint: through the router)" : r.endpoint.c_str());
    } else if (req.op == Op::history) {
      for (const auto& ev : reply->events) std::printf("%s\n", format_event(ev).c_str());
      if (reply->events.size() >= std::min<uint64_t>(req.limit, kMaxHistoryLimit) && !reply->events.empty())
        std::fprintf(stderr, "bidmesh: %zu events shown; more may follow: --after %llu\n", reply->events.size(),
                     static_cast<unsigned long long>(reply->events.back().seq));
    } else {
      std::printf("%s\n", ok_line(req.op, *reply, g.endpoint, rtt).c_str());
    }
  }
  return kExitOk;
}

// One line per listed item: get's line, with the title (if any) on the same line.
std::string list_line(const ListEntry& e) {
  Reply r;
  r.ok = true;
  std::optional<std::string> title;
  for (const Field& f : e.fields) {
    if (f.key == "title") title = std::get_if<std::string>(&f.value) ? std::get<std::string>(f.value) : "";
    else r.fields.push_back(f);
  }
  std::string line = state_line(r);
  if (title) line += "; title: " + *title;
  return line;
}

// list: one page, or every page with --all (through the router: a list merges every bid node).
int run_list(const Globals& g, Request req, bool all) {
  zmq::context_t ctx(1);
  Client client(ctx, g.endpoint, g.timeout_ms, g.retries, std::string(), g.curve);
  bool partial = false;
  for (;;) {
    req.id = g.id.empty() ? client.next_id() : g.id;
    auto raw = client.call_raw(encode_request(req));
    if (!raw) {
      std::fprintf(stderr, "bidmesh: no reply from %s after %d tries of %d ms (request id %s)\n", g.endpoint.c_str(),
                   client.last_attempts(), g.timeout_ms, req.id.c_str());
      return kExitSystem;
    }
    if (g.json) std::printf("%s\n", msgpack_to_json(*raw).c_str());
    auto page = decode_list_ok(*raw);
    if (!page) {
      auto reply = decode_reply(*raw);
      if (!reply) {
        std::fprintf(stderr, "bidmesh: undecodable reply (%zu bytes) from %s\n", raw->size(), g.endpoint.c_str());
        return kExitSystem;
      }
      std::fflush(stdout);
      std::fprintf(stderr, "bidmesh: refused: %s: %s\n", reply->error.value_or("error").c_str(),
                   reply->message.value_or("").c_str());
      return kExitRefused;
    }
    if (!g.json)
      for (const ListEntry& e : page->entries) std::printf("%s\n", list_line(e).c_str());
    std::fflush(stdout);
    if (page->partial) {
      partial = true;
      for (const std::string& node : page->missing)
        std::fprintf(stderr, "bidmesh: partial: node %s did not answer; its items are not in this page\n", node.c_str());
    }
    if (!page->cursor) break;
    if (!all) {
      std::fprintf(stderr, "bidmesh: more items follow: --cursor %s\n", page->cursor->c_str());
      break;
    }
    req.cursor = *page->cursor;
  }
  return partial ? kExitPartial : kExitOk;
}

struct WatchArgs {
  std::vector<std::string> items;
  uint64_t count = 0;      // 0: no limit
  double seconds = 0;      // 0: no limit
  bool late_join = false;
  bool no_repair = false;
};

int run_watch(const Globals& g, const WatchArgs& w) {
  struct sigaction sa {};
  sa.sa_handler = on_stop_signal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = 0;  // no SA_RESTART: the wait returns at once
  sigaction(SIGINT, &sa, nullptr);
  sigaction(SIGTERM, &sa, nullptr);

  zmq::context_t ctx(1);
  FeedWatcherOptions opts;
  opts.items = w.items;
  if (!w.no_repair) opts.request_endpoint = g.endpoint;
  opts.late_join = w.late_join;
  opts.request_timeout_ms = g.timeout_ms;
  opts.request_retries = g.retries;
  opts.curve = g.curve;
  const bool json = g.json;
  opts.on_state = [json](const Reply& r) {
    std::printf("%s\n", json ? reply_json(r).c_str() : ("state: " + state_line(r)).c_str());
    std::fflush(stdout);
  };
  FeedWatcher watcher(ctx, g.feed, std::move(opts));

  using clock = std::chrono::steady_clock;
  const auto start = clock::now();
  const std::optional<clock::time_point> end =
      w.seconds > 0 ? std::optional(start + std::chrono::duration_cast<clock::duration>(
                                                std::chrono::duration<double>(w.seconds)))
                    : std::nullopt;
  uint64_t shown = 0;
  while (!g_stop.load() && (w.count == 0 || shown < w.count)) {
    auto wait = std::chrono::milliseconds(200);
    if (end) {
      const auto left = std::chrono::ceil<std::chrono::milliseconds>(*end - clock::now());
      if (left.count() <= 0) break;
      wait = std::min(wait, left);
    }
    auto ev = watcher.next(wait);
    if (!ev) continue;
    ++shown;
    if (json)
      std::printf("%s\n", msgpack_to_json(encode_event(*ev)).c_str());
    else
      std::printf("%s%s\n", format_event(*ev).c_str(), watcher.last_repaired() ? " (repaired)" : "");
    std::fflush(stdout);
  }
  const FeedStats& s = watcher.stats();
  if (s.gaps_detected || s.duplicates || s.malformed || s.late_join_failures)
    std::fprintf(stderr,
                 "bidmesh: watch: %llu events (%llu repaired), %llu gaps (%llu repaired), %llu lost, "
                 "%llu duplicates, %llu malformed\n",
                 static_cast<unsigned long long>(s.delivered), static_cast<unsigned long long>(s.events_repaired),
                 static_cast<unsigned long long>(s.gaps_detected), static_cast<unsigned long long>(s.gaps_repaired),
                 static_cast<unsigned long long>(s.events_lost), static_cast<unsigned long long>(s.duplicates),
                 static_cast<unsigned long long>(s.malformed));
  if (w.count > 0 && shown < w.count && !g_stop.load()) {
    std::fprintf(stderr, "bidmesh: watch: %llu of %llu events from %s within %g s\n",
                 static_cast<unsigned long long>(shown), static_cast<unsigned long long>(w.count), g.feed.c_str(),
                 w.seconds);
    return kExitSystem;
  }
  return kExitOk;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"bidmesh: the client of a bidmesh auction mesh (requests and the live feed).", "bidmesh"};
  app.fallthrough();  // global options may follow the subcommand
  app.require_subcommand(1);
  app.footer(
      "Exit codes:\n"
      "  0    ok\n"
      "  1    the mesh refused the request (error reply; \"bidmesh: refused: <code>: <message>\" on stderr)\n"
      "  3    list: a page was partial (a bid node did not answer; named on stderr)\n"
      "  100  usage (bad command line)\n"
      "  111  no reply after the retries (or an undecodable reply; watch: --count not reached in --seconds)\n"
      "Writes are idempotent by (item, id): to retry one by hand, resend it with the same --id.");

  Globals g;
  app.add_option("--endpoint", g.endpoint, "request endpoint of a router")
      ->envname("BIDMESH_ENDPOINT")
      ->capture_default_str();
  app.add_option("--feed", g.feed, "feed endpoint (XPUB)")->envname("BIDMESH_FEED")->capture_default_str();
  app.add_flag("--json", g.json, "print the reply (watch: each event) as one JSON line");
  app.add_option("--timeout", g.timeout_ms, "milliseconds to wait for each try")
      ->check(CLI::Range(1, 3600 * 1000))
      ->capture_default_str();
  app.add_option("--retries", g.retries, "tries after the first (same frame, same id)")
      ->check(CLI::Range(0, 1000))
      ->capture_default_str();
  std::string cert, server_cert;
  app.add_option("--cert", cert, "security = curve: this client's secret certificate (NAME.key_secret)")
      ->envname("BIDMESH_CERT");
  app.add_option("--server-cert", server_cert, "security = curve: the mesh's public certificate (.key)")
      ->envname("BIDMESH_SERVER_CERT");
  app.add_flag("--direct", g.direct,
               "send to the bid node that owns the item (slot map from --endpoint); the router only when "
               "that node cannot be reached")
      ->envname("BIDMESH_DIRECT");
  app.add_option("--id", g.id, "request id (default: <host>-<pid>-<random>-<n>)")
      ->check([](const std::string& s) {
        return (s.empty() || s.size() > kMaxIdBytes) ? std::string("an id is 1 to 64 bytes") : std::string();
      });

  // open
  Request open_req;
  open_req.op = Op::open;
  std::string o_start, o_increment, o_closes_at, o_closes_in;
  auto* open_cmd = app.add_subcommand("open", "open an item for bids");
  open_cmd->add_option("ITEM", open_req.item, "item name ([A-Za-z0-9_-], 1 to 64 bytes)")->required();
  open_cmd->add_option("--start", o_start, "lowest first bid, minor units (default 1)")->check(kU64);
  open_cmd->add_option("--increment", o_increment, "least raise over the max (default 1)")->check(kU64);
  auto* at_opt = open_cmd->add_option("--closes-at", o_closes_at, "close by itself at this unix time (ms)")->check(kU64);
  open_cmd->add_option("--closes-in", o_closes_in, "close by itself in this many seconds")->check(kU64)->excludes(at_opt);
  std::string o_reserve, o_extend;
  open_cmd->add_option("--reserve", o_reserve, "lowest price that sells, never shown (v2)")->check(kU64);
  open_cmd->add_option("--extend", o_extend,
                       "soft close: a bid less than this many ms before the deadline moves it to the bid's time "
                       "plus this (v2; 0 = off)")
      ->check(kU64);
  open_cmd->add_option("--title", open_req.title, "title, 1 to 120 bytes of UTF-8 (v2)");
  open_cmd->add_option("--description", open_req.description, "description, up to 2000 bytes of UTF-8 (v2)");
  open_cmd->add_option("--image-url", open_req.image_url, "an http(s) URL of the item's image, up to 512 bytes (v2)");

  // bid
  Request bid_req;
  bid_req.op = Op::bid;
  std::string b_amount;
  auto* bid_cmd = app.add_subcommand("bid", "bid on an item");
  bid_cmd->add_option("ITEM", bid_req.item, "item name")->required();
  bid_cmd->add_option("BIDDER", bid_req.bidder, "bidder name ([A-Za-z0-9_-], 1 to 64 bytes)")->required();
  bid_cmd->add_option("AMOUNT", b_amount, "amount in minor units (cents), an unsigned integer")->required()->check(kU64);
  std::string b_max;
  bid_cmd->add_option("--max", b_max,
                      "proxy bid: the most this bidder will pay, at least AMOUNT; the mesh bids for it by the "
                      "increment and never shows it (v2)")
      ->check(kU64);

  // close, get
  Request close_req;
  close_req.op = Op::close;
  auto* close_cmd = app.add_subcommand("close", "close an item now");
  close_cmd->add_option("ITEM", close_req.item, "item name")->required();
  Request get_req;
  get_req.op = Op::get;
  auto* get_cmd = app.add_subcommand("get", "show an item's state");
  get_cmd->add_option("ITEM", get_req.item, "item name")->required();

  // history
  Request hist_req;
  hist_req.op = Op::history;
  std::string h_after, h_limit;
  auto* hist_cmd = app.add_subcommand("history", "list an item's events, oldest first");
  hist_cmd->add_option("ITEM", hist_req.item, "item name")->required();
  hist_cmd->add_option("--after", h_after, "only events with a seq above this (default 0)")->check(kU64);
  hist_cmd->add_option("--limit", h_limit, "at most this many events (default 100, at most 1000)")->check(kU64);

  // list
  Request list_req;
  list_req.op = Op::list;
  list_req.limit = kDefaultListLimit;
  std::string l_status = "open";
  bool l_all = false;
  auto* list_cmd = app.add_subcommand("list", "list items by deadline, then name (v2; through the router)");
  list_cmd->add_option("--status", l_status, "open or closed")->check(CLI::IsMember({"open", "closed"}))->capture_default_str();
  list_cmd->add_option("--limit", list_req.limit, "items per page, 1 to 100")
      ->check(CLI::Range(uint64_t{1}, kMaxListLimit))
      ->capture_default_str();
  list_cmd->add_option("--cursor", list_req.cursor, "start after this cursor (from an earlier page)");
  list_cmd->add_flag("--all", l_all, "page on until the last item");

  // ping
  auto* ping_cmd = app.add_subcommand("ping", "check that a router answers");
  auto* slots_cmd = app.add_subcommand("slots", "the slot map: each range's bid node and its client endpoint (v1.2)");

  // watch
  WatchArgs w;
  auto* watch_cmd = app.add_subcommand("watch", "print feed events, one per line (all items, or those named)");
  watch_cmd->add_option("ITEM", w.items, "items to watch (default: all)");
  watch_cmd->add_option("--count", w.count, "stop after this many events")->check(CLI::PositiveNumber);
  watch_cmd->add_option("--seconds", w.seconds, "stop after this many seconds")->check(CLI::PositiveNumber);
  watch_cmd->add_flag("--late-join", w.late_join,
                      "on an item's first event print its state (get) and drop events not newer than it");
  watch_cmd->add_flag("--no-repair", w.no_repair, "count seq gaps but do not fill them from history");

  try {
    app.parse(argc, argv);
    if (cert.empty() != server_cert.empty())
      throw CLI::ValidationError("--cert", "--cert and --server-cert go together (security = \"curve\")");
    if (!cert.empty()) {
      auto keys = load_curve_keys(cert, server_cert);
      if (auto* error = std::get_if<std::string>(&keys)) {
        std::fprintf(stderr, "bidmesh: %s\n", error->c_str());
        return kExitUsage;
      }
      g.curve = std::get<CurveKeys>(keys);
    }
    auto u64 = [](const std::string& s) { return *parse_u64(s); };  // checked by kU64
    if (!w.items.empty())
      for (const auto& item : w.items)
        if (!is_valid_identifier(item)) throw CLI::ValidationError("ITEM", "not an item name: '" + item + "'");
    if (*open_cmd) {
      if (!o_start.empty()) open_req.start = u64(o_start);
      if (!o_increment.empty()) open_req.increment = u64(o_increment);
      if (!o_closes_at.empty()) open_req.closes_at = u64(o_closes_at);
      if (!o_closes_in.empty()) {
        const uint64_t secs = u64(o_closes_in);
        if (secs > (UINT64_MAX - unix_now_ms()) / 1000) throw CLI::ValidationError("--closes-in", "too far ahead");
        open_req.closes_at = unix_now_ms() + secs * 1000;
      }
      if (!o_reserve.empty()) open_req.reserve = u64(o_reserve);
      if (!o_extend.empty()) open_req.extend_ms = u64(o_extend);
      return run_request(g, open_req);
    }
    if (*bid_cmd) {
      bid_req.amount = u64(b_amount);
      if (!b_max.empty()) bid_req.max = u64(b_max);  // the mesh checks max >= amount
      return run_request(g, bid_req);
    }
    if (*close_cmd) return run_request(g, close_req);
    if (*get_cmd) return run_request(g, get_req);
    if (*hist_cmd) {
      if (!h_after.empty()) hist_req.after = u64(h_after);
      if (!h_limit.empty()) hist_req.limit = u64(h_limit);
      return run_request(g, hist_req);
    }
    if (*list_cmd) {
      list_req.list_closed = l_status == "closed";
      return run_list(g, list_req, l_all);
    }
    if (*ping_cmd) {
      Request ping;
      ping.op = Op::ping;
      return run_request(g, ping);
    }
    if (*slots_cmd) {
      Request slots;
      slots.op = Op::slots;
      return run_request(g, slots);
    }
    if (*watch_cmd) return run_watch(g, w);
  } catch (const CLI::ParseError& e) {
    return app.exit(e) == 0 ? kExitOk : kExitUsage;
  } catch (const zmq::error_t& e) {
    // A bad endpoint ("tcp://nowhere") is refused by connect: a usage error.
    std::fprintf(stderr, "bidmesh: %s (endpoint %s, feed %s)\n", e.what(), g.endpoint.c_str(), g.feed.c_str());
    return e.num() == EINVAL || e.num() == EPROTONOSUPPORT ? kExitUsage : kExitSystem;
  }
  return kExitUsage;
}
