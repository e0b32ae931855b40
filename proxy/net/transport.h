#pragma once

// A byte stream as the protocol code sees it: write, pause and resume reading, watermarks, and
// the ways to end it. net::Stream implements it over a socket; unit tests implement it in
// memory, so the HTTP/1.1 codec and the WebSocket relay run without sockets.

#include <cstddef>
#include <string_view>

#include <uv.h>

namespace sluice::net {

class Transport {
 public:
  virtual ~Transport() = default;
  // Writes all buffers in order; what cannot go out now is copied and queued.
  virtual void write(const uv_buf_t* bufs, unsigned count) = 0;
  void write(std::string_view data) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    write(&b, 1);
  }
  // Between cork() and uncork() writes are gathered and leave together. Calls nest.
  virtual void cork() = 0;
  virtual void uncork() = 0;
  virtual void readStart() = 0;
  virtual void readStop() = 0;
  // The write queue is above its high watermark: stop producing for it until onWritable().
  virtual bool aboveHighWatermark() const = 0;
  // Sends FIN after the queued writes; reading goes on until the owner closes.
  virtual void shutdown() = 0;
  // Closes once every queued write has gone out.
  virtual void closeAfterFlush() = 0;
  // Closes now (queued writes are dropped); the owner hears onClosed() later.
  virtual void close() = 0;
};

}  // namespace sluice::net
