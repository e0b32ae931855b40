#pragma once

// The Generic Cell Rate Algorithm (GCRA): a token bucket kept as one number, the theoretical
// arrival time (TAT) of the next token once every token taken so far has been paid for. Its
// distance ahead of now is the bucket's backlog: 0 means the bucket is full (`burst` tokens),
// `burst` emission intervals means it is empty. Pure arithmetic over nanoseconds, so that the
// local table, per-connection buckets and the Redis script share one definition, and unit tests
// drive it with any clock.
//
// A take of `cost` tokens conforms when the backlog after it stays within the bucket, or when
// the bucket is full: a cost larger than the whole burst (a 1 MiB message against a 64 KiB/s
// byte limit) still passes once the bucket is full, and its debt then holds back what follows
// for as long as it takes to pay it.

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace sluice::filters::ratelimit {

class Gcra {
 public:
  Gcra() = default;
  // `rate` tokens per second (> 0), `burst` tokens (>= 1).
  Gcra(double rate, double burst)
      : rate_(rate), burst_(burst), interval_ns_(1e9 / rate), capacity_ns_(burst * 1e9 / rate) {}

  double rate() const { return rate_; }
  double burst() const { return burst_; }
  double intervalNs() const { return interval_ns_; }
  int64_t capacityNs() const { return static_cast<int64_t>(capacity_ns_); }

  // How far the bucket's TAT is ahead of `now` (0: full).
  static int64_t backlog(int64_t tat, int64_t now) { return tat > now ? tat - now : 0; }
  // (Rounded by hand: std::llround is a libm call, and this runs for every message.)
  int64_t costNs(double cost) const { return static_cast<int64_t>(cost * interval_ns_ + 0.5); }

  bool conforms(int64_t tat, int64_t now, double cost) const {
    int64_t b = backlog(tat, now);
    return b == 0 || static_cast<double>(b) + cost * interval_ns_ <= capacity_ns_;
  }
  // The TAT after taking `cost` tokens (whether or not the take conformed).
  int64_t take(int64_t tat, int64_t now, double cost) const {
    return std::max(tat, now) + costNs(cost);
  }
  // How long until a take of `cost` would conform (0: now).
  int64_t waitNs(int64_t tat, int64_t now, double cost) const {
    int64_t b = backlog(tat, now);
    if (b == 0) {
      return 0;
    }
    double over = static_cast<double>(b + costNs(cost)) - capacity_ns_;
    if (over <= 0) {
      return 0;
    }
    // A take larger than the bucket waits until it is full.
    return std::min(b, static_cast<int64_t>(std::ceil(over)));
  }
  // How long the backlog stays beyond the bucket (a shaped stream pauses that long).
  int64_t debtNs(int64_t tat, int64_t now) const {
    double over = static_cast<double>(backlog(tat, now)) - capacity_ns_;
    return over > 0 ? static_cast<int64_t>(std::ceil(over)) : 0;
  }
  // Whole tokens left now.
  double remaining(int64_t tat, int64_t now) const {
    double left = (capacity_ns_ - static_cast<double>(backlog(tat, now))) / interval_ns_;
    return left > 0 ? std::floor(left + 1e-9) : 0;
  }
  // Nanoseconds until the bucket is full again.
  int64_t resetNs(int64_t tat, int64_t now) const { return backlog(tat, now); }

 private:
  double rate_ = 1;
  double burst_ = 1;
  double interval_ns_ = 1e9;
  double capacity_ns_ = 1e9;
};

}  // namespace sluice::filters::ratelimit
