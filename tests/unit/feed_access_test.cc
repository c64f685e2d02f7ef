// The feed's vetting rules and its upstream bookkeeping (nodes/feed_access.h).
#include <catch2/catch.hpp>

#include <algorithm>

#include "nodes/feed_access.h"

using namespace bidmesh;
using Prefixes = std::vector<std::string>;

TEST_CASE("feed access: each key is granted the topics it may see", "[feed][security]") {
  const Principal alice{"alice", kRoleReader | kRoleBidder};
  const Principal rita{"rita", kRoleReader};
  const Principal agent{"agent7", kRoleReader | kRoleAgent};
  // Item-only prefixes pass as asked, for anyone (and for a nameless feed_public key).
  for (const Principal* who : {&alice, &rita, &agent, static_cast<const Principal*>(nullptr)}) {
    CHECK(grant_feed_prefixes("item/", who) == Prefixes{"item/"});
    CHECK(grant_feed_prefixes("item/lamp-1/", who) == Prefixes{"item/lamp-1/"});
    CHECK(grant_feed_prefixes("i", who) == Prefixes{"i"});
  }
  // Her own topic, or within it, passes as asked.
  CHECK(grant_feed_prefixes("bidder/alice/", &alice) == Prefixes{"bidder/alice/"});
  // Wider prefixes are narrowed to item/ and her own topic.
  CHECK(grant_feed_prefixes("", &alice) == Prefixes{"item/", "bidder/alice/"});
  CHECK(grant_feed_prefixes("b", &alice) == Prefixes{"bidder/alice/"});
  CHECK(grant_feed_prefixes("bidder/", &alice) == Prefixes{"bidder/alice/"});
  CHECK(grant_feed_prefixes("bidder/al", &alice) == Prefixes{"bidder/alice/"});
  CHECK(grant_feed_prefixes("bidder/alice", &alice) == Prefixes{"bidder/alice/"});
  // Someone else's topic, or a prefix that leads only to others' topics, is refused.
  CHECK(grant_feed_prefixes("bidder/bob/", &alice).empty());
  CHECK(grant_feed_prefixes("bidder/alice2/", &alice).empty());
  CHECK(grant_feed_prefixes("bidder/b", &alice).empty());
  // A named reader has a topic of its own too (an agent may bid in its name); a nameless key none.
  CHECK(grant_feed_prefixes("", &rita) == Prefixes{"item/", "bidder/rita/"});
  CHECK(grant_feed_prefixes("", nullptr) == Prefixes{"item/"});
  CHECK(grant_feed_prefixes("bidder/", nullptr).empty());
  // An agent gets everything as asked.
  CHECK(grant_feed_prefixes("", &agent) == Prefixes{""});
  CHECK(grant_feed_prefixes("bidder/bob/", &agent) == Prefixes{"bidder/bob/"});
}

TEST_CASE("feed access: the ledger keeps upstream a superset of the grants, and empties when everyone left",
          "[feed][security]") {
  FeedSubscriptionLedger ledger(3);
  Prefixes up;
  const Prefixes alice{"item/", "bidder/alice/"};
  const Prefixes bob{"item/", "bidder/bob/"};

  SECTION("a known unsubscribe drops its own grant") {
    REQUIRE(ledger.add("", alice));
    REQUIRE(ledger.add("", bob));
    ledger.remove("", bob, up);
    CHECK(up == bob);
    up.clear();
    ledger.remove("", bob, up);  // a cancel of what it no longer has: ignored
    CHECK(up.empty());
    ledger.remove_unknown("", up);  // alice's connection closed: the last holder
    CHECK(up == alice);
    CHECK(ledger.requests() == 0);
  }
  SECTION("an unknown leaver among different grants is held back until it is unambiguous") {
    REQUIRE(ledger.add("", alice));
    REQUIRE(ledger.add("", bob));
    ledger.remove_unknown("", up);
    CHECK(up.empty());  // alice's or bob's: both stay upstream
    ledger.remove("", alice, up);  // alice unsubscribes: bob's is the one that left
    std::sort(up.begin(), up.end());
    Prefixes both{"bidder/alice/", "bidder/bob/", "item/", "item/"};
    CHECK(up == both);
    CHECK(ledger.requests() == 0);
  }
  SECTION("an unknown leaver among equal grants is settled at once") {
    REQUIRE(ledger.add("item/", {"item/"}));
    REQUIRE(ledger.add("item/", {"item/"}));
    ledger.remove_unknown("item/", up);
    CHECK(up == Prefixes{"item/"});
    CHECK(ledger.requests() == 1);
  }
  SECTION("refused subscriptions count as holders, with nothing upstream") {
    REQUIRE(ledger.add("bidder/bob/", {}));            // alice, refused
    REQUIRE(ledger.add("bidder/bob/", {"bidder/bob/"}));  // bob
    ledger.remove_unknown("bidder/bob/", up);
    CHECK(up.empty());
    ledger.remove_unknown("bidder/bob/", up);
    CHECK(up == Prefixes{"bidder/bob/"});
  }
  SECTION("bounded: a new request past the limit is refused, known ones still count") {
    REQUIRE(ledger.add("a", {"a"}));
    REQUIRE(ledger.add("b", {}));
    REQUIRE(ledger.add("c", {"c"}));
    CHECK_FALSE(ledger.add("d", {"d"}));
    CHECK(ledger.add("a", {"a"}));
    ledger.remove_unknown("d", up);  // never recorded
    CHECK(up.empty());
  }
}
