// Request builders for the tests. An empty id is filled in by Client::call with a fresh one.
// Thread-safe: pure functions.
#pragma once

#include <cstdint>
#include <string>

#include "protocol/messages.h"

namespace bidmesh::test {

inline Request make_request(Op op, const std::string& item, const std::string& id = "") {
  Request r;
  r.op = op;
  r.item = item;
  r.id = id;
  return r;
}

inline Request make_bid(const std::string& item, const std::string& bidder, uint64_t amount,
                        const std::string& id = "") {
  Request r = make_request(Op::bid, item, id);
  r.bidder = bidder;
  r.amount = amount;
  return r;
}

}  // namespace bidmesh::test
