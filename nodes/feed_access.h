// Who may see which feed topics with security = "curve" (docs/security.md, "The feed"), and the
// bookkeeping the feed forwarder needs to keep its upstream subscriptions right.
//
// Topics are "item/<item>/" (every admitted subscriber) and "bidder/<name>/" (outbid notices:
// only the key named <name> and keys with the `agent` role). A subscription is a prefix, so one
// request may reach both kinds; grant_feed_prefixes narrows it to what the key may see.
//
// Thread-compatible: plain values; the forwarder's thread owns its ledger.
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "protocol/access.h"

namespace bidmesh {

inline constexpr std::string_view kItemTopicRoot = "item/";
inline constexpr std::string_view kBidderTopicRoot = "bidder/";

// The prefixes the feed subscribes a peer to when it asks for `requested`; empty = refused.
// `who` is the key's client (null: a nameless key, admitted by feed_public only).
// - a prefix that cannot match a `bidder/` topic, or any prefix of an `agent`: as asked;
// - a prefix within the key's own "bidder/<name>/": as asked;
// - otherwise the part it may see: "item/" if the prefix covers every item topic (""), and
//   "bidder/<name>/" if the prefix covers that (e.g. "", "b", "bidder/"); nothing else.
// Deterministic: the same request and key give the same grant (unsubscribes rely on it).
std::vector<std::string> grant_feed_prefixes(std::string_view requested, const Principal* who);

// Upstream bookkeeping of vetted subscriptions. Every subscription a peer makes is recorded with
// its grant, and the forwarder sends the grant to the bid nodes (the XSUB counts references).
// libzmq reports a closed connection's subscriptions as unsubscribes without a User-Id, so who
// left is then unknown: such a removal is held back until it is unambiguous (every holder of
// that request has the same grant, or every holder is gone). So the prefixes kept upstream are
// always a superset of what the connected peers were granted, and equal to it once the peers of
// an ambiguous request have all left.
// Bounded: at most max_requests distinct requested prefixes are tracked (add() refuses past it).
class FeedSubscriptionLedger {
 public:
  explicit FeedSubscriptionLedger(std::size_t max_requests) : max_requests_(max_requests) {}

  // A peer asked for `requested` and got `granted` (possibly empty: refused, still counted so
  // that its connection's unsubscribe balances). False when the ledger is full and `requested`
  // is new: nothing is recorded and the caller must refuse the subscription.
  bool add(std::string_view requested, const std::vector<std::string>& granted);

  // A peer whose grant is known (it unsubscribed, User-Id given) dropped `requested`. Appends
  // to `upstream` the prefixes to unsubscribe at the bid nodes (one entry per reference).
  // Ignored when no holder of `requested` has that grant (a cancel of what it never had).
  void remove(std::string_view requested, const std::vector<std::string>& granted, std::vector<std::string>& upstream);
  // A closed connection dropped `requested` (who is unknown); appends as remove() does.
  void remove_unknown(std::string_view requested, std::vector<std::string>& upstream);

  std::size_t requests() const { return by_request_.size(); }

 private:
  struct Holders {
    std::vector<std::pair<std::vector<std::string>, uint64_t>> grants;  // each grant, how many hold it
    uint64_t gone_unknown = 0;  // holders gone whose grant is not known
  };
  using Map = std::map<std::string, Holders, std::less<>>;
  // Applies the removals of unknown holders that have become unambiguous.
  void settle(Map::iterator at, std::vector<std::string>& upstream);

  const std::size_t max_requests_;
  Map by_request_;
};

}  // namespace bidmesh
