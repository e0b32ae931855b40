#include "proxy/net/stream.h"

#include <openssl/err.h>

#include "proxy/net/tls.h"

#include <algorithm>
#include <cerrno>
#include <charconv>
#include <cstring>
#include <memory>
#include <utility>
#include <vector>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <unistd.h>

namespace sluice::net {

namespace {
constexpr size_t kReadBufferSize = size_t{64} * 1024;
// A write queue or cork buffer at most this large keeps its capacity for reuse; a burst's larger
// buffers are freed, so that an idle connection costs little.
constexpr size_t kMaxKeptCapacity = size_t{16} * 1024;
// Reads of a full buffer in a row before other sockets get their turn.
constexpr int kMaxReadsPerEvent = 16;
// Events taken from the epoll set per epoll_wait.
constexpr int kMaxEvents = 512;
}  // namespace

// recv(2), send(2), sendmsg(2) and epoll_wait(2) as raw system calls: glibc's wrappers are
// cancellation points, and the bookkeeping for that (~140 instructions per relayed message) buys
// nothing, since sluice never cancels a thread. syscall(3) returns -1 with errno set, as the
// wrappers do.
namespace {
ssize_t sysRecv(int fd, void* buf, size_t len) {
  return syscall(SYS_recvfrom, fd, buf, len, 0, nullptr, nullptr);
}
ssize_t sysSend(int fd, const void* buf, size_t len, int flags) {
  return syscall(SYS_sendto, fd, buf, len, flags, nullptr, 0);
}
ssize_t sysSendmsg(int fd, const msghdr* msg, int flags) {
  return syscall(SYS_sendmsg, fd, msg, flags);
}
int sysEpollWait(int epfd, epoll_event* events, int max, int timeout) {
  return static_cast<int>(syscall(SYS_epoll_wait, epfd, events, max, timeout));
}
}  // namespace

char* threadReadBuffer(size_t* size) {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  *size = kReadBufferSize;
  return buffer.get();
}

// ---- the loop's epoll set ------------------------------------------------------------------

// One per loop (and so per thread): the epoll set of the loop's streams, and the streams with
// work deferred to the loop's next turn. runLoop() waits in this set, which holds libuv's own
// epoll fd too, so that one epoll_wait per turn serves the streams, libuv's handles and its timers.
class EventSet {
 public:
  // The loop's set, made on first use: kept in the loop's `data` (which nothing else of sluice
  // uses), so that a worker's listeners can join it before the worker's thread runs the loop.
  static EventSet* forLoop(uv_loop_t* loop) {
    if (loop->data == nullptr) {
      loop->data = new EventSet(loop);
    }
    return static_cast<EventSet*>(loop->data);
  }

  static void close(uv_loop_t* loop) {
    delete static_cast<EventSet*>(loop->data);
    loop->data = nullptr;
  }

