// MeshWorker: the gateway's requests to the mesh (list, get, history, bid), off the HTTP thread.
//
// A fixed set of threads, each owning one Client (client/client.h: Lazy Pirate retries with the
// same id, so a retried bid never counts twice) on the gateway's router. submit() queues a
// request frame; when the queue holds `queue_bound` requests it refuses at once (the caller
// answers 503 busy), so a slow mesh never grows the gateway's memory. Each reply (or nullopt when
// none came within the client's tries) is handed to `done` on the io_context's thread.
//
// Thread-safety: submit() and stop() from any thread; `done` runs on the io_context.
#pragma once

#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include <boost/asio/io_context.hpp>
#include <zmq.hpp>

#include "client/curve_keys.h"

namespace bidmesh::gateway {

class MeshWorker {
 public:
  using Done = std::function<void(std::optional<std::string> raw_reply)>;
  struct Options {
    std::string endpoint;              // the router's request endpoint
    std::optional<CurveKeys> curve;    // security = "curve": the gateway's agent keys
    int timeout_ms = 1500;             // per try
    int retries = 1;                   // more tries with the same frame
    std::size_t queue_bound = 256;
    int threads = 2;
  };
  MeshWorker(zmq::context_t& ctx, boost::asio::io_context& io, Options options);
  ~MeshWorker();  // stops and joins
  MeshWorker(const MeshWorker&) = delete;
  MeshWorker& operator=(const MeshWorker&) = delete;

  // Queues `frame`; false when the queue is full or the worker stopped.
  bool submit(std::string frame, Done done);
  void stop();
  std::size_t queued() const;

 private:
  void run();
  zmq::context_t& ctx_;
  boost::asio::io_context& io_;
  const Options options_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<std::pair<std::string, Done>> queue_;
  bool stopping_ = false;
  std::vector<std::thread> threads_;
};

}  // namespace bidmesh::gateway
