// The floor of bidmesh's shape WITH a store: ../shared/peers/mesh_floor.cpp's proxy and nodes,
// where each node also applies every request to LMDB the way a bid node must, and nothing else.
// It answers what the shape costs once each bid updates an on-disk B-tree, so that bidmesh can be
// judged on what it adds beyond that (docs/benchmarks.md, eleventh session). Not bidmesh: no
// rules, no validation, no feed, no pruning, no metrics; a yardstick run beside bidmesh.
//
//   store_floor proxy FRONT NODE...      ROUTER bound on FRONT, a DEALER connected to each NODE;
//                                        each request goes to the node its "item" hashes to
//   store_floor node BIND DIR [nosync]   ROUTER bound on BIND; drains every waiting request (up to
//                                        1024) and, per request, in one LMDB write transaction
//                                        kept open between checkpoints: looks up the request
//                                        record (id, item), reads the item's state, puts the new
//                                        state, the event and the request record (bidmesh's three
//                                        puts and two reads per write). Then ONE write + ONE
//                                        fdatasync of 128 bytes per request into a pre-written
//                                        log file per batch (none with nosync), then the replies.
//                                        A checkpoint (synced LMDB commit, also with nosync) once
//                                        64 KiB of log or 1 s has passed since the last one:
//                                        bidmesh's defaults.
//
// Build: g++ -O2 -std=c++17 -pthread store_floor.cpp -lzmq -llmdb (store-floor.sh does it).
// Every LMDB error ends the process with its message (exit 111): a yardstick has no recovery.
#define MSGPACK_NO_BOOST
#include <fcntl.h>
#include <lmdb.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <msgpack.hpp>
#include <zmq.hpp>
#include <zmq_addon.hpp>