  // 0, or a libuv error code.
  int add(Stream* s, int fd) {
    if (epfd_ < 0) {
      return UV_EMFILE;
    }
    epoll_event ev{};
    ev.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
    ev.data.ptr = s;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, fd, &ev) != 0) {
      return -errno;
    }
    ++registered_;
    return 0;
  }

  // The stream's socket is being closed (which takes it out of the epoll set).
  void remove() { --registered_; }

  // Watchers are told apart from streams by the low bit of the event's pointer.
  int add(Watcher* w) {
    if (epfd_ < 0) {
      return UV_EMFILE;
    }
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = reinterpret_cast<uintptr_t>(w) | kWatcherTag;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, w->fd_, &ev) != 0) {
      return -errno;
    }
    ++registered_;
    return 0;
  }

  void remove(Watcher* w) {
    epoll_ctl(epfd_, EPOLL_CTL_DEL, w->fd_, nullptr);
    --registered_;
    // Its event may still be among the turn's: drop it.
    uint64_t tagged = reinterpret_cast<uintptr_t>(w) | kWatcherTag;
    for (int i = next_event_; i < batch_size_; ++i) {
      if (events_[i].data.u64 == tagged) {
        events_[i].data.u64 = kIgnored;
      }
    }
  }

  void post(Stream* s) {
    if (!s->posted_) {
      s->posted_ = true;
      posted_.push_back(s);
    }
  }

  // onClosed() follows on the loop's next turn, after this turn's events.
  void retire(Stream* s) {
    if (s->posted_) {
      s->posted_ = false;
      std::erase(posted_, s);
    }
    retired_.push_back(s);
  }

  // A stream freed without being closed first: forget it.
  void forget(Stream* s) {
    std::erase(posted_, s);
    std::erase(retired_, s);
  }

  int run() {
    if (epfd_ < 0) {
      return uv_run(loop_, UV_RUN_DEFAULT);  // no stream could register: libuv alone
    }
    // libuv's epoll fd is readable when a handle of libuv's (a listener, an async wakeup, a
    // signal) has an event; level-triggered, so it stays reported until uv_run takes it.
    int uv_fd = uv_backend_fd(loop_);
    epoll_event ev{};
    ev.events = EPOLLIN;
    ev.data.u64 = kUvFd;
    if (epoll_ctl(epfd_, EPOLL_CTL_ADD, uv_fd, &ev) != 0) {
      return uv_run(loop_, UV_RUN_DEFAULT);
    }
    bool uv_ready = true;  // a first turn for what libuv has pending already
    for (;;) {
      uv_update_time(loop_);
      bool uv_alive = uv_loop_alive(loop_) != 0;
      int uv_timeout = uv_alive ? uv_backend_timeout(loop_) : -1;
      // libuv's turn (timers, its handles' events, closing handles), only when it has work:
      // uv_run polls its own epoll fd once more, a system call wasted when it has none.
      bool changed = false;  // libuv's handles or timers may have changed since uv_timeout
      if (uv_ready || uv_timeout == 0) {
        uv_ready = false;
        uv_run(loop_, UV_RUN_NOWAIT);
        changed = true;
      }
      if (!posted_.empty() || !retired_.empty()) {
        runDeferred();
        changed = true;
      }
      if (changed) {
        // Handlers (onClosed() above all) may have closed or started handles, or armed timers.
        uv_alive = uv_loop_alive(loop_) != 0;
        uv_timeout = uv_alive ? uv_backend_timeout(loop_) : -1;
      }
      // Otherwise nothing ran since uv_timeout was taken: it stands (asked once per turn, not
      // twice, in the turns that only relay data).
      bool deferred = !posted_.empty() || !retired_.empty();
      if (!uv_alive && registered_ == 0 && !deferred) {
        break;
      }
      int timeout = deferred ? 0 : uv_timeout;
      batch_size_ = std::max(0, sysEpollWait(epfd_, events_, kMaxEvents, timeout));
      uv_update_time(loop_);  // the batch's deadlines start from now, not from before the wait
      // A stream closed while this batch runs is only retired: its memory stays valid until
      // runDeferred(), and onEvents() ignores it. A stopped watcher's event is dropped.
      for (next_event_ = 0; next_event_ < batch_size_;) {
        const epoll_event& e = events_[next_event_++];
        if (e.data.u64 == kUvFd) {
          uv_ready = true;
        } else if (e.data.u64 == kIgnored) {
          continue;
        } else if ((e.data.u64 & kWatcherTag) != 0) {
          // NOLINTNEXTLINE(performance-no-int-to-ptr): the pointer with its tag bit cleared
          auto* w = reinterpret_cast<Watcher*>(e.data.u64 & ~kWatcherTag);
          w->callback_(w);
        } else {
          static_cast<Stream*>(e.data.ptr)->onEvents(e.events);
        }
      }
      batch_size_ = 0;
    }
    epoll_ctl(epfd_, EPOLL_CTL_DEL, uv_fd, nullptr);
    return 0;
  }

 private:
  explicit EventSet(uv_loop_t* loop) : loop_(loop), epfd_(epoll_create1(EPOLL_CLOEXEC)) {}

  ~EventSet() {
    if (epfd_ >= 0) {
      ::close(epfd_);
    }
  }

  void runDeferred() {
    if (!posted_.empty()) {
      batch_.swap(posted_);
      for (Stream* s : batch_) {
        // A stream retired by an earlier one's work is no longer posted: skip it.
        if (s->posted_) {
          s->posted_ = false;
          s->runPosted();
        }
      }
      batch_.clear();
    }
    // Last: a handler may free its stream (and others) from onClosed().
    while (!retired_.empty()) {
      batch_.swap(retired_);
      for (Stream* s : batch_) {
        s->state_ = Stream::State::kClosed;
        s->handler_->onClosed();
      }
      batch_.clear();
    }
  }

  static constexpr uint64_t kUvFd = 0;     // libuv's epoll fd
  static constexpr uint64_t kIgnored = 2;  // a stopped watcher's event
  static constexpr uint64_t kWatcherTag = 1;

  uv_loop_t* loop_;
  int epfd_;
  size_t registered_ = 0;  // streams and started watchers
  epoll_event events_[kMaxEvents];
  int batch_size_ = 0;  // events_[next_event_, batch_size_) are the turn's events still to run
  int next_event_ = 0;
  std::vector<Stream*> posted_;
  std::vector<Stream*> retired_;
  std::vector<Stream*> batch_;  // the list being run (capacity kept)
};

