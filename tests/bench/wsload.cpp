// sluice_wsload: a WebSocket load generator for benchmarks.
//
// Real RFC 6455 clients: a random 16-byte Sec-WebSocket-Key per connection and a checked
// Sec-WebSocket-Accept, masked frames with a fresh random mask per frame, and every echo checked
// byte for byte (opcode, length, content, sequence stamp). A mismatch, an unexpected close or EOF,
// a protocol error or a timeout is an error: counted by kind, the first few printed on stderr,
// and reflected in the exit status (1 when any error happened).
//
// Modes
//   echo     --connections N --size BYTES --duration S [--text] [--warmup S]
//            closed loop per connection: send one message, wait for its echo, send the next.
//            Reports messages/s, MB/s (10^6 bytes of payload one way), latency percentiles (µs).
//   connect  --concurrency N --duration S [--size BYTES]
//            each slot repeats: TCP connect, handshake, one echo, close handshake, wait for the
//            server's TCP close. Reports completed connections/s.
//   idle     --connections N --hold S [--ramp K]
//            opens N connections (at most K handshakes in flight), prints "established N" on
//            stdout when all attempts are settled, holds them idle for S seconds (answering
//            pings), then checks one echo on each and closes each with a close handshake.
//            Reports how many succeeded.
// Common: --url ws://HOST:PORT/PATH, --threads T, --json, --header "Name: value", --origin URL,
//         --timeout S (per operation, default 10), --max-time S (hard overall limit).
//
// One libuv loop per thread; per thread one read buffer and one output buffer; the payload of
// each message is generated from a per-thread pool plus an 8-byte sequence stamp, so nothing is
// allocated per message and checking an echo is a memcmp against the pool.
//
// Deliberately standalone (nothing from proxy/): it is the yardstick for sluice, nginx and haproxy.

#include <uv.h>

#include "common.h"

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <netdb.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <cinttypes>
#include <cmath>
#include <csignal>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

namespace {

using namespace bench;

constexpr size_t kReadBufSize = 256 * 1024;
constexpr size_t kStash = 256;           // > largest frame header + control frame (14 + 125)
constexpr size_t kMaxHandshake = 16384;  // response heads larger than this are an error
constexpr uint32_t kPoolSlack = 65536;   // payload offsets vary within this window
constexpr size_t kMaxSize = 64u << 20;

// ---------------------------------------------------------------------------------------------
// options

enum class Mode { Echo, Connect, Idle };

struct Options {
  Mode mode = Mode::Echo;
  std::string url, host, port = "80", path = "/";
  int connections = -1;
  int concurrency = 16;
  long size = -1;
  double duration = 10;
  double warmup = 0;
  double hold = 10;
  int ramp = 256;
  int threads = 1;
  bool text = false;
  bool json = false;
  double timeout = 10;
  double max_time = 0;
  std::vector<std::string> headers;
};

Options g_opt;
sockaddr_storage g_addr;

// ---------------------------------------------------------------------------------------------
// errors

enum Err {
  E_CONNECT,
  E_HANDSHAKE,
  E_BAD_ACCEPT,
  E_MISMATCH,
  E_UNEXPECTED_CLOSE,
  E_UNEXPECTED_EOF,
  E_READ,
  E_WRITE,
  E_PROTOCOL,
  E_UNEXPECTED_MESSAGE,
  E_BAD_CLOSE_REPLY,
  E_TIMEOUT,
  E_COUNT
};
const char* const kErrName[E_COUNT] = {"connect_failed",     "handshake_failed", "bad_accept",
                                       "echo_mismatch",      "unexpected_close", "unexpected_eof",
                                       "read_error",         "write_error",      "protocol_error",
                                       "unexpected_message", "bad_close_reply",  "timeout"};

std::atomic<int> g_err_logged[E_COUNT];
constexpr int kErrLogMax = 5;

// ---------------------------------------------------------------------------------------------
// helpers

struct Rng {
  uint64_t s;
  uint64_t next() {  // splitmix64
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Log-linear histogram of nanosecond values: 64 sub-buckets per power of two (~1.6% precision).
struct Hist {
  static constexpr int kSub = 64;
  static constexpr int kBuckets = 59 * kSub;
  std::vector<uint64_t> counts = std::vector<uint64_t>(kBuckets, 0);
  uint64_t n = 0, max = 0, sum = 0;
  static int index(uint64_t v) {
    if (v < uint64_t(kSub))
      return int(v);
    int e = 63 - __builtin_clzll(v);
    int shift = e - 6;
    return (shift + 1) * kSub + int((v >> shift) - kSub);
  }
  static double value(int i) {  // midpoint of bucket i
    if (i < kSub)
      return i;
    int shift = i / kSub - 1;
    uint64_t mant = uint64_t(i % kSub + kSub);
    double lo = double(mant << shift), hi = double(((mant + 1) << shift) - 1);
    return (lo + hi) / 2;
  }
  void add(uint64_t v) {
    counts[size_t(index(v))]++;
    n++;
    sum += v;
    if (v > max)
      max = v;
  }
  void merge(const Hist& o) {
    for (int i = 0; i < kBuckets; i++)
      counts[size_t(i)] += o.counts[size_t(i)];
    n += o.n;
    sum += o.sum;
    max = std::max(max, o.max);
  }
  double pct(double q) const {  // in ns
    if (!n)
      return 0;
    uint64_t target = uint64_t(std::ceil(q * double(n)));
    if (target < 1)
      target = 1;
    uint64_t acc = 0;
    for (int i = 0; i < kBuckets; i++) {
      acc += counts[size_t(i)];
      if (acc >= target)
        return std::min(value(i), double(max));
    }
    return double(max);
  }
};

// ---------------------------------------------------------------------------------------------
// shared state between threads

struct Shared {
  std::atomic<int> settled{0};          // threads whose connection attempts are all settled
  std::atomic<int64_t> established{0};  // idle: connections open when settled
  std::atomic<uint64_t> start_ns{0};    // echo: measurement window start; idle: hold start
  std::atomic<int> finished{0};
  std::atomic<uint64_t> settled_ns{0};  // when the last thread settled (all connects done)
  uint64_t launch_ns = 0;
};
Shared g_shared;

// ---------------------------------------------------------------------------------------------
// per thread

enum class St : uint8_t { Free, Connecting, Handshake, Open, Closing, WaitEof, Aborting };
const char* st_name(St s) {
  switch (s) {
    case St::Free:
      return "free";
    case St::Connecting:
      return "connecting";
    case St::Handshake:
      return "handshake";
    case St::Open:
      return "open";
    case St::Closing:
      return "closing";
    case St::WaitEof:
      return "wait-eof";
    case St::Aborting:
      return "aborting";
  }
  return "?";
}

struct Runner;

struct Conn {
  uv_tcp_t tcp;
  uv_connect_t creq;
  uv_write_t wreq;
  Runner* r = nullptr;
  uint32_t id = 0;
  St st = St::Free;
  bool writing = false;
  bool pending_open = false;  // counted in Runner::pending_open
  bool ok = false;            // finished with a clean close handshake
  bool echoed = false;        // at least one checked echo
  Buf in;                     // carried-over input (handshake head, partial frame header)
  Buf inflight, next;         // output queue
  char accept[32];
  uint64_t t_start = 0;  // cycle start (connect mode) / connect start
  uint64_t t_open = 0;
  uint64_t deadline = 0;
  // receive side
  uint64_t pay_left = 0;
  bool rx_in_msg = false;
  bool rx_fin = false;
  uint64_t rx_got = 0;
  // message in flight
  bool awaiting = false;
  uint64_t seq = 0;
  uint64_t sent_ns = 0;
  uint32_t off = 0;
  uint8_t stamp[8];
};

struct Runner {
  int id = 0;
  uv_loop_t loop;
  uv_timer_t tick;
  Rng rng{0};
  std::vector<Conn*> conns;
  size_t next_start = 0;
  int pending_open = 0;
  int ramp_limit = 1;
  int active = 0;  // handles not yet closed
  bool settled = false;
  bool stop = false;
  bool done = false;
  uint64_t start_ns = 0, end_ns = 0;  // measurement window (echo, connect) / hold (idle)
  unsigned ticks = 0;
  std::string hs_prefix;  // handshake request up to the key
  Buf scratch;
  size_t msg_size = 0;
  uint8_t msg_op = 2;
  std::vector<char> pool;
  char rbuf[kReadBufSize];
  // results
  uint64_t errors[E_COUNT] = {};
  uint64_t messages = 0, bytes = 0, completed = 0, opened = 0, succeeded = 0, pings = 0;
  uint64_t established_when_settled = 0;
  Hist lat;  // echo: message round trip; connect: whole cycle
  Hist hs;   // handshake time (connect start -> 101 checked)
};

uint64_t now_ns() {
  return uv_hrtime();
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);
void on_closed(uv_handle_t* h);
void runner_check_done(Runner* r);

void fail(Conn* c, Err e, const char* fmt, ...) __attribute__((format(printf, 3, 4)));
void fail(Conn* c, Err e, const char* fmt, ...) {
  Runner* r = c->r;
  if (c->st == St::Aborting || c->st == St::Free)
    return;
  r->errors[e]++;
  if (g_err_logged[e].fetch_add(1) < kErrLogMax) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "wsload: error %s (thread %d conn %u, state %s, seq %" PRIu64 "): %s\n",
            kErrName[e], r->id, c->id, st_name(c->st), c->seq, msg);
  }
  if (c->pending_open) {
    c->pending_open = false;
    r->pending_open--;
  }
  c->st = St::Aborting;
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_closed);
}

