// The web gateway's server (server.h): static files, /api/*, sign-in sessions, WebSocket watch.
#include "gateway/server.h"

#include <algorithm>
#include <deque>
#include <fstream>
#include <set>
#include <unordered_map>
#include <unordered_set>

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <boost/beast/websocket.hpp>
#include <msgpack.hpp>
#include <sodium.h>

#include "gateway/json_input.h"
#include "protocol/log.h"

namespace bidmesh::gateway {

namespace beast = boost::beast;
namespace http = beast::http;
namespace websocket = beast::websocket;
namespace net = boost::asio;
using tcp = net::ip::tcp;
using Clock = std::chrono::steady_clock;

namespace {

constexpr std::size_t kHeaderLimit = 8 * 1024;
constexpr std::size_t kBodyLimit = 4 * 1024;
constexpr std::size_t kWsMessageMax = 4 * 1024;
constexpr std::size_t kMaxSessions = 100000;
constexpr std::size_t kMaxWatchedItems = 1000;   // per WebSocket
constexpr int kAbuseLimit = 5;                    // bad messages before close 1008
constexpr int kSigninsPerWindow = 10;
constexpr std::chrono::seconds kSigninWindow{60};
constexpr std::size_t kMaxRateEntries = 10000;
constexpr std::chrono::hours kSessionIdle{24};
constexpr uint64_t kHistoryPage = 1000;
constexpr uint64_t kItemHistoryShown = 200;
constexpr int kMaxCatchUpRounds = 20;
constexpr const char* kCookieName = "bidmesh_session";
constexpr const char* kCsp =
    "default-src 'self'; connect-src 'self'; img-src 'self' http: https:; style-src 'self'; script-src 'self'; "
    "frame-ancestors 'none'";

std::string content_type_of(const std::filesystem::path& p) {
  const std::string ext = p.extension().string();
  if (ext == ".html") return "text/html; charset=utf-8";
  if (ext == ".js") return "text/javascript; charset=utf-8";
  if (ext == ".css") return "text/css; charset=utf-8";
  if (ext == ".json") return "application/json";
  if (ext == ".svg") return "image/svg+xml";
  if (ext == ".png") return "image/png";
  if (ext == ".jpg" || ext == ".jpeg") return "image/jpeg";
  if (ext == ".ico") return "image/x-icon";
  if (ext == ".txt") return "text/plain; charset=utf-8";
  if (ext == ".webmanifest") return "application/manifest+json";
  return "application/octet-stream";
}

std::string error_json(std::string_view code, std::string_view message) {
  Json v = Json::object();
  v["error"] = std::string(code);
  v["message"] = std::string(message);
  return dump_json(v);
}

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

// Percent-decoding of a query value ('+' is a space); nullopt for a broken escape.
std::optional<std::string> url_decode(std::string_view s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '+') {
      out += ' ';
    } else if (s[i] == '%') {
      if (i + 2 >= s.size()) return std::nullopt;
      const int hi = hex_digit(s[i + 1]), lo = hex_digit(s[i + 2]);
      if (hi < 0 || lo < 0) return std::nullopt;
      out += static_cast<char>(hi * 16 + lo);
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

std::map<std::string, std::string> parse_query(std::string_view q) {
  std::map<std::string, std::string> out;
  while (!q.empty() && out.size() < 16) {
    const auto amp = q.find('&');
    const std::string_view part = q.substr(0, amp);
    q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
    const auto eq = part.find('=');
    auto key = url_decode(part.substr(0, eq));
    auto value = url_decode(eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1));
    if (key && value) out.emplace(std::move(*key), std::move(*value));
  }
  return out;
}

std::optional<std::string> cookie_value(std::string_view header, std::string_view name) {
  while (!header.empty()) {
    const auto semi = header.find(';');
    std::string_view part = header.substr(0, semi);
    header = semi == std::string_view::npos ? std::string_view{} : header.substr(semi + 1);
    while (!part.empty() && part.front() == ' ') part.remove_prefix(1);
    if (part.size() > name.size() && part.substr(0, name.size()) == name && part[name.size()] == '=')
      return std::string(part.substr(name.size() + 1));
  }
  return std::nullopt;
}

std::string_view sv(beast::string_view s) { return {s.data(), s.size()}; }

bool same_secret(std::string_view a, std::string_view b) {
  return a.size() == b.size() && !a.empty() && sodium_memcmp(a.data(), b.data(), a.size()) == 0;
}

// A mesh reply frame as JSON (msgpack_to_json applies the reply limits), parsed for reshaping.
std::optional<Json> reply_json(const std::string& raw) {
  std::string why;
  return parse_untrusted_json(msgpack_to_json(raw), why, 1 << 24, 16);
}

std::string frame_of(const std::vector<std::pair<std::string, Json>>& fields) {
  msgpack::sbuffer buf(128);
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(static_cast<uint32_t>(fields.size()));
  for (const auto& [k, v] : fields) {
    pk.pack(k);
    if (const auto* s = as_string(&v)) pk.pack(*s);
    else if (auto u = as_u64(&v)) pk.pack(*u);
    else pk.pack_nil();
  }
  return std::string(buf.data(), buf.size());
}

}  // namespace

std::string event_message(const Event& e) {
  std::string out = "{\"type\":\"event\",\"item\":";
  out += dump_json(Json(e.item));
  out += ",\"seq\":" + std::to_string(e.seq) + ",\"event\":\"" + std::string(event_kind_name(e.kind)) +
         "\",\"ts\":" + std::to_string(e.ts);
  auto opt_u = [&](const char* k, const std::optional<uint64_t>& v) {
    out += std::string(",\"") + k + "\":" + (v ? std::to_string(*v) : "null");
  };
  auto opt_s = [&](const char* k, const std::optional<std::string>& v) {
    out += std::string(",\"") + k + "\":";
    if (v) out += dump_json(Json(*v));
    else out += "null";
  };
  switch (e.kind) {
    case EventKind::max:
      opt_u("amount", e.amount);
      opt_s("bidder", e.bidder);
      break;
    case EventKind::closed:
      opt_s("winner", e.bidder);
      opt_u("amount", e.amount);
      if (e.reserve_met) out += std::string(",\"reserve_met\":") + (*e.reserve_met ? "true" : "false");
      break;
    case EventKind::extended:
      opt_u("closes_at", e.closes_at);
      break;
    case EventKind::open:
      if (e.closes_at) opt_u("closes_at", e.closes_at);
      break;
  }
  out += '}';
  return out;
}

class WsSession;

// A piece of a socket's send queue, shared by every socket that sends it: one event's JSON
// (made once per event and kept in its item's ring), the events of one flush tick joined with
// commas (shared by every socket watching everything), or a message of its own (an error, a
// resync) that never joins a batch.
struct Chunk {
  std::string text;
  std::size_t events = 0;                   // 0: a message of its own
  std::vector<Clock::time_point> received;  // live events: when the feed thread read each
};
using ChunkPtr = std::shared_ptr<const Chunk>;

ChunkPtr message_chunk(std::string text) { return std::make_shared<const Chunk>(Chunk{std::move(text), 0, {}}); }

struct StoredEvent {
  uint64_t seq = 0;
  ChunkPtr chunk;  // one event, with the time the feed thread read it
};

struct AuthSession {
  std::string name;
  std::string csrf;
  Clock::time_point last_used;
};

struct Gateway::Impl : std::enable_shared_from_this<Gateway::Impl> {
  Impl(net::io_context& io_, GatewaySettings s, UserFile u, MeshWorker& m, GatewayMetrics& g)
      : io(io_), settings(std::move(s)), users(std::move(u)), mesh(m), metrics(g), acceptor(io_), flush_timer(io_) {}

