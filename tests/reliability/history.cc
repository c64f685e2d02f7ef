// The history checker: see history.h.
#include "tests/reliability/history.h"

#include <cstdio>
#include <fstream>
#include <map>
#include <random>
#include <sstream>
#include <thread>
#include <unordered_map>

#include "protocol/messages.h"
#include "tests/reliability/harness.h"
#include "client/client.h"
#include "client/direct_client.h"

namespace bidmesh::rel {

namespace {

bool decided(const std::string& code) {
  return code != "unavailable" && code != "internal" && code != std::string(kClientBadReply);
}

}  // namespace

int run_bidder(const BidderOptions& o) {
  std::FILE* log = std::fopen(o.log.c_str(), "a");
  if (log == nullptr) {
    std::fprintf(stderr, "bidder %s: cannot write %s\n", o.name.c_str(), o.log.c_str());
    return 111;
  }
  zmq::context_t ctx(1);
  // Lazy Pirate: on a timeout the REQ socket is closed (linger 0) and the same frame resent.
  Client client(ctx, o.endpoint, o.timeout_ms, 2, o.name + "-req");
  // Direct: the same frame and id go to the owner, or through the router when it cannot be reached.
  std::optional<DirectClient> direct;
  if (o.direct) {
    DirectOptions d;
    d.timeout_ms = o.timeout_ms;
    d.retries = 2;
    d.node_timeout_ms = o.timeout_ms;
    direct.emplace(ctx, o.endpoint, d, o.name + "-dreq");
  }
  std::mt19937_64 rng(std::random_device{}());
  std::map<std::string, uint64_t> known;  // item -> highest max seen
  const auto stop_at = Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(o.seconds));
  for (uint64_t n = 1; n <= o.max_requests && Clock::now() < stop_at && !o.items.empty(); ++n) {
    const std::string& item = o.items[rng() % o.items.size()];
    Request r;
    r.op = Op::bid;
    r.id = o.name + "-req-" + std::to_string(n);
    r.item = item;
    r.bidder = o.name + "-" + std::to_string(n);
    r.amount = known[item] + 1 + rng() % 3;
    std::fprintf(log, "invoke\t%llu\t%s\t%s\t%s\t%llu\n", static_cast<unsigned long long>(n), r.id.c_str(), item.c_str(),
                 r.bidder.c_str(), static_cast<unsigned long long>(r.amount));
    std::fflush(log);
    const std::string frame = encode_request(r);
    const auto deadline = Clock::now() + Ms(o.request_deadline_ms);
    int attempts = 0;
    std::string why = "timeout";
    bool done = false;
    while (!done && Clock::now() < deadline) {
      auto raw = direct ? direct->call_raw(frame) : client.call_raw(frame);
      attempts += direct ? direct->last_attempts() : client.last_attempts();
      if (!raw) {
        why = "timeout";
        continue;
      }
      auto reply = decode_reply(*raw);
      if (!reply) {
        why = "bad_reply";
        continue;
      }
      if (reply->ok) {
        known[item] = std::max(known[item], r.amount);
        std::fprintf(log, "ok\t%llu\t%llu\t%llu\t%d\n", static_cast<unsigned long long>(n),
                     static_cast<unsigned long long>(reply->u64("amount").value_or(0)),
                     static_cast<unsigned long long>(reply->u64("seq").value_or(0)), attempts);
        done = true;
      } else if (decided(reply->error.value_or(""))) {
        if (auto m = reply->u64("max")) known[item] = std::max(known[item], *m);
        std::fprintf(log, "refused\t%llu\t%s\t%d\n", static_cast<unsigned long long>(n), reply->error->c_str(), attempts);
        done = true;
      } else {
        why = reply->error.value_or("?");
        std::this_thread::sleep_for(Ms(20));  // the owner is down or restarting: retry the same id
      }
    }
    if (!done) std::fprintf(log, "unknown\t%llu\t%s\t%d\n", static_cast<unsigned long long>(n), why.c_str(), attempts);
    std::fflush(log);
  }
  std::fclose(log);
  if (direct) {
    // Read by run_crash: how the calls were answered.
    const auto& s = direct->stats();
    std::printf("direct paths: %llu direct %llu router %llu fallbacks %llu moved\n",
                static_cast<unsigned long long>(s.direct), static_cast<unsigned long long>(s.router),
                static_cast<unsigned long long>(s.fallbacks), static_cast<unsigned long long>(s.moved));
  }
  return 0;
}