void on_write(uv_write_t* req, int status) {
  Conn* c = static_cast<Conn*>(req->data);
  c->writing = false;
  c->inflight.len = 0;
  if (c->st == St::Aborting || c->st == St::Free)
    return;
  if (status < 0) {
    fail(c, E_WRITE, "%s", uv_strerror(status));
    return;
  }
  if (c->next.len) {
    std::swap(c->inflight, c->next);
    uv_buf_t b = uv_buf_init(c->inflight.d, unsigned(c->inflight.len));
    int rc = uv_write(&c->wreq, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, on_write);
    if (rc < 0) {
      fail(c, E_WRITE, "%s", uv_strerror(rc));
      return;
    }
    c->writing = true;
  }
}

void conn_send(Conn* c, const char* data, size_t len) {
  if (!len || c->st == St::Aborting || c->st == St::Free)
    return;
  if (c->writing) {
    c->next.append(data, len);
    return;
  }
  uv_buf_t b = uv_buf_init(const_cast<char*>(data), unsigned(len));
  int w = uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
  if (w == UV_EAGAIN)
    w = 0;
  if (w < 0) {
    fail(c, E_WRITE, "%s", uv_strerror(w));
    return;
  }
  if (size_t(w) < len) {
    c->inflight.len = 0;
    c->inflight.append(data + w, len - size_t(w));
    uv_buf_t rb = uv_buf_init(c->inflight.d, unsigned(c->inflight.len));
    int rc = uv_write(&c->wreq, reinterpret_cast<uv_stream_t*>(&c->tcp), &rb, 1, on_write);
    if (rc < 0) {
      fail(c, E_WRITE, "%s", uv_strerror(rc));
      return;
    }
    c->writing = true;
  }
}

// A masked client frame with a fresh random mask; payload taken from p (or the message pool).
char* put_client_header(Runner* r, Buf& out, uint8_t b0, uint64_t len, uint8_t mask[4]) {
  uint8_t h[14];
  size_t n;
  h[0] = b0;
  if (len < 126) {
    h[1] = uint8_t(0x80 | len);
    n = 2;
  } else if (len < 65536) {
    h[1] = 0x80 | 126;
    h[2] = uint8_t(len >> 8);
    h[3] = uint8_t(len);
    n = 4;
  } else {
    h[1] = 0x80 | 127;
    for (int i = 0; i < 8; i++)
      h[2 + i] = uint8_t(len >> (56 - 8 * i));
    n = 10;
  }
  uint32_t m = uint32_t(r->rng.next());
  memcpy(mask, &m, 4);
  memcpy(h + n, mask, 4);
  n += 4;
  out.append(h, n);
  return out.extend(size_t(len));
}