  net::io_context& io;
  const GatewaySettings settings;
  UserFile users;
  MeshWorker& mesh;
  GatewayMetrics& metrics;
  tcp::acceptor acceptor;
  bool stopped = false;
  uint32_t open_connections = 0;
  std::map<std::string, std::pair<std::string, std::string>> files;  // "/name" -> (content type, bytes)
  std::unordered_map<std::string, AuthSession> sessions;
  std::unordered_map<std::string, std::pair<Clock::time_point, int>> signin_attempts;
  // Event rings: the last events of each item, and the global insertion order for the total cap.
  std::unordered_map<std::string, std::deque<StoredEvent>> rings;
  std::deque<std::pair<std::string, uint64_t>> ring_order;
  // Watchers, by item and of everything.
  std::unordered_map<std::string, std::unordered_set<WsSession*>> item_watchers;
  std::unordered_set<WsSession*> all_watchers;
  std::unordered_set<std::shared_ptr<WsSession>> ws_sessions;
  uint64_t id_counter = 0;
  std::string id_prefix = "gw-" + random_token(6) + "-";

  void accept();
  bool origin_allowed(std::string_view origin) const {
    return std::find(settings.allowed_origins.begin(), settings.allowed_origins.end(), origin) !=
           settings.allowed_origins.end();
  }
  std::string next_id() { return id_prefix + std::to_string(++id_counter); }
  const std::deque<StoredEvent>* ring(const std::string& item) const {
    auto it = rings.find(item);
    return it == rings.end() ? nullptr : &it->second;
  }
  AuthSession* session_of(const http::request<http::string_body>& req) {
    auto value = cookie_value(sv(req[http::field::cookie]), kCookieName);
    if (!value) return nullptr;
    auto it = sessions.find(*value);
    if (it == sessions.end()) return nullptr;
    if (Clock::now() - it->second.last_used > kSessionIdle) {
      sessions.erase(it);
      return nullptr;
    }
    it->second.last_used = Clock::now();
    return &it->second;
  }
  // True when `address` may try to sign in now (and counts the try).
  bool signin_allowed(const std::string& address) {
    const auto now = Clock::now();
    if (signin_attempts.size() >= kMaxRateEntries)
      std::erase_if(signin_attempts, [&](const auto& kv) { return now - kv.second.first > kSigninWindow; });
    if (signin_attempts.size() >= kMaxRateEntries) return false;  // a flood from many addresses
    auto& [start, count] = signin_attempts[address];
    if (now - start > kSigninWindow) {
      start = now;
      count = 0;
    }
    return ++count <= kSigninsPerWindow;
  }
  std::string new_session(const std::string& name, std::string& csrf) {
    if (sessions.size() >= kMaxSessions) {
      auto oldest = sessions.begin();
      for (auto it = sessions.begin(); it != sessions.end(); ++it)
        if (it->second.last_used < oldest->second.last_used) oldest = it;
      sessions.erase(oldest);
    }
    std::string token = random_token(32);
    csrf = random_token(32);
    sessions[token] = AuthSession{name, csrf, Clock::now()};
    return token;
  }
  void unwatch_all(WsSession* s) {
    all_watchers.erase(s);
    for (auto it = item_watchers.begin(); it != item_watchers.end();) {
      it->second.erase(s);
      it = it->second.empty() ? item_watchers.erase(it) : std::next(it);
    }
  }
  void publish(const Event& e, Clock::time_point received);

  // The flush tick (settings.ws_write_interval): live events wait for it, so each socket makes
  // at most one write per tick while events keep coming. An event arriving when no tick is armed
  // (the gateway was idle for an interval) flushes at once, after the handlers already queued.
  // Events of the tick for the sockets watching everything; they become one shared Chunk.
  std::vector<ChunkPtr> pending_all;
  uint64_t tick = 0;  // flushes so far: a socket that starts watching everything mid-tick notes it
  // Sockets watching some items, with events queued since the last flush.
  std::vector<std::weak_ptr<WsSession>> dirty;
  net::steady_timer flush_timer;
  bool flush_armed = false;
  bool flush_posted = false;
  void schedule_flush();
  void flush();
};

// One WebSocket client (server.h): watches, a bounded send queue, catch-up from the rings and
// history. Lives on the io_context thread; kept alive by Impl::ws_sessions until it closes.
class WsSession : public std::enable_shared_from_this<WsSession> {
 public:
  WsSession(std::shared_ptr<Gateway::Impl> gw, tcp::socket&& socket) : gw_(std::move(gw)), ws_(std::move(socket)) {}

  void start(http::request<http::string_body> req) {
    gw_->metrics.ws_connections.Increment();
    ++gw_->open_connections;
    auto timeouts = websocket::stream_base::timeout::suggested(beast::role_type::server);
    timeouts.idle_timeout = gw_->settings.ws_idle;  // a ping at half of it; no answer by the end: closed
    ws_.set_option(timeouts);
    ws_.read_message_max(kWsMessageMax);
    ws_.text(true);
    ws_.auto_fragment(false);  // a batch goes as one frame: one write, not one per 4 KiB
    ws_.async_accept(req, beast::bind_front_handler(&WsSession::on_accept, shared_from_this()));
  }