bool CheckFigures::passed() const {
  return lost == 0 && duplicated == 0 && refused_stored == 0 && phantom == 0 && order == 0 && get_mismatch == 0 &&
         read_failures == 0 && requests > 0;
}

std::string CheckFigures::json() const {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "{\"clients\":%llu,\"requests\":%llu,\"ok\":%llu,\"refused\":%llu,\"unknown\":%llu,\"unresolved\":%llu,"
                "\"retried\":%llu,\"unknown_stored\":%llu,\"unknown_not_stored\":%llu,\"items\":%llu,\"events\":%llu,"
                "\"stored_bids\":%llu,\"lost\":%llu,\"duplicated\":%llu,\"refused_stored\":%llu,\"phantom\":%llu,"
                "\"order\":%llu,\"get_mismatch\":%llu,\"read_failures\":%llu,\"passed\":%s}",
                (unsigned long long)clients, (unsigned long long)requests, (unsigned long long)ok,
                (unsigned long long)refused, (unsigned long long)unknown, (unsigned long long)unresolved,
                (unsigned long long)retried, (unsigned long long)unknown_stored, (unsigned long long)unknown_not_stored,
                (unsigned long long)items, (unsigned long long)events, (unsigned long long)stored_bids,
                (unsigned long long)lost, (unsigned long long)duplicated, (unsigned long long)refused_stored,
                (unsigned long long)phantom, (unsigned long long)order, (unsigned long long)get_mismatch,
                (unsigned long long)read_failures, passed() ? "true" : "false");
  return buf;
}

std::string CheckFigures::summary() const {
  char buf[1024];
  std::snprintf(buf, sizeof buf,
                "%llu requests from %llu clients: %llu ok, %llu refused, %llu unknown (%llu stored, %llu not); %llu "
                "retried with the same id. Stored: %llu bids in %llu events on %llu items. Lost %llu, duplicated %llu, "
                "refused but stored %llu, phantom %llu, order violations %llu, get/history mismatches %llu, read "
                "failures %llu: %s",
                (unsigned long long)requests, (unsigned long long)clients, (unsigned long long)ok,
                (unsigned long long)refused, (unsigned long long)(unknown + unresolved),
                (unsigned long long)unknown_stored, (unsigned long long)unknown_not_stored,
                (unsigned long long)retried, (unsigned long long)stored_bids, (unsigned long long)events,
                (unsigned long long)items, (unsigned long long)lost, (unsigned long long)duplicated,
                (unsigned long long)refused_stored, (unsigned long long)phantom, (unsigned long long)order,
                (unsigned long long)get_mismatch, (unsigned long long)read_failures, passed() ? "PASS" : "FAIL");
  std::string out = buf;
  for (const auto& p : problems) out += "\n  " + p;
  return out;
}

