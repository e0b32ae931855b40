// relay_probe: how much would an io_uring back end save on kernel crossings? (issue 20)
//
// A bare TCP relay, one thread: every accepted client gets a connection to the backend and bytes
// are copied both ways, nothing parsed. Run in front of sluice_bench_backend and driven by
// sluice_wsload (the relay passes the WebSocket handshake and frames through untouched), it
// measures what the socket layer alone costs per message with each back end:
//
//   --mode epoll   what sluice's net::EventSet does today: one edge-triggered epoll set, one
//                  recv per readiness (a short read means drained), send at once, EPOLLOUT only
//                  for what the kernel did not take;
//   --mode uring   io_uring: a recv in flight per direction, the send to the peer queued from its
//                  completion, and one io_uring_submit_and_wait per loop turn for everything
//                  (SINGLE_ISSUER | DEFER_TASKRUN);
//   --mode uring-ms  the same with one multishot recv per socket and a provided-buffer ring.
//
// The difference between the two, in CPU time per message, is the most an io_uring back end
// could give sluice, since sluice does the same socket work plus its own user-space work.
// Standalone on purpose (nothing from proxy/). Not a product: no timeouts, no limits beyond
// --max-connections, errors end the connection pair.

#include <arpa/inet.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/epoll.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <string>
#include <vector>

namespace {

constexpr size_t kBufSize = 16 * 1024;

volatile sig_atomic_t g_stop = 0;

void onSignal(int) {
  g_stop = 1;
}

[[noreturn]] void die(const char* what) {
  std::fprintf(stderr, "relay_probe: %s: %s\n", what, std::strerror(errno));
  std::exit(1);
}

int listenOn(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    die("socket");
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || listen(fd, 4096) != 0) {
    die("bind/listen");
  }
  return fd;
}

// Blocking connect, then TCP_NODELAY: connections are set up once per load run, so their cost
// is not what this probe measures.
int connectTo(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) {
    return -1;
  }
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_port = htons(static_cast<uint16_t>(port));
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
    close(fd);
    return -1;
  }
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  return fd;
}

// The chunks of --mode uring-ms: a provided buffer and how much of it was sent.
struct Chunk {
  unsigned bid;
  size_t off;
  size_t len;
};

// One direction of a pair: bytes read from `from` wait in `buf` (or, with uring-ms, in `queue`)
// until `to` took them.
struct Dir {
  int from = -1;
  int to = -1;
  char buf[kBufSize];
  size_t len = 0;
  size_t sent = 0;
  std::deque<Chunk> queue;
  bool sending = false;
  bool eof = false;     // `from` ended
  bool done = false;    // ... and everything before its end reached `to`, which was shut down
  bool closed = false;  // both sockets are closed (events still in flight are ignored)
  Dir* other = nullptr;
};

struct Pair {
  Dir up;    // client -> backend
  Dir down;  // backend -> client
};

// A direction whose source ended and whose bytes are all out passes the end on (a half close);
// once both directions did, the pair's sockets are closed. Pairs are leaked on purpose: events
// for them may still be in flight.
void finish(Dir* d) {
  shutdown(d->to, SHUT_WR);
  d->done = true;
  if (d->other->done) {
    close(d->from);
    close(d->to);
    d->closed = d->other->closed = true;
  }
}

// An error ends both directions at once.
void breakPair(Dir* d) {
  if (!d->closed) {
    close(d->from);
    close(d->to);
    d->closed = d->other->closed = true;
  }
}

Pair* makePair(int client, int backend) {
  auto* p = new Pair;
  p->up.from = client;
  p->up.to = backend;
  p->down.from = backend;
  p->down.to = client;
  p->up.other = &p->down;
  p->down.other = &p->up;
  return p;
}

// ---- epoll -------------------------------------------------------------------------------------