void put_control(Runner* r, Buf& out, uint8_t op, const char* p, size_t n) {
  uint8_t mask[4];
  char* dst = put_client_header(r, out, uint8_t(0x80 | op), n, mask);
  unmask_copy(dst, p, n, mask, 0);
}

// Next message of c into out; remembers what to expect back.
void put_message(Conn* c, Buf& out) {
  Runner* r = c->r;
  c->seq++;
  size_t sz = r->msg_size;
  c->off = uint32_t((c->seq * 7919u + c->id * 104729u) % kPoolSlack);
  uint64_t v = (uint64_t(c->id) << 40) ^ c->seq;
  if (r->msg_op == 1) {  // text: hex digits keep it ASCII
    static const char hx[] = "0123456789abcdef";
    uint32_t x = uint32_t(v ^ (v >> 32));
    for (int i = 0; i < 8; i++)
      c->stamp[i] = uint8_t(hx[(x >> (28 - 4 * i)) & 15]);
  } else {
    memcpy(c->stamp, &v, 8);
  }
  uint8_t mask[4];
  char* dst = put_client_header(r, out, uint8_t(0x80 | r->msg_op), sz, mask);
  unmask_copy(dst, r->pool.data() + c->off, sz, mask, 0);
  for (size_t i = 0; i < std::min<size_t>(8, sz); i++)
    dst[i] = char(c->stamp[i] ^ mask[i & 3]);
  c->awaiting = true;
  c->rx_got = 0;
  c->rx_in_msg = false;
  c->sent_ns = now_ns();
  c->deadline = c->sent_ns + uint64_t(g_opt.timeout * 1e9);
}

// Does [p, p+k) equal the expected echo at offset o?
bool check_chunk(Conn* c, const char* p, size_t k, uint64_t o) {
  const char* exp = c->r->pool.data() + c->off;
  size_t i = 0;
  while (i < k && o + i < 8) {
    if (uint8_t(p[i]) != c->stamp[o + i])
      return false;
    i++;
  }
  return i >= k || memcmp(p + i, exp + o + i, k - i) == 0;
}

void begin_close(Conn* c, Buf& out) {
  static const char code[2] = {char(0x03), char(0xE8)};  // 1000
  put_control(c->r, out, 0x8, code, 2);
  c->st = St::Closing;
  c->deadline = now_ns() + uint64_t(g_opt.timeout * 1e9);
}

void message_complete(Conn* c, Buf& out) {
  Runner* r = c->r;
  if (c->rx_got != r->msg_size) {
    fail(c, E_MISMATCH, "echo length %" PRIu64 ", sent %zu", c->rx_got, r->msg_size);
    return;
  }
  uint64_t t = now_ns();
  c->awaiting = false;
  c->echoed = true;
  if (g_opt.mode == Mode::Echo) {
    if (r->start_ns && t >= r->start_ns && t < r->end_ns) {
      r->messages++;
      r->bytes += r->msg_size;
      r->lat.add(t - c->sent_ns);
    }
    if (r->stop)
      begin_close(c, out);
    else
      put_message(c, out);
  } else {
    // connect: one echo per connection; idle: the final check after the hold
    begin_close(c, out);
  }
}

// Parses server frames in [p, p+n); returns bytes used (never a partial header or a partial
// control frame). Output (pongs, next message, close) goes to out.
size_t feed_frames(Conn* c, const char* p, size_t n, Buf& out) {
  Runner* r = c->r;
  size_t pos = 0;
  while (pos < n) {
    if (c->st != St::Open && c->st != St::Closing && c->st != St::WaitEof)
      return n;
    if (c->pay_left) {
      size_t k = size_t(std::min<uint64_t>(c->pay_left, n - pos));
      if (!check_chunk(c, p + pos, k, c->rx_got)) {
        fail(c, E_MISMATCH, "payload differs from what was sent (message offset %" PRIu64 ")",
             c->rx_got);
        return n;
      }
      c->rx_got += k;
      c->pay_left -= k;
      pos += k;
      if (c->pay_left == 0 && c->rx_fin)
        message_complete(c, out);
      continue;
    }
    const uint8_t* h = reinterpret_cast<const uint8_t*>(p + pos);
    size_t avail = n - pos;
    if (avail < 2)
      break;
    uint8_t b0 = h[0], b1 = h[1], op = b0 & 0x0f;
    bool fin = b0 & 0x80;
    if (b0 & 0x70) {
      fail(c, E_PROTOCOL, "RSV bits set (0x%02x) though no extension was negotiated", b0);
      return n;
    }
    if (b1 & 0x80) {
      fail(c, E_PROTOCOL, "masked frame from the server");
      return n;
    }
    uint64_t len = b1 & 0x7f;
    size_t hl = 2;
    if (len == 126) {
      if (avail < 4)
        break;
      len = (uint64_t(h[2]) << 8) | h[3];
      hl = 4;
    } else if (len == 127) {
      if (avail < 10)
        break;
      len = 0;
      for (int i = 0; i < 8; i++)
        len = (len << 8) | h[2 + i];
      hl = 10;
    }
    if (op >= 0x8) {
      if (len > 125 || !fin) {
        fail(c, E_PROTOCOL, "bad control frame (opcode %u, length %" PRIu64 ", fin %d)", op, len,
             fin);
        return n;
      }
      if (avail < hl + len)
        break;
      const char* pl = p + pos + hl;
      pos += hl + size_t(len);
      if (op == 0x9) {  // ping: answer with a pong carrying the same payload
        r->pings++;
        if (c->st == St::Open)
          put_control(r, out, 0xA, pl, size_t(len));
      } else if (op == 0x8) {
        unsigned code = len >= 2 ? (unsigned(uint8_t(pl[0])) << 8 | uint8_t(pl[1])) : 0;
        if (c->st == St::Closing) {
          if (len == 1 || (len >= 2 && code != 1000)) {
            fail(c, E_BAD_CLOSE_REPLY, "close reply with code %u (length %" PRIu64 ")", code, len);
            return n;
          }
          c->st = St::WaitEof;  // now the server closes the TCP connection
          c->deadline = now_ns() + uint64_t(g_opt.timeout * 1e9);
        } else if (c->st == St::WaitEof) {
          fail(c, E_PROTOCOL, "second close frame");
          return n;
        } else {
          fail(c, E_UNEXPECTED_CLOSE, "server sent close code %u reason \"%.*s\"%s", code,
               len > 2 ? int(len - 2) : 0, pl + 2, c->awaiting ? " while an echo was pending" : "");
          return n;
        }
      } else if (op != 0xA) {
        fail(c, E_PROTOCOL, "reserved control opcode %u", op);
        return n;
      }
      continue;
    }
    // data frame
    if (op != 0x0 && op != 0x1 && op != 0x2) {
      fail(c, E_PROTOCOL, "reserved data opcode %u", op);
      return n;
    }
    if (c->st != St::Open || !c->awaiting) {
      fail(c, E_UNEXPECTED_MESSAGE,
           "data frame (opcode %u, length %" PRIu64 ") with no echo pending", op, len);
      return n;
    }
    if (op == 0x0) {
      if (!c->rx_in_msg) {
        fail(c, E_PROTOCOL, "continuation frame without a message in progress");
        return n;
      }
    } else {
      if (c->rx_in_msg) {
        fail(c, E_PROTOCOL, "new message inside a fragmented message");
        return n;
      }
      if (op != r->msg_op) {
        fail(c, E_MISMATCH, "echo opcode %u, sent %u", op, r->msg_op);
        return n;
      }
      c->rx_in_msg = true;
    }
    if (c->rx_got + len > r->msg_size) {
      fail(c, E_MISMATCH, "echo longer than the %zu bytes sent", r->msg_size);
      return n;
    }
    pos += hl;
    c->pay_left = len;
    c->rx_fin = fin;
    if (len == 0 && fin)
      message_complete(c, out);
  }
  return pos;
}

