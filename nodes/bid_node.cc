// BidNode: see bid_node.h for the framing, the batch flow and the stop sequence.
#include "nodes/bid_node.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <variant>
#include <vector>

#include <zmq_addon.hpp>

#include "metrics/snapshot.h"
#include "nodes/node_wire.h"
#include "protocol/access.h"
#include "protocol/control.h"
#include "protocol/messages.h"
#include "security/zap.h"

namespace bidmesh {

namespace {
constexpr auto kFailureLogInterval = std::chrono::seconds(5);
// [router identity, token frame, config digest, principal, body]; the reply is [router identity,
// one frame] (nodes/node_wire.h), or for an older router's 8-byte token [router identity, token,
// reply], with this node's digest as a last frame when the router's differs.
constexpr std::size_t kRequestFrames = 5;
constexpr std::size_t kReplyEnvelopeFrames = 2;

// A signal may interrupt a ZeroMQ call (EINTR, thrown by cppzmq): the call is simply made again,
// so no reply of a committed batch is lost to a SIGTERM.
template <typename F>
auto retry_eintr(F&& f) {
  for (;;) {
    try {
      return f();
    } catch (const zmq::error_t& e) {
      if (e.num() != EINTR) throw;
    }
  }
}
}  // namespace

// One message of the batch: its frames (the envelope goes back unchanged) and its outcome.
struct BidNode::Incoming {
  std::vector<zmq::message_t> frames;
  std::optional<std::size_t> request;  // index in the batch's requests, when it decoded
  std::string reply;                   // set at once when it did not decode
  std::optional<ErrorCode> outcome;    // what `reply` says: nullopt for ok, else its error code
  bool digest_refused = false;         // the router's config digest differs from ours
  std::optional<Op> op;                // for the metrics; none when it did not decode
  bool direct = false;                 // from a direct client: frames are [identity, ""]
  bool one_frame_reply = false;        // the router reads its reply as one frame (node_wire.h)
};

BidNode::BidNode(const MeshConfig& cfg, const NodeConfig& node)
    : name_(node.name),
      listen_(node.listen),
      security_(cfg.security),
      server_certificate_(cfg.server_certificate),
      config_digest_(cfg.digest()),
      config_digest_hex_(cfg.digest_hex()),
      feed_collect_(cfg.feed_collect),
      data_dir_(cfg.node_data_dir(node.name)),
      map_size_bytes_(node.map_size_bytes > 0 ? node.map_size_bytes : cfg.default_map_size_bytes),
      unsafe_no_sync_(node.unsafe_no_sync),
      batch_max_(std::max<std::size_t>(cfg.batch_max, 1)),
      checkpoint_bytes_(uint64_t{cfg.checkpoint_kb} << 10),
      checkpoint_interval_(cfg.checkpoint_interval_ms),
      log_segment_bytes_(uint64_t{cfg.wal_segment_mb} << 20),
      max_request_bytes_(cfg.max_request_bytes),
      metrics_address_(node.metrics),
      ctx_(1),
      router_(ctx_, zmq::socket_type::router),
      pub_(ctx_, zmq::socket_type::pub),
      link_(ctx_, node.name),
      cfg_(cfg),
      node_(node) {}

BidNode::~BidNode() = default;

std::string BidNode::digest_mismatch_message(uint64_t router_digest) {
  char theirs[17];
  std::snprintf(theirs, sizeof theirs, "%016llx", static_cast<unsigned long long>(router_digest));
  const std::string message = "bid node " + name_ + " runs mesh config digest " + config_digest_hex_ +
                              " but the router's is " + theirs +
                              ": the hosts' configs differ (slot map, endpoints or security); not applied";
  const auto now = std::chrono::steady_clock::now();
  if (now - last_digest_log_ >= kFailureLogInterval) {  // at most one line per interval
    log("digest_mismatch", "refusing requests: " + message, {{"router_digest", theirs}, {"digest", config_digest_hex_}},
        LogLevel::warning);
    last_digest_log_ = now;
  }
  last_digest_refusal_ = now;
  link_.set_note(std::string("refusing requests of a router whose mesh config digest is ") + theirs + " (this node: " +
                 config_digest_hex_ + ")");
  return message;
}

void BidNode::log(std::string_view event, const std::string& line, LogFields fields, LogLevel level) const {
  log_event(level, event, line, fields);
}

std::optional<std::string> BidNode::start() {
  ItemStoreOptions options;
  options.dir = data_dir_;
  options.map_size_bytes = map_size_bytes_;
  options.no_sync = unsafe_no_sync_;
  options.checkpoint_bytes = checkpoint_bytes_;
  options.checkpoint_interval = checkpoint_interval_;
  options.log_segment_bytes = log_segment_bytes_;
  auto opened = ItemStore::open(options);
  if (auto* err = std::get_if<std::string>(&opened)) return *err;
  store_ = std::move(std::get<std::unique_ptr<ItemStore>>(opened));

  if (security_ == Security::curve) {
    auto mesh = read_secret_certificate(server_certificate_);
    if (auto* error = std::get_if<std::string>(&mesh)) return "server_certificate: " + *error;
    mesh_key_ = std::move(std::get<Certificate>(mesh));
  }
  try {
    // Links that leave the machine are CurveZMQ with the mesh's own key: only routers holding
    // it may send requests here. The feed's collect side admits only that key too.
    if (security_ == Security::curve && !endpoint_is_local(listen_)) {
      zap_.emplace(ctx_, mesh_key_.public_key, false);
      if (auto error = zap_->start()) return *error;
      make_curve_server(router_, mesh_key_, kZapDomainMesh);
    }
    if (security_ == Security::curve) make_curve_client(pub_, mesh_key_, mesh_key_.public_key);
    router_.set(zmq::sockopt::linger, kCloseLingerMs);
    // Only routers connect here; a request frame is at most max_request_bytes, so anything near
    // the transport limit is not a router's.
    router_.set(zmq::sockopt::maxmsgsize, static_cast<int64_t>(kTransportMaxBytes));
    router_.set(zmq::sockopt::sndhwm, std::max<int>(kReplyHwm, static_cast<int>(4 * batch_max_)));
    if (listen_.starts_with("ipc://")) {
      std::error_code ec;  // a missing folder shows as the bind error below
      std::filesystem::create_directories(std::filesystem::path(listen_.substr(6)).parent_path(), ec);
    }
    router_.bind(listen_);
  } catch (const zmq::error_t& e) {
    return "cannot bind the ROUTER on " + listen_ + ": " + e.what();
  }
  try {
    pub_.set(zmq::sockopt::linger, kCloseLingerMs);
    pub_.set(zmq::sockopt::sndhwm, kPubHwm);
    pub_.connect(feed_collect_);
  } catch (const zmq::error_t& e) {
    return "cannot connect the PUB to the feed at " + feed_collect_ + ": " + e.what();
  }
  if (auto error = start_direct()) return *error;

  const ItemStore::ReplayStats& replayed = store_->replay_stats();
  log("ready", "serving on " + listen_ + ", mesh config digest " + config_digest_hex_ + ", data " + data_dir_.string() + ", " + std::to_string(store_->item_count()) +
      " items, map " + std::to_string(store_->map_size_bytes()) + " bytes, feed " + feed_collect_ + "; log replayed " +
      std::to_string(replayed.records) + " batches (" + std::to_string(replayed.writes) + " writes, " +
      std::to_string(replayed.bytes) + " bytes) in " + std::to_string(replayed.micros / 1000) + " ms from " +
      store_->checkpoint_position().to_string() + (replayed.torn_tail ? ", a torn last record was cut off" : ""),
      {{"listen", listen_}, {"digest", config_digest_hex_}, {"items", store_->item_count()},
       {"replayed_batches", replayed.records}, {"replay_ms", replayed.micros / 1000}, {"torn_tail", replayed.torn_tail}});
  if (unsafe_no_sync_) {
    log("unsafe_no_sync", "WARNING: unsafe_no_sync is set: the write-ahead log is NOT synced to disk, so acknowledged bids can be "
        "lost in a crash. The wire contract's durability does not hold. Never run this in production.",
        {}, LogLevel::warning);
  }
  // A metrics port that cannot be bound costs the metrics, not the auction: the node serves on.
  if (!metrics_address_.empty()) {
    if (auto error = metrics_registry_.serve(metrics_address_))
      log("metrics", *error + "; serving without metrics", {}, LogLevel::warning);
  }
  update_gauges();
  return std::nullopt;
}

int BidNode::serve() {
  link_.set_stats_source([this] { return node_stats(metrics_); });  // for bidmesh-ctl top
  link_.ready();
  try {
    while (!stop_requested()) {
      if (last_digest_refusal_ && std::chrono::steady_clock::now() - *last_digest_refusal_ > kDigestNoteHold) {
        link_.set_note("");
        last_digest_refusal_.reset();
      }
      link_.tick();
      zmq::pollitem_t items[] = {{router_.handle(), 0, ZMQ_POLLIN, 0},
                                 {direct_ ? direct_->front().socket().handle() : nullptr, 0, ZMQ_POLLIN, 0}};
      try {
        zmq::poll(items, direct_ ? 2 : 1, poll_timeout());
      } catch (const zmq::error_t& e) {
        if (e.num() == EINTR) continue;  // a signal: the loop condition decides
        throw;
      }
      run_turn();
      if (fatal_) {
        log("stop", "stopping: the write-ahead log failed, so what is on disk is unknown; exiting so that a restart "
            "replays the log (" + stats_line() + ")", {{"exit_code", 111}}, LogLevel::error);
        return 111;
      }
      if (store_->checkpoint_due()) checkpoint();
      if (std::chrono::steady_clock::now() >= next_gauges_) update_gauges();
      refusals_.flush(std::chrono::steady_clock::now());
      if (direct_ && direct_->front().secure() && take_reload_request()) log("reload", reload_direct_clients());
      if (take_reload_request()) log("reload", "SIGHUP: nothing to re-read (a bid node reads its config when it starts)");
    }
  } catch (const zmq::error_t& e) {
    log("stop", std::string("stopping on a ZeroMQ error: ") + e.what(), {{"exit_code", 111}}, LogLevel::error);
    return 111;
  }
  if (store_->log_end() != store_->checkpoint_position()) checkpoint();  // the next start replays nothing
  log("stop", "stopping: signal received, last batch answered, checkpointed; " + stats_line(),
      {{"exit_code", 0}, {"requests", stats_.requests}, {"batches", stats_.batches}, {"checkpoints", store_->checkpoints()}});
  router_.close();  // linger: the last replies and events leave within kCloseLingerMs
  if (direct_) direct_->front().close();
  pub_.close();
  return 0;
}

// The longest wait that still closes items within a second of their deadline and keeps the
// supervisor's heartbeat going.
std::chrono::milliseconds BidNode::poll_timeout() const {
  auto wait = std::min(kMaxPollWait, link_.max_wait());
  if (const auto next = store_->next_auto_close_ms()) {
    const uint64_t now = unix_now_ms();
    const auto until = std::chrono::milliseconds(*next > now ? *next - now : 0);
    wait = std::min(wait, until);
  }
  return wait;
}

// Reads every waiting message into the batch, up to batch_max.
void BidNode::drain() {
  const uint64_t decode_now = unix_now_ms();
  if (direct_) drain_direct(decode_now, batch_max_ / 2);
  while (gathered_ < batch_max_) {
    if (gathered_ == slots_.size()) slots_.emplace_back();
    Incoming& in = slots_[gathered_];
    const auto got = retry_eintr([&] {
      in.frames.clear();
      return zmq::recv_multipart(router_, std::back_inserter(in.frames), zmq::recv_flags::dontwait);
    });
    if (!got) break;
    in.direct = false;
    if (in.frames.size() != kRequestFrames) continue;  // not a router's request: dropped
    in.one_frame_reply = node_wire::wants_one_frame(in.frames[1].to_string_view());
    const auto principal = decode_principal(in.frames[3].to_string_view());
    if (!principal || in.frames[2].size() != sizeof(uint64_t)) continue;
    in.request.reset();
    uint64_t router_digest = 0;
    std::memcpy(&router_digest, in.frames[2].data(), sizeof router_digest);
    auto decoded = decode_request(in.frames.back().to_string_view(), decode_now, max_request_bytes_);
    in.op = std::holds_alternative<Request>(decoded) ? std::optional<Op>(std::get<Request>(decoded).op) : std::nullopt;
    in.digest_refused = router_digest != config_digest_;
    if (in.digest_refused) {
      // Another slot map may own this item: nothing is applied, and the client may retry once
      // the operator has made the configs agree.
      in.reply = encode_error(std::holds_alternative<Request>(decoded) ? std::optional<std::string>(std::get<Request>(decoded).id)
                                                                       : std::get<DecodeError>(decoded).id,
                              ErrorCode::unavailable, digest_mismatch_message(router_digest));
      in.outcome = ErrorCode::unavailable;
      refusals_.add(ErrorCode::unavailable);
    } else if (auto* err = std::get_if<DecodeError>(&decoded)) {
      in.reply = encode_error(*err);
      in.outcome = err->code;
      refusals_.add(err->code);
    } else if (auto forbidden = authorize(*principal, std::get<Request>(decoded))) {
      refusals_.add(ErrorCode::forbidden);
      // Judged after the fields and before anything of the item; not remembered.
      in.reply = encode_error(std::get<Request>(decoded).id, ErrorCode::forbidden, *forbidden);
      in.outcome = ErrorCode::forbidden;
    } else {
      in.request = requests_.size();
      requests_.push_back(std::move(std::get<Request>(decoded)));
    }
    ++gathered_;
  }
  if (direct_) drain_direct(decode_now, batch_max_);
}

void BidNode::drain_direct(uint64_t decode_now, std::size_t limit) {
  while (gathered_ < limit) {
    if (gathered_ == slots_.size()) slots_.emplace_back();
    Incoming& in = slots_[gathered_];
    in.frames.resize(kReplyEnvelopeFrames);  // [identity, ""]: the reply envelope of a REQ/DEALER client
    in.frames[1].rebuild();
    Request request;
    const auto got = retry_eintr([&] { return direct_->receive(in.frames[0], decode_now, request, in.reply, in.outcome, in.op); });
    if (got == DirectEndpoint::Got::none) break;
    if (got == DirectEndpoint::Got::answered) {
      metrics_.requests.error(std::nullopt, ErrorCode::bad_request).Increment();
      continue;
    }
    in.direct = true;
    in.digest_refused = false;
    in.request.reset();
    if (got == DirectEndpoint::Got::request) {
      in.request = requests_.size();
      requests_.push_back(std::move(request));
    }
    ++gathered_;
  }
}

void BidNode::run_turn() {
  drain();
  const auto next = store_->next_auto_close_ms();
  const bool closes_due = next && *next <= unix_now_ms();
  if (gathered_ == 0 && !closes_due) return;
  commit_batch();
}

void BidNode::commit_batch() {
  const uint64_t now = unix_now_ms();
  // One write transaction for the whole batch; the replies exist only after its commit.
  const auto apply_start = std::chrono::steady_clock::now();
  BatchResult result = store_->apply_batch(requests_, now);
  const auto apply_ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - apply_start).count());
  if (gathered_ > 0) {
    ++stats_.batches;
    stats_.requests += gathered_;
    stats_.max_batch = std::max<uint64_t>(stats_.max_batch, gathered_);
  }
  if (result.committed) {
    ++stats_.commits;
    stats_.apply_ns += apply_ns;
    stats_.log_ns += result.log_ns;
    stats_.max_apply_ns = std::max(stats_.max_apply_ns, apply_ns);
  }
  // One observation per batch (a histogram takes a lock), never per request.
  if (gathered_ > 0) metrics_.batch_size.Observe(static_cast<double>(gathered_));
  if (result.committed) metrics_.apply_seconds.Observe(static_cast<double>(apply_ns) / 1e9);
  if (result.log_ns > 0) metrics_.log_sync_seconds.Observe(static_cast<double>(result.log_ns) / 1e9);
  if (result.log_bytes > 0) metrics_.log_written_bytes.Increment(static_cast<double>(result.log_bytes));
  if (result.auto_closes > 0) metrics_.auto_closes.Increment(static_cast<double>(result.auto_closes));
  if (!result.events.empty()) metrics_.events_published.Increment(static_cast<double>(result.events.size()));
  if (result.fatal) fatal_ = true;
  if (result.failure) {
    refusals_.add(ErrorCode::internal,
                  static_cast<uint64_t>(std::count_if(requests_.begin(), requests_.end(), [](const Request& r) { return op_is_write(r.op); })));
    report_failure(*result.failure);
  } else if (result.committed && failing_) {
    failing_ = false;
    log("writes_recovered", "writes succeed again (" + std::to_string(failures_unlogged_) + " failed batches not logged)");
    failures_unlogged_ = 0;
  }

  for (std::size_t b = 0; b < gathered_; ++b) {
    Incoming* in = &slots_[b];
    const std::string& reply = in->request ? result.replies[*in->request] : in->reply;
    metrics_.requests.count(in->op, in->request ? result.outcomes[*in->request] : in->outcome);
    // ROUTER drops a message to a gone or full peer (no ROUTER_MANDATORY): never blocks.
    zmq::socket_t& out = in->direct ? direct_->front().socket() : router_;
    if (!in->direct && in->one_frame_reply) {
      node_wire::encode_reply(in->frames[1].to_string_view(), reply, in->digest_refused ? &config_digest_ : nullptr,
                              reply_frame_);
      retry_eintr([&] { return router_.send(in->frames[0], zmq::send_flags::sndmore | zmq::send_flags::dontwait); });
      retry_eintr([&] { return router_.send(zmq::buffer(reply_frame_), zmq::send_flags::dontwait); });
      continue;
    }
    for (std::size_t i = 0; i < kReplyEnvelopeFrames; ++i) {
      retry_eintr([&] { return out.send(in->frames[i], zmq::send_flags::sndmore | zmq::send_flags::dontwait); });
    }
    if (!in->digest_refused) {
      retry_eintr([&] { return out.send(zmq::buffer(reply), zmq::send_flags::dontwait); });
      continue;
    }
    // The router shows which node refused it and why (bidmesh-ctl status on its host).
    retry_eintr([&] { return router_.send(zmq::buffer(reply), zmq::send_flags::sndmore | zmq::send_flags::dontwait); });
    retry_eintr([&] {
      return router_.send(zmq::const_buffer(&config_digest_, sizeof config_digest_), zmq::send_flags::dontwait);
    });
  }
  for (const FeedMessage& m : result.events) {
    // PUB drops past its high-water mark; seq lets subscribers see and repair the gap.
    const auto sent = retry_eintr(
        [&] { return pub_.send(zmq::buffer(m.topic), zmq::send_flags::sndmore | zmq::send_flags::dontwait); });
    if (sent) retry_eintr([&] { return pub_.send(zmq::buffer(m.body), zmq::send_flags::dontwait); });
  }
  gathered_ = 0;
  requests_.clear();
}

