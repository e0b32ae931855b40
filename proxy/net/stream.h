#pragma once

// A TCP stream on a libuv loop, doing its own socket calls the way nginx does: every socket of a
// loop sits in one edge-triggered epoll set (registered once, never modified), in which runLoop()
// waits, with libuv's own epoll fd in the same set. Reads are recv(2) into the worker's shared read
// buffer; a short read means the socket is drained (no extra recv for EAGAIN). Writes send(2) first
// and queue only the remainder. Watermark flow control, and an idempotent close whose completion is
// reported once, later, through Handler::onClosed().
//
// Why not uv_tcp_t: libuv's level-triggered epoll re-polls every ready socket on the next
// epoll_wait, and read(2)/write(2) pass through the VFS layer; together a few percent of a small
// WebSocket message's cost. And a uv_tcp_t is 248 bytes; an idle stream here needs none of it.

#include <cstddef>
#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include <openssl/ssl.h>
#include <sys/socket.h>
#include <uv.h>

#include "proxy/net/transport.h"

namespace sluice::net {

class EventSet;

class Stream final : public Transport {
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
  ~Stream() override;
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  // Hands the stream's events to another owner (a WebSocket session taking over).
  void setHandler(Handler* handler) { handler_ = handler; }

  // Takes an accepted, non-blocking socket. 0, or a libuv error code (the socket is closed).
  int open(int fd);
  // Starts connecting; onConnected() reports the outcome. 0, or a libuv error code for what
  // fails at once (a refused connection is reported through onConnected()).
  int connect(const sockaddr* addr);
  // Runs TLS over this stream (memory BIOs): `ssl` (owned from now on) is in accept state for a
  // server side, connect state for a client side. Call before reading or connecting. Reads then
  // deliver plaintext, writes take plaintext.
  void startTls(SSL* ssl);
  // Bytes read before startTls() that belong to TLS (those after a PROXY protocol header):
  // handled as if the socket had just delivered them.
  void tlsReceive(const char* data, size_t len) {
    if (ssl_ != nullptr && len > 0) {
      tlsInput(data, len);
    }
  }
  SSL* ssl() const { return ssl_; }
  bool tlsReady() const { return ssl_ == nullptr || handshake_done_; }
  void readStart() override;
  void readStop() override;

  // Writes all buffers in order; what the socket does not take now is copied and queued.
  using Transport::write;
  void write(const uv_buf_t* bufs, unsigned count) override;
  // Between cork() and uncork(), writes are gathered and go out in one write when uncorked (or
  // earlier, once 64 KiB are gathered): a response head and its body, or several frames
  // produced from one read, leave in one syscall and one packet. Calls nest.
  void cork() override { ++cork_depth_; }
  void uncork() override;
  // Frees the buffers kept for reuse (before a connection goes quiet for long, e.g. a WebSocket).
  void releaseBuffers();
  bool aboveHighWatermark() const override { return queued() >= kHighWatermark; }
  // Bytes written but not yet taken by the socket (gathered while corked, or queued).
  size_t queuedBytes() const { return queued() + corked_.size(); }

  // Sends FIN after the queued writes. Reads continue until the owner closes.
  void shutdown() override;
  // Closes once every queued write has gone out (at once when none is queued).
  void closeAfterFlush() override;
  // Closes the handle (queued writes are cancelled); onClosed() follows.
  void close() override;

 private:
  friend class EventSet;
  enum class State { kOpen, kClosing, kClosed };