void closeEventSet(uv_loop_t* loop) {
  EventSet::close(loop);
}

int runLoop(uv_loop_t* loop) {
  return EventSet::forLoop(loop)->run();
}

// ---- Watcher ---------------------------------------------------------------------------------

Watcher::Watcher(uv_loop_t* loop, int fd, Callback callback, void* data)
    : events_(EventSet::forLoop(loop)), fd_(fd), callback_(callback), data_(data) {}

int Watcher::start() {
  if (started_) {
    return 0;
  }
  int rc = events_->add(this);
  started_ = rc == 0;
  return rc;
}

void Watcher::stop() {
  if (started_) {
    started_ = false;
    events_->remove(this);
  }
}

int acceptSocket(int listen_fd, sockaddr_storage* peer) {
  int fd;
  do {
    socklen_t len = sizeof *peer;
    fd = ::accept4(listen_fd, reinterpret_cast<sockaddr*>(peer), peer != nullptr ? &len : nullptr,
                   SOCK_NONBLOCK | SOCK_CLOEXEC);
  } while (fd < 0 && errno == EINTR);
  return fd;
}

// ---- Stream ----------------------------------------------------------------------------------

Stream::Stream(uv_loop_t* loop, Handler* handler)
    : events_(EventSet::forLoop(loop)), handler_(handler) {}

Stream::~Stream() {
  if (fd_ >= 0) {
    ::close(fd_);
    events_->remove();
  }
  if (posted_ || state_ == State::kClosing) {
    events_->forget(this);
  }
  if (ssl_ != nullptr) {
    SSL_free(ssl_);
  }
}

namespace {
// Per thread, like the read buffer: plaintext out of TLS (handed to handlers, which may write
// while they still read it), and ciphertext on its way to a socket (copied by writeNow before
// it returns). Two buffers, so that the second never overwrites the first.
char* tlsPlainBuffer(size_t* size) {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  *size = kReadBufferSize;
  return buffer.get();
}
char* tlsCipherBuffer(size_t* size) {
  thread_local std::unique_ptr<char[]> buffer(new char[kReadBufferSize]);
  *size = kReadBufferSize;
  return buffer.get();
}
}  // namespace

void Stream::startTls(SSL* ssl) {
  ssl_ = ssl;
  rbio_ = BIO_new(BIO_s_mem());
  wbio_ = BIO_new(BIO_s_mem());
  // An empty memory BIO reads as "retry later", not as EOF.
  BIO_set_mem_eof_return(rbio_, -1);
  BIO_set_mem_eof_return(wbio_, -1);
  SSL_set_bio(ssl_, rbio_, wbio_);
}

void Stream::flushTls() {
  size_t size;
  char* buf = tlsCipherBuffer(&size);
  while (BIO_pending(wbio_) > 0 && state_ == State::kOpen) {
    int n = BIO_read(wbio_, buf, static_cast<int>(size));
    if (n <= 0) {
      break;
    }
    uv_buf_t b = uv_buf_init(buf, static_cast<unsigned>(n));
    writeNow(&b, 1);  // copies what the socket does not take at once
  }
}