void BidNode::checkpoint() {
  const auto start = std::chrono::steady_clock::now();
  const Status st = store_->checkpoint();
  const auto ns = static_cast<uint64_t>(
      std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - start).count());
  stats_.checkpoint_ns += ns;
  stats_.max_checkpoint_ns = std::max(stats_.max_checkpoint_ns, ns);
  if (st.ok()) {
    metrics_.checkpoint_seconds.Observe(static_cast<double>(ns) / 1e9);
    update_gauges();
  }
  // At most one try a second (ItemStore::checkpoint_due), so at most one line a second.
  if (!st.ok()) {
    log("checkpoint_failed", "checkpoint failed: " + st.to_string() + "; nothing acknowledged is lost (the log holds it); retried in 1 s. " +
        "Operator: check the disk of " + data_dir_.string(), {}, LogLevel::error);
    return;
  }
  // One line per kFailureLogInterval at most: under load a node checkpoints several times a second.
  ++checkpoints_unlogged_;
  const auto now = std::chrono::steady_clock::now();
  if (now - last_checkpoint_log_ >= kFailureLogInterval) {
    log("checkpoint", std::to_string(checkpoints_unlogged_) + " checkpoint(s) since the last line, the last took " +
        std::to_string(ns / 1000) + " us; log checkpointed to " + store_->checkpoint_position().to_string(),
        {{"checkpoints", checkpoints_unlogged_}, {"micros", ns / 1000}, {"total", store_->checkpoints()}});
    checkpoints_unlogged_ = 0;
    last_checkpoint_log_ = now;
  }
}

