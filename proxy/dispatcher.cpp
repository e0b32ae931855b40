#include "proxy/dispatcher.h"

#include <algorithm>

#include "proxy/redis/client.h"

namespace sluice {

namespace {

// The libuv handle outlives the Timer that owns it until its close callback has run, so it
// lives apart and frees itself there (the one way a libuv handle may go away).
struct TimerHandle {
  uv_timer_t timer;
  std::function<void()> callback;
  bool firing = false;  // inside `callback`, which may destroy the LoopTimer
};

class LoopTimer : public filters::Timer {
 public:
  LoopTimer(uv_loop_t* loop, std::function<void()> callback) : h_(new TimerHandle) {
    uv_timer_init(loop, &h_->timer);
    h_->timer.data = h_;
    h_->callback = std::move(callback);
  }
  ~LoopTimer() override {
    uv_timer_stop(&h_->timer);
    if (!h_->firing) {
      h_->callback = nullptr;  // (a running callback is freed with the handle, after it returns)
    }
    uv_close(reinterpret_cast<uv_handle_t*>(&h_->timer),
             [](uv_handle_t* h) { delete static_cast<TimerHandle*>(h->data); });
  }
  LoopTimer(const LoopTimer&) = delete;
  LoopTimer& operator=(const LoopTimer&) = delete;

  void arm(std::chrono::milliseconds after) override {
    uv_timer_start(
        &h_->timer,
        [](uv_timer_t* t) {
          auto* h = static_cast<TimerHandle*>(t->data);
          h->firing = true;
          h->callback();  // may destroy the LoopTimer; `h` lives until its close callback
          h->firing = false;
        },
        static_cast<uint64_t>(std::max<int64_t>(after.count(), 0)), 0);
  }
  void disarm() override { uv_timer_stop(&h_->timer); }
  bool armed() const override {
    return uv_is_active(reinterpret_cast<const uv_handle_t*>(&h_->timer)) != 0;
  }

 private:
  TimerHandle* h_;
};

}  // namespace

std::unique_ptr<filters::RedisClient> LoopDispatcher::connectRedis(
    const filters::RedisOptions& options) {
  return redis::connect(loop_, *this, options);
}

std::unique_ptr<filters::Timer> LoopDispatcher::createTimer(std::function<void()> callback) {
  return std::make_unique<LoopTimer>(loop_, std::move(callback));
}

}  // namespace sluice