void Stream::tlsFailed(const char* reason) {
  tls_failed_ = true;
  flushTls();  // the alert, if OpenSSL wrote one
  handler_->onTlsHandshake(reason);
}

void Stream::tlsInput(const char* data, size_t len) {
  if (len > 0) {
    BIO_write(rbio_, data, static_cast<int>(len));
  }
  if (!handshake_done_) {
    ERR_clear_error();
    int rc = SSL_do_handshake(ssl_);
    if (rc != 1) {
      int e = SSL_get_error(ssl_, rc);
      flushTls();
      if (e != SSL_ERROR_WANT_READ && e != SSL_ERROR_WANT_WRITE) {
        tlsFailed(tlsFailureReason(ssl_, ERR_peek_error()));
      }
      return;
    }
    flushTls();
    handshake_done_ = true;
    handler_->onTlsHandshake(nullptr);
    if (state_ != State::kOpen) {
      return;
    }
    if (!tls_pending_.empty()) {
      std::string pending = std::move(tls_pending_);
      std::string().swap(tls_pending_);  // frees it (assigning "" would not)
      uv_buf_t b = uv_buf_init(pending.data(), static_cast<unsigned>(pending.size()));
      sendPlain(&b, 1);
    }
  }
  // Everything this read decrypts is delivered, even if the handler stops reading meanwhile:
  // like a plain read, it is bounded by one read buffer.
  size_t size;
  char* out = tlsPlainBuffer(&size);
  for (;;) {
    ERR_clear_error();
    int n = SSL_read(ssl_, out, static_cast<int>(size));
    if (n > 0) {
      handler_->onData(out, static_cast<size_t>(n));
      if (state_ != State::kOpen) {
        return;
      }
      continue;
    }
    int e = SSL_get_error(ssl_, n);
    flushTls();  // SSL_read may answer (key updates, session tickets)
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
      return;
    }
    readStop();
    tls_failed_ = e != SSL_ERROR_ZERO_RETURN;
    if (e == SSL_ERROR_ZERO_RETURN) {
      handler_->onEof();  // the peer's close_notify
    } else {
      handler_->onError(UV_EPROTO);
    }
    return;
  }
}

void Stream::sendPlain(const uv_buf_t* bufs, unsigned count) {
  if (ssl_ == nullptr) {
    writeNow(bufs, count);
    return;
  }
  if (!handshake_done_) {
    for (unsigned i = 0; i < count; ++i) {
      tls_pending_.append(bufs[i].base, bufs[i].len);
    }
    return;
  }
  for (unsigned i = 0; i < count; ++i) {
    if (bufs[i].len == 0) {
      continue;
    }
    ERR_clear_error();
    // A memory BIO takes everything: SSL_write either writes it all or fails for good.
    if (SSL_write(ssl_, bufs[i].base, static_cast<int>(bufs[i].len)) <= 0) {
      break;
    }
  }
  flushTls();
}

namespace {
void setNoDelay(int fd) {
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}
}  // namespace

int Stream::open(int fd) {
  setNoDelay(fd);
  int rc = events_->add(this, fd);
  if (rc != 0) {
    ::close(fd);
    return rc;
  }
  fd_ = fd;
  return 0;
}

int Stream::connect(const sockaddr* addr) {
  int fd = ::socket(addr->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    return -errno;
  }
  setNoDelay(fd);
  socklen_t len = addr->sa_family == AF_INET6  ? sizeof(sockaddr_in6)
                  : addr->sa_family == AF_UNIX ? sizeof(sockaddr_un)
                                               : sizeof(sockaddr_in);
  if (::connect(fd, addr, len) != 0 && errno != EINPROGRESS && errno != EINTR) {
    // Like libuv: a refused connection is reported later, through onConnected(); anything
    // else (no route, no local port left) now.
    if (errno != ECONNREFUSED) {
      int rc = -errno;
      ::close(fd);
      return rc;
    }
    error_ = UV_ECONNREFUSED;
  }
  // Registered after connect(2): epoll then reports the outcome (EPOLLOUT once connected,
  // EPOLLHUP or EPOLLERR on failure), even when it is already known.
  int rc = events_->add(this, fd);
  if (rc != 0) {
    ::close(fd);
    return rc;
  }
  fd_ = fd;
  connecting_ = true;
  return 0;
}