  // A live event (already in its ring) for an item this session watches (not watching all).
  void on_event(const std::string& item, uint64_t seq, const ChunkPtr& chunk) {
    if (closed_ || watch_all_) return;  // watching all: the tick's shared chunk brings it
    auto it = watches_.find(item);
    if (it == watches_.end()) return;
    Watch& w = it->second;
    if (w.catching_up) return;  // the catch-up's last step sends it from the ring
    if (w.last_sent && seq <= *w.last_sent) return;
    if (w.last_sent && seq > *w.last_sent + 1) {
      catch_up(item);
      return;
    }
    w.last_sent = seq;
    enqueue(chunk);
  }

  // The flush tick: the tick's events for a socket watching everything (the shared chunk, or
  // the part of it after this socket's watch began), then one write of what is queued.
  void on_tick(uint64_t tick, const ChunkPtr& shared, const std::vector<ChunkPtr>& events) {
    if (closed_) return;
    if (watch_all_) {
      if (all_since_tick_ != tick || all_since_index_ == 0) {
        enqueue(shared, true);
      } else if (all_since_index_ < events.size()) {
        auto own = std::make_shared<Chunk>();
        for (std::size_t i = all_since_index_; i < events.size(); ++i) append_to(*own, *events[i]);
        enqueue(std::move(own), true);
      }
    }
    flush_writes();
  }

  // Writes what is queued unless a write is in flight (its completion writes the rest).
  void flush_writes() {
    if (!writing_ && !queue_.empty() && !closed_) start_write();
  }

  // Joins `event` (one event or a tick's events) to `into`'s comma-separated events.
  static void append_to(Chunk& into, const Chunk& event) {
    if (into.events > 0) into.text += ',';
    into.text += event.text;
    into.events += event.events;
    into.received.insert(into.received.end(), event.received.begin(), event.received.end());
  }

  friend struct Gateway::Impl;

  void close_now() {
    if (closed_) return;
    beast::error_code ec;
    beast::get_lowest_layer(ws_).socket().close(ec);
  }

 private:
  struct Watch {
    std::optional<uint64_t> last_sent;
    bool catching_up = false;
    int rounds = 0;
  };

  void on_accept(beast::error_code ec) {
    if (ec) return finish();
    do_read();
  }

