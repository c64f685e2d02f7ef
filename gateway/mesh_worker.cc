// The bounded request workers of mesh_worker.h.
#include "gateway/mesh_worker.h"

#include <boost/asio/post.hpp>

#include "client/client.h"

namespace bidmesh::gateway {

MeshWorker::MeshWorker(zmq::context_t& ctx, boost::asio::io_context& io, Options options)
    : ctx_(ctx), io_(io), options_(std::move(options)) {
  for (int i = 0; i < options_.threads; ++i) threads_.emplace_back([this] { run(); });
}

MeshWorker::~MeshWorker() { stop(); }

void MeshWorker::stop() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : threads_)
    if (t.joinable()) t.join();
}

std::size_t MeshWorker::queued() const {
  std::lock_guard<std::mutex> lock(mu_);
  return queue_.size();
}

bool MeshWorker::submit(std::string frame, Done done) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (stopping_ || queue_.size() >= options_.queue_bound) return false;
    queue_.emplace_back(std::move(frame), std::move(done));
  }
  cv_.notify_one();
  return true;
}

void MeshWorker::run() {
  Client client(ctx_, options_.endpoint, options_.timeout_ms, options_.retries, {}, options_.curve);
  while (true) {
    std::pair<std::string, Done> job;
    {
      std::unique_lock<std::mutex> lock(mu_);
      // Bounded wait: stop() also notifies, the timeout only guards against a lost wake-up.
      cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return stopping_ || !queue_.empty(); });
      if (stopping_) return;
      if (queue_.empty()) continue;
      job = std::move(queue_.front());
      queue_.pop_front();
    }
    std::optional<std::string> reply = client.call_raw(job.first);
    boost::asio::post(io_, [done = std::move(job.second), reply = std::move(reply)]() mutable { done(std::move(reply)); });
  }
}

}  // namespace bidmesh::gateway