void Stream::finishConnect() {
  connecting_ = false;
  int status = error_;
  error_ = 0;
  if (status == 0) {
    int err = 0;
    socklen_t len = sizeof err;
    if (getsockopt(fd_, SOL_SOCKET, SO_ERROR, &err, &len) != 0) {
      err = errno;
    }
    status = -err;
  }
  handler_->onConnected(status);
  if (status != 0 || state_ != State::kOpen) {
    return;
  }
  if (ssl_ != nullptr) {
    readStart();
    tlsInput(nullptr, 0);  // the ClientHello
    if (state_ != State::kOpen) {
      return;
    }
  }
  flushQueue();  // what was written while connecting
}

void Stream::onEvents(uint32_t events) {
  if (state_ != State::kOpen) {
    return;  // closed earlier in this batch
  }
  if (connecting_) {
    if ((events & (EPOLLOUT | EPOLLERR | EPOLLHUP)) == 0) {
      return;
    }
    finishConnect();
    if (state_ != State::kOpen) {
      return;
    }
  }
  if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    peer_done_ = true;
  }
  if ((events & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) {
    readable_ = true;
  }
  if ((events & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0 && queued() > 0) {
    flushQueue();
    if (state_ != State::kOpen) {
      return;
    }
  }
  if (reading_ && readable_) {
    readNow();
  }
}

void Stream::runPosted() {
  if (state_ != State::kOpen) {
    return;
  }
  if (error_ != 0 && !connecting_) {
    int status = error_;
    error_ = 0;
    reading_ = false;
    handler_->onError(status);
    return;
  }
  if (reading_ && readable_) {
    readNow();
  }
}

void Stream::readStart() {
  if (reading_ || state_ != State::kOpen) {
    return;
  }
  reading_ = true;
  // The edge that announced data may have come while not reading: read on the next turn
  // (never from inside readStart(), which would re-enter the caller).
  if (readable_ && !connecting_) {
    events_->post(this);
  }
}

void Stream::readStop() {
  reading_ = false;
}

void Stream::readNow() {
  size_t size;
  char* buf = threadReadBuffer(&size);
  for (int i = 0; i < kMaxReadsPerEvent; ++i) {
    ssize_t n = sysRecv(fd_, buf, size);
    if (n > 0) {
      // A short read drained the socket (TCP hands over all it holds): the next edge says when
      // there is more. After FIN or an error, read on until recv(2) reports it.
      if (static_cast<size_t>(n) < size && !peer_done_) {
        readable_ = false;
      }
      deliver(buf, static_cast<size_t>(n));
      if (state_ != State::kOpen || !reading_ || !readable_) {
        return;
      }
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    readable_ = false;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      peer_done_ = false;  // spurious: the edge will come again
      return;
    }
    readFailed(n == 0 ? UV_EOF : -errno);
    return;
  }
  events_->post(this);  // still more: after the other sockets' turn
}

void Stream::deliver(const char* data, size_t len) {
  if (ssl_ != nullptr) {
    tlsInput(data, len);
  } else {
    handler_->onData(data, len);
  }
}

void Stream::readFailed(int status) {
  reading_ = false;
  if (ssl_ != nullptr && !handshake_done_) {
    tlsFailed("eof");  // the peer left or reset in the middle of the handshake
    return;
  }
  if (status == UV_EOF) {
    handler_->onEof();
  } else {
    handler_->onError(status);
  }
}

void Stream::write(const uv_buf_t* bufs, unsigned count) {
  if (state_ != State::kOpen || shutdown_sent_) {
    return;
  }
  // The common case (one buffer, a plain socket, not corked, nothing queued: a relayed frame)
  // goes straight to send(2), past the layers below; what the socket does not take is queued as
  // writeNow() would.
  if (count == 1 && cork_depth_ == 0 && ssl_ == nullptr && error_ == 0 && queued() == 0 &&
      !connecting_ && fd_ >= 0) {
    ssize_t n = sendNow(bufs, 1);
    if (n != static_cast<ssize_t>(bufs[0].len)) {
      afterSend(bufs, 1, n);
    }
    return;
  }
  if (cork_depth_ > 0) {
    size_t total = 0;
    for (unsigned i = 0; i < count; ++i) {
      total += bufs[i].len;
    }
    constexpr size_t kMaxCorked = size_t{64} * 1024;
    if (corked_.size() + total <= kMaxCorked) {
      for (unsigned i = 0; i < count; ++i) {
        corked_.append(bufs[i].base, bufs[i].len);
      }
      return;
    }
    // Too much to gather: what is gathered and this write go out together, without a copy.
    uv_buf_t all[8];
    if (count < 8 && !corked_.empty()) {
      all[0] = uv_buf_init(corked_.data(), static_cast<unsigned>(corked_.size()));
      for (unsigned i = 0; i < count; ++i) {
        all[i + 1] = bufs[i];
      }
      sendPlain(all, count + 1);
      corked_.clear();
      return;
    }
    uncorkNow();
  }
  sendPlain(bufs, count);
}

void Stream::releaseBuffers() {
  if (corked_.empty()) {
    std::string().swap(corked_);  // frees it (assigning "" would not)
  }
  if (queued() == 0) {
    std::string().swap(out_);
    out_sent_ = 0;
  }
}

void Stream::uncork() {
  if (cork_depth_ > 0 && --cork_depth_ == 0) {
    uncorkNow();
  }
}

void Stream::uncorkNow() {
  if (corked_.empty() || state_ != State::kOpen) {
    corked_.clear();
    return;
  }
  uv_buf_t b = uv_buf_init(corked_.data(), static_cast<unsigned>(corked_.size()));
  sendPlain(&b, 1);
  corked_.clear();
  if (corked_.capacity() > kMaxKeptCapacity) {
    std::string().swap(corked_);  // frees it (assigning "" would not)
  }
}

ssize_t Stream::sendNow(const uv_buf_t* bufs, unsigned count) {
  ssize_t n;
  do {
    if (count == 1) {
      n = sysSend(fd_, bufs[0].base, bufs[0].len, MSG_NOSIGNAL | MSG_DONTWAIT);
    } else {
      msghdr msg{};
      // uv_buf_t is laid out as struct iovec on Unix (libuv guarantees it).
      msg.msg_iov = reinterpret_cast<iovec*>(const_cast<uv_buf_t*>(bufs));
      msg.msg_iovlen = count;
      n = sysSendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    }
  } while (n < 0 && errno == EINTR);
  return n;
}

void Stream::writeNow(const uv_buf_t* bufs, unsigned count) {
  if (error_ != 0) {
    return;  // the stream failed; its handler hears of it on the next turn
  }
  if (queued() == 0 && !connecting_ && fd_ >= 0 && count > 0) {
    afterSend(bufs, count, sendNow(bufs, count));
    return;
  }
  enqueue(bufs, count, 0, 0);
}

void Stream::afterSend(const uv_buf_t* bufs, unsigned count, ssize_t n) {
  if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK) {
    // Reported on the next turn, so that the handler is never re-entered from write().
    error_ = -errno;
    events_->post(this);
    return;
  }
  unsigned first = 0;
  size_t written = n > 0 ? static_cast<size_t>(n) : 0;
  while (first < count && written >= bufs[first].len) {
    written -= bufs[first].len;
    ++first;
  }
  if (first < count) {
    enqueue(bufs, count, first, written);
  }
}