  void do_read() {
    ws_.async_read(buffer_, beast::bind_front_handler(&WsSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec) return finish();  // closed, timed out, or a frame over the cap (Beast closes with 1009)
    const bool text = ws_.got_text();
    const std::string message = beast::buffers_to_string(buffer_.data());
    buffer_.consume(buffer_.size());
    if (!text) {
      refuse("binary frames are not understood: send JSON text");
    } else {
      handle(message);
    }
    if (abuse_ >= kAbuseLimit) {
      ws_.async_close(websocket::close_reason(websocket::close_code::policy_error, "too many bad messages"),
                      [self = shared_from_this()](beast::error_code) { self->finish(); });
      return;
    }
    do_read();
  }

  void refuse(const std::string& why) {
    ++abuse_;
    Json v = Json::object();
    v["type"] = "error";
    v["message"] = why;
    enqueue(message_chunk(dump_json(v)));
  }

  void handle(const std::string& text) {
    std::string why;
    auto msg = parse_untrusted_json(text, why, kWsMessageMax, 4);
    if (!msg || !msg->is_object()) return refuse("not a JSON object: " + (msg ? std::string("wrong type") : why));
    const Json* type = member(*msg, "type");
    const std::string* t = type ? as_string(type) : nullptr;
    if (t == nullptr) return refuse("a message needs \"type\": \"watch\" or \"unwatch\"");
    if (*t == "watch") return watch(*msg);
    if (*t == "unwatch") return unwatch(*msg);
    refuse("unknown type \"" + *t + "\"");
  }

  void watch(const Json& msg) {
    if (is_true(member(msg, "all"))) {
      if (!watch_all_) {  // the events of this tick from here on
        all_since_tick_ = gw_->tick;
        all_since_index_ = gw_->pending_all.size();
      }
      watch_all_ = true;
      gw_->all_watchers.insert(this);
      return;
    }
    const Json* items = member(msg, "items");
    const Json* after = member(msg, "after");
    if (items == nullptr || !items->is_array())
      return refuse("watch needs \"items\": [names] or \"all\": true");
    if (after && !after->is_null() && !after->is_object())
      return refuse("\"after\" must be an object {item: seq}");
    std::vector<std::pair<std::string, std::optional<uint64_t>>> wanted;
    for (const Json& v : *items) {
      const std::string* item = as_string(&v);
      if (item == nullptr || !is_valid_identifier(*item))
        return refuse("each item is 1..64 bytes of [A-Za-z0-9_-]");
      std::optional<uint64_t> from;
      if (after && after->is_object()) {
        if (const Json* a = member(*after, *item)) {
          if (!as_u64(a)) return refuse("\"after\" values are seqs (integers >= 0)");
          from = *as_u64(a);
        }
      }
      wanted.emplace_back(*item, from);
    }
    for (auto& [item, from] : wanted) {
      if (!watches_.count(item) && watches_.size() >= kMaxWatchedItems)
        return refuse("at most " + std::to_string(kMaxWatchedItems) + " items per connection");
      Watch& w = watches_[item];
      gw_->item_watchers[item].insert(this);
      if (from) {
        w.last_sent = *from;
        w.rounds = 0;
        if (!w.catching_up) catch_up(item);
      }
    }
  }

  void unwatch(const Json& msg) {
    const Json* items = member(msg, "items");
    if (items == nullptr || !items->is_array()) return refuse("unwatch needs \"items\": [names]");
    for (const Json& v : *items) {
      const std::string* item = as_string(&v);
      if (item == nullptr) continue;
      watches_.erase(*item);
      if (auto it = gw_->item_watchers.find(*item); it != gw_->item_watchers.end()) {
        it->second.erase(this);
        if (it->second.empty()) gw_->item_watchers.erase(it);
      }
    }
  }

  // Sends what `item` has after its last_sent: from the ring when the ring reaches back that far,
  // else from history (page by page), then from the ring again.
  void catch_up(const std::string& item) {
    auto it = watches_.find(item);
    if (it == watches_.end() || closed_) return;
    Watch& w = it->second;
    const uint64_t after = w.last_sent.value_or(0);
    const auto* ring = gw_->ring(item);
    if (ring && !ring->empty() && ring->front().seq <= after + 1) {
      send_from_ring(item, w);
      return;
    }
    if (++w.rounds > kMaxCatchUpRounds) return resync("history");
    w.catching_up = true;
    Request r;
    r.op = Op::history;
    r.id = gw_->next_id();
    r.item = item;
    r.after = after;
    r.limit = kHistoryPage;
    std::weak_ptr<WsSession> weak = weak_from_this();
    const bool queued = gw_->mesh.submit(encode_request(r), [weak, item](std::optional<std::string> raw) {
      if (auto self = weak.lock()) self->on_history(item, raw);
    });
    if (!queued) resync("busy");
  }

  void on_history(const std::string& item, const std::optional<std::string>& raw) {
    auto it = watches_.find(item);
    if (it == watches_.end() || closed_) return;
    Watch& w = it->second;
    std::optional<Reply> reply = raw ? decode_reply(*raw) : std::nullopt;
    if (!reply) return resync("unavailable");
    if (!reply->ok) {
      w.catching_up = false;  // unknown_item: nothing to send; its first event comes live
      if (reply->error && *reply->error != "unknown_item") resync("unavailable");
      return;
    }
    for (const Event& e : reply->events) {
      if (e.seq != w.last_sent.value_or(0) + 1) continue;
      w.last_sent = e.seq;
      enqueue(std::make_shared<const Chunk>(Chunk{event_message(e), 1, {}}));
      if (closed_ || watches_.find(item) == watches_.end()) return;  // a resync dropped the watch
    }
    if (reply->events.size() >= kHistoryPage) return catch_up(item);  // more pages
    // History is read up to its end as of the reply: the ring has what came since.
    const auto* ring = gw_->ring(item);
    if (ring && !ring->empty() && ring->back().seq > w.last_sent.value_or(0) &&
        ring->front().seq > w.last_sent.value_or(0) + 1)
      return catch_up(item);  // more came than the ring holds: another page
    send_from_ring(item, w);
  }

  // The ring's events after w.last_sent, in order; the watch is live again.
  void send_from_ring(const std::string& item, Watch& w) {
    w.catching_up = false;
    const auto* ring = gw_->ring(item);
    if (ring == nullptr) return;
    for (const StoredEvent& e : *ring) {
      if (e.seq != w.last_sent.value_or(0) + 1) continue;
      w.last_sent = e.seq;
      enqueue(e.chunk);
      if (closed_ || watches_.find(item) == watches_.end()) return;  // a resync dropped the watch
    }
  }

  // The queue overflowed (or a catch-up cannot finish): drop it, tell the client, forget its
  // watches; it re-sends watch with `after` and misses nothing. A write in flight completes.
  void resync(const char* reason) {
    gw_->metrics.resyncs.Increment();
    queue_.clear();
    queued_events_ = 0;
    queued_bytes_ = 0;
    gw_->unwatch_all(this);
    watches_.clear();
    watch_all_ = false;
    auto msg = message_chunk(std::string("{\"type\":\"resync\",\"reason\":\"") + reason + "\"}");
    queued_bytes_ += msg->text.size();
    queue_.push_back(std::move(msg));
    flush_writes();
  }

  // The bound counts events (and bytes) waiting for a write, not the messages they will become;
  // what comes to an idle socket goes out at the next flush whatever its size.
  // `at_flush`: the flush itself queues it and writes next, so it needs no other flush.
  void enqueue(ChunkPtr chunk, bool at_flush = false) {
    if (closed_) return;
    const std::size_t count = std::max<std::size_t>(chunk->events, 1);
    const bool idle = queue_.empty() && !writing_;
    if (!idle && (queued_events_ + count > gw_->settings.send_queue_messages ||
                  queued_bytes_ + chunk->text.size() > gw_->settings.send_queue_bytes))
      return resync("slow");
    queued_events_ += count;
    queued_bytes_ += chunk->text.size();
    const bool event = chunk->events > 0;
    queue_.push_back(std::move(chunk));
    if (!event) return flush_writes();  // an error or a resync never waits for the tick
    if (at_flush) return;
    if (!dirty_) {
      dirty_ = true;
      gw_->dirty.push_back(weak_from_this());
    }
    gw_->schedule_flush();
  }

  // One write at a time. Every event queued goes out as ONE message, {"type":"events","events":
  // [...]}, written straight from the shared chunks (a gather write: nothing is copied per
  // socket); a lone event, or any other message, goes as it is.
  void start_write() {
    writing_ = true;
    dirty_ = false;
    in_flight_.clear();
    buffers_.clear();
    std::size_t run = 0, events = 0;
    while (run < queue_.size() && queue_[run]->events > 0) events += queue_[run++]->events;
    if (run == 0 || events == 1) {
      in_flight_.push_back(std::move(queue_.front()));
      queue_.pop_front();
      buffers_.push_back(net::buffer(in_flight_.back()->text));
    } else {
      static constexpr std::string_view kHead = "{\"type\":\"events\",\"events\":[";
      static constexpr std::string_view kComma = ",", kTail = "]}";
      // Past a few pieces (a catch-up's single events) one copy beats a long iovec.
      const bool copy = run > kMaxGatherPieces;
      if (copy) batch_.assign(kHead);
      else buffers_.push_back(net::buffer(kHead.data(), kHead.size()));
      for (std::size_t i = 0; i < run; ++i) {
        in_flight_.push_back(std::move(queue_.front()));
        queue_.pop_front();
        const std::string& text = in_flight_.back()->text;
        if (copy) {
          if (i > 0) batch_ += kComma;
          batch_ += text;
        } else {
          if (i > 0) buffers_.push_back(net::buffer(kComma.data(), kComma.size()));
          buffers_.push_back(net::buffer(text));
        }
      }
      if (copy) {
        batch_ += kTail;
        buffers_.push_back(net::buffer(batch_));
      } else {
        buffers_.push_back(net::buffer(kTail.data(), kTail.size()));
      }
    }
    for (const auto& c : in_flight_) {
      queued_events_ -= std::max<std::size_t>(c->events, 1);
      queued_bytes_ -= c->text.size();
    }
    ws_.async_write(buffers_, beast::bind_front_handler(&WsSession::on_write, shared_from_this()));
  }

  // A write completed: what queued meanwhile goes at once (this socket is behind the tick).
  void on_write(beast::error_code ec, std::size_t) {
    writing_ = false;
    if (ec) return finish();
    gw_->metrics.ws_messages.Increment();
    const auto now = Clock::now();
    for (const auto& c : in_flight_) gw_->metrics.observe_deliveries(now, c->received);
    in_flight_.clear();
    flush_writes();
  }

  void finish() {
    if (closed_) return;
    closed_ = true;
    gw_->unwatch_all(this);
    gw_->metrics.ws_connections.Decrement();
    --gw_->open_connections;
    queue_.clear();
    gw_->ws_sessions.erase(shared_from_this());
  }

  static constexpr std::size_t kMaxGatherPieces = 16;

  std::shared_ptr<Gateway::Impl> gw_;
  websocket::stream<beast::tcp_stream> ws_;
  beast::flat_buffer buffer_;
  std::deque<ChunkPtr> queue_;  // waiting for the write in flight or the next flush
  std::size_t queued_events_ = 0;  // a message of its own counts as one
  std::size_t queued_bytes_ = 0;
  // The write in flight: its chunks (kept alive until it completes) and the buffers over them.
  std::vector<ChunkPtr> in_flight_;
  std::vector<net::const_buffer> buffers_;
  std::string batch_;  // a batch of many pieces, copied into one
  bool writing_ = false;
  bool dirty_ = false;  // in gw_->dirty
  bool closed_ = false;
  bool watch_all_ = false;
  uint64_t all_since_tick_ = 0;      // watch all began in this tick...
  std::size_t all_since_index_ = 0;  // ...after this many of its events
  int abuse_ = 0;
  std::map<std::string, Watch> watches_;
};

void Gateway::Impl::publish(const Event& e, Clock::time_point received) {
  metrics.feed_events.Increment();
  auto& ring_of = rings[e.item];
  if (!ring_of.empty() && e.seq <= ring_of.back().seq) return;  // a duplicate
  auto chunk = std::make_shared<const Chunk>(Chunk{event_message(e), 1, {received}});
  ring_of.push_back({e.seq, chunk});
  ring_order.emplace_back(e.item, e.seq);
  if (ring_of.size() > settings.ring_per_item) ring_of.pop_front();
  while (ring_order.size() > settings.ring_total) {
    auto [item, seq] = ring_order.front();
    ring_order.pop_front();
    auto it = rings.find(item);
    if (it == rings.end()) continue;
    while (!it->second.empty() && it->second.front().seq <= seq) it->second.pop_front();
    if (it->second.empty()) rings.erase(it);
  }
  // Sockets watching everything get it with the tick's other events, at the flush.
  if (!all_watchers.empty()) {
    pending_all.push_back(chunk);
    schedule_flush();
  }
  if (auto it = item_watchers.find(e.item); it != item_watchers.end()) {
    // A copy: a delivery may resync a session, which edits the sets.
    const std::vector<WsSession*> some(it->second.begin(), it->second.end());
    for (WsSession* s : some) s->on_event(e.item, e.seq, chunk);
  }
}

void Gateway::Impl::schedule_flush() {
  if (flush_armed || flush_posted || stopped) return;  // the tick (or a flush already posted) takes it
  flush_posted = true;
  net::post(io, [self = shared_from_this()] {
    self->flush_posted = false;
    self->flush();
  });
}

void Gateway::Impl::flush() {
  if (stopped) return;
  ++tick;
  const auto events = std::move(pending_all);
  pending_all.clear();
  const auto due = std::move(dirty);
  dirty.clear();
  if (!events.empty()) {
    auto shared = std::make_shared<Chunk>();
    for (const auto& e : events) WsSession::append_to(*shared, *e);
    const ChunkPtr tick_chunk = std::move(shared);
    // A copy: a write may resync or close a session, which edits the set.
    const std::vector<WsSession*> all(all_watchers.begin(), all_watchers.end());
    for (WsSession* s : all) s->on_tick(tick - 1, tick_chunk, events);
  }
  for (const auto& weak : due)
    if (auto s = weak.lock()) s->flush_writes();
  if (events.empty() && due.empty()) return;  // idle: the next event flushes at once
  if (settings.ws_write_interval.count() <= 0) return;
  flush_armed = true;
  flush_timer.expires_after(settings.ws_write_interval);
  flush_timer.async_wait([self = shared_from_this()](beast::error_code ec) {
    self->flush_armed = false;
    if (ec || self->stopped) return;
    if (!self->pending_all.empty() || !self->dirty.empty()) self->flush();
  });
}

// One HTTP connection: requests in turn (keep-alive), each under the header/body limits and the
// idle timeout; /ws hands the socket to a WsSession.
class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(std::shared_ptr<Gateway::Impl> gw, tcp::socket&& socket) : gw_(std::move(gw)), stream_(std::move(socket)) {
    beast::error_code ec;
    const auto remote = stream_.socket().remote_endpoint(ec);
    address_ = ec ? "?" : remote.address().to_string();
  }
  ~HttpSession() {
    if (counted_) {
      gw_->metrics.http_connections.Decrement();
      --gw_->open_connections;
    }
  }