void pump(Runner* r);

void on_open(Conn* c, Buf& out) {
  Runner* r = c->r;
  c->st = St::Open;
  c->t_open = now_ns();
  if (c->pending_open) {
    c->pending_open = false;
    r->pending_open--;
  }
  r->opened++;
  r->hs.add(c->t_open - c->t_start);
  if (g_opt.mode != Mode::Connect)
    pump(r);
  c->deadline = 0;
  if (g_opt.mode == Mode::Echo) {
    if (r->stop)
      begin_close(c, out);
    else
      put_message(c, out);
  } else if (g_opt.mode == Mode::Connect) {
    put_message(c, out);
  } else if (r->stop) {  // idle, hold already over
    put_message(c, out);
  }
}

// Checks the handshake response head [p, p+n).
bool check_handshake(Conn* c, const char* p, size_t n) {
  const char* eol = static_cast<const char*>(memchr(p, '\r', n));
  if (n < 12 || memcmp(p, "HTTP/1.1 101", 12) != 0) {
    fail(c, E_HANDSHAKE, "status line \"%.*s\"",
         int(std::min<size_t>(eol ? size_t(eol - p) : n, 200)), p);
    return false;
  }
  bool upgrade = false, connection = false, accept_ok = false, accept_seen = false, ext = false;
  const char* end = p + n;
  const char* line = eol + 2;
  while (line < end) {
    const char* le = static_cast<const char*>(memchr(line, '\r', size_t(end - line)));
    if (!le || le == line)
      break;
    const char* colon = static_cast<const char*>(memchr(line, ':', size_t(le - line)));
    if (colon) {
      size_t nl = size_t(colon - line);
      const char* v = colon + 1;
      while (v < le && (*v == ' ' || *v == '\t'))
        v++;
      const char* ve = le;
      while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
        ve--;
      size_t vl = size_t(ve - v);
      if (ieq(line, nl, "upgrade"))
        upgrade = upgrade || has_token(v, vl, "websocket");
      else if (ieq(line, nl, "connection"))
        connection = connection || has_token(v, vl, "upgrade");
      else if (ieq(line, nl, "sec-websocket-accept")) {
        accept_ok = !accept_seen && vl == 28 && memcmp(v, c->accept, 28) == 0;
        accept_seen = true;
      } else if (ieq(line, nl, "sec-websocket-extensions"))
        ext = true;
    }
    line = le + 2;
  }
  if (!upgrade || !connection) {
    fail(c, E_HANDSHAKE, "101 without Upgrade: websocket / Connection: upgrade");
    return false;
  }
  if (!accept_ok) {
    fail(c, E_BAD_ACCEPT,
         accept_seen ? "Sec-WebSocket-Accept does not match the key" : "no Sec-WebSocket-Accept");
    return false;
  }
  if (ext) {
    fail(c, E_HANDSHAKE, "server selected an extension that was not offered");
    return false;
  }
  return true;
}

void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(h->data);
  buf->base = c->r->rbuf;
  buf->len = kReadBufSize;
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  Conn* c = static_cast<Conn*>(s->data);
  Runner* r = c->r;
  if (c->st == St::Aborting || c->st == St::Free)
    return;
  if (nread == 0)
    return;
  if (nread < 0) {
    if (nread == UV_EOF && c->st == St::WaitEof) {
      c->ok = true;
      c->st = St::Aborting;  // i.e. closing, nothing more to do
      uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_closed);
    } else if (nread == UV_EOF) {
      fail(c, E_UNEXPECTED_EOF, "server closed the TCP connection%s",
           c->awaiting ? " while an echo was pending" : "");
    } else {
      fail(c, E_READ, "%s", uv_strerror(int(nread)));
    }
    return;
  }
  Buf& out = r->scratch;
  out.len = 0;
  const char* p = buf->base;
  size_t n = size_t(nread);

  if (c->st == St::Handshake) {
    c->in.append(p, n);
    const char* e = find_crlfcrlf(c->in.d, c->in.len);
    if (!e) {
      if (c->in.len > kMaxHandshake)
        fail(c, E_HANDSHAKE, "response head larger than %zu bytes", kMaxHandshake);
      return;
    }
    size_t hl = size_t(e + 4 - c->in.d);
    if (!check_handshake(c, c->in.d, hl))
      return;
    c->in.consume_front(hl);
    on_open(c, out);
    // frames that came with the 101 stay in c->in
    n = 0;
  }
  while (true) {
    if (c->in.len) {
      size_t take = c->in.len < kStash ? std::min(n, kStash - c->in.len) : n;
      c->in.append(p, take);
      p += take;
      n -= take;
      size_t used = feed_frames(c, c->in.d, c->in.len, out);
      if (c->st == St::Aborting)
        return;
      c->in.consume_front(used);
      if (n == 0)
        break;
      continue;
    }
    if (n == 0)
      break;
    size_t used = feed_frames(c, p, n, out);
    if (c->st == St::Aborting)
      return;
    p += used;
    n -= used;
    if (n)
      c->in.append(p, n);
    break;
  }
  conn_send(c, out.d, out.len);
}

