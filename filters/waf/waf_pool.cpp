#include "filters/waf/waf_pool.h"

#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>

namespace sluice::filters::waf {

WafPool::WafPool(size_t threads, size_t queue_capacity, int nice)
    : capacity_(std::max<size_t>(1, queue_capacity)), nice_(nice) {
  threads = std::max<size_t>(1, threads);
  threads_.reserve(threads);
  for (size_t i = 0; i < threads; ++i) {
    threads_.emplace_back([this] { loop(); });
  }
}

WafPool::~WafPool() {
  shutdown();
}

bool WafPool::submit(Job job) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_ || queue_.size() >= capacity_) {
      ++stats_.rejected;
      return false;
    }
    queue_.push_back(std::move(job));
    ++stats_.submitted;
  }
  wake_.notify_one();
  return true;
}

void WafPool::shutdown() {
  std::deque<Job> left;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (stopping_) {
      return;
    }
    stopping_ = true;
    left.swap(queue_);
    stats_.cancelled += left.size();
  }
  wake_.notify_all();
  for (std::thread& t : threads_) {
    t.join();
  }
  // Every accepted job hears back exactly once, here on the thread that shuts down (the pool's
  // threads are gone).
  for (Job& job : left) {
    job.fn(Outcome::kCancelled);
  }
}

size_t WafPool::queued() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return queue_.size();
}

WafPool::Stats WafPool::stats() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return stats_;
}

void WafPool::loop() {
  if (nice_ > 0) {
    // On Linux a nice value belongs to a thread; failing to lower it is harmless.
    setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), nice_);
  }
  for (;;) {
    Job job;
    Outcome outcome;
    {
      std::unique_lock<std::mutex> lock(mutex_);
      wake_.wait(lock, [this] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) {
        return;  // stopping
      }
      job = std::move(queue_.front());
      queue_.pop_front();
      outcome = Clock::now() >= job.deadline ? Outcome::kExpired : Outcome::kRun;
      ++(outcome == Outcome::kRun ? stats_.run : stats_.expired);
    }
    job.fn(outcome);
  }
}

}  // namespace sluice::filters::waf