void Stream::enqueue(const uv_buf_t* bufs, unsigned count, unsigned first, size_t offset) {
  if (first == count) {
    return;
  }
  if (queued() == 0) {
    out_.clear();
    out_sent_ = 0;
  }
  out_.append(bufs[first].base + offset, bufs[first].len - offset);
  for (unsigned i = first + 1; i < count; ++i) {
    out_.append(bufs[i].base, bufs[i].len);
  }
  if (queued() >= kHighWatermark) {
    above_high_ = true;
  }
}

void Stream::flushQueue() {
  while (queued() > 0) {
    ssize_t n = sysSend(fd_, out_.data() + out_sent_, queued(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      out_sent_ += static_cast<size_t>(n);
      continue;
    }
    if (n < 0 && errno == EINTR) {
      continue;
    }
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      break;  // the next EPOLLOUT edge goes on
    }
    reading_ = false;
    handler_->onError(n < 0 ? -errno : UV_EPIPE);
    return;
  }
  if (queued() == 0) {
    out_.clear();
    out_sent_ = 0;
    if (out_.capacity() > kMaxKeptCapacity) {
      std::string().swap(out_);  // frees it (assigning "" would not)
    }
  } else if (out_sent_ >= kMaxKeptCapacity && out_sent_ * 2 >= out_.size()) {
    out_.erase(0, out_sent_);  // what went out is not kept around
    out_sent_ = 0;
  }
  afterFlush();
}