  void start(bool refuse) {
    if (refuse) {
      gw_->metrics.refused_connections.Increment();
      keep_alive_ = false;
      auto res = make_response(http::status::service_unavailable, 11, error_json("busy", "Too many connections; try again soon."));
      return send(std::move(res));
    }
    counted_ = true;
    gw_->metrics.http_connections.Increment();
    ++gw_->open_connections;
    do_read();
  }

 private:
  using Request = http::request<http::string_body>;
  using Response = http::response<http::string_body>;

  void do_read() {
    parser_.emplace();
    parser_->header_limit(kHeaderLimit);
    parser_->body_limit(kBodyLimit);
    stream_.expires_after(gw_->settings.http_idle);
    http::async_read(stream_, buffer_, *parser_, beast::bind_front_handler(&HttpSession::on_read, shared_from_this()));
  }

  void on_read(beast::error_code ec, std::size_t) {
    if (ec == http::error::end_of_stream || ec == beast::error::timeout || ec == net::error::eof ||
        ec == net::error::connection_reset || ec == net::error::operation_aborted)
      return close();
    if (ec) {
      keep_alive_ = false;
      if (ec == http::error::header_limit)
        return send(make_response(http::status::request_header_fields_too_large, 11,
                                  error_json("too_large", "The request's headers pass 8 KiB.")));
      if (ec == http::error::body_limit)
        return send(make_response(http::status::payload_too_large, 11,
                                  error_json("too_large", "The request's body passes 4 KiB.")));
      return send(make_response(http::status::bad_request, 11, error_json("bad_request", "Not an HTTP/1.1 request.")));
    }
    req_ = parser_->release();
    keep_alive_ = req_.keep_alive();
    if (req_.version() != 10 && req_.version() != 11) {
      keep_alive_ = false;
      return send(make_response(http::status::bad_request, 11, error_json("bad_request", "Only HTTP/1.0 and 1.1 are spoken here.")));
    }
    if (websocket::is_upgrade(req_)) return upgrade();
    route();
  }

