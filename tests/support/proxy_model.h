// A reference model of the proxy bid rule for the tests (docs/protocol.md, "Proxy bids"),
// written from the rule's words and independent of nodes/auction_rules.cc, which keeps only the
// leader's max. Used at unit level (tests/unit/auction_v2_test.cc) and through real processes
// (tests/integration/auction_v2_test.cc).
// Thread-compatible: a plain value.
#pragma once

#include <algorithm>
#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>

namespace bidmesh::test {

// The proxy rule as docs/protocol.md words it, kept naively: every bidder's highest max and
// when it was reached, the leader by highest max (earlier wins a tie), the price from the
// second-highest max. Independent of auction_rules.cc's shortcut (only the leader's max kept).
class ProxyModel {
 public:
  ProxyModel(uint64_t start, uint64_t increment, std::optional<uint64_t> reserve)
      : start_(start), inc_(increment), reserve_(reserve) {}

  struct Outcome {
    bool accepted = false;
    bool leading = false;
  };
  Outcome bid(const std::string& bidder, uint64_t amount, std::optional<uint64_t> max) {
    if (!price_ ? amount < start_ : (amount < *price_ || amount - *price_ < inc_)) return {};
    ++clock_;
    Entry& e = bidders_[bidder];
    const uint64_t m = max.value_or(amount);
    if (m > e.max) {
      e.max = m;
      e.reached = clock_;
    }
    e.amount = std::max(e.amount, amount);
    const std::string& lead = leader();
    std::optional<uint64_t> second;
    for (const auto& [name, x] : bidders_)
      if (name != lead) second = std::max(second.value_or(0), x.max);
    const Entry& l = bidders_.at(lead);
    uint64_t price = std::max(start_, l.amount);
    if (second) price = std::max(price, std::min(sat_add(*second, inc_), l.max));
    if (reserve_ && l.max >= *reserve_) price = std::max(price, *reserve_);
    price_ = price;
    return {true, lead == bidder};
  }
  std::string leader() const {
    const std::pair<const std::string, Entry>* best = nullptr;
    for (const auto& kv : bidders_)
      if (!best || kv.second.max > best->second.max ||
          (kv.second.max == best->second.max && kv.second.reached < best->second.reached))
        best = &kv;
    return best ? best->first : std::string();
  }
  std::optional<uint64_t> price() const { return price_; }
  // Every max a bidder gave that is not the visible price: what no reply may show.
  std::set<uint64_t> secrets() const {
    std::set<uint64_t> out;
    for (const auto& [name, x] : bidders_)
      if (x.max != price_.value_or(0)) out.insert(x.max);
    return out;
  }

 private:
  struct Entry {
    uint64_t max = 0, amount = 0, reached = 0;
  };
  static uint64_t sat_add(uint64_t a, uint64_t b) { return a > UINT64_MAX - b ? UINT64_MAX : a + b; }
  uint64_t start_, inc_;
  std::optional<uint64_t> reserve_;
  std::optional<uint64_t> price_;
  std::map<std::string, Entry> bidders_;
  uint64_t clock_ = 0;
};

}  // namespace bidmesh::test