  size_t queued() const { return out_.size() - out_sent_; }
  // From the epoll set: what the socket reported.
  void onEvents(uint32_t events);
  // Work deferred to the loop's next turn (reads after readStart(), errors met inside write(),
  // connects that finished at once).
  void runPosted();
  void finishConnect();
  void readNow();
  void deliver(const char* data, size_t len);
  void readFailed(int status);  // status: a libuv error code, or UV_EOF
  void flushQueue();
  void afterFlush();
  // One non-blocking send of `bufs`: bytes sent, or -1 with errno set.
  ssize_t sendNow(const uv_buf_t* bufs, unsigned count);
  void writeNow(const uv_buf_t* bufs, unsigned count);
  // After a send of `bufs` that returned `n`: an error is reported on the next turn, what did
  // not go out is queued.
  void afterSend(const uv_buf_t* bufs, unsigned count, ssize_t n);
  // Copies bufs[first] from `offset` on, and the buffers after it, into the write queue.
  void enqueue(const uv_buf_t* bufs, unsigned count, unsigned first, size_t offset);
  void uncorkNow();
  // Plaintext out: encrypted first on a TLS stream.
  void sendPlain(const uv_buf_t* bufs, unsigned count);
  void tlsInput(const char* data, size_t len);
  void flushTls();
  void tlsFailed(const char* reason);

  EventSet* events_;
  Handler* handler_;
  int fd_ = -1;
  int error_ = 0;  // a write's or a connect's failure, reported from runPosted()
  State state_ = State::kOpen;
  bool reading_ = false;
  bool readable_ = false;   // the socket may hold data (edge seen, not drained since)
  bool peer_done_ = false;  // FIN, RST or an error seen: read on until recv says so
  bool connecting_ = false;
  bool posted_ = false;
  bool above_high_ = false;
  bool shutdown_sent_ = false;
  bool shutdown_pending_ = false;  // SHUT_WR once the queue is out
  bool close_when_flushed_ = false;
  unsigned cork_depth_ = 0;
  std::string corked_;  // gathered while corked (capacity kept: no allocation per cork)
  std::string out_;     // what the socket did not take yet, from out_sent_ on
  size_t out_sent_ = 0;

  SSL* ssl_ = nullptr;
  BIO* rbio_ = nullptr;  // ciphertext from the socket, owned by ssl_
  BIO* wbio_ = nullptr;  // ciphertext for the socket, owned by ssl_
  bool handshake_done_ = false;
  bool tls_failed_ = false;  // a fatal TLS error: the session must not be resumed
  std::string tls_pending_;  // plaintext written before the handshake finished
};

// A file descriptor other than a stream's socket (a listening socket) in the loop's epoll set:
// `callback(watcher)` runs on every turn in which it is readable (level-triggered). Like a stream,
// it needs runLoop(), and keeps the loop running while started.
class Watcher {
 public:
  using Callback = void (*)(Watcher* watcher);

  Watcher(uv_loop_t* loop, int fd, Callback callback, void* data);
  ~Watcher() { stop(); }
  Watcher(const Watcher&) = delete;
  Watcher& operator=(const Watcher&) = delete;

  // 0, or a libuv error code.
  int start();
  // Stops at once: no callback follows, not even for an event of the turn under way (so the
  // watcher may be freed right after). Call before closing the descriptor.
  void stop();
  void* data() const { return data_; }

 private:
  friend class EventSet;
  EventSet* events_;
  int fd_;
  Callback callback_;
  void* data_;
  bool started_ = false;
};

// The per-thread read buffer all streams of a worker read into. Each read is fully handled
// (parsed, forwarded or copied) before the next one, so one buffer per thread suffices.
char* threadReadBuffer(size_t* size);

// The streams and watchers of a loop share one epoll set, kept in the loop's `data` (which must be
// null when the first of them is made).
//
// Runs `loop` until it has nothing left to do, like uv_run(loop, UV_RUN_DEFAULT), waiting for
// the streams' sockets and for libuv (whose epoll fd is in the same set) in one epoll_wait per
// turn. A loop that carries streams must be run by this. Returns what uv_run would.
int runLoop(uv_loop_t* loop);

// Frees the loop's epoll set: call on the loop's thread once runLoop() has returned.
void closeEventSet(uv_loop_t* loop);

// accept4(2) on a listening socket, non-blocking: the new socket (its peer's address in `peer`
// when not null), or -1 with errno set.
int acceptSocket(int listen_fd, sockaddr_storage* peer);

// An IPv4 or IPv6 address as text (IPv4-mapped IPv6 addresses in their IPv4 form); false for
// other families.
bool addressText(const sockaddr_storage& address, std::string* ip);

}  // namespace sluice::net
