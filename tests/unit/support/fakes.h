#pragma once

// Test doubles for the filter API: a dispatcher with a hand-driven clock and timers, and stream
// callbacks that record what a filter asked for.

#include <algorithm>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "filters/filter.h"
#include "filters/stats.h"

namespace sluice::testing {

class FakeDispatcher : public filters::Dispatcher {
 public:
  class FakeTimer : public filters::Timer {
   public:
    FakeTimer(FakeDispatcher* d, std::function<void()> cb) : d_(d), cb_(std::move(cb)) {
      d_->timers_.push_back(this);
    }
    ~FakeTimer() override { std::erase(d_->timers_, this); }
    void arm(std::chrono::milliseconds after) override {
      due_ = d_->now_ + static_cast<uint64_t>(after.count());
      armed_ = true;
    }
    void disarm() override { armed_ = false; }
    bool armed() const override { return armed_; }

   private:
    friend class FakeDispatcher;
    FakeDispatcher* d_;
    std::function<void()> cb_;
    uint64_t due_ = 0;
    bool armed_ = false;
  };

  uint64_t nowMs() const override { return now_; }
  std::unique_ptr<filters::Timer> createTimer(std::function<void()> callback) override {
    return std::make_unique<FakeTimer>(this, std::move(callback));
  }
  void post(std::function<void()> task) override { posted_.push_back(std::move(task)); }
  unsigned workerId() const override { return 0; }

  // Moves the clock on by `ms`, firing due timers in order (a callback may arm or destroy
  // timers), then runs posted tasks.
  void advance(uint64_t ms) {
    uint64_t until = now_ + ms;
    for (;;) {
      FakeTimer* next = nullptr;
      for (FakeTimer* t : timers_) {
        if (t->armed_ && t->due_ <= until && (next == nullptr || t->due_ < next->due_)) {
          next = t;
        }
      }
      if (next == nullptr) {
        break;
      }
      now_ = std::max(now_, next->due_);
      next->armed_ = false;
      next->cb_();
    }
    now_ = until;
    runPosted();
  }
  void runPosted() {
    while (!posted_.empty()) {
      auto tasks = std::move(posted_);
      posted_.clear();
      for (auto& t : tasks) {
        t();
      }
    }
  }
  size_t armedTimers() const {
    return static_cast<size_t>(
        std::count_if(timers_.begin(), timers_.end(), [](FakeTimer* t) { return t->armed_; }));
  }

 private:
  uint64_t now_ = 1000;
  std::vector<FakeTimer*> timers_;
  std::vector<std::function<void()>> posted_;
};

// Records what one filter instance asked of its stream.
class FakeCallbacks : public filters::StreamCallbacks {
 public:
  const filters::StreamInfo& info() const override { return info_; }
  filters::Dispatcher& dispatcher() override { return dispatcher_; }
  filters::WorkerState* workerState() override { return state_; }
  void resume() override { ++resumes; }
  void sendLocalReply(uint16_t status, std::string_view reason, std::string_view headers,
                      bool close_connection) override {
    reply_close = close_connection;
    reply_status = status;
    reply_reason = reason;
    reply_headers = headers;
  }
  void closeWebSocket(uint16_t code, std::string_view reason) override {
    close_code = code;
    close_reason = reason;
  }
  void dropMessage(std::string_view reason) override { drop_reason = reason; }
  void resumeMessage(filters::Direction, filters::MessageVerdict verdict) override {
    verdicts.push_back(std::move(verdict));
  }
  void readDisable(filters::Direction, bool disable) override { read_disabled += disable ? 1 : -1; }
  // As the FilterManager does: auth notes are joined with a space, the path is replaced.
  void setLogField(filters::LogField field, std::string_view value) override {
    if (field == filters::LogField::kPath) {
      log_path = value;
    } else {
      log_auth += (log_auth.empty() ? "" : " ") + std::string(value);
    }
  }
  void setAttribute(std::string_view name, std::string_view value) override {
    attributes[std::string(name)] = value;
  }
  std::optional<std::string_view> attribute(std::string_view name) const override {
    auto it = attributes.find(std::string(name));
    return it == attributes.end() ? std::nullopt : std::optional<std::string_view>(it->second);
  }

  filters::StreamInfo info_;
  FakeDispatcher dispatcher_;
  filters::WorkerState* state_ = nullptr;
  int resumes = 0;
  uint16_t reply_status = 0;
  std::string reply_reason;
  std::string reply_headers;
  bool reply_close = false;
  uint16_t close_code = 0;
  std::string close_reason;
  std::string drop_reason;
  std::vector<filters::MessageVerdict> verdicts;
  int read_disabled = 0;
  std::string log_auth;
  std::string log_path;
  std::map<std::string, std::string> attributes;
};

// Records what a filter declares in its Stats (one cell per series: worker 0), for tests to
// read back. Series are named "family,label=value,..." with the labels in declaration order.
// Thread-safe: a filter may declare series from its pool threads.
class RecordingStats : public filters::Stats {
 public:
  filters::Counter counter(std::string_view family, std::string_view,
                           const filters::Labels& labels) override {
    return filters::Counter(cell(family, labels));
  }
  filters::LatencyHistogram histogram(std::string_view family, std::string_view,
                                      const filters::Labels& labels) override {
    std::lock_guard lock(mutex_);
    auto& h = histograms_[key(family, labels)];
    if (!h) {
      h = std::make_unique<filters::HistogramCells>();
    }
    return filters::LatencyHistogram(h.get());
  }
  filters::Gauge gauge(std::string_view family, std::string_view,
                       const filters::Labels& labels) override {
    return filters::Gauge(cell(family, labels));
  }
  // A series' value: 0 when it was never declared.
  uint64_t value(const std::string& series) {
    std::lock_guard lock(mutex_);
    auto it = cells_.find(series);
    return it == cells_.end() ? 0 : it->second->get();
  }
  // The same by family and labels: -1 when it was never declared.
  int64_t get(std::string_view family, const filters::Labels& labels) {
    std::lock_guard lock(mutex_);
    auto it = cells_.find(key(family, labels));
    return it == cells_.end() ? -1 : static_cast<int64_t>(it->second->get());
  }
  uint64_t histogramCount(std::string_view family, const filters::Labels& labels) {
    std::lock_guard lock(mutex_);
    auto it = histograms_.find(key(family, labels));
    uint64_t n = 0;
    if (it != histograms_.end()) {
      for (auto& b : it->second->buckets) {
        n += b.load();
      }
    }
    return n;
  }

 private:
  static std::string key(std::string_view family, const filters::Labels& labels) {
    std::string s(family);
    for (const auto& [k, v] : labels) {
      s += "," + k + "=" + v;
    }
    return s;
  }
  filters::StatCell* cell(std::string_view family, const filters::Labels& labels) {
    std::lock_guard lock(mutex_);
    auto& c = cells_[key(family, labels)];
    if (!c) {
      c = std::make_unique<filters::StatCell>();
    }
    return c.get();
  }

  std::mutex mutex_;
  std::map<std::string, std::unique_ptr<filters::StatCell>> cells_;
  std::map<std::string, std::unique_ptr<filters::HistogramCells>> histograms_;
};

}  // namespace sluice::testing