CheckFigures check_history(zmq::context_t& ctx, const std::string& endpoint, const std::vector<std::string>& items,
                           const std::vector<std::filesystem::path>& logs) {
  struct Req {
    std::string item;
    uint64_t amount = 0;
    std::string outcome;  // ok | refused | unknown | "" (no outcome line)
    uint64_t ok_seq = 0;
    uint64_t stored = 0;
  };
  CheckFigures f;
  auto problem = [&](const std::string& p) {
    if (f.problems.size() < 20) f.problems.push_back(p);
  };
  std::unordered_map<std::string, Req> reqs;  // by bidder
  for (const auto& path : logs) {
    ++f.clients;
    std::istringstream in(test::read_file(path));
    std::map<std::string, std::string> bidder_of;  // n -> bidder, in this file
    std::string line;
    while (std::getline(in, line)) {
      std::istringstream ls(line);
      std::string kind, n;
      ls >> kind >> n;
      if (kind == "invoke") {
        std::string id, item, bidder;
        uint64_t amount = 0;
        ls >> id >> item >> bidder >> amount;
        bidder_of[n] = bidder;
        reqs[bidder] = Req{item, amount, "", 0, 0};
        ++f.requests;
        continue;
      }
      auto it = bidder_of.find(n);
      if (it == bidder_of.end()) continue;
      Req& r = reqs[it->second];
      r.outcome = kind;
      std::string a, b;
      int attempts = 0;
      if (kind == "ok") {
        uint64_t amount = 0;
        ls >> amount >> r.ok_seq >> attempts;
        if (amount != r.amount) problem("ok reply of " + it->second + " carries amount " + std::to_string(amount));
      } else {
        ls >> a >> attempts;
      }
      if (attempts > 1) ++f.retried;
    }
  }
  for (const auto& [bidder, r] : reqs) {
    if (r.outcome == "ok") ++f.ok;
    else if (r.outcome == "refused") ++f.refused;
    else if (r.outcome == "unknown") ++f.unknown;
    else ++f.unresolved;
  }

  Client client(ctx, endpoint, 2000, 3, "checker");
  for (const auto& item : items) {
    ++f.items;
    std::vector<Event> events;
    bool read_ok = true;
    uint64_t after = 0;
    for (int page = 0; page < 100000; ++page) {
      Request h;
      h.op = Op::history;
      h.item = item;
      h.after = after;
      h.limit = kMaxHistoryLimit;
      auto reply = client.call(h);
      if (!reply || !reply->ok) {
        read_ok = false;
        problem("history of " + item + " not readable: " + (reply ? reply->error.value_or("?") : "no reply"));
        break;
      }
      for (auto& e : reply->events) events.push_back(e);
      if (reply->events.size() < kMaxHistoryLimit) break;
      after = reply->events.back().seq;
    }
    Request g;
    g.op = Op::get;
    g.item = item;
    auto got = client.call(g);
    if (!got || !got->ok) {
      read_ok = false;
      problem("get of " + item + " not readable");
    }
    if (!read_ok) {
      ++f.read_failures;
      continue;
    }
    f.events += events.size();
    uint64_t last_amount = 0, bids = 0;
    for (std::size_t i = 0; i < events.size(); ++i) {
      const Event& e = events[i];
      if (e.seq != i + 1) {
        ++f.order;
        problem(item + ": event " + std::to_string(i) + " has seq " + std::to_string(e.seq));
      }
      if (e.kind != EventKind::max) continue;
      ++bids;
      ++f.stored_bids;
      const uint64_t amount = e.amount.value_or(0);
      if (amount <= last_amount) {
        ++f.order;
        problem(item + ": seq " + std::to_string(e.seq) + " amount " + std::to_string(amount) + " not above " +
                std::to_string(last_amount));
      }
      last_amount = amount;
      auto it = reqs.find(e.bidder.value_or(""));
      if (it == reqs.end() || it->second.item != item || it->second.amount != amount) {
        ++f.phantom;
        problem(item + ": seq " + std::to_string(e.seq) + " bid by " + e.bidder.value_or("?") + " of " +
                std::to_string(amount) + " matches no request");
        continue;
      }
      Req& r = it->second;
      if (++r.stored == 2) {
        ++f.duplicated;
        problem(item + ": request " + it->first + " stored twice (seq " + std::to_string(e.seq) + ")");
      }
      if (r.outcome == "ok" && r.ok_seq != e.seq) {
        ++f.lost;
        problem(item + ": " + it->first + " acknowledged with seq " + std::to_string(r.ok_seq) + " but stored at seq " +
                std::to_string(e.seq));
      }
    }
    // get equals the last event of history.
    const uint64_t last_seq = events.empty() ? 0 : events.back().seq;
    bool same = got->u64("seq") == last_seq && got->u64("bids") == bids;
    if (!events.empty() && events.back().kind == EventKind::max) {
      same = same && got->u64("max") == events.back().amount && got->str("bidder") == events.back().bidder;
    }
    if (!same) {
      ++f.get_mismatch;
      problem(item + ": get (seq " + std::to_string(got->u64("seq").value_or(0)) + ", bids " +
              std::to_string(got->u64("bids").value_or(0)) + ") differs from history (seq " + std::to_string(last_seq) +
              ", bids " + std::to_string(bids) + ")");
    }
  }
  for (const auto& [bidder, r] : reqs) {
    if (r.outcome == "ok" && r.stored == 0) {
      ++f.lost;
      problem("acknowledged bid " + bidder + " on " + r.item + " (amount " + std::to_string(r.amount) +
              ", seq " + std::to_string(r.ok_seq) + ") is not stored");
    } else if (r.outcome == "refused" && r.stored > 0) {
      ++f.refused_stored;
      problem("refused bid " + bidder + " on " + r.item + " is stored");
    } else if (r.outcome != "ok" && r.outcome != "refused") {
      if (r.stored > 0) ++f.unknown_stored;
      else ++f.unknown_not_stored;
    }
  }
  return f;
}

}  // namespace bidmesh::rel
