#pragma once

// WafPool: a fixed set of threads with a bounded queue, where WAF evaluations run so that no
// event loop ever waits for ModSecurity. submit() never blocks: a full queue is the caller's
// overload signal (it applies on_overload). Every accepted job has a deadline, its time budget;
// a job still queued when its deadline passes is not evaluated but completed as expired, so a
// backlog drains at once instead of making every later verdict late too.
//
// The job's function runs on a pool thread, exactly once per accepted job, with the outcome:
// kRun (evaluate now, then report), kExpired (the deadline passed in the queue) or kCancelled
// (the pool shut down first). It must not throw; it should post its result to the worker loop
// that submitted it.

#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sluice::filters::waf {

class WafPool {
 public:
  using Clock = std::chrono::steady_clock;
  enum class Outcome : uint8_t { kRun, kExpired, kCancelled };

  struct Job {
    Clock::time_point deadline;
    std::function<void(Outcome)> fn;
  };

  struct Stats {
    uint64_t submitted = 0;  // accepted by submit()
    uint64_t rejected = 0;   // refused by submit(): queue full or shut down
    uint64_t run = 0;
    uint64_t expired = 0;
    uint64_t cancelled = 0;
  };

  // `threads` >= 1; `queue_capacity` >= 1 jobs waiting (running ones do not count). `nice` > 0
  // lowers the threads' scheduling priority (Linux: per thread), so that event loops sharing the
  // CPUs with a saturated pool keep theirs: the WAF's cost becomes its own queueing, not latency
  // for every other connection.
  WafPool(size_t threads, size_t queue_capacity, int nice = 0);
  ~WafPool();  // shutdown()
  WafPool(const WafPool&) = delete;
  WafPool& operator=(const WafPool&) = delete;

  // False (and `job.fn` is never called) when the queue is full or the pool is shut down.
  bool submit(Job job);

  // Stops taking jobs, completes the queued ones as kCancelled, lets running ones finish and joins
  // the threads. Idempotent; not to be called from a pool thread.
  void shutdown();

  size_t queued() const;
  Stats stats() const;
  size_t threads() const { return threads_.size(); }

 private:
  void loop();

  const size_t capacity_;
  const int nice_;
  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  Stats stats_;
  std::vector<std::thread> threads_;
};

}  // namespace sluice::filters::waf