  Response make_response(http::status status, unsigned version, std::string body,
                         std::string_view type = "application/json") {
    Response res{status, version};
    res.set(http::field::server, "bidmesh-gateway");
    res.set(http::field::content_type, beast::string_view(type.data(), type.size()));
    res.set(http::field::cache_control, "no-cache");
    res.set("X-Content-Type-Options", "nosniff");
    res.set("Content-Security-Policy", kCsp);
    res.set("Referrer-Policy", "same-origin");
    res.body() = std::move(body);
    res.keep_alive(keep_alive_);
    res.prepare_payload();
    return res;
  }
  Response json(http::status status, std::string body) { return make_response(status, req_.version(), std::move(body)); }
  Response error(http::status status, std::string_view code, std::string_view message) {
    return json(status, error_json(code, message));
  }

  void send(Response res) {
    res_ = std::make_shared<Response>(std::move(res));
    stream_.expires_after(gw_->settings.http_idle);
    http::async_write(stream_, *res_, beast::bind_front_handler(&HttpSession::on_write, shared_from_this()));
  }

  void on_write(beast::error_code ec, std::size_t) {
    res_.reset();
    if (ec || !keep_alive_ || gw_->stopped) return close();
    do_read();
  }

  void close() {
    beast::error_code ec;
    stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  }

  // Origin: a browser sends it on every cross-site request and on POSTs; a request without one
  // comes from no page (curl, an app) and is judged by its cookie and CSRF token alone.
  bool origin_ok() const {
    const auto origin = sv(req_[http::field::origin]);
    return origin.empty() || gw_->origin_allowed(origin);
  }

  void upgrade() {
    const auto origin = sv(req_[http::field::origin]);
    if (req_.target() != "/ws") return send(error(http::status::not_found, "not_found", "No such path."));
    if (!gw_->origin_allowed(origin)) {
      keep_alive_ = false;
      return send(error(http::status::forbidden, "origin", "This origin may not open the gateway's socket."));
    }
    // The connection slot passes to the WebSocket session.
    counted_ = false;
    gw_->metrics.http_connections.Decrement();
    --gw_->open_connections;
    stream_.expires_never();
    // No Nagle: a socket writes once per flush tick, and a write held back for the previous
    // one's ACK would wait for the client's delayed ACK (up to 40 ms on Linux).
    beast::error_code ignored;
    stream_.socket().set_option(tcp::no_delay(true), ignored);
    auto ws = std::make_shared<WsSession>(gw_, stream_.release_socket());
    gw_->ws_sessions.insert(ws);
    ws->start(std::move(req_));
  }

  void route() {
    const std::string_view target = sv(req_.target());
    const auto q = target.find('?');
    const std::string path(target.substr(0, q));
    const std::string query(q == std::string_view::npos ? std::string_view{} : target.substr(q + 1));
    const auto method = req_.method();
    if (path.rfind("/api/", 0) == 0) {
      if (path == "/api/items" && method == http::verb::get) return list_items(parse_query(query));
      if (path.rfind("/api/items/", 0) == 0 && method == http::verb::get) return item_page(path.substr(11));
      if (path == "/api/session" && method == http::verb::get) return session_info();
      if (path == "/api/signin" && method == http::verb::post) return signin();
      if (path == "/api/signout" && method == http::verb::post) return signout();
      if (path == "/api/bid" && method == http::verb::post) return bid();
      return send(error(http::status::not_found, "not_found", "No such API path or method."));
    }
    if (method != http::verb::get && method != http::verb::head)
      return send(error(http::status::method_not_allowed, "bad_request", "Static files are read with GET."));
    // The allow list made at start: anything else, "/../x" and "%2e%2e" included, is not found.
    const auto it = gw_->files.find(path == "/" ? "/index.html" : path);
    if (it == gw_->files.end()) return send(error(http::status::not_found, "not_found", "No such file."));
    auto res = make_response(http::status::ok, req_.version(), method == http::verb::head ? "" : it->second.second,
                             it->second.first);
    if (method == http::verb::head) res.content_length(it->second.second.size());
    send(std::move(res));
  }

  // Runs `frame` on the mesh worker, then `then(raw reply)` here; answers 503 busy when full.
  // The session is kept alive until the reply (bounded by the worker's timeout and retries).
  template <typename Then>
  void ask(std::string frame, Then then) {
    const bool queued = gw_->mesh.submit(std::move(frame), [self = shared_from_this(), then = std::move(then)](
                                                               std::optional<std::string> raw) mutable { then(*self, raw); });
    if (!queued) send(error(http::status::service_unavailable, "busy", "The gateway is busy; try again."));
  }
  void unavailable() {
    send(error(http::status::bad_gateway, "unavailable", "The auction service did not answer; try again."));
  }

  void list_items(const std::map<std::string, std::string>& query) {
    std::vector<std::pair<std::string, Json>> f{{"op", "list"}, {"id", gw_->next_id()}};
    if (auto it = query.find("status"); it != query.end()) {
      if (it->second != "open" && it->second != "closed")
        return send(error(http::status::bad_request, "bad_request", "status is open or closed."));
      f.emplace_back("status", it->second);
    }
    uint64_t limit = 20;
    if (auto it = query.find("limit"); it != query.end()) {
      char* end = nullptr;
      limit = std::strtoull(it->second.c_str(), &end, 10);
      if (it->second.empty() || *end != '\0' || limit < 1 || limit > 100)
        return send(error(http::status::bad_request, "bad_request", "limit is 1 to 100."));
    }
    f.emplace_back("limit", limit);
    if (auto it = query.find("cursor"); it != query.end() && !it->second.empty()) {
      if (it->second.size() > 512) return send(error(http::status::bad_request, "bad_request", "cursor is too long."));
      f.emplace_back("cursor", it->second);
    }
    ask(frame_of(f), [](HttpSession& self, const std::optional<std::string>& raw) {
      auto reply = raw ? reply_json(*raw) : std::nullopt;
      if (!reply || !reply->is_object()) return self.unavailable();
      const Json* ok = member(*reply, "ok");
      if (!is_true(ok)) {
        const std::string c = string_or(member(*reply, "error"), "unavailable");
        const std::string m = string_or(member(*reply, "message"), "The mesh refused the listing.");
        return self.send(self.error(c == "bad_request" ? http::status::bad_request : http::status::bad_gateway, c, m));
      }
      Json out = Json::object();
      const Json* items = member(*reply, "items");
      out["items"] = items ? *items : Json::array();
      const Json* cursor = member(*reply, "cursor");
      out["cursor"] = cursor ? *cursor : Json(nullptr);
      const Json* partial = member(*reply, "partial");
      out["partial"] = is_true(partial);
      const Json* missing = member(*reply, "missing");
      out["missing"] = missing ? *missing : Json::array();
      self.send(self.json(http::status::ok, dump_json(out)));
    });
  }