namespace {

// The "item" field of a request, or empty (then any node takes it).
std::string item_of(const zmq::message_t &body) {
    try {
        msgpack::object_handle h = msgpack::unpack(static_cast<const char *>(body.data()), body.size());
        const msgpack::object &o = h.get();
        if (o.type != msgpack::type::MAP) return {};
        for (uint32_t i = 0; i < o.via.map.size; ++i) {
            const auto &kv = o.via.map.ptr[i];
            if (kv.key.type == msgpack::type::STR && kv.val.type == msgpack::type::STR && kv.key.as<std::string>() == "item")
                return kv.val.as<std::string>();
        }
    } catch (...) {
    }
    return {};
}

// Unlike mesh_floor's round robin, each request goes to the node its item hashes to, as bidmesh's
// router sends it to the item's owner: each node then holds only its own items' pages.
int proxy(int argc, char **argv) {
    zmq::context_t ctx(1);
    zmq::socket_t front(ctx, zmq::socket_type::router);
    std::vector<zmq::socket_t> backs;
    for (int i = 3; i < argc; ++i) backs.emplace_back(ctx, zmq::socket_type::dealer);
    front.set(zmq::sockopt::sndhwm, 100000);
    front.set(zmq::sockopt::rcvhwm, 100000);
    for (auto &b : backs) {
        b.set(zmq::sockopt::sndhwm, 100000);
        b.set(zmq::sockopt::rcvhwm, 100000);
    }
    front.bind(argv[2]);
    for (size_t i = 0; i < backs.size(); ++i) backs[i].connect(argv[3 + i]);
    std::vector<zmq::pollitem_t> items{{front.handle(), 0, ZMQ_POLLIN, 0}};
    for (auto &b : backs) items.push_back({b.handle(), 0, ZMQ_POLLIN, 0});
    const std::hash<std::string> hash;
    for (;;) {
        zmq::poll(items.data(), items.size(), std::chrono::milliseconds(-1));
        for (int n = 0; n < 1024; ++n) {  // [client identity, "", request] -> the item's node
            std::vector<zmq::message_t> frames;
            if (!zmq::recv_multipart(front, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
            if (frames.empty()) continue;
            zmq::socket_t &to = backs[hash(item_of(frames.back())) % backs.size()];
            (void)zmq::send_multipart(to, frames, zmq::send_flags::dontwait);
        }
        for (auto &b : backs) {  // [client identity, "", reply] -> the client
            for (int n = 0; n < 1024; ++n) {
                std::vector<zmq::message_t> frames;
                if (!zmq::recv_multipart(b, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
                (void)zmq::send_multipart(front, frames, zmq::send_flags::dontwait);
            }
        }
    }
}

void check(int rc, const char *what) {
    if (rc == 0) return;
    std::fprintf(stderr, "store_floor: %s: %s\n", what, mdb_strerror(rc));
    std::exit(111);
}

MDB_val val(std::string_view s) { return MDB_val{s.size(), const_cast<char *>(s.data())}; }

// The request's string fields that key the records; {ok: true, seq, every field but op} back.
struct Parsed {
    std::string id, item;
    std::string reply;
};

Parsed parse(const zmq::message_t &body, uint64_t seq) {
    Parsed p;
    msgpack::sbuffer buf;
    msgpack::packer<msgpack::sbuffer> pk(buf);
    try {
        msgpack::object_handle h = msgpack::unpack(static_cast<const char *>(body.data()), body.size());
        const msgpack::object &o = h.get();
        if (o.type != msgpack::type::MAP) throw std::runtime_error("not a map");
        uint32_t keep = 0;
        for (uint32_t i = 0; i < o.via.map.size; ++i) {
            const auto &kv = o.via.map.ptr[i];
            if (kv.key.type != msgpack::type::STR) continue;
            const std::string key = kv.key.as<std::string>();
            if (key != "op") ++keep;
            if (key == "id" && kv.val.type == msgpack::type::STR) p.id = kv.val.as<std::string>();
            if (key == "item" && kv.val.type == msgpack::type::STR) p.item = kv.val.as<std::string>();
        }
        pk.pack_map(keep + 2);
        pk.pack(std::string("ok"));
        pk.pack(true);
        pk.pack(std::string("seq"));
        pk.pack(seq);
        for (uint32_t i = 0; i < o.via.map.size; ++i) {
            const auto &kv = o.via.map.ptr[i];
            if (kv.key.type != msgpack::type::STR || kv.key.as<std::string>() == "op") continue;
            pk.pack(kv.key);
            pk.pack(kv.val);
        }
    } catch (...) {
        buf.clear();
        pk.pack_map(2);
        pk.pack(std::string("ok"));
        pk.pack(false);
        pk.pack(std::string("error"));
        pk.pack(std::string("bad_request"));
    }
    p.reply.assign(buf.data(), buf.size());
    return p;
}

struct Store {
    MDB_env *env = nullptr;
    MDB_dbi data = 0, requests = 0;
    MDB_txn *txn = nullptr;

    explicit Store(const char *dir) {
        check(mdb_env_create(&env), "mdb_env_create");
        check(mdb_env_set_maxdbs(env, 4), "mdb_env_set_maxdbs");
        check(mdb_env_set_mapsize(env, size_t(4) << 30), "mdb_env_set_mapsize");
        check(mdb_env_open(env, dir, MDB_NORDAHEAD, 0600), "mdb_env_open");
        begin();
        check(mdb_dbi_open(txn, "data", MDB_CREATE, &data), "mdb_dbi_open data");
        check(mdb_dbi_open(txn, "requests", MDB_CREATE, &requests), "mdb_dbi_open requests");
    }
    void begin() { check(mdb_txn_begin(env, nullptr, 0, &txn), "mdb_txn_begin"); }
    void checkpoint() {  // a synced commit: the env has no MDB_NOSYNC
        check(mdb_txn_commit(txn), "mdb_txn_commit");
        begin();
    }

    // bidmesh's work per write on its trees: the request record looked up, the state read, then
    // the state, the event and the request record put. Returns the reply to send.
    std::string apply(const Parsed &p, const zmq::message_t &body) {
        std::string key = p.id;
        key.push_back('\0');
        key += p.item;
        MDB_val k = val(key), v{};
        int rc = mdb_get(txn, requests, &k, &v);
        if (rc == 0) return std::string(static_cast<const char *>(v.mv_data), v.mv_size);
        if (rc != MDB_NOTFOUND) check(rc, "mdb_get request");
        std::string state_key = p.item;
        state_key.push_back('\0');
        state_key.push_back('\x02');
        uint64_t seq = 0;
        MDB_val sk = val(state_key), sv{};
        rc = mdb_get(txn, data, &sk, &sv);
        if (rc == 0 && sv.mv_size >= sizeof seq) std::memcpy(&seq, sv.mv_data, sizeof seq);
        else if (rc != MDB_NOTFOUND && rc != 0) check(rc, "mdb_get state");
        ++seq;
        std::string state(32, '\0');
        std::memcpy(state.data(), &seq, sizeof seq);
        MDB_val new_state = val(state);
        check(mdb_put(txn, data, &sk, &new_state, 0), "mdb_put state");
        std::string event_key = p.item;
        event_key.push_back('\0');
        event_key.push_back('\x01');
        for (int shift = 56; shift >= 0; shift -= 8) event_key.push_back(static_cast<char>(seq >> shift));
        MDB_val ek = val(event_key);
        MDB_val ev{body.size(), const_cast<void *>(body.data())};
        check(mdb_put(txn, data, &ek, &ev, 0), "mdb_put event");
        MDB_val rv = val(p.reply);
        check(mdb_put(txn, requests, &k, &rv, 0), "mdb_put request");
        return p.reply;
    }
};

int node(int argc, char **argv) {
    const bool sync = !(argc > 4 && std::strcmp(argv[4], "nosync") == 0);
    const size_t kRecord = 128, kFile = size_t(256) << 20, kCheckpointBytes = 64 << 10;
    const std::string dir = argv[3];
    const std::string log_path = dir + "/log";
    int fd = open(log_path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    if (fd < 0) { perror("open"); return 111; }
    std::vector<char> zero(size_t(1) << 20, 0);
    for (size_t off = 0; off < kFile; off += zero.size())
        if (write(fd, zero.data(), zero.size()) != ssize_t(zero.size())) { perror("write"); return 111; }
    fsync(fd);
    Store store(dir.c_str());
    zmq::context_t ctx(1);
    zmq::socket_t sock(ctx, zmq::socket_type::router);
    sock.set(zmq::sockopt::sndhwm, 100000);
    sock.set(zmq::sockopt::rcvhwm, 100000);
    sock.bind(argv[2]);
    std::fprintf(stderr, "store floor node on %s, %s\n", argv[2], sync ? "fdatasync per batch" : "no fsync");
    uint64_t seq = 0, off = 0, since_checkpoint = 0;
    auto last_checkpoint = std::chrono::steady_clock::now();
    std::vector<std::vector<zmq::message_t>> batch;
    std::vector<std::string> replies;
    std::string records;
    for (;;) {
        zmq::pollitem_t item{sock.handle(), 0, ZMQ_POLLIN, 0};
        zmq::poll(&item, 1, std::chrono::milliseconds(100));
        batch.clear();
        replies.clear();
        records.clear();
        while (batch.size() < 1024) {
            std::vector<zmq::message_t> frames;
            if (!zmq::recv_multipart(sock, std::back_inserter(frames), zmq::recv_flags::dontwait)) break;
            const zmq::message_t &body = frames.back();
            const Parsed p = parse(body, ++seq);
            replies.push_back(p.id.empty() || p.item.empty() ? p.reply : store.apply(p, body));
            std::string rec(static_cast<const char *>(body.data()), std::min(body.size(), kRecord));
            rec.resize(kRecord, '\0');
            records += rec;
            batch.push_back(std::move(frames));
        }
        if (!batch.empty()) {
            if (off + records.size() > kFile) off = 0;
            if (pwrite(fd, records.data(), records.size(), off) != ssize_t(records.size())) { perror("pwrite"); return 111; }
            off += records.size();
            since_checkpoint += records.size();
            if (sync) fdatasync(fd);
            for (size_t i = 0; i < batch.size(); ++i) {
                batch[i].back() = zmq::message_t(replies[i].data(), replies[i].size());
                zmq::send_multipart(sock, batch[i]);
            }
        }
        const auto now = std::chrono::steady_clock::now();
        if (since_checkpoint >= kCheckpointBytes || (since_checkpoint > 0 && now - last_checkpoint >= std::chrono::seconds(1))) {
            store.checkpoint();
            since_checkpoint = 0;
            last_checkpoint = now;
        }
    }
}

}  // namespace

int main(int argc, char **argv) {
    if (argc >= 4 && std::strcmp(argv[1], "proxy") == 0) return proxy(argc, argv);
    if (argc >= 4 && std::strcmp(argv[1], "node") == 0) return node(argc, argv);
    std::fprintf(stderr, "usage: store_floor proxy FRONT NODE... | store_floor node BIND DIR [nosync]\n");
    return 100;
}
