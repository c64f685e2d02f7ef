// Requests, replies and feed events of the wire contract (docs/protocol.md, v2), and their
// MessagePack encoding. Decoding never trusts its input: the size is checked before anything
// is unpacked, unpacking runs under limits on depth, array, map, string and bin sizes, the whole
// frame must be consumed, and every field is type- and range-checked.
// Thread-safe: pure functions; results are owned by the caller.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "protocol/errors.h"
#include "protocol/listing.h"

namespace bidmesh {

// `slots` (v1.2, direct clients) and `list` (v2) sit before `ping` so that ping stays the last
// op (counts of ops are sized by it).
enum class Op { open, bid, close, get, history, list, slots, ping };
// True for the ops whose request names an `item` (all but list, slots and ping).
inline bool op_names_item(Op op) { return op != Op::ping && op != Op::slots && op != Op::list; }

std::optional<Op> parse_op(std::string_view name);
std::string_view op_name(Op op);
// Writes are remembered by (item, id) for idempotent retries; reads are not.
bool op_is_write(Op op);

inline constexpr std::size_t kDefaultMaxRequestBytes = 4096;
inline constexpr std::size_t kTransportMaxBytes = 64 * 1024;  // ZMQ_MAXMSGSIZE on client sockets
inline constexpr std::size_t kMaxIdBytes = 64;
inline constexpr uint64_t kDefaultHistoryLimit = 100;
inline constexpr uint64_t kMaxHistoryLimit = 1000;
// v2 item details and soft close (docs/protocol.md, "Auctions (v2)").
inline constexpr std::size_t kMaxTitleBytes = 120;
inline constexpr std::size_t kMaxDescriptionBytes = 2000;
inline constexpr std::size_t kMaxImageUrlBytes = 512;
inline constexpr uint64_t kMaxExtendMs = 24ull * 3600 * 1000;

// The rules of the v2 text fields. Title: 1..120 bytes of UTF-8 without control characters.
// Description: up to 2000 bytes of UTF-8 without control characters but line feeds. Image URL:
// http:// or https:// (any case), a host, then printable ASCII without spaces, up to 512 bytes.
// Each returns why the value is refused, or nullopt when it is fine.
std::optional<std::string> check_title(std::string_view s);
std::optional<std::string> check_description(std::string_view s);
std::optional<std::string> check_image_url(std::string_view s);

// True for 1..64 bytes of [A-Za-z0-9_-] (items and bidders).
bool is_valid_identifier(std::string_view s);

// One request, with the defaults of the contract applied.
struct Request {
  Op op = Op::ping;
  std::string id;                      // 1..64 bytes, any content
  std::string item;                    // open, bid, close, get, history
  std::string bidder;                  // bid
  uint64_t amount = 0;                 // bid, >= 1
  uint64_t start = 1;                  // open, >= 1
  uint64_t increment = 1;              // open, >= 1
  std::optional<uint64_t> closes_at;   // open, unix ms, in the future when decoded
  uint64_t after = 0;                  // history
  uint64_t limit = kDefaultHistoryLimit;  // history, capped at kMaxHistoryLimit
  // v2 (absent in v1 requests; a v1 request carries none, so its path and record are v1's):
  std::optional<uint64_t> max;         // bid: the bidder's maximum, > amount (max == amount is
                                       // decoded as absent: the same write as a v1 bid)
  std::optional<uint64_t> reserve;     // open, >= 1, never shown
  uint64_t extend_ms = 0;              // open, soft close, 0 = off, at most kMaxExtendMs
  std::string title, description, image_url;  // open, empty = absent
  // list (v2): the status listed and where the page starts (a cursor from an earlier reply,
  // checked by decode_request; empty = from the first item). `limit` is the page size there:
  // 1..kMaxListLimit, kDefaultListLimit when absent.
  bool list_closed = false;
  std::string cursor;
  // Not on the wire: set by a bid node's client endpoint, which answers `list` from its own items
  // only, to the other bid nodes (the reply is then partial and names them in `missing`).
  std::vector<std::string> list_missing;

  // True when the request carries any v2 field (the log record and fingerprint grow only then).
  bool has_v2_fields() const {
    return max || reserve || extend_ms != 0 || !title.empty() || !description.empty() || !image_url.empty();
  }

