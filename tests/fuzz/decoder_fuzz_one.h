// One fuzz input through every decoder that reads bytes from outside the process: the request
// decoder and the router's peek (untrusted client frames), and the reply and event decoders
// (what clients and tools read). Shared by the libFuzzer target (decoder_fuzz.cc, clang with
// ASan/UBSan) and the corpus replay that runs in `tools/test` (replay_main.cc, the normal g++
// build), so both check the same things.
//
// Besides "does not crash", each input checks invariants that hold for any bytes; a broken one
// aborts (a crash for libFuzzer, a failed test for the replay):
// - peek_route and decode_request judge a frame the same way up to the item: same error code
//   and message, or same op, id and item;
// - the router's fast path agrees: when scan_route returns a route, peek_route returns one with
//   the same op, id and item (scan_route may give up on a valid frame, never accept another);
// - an error's id, when present, is 1..64 bytes, and too_large never carries one;
// - a decoded request encodes (encode_request) and decodes again to the same request
//   (fingerprint, id, after, limit), so what the router forwards means the same to the node;
// - a decoded reply or event can be turned into JSON (msgpack_to_json) without fault.
//
// Thread-safe: pure function.
#pragma once

#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string_view>
#include <variant>

#include "protocol/messages.h"

namespace bidmesh::fuzz {

// A fixed "now" keeps runs reproducible: closes_at is judged against it.
inline constexpr uint64_t kFuzzNowMs = 1'700'000'000'000ull;

inline void fuzz_check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "decoder invariant broken: %s\n", what);
    std::abort();
  }
}

inline void check_error(const DecodeError& e) {
  if (e.id) fuzz_check(!e.id->empty() && e.id->size() <= kMaxIdBytes, "error id is 1..64 bytes");
  if (e.code == ErrorCode::too_large) fuzz_check(!e.id, "too_large carries no id");
  fuzz_check(!e.message.empty(), "error has a message");
  fuzz_check(e.code == ErrorCode::bad_request || e.code == ErrorCode::too_large,
             "the decoder answers only bad_request or too_large");
}

// Runs `frame` through the decoders under one request size limit.
inline void fuzz_request_with_limit(std::string_view frame, std::size_t limit) {
  auto route = peek_route(frame, limit);
  if (const std::optional<RouteView> fast = scan_route(frame, limit)) {
    const auto* slow = std::get_if<RouteInfo>(&route);
    fuzz_check(slow != nullptr, "a frame scan_route routes is routed by peek_route");
    fuzz_check(slow->op == fast->op && slow->id == fast->id && slow->item == fast->item,
               "scan_route and peek_route read the same op, id and item");
  }
  auto full = decode_request(frame, kFuzzNowMs, limit);
  const auto* route_err = std::get_if<DecodeError>(&route);
  const auto* full_err = std::get_if<DecodeError>(&full);
  if (route_err) {
    check_error(*route_err);
    fuzz_check(full_err != nullptr, "a frame the router refuses is refused by the node");
    fuzz_check(full_err->code == route_err->code && full_err->message == route_err->message &&
                   full_err->id == route_err->id,
               "router and node give the same error for what the router reads");
    return;
  }
  const RouteInfo& info = std::get<RouteInfo>(route);
  fuzz_check(!info.id.empty() && info.id.size() <= kMaxIdBytes, "routed id is 1..64 bytes");
  fuzz_check(info.op == Op::ping || is_valid_identifier(info.item), "routed item is an identifier");
  if (full_err) {
    check_error(*full_err);
    fuzz_check(full_err->code == ErrorCode::bad_request, "a routable frame is refused only as bad_request");
    fuzz_check(full_err->id == std::optional<std::string>(info.id), "the node's error carries the routed id");
    return;
  }
  const Request& r = std::get<Request>(full);
  fuzz_check(r.op == info.op && r.id == info.id && r.item == info.item, "node reads what the router routed");
  fuzz_check(r.limit <= kMaxHistoryLimit, "history limit is capped");
  if (r.op == Op::bid) fuzz_check(r.amount >= 1 && is_valid_identifier(r.bidder), "bid fields are valid");
  if (r.op == Op::open) fuzz_check(r.start >= 1 && r.increment >= 1, "open fields are at least 1");
  if (r.closes_at) fuzz_check(*r.closes_at > kFuzzNowMs, "closes_at is in the future");

  // Round trip: the canonical encoding of a decoded request decodes to the same request.
  const std::string again = encode_request(r);
  auto redecoded = decode_request(again, kFuzzNowMs, kTransportMaxBytes);
  const auto* rr = std::get_if<Request>(&redecoded);
  fuzz_check(rr != nullptr, "a decoded request re-encodes to a valid request");
  fuzz_check(rr->fingerprint() == r.fingerprint() && rr->id == r.id && rr->after == r.after && rr->limit == r.limit,
             "a decoded request round-trips");
}

inline void fuzz_decoders(std::string_view frame) {
  fuzz_request_with_limit(frame, kDefaultMaxRequestBytes);  // the configured limit (default)
  // The largest a client can send (a larger max_request_bytes); below the default limit both
  // calls would judge the frame the same way.
  if (frame.size() > kDefaultMaxRequestBytes) fuzz_request_with_limit(frame, kTransportMaxBytes);

  if (auto reply = decode_reply(frame)) {
    for (const Event& e : reply->events) (void)encode_event(e);
    (void)reply->u64("seq");
    (void)reply->str("item");
  }
  if (auto event = decode_event(frame)) {
    // What was read can be written back, and reads back to the same kind and seq.
    auto back = decode_event(encode_event(*event));
    fuzz_check(back && back->kind == event->kind && back->seq == event->seq && back->item == event->item,
               "an event round-trips");
  }
  (void)msgpack_to_json(frame);
}

}  // namespace bidmesh::fuzz