  void item_page(const std::string& item) {
    if (!is_valid_identifier(item)) return send(error(http::status::not_found, "not_found", "No such item."));
    bidmesh::Request r;
    r.op = Op::get;
    r.id = gw_->next_id();
    r.item = item;
    ask(encode_request(r), [item](HttpSession& self, const std::optional<std::string>& raw) {
      auto reply = raw ? reply_json(*raw) : std::nullopt;
      if (!reply || !reply->is_object()) return self.unavailable();
      const Json* ok = member(*reply, "ok");
      if (!is_true(ok)) {
        if (string_or(member(*reply, "error"), "") == "unknown_item")
          return self.send(self.error(http::status::not_found, "not_found", "There is no such auction."));
        return self.unavailable();
      }
      Json fields = Json::object();
      for (const auto& [k, v] : reply->items())
        if (k != "ok" && k != "id") fields[k] = v;
      const uint64_t seq = as_u64(member(*reply, "seq")).value_or(0);
      bidmesh::Request h;
      h.op = Op::history;
      h.id = self.gw_->next_id();
      h.item = item;
      h.after = seq > kItemHistoryShown ? seq - kItemHistoryShown : 0;
      h.limit = kItemHistoryShown;
      self.ask(encode_request(h), [fields = std::move(fields)](HttpSession& s, const std::optional<std::string>& raw2) {
        auto hist = raw2 ? reply_json(*raw2) : std::nullopt;
        const Json* events = hist ? member(*hist, "events") : nullptr;
        if (events == nullptr || !events->is_array()) return s.unavailable();
        Json out = Json::object();
        out["item"] = fields;
        out["history"] = *events;
        s.send(s.json(http::status::ok, dump_json(out)));
      });
    });
  }

  void session_info() {
    AuthSession* session = gw_->session_of(req_);
    if (session == nullptr) return send(error(http::status::unauthorized, "signed_out", "Not signed in."));
    Json out = Json::object();
    out["name"] = session->name;
    out["csrf"] = session->csrf;
    send(json(http::status::ok, dump_json(out)));
  }

  std::optional<Json> body_object() {
    std::string why;
    auto v = parse_untrusted_json(req_.body(), why, kBodyLimit, 4);
    if (!v || !v->is_object()) return std::nullopt;
    return v;
  }

  void signin() {
    if (!origin_ok()) return send(error(http::status::forbidden, "origin", "Cross-site requests are refused."));
    if (!gw_->signin_allowed(address_)) {
      gw_->metrics.signins_limited.Increment();
      return send(error(http::status::too_many_requests, "rate_limited", "Too many sign-in attempts; wait a minute."));
    }
    auto body = body_object();
    if (!body) return send(error(http::status::bad_request, "bad_request", "The body must be a JSON object."));
    const Json* name = member(*body, "name");
    const Json* token = member(*body, "token");
    if (!as_string(name) || !as_string(token))
      return send(error(http::status::bad_request, "bad_request", "Sign in with {\"name\", \"token\"}."));
    if (auto problem = gw_->users.reload_if_changed())
      log_event(LogLevel::warning, "users", "users file not reloaded, the previous list stays: " + *problem);
    if (!gw_->users.verify(*as_string(name), *as_string(token))) {
      gw_->metrics.signins_refused.Increment();
      return send(error(http::status::unauthorized, "bad_credentials", "That name and token do not match."));
    }
    gw_->metrics.signins_ok.Increment();
    std::string csrf;
    const std::string cookie = gw_->new_session(*as_string(name), csrf);
    Json out = Json::object();
    out["name"] = *as_string(name);
    out["csrf"] = csrf;
    auto res = json(http::status::ok, dump_json(out));
    res.set(http::field::set_cookie, std::string(kCookieName) + "=" + cookie + "; HttpOnly; SameSite=Strict; Path=/" +
                                         (gw_->settings.https ? "; Secure" : ""));
    send(std::move(res));
  }

  // The checks of a state-changing request: origin, session, CSRF token. nullptr: answered.
  AuthSession* authorise() {
    if (!origin_ok()) {
      send(error(http::status::forbidden, "origin", "Cross-site requests are refused."));
      return nullptr;
    }
    AuthSession* session = gw_->session_of(req_);
    if (session == nullptr) {
      send(error(http::status::unauthorized, "signed_out", "Sign in first."));
      return nullptr;
    }
    if (!same_secret(sv(req_["X-CSRF-Token"]), session->csrf)) {
      send(error(http::status::forbidden, "csrf", "The request lacks this session's X-CSRF-Token."));
      return nullptr;
    }
    return session;
  }

