#pragma once

// How an object that owns libuv-backed handles (streams, timers) frees itself: a libuv handle
// may only go away in its close callback, so the owner counts the handles still open and
// deletes itself in the callback of the last one. Every such owner (an HTTP connection, an
// upstream connection, a WebSocket session) does it this one way.

#include <cstdint>

namespace sluice::net {

class OpenHandles {
 public:
  explicit OpenHandles(uint8_t count) : open_(count) {}
  // One of them has closed (or was handed to another owner). True when it was the last: the
  // owner deletes itself now.
  [[nodiscard]] bool closed() { return --open_ == 0; }
  uint8_t open() const { return open_; }

 private:
  uint8_t open_;
};

}  // namespace sluice::net