// The epoll tag of a socket: the direction that reads from it. Its peer direction writes to it.
void runEpoll(int lfd, int backend_port) {
  int ep = epoll_create1(EPOLL_CLOEXEC);
  epoll_event ev{};
  ev.events = EPOLLIN;
  ev.data.ptr = nullptr;
  epoll_ctl(ep, EPOLL_CTL_ADD, lfd, &ev);
  std::vector<epoll_event> events(1024);

  auto flush = [](Dir* d) -> bool {  // false: the pair is broken
    while (d->sent < d->len) {
      ssize_t n = send(d->to, d->buf + d->sent, d->len - d->sent, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n < 0) {
        return errno == EAGAIN;
      }
      d->sent += static_cast<size_t>(n);
    }
    d->len = d->sent = 0;
    return true;
  };
  // `hup`: the peer's end came with this edge, so a short read does not mean drained.
  auto pump = [&](Dir* d, bool hup) -> bool {
    while (d->len == 0 && !d->eof) {
      ssize_t n = recv(d->from, d->buf, kBufSize, 0);
      if (n == 0) {
        d->eof = true;
        finish(d);
        return true;
      }
      if (n < 0) {
        return errno == EAGAIN;
      }
      d->len = static_cast<size_t>(n);
      if (!flush(d)) {
        return false;
      }
      if (static_cast<size_t>(n) < kBufSize && !hup) {
        return true;  // a short read drained the socket; the next arrival is a new edge
      }
    }
    return true;
  };

  while (g_stop == 0) {
    int n = epoll_wait(ep, events.data(), static_cast<int>(events.size()), 200);
    for (int i = 0; i < n; ++i) {
      auto* d = static_cast<Dir*>(events[i].data.ptr);
      if (d == nullptr) {
        int c = accept4(lfd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (c < 0) {
          continue;
        }
        int b = connectTo(backend_port);
        if (b < 0) {
          close(c);
          continue;
        }
        int one = 1;
        setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        ioctl(b, FIONBIO, &one);
        Pair* p = makePair(c, b);
        epoll_event e{};
        e.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        e.data.ptr = &p->up;
        epoll_ctl(ep, EPOLL_CTL_ADD, c, &e);
        e.data.ptr = &p->down;
        epoll_ctl(ep, EPOLL_CTL_ADD, b, &e);
        continue;
      }
      if (d->closed) {
        continue;
      }
      uint32_t what = events[i].events;
      bool hup = (what & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
      bool ok = true;
      Dir* w = d->other;  // the direction that writes to the socket d reads from
      if ((what & EPOLLOUT) != 0 && w->len != 0) {
        // Reading stopped while w's bytes waited; once they are out, read what came meanwhile
        // (its edge has passed).
        ok = flush(w) && (w->len != 0 || pump(w, true));
      }
      if (ok && !d->closed && ((what & EPOLLIN) != 0 || hup)) {
        ok = pump(d, hup);
      }
      if (!ok) {
        breakPair(d);
      }
    }
  }
}

// ---- io_uring ----------------------------------------------------------------------------------

enum Op : uint64_t { kAccept = 0, kRecv = 1, kSend = 2 };

uint64_t tag(Dir* d, Op op) {
  return reinterpret_cast<uint64_t>(d) | op;
}

// With --mode uring-ms: one multishot recv per socket picks buffers from a ring the kernel
// shares (a provided-buffer ring), so a message costs one CQE for its recv and one SQE + CQE for
// its send. Bytes wait per direction in received order (Dir::queue); one send in flight per
// direction keeps them in order.
constexpr unsigned kRingBufs = 2048;
constexpr size_t kRingBufSize = 4096;
constexpr int kGroup = 7;

void runUring(int lfd, int backend_port, unsigned entries, bool multishot) {
  io_uring ring;
  io_uring_params params{};
  params.flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN;
  if (int rc = io_uring_queue_init_params(entries, &ring, &params); rc < 0) {
    errno = -rc;
    die("io_uring_queue_init_params");
  }
  io_uring_buf_ring* br = nullptr;
  char* slab = nullptr;
  if (multishot) {
    size_t bytes = kRingBufs * sizeof(io_uring_buf);
    void* mem = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_ANONYMOUS | MAP_PRIVATE, -1, 0);
    if (mem == MAP_FAILED) {
      die("mmap");
    }
    br = static_cast<io_uring_buf_ring*>(mem);
    io_uring_buf_ring_init(br);
    io_uring_buf_reg reg{};
    reg.ring_addr = reinterpret_cast<uint64_t>(br);
    reg.ring_entries = kRingBufs;
    reg.bgid = kGroup;
    if (int rc = io_uring_register_buf_ring(&ring, &reg, 0); rc < 0) {
      errno = -rc;
      die("io_uring_register_buf_ring");
    }
    slab = static_cast<char*>(std::malloc(kRingBufs * kRingBufSize));
    for (unsigned i = 0; i < kRingBufs; ++i) {
      io_uring_buf_ring_add(br, slab + i * kRingBufSize, kRingBufSize, static_cast<uint16_t>(i),
                            io_uring_buf_ring_mask(kRingBufs), static_cast<int>(i));
    }
    io_uring_buf_ring_advance(br, kRingBufs);
  }
  auto giveBack = [&](unsigned bid) {
    io_uring_buf_ring_add(br, slab + bid * kRingBufSize, kRingBufSize, static_cast<uint16_t>(bid),
                          io_uring_buf_ring_mask(kRingBufs), 0);
    io_uring_buf_ring_advance(br, 1);
  };
  auto sqe = [&]() {
    io_uring_sqe* s = io_uring_get_sqe(&ring);
    if (s == nullptr) {
      io_uring_submit(&ring);
      s = io_uring_get_sqe(&ring);
    }
    return s;
  };
  auto postAccept = [&]() {
    io_uring_sqe* s = sqe();
    io_uring_prep_accept(s, lfd, nullptr, nullptr, 0);
    io_uring_sqe_set_data64(s, kAccept);
  };
  auto postRecv = [&](Dir* d) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv(s, d->from, d->buf, kBufSize, 0);
    io_uring_sqe_set_data64(s, tag(d, kRecv));
  };
  auto postSend = [&](Dir* d) {
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, d->to, d->buf + d->sent, d->len - d->sent, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, tag(d, kSend));
  };
  auto postRecvMs = [&](Dir* d) {
    io_uring_sqe* s = sqe();
    io_uring_prep_recv_multishot(s, d->from, nullptr, 0, 0);
    s->flags |= IOSQE_BUFFER_SELECT;
    s->buf_group = kGroup;
    io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(d) | kRecv);
  };
  auto postSendMs = [&](Dir* d) {
    const Chunk& c = d->queue.front();
    io_uring_sqe* s = sqe();
    io_uring_prep_send(s, d->to, slab + c.bid * kRingBufSize + c.off, c.len - c.off, MSG_NOSIGNAL);
    io_uring_sqe_set_data64(s, reinterpret_cast<uint64_t>(d) | kSend);
    d->sending = true;
  };
  postAccept();

  __kernel_timespec wait{0, 200 * 1000 * 1000};
  while (g_stop == 0) {
    io_uring_cqe* cqe = nullptr;
    int rc = io_uring_submit_and_wait_timeout(&ring, &cqe, 1, &wait, nullptr);
    if (rc < 0 && rc != -ETIME && rc != -EINTR) {
      errno = -rc;
      die("io_uring_submit_and_wait_timeout");
    }
    unsigned head;
    unsigned seen = 0;
    io_uring_for_each_cqe(&ring, head, cqe) {
      ++seen;
      uint64_t data = io_uring_cqe_get_data64(cqe);
      int res = cqe->res;
      auto op = static_cast<Op>(data & 3);
      if (op == kAccept) {
        postAccept();
        if (res < 0) {
          continue;
        }
        int b = connectTo(backend_port);
        if (b < 0) {
          close(res);
          continue;
        }
        int one = 1;
        setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        Pair* p = makePair(res, b);
        if (multishot) {
          postRecvMs(&p->up);
          postRecvMs(&p->down);
        } else {
          postRecv(&p->up);
          postRecv(&p->down);
        }
        continue;
      }
      auto* d = reinterpret_cast<Dir*>(data & ~uint64_t{3});
      if (d->closed) {
        continue;
      }
      if (multishot) {
        if (op == kRecv) {
          if (res > 0) {
            d->queue.push_back(
                {cqe->flags >> IORING_CQE_BUFFER_SHIFT, 0, static_cast<size_t>(res)});
            if (!d->sending) {
              postSendMs(d);
            }
          }
          if ((cqe->flags & IORING_CQE_F_MORE) != 0) {
            continue;
          }
          if (res > 0 || res == -ENOBUFS) {
            postRecvMs(d);  // the multishot recv stopped (the ring ran dry for a moment)
          } else if (res == 0) {
            d->eof = true;
            if (!d->sending) {
              finish(d);
            }
          } else {
            breakPair(d);
          }
          continue;
        }
        d->sending = false;
        if (res <= 0) {
          breakPair(d);  // its buffers are leaked (a probe)
          continue;
        }
        Chunk& c = d->queue.front();
        c.off += static_cast<size_t>(res);
        if (c.off == c.len) {
          giveBack(c.bid);
          d->queue.pop_front();
        }
        if (!d->queue.empty()) {
          postSendMs(d);
        } else if (d->eof) {
          finish(d);
        }
        continue;
      }
      if (res == 0 && op == kRecv) {
        finish(d);  // nothing of this direction is in flight: its send completed before
        continue;
      }
      if (res <= 0) {
        breakPair(d);
        continue;
      }
      if (op == kRecv) {
        d->len = static_cast<size_t>(res);
        d->sent = 0;
        postSend(d);
      } else {
        d->sent += static_cast<size_t>(res);
        if (d->sent < d->len) {
          postSend(d);
        } else {
          d->len = d->sent = 0;
          postRecv(d);
        }
      }
    }
    io_uring_cq_advance(&ring, seen);
  }
  io_uring_queue_exit(&ring);
}

}  // namespace

