#include "proxy/memory_budget.h"

namespace sluice {

void MemoryBudget::set(Holder& h, size_t bytes) {
  if (bytes == h.held_) {
    return;
  }
  total_ = total_ - h.held_ + bytes;
  if (h.held_ == 0) {
    h.slot_ = holders_.size();
    holders_.push_back(&h);
  } else if (bytes == 0) {
    holders_[h.slot_] = holders_.back();
    holders_[h.slot_]->slot_ = h.slot_;
    holders_.pop_back();
    h.slot_ = SIZE_MAX;
  }
  h.held_ = bytes;
}

void MemoryBudget::updateSlow(Holder& holder, size_t bytes) {
  set(holder, bytes);
  if (cap_ == 0 || total_ <= cap_ || shedding_) {
    return;
  }
  // The largest first: the fewest connections ended for the most memory.
  shedding_ = true;
  while (total_ > cap_ && !holders_.empty()) {
    Holder* largest = holders_.front();
    for (Holder* h : holders_) {
      if (h->held_ > largest->held_) {
        largest = h;
      }
    }
    set(*largest, 0);
    ++shed_;
    largest->shed();
  }
  shedding_ = false;
}

}  // namespace sluice