void on_connect(uv_connect_t* req, int status) {
  Conn* c = static_cast<Conn*>(req->data);
  if (c->st != St::Connecting)
    return;  // aborted meanwhile
  if (status < 0) {
    fail(c, E_CONNECT, "%s", uv_strerror(status));
    return;
  }
  Runner* r = c->r;
  uv_tcp_nodelay(&c->tcp, 1);
  c->st = St::Handshake;
  // key and expected accept
  unsigned char key[16];
  uint64_t a = r->rng.next(), b = r->rng.next();
  memcpy(key, &a, 8);
  memcpy(key + 8, &b, 8);
  char key64[32];
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(key64), key, 16);  // 24 chars
  static const char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
  char cat[24 + sizeof kGuid];
  memcpy(cat, key64, 24);
  memcpy(cat + 24, kGuid, sizeof kGuid - 1);
  unsigned char dig[SHA_DIGEST_LENGTH];
  sha1(cat, 24 + sizeof kGuid - 1, dig);
  EVP_EncodeBlock(reinterpret_cast<unsigned char*>(c->accept), dig, SHA_DIGEST_LENGTH);
  Buf& out = r->scratch;
  out.len = 0;
  out.append(r->hs_prefix.data(), r->hs_prefix.size());
  out.append(key64, 24);
  out.append("\r\n\r\n", 4);
  int rc = uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
  if (rc < 0) {
    fail(c, E_READ, "%s", uv_strerror(rc));
    return;
  }
  conn_send(c, out.d, out.len);
}

void start_conn(Conn* c) {
  Runner* r = c->r;
  c->st = St::Connecting;
  c->writing = false;
  c->ok = c->echoed = false;
  c->in.len = c->inflight.len = c->next.len = 0;
  c->pay_left = c->rx_got = 0;
  c->rx_in_msg = c->rx_fin = c->awaiting = false;
  c->t_start = now_ns();
  c->deadline = c->t_start + uint64_t(g_opt.timeout * 1e9);
  c->pending_open = true;
  r->pending_open++;
  r->active++;
  uv_tcp_init(&r->loop, &c->tcp);
  c->tcp.data = c;
  c->creq.data = c;
  c->wreq.data = c;
  int rc =
      uv_tcp_connect(&c->creq, &c->tcp, reinterpret_cast<const sockaddr*>(&g_addr), on_connect);
  if (rc < 0)
    fail(c, E_CONNECT, "%s", uv_strerror(rc));
}

// Starts connections while below the ramp limit (echo, idle).
void pump(Runner* r) {
  while (!r->stop && r->next_start < r->conns.size() && r->pending_open < r->ramp_limit) {
    start_conn(r->conns[r->next_start++]);
  }
}

void on_closed(uv_handle_t* h) {
  Conn* c = static_cast<Conn*>(h->data);
  Runner* r = c->r;
  uint64_t t = now_ns();
  bool ok = c->ok;
  c->st = St::Free;
  r->active--;
  if (ok)
    r->succeeded++;
  if (g_opt.mode == Mode::Connect) {
    if (ok && t < r->end_ns) {
      r->completed++;
      r->lat.add(t - c->t_start);
    }
    if (!r->stop && t < r->end_ns)
      start_conn(c);
  } else {
    pump(r);
  }
  runner_check_done(r);
}

void on_tick_closed(uv_handle_t*) {}

void runner_check_done(Runner* r) {
  if (r->done || r->active > 0)
    return;
  bool finished = false;
  if (g_opt.mode == Mode::Connect)
    finished = r->stop;
  else
    finished = r->stop || (r->settled && r->next_start >= r->conns.size());
  if (!finished)
    return;
  // All connections gone. In echo/idle mode this may happen before the global start when every
  // connection failed: still take part in the settle count so other threads are not held up.
  if (!r->settled)
    return;
  r->done = true;
  uv_timer_stop(&r->tick);
  uv_close(reinterpret_cast<uv_handle_t*>(&r->tick), on_tick_closed);
}

void on_tick(uv_timer_t* t) {
  Runner* r = static_cast<Runner*>(t->data);
  uint64_t now = now_ns();
  r->ticks++;
  const Options& o = g_opt;
  int nthreads = o.threads;

  if (o.mode != Mode::Connect) {
    if (!r->settled && r->next_start >= r->conns.size() && r->pending_open == 0) {
      r->settled = true;
      uint64_t open_now = 0;
      for (Conn* c : r->conns)
        if (c->st == St::Open)
          open_now++;
      r->established_when_settled = open_now;
      int64_t est = g_shared.established.fetch_add(int64_t(open_now)) + int64_t(open_now);
      if (g_shared.settled.fetch_add(1) + 1 == nthreads) {
        uint64_t s = now + uint64_t((o.mode == Mode::Echo ? o.warmup : 0) * 1e9);
        g_shared.settled_ns.store(now);
        g_shared.start_ns.store(s);
        if (o.mode == Mode::Idle) {
          printf("established %" PRId64 "\n", est);
          fflush(stdout);
        }
      }
    }
    if (!r->start_ns) {
      uint64_t s = g_shared.start_ns.load();
      if (s) {
        r->start_ns = s;
        r->end_ns = s + uint64_t((o.mode == Mode::Echo ? o.duration : o.hold) * 1e9);
      }
    }
    if (r->start_ns && !r->stop && now >= r->end_ns) {
      r->stop = true;
      Buf& out = r->scratch;
      for (Conn* c : r->conns) {
        if (c->st != St::Open || c->awaiting)
          continue;  // awaiting: closes after its echo
        out.len = 0;
        if (o.mode == Mode::Idle)
          put_message(c, out);  // final check, then close
        else
          begin_close(c, out);
        conn_send(c, out.d, out.len);
      }
    }
  } else {
    if (!r->stop && now >= r->end_ns)
      r->stop = true;
  }

  if (r->ticks % 10 == 0) {  // timeouts, every 100 ms
    for (Conn* c : r->conns) {
      bool timed = false;
      switch (c->st) {
        case St::Connecting:
        case St::Handshake:
        case St::Closing:
        case St::WaitEof:
          timed = true;
          break;
        case St::Open:
          timed = c->awaiting;
          break;
        default:
          break;
      }
      if (timed && c->deadline && now > c->deadline) {
        if (c->st == St::Open)
          fail(c, E_TIMEOUT, "no echo within %.1fs", o.timeout);
        else if (c->st == St::WaitEof)
          fail(c, E_TIMEOUT,
               "server did not close the TCP connection within %.1fs of the close handshake",
               o.timeout);
        else
          fail(c, E_TIMEOUT, "no progress within %.1fs", o.timeout);
      }
    }
  }
  runner_check_done(r);
}

