#include "nodes/feed_access.h"

#include <algorithm>

namespace bidmesh {

namespace {
// True when a topic starting with `root` can match `prefix`: the prefix leads into root or
// continues past it.
bool reaches(std::string_view prefix, std::string_view root) {
  return root.starts_with(prefix) || prefix.starts_with(root);
}
}  // namespace

std::vector<std::string> grant_feed_prefixes(std::string_view requested, const Principal* who) {
  const bool agent = who != nullptr && (who->roles & kRoleAgent) != 0;
  if (agent || !reaches(requested, kBidderTopicRoot)) return {std::string(requested)};
  std::string own;
  if (who != nullptr && !who->name.empty()) own = std::string(kBidderTopicRoot) + who->name + "/";
  if (!own.empty() && requested.starts_with(own)) return {std::string(requested)};
  std::vector<std::string> granted;
  if (std::string_view(kItemTopicRoot).starts_with(requested)) granted.emplace_back(kItemTopicRoot);
  if (!own.empty() && std::string_view(own).starts_with(requested)) granted.push_back(std::move(own));
  return granted;
}

bool FeedSubscriptionLedger::add(std::string_view requested, const std::vector<std::string>& granted) {
  auto at = by_request_.find(requested);
  if (at == by_request_.end()) {
    if (by_request_.size() >= max_requests_) return false;
    at = by_request_.emplace(std::string(requested), Holders{}).first;
  }
  auto& grants = at->second.grants;
  auto same = std::find_if(grants.begin(), grants.end(), [&](const auto& g) { return g.first == granted; });
  if (same == grants.end()) {
    grants.emplace_back(granted, 1);
  } else {
    ++same->second;
  }
  return true;
}

void FeedSubscriptionLedger::remove(std::string_view requested, const std::vector<std::string>& granted,
                                    std::vector<std::string>& upstream) {
  auto at = by_request_.find(requested);
  if (at == by_request_.end()) return;  // never recorded (refused when the ledger was full)
  auto& grants = at->second.grants;
  auto same = std::find_if(grants.begin(), grants.end(), [&](const auto& g) { return g.first == granted; });
  if (same == grants.end()) {
    // Nobody holds this grant: the peer asked to drop what it never had (or a reload changed its
    // roles since it subscribed). Ignored: a reference too many upstream only costs traffic,
    // one too few would starve the peers that hold it.
    return;
  } else {
    upstream.insert(upstream.end(), same->first.begin(), same->first.end());
    if (--same->second == 0) grants.erase(same);
  }
  settle(at, upstream);
}

void FeedSubscriptionLedger::remove_unknown(std::string_view requested, std::vector<std::string>& upstream) {
  auto at = by_request_.find(requested);
  if (at == by_request_.end()) return;
  ++at->second.gone_unknown;
  settle(at, upstream);
}

void FeedSubscriptionLedger::settle(Map::iterator at, std::vector<std::string>& upstream) {
  Holders& h = at->second;
  uint64_t holders = 0;
  for (const auto& g : h.grants) holders += g.second;
  if (h.gone_unknown >= holders) {
    // Everyone who asked for this is gone: drop every reference it still holds.
    for (const auto& [grant, count] : h.grants)
      for (uint64_t i = 0; i < count; ++i) upstream.insert(upstream.end(), grant.begin(), grant.end());
    by_request_.erase(at);
    return;
  }
  if (h.gone_unknown > 0 && h.grants.size() == 1) {
    // One grant among the holders: whoever left held it.
    auto& [grant, count] = h.grants.front();
    for (uint64_t i = 0; i < h.gone_unknown; ++i) upstream.insert(upstream.end(), grant.begin(), grant.end());
    count -= h.gone_unknown;
    h.gone_unknown = 0;
  }
}

}  // namespace bidmesh
