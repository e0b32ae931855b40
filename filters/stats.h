#pragma once

// A filter's own metrics. A filter declares its series when the snapshot binds its metrics (on
// the main thread, through `Stats`), keeps the handles, and increments them on its worker: one
// cell per worker, each with a single writer, summed when scraped. Handles of a filter built
// without metrics (`--check`, unit tests) are empty and count nothing.

#include <array>
#include <atomic>
#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::filters {

// One worker's part of a series; cache-line sized so two workers never share a line.
struct alignas(64) StatCell {
  std::atomic<uint64_t> value{0};
  void add(uint64_t n) {
    value.store(value.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  }
  uint64_t get() const { return value.load(std::memory_order_relaxed); }
};

class Counter {
 public:
  Counter() = default;
  explicit Counter(StatCell* cells) : cells_(cells) {}
  void inc(unsigned worker, uint64_t n = 1) const {
    if (cells_ != nullptr) {
      cells_[worker].add(n);
    }
  }
  bool bound() const { return cells_ != nullptr; }

 private:
  StatCell* cells_ = nullptr;  // one per worker
};

// A value that goes up and down (a table's size): each worker adds its own changes to its cell;
// the scrape sums them.
class Gauge {
 public:
  Gauge() = default;
  explicit Gauge(StatCell* cells) : cells_(cells) {}
  void add(unsigned worker, int64_t n) const {
    if (cells_ != nullptr) {
      cells_[worker].add(static_cast<uint64_t>(n));  // two's complement: the sum comes out signed
    }
  }
  bool bound() const { return cells_ != nullptr; }

 private:
  StatCell* cells_ = nullptr;  // one per worker
};

// Upper bounds (seconds) of the histograms filters may declare: 100 µs to 10 s.
inline constexpr std::array<double, 12> kFilterLatencyBounds = {
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1, 10};

// Per worker: a count per bucket (the last is +Inf) and the sum in microseconds.
struct alignas(64) HistogramCells {
  std::array<std::atomic<uint64_t>, kFilterLatencyBounds.size() + 1> buckets{};
  std::atomic<uint64_t> sum_micros{0};
};

class LatencyHistogram {
 public:
  LatencyHistogram() = default;
  explicit LatencyHistogram(HistogramCells* cells) : cells_(cells) {}
  void observe(unsigned worker, double seconds) const;

 private:
  HistogramCells* cells_ = nullptr;  // one per worker
};

using Labels = std::vector<std::pair<std::string, std::string>>;

// Implemented by the proxy's metrics registry. Thread-safe: a filter may declare a series with
// label values it learns at run time (a WAF rule id); declaring one is a map lookup under a lock,
// so filters keep the handles they use often. A series lives as long as the process.
class Stats {
 public:
  virtual ~Stats() = default;
  // `family` is the full metric name ("sluice_filter_..._total", or a name the operator contract
  // fixes, such as "sluice_auth_decisions_total"); `labels` its label names and values.
  virtual Counter counter(std::string_view family, std::string_view help, const Labels& labels) = 0;
  virtual LatencyHistogram histogram(std::string_view family, std::string_view help,
                                     const Labels& labels) = 0;
  virtual Gauge gauge(std::string_view family, std::string_view help, const Labels& labels) = 0;
};

inline void LatencyHistogram::observe(unsigned worker, double seconds) const {
  if (cells_ == nullptr) {
    return;
  }
  HistogramCells& c = cells_[worker];
  size_t i = 0;
  while (i < kFilterLatencyBounds.size() && seconds > kFilterLatencyBounds[i]) {
    ++i;
  }
  auto add = [](std::atomic<uint64_t>& a, uint64_t n) {
    a.store(a.load(std::memory_order_relaxed) + n, std::memory_order_relaxed);
  };
  add(c.buckets[i], 1);
  add(c.sum_micros, static_cast<uint64_t>(seconds * 1e6));
}

}  // namespace sluice::filters
