// outside_client: places a bid and watches it on the feed, built against the INSTALLED bidmesh
// (find_package, or pkg-config). It includes every installed header, so a header that needs one
// that was not installed fails the build.
//
//   outside_client REQUEST_ENDPOINT FEED_ENDPOINT ITEM     exit 0: the bid was accepted and its
//                                                          event came on the feed; 1 otherwise
// Every wait has a deadline (kDeadline overall): the mesh may still be starting, so a request
// answered `unavailable` is tried again until then; the feed's subscription may not be live
// when the first bid is published (slow joiner), so a new, higher bid is placed every 500 ms
// until the watcher hands out the event of one of them.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <optional>
#include <string>
#include <thread>

#include <zmq.hpp>

#include "client/client.h"
#include "client/curve_keys.h"
#include "client/direct_client.h"
#include "client/feed_watcher.h"
#include "client/slot_table.h"
#include "protocol/errors.h"
#include "protocol/messages.h"

namespace {

using clock_type = std::chrono::steady_clock;
constexpr auto kDeadline = std::chrono::seconds(30);

// The reply to `request`, tried again (a fresh id each time) while the mesh answers nothing or
// `unavailable`, until `deadline`.
std::optional<bidmesh::Reply> call_until(bidmesh::Client& client, const bidmesh::Request& request,
                                         clock_type::time_point deadline) {
  for (;;) {
    auto reply = client.call(request);
    if (reply && (reply->ok || reply->error != bidmesh::error_code_name(bidmesh::ErrorCode::unavailable))) return reply;
    // `unavailable` is answered at once (the owner is not connected yet): pace the next try.
    if (reply) std::this_thread::sleep_for(std::chrono::milliseconds(50));
    if (clock_type::now() >= deadline) return reply;
  }
}

std::string describe(const std::optional<bidmesh::Reply>& reply) {
  if (!reply) return "no reply";
  return reply->error.value_or("?") + ": " + reply->message.value_or("");
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: outside_client REQUEST_ENDPOINT FEED_ENDPOINT ITEM\n");
    return 100;
  }
  const std::string request_endpoint = argv[1], feed_endpoint = argv[2], item = argv[3];
  const auto deadline = clock_type::now() + kDeadline;

  zmq::context_t ctx;
  bidmesh::FeedWatcherOptions options;
  options.items = {item};
  options.request_endpoint = request_endpoint;  // gaps are repaired from history
  bidmesh::FeedWatcher watcher(ctx, feed_endpoint, std::move(options));
  std::optional<bidmesh::CurveKeys> curve;  // none: a mesh on loopback may run without CURVE
  bidmesh::Client client(ctx, request_endpoint, 500, 2, {}, curve);

  bidmesh::Request open;
  open.op = bidmesh::Op::open;
  open.item = item;
  open.start = 100;
  open.increment = 10;
  auto opened = call_until(client, open, deadline);
  if (!opened || !opened->ok) {
    std::fprintf(stderr, "outside_client: open %s: %s\n", item.c_str(),
                 describe(opened).c_str());
    return 1;
  }
  std::printf("opened: item %s\n", item.c_str());

  uint64_t amount = 150;
  while (clock_type::now() < deadline) {
    bidmesh::Request bid;
    bid.op = bidmesh::Op::bid;
    bid.item = item;
    bid.bidder = "outside";
    bid.amount = amount;
    auto reply = call_until(client, bid, deadline);
    if (!reply || !reply->ok) {
      std::fprintf(stderr, "outside_client: bid %llu: %s\n", static_cast<unsigned long long>(amount),
                   describe(reply).c_str());
      return 1;
    }
    std::printf("accepted: item %s bid %llu by outside\n", item.c_str(), static_cast<unsigned long long>(amount));
    const auto watch_until = std::min(deadline, clock_type::now() + std::chrono::milliseconds(500));
    while (clock_type::now() < watch_until) {
      const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(watch_until - clock_type::now());
      auto event = watcher.next(left);
      if (!event) continue;
      std::printf("feed: %s%s\n", bidmesh::format_event(*event).c_str(), watcher.last_repaired() ? " (repaired)" : "");
      if (event->item == item && event->kind == bidmesh::EventKind::max && event->bidder == "outside") {
        std::printf("ok: the bid's event came on the feed\n");
        return 0;
      }
    }
    amount += 10;
  }
  std::fprintf(stderr, "outside_client: no event of item %s on the feed within %lld s\n", item.c_str(),
               static_cast<long long>(kDeadline.count()));
  return 1;
}