void Stream::afterFlush() {
  if (above_high_ && queued() <= kLowWatermark) {
    above_high_ = false;
    handler_->onWritable();
    if (state_ != State::kOpen) {
      return;
    }
  }
  if (queued() > 0) {
    return;
  }
  if (shutdown_pending_) {
    shutdown_pending_ = false;
    ::shutdown(fd_, SHUT_WR);
  }
  if (close_when_flushed_) {
    close();
  }
}

void Stream::shutdown() {
  if (state_ != State::kOpen || shutdown_sent_) {
    return;
  }
  uncorkNow();
  shutdown_sent_ = true;
  if (ssl_ != nullptr && handshake_done_) {
    SSL_shutdown(ssl_);  // our close_notify; the peer's is not waited for
    flushTls();
  }
  if (queued() == 0 && !connecting_ && fd_ >= 0) {
    ::shutdown(fd_, SHUT_WR);
  } else {
    shutdown_pending_ = true;
  }
}

void Stream::closeAfterFlush() {
  uncorkNow();
  if (queued() == 0 || fd_ < 0 || error_ != 0) {
    close();
  } else {
    close_when_flushed_ = true;
    readStop();
  }
}

void Stream::close() {
  if (state_ != State::kOpen) {
    return;
  }
  if (ssl_ != nullptr && handshake_done_ && !tls_failed_) {
    // Closing without a close_notify is how HTTP ends connections; it must not make OpenSSL drop
    // the session as "bad", or the next connection could not resume it.
    SSL_set_shutdown(ssl_, SSL_get_shutdown(ssl_) | SSL_SENT_SHUTDOWN);
  }
  state_ = State::kClosing;
  reading_ = false;
  if (fd_ >= 0) {
    ::close(fd_);  // also takes it out of the epoll set
    fd_ = -1;
    events_->remove();
  }
  std::string().swap(out_);
  out_sent_ = 0;
  events_->retire(this);
}

bool addressText(const sockaddr_storage& ss, std::string* ip) {
  char buf[INET6_ADDRSTRLEN] = {0};
  if (ss.ss_family == AF_INET) {
    // By hand: once per connection, and libuv's formatting goes through snprintf.
    const auto* a = reinterpret_cast<const uint8_t*>(
        &reinterpret_cast<const sockaddr_in*>(&ss)->sin_addr.s_addr);
    char* p = buf;
    for (int i = 0; i < 4; ++i) {
      if (i > 0) {
        *p++ = '.';
      }
      p = std::to_chars(p, buf + sizeof buf, a[i]).ptr;
    }
    ip->assign(buf, static_cast<size_t>(p - buf));
    return true;
  }
  if (ss.ss_family == AF_INET6) {
    uv_ip6_name(reinterpret_cast<const sockaddr_in6*>(&ss), buf, sizeof buf);
    // Report IPv4-mapped addresses in their IPv4 form.
    if (strncmp(buf, "::ffff:", 7) == 0 && strchr(buf + 7, '.') != nullptr) {
      memmove(buf, buf + 7, strlen(buf + 7) + 1);
    }
  } else {
    return false;
  }
  *ip = buf;
  return true;
}

}  // namespace sluice::net
