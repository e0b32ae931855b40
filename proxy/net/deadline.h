#pragma once

// A one-shot timeout that is cheap to move. Connections re-arm their timeouts several times per
// request (header, body gaps, response gaps, keep-alive idle), and a libuv timer costs a heap
// update each time it is started or stopped. A Deadline only records when it expires; its libuv
// timer is started when the deadline comes earlier than the time the timer is set for, and
// otherwise left alone. When the timer fires before the deadline (which moved later meanwhile),
// it sets itself for what remains. So a busy keep-alive connection moves its timer about once
// per timeout period, not several times per request (nginx keeps its timers the same way).

#include <chrono>
#include <cstdint>

#include <uv.h>

namespace sluice::net {

class Deadline {
 public:
  using Callback = void (*)(void* owner);

  // `on_expiry(owner)` runs on the loop when an armed deadline passes.
  Deadline(uv_loop_t* loop, void* owner, Callback on_expiry);
  Deadline(const Deadline&) = delete;
  Deadline& operator=(const Deadline&) = delete;

  // Expires `after` the loop's current time, replacing any earlier deadline.
  void arm(std::chrono::milliseconds after);
  // Never expires (until armed again).
  void disarm() { due_ = kNever; }
  bool armed() const { return due_ != kNever; }

  // Closes the libuv handle: the Deadline must live until `on_closed(owner)` has run.
  void close(Callback on_closed);

 private:
  static constexpr uint64_t kNever = UINT64_MAX;
  static void onFire(uv_timer_t* t);
  static void onClose(uv_handle_t* h);

  uv_timer_t timer_;
  void* owner_;
  Callback on_expiry_;
  Callback on_closed_ = nullptr;
  uint64_t due_ = kNever;      // loop time at which the deadline passes
  uint64_t set_for_ = kNever;  // loop time the libuv timer fires at (kNever: stopped)
};

}  // namespace sluice::net
