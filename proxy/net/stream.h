#pragma once

// A TCP stream on a libuv loop: non-blocking reads into the worker's shared read buffer, writes
// that try the socket first and queue only the remainder, watermark flow control, and an
// idempotent close whose completion is reported once through Handler::onClosed().

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/ssl.h>
#include <uv.h>

namespace sluice::net {

class Stream {
 public:
  class Handler {
   public:
    virtual ~Handler() = default;
    virtual void onData(const char* data, size_t len) = 0;
    virtual void onEof() = 0;
    // A read or write failed (a libuv error code). The stream is unusable; close it.
    virtual void onError(int status) = 0;
    // The write queue fell to the low watermark after having passed the high one.
    virtual void onWritable() {}
    virtual void onConnected(int status) {}
    // TLS streams: the handshake finished (`failure` null) or failed (`failure` names why; the
    // stream is unusable: close it).
    virtual void onTlsHandshake(const char* failure) {}
    // The handle is closed; the owner may now free the stream.
    virtual void onClosed() = 0;
  };

  static constexpr size_t kHighWatermark = size_t{256} * 1024;
  static constexpr size_t kLowWatermark = size_t{64} * 1024;

  Stream(uv_loop_t* loop, Handler* handler);
  ~Stream();
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  uv_tcp_t* handle() { return &tcp_; }
  // Hands the stream's events to another owner (a WebSocket session taking over).
  void setHandler(Handler* handler) { handler_ = handler; }
  uv_stream_t* uvStream() { return reinterpret_cast<uv_stream_t*>(&tcp_); }

  int connect(const sockaddr* addr);
  // Runs TLS over this stream (memory BIOs): `ssl` (owned from now on) is in accept state for a
  // server side, connect state for a client side. Call before reading or connecting. Reads then
  // deliver plaintext, writes take plaintext.
  void startTls(SSL* ssl);
  SSL* ssl() const { return ssl_; }
  bool tlsReady() const { return ssl_ == nullptr || handshake_done_; }
  void readStart();
  void readStop();

  // Writes all buffers in order; what the socket does not take now is copied and queued.
  void write(const uv_buf_t* bufs, unsigned count);
  void write(std::string_view data) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data.data()), static_cast<unsigned>(data.size()));
    write(&b, 1);
  }
  // Between cork() and uncork(), writes are gathered and go out in one write when uncorked (or
  // earlier, once 64 KiB are gathered): a response head and its body, or several frames
  // produced from one read, leave in one syscall and one packet. Calls nest.
  void cork() { ++cork_depth_; }
  void uncork();
  // Frees the buffers kept for reuse (before a connection goes quiet for long, e.g. a WebSocket).
  void releaseBuffers();
  bool aboveHighWatermark() const { return queued_bytes_ >= kHighWatermark; }

  // Sends FIN after the queued writes. Reads continue until the owner closes.
  void shutdown();
  // Closes once every queued write has gone out (at once when none is queued).
  void closeAfterFlush();
  // Closes the handle (queued writes are cancelled); onClosed() follows.
  void close();

  bool peerAddress(std::string* ip) const;

 private:
  struct WriteReq {
    uv_write_t req;
    std::string data;
    Stream* stream;
  };
  enum class State { kOpen, kClosing, kClosed };

  static void onAlloc(uv_handle_t* h, size_t suggested, uv_buf_t* buf);
  static void onRead(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
  static void onWrite(uv_write_t* req, int status);
  static void onShutdown(uv_shutdown_t* req, int status);
  static void onConnect(uv_connect_t* req, int status);
  static void onClose(uv_handle_t* h);

  uv_tcp_t tcp_;
  Handler* handler_;
  State state_ = State::kOpen;
  bool reading_ = false;
  bool above_high_ = false;
  bool shutdown_sent_ = false;
  bool close_when_flushed_ = false;
  unsigned cork_depth_ = 0;
  std::string corked_;  // gathered while corked (capacity kept: no allocation per cork)
  void writeNow(const uv_buf_t* bufs, unsigned count);
  void uncorkNow();
  // Plaintext out: encrypted first on a TLS stream.
  void sendPlain(const uv_buf_t* bufs, unsigned count);
  void tlsInput(const char* data, size_t len);
  void flushTls();
  void tlsFailed(const char* reason);

  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // ciphertext from the socket, owned by ssl_
  BIO* wbio_ = nullptr;  // ciphertext for the socket, owned by ssl_
  bool handshake_done_ = false;
  bool tls_failed_ = false;  // a fatal TLS error: the session must not be resumed
  std::string tls_pending_;  // plaintext written before the handshake finished
  size_t queued_bytes_ = 0;
  size_t pending_reqs_ = 0;
  std::vector<WriteReq*> free_reqs_;
};

// The per-thread read buffer all streams of a worker read into. Each read is fully handled
// (parsed, forwarded or copied) before the next one, so one buffer per thread suffices.
char* threadReadBuffer(size_t* size);

}  // namespace sluice::net
