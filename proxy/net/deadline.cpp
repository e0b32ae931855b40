#include "proxy/net/deadline.h"

namespace sluice::net {

Deadline::Deadline(uv_loop_t* loop, void* owner, Callback on_expiry)
    : owner_(owner), on_expiry_(on_expiry) {
  uv_timer_init(loop, &timer_);
  timer_.data = this;
}

void Deadline::arm(std::chrono::milliseconds after) {
  auto ms = static_cast<uint64_t>(after.count());
  uint64_t now = uv_now(timer_.loop);
  due_ = now + ms;
  if (due_ < set_for_) {
    set_for_ = due_;
    uv_timer_start(&timer_, &Deadline::onFire, ms, 0);
  }
}

void Deadline::onFire(uv_timer_t* t) {
  auto* self = static_cast<Deadline*>(t->data);
  self->set_for_ = kNever;
  if (self->due_ == kNever) {
    return;
  }
  uint64_t now = uv_now(t->loop);
  if (now < self->due_) {
    self->set_for_ = self->due_;
    uv_timer_start(t, &Deadline::onFire, self->due_ - now, 0);
    return;
  }
  self->due_ = kNever;
  self->on_expiry_(self->owner_);
}

void Deadline::close(Callback on_closed) {
  due_ = kNever;
  on_closed_ = on_closed;
  uv_close(reinterpret_cast<uv_handle_t*>(&timer_), &Deadline::onClose);
}

void Deadline::onClose(uv_handle_t* h) {
  auto* self = static_cast<Deadline*>(h->data);
  self->on_closed_(self->owner_);
}

}  // namespace sluice::net