void run_runner(Runner* r) {
  uv_run(&r->loop, UV_RUN_DEFAULT);
  g_shared.finished.fetch_add(1);
}

// ---------------------------------------------------------------------------------------------
// setup, results

[[noreturn]] void usage(const char* msg = nullptr) {
  if (msg)
    fprintf(stderr, "wsload: %s\n", msg);
  fprintf(
      stderr,
      "usage: sluice_wsload MODE --url ws://HOST:PORT/PATH [options]\n"
      "modes:\n"
      "  echo     --connections N (64) --size BYTES (64) --duration S (10) [--text] [--warmup S]\n"
      "  connect  --concurrency N (16) --duration S (10) [--size BYTES (32)]\n"
      "  idle     --connections N (10000) --hold S (10) [--ramp K (256)] [--size BYTES (32)]\n"
      "common:\n"
      "  --threads T (1)  --json  --timeout S (10, per operation)  --max-time S (hard limit)\n"
      "  --header 'Name: value' (repeatable)  --origin URL\n");
  exit(2);
}

void parse_url(Options& o) {
  const std::string& u = o.url;
  if (u.rfind("ws://", 0) != 0)
    usage("--url must start with ws:// (wss is not supported)");
  std::string rest = u.substr(5);
  size_t slash = rest.find('/');
  std::string hp = slash == std::string::npos ? rest : rest.substr(0, slash);
  o.path = slash == std::string::npos ? "/" : rest.substr(slash);
  if (!hp.empty() && hp[0] == '[') {
    size_t rb = hp.find(']');
    if (rb == std::string::npos)
      usage("bad IPv6 literal in --url");
    o.host = hp.substr(1, rb - 1);
    if (rb + 1 < hp.size() && hp[rb + 1] == ':')
      o.port = hp.substr(rb + 2);
  } else {
    size_t colon = hp.rfind(':');
    if (colon != std::string::npos) {
      o.host = hp.substr(0, colon);
      o.port = hp.substr(colon + 1);
    } else {
      o.host = hp;
    }
  }
  if (o.host.empty())
    usage("no host in --url");
  addrinfo hints{}, *res = nullptr;
  hints.ai_socktype = SOCK_STREAM;
  int rc = getaddrinfo(o.host.c_str(), o.port.c_str(), &hints, &res);
  if (rc != 0 || !res) {
    fprintf(stderr, "wsload: cannot resolve %s:%s: %s\n", o.host.c_str(), o.port.c_str(),
            gai_strerror(rc));
    exit(2);
  }
  memcpy(&g_addr, res->ai_addr, res->ai_addrlen);
  freeaddrinfo(res);
}

void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

const char* mode_name(Mode m) {
  return m == Mode::Echo ? "echo" : m == Mode::Connect ? "connect" : "idle";
}

std::string json_escape(const std::string& s) {
  std::string o;
  for (char ch : s) {
    if (ch == '"' || ch == '\\') {
      o += '\\';
      o += ch;
    } else if (uint8_t(ch) < 0x20) {
      char b[8];
      snprintf(b, sizeof b, "\\u%04x", ch);
      o += b;
    } else {
      o += ch;
    }
  }
  return o;
}

struct Totals {
  uint64_t errors[E_COUNT] = {};
  uint64_t err_total = 0;
  uint64_t messages = 0, bytes = 0, completed = 0, opened = 0, succeeded = 0, pings = 0;
  Hist lat, hs;
  double window_s = 0;
};

Totals collect(const std::vector<Runner*>& rs) {
  Totals t;
  uint64_t s = UINT64_MAX, e = 0;
  for (Runner* r : rs) {
    for (int i = 0; i < E_COUNT; i++) {
      t.errors[i] += r->errors[i];
      t.err_total += r->errors[i];
    }
    t.messages += r->messages;
    t.bytes += r->bytes;
    t.completed += r->completed;
    t.opened += r->opened;
    t.succeeded += r->succeeded;
    t.pings += r->pings;
    t.lat.merge(r->lat);
    t.hs.merge(r->hs);
    if (r->start_ns) {
      s = std::min(s, r->start_ns);
      e = std::max(e, r->end_ns);
    }
  }
  if (e > s)
    t.window_s = double(e - s) / 1e9;
  return t;
}

