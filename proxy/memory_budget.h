#pragma once

// A worker's budget for what its connections hold beyond their fixed state: WebSocket messages
// held for validation, filters or compression, request bodies a filter waits for whole, response
// bodies held behind a response filter. Every such buffer is bounded on its own (max_message_bytes,
// max_body_bytes), but many connections at their bounds at once could take the process down. Over
// the cap, the largest holders are shed (a WebSocket closed with 1008, a request answered 503)
// until the total is back under it. Single-threaded: one per worker.

#include <cstddef>
#include <cstdint>
#include <vector>

namespace sluice {

class MemoryBudget {
 public:
  class Holder {
   public:
    virtual ~Holder() = default;
    // Give back what is held by ending the connection (the budget has stopped counting it).
    virtual void shed() = 0;

   private:
    friend class MemoryBudget;
    size_t held_ = 0;
    size_t slot_ = SIZE_MAX;  // in holders_ while held_ > 0
  };

  explicit MemoryBudget(uint64_t cap = 0) : cap_(cap) {}
  MemoryBudget(const MemoryBudget&) = delete;
  MemoryBudget& operator=(const MemoryBudget&) = delete;

  // 0: no cap.
  void setCap(uint64_t cap) { cap_ = cap; }
  // `holder` holds `bytes` now (instead of what it held before). May shed holders, this one
  // included, before it returns.
  void update(Holder& holder, size_t bytes) {
    // Inline for the common case, asked after every read: nothing changed and nothing to shed.
    if (bytes == holder.held_ && (cap_ == 0 || total_ <= cap_)) {
      return;
    }
    updateSlow(holder, bytes);
  }
  // The holder goes away: forget it.
  void release(Holder& holder) { set(holder, 0); }

  uint64_t total() const { return total_; }
  uint64_t shed() const { return shed_; }

 private:
  void set(Holder& holder, size_t bytes);
  void updateSlow(Holder& holder, size_t bytes);

  std::vector<Holder*> holders_;  // those holding anything
  uint64_t total_ = 0;
  uint64_t cap_;
  uint64_t shed_ = 0;
  bool shedding_ = false;
};

}  // namespace sluice