void BidNode::update_gauges() {
  next_gauges_ = std::chrono::steady_clock::now() + std::chrono::seconds(1);
  metrics_.log_bytes.Set(static_cast<double>(store_->log_bytes_since_checkpoint()));
  metrics_.store_used_bytes.Set(static_cast<double>(store_->store_used_bytes()));
  metrics_.store_size_bytes.Set(static_cast<double>(store_->map_size_bytes()));
  metrics_.items_open.Set(static_cast<double>(store_->items_open()));
  metrics_.idempotency_records.Set(static_cast<double>(store_->idempotency_records()));
  metrics_.log_segments.Set(static_cast<double>(store_->log_segments()));
}

std::string BidNode::stats_line() const {
  char buf[320];
  const double mean_batch =
      stats_.batches ? static_cast<double>(stats_.requests) / static_cast<double>(stats_.batches) : 0.0;
  const double mean_apply_us =
      stats_.commits ? static_cast<double>(stats_.apply_ns) / 1e3 / static_cast<double>(stats_.commits) : 0.0;
  const double mean_log_us =
      stats_.commits ? static_cast<double>(stats_.log_ns) / 1e3 / static_cast<double>(stats_.commits) : 0.0;
  std::snprintf(buf, sizeof buf,
                "stats: %llu requests in %llu batches (mean %.1f, max %llu); %llu logged batches, apply+log mean %.0f us "
                "(log write+sync %.0f us), max %.0f us; %llu checkpoints, mean %.0f us, max %.0f us",
                static_cast<unsigned long long>(stats_.requests), static_cast<unsigned long long>(stats_.batches),
                mean_batch, static_cast<unsigned long long>(stats_.max_batch),
                static_cast<unsigned long long>(stats_.commits), mean_apply_us, mean_log_us,
                static_cast<double>(stats_.max_apply_ns) / 1e3, static_cast<unsigned long long>(store_->checkpoints()),
                store_->checkpoints() ? static_cast<double>(stats_.checkpoint_ns) / 1e3 / static_cast<double>(store_->checkpoints()) : 0.0,
                static_cast<double>(stats_.max_checkpoint_ns) / 1e3);
  return buf;
}

void BidNode::report_failure(const std::string& failure) {
  const auto now = std::chrono::steady_clock::now();
  if (failing_ && now - last_failure_log_ < kFailureLogInterval) {
    ++failures_unlogged_;
    return;
  }
  std::string line = "write batch failed, every write of it answered `internal`, nothing published: " + failure;
  if (failures_unlogged_ > 0) line += " (" + std::to_string(failures_unlogged_) + " more failed batches not logged)";
  if (failure.starts_with("storage full")) {
    line += ". Operator: raise map_size_mb for node " + name_ + " in the config and restart it; reads still work";
  } else {
    line += ". Operator: check the disk and the data directory " + data_dir_.string();
  }
  log("write_failed", line, {}, LogLevel::error);
  failing_ = true;
  failures_unlogged_ = 0;
  last_failure_log_ = now;
}

}  // namespace bidmesh