void report(const std::vector<Runner*>& rs, bool hard_timeout) {
  const Options& o = g_opt;
  Totals t = collect(rs);
  FILE* human = o.json ? stderr : stdout;
  std::string j = "{";
  char b[512];
  auto add = [&](const char* fmt, auto... args) {
    snprintf(b, sizeof b, fmt, args...);
    if (j.size() > 1)
      j += ",";
    j += b;
  };
  add("\"mode\":\"%s\"", mode_name(o.mode));
  add("\"url\":\"%s\"", json_escape(o.url).c_str());
  add("\"threads\":%d", o.threads);
  std::string errs;
  for (int i = 0; i < E_COUNT; i++) {
    if (!t.errors[i])
      continue;
    snprintf(b, sizeof b, "%s\"%s\":%" PRIu64, errs.empty() ? "" : ",", kErrName[i], t.errors[i]);
    errs += b;
  }
  if (hard_timeout)
    errs += std::string(errs.empty() ? "" : ",") + "\"hard_timeout\":1";
  uint64_t err_total = t.err_total + (hard_timeout ? 1 : 0);
  auto us = [](double ns) { return ns / 1000.0; };

  if (o.mode == Mode::Echo) {
    double secs = t.window_s > 0 ? t.window_s : o.duration;
    double mps = double(t.messages) / secs;
    double mbps = double(t.bytes) / secs / 1e6;
    add("\"connections\":%d,\"established\":%" PRIu64 ",\"size\":%ld,\"text\":%s", o.connections,
        t.opened, o.size, o.text ? "true" : "false");
    add("\"duration_s\":%.3f,\"messages\":%" PRIu64 ",\"msgs_per_s\":%.1f,\"mb_per_s\":%.3f", secs,
        t.messages, mps, mbps);
    add("\"latency_us\":{\"mean\":%.1f,\"p50\":%.1f,\"p90\":%.1f,\"p99\":%.1f,\"p999\":%.1f,"
        "\"max\":%.1f}",
        t.lat.n ? us(double(t.lat.sum) / double(t.lat.n)) : 0.0, us(t.lat.pct(0.5)),
        us(t.lat.pct(0.9)), us(t.lat.pct(0.99)), us(t.lat.pct(0.999)), us(double(t.lat.max)));
    fprintf(human, "echo %s: %d connections x %ld B%s, %.2f s\n", o.url.c_str(), o.connections,
            o.size, o.text ? " text" : "", secs);
    fprintf(human, "  established  %" PRIu64 "\n", t.opened);
    fprintf(human, "  messages     %" PRIu64 "  (%.0f msg/s, %.2f MB/s payload each way)\n",
            t.messages, mps, mbps);
    fprintf(human, "  latency µs   p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
            us(t.lat.pct(0.5)), us(t.lat.pct(0.9)), us(t.lat.pct(0.99)), us(t.lat.pct(0.999)),
            us(double(t.lat.max)));
  } else if (o.mode == Mode::Connect) {
    double secs = t.window_s > 0 ? t.window_s : o.duration;
    double cps = double(t.completed) / secs;
    add("\"concurrency\":%d,\"size\":%ld,\"duration_s\":%.3f,\"connections\":%" PRIu64
        ",\"conns_per_s\":%.1f",
        o.concurrency, o.size, secs, t.completed, cps);
    add("\"handshake_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}", us(t.hs.pct(0.5)),
        us(t.hs.pct(0.99)), us(double(t.hs.max)));
    add("\"cycle_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}", us(t.lat.pct(0.5)),
        us(t.lat.pct(0.99)), us(double(t.lat.max)));
    fprintf(human, "connect %s: concurrency %d, %.2f s\n", o.url.c_str(), o.concurrency, secs);
    fprintf(human, "  connections  %" PRIu64 " completed (%.0f conn/s)\n", t.completed, cps);
    fprintf(human, "  handshake µs p50 %.1f  p99 %.1f  max %.1f\n", us(t.hs.pct(0.5)),
            us(t.hs.pct(0.99)), us(double(t.hs.max)));
    fprintf(human, "  cycle µs     p50 %.1f  p99 %.1f  max %.1f\n", us(t.lat.pct(0.5)),
            us(t.lat.pct(0.99)), us(double(t.lat.max)));
  } else {
    int64_t est = g_shared.established.load();
    uint64_t sn = g_shared.settled_ns.load();
    double ramp_s = sn ? double(sn - g_shared.launch_ns) / 1e9 : 0.0;
    add("\"connections\":%d,\"established\":%" PRId64 ",\"succeeded\":%" PRIu64
        ",\"failed\":%" PRIu64 ",\"hold_s\":%.1f,\"ramp_s\":%.3f,\"pings\":%" PRIu64,
        o.connections, est, t.succeeded,
        uint64_t(o.connections) - std::min<uint64_t>(t.succeeded, uint64_t(o.connections)), o.hold,
        ramp_s, t.pings);
    add("\"handshake_us\":{\"p50\":%.1f,\"p99\":%.1f,\"max\":%.1f}", us(t.hs.pct(0.5)),
        us(t.hs.pct(0.99)), us(double(t.hs.max)));
    fprintf(human, "idle %s: %d connections, hold %.1f s\n", o.url.c_str(), o.connections, o.hold);
    fprintf(human,
            "  established  %" PRId64 " in %.2f s\n  succeeded    %" PRIu64
            " (echo checked and closed cleanly after the hold)\n",
            est, ramp_s, t.succeeded);
    fprintf(human, "  pings        %" PRIu64 " answered\n", t.pings);
    fprintf(human, "  handshake µs p50 %.1f  p99 %.1f  max %.1f\n", us(t.hs.pct(0.5)),
            us(t.hs.pct(0.99)), us(double(t.hs.max)));
  }
  add("\"errors\":%" PRIu64, err_total);
  j += ",\"error_kinds\":{" + errs + "}";
  j += "}";
  fprintf(human, "  errors       %" PRIu64 "%s", err_total, err_total ? " (" : "\n");
  if (err_total) {
    bool first = true;
    for (int i = 0; i < E_COUNT; i++) {
      if (!t.errors[i])
        continue;
      fprintf(human, "%s%s %" PRIu64, first ? "" : ", ", kErrName[i], t.errors[i]);
      first = false;
    }
    if (hard_timeout)
      fprintf(human, "%shard_timeout", first ? "" : ", ");
    fprintf(human, ")\n");
  }
  fflush(human);
  if (o.json) {
    printf("%s\n", j.c_str());
    fflush(stdout);
  }
}

}  // namespace

