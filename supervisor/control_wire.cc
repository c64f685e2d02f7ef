#include "supervisor/control_wire.h"

#include "protocol/json.h"
#include "protocol/msgpack_map.h"

#include <cstdio>

namespace bidmesh {

namespace {

// Limits: arrays of at most 4096 (nodes, args, log lines), maps of at most 32 keys, strings of
// at most 64 KiB, no bin or ext, depth 4.
const msgpack::unpack_limit kLimits(4096, 32, 64 * 1024, 0, 0, 4);

std::optional<msgpack::object_handle> unpack_frame(std::string_view frame) {
  if (frame.size() > kMaxControlFrameBytes || frame.empty()) return std::nullopt;
  try {
    std::size_t off = 0;
    msgpack::object_handle oh = msgpack::unpack(frame.data(), frame.size(), off, nullptr, nullptr, kLimits);
    if (off != frame.size()) return std::nullopt;
    if (oh.get().type != msgpack::type::MAP) return std::nullopt;
    return oh;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

std::optional<std::string> str_field(const msgpack::object& map, std::string_view key) {
  const msgpack::object* v = map_str_field(map, key);
  if (v == nullptr) return std::nullopt;
  return std::string(v->via.str.ptr, v->via.str.size);
}

}  // namespace

std::optional<PeerCredentials> parse_peer_credentials(std::string_view peer_address) {
  // The address before the fields may hold colons itself: read from the end.
  uint32_t fields[3] = {};
  std::string_view rest = peer_address;
  for (int i = 2; i >= 0; --i) {
    const auto colon = rest.rfind(':');
    if (colon == std::string_view::npos) return std::nullopt;
    const std::string_view digits = rest.substr(colon + 1);
    if (digits.empty() || digits.size() > 10) return std::nullopt;
    uint64_t v = 0;
    for (char c : digits) {
      if (c < '0' || c > '9') return std::nullopt;
      v = v * 10 + static_cast<uint64_t>(c - '0');
    }
    if (v > UINT32_MAX) return std::nullopt;
    fields[i] = static_cast<uint32_t>(v);
    rest = rest.substr(0, colon);
  }
  return PeerCredentials{fields[0], fields[1], fields[2]};
}

std::optional<std::string> control_refusal(const std::optional<PeerCredentials>& peer, uint32_t own_uid) {
  const std::string who = own_uid == 0 ? "only root" : "only uid " + std::to_string(own_uid) + " and root";
  if (!peer) return "refused: the sender's uid is unknown (no SO_PEERCRED on this connection); " + who + " may control this supervisor";
  if (peer->uid == own_uid || peer->uid == 0) return std::nullopt;
  return "refused: uid " + std::to_string(peer->uid) + " may not control this supervisor (" + who + "; SO_PEERCRED)";
}

std::string encode_ctl_request(const CtlRequest& r) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(2);
  pk.pack("cmd");
  pk.pack(r.cmd);
  pk.pack("args");
  pk.pack(r.args);
  return {buf.data(), buf.size()};
}

std::string encode_ctl_reply(const CtlReply& r) {
  msgpack::sbuffer buf;
  msgpack::packer<msgpack::sbuffer> pk(buf);
  pk.pack_map(3);
  pk.pack("ok");
  pk.pack(r.ok);
  pk.pack("message");
  pk.pack(r.message);
  pk.pack("data");
  if (const auto* s = std::get_if<std::string>(&r.data)) {
    pk.pack(*s);
  } else if (const auto* list = std::get_if<std::vector<NodeStatus>>(&r.data)) {
    pk.pack(*list);
  } else {
    pk.pack_nil();
  }
  return {buf.data(), buf.size()};
}

std::optional<ControlFrame> decode_control_frame(std::string_view frame) {
  auto oh = unpack_frame(frame);
  if (!oh) return std::nullopt;
  const msgpack::object& map = oh->get();
  if (auto cmd = str_field(map, "cmd")) {
    CtlRequest r;
    r.cmd = std::move(*cmd);
    if (const msgpack::object* args = map_field(map, "args")) {
      if (args->type != msgpack::type::ARRAY) return std::nullopt;
      for (uint32_t i = 0; i < args->via.array.size; ++i) {
        const msgpack::object& a = args->via.array.ptr[i];
        if (a.type != msgpack::type::STR) return std::nullopt;
        r.args.emplace_back(a.via.str.ptr, a.via.str.size);
      }
    }
    return ControlFrame{std::move(r)};
  }
  if (auto m = decode_node_message(frame)) return ControlFrame{std::move(*m)};
  return std::nullopt;
}

std::optional<CtlReply> decode_ctl_reply(std::string_view frame) {
  auto oh = unpack_frame(frame);
  if (!oh) return std::nullopt;
  const msgpack::object& map = oh->get();
  CtlReply r;
  const msgpack::object* ok = map_field(map, "ok");
  if (ok == nullptr || ok->type != msgpack::type::BOOLEAN) return std::nullopt;
  r.ok = ok->via.boolean;
  r.message = str_field(map, "message").value_or("");
  if (const msgpack::object* data = map_field(map, "data")) {
    try {
      if (data->type == msgpack::type::STR) {
        r.data = std::string(data->via.str.ptr, data->via.str.size);
      } else if (data->type == msgpack::type::ARRAY) {
        r.data = data->as<std::vector<NodeStatus>>();
      }
    } catch (const std::exception&) {
      return std::nullopt;
    }
  }
  return r;
}


std::string status_to_json(const NodeStatus& s) {
  std::string o = "{";
  auto str = [&](const char* k, const std::string& v) { o += json_quote(k) + ":" + json_quote(v) + ","; };
  auto num = [&](const char* k, uint64_t v) { o += json_quote(k) + ":" + std::to_string(v) + ","; };
  str("name", s.name);
  str("kind", s.kind);
  str("state", s.state);
  if (s.pid == 0) {
    o += "\"pid\":null,";
  } else {
    num("pid", s.pid);
  }
  num("restarts", s.restarts);
  num("uptime_ms", s.uptime_ms);
  str("last_exit", s.last_exit);
  str("reason", s.reason);
  str("policy", s.policy);
  str("host", s.host);
  str("note", s.note);
  o += "\"backoff_ms\":[";
  for (std::size_t i = 0; i < s.backoff_ms.size(); ++i) o += (i ? "," : "") + std::to_string(s.backoff_ms[i]);
  o += "],\"log_tail\":[";
  for (std::size_t i = 0; i < s.log_tail.size(); ++i) o += (i ? "," : "") + json_quote(s.log_tail[i]);
  o += "]}";
  return o;
}

std::string status_list_to_json(const std::vector<NodeStatus>& list) {
  std::string o = "[";
  for (std::size_t i = 0; i < list.size(); ++i) o += (i ? "," : "") + status_to_json(list[i]);
  return o + "]";
}

}  // namespace bidmesh