int main(int argc, char** argv) {
  std::string mode = "epoll";
  int port = 0;
  int backend = 0;
  for (int i = 1; i + 1 < argc; i += 2) {
    std::string k = argv[i];
    if (k == "--mode") {
      mode = argv[i + 1];
    } else if (k == "--listen") {
      port = std::atoi(argv[i + 1]);
    } else if (k == "--backend") {
      backend = std::atoi(argv[i + 1]);
    } else {
      std::fprintf(stderr, "relay_probe: unknown option %s\n", k.c_str());
      return 2;
    }
  }
  if (port <= 0 || backend <= 0 || (mode != "epoll" && mode != "uring" && mode != "uring-ms")) {
    std::fprintf(stderr,
                 "usage: relay_probe --mode epoll|uring|uring-ms --listen PORT --backend PORT\n");
    return 2;
  }
  std::signal(SIGINT, onSignal);
  std::signal(SIGTERM, onSignal);
  std::signal(SIGPIPE, SIG_IGN);
  int lfd = listenOn(port);
  std::printf("ready\n");
  std::fflush(stdout);
  if (mode == "epoll") {
    int on = 1;
    ioctl(lfd, FIONBIO, &on);
    runEpoll(lfd, backend);
  } else {
    runUring(lfd, backend, 4096, mode == "uring-ms");
  }
  return 0;
}
