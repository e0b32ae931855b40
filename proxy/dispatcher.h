#pragma once

// A worker's filters::Dispatcher: its loop's clock, libuv timers, posting work onto it from any
// thread, and Redis clients on its loop.

#include <functional>
#include <memory>

#include <uv.h>

#include "filters/filter.h"

namespace sluice {

class LoopDispatcher : public filters::Dispatcher {
 public:
  using Poster = std::function<void(std::function<void()>)>;
  // `post` queues a task for the loop's thread (thread-safe).
  LoopDispatcher(uv_loop_t* loop, unsigned worker_id, Poster post)
      : loop_(loop), worker_id_(worker_id), post_(std::move(post)) {}

  uint64_t nowMs() const override { return uv_now(loop_); }
  std::unique_ptr<filters::Timer> createTimer(std::function<void()> callback) override;
  void post(std::function<void()> task) override { post_(std::move(task)); }
  unsigned workerId() const override { return worker_id_; }
  std::unique_ptr<filters::RedisClient> connectRedis(const filters::RedisOptions& options) override;

 private:
  uv_loop_t* loop_;
  unsigned worker_id_;
  Poster post_;
};

}  // namespace sluice