int main(int argc, char** argv) {
  Options& o = g_opt;
  if (argc < 2)
    usage();
  std::string mode = argv[1];
  if (mode == "echo")
    o.mode = Mode::Echo;
  else if (mode == "connect")
    o.mode = Mode::Connect;
  else if (mode == "idle")
    o.mode = Mode::Idle;
  else if (mode == "-h" || mode == "--help")
    usage();
  else
    usage("unknown mode");
  for (int i = 2; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc)
        usage(("missing value for " + a).c_str());
      return argv[++i];
    };
    if (a == "--url")
      o.url = val();
    else if (a == "--connections" || a == "-c")
      o.connections = atoi(val());
    else if (a == "--concurrency")
      o.concurrency = atoi(val());
    else if (a == "--size")
      o.size = atol(val());
    else if (a == "--duration" || a == "-d")
      o.duration = atof(val());
    else if (a == "--warmup")
      o.warmup = atof(val());
    else if (a == "--hold")
      o.hold = atof(val());
    else if (a == "--ramp")
      o.ramp = atoi(val());
    else if (a == "--threads" || a == "-t")
      o.threads = atoi(val());
    else if (a == "--text")
      o.text = true;
    else if (a == "--json")
      o.json = true;
    else if (a == "--timeout")
      o.timeout = atof(val());
    else if (a == "--max-time")
      o.max_time = atof(val());
    else if (a == "--header" || a == "-H")
      o.headers.push_back(val());
    else if (a == "--origin")
      o.headers.push_back(std::string("Origin: ") + val());
    else
      usage(("unknown option " + a).c_str());
  }
  if (o.url.empty())
    usage("--url is required");
  if (o.connections < 0)
    o.connections = o.mode == Mode::Idle ? 10000 : 64;
  if (o.size < 0)
    o.size = o.mode == Mode::Echo ? 64 : 32;
  if (o.threads < 1 || o.threads > 64)
    usage("--threads must be 1..64");
  if (o.connections < 1 || o.concurrency < 1 || o.ramp < 1)
    usage("counts must be positive");
  if (o.size > long(kMaxSize))
    usage("--size too large");
  if (o.duration <= 0 || o.hold < 0 || o.timeout <= 0 || o.warmup < 0)
    usage("bad duration");
  for (auto& h : o.headers)
    if (h.find(':') == std::string::npos || h.find('\n') != std::string::npos)
      usage("bad --header");
  parse_url(o);
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();
  if (o.mode != Mode::Connect) {
    rlimit rl{};
    getrlimit(RLIMIT_NOFILE, &rl);
    if (rl.rlim_cur != RLIM_INFINITY && uint64_t(o.connections) + 64 > rl.rlim_cur)
      fprintf(stderr, "wsload: warning: %d connections but the open-file limit is %llu\n",
              o.connections, static_cast<unsigned long long>(rl.rlim_cur));
  }
  if (o.max_time <= 0) {
    double base =
        o.mode == Mode::Idle ? o.hold + double(o.connections) / 200.0 : o.duration + o.warmup;
    o.max_time = base + 4 * o.timeout + 30;
  }

  // handshake request template (the key and the final CRLF are added per connection)
  std::string host_hdr = o.host.find(':') != std::string::npos ? "[" + o.host + "]" : o.host;
  if (o.port != "80")
    host_hdr += ":" + o.port;
  std::string prefix =
      "GET " + o.path + " HTTP/1.1\r\nHost: " + host_hdr +
      "\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n";
  for (auto& h : o.headers)
    prefix += h + "\r\n";
  prefix += "Sec-WebSocket-Key: ";

  uint64_t seed;
  if (RAND_bytes(reinterpret_cast<unsigned char*>(&seed), sizeof seed) != 1)
    seed = uint64_t(time(nullptr));

  g_shared.launch_ns = now_ns();
  std::vector<Runner*> rs;
  int total = o.mode == Mode::Connect ? o.concurrency : o.connections;
  for (int t = 0; t < o.threads; t++) {
    auto* r = new Runner();
    r->id = t;
    r->rng.s = seed ^ (uint64_t(t + 1) * 0x9E3779B97F4A7C15ull);
    r->hs_prefix = prefix;
    r->msg_size = size_t(o.size);
    r->msg_op = o.text ? 1 : 2;
    r->pool.resize(r->msg_size + kPoolSlack + 8);
    for (size_t i = 0; i < r->pool.size(); i++) {
      uint64_t x = r->rng.next();
      if (o.text) {
        static const char al[] =
            "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,";
        r->pool[i] = al[x % (sizeof al - 1)];
      } else {
        r->pool[i] = char(x);
      }
    }
    int mine = total / o.threads + (t < total % o.threads ? 1 : 0);
    for (int k = 0; k < mine; k++) {
      auto* c = new Conn();
      c->r = r;
      c->id = uint32_t(t * total + k);
      r->conns.push_back(c);
    }
    r->ramp_limit = std::max(1, o.ramp / o.threads);
    uv_loop_init(&r->loop);
    uv_timer_init(&r->loop, &r->tick);
    r->tick.data = r;
    rs.push_back(r);
  }
  for (Runner* r : rs) {
    if (o.mode == Mode::Connect) {
      r->start_ns = g_shared.launch_ns;
      r->end_ns = g_shared.launch_ns + uint64_t(o.duration * 1e9);
      for (Conn* c : r->conns)
        start_conn(c);
      r->settled = true;
      r->next_start = r->conns.size();
    } else {
      pump(r);
    }
    uv_timer_start(&r->tick, on_tick, 10, 10);
  }
  std::vector<std::thread> ts;
  for (int t = 1; t < o.threads; t++)
    ts.emplace_back(run_runner, rs[size_t(t)]);
  std::thread first(run_runner, rs[0]);

  // hard overall limit
  auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(o.max_time);
  bool hard_timeout = false;
  while (g_shared.finished.load() < o.threads) {
    if (std::chrono::steady_clock::now() > deadline) {
      hard_timeout = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  if (hard_timeout) {
    fprintf(stderr, "wsload: hard time limit of %.0f s reached; results are partial\n", o.max_time);
    // Worker threads are still running: report what they counted and leave without joining.
    report(rs, true);
    fflush(nullptr);
    _exit(3);
  }
  first.join();
  for (auto& t : ts)
    t.join();
  report(rs, false);
  Totals t = collect(rs);
  return t.err_total ? 1 : 0;
}