  void signout() {
    AuthSession* session = authorise();
    if (session == nullptr) return;
    if (auto value = cookie_value(sv(req_[http::field::cookie]), kCookieName)) gw_->sessions.erase(*value);
    auto res = make_response(http::status::no_content, req_.version(), "");
    res.set(http::field::set_cookie, std::string(kCookieName) + "=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    send(std::move(res));
  }

  void bid() {
    AuthSession* session = authorise();
    if (session == nullptr) return;
    auto body = body_object();
    if (!body) return send(error(http::status::bad_request, "bad_request", "The body must be a JSON object."));
    const Json* item = member(*body, "item");
    const Json* amount = member(*body, "amount");
    const Json* max = member(*body, "max");
    const Json* id = member(*body, "id");
    if (!item || !as_string(item) || !is_valid_identifier(*as_string(item)))
      return send(error(http::status::bad_request, "bad_request", "\"item\" names an auction."));
    if (!amount || !as_u64(amount) || *as_u64(amount) == 0)
      return send(error(http::status::bad_request, "bad_request", "\"amount\" is a whole number of at least 1."));
    if (max && !max->is_null() && (!as_u64(max) || *as_u64(max) < *as_u64(amount)))
      return send(error(http::status::bad_request, "bad_request", "\"max\" is a whole number not below the amount."));
    if (id && !id->is_null() && (!as_string(id) || as_string(id)->empty() || as_string(id)->size() > 64))
      return send(error(http::status::bad_request, "bad_request", "\"id\" is 1 to 64 bytes."));
    bidmesh::Request r;
    r.op = Op::bid;
    r.item = *as_string(item);
    r.bidder = session->name;
    r.amount = *as_u64(amount);
    if (as_u64(max).value_or(0) > r.amount) r.max = *as_u64(max);
    if (as_string(id)) {
      // The page's id, kept apart per user: two users' ids never meet in the mesh's memory.
      unsigned char h[16];
      const std::string key = session->name + '\n' + *as_string(id);
      crypto_generichash(h, sizeof h, reinterpret_cast<const unsigned char*>(key.data()), key.size(), nullptr, 0);
      char hex[33];
      sodium_bin2hex(hex, sizeof hex, h, sizeof h);
      r.id = std::string("web-") + hex;
    } else {
      r.id = gw_->next_id();
    }
    const uint64_t offered = r.amount;
    ask(encode_request(r), [offered, item = r.item](HttpSession& self, const std::optional<std::string>& raw) {
      std::optional<Reply> reply = raw ? decode_reply(*raw) : std::nullopt;
      if (!reply || (!reply->ok && (reply->error == "unavailable" || reply->error == "internal"))) {
        self.gw_->metrics.bids_failed.Increment();
        Json out = Json::object();
        out["ok"] = false;
        out["error"] = "unavailable";
        out["message"] = "The auction service did not answer; your bid may not have counted. Try again.";
        return self.send(self.json(http::status::ok, dump_json(out)));
      }
      Json out = Json::object();
      if (reply->ok) {
        self.gw_->metrics.bids_ok.Increment();
        const Value* leading = reply->find("leading");
        out["ok"] = true;
        out["leading"] = leading && std::holds_alternative<bool>(*leading) ? std::get<bool>(*leading) : true;
        out["max"] = reply->u64("price").value_or(reply->u64("amount").value_or(offered));
        out["seq"] = reply->u64("seq").value_or(0);
        return self.send(self.json(http::status::ok, dump_json(out)));
      }
      self.gw_->metrics.bids_refused.Increment();
      const std::string code = reply->error.value_or("refused");
      out["ok"] = false;
      out["error"] = code;
      if (auto price = reply->u64("max")) out["max"] = *price;
      if (code != "too_low") {
        std::string words = code == "closed"         ? "This auction has closed."
                            : code == "unknown_item" ? "There is no such auction."
                            : code == "forbidden"    ? "The gateway may not bid for you; tell the operator."
                            : code == "conflict"     ? "This bid's id was already used for another bid."
                                                     : reply->message.value_or("The bid was refused.");
        out["message"] = words;
        return self.send(self.json(http::status::ok, dump_json(out)));
      }
      // too_low: the increment comes from `get`, so the words can say what would be enough.
      bidmesh::Request g;
      g.op = Op::get;
      g.id = self.gw_->next_id();
      g.item = item;
      self.ask(encode_request(g), [offered, out = std::move(out)](HttpSession& s, const std::optional<std::string>& raw2) mutable {
        std::optional<Reply> state = raw2 ? decode_reply(*raw2) : std::nullopt;
        const std::string bid = "Your bid of " + std::to_string(offered) + " is too low";
        std::string words = bid + ".";
        if (state && state->ok) {
          const auto price = state->u64("max");
          const auto increment = state->u64("increment").value_or(1);
          if (price) {
            words = bid + ": the price is now " + std::to_string(*price) + "; bid at least " +
                    std::to_string(*price + increment) + ".";
            out["max"] = *price;
          } else {
            words = bid + ": the opening bid is at least " + std::to_string(state->u64("start").value_or(1)) + ".";
          }
        }
        out["message"] = words;
        s.send(s.json(http::status::ok, dump_json(out)));
      });
    });
  }

  std::shared_ptr<Gateway::Impl> gw_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_{kHeaderLimit + kBodyLimit};
  std::optional<http::request_parser<http::string_body>> parser_;
  Request req_;
  std::shared_ptr<Response> res_;
  std::string address_;
  bool keep_alive_ = true;
  bool counted_ = false;
};

void Gateway::Impl::accept() {
  acceptor.async_accept([self = shared_from_this()](beast::error_code ec, tcp::socket socket) {
    if (self->stopped) return;
    if (!ec) {
      const bool full = self->open_connections >= self->settings.max_connections;
      std::make_shared<HttpSession>(self, std::move(socket))->start(full);
    }
    self->accept();
  });
}

Gateway::Gateway(net::io_context& io, GatewaySettings settings, UserFile users, MeshWorker& mesh, GatewayMetrics& metrics)
    : impl_(std::make_shared<Impl>(io, std::move(settings), std::move(users), mesh, metrics)) {
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(impl_->settings.web_root, ec)) {
    if (!entry.is_regular_file(ec)) continue;
    const auto name = entry.path().filename().string();
    if (name.empty() || name[0] == '.' || entry.file_size(ec) > (8u << 20)) continue;
    std::ifstream in(entry.path(), std::ios::binary);
    std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    impl_->files["/" + name] = {content_type_of(entry.path()), std::move(bytes)};
  }
}

Gateway::~Gateway() = default;

std::size_t Gateway::static_files() const { return impl_->files.size(); }

std::optional<std::string> Gateway::start() {
  beast::error_code ec;
  const auto address = net::ip::make_address(impl_->settings.listen_host, ec);
  if (ec) return "listen: " + impl_->settings.listen_host + " is not an IP address";
  const tcp::endpoint endpoint(address, impl_->settings.listen_port);
  impl_->acceptor.open(endpoint.protocol(), ec);
  if (!ec) impl_->acceptor.set_option(net::socket_base::reuse_address(true), ec);
  if (!ec) impl_->acceptor.bind(endpoint, ec);
  if (!ec) impl_->acceptor.listen(net::socket_base::max_listen_connections, ec);
  if (ec) return "cannot listen on " + impl_->settings.listen_host + ":" + std::to_string(impl_->settings.listen_port) +
                 ": " + ec.message();
  impl_->accept();
  return std::nullopt;
}

uint16_t Gateway::port() const {
  beast::error_code ec;
  return impl_->acceptor.local_endpoint(ec).port();
}

void Gateway::publish_event(const Event& event, Clock::time_point received) { impl_->publish(event, received); }

void Gateway::reload_users() {
  if (auto problem = impl_->users.reload_if_changed())
    log_event(LogLevel::warning, "reload", "users file not reloaded, the previous list stays: " + *problem);
  else
    log_info("reload", "users: " + std::to_string(impl_->users.users().size()) + " from " + impl_->users.file().string());
}

void Gateway::shutdown() {
  impl_->stopped = true;
  beast::error_code ec;
  impl_->acceptor.close(ec);
  const auto sessions = impl_->ws_sessions;
  for (const auto& s : sessions) s->close_now();
}

}  // namespace bidmesh::gateway