  // The write's content once defaults are applied, as a canonical string: two requests with the
  // same (item, id) and different fingerprints are a `conflict`.
  std::string fingerprint() const;
};

// Why a frame was refused before it reached an item. `id` is the request's id where it could be
// read (never for too_large).
struct DecodeError {
  ErrorCode code = ErrorCode::bad_request;
  std::string message;
  std::optional<std::string> id;
};

// The refusal of a request of `bytes` over the limit (its id is never read).
DecodeError too_large_error(std::size_t bytes, std::size_t max_bytes);

// Full decode and validation of one request frame. `now_ms` judges `closes_at` (must be later).
std::variant<Request, DecodeError> decode_request(std::string_view frame, uint64_t now_ms,
                                                  std::size_t max_request_bytes = kDefaultMaxRequestBytes);

// What the router needs to route a frame: only `op`, `id` and `item` are read and checked
// (for ping and slots: no item). Other fields are left to the owner.
struct RouteInfo {
  Op op = Op::ping;
  std::string id;
  std::string item;
};
std::variant<RouteInfo, DecodeError> peek_route(std::string_view frame,
                                                std::size_t max_request_bytes = kDefaultMaxRequestBytes);

// What the router needs, as views into the frame (valid while the frame is). `item` is empty
// for ping and slots, as in RouteInfo.
struct RouteView {
  Op op = Op::ping;
  std::string_view id;
  std::string_view item;
};
// Fast path of peek_route: a hand-written MessagePack scan that allocates nothing. Returns the
// route when the frame is a well-formed request whose judgment up to the item is "ok"; returns
// nullopt for anything else (any error, and anything unusual it does not want to judge), and the
// caller then calls peek_route, which judges and words the error.
// Guarantee: whenever it returns a value, peek_route(frame, max_request_bytes) returns a
// RouteInfo with the same op, id and item (checked by the fuzz target, decoder_fuzz_one.h).
// Taken: a fixmap/map16/map32 root of at most 64 entries, string keys (fixstr, str8/16/32) and
// scalar values (nil, bool, any int, float32/64, any str, any bin). Not taken (nullopt): arrays,
// maps or ext as values, and every frame peek_route refuses.
std::optional<RouteView> scan_route(std::string_view frame, std::size_t max_request_bytes = kDefaultMaxRequestBytes);

// A reply field value: nil, bool, unsigned integer or string.
struct Nil {};
using Value = std::variant<Nil, bool, uint64_t, std::string>;
struct Field {
  std::string key;
  Value value;
};
inline Value opt_value(const std::optional<uint64_t>& v) { return v ? Value{*v} : Value{Nil{}}; }
inline Value opt_value(const std::optional<std::string>& v) { return v ? Value{*v} : Value{Nil{}}; }

// {ok: true, id, ...fields}
std::string encode_ok(std::string_view id, const std::vector<Field>& fields = {});
// {ok: false, id (or nil), error, message, ...extra}
std::string encode_error(const std::optional<std::string>& id, ErrorCode code, std::string_view message,
                         const std::vector<Field>& extra = {});
inline std::string encode_error(const DecodeError& e) { return encode_error(e.id, e.code, e.message); }
// {ok: true, id, item, events: [...]}: each element of `encoded_events` is one MessagePack map as
// made by encode_event, spliced in as it is (no re-encoding).
std::string encode_history_ok(std::string_view id, std::string_view item,
                              const std::vector<std::string_view>& encoded_events);

// A MessagePack map of the fields, in order (one entry of a list reply).
std::string encode_map(const std::vector<Field>& fields);

// {ok: true, id, items: [...], cursor, partial, missing}: each element of `encoded_entries` is
// one MessagePack map as made by encode_map, spliced in as it is. `cursor` nil: no next page.
std::string encode_list_ok(std::string_view id, const std::vector<std::string_view>& encoded_entries,
                           const std::optional<std::string>& cursor, bool partial,
                           const std::vector<std::string>& missing);

enum class EventKind { open, max, closed, extended };
std::string_view event_kind_name(EventKind kind);

// One item event, as on the feed and in `history`.
struct Event {
  EventKind kind = EventKind::open;
  std::string item;
  uint64_t seq = 0;
  uint64_t ts = 0;                      // unix ms
  std::optional<uint64_t> amount;       // max: the bid; closed: the winning amount or nil
  std::optional<std::string> bidder;    // max: the bidder; closed: the winner or nil
  std::optional<uint64_t> closes_at;    // extended: the new deadline (unix ms)
  std::optional<bool> reserve_met;      // closed, for an item opened with a reserve only
};

// The feed body: {event, item, seq, ts, (max: amount, bidder) | (closed: winner, amount
// [, reserve_met]) | (extended: closes_at)}.
std::string encode_event(const Event& e);
std::optional<Event> decode_event(std::string_view body);
// "item/<item>/": the trailing slash makes a per-item subscription exact.
std::string feed_topic(std::string_view item);
inline constexpr std::string_view kFeedTopicPrefix = "item/";

// v2 outbid notice, published on bidder_topic(old leader) when a bid takes the lead from it:
// {event: "outbid", item, seq, ts, amount}: seq and ts are those of the item's `max` event that
// moved the lead, amount the new visible price. Not stored: not in `history`.
std::string encode_outbid(std::string_view item, uint64_t seq, uint64_t ts, uint64_t amount);
// "bidder/<name>/".
std::string bidder_topic(std::string_view bidder);
inline constexpr std::string_view kBidderTopicPrefix = "bidder/";

// A decoded reply for clients and tests: the map's fields by key.
struct Reply {
  bool ok = false;
  std::optional<std::string> id;
  std::optional<std::string> error;    // code name, when !ok
  std::optional<std::string> message;
  std::vector<Field> fields;           // every top-level field but `events`, in wire order
  std::vector<Event> events;           // history only
  const Value* find(std::string_view key) const;
  std::optional<uint64_t> u64(std::string_view key) const;
  std::optional<std::string> str(std::string_view key) const;
};
std::optional<Reply> decode_reply(std::string_view frame);

// A decoded list reply (ok: true only). Each entry keeps its bytes (re-packed, for a router that
// merges pages), its order key, and its scalar fields by key.
struct ListEntry {
  ListKey key;
  std::string encoded;
  std::vector<Field> fields;
  const Value* find(std::string_view key) const;
};
struct ListPage {
  std::optional<std::string> id;
  std::vector<ListEntry> entries;
  std::optional<std::string> cursor;
  bool partial = false;
  std::vector<std::string> missing;
};
// nullopt unless the frame is {ok: true, ..., items: [maps with item, status, closes_at]}.
std::optional<ListPage> decode_list_ok(std::string_view frame);

// Any MessagePack frame (reply or event) as one line of JSON, for tools (limits applied).
std::string msgpack_to_json(std::string_view frame);

// Encode a request (for clients, tools and tests). Optional fields that are nil are left out.
std::string encode_request(const Request& r);

}  // namespace bidmesh
