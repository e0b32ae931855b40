// sluice_bench_backend: a fast, neutral benchmark backend.
//
//   HTTP/1.1  every request gets a fixed "200 OK" with the 13-byte body "hello, world\n".
//             Keep-alive, pipelining, HTTP/1.0, Connection: close, HEAD; request bodies
//             (Content-Length or chunked) are read and discarded.
//   WebSocket a GET with "Upgrade: websocket" gets a 101 with the RFC 6455 accept key; every
//             data frame is echoed back unmasked with the same opcode and FIN bit (so every
//             message comes back as the same message), pings get pongs, a close gets a close
//             with the same status code and then the TCP connection is closed.
//
// One libuv loop per thread (--threads N, default 1), each with its own SO_REUSEPORT listener.
// No allocation per request or per frame in steady state: reads go into one buffer per loop,
// responses are batched per read into one buffer per loop and written with uv_try_write; only
// what the socket does not take is copied into a per-connection queue.
//
// Deliberately standalone (nothing from proxy/): it is the yardstick for sluice, nginx and haproxy.
//
// usage: sluice_bench_backend [--host 127.0.0.1] --port P [--threads N] [--ping-interval SEC]
// prints "ready" on stdout once every listener accepts connections.

#include <uv.h>

#include "common.h"

#include <openssl/evp.h>
#include <openssl/sha.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <csignal>
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
constexpr size_t kMaxHead = 64 * 1024;          // larger request heads get 431
constexpr size_t kHighWater = 4 * 1024 * 1024;  // queued output above this: stop reading
constexpr size_t kLowWater = 256 * 1024;        // ... and resume below this
constexpr size_t kWsStash = 256;                // > largest WS header + control frame (14 + 125)
constexpr uint64_t kMaxFrame = 1ull << 40;      // sanity bound on a frame length

constexpr size_t kBodyLen = 13;  // "hello, world\n"
const char kRespKeepAlive[] =
    "HTTP/1.1 200 OK\r\nServer: sluice-bench\r\nContent-Type: text/plain\r\nContent-Length: "
    "13\r\n\r\n"
    "hello, world\n";
const char kRespKeepAlive10[] =
    "HTTP/1.1 200 OK\r\nServer: sluice-bench\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: keep-alive\r\n\r\nhello, world\n";
const char kRespClose[] =
    "HTTP/1.1 200 OK\r\nServer: sluice-bench\r\nContent-Type: text/plain\r\nContent-Length: 13\r\n"
    "Connection: close\r\n\r\nhello, world\n";
const char kResp400[] =
    "HTTP/1.1 400 Bad Request\r\nServer: sluice-bench\r\nContent-Length: 0\r\nConnection: "
    "close\r\n\r\n";
const char kResp431[] =
    "HTTP/1.1 431 Request Header Fields Too Large\r\nServer: sluice-bench\r\nContent-Length: 0\r\n"
    "Connection: close\r\n\r\n";
const char kResp426[] =
    "HTTP/1.1 426 Upgrade Required\r\nServer: sluice-bench\r\nSec-WebSocket-Version: 13\r\n"
    "Content-Length: 0\r\nConnection: close\r\n\r\n";
const char kPingPayload[] = "sluice-bench";

enum class Proto : uint8_t { Http, Ws };
enum class Body : uint8_t { None, Length, ChunkSize, ChunkData, Trailer };

struct Worker;

struct Conn {
  uv_tcp_t tcp;
  uv_write_t wreq;
  Worker* w = nullptr;
  Buf in;        // unparsed input carried over between reads
  Buf inflight;  // bytes handed to uv_write
  Buf next;      // bytes produced while a write is in flight
  bool writing = false;
  bool reading = false;
  bool close_after_flush = false;
  bool closed = false;
  Proto proto = Proto::Http;
  // HTTP request body being discarded
  Body body = Body::None;
  uint64_t body_left = 0;
  // WebSocket data frame payload being echoed
  uint64_t pay_left = 0;
  uint64_t pay_off = 0;
  uint8_t mask[4] = {0, 0, 0, 0};
  bool close_sent = false;
  Conn* ws_prev = nullptr;  // list of WebSocket connections (for --ping-interval)
  Conn* ws_next = nullptr;
  Conn* free_next = nullptr;
};

struct Worker {
  uv_loop_t loop;
  uv_tcp_t server;
  uv_timer_t ping_timer;
  int fd = -1;
  Buf scratch;  // output produced while handling one read
  Conn* free_list = nullptr;
  Conn* ws_head = nullptr;
  uint64_t ping_ms = 0;
  char rbuf[kReadBufSize];
};

void conn_flush(Conn* c, const char* data, size_t len);
void conn_close(Conn* c);

// ---------------------------------------------------------------------------------------------
// small helpers

// Server frame header (never masked) into out.
void put_frame_header(Buf& out, uint8_t b0, uint64_t len) {
  uint8_t h[10];
  size_t n;
  h[0] = b0;
  if (len < 126) {
    h[1] = uint8_t(len);
    n = 2;
  } else if (len < 65536) {
    h[1] = 126;
    h[2] = uint8_t(len >> 8);
    h[3] = uint8_t(len);
    n = 4;
  } else {
    h[1] = 127;
    for (int i = 0; i < 8; i++)
      h[2 + i] = uint8_t(len >> (56 - 8 * i));
    n = 10;
  }
  out.append(h, n);
}

void ws_list_add(Conn* c) {
  Worker* w = c->w;
  c->ws_prev = nullptr;
  c->ws_next = w->ws_head;
  if (w->ws_head)
    w->ws_head->ws_prev = c;
  w->ws_head = c;
}

void ws_list_remove(Conn* c) {
  Worker* w = c->w;
  if (c->ws_prev)
    c->ws_prev->ws_next = c->ws_next;
  else if (w->ws_head == c)
    w->ws_head = c->ws_next;
  if (c->ws_next)
    c->ws_next->ws_prev = c->ws_prev;
  c->ws_prev = c->ws_next = nullptr;
}

// ---------------------------------------------------------------------------------------------
// HTTP

// Handles one complete request head [p, p+n) (n includes the final CRLFCRLF).
void http_request(Conn* c, const char* p, size_t n) {
  Buf& out = c->w->scratch;
  const char* end = p + n;
  const char* eol = static_cast<const char*>(memchr(p, '\r', n));
  // request line: METHOD SP target SP HTTP/1.x
  const char* sp1 = static_cast<const char*>(memchr(p, ' ', size_t(eol - p)));
  const char* sp2 =
      sp1 ? static_cast<const char*>(memchr(sp1 + 1, ' ', size_t(eol - sp1 - 1))) : nullptr;
  if (!sp1 || !sp2 || eol - sp2 != 9 || memcmp(sp2 + 1, "HTTP/1.", 7) != 0 ||
      (sp2[8] != '0' && sp2[8] != '1')) {
    out.append(kResp400, sizeof kResp400 - 1);
    c->close_after_flush = true;
    return;
  }
  bool http10 = sp2[8] == '0';
  bool is_get = sp1 - p == 3 && memcmp(p, "GET", 3) == 0;
  bool is_head = sp1 - p == 4 && memcmp(p, "HEAD", 4) == 0;
  bool conn_close = false, conn_keep = false, conn_upgrade = false, upgrade_ws = false;
  bool chunked = false, have_len = false, bad = false, expect_continue = false;
  uint64_t clen = 0;
  const char* ws_key = nullptr;
  size_t ws_key_len = 0;
  const char* ws_proto = nullptr;
  size_t ws_proto_len = 0;
  const char* ws_ver = nullptr;
  size_t ws_ver_len = 0;

  const char* line = eol + 2;
  while (line < end) {
    const char* le = static_cast<const char*>(memchr(line, '\r', size_t(end - line)));
    if (!le || le == line)
      break;  // empty line: end of head
    const char* colon = static_cast<const char*>(memchr(line, ':', size_t(le - line)));
    if (!colon) {
      bad = true;
      break;
    }
    const char* name = line;
    size_t nlen = size_t(colon - line);
    const char* v = colon + 1;
    while (v < le && (*v == ' ' || *v == '\t'))
      v++;
    const char* ve = le;
    while (ve > v && (ve[-1] == ' ' || ve[-1] == '\t'))
      ve--;
    size_t vlen = size_t(ve - v);
    switch (nlen) {
      case 7:
        if (ieq(name, nlen, "upgrade"))
          upgrade_ws = upgrade_ws || has_token(v, vlen, "websocket");
        break;
      case 6:
        if (ieq(name, nlen, "expect"))
          expect_continue = ieq(v, vlen, "100-continue");
        break;
      case 10:
        if (ieq(name, nlen, "connection")) {
          conn_close = conn_close || has_token(v, vlen, "close");
          conn_keep = conn_keep || has_token(v, vlen, "keep-alive");
          conn_upgrade = conn_upgrade || has_token(v, vlen, "upgrade");
        }
        break;
      case 14:
        if (ieq(name, nlen, "content-length")) {
          if (vlen == 0 || vlen > 18)
            bad = true;
          uint64_t x = 0;
          for (size_t i = 0; i < vlen; i++) {
            if (v[i] < '0' || v[i] > '9') {
              bad = true;
              break;
            }
            x = x * 10 + uint64_t(v[i] - '0');
          }
          if (have_len && x != clen)
            bad = true;
          have_len = true;
          clen = x;
        }
        break;
      case 17:
        if (ieq(name, nlen, "transfer-encoding"))
          chunked = chunked || has_token(v, vlen, "chunked");
        if (ieq(name, nlen, "sec-websocket-key"))
          ws_key = v, ws_key_len = vlen;
        break;
      case 21:
        if (ieq(name, nlen, "sec-websocket-version"))
          ws_ver = v, ws_ver_len = vlen;
        break;
      case 22:
        if (ieq(name, nlen, "sec-websocket-protocol") && !ws_proto)
          ws_proto = v, ws_proto_len = vlen;
        break;
      default:
        break;
    }
    line = le + 2;
  }
  if (bad || (chunked && have_len)) {
    out.append(kResp400, sizeof kResp400 - 1);
    c->close_after_flush = true;
    return;
  }

  if (is_get && upgrade_ws && conn_upgrade && !http10) {
    if (!ws_ver || ws_ver_len != 2 || memcmp(ws_ver, "13", 2) != 0) {
      out.append(kResp426, sizeof kResp426 - 1);
      c->close_after_flush = true;
      return;
    }
    if (!ws_key || ws_key_len == 0 || ws_key_len > 64 || have_len || chunked) {
      out.append(kResp400, sizeof kResp400 - 1);
      c->close_after_flush = true;
      return;
    }
    static const char kGuid[] = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    char cat[64 + sizeof kGuid];
    memcpy(cat, ws_key, ws_key_len);
    memcpy(cat + ws_key_len, kGuid, sizeof kGuid - 1);
    unsigned char dig[SHA_DIGEST_LENGTH];
    sha1(cat, ws_key_len + sizeof kGuid - 1, dig);
    unsigned char acc[32];
    EVP_EncodeBlock(acc, dig, SHA_DIGEST_LENGTH);  // 28 chars + NUL
    out.append(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Accept: ");
    out.append(acc, 28);
    out.append("\r\n");
    if (ws_proto) {
      // Agree to the first offered subprotocol.
      size_t k = 0;
      while (k < ws_proto_len && ws_proto[k] != ',' && ws_proto[k] != ' ')
        k++;
      out.append("Sec-WebSocket-Protocol: ");
      out.append(ws_proto, k);
      out.append("\r\n");
    }
    out.append("\r\n");
    c->proto = Proto::Ws;
    c->pay_left = 0;
    ws_list_add(c);
    return;
  }

  bool keep = http10 ? (conn_keep && !conn_close) : !conn_close;
  if (expect_continue && !http10 && (chunked || (have_len && clen > 0))) {
    // The body follows: let the client send it (it is read and discarded like any other).
    out.append("HTTP/1.1 100 Continue\r\n\r\n");
  }
  if (is_head) {
    // Same head, no body.
    const char* r = keep ? (http10 ? kRespKeepAlive10 : kRespKeepAlive) : kRespClose;
    size_t rl = strlen(r) - kBodyLen;
    out.append(r, rl);
  } else if (!keep) {
    out.append(kRespClose, sizeof kRespClose - 1);
  } else if (http10) {
    out.append(kRespKeepAlive10, sizeof kRespKeepAlive10 - 1);
  } else {
    out.append(kRespKeepAlive, sizeof kRespKeepAlive - 1);
  }
  if (!keep) {
    c->close_after_flush = true;
    return;
  }
  if (chunked) {
    c->body = Body::ChunkSize;
  } else if (have_len && clen > 0) {
    c->body = Body::Length;
    c->body_left = clen;
  }
}

// Consumes request-body bytes; returns bytes used (0 = need more input).
size_t http_body(Conn* c, const char* p, size_t n) {
  switch (c->body) {
    case Body::Length:
    case Body::ChunkData: {
      size_t k = size_t(std::min<uint64_t>(c->body_left, n));
      c->body_left -= k;
      if (c->body_left == 0)
        c->body = c->body == Body::Length ? Body::None : Body::ChunkSize;
      return k;
    }
    case Body::ChunkSize:
    case Body::Trailer: {
      const char* le = static_cast<const char*>(memchr(p, '\n', n));
      if (!le) {
        if (n > 4096) {
          c->w->scratch.append(kResp400, sizeof kResp400 - 1);
          c->close_after_flush = true;
          return n;
        }
        return 0;
      }
      size_t used = size_t(le - p) + 1;
      if (c->body == Body::Trailer) {
        if (used <= 2)
          c->body = Body::None;  // empty line ends the trailers
        return used;
      }
      uint64_t sz = 0;
      size_t digits = 0;
      for (const char* q = p; q < le; q++, digits++) {
        char ch = *q;
        int v;
        if (ch >= '0' && ch <= '9')
          v = ch - '0';
        else if (ch >= 'a' && ch <= 'f')
          v = ch - 'a' + 10;
        else if (ch >= 'A' && ch <= 'F')
          v = ch - 'A' + 10;
        else
          break;
        if (digits >= 15) {
          c->w->scratch.append(kResp400, sizeof kResp400 - 1);
          c->close_after_flush = true;
          return n;
        }
        sz = sz * 16 + uint64_t(v);
      }
      if (digits == 0) {
        c->w->scratch.append(kResp400, sizeof kResp400 - 1);
        c->close_after_flush = true;
        return n;
      }
      if (sz == 0) {
        c->body = Body::Trailer;
      } else {
        c->body = Body::ChunkData;
        c->body_left = sz + 2;  // data and its CRLF
      }
      return used;
    }
    case Body::None:
      break;
  }
  return 0;
}

// ---------------------------------------------------------------------------------------------
// WebSocket

void ws_protocol_error(Conn* c, uint16_t code) {
  Buf& out = c->w->scratch;
  if (!c->close_sent) {
    put_frame_header(out, 0x88, 2);
    uint8_t b[2] = {uint8_t(code >> 8), uint8_t(code)};
    out.append(b, 2);
    c->close_sent = true;
  }
  c->close_after_flush = true;
}

// Parses and handles frames in [p, p+n); returns bytes used. Never consumes a partial header or
// a partial control frame.
size_t ws_feed(Conn* c, const char* p, size_t n) {
  Buf& out = c->w->scratch;
  size_t pos = 0;
  while (pos < n && !c->close_after_flush) {
    if (c->pay_left) {
      size_t k = size_t(std::min<uint64_t>(c->pay_left, n - pos));
      unmask_copy(out.extend(k), p + pos, k, c->mask, c->pay_off);
      c->pay_left -= k;
      c->pay_off += k;
      pos += k;
      continue;
    }
    const uint8_t* h = reinterpret_cast<const uint8_t*>(p + pos);
    size_t avail = n - pos;
    if (avail < 2)
      break;
    uint8_t b0 = h[0], b1 = h[1];
    uint8_t op = b0 & 0x0f;
    if (b0 & 0x70) {
      ws_protocol_error(c, 1002);  // no extension negotiated
      break;
    }
    if (!(b1 & 0x80)) {
      ws_protocol_error(c, 1002);  // client frames must be masked
      break;
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
    if (avail < hl + 4)
      break;
    const uint8_t* mk = h + hl;
    hl += 4;
    if (op >= 0x8) {
      if (len > 125 || !(b0 & 0x80) || (op != 0x8 && op != 0x9 && op != 0xA)) {
        ws_protocol_error(c, 1002);
        break;
      }
      if (avail < hl + len)
        break;  // wait for the whole control frame
      char payload[125];
      unmask_copy(payload, p + pos + hl, size_t(len), mk, 0);
      pos += hl + size_t(len);
      if (op == 0x9) {  // ping -> pong
        put_frame_header(out, 0x8A, len);
        out.append(payload, size_t(len));
      } else if (op == 0x8) {  // close -> close with the same code, then TCP close
        if (!c->close_sent) {
          size_t l = len >= 2 ? 2 : 0;
          put_frame_header(out, 0x88, l);
          out.append(payload, l);
          c->close_sent = true;
        }
        c->close_after_flush = true;
      }
      continue;  // pong: ignored
    }
    if (op != 0x0 && op != 0x1 && op != 0x2) {
      ws_protocol_error(c, 1002);
      break;
    }
    if (len > kMaxFrame) {
      ws_protocol_error(c, 1009);
      break;
    }
    put_frame_header(out, b0, len);  // same FIN and opcode, unmasked
    memcpy(c->mask, mk, 4);
    c->pay_left = len;
    c->pay_off = 0;
    pos += hl;
  }
  return pos;
}

// ---------------------------------------------------------------------------------------------
// Connection plumbing

size_t feed(Conn* c, const char* p, size_t n) {
  size_t pos = 0;
  while (pos < n && !c->close_after_flush) {
    if (c->proto == Proto::Ws) {
      size_t used = ws_feed(c, p + pos, n - pos);
      pos += used;
      break;  // ws_feed consumes all it can
    }
    if (c->body != Body::None) {
      size_t used = http_body(c, p + pos, n - pos);
      if (used == 0)
        break;
      pos += used;
      continue;
    }
    const char* e = find_crlfcrlf(p + pos, n - pos);
    if (!e) {
      if (n - pos > kMaxHead) {
        c->w->scratch.append(kResp431, sizeof kResp431 - 1);
        c->close_after_flush = true;
        pos = n;
      }
      break;
    }
    size_t hlen = size_t(e + 4 - (p + pos));
    if (hlen > kMaxHead) {
      c->w->scratch.append(kResp431, sizeof kResp431 - 1);
      c->close_after_flush = true;
      pos = n;
      break;
    }
    http_request(c, p + pos, hlen);
    pos += hlen;
  }
  return pos;
}

Conn* conn_from(uv_handle_t* h) {
  return static_cast<Conn*>(h->data);
}

void on_closed(uv_handle_t* h) {
  Conn* c = conn_from(h);
  Worker* w = c->w;
  c->in.len = 0;
  c->inflight.len = 0;
  c->next.len = 0;
  // Keep small buffers for reuse; give big ones back.
  if (c->in.cap > 64 * 1024)
    c->in.release();
  if (c->inflight.cap > 64 * 1024)
    c->inflight.release();
  if (c->next.cap > 64 * 1024)
    c->next.release();
  c->free_next = w->free_list;
  w->free_list = c;
}

void conn_close(Conn* c) {
  if (c->closed)
    return;
  c->closed = true;
  if (c->proto == Proto::Ws)
    ws_list_remove(c);
  uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_closed);
}

void on_alloc(uv_handle_t* h, size_t, uv_buf_t* buf) {
  Worker* w = conn_from(h)->w;
  buf->base = w->rbuf;
  buf->len = kReadBufSize;
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf);

void update_reading(Conn* c) {
  if (c->closed || c->close_after_flush)
    return;
  size_t queued = c->inflight.len + c->next.len;
  if (c->reading && queued > kHighWater) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
    c->reading = false;
  } else if (!c->reading && queued < kLowWater) {
    uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
    c->reading = true;
  }
}

void on_write(uv_write_t* req, int status) {
  Conn* c = static_cast<Conn*>(req->data);
  c->writing = false;
  c->inflight.len = 0;
  if (c->closed)
    return;
  if (status < 0) {
    conn_close(c);
    return;
  }
  if (c->next.len) {
    std::swap(c->inflight, c->next);
    uv_buf_t b = uv_buf_init(c->inflight.d, unsigned(c->inflight.len));
    if (uv_write(&c->wreq, reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1, on_write) < 0) {
      conn_close(c);
      return;
    }
    c->writing = true;
  } else if (c->close_after_flush) {
    conn_close(c);
    return;
  }
  update_reading(c);
}

// Sends data (appended behind anything still queued).
void conn_flush(Conn* c, const char* data, size_t len) {
  if (c->closed)
    return;
  if (c->writing) {
    c->next.append(data, len);
  } else if (len) {
    uv_buf_t b = uv_buf_init(const_cast<char*>(data), unsigned(len));
    int r = uv_try_write(reinterpret_cast<uv_stream_t*>(&c->tcp), &b, 1);
    if (r == UV_EAGAIN)
      r = 0;
    if (r < 0) {
      conn_close(c);
      return;
    }
    if (size_t(r) < len) {
      c->inflight.len = 0;
      c->inflight.append(data + r, len - size_t(r));
      uv_buf_t rb = uv_buf_init(c->inflight.d, unsigned(c->inflight.len));
      if (uv_write(&c->wreq, reinterpret_cast<uv_stream_t*>(&c->tcp), &rb, 1, on_write) < 0) {
        conn_close(c);
        return;
      }
      c->writing = true;
    }
  }
  if (c->close_after_flush && !c->writing) {
    conn_close(c);
    return;
  }
  if (c->close_after_flush && c->reading) {
    uv_read_stop(reinterpret_cast<uv_stream_t*>(&c->tcp));
    c->reading = false;
  }
  update_reading(c);
}

void on_read(uv_stream_t* s, ssize_t nread, const uv_buf_t* buf) {
  Conn* c = conn_from(reinterpret_cast<uv_handle_t*>(s));
  if (nread == 0)
    return;
  if (nread < 0) {
    conn_close(c);
    return;
  }
  Worker* w = c->w;
  w->scratch.len = 0;
  const char* p = buf->base;
  size_t n = size_t(nread);
  while (n > 0 && !c->close_after_flush) {
    if (c->in.len) {
      // Top up the carried-over bytes. For WebSocket only as much as the largest header plus
      // control frame could need, so big payloads are never copied here.
      size_t take = n;
      if (c->proto == Proto::Ws && c->in.len < kWsStash)
        take = std::min(n, kWsStash - c->in.len);
      c->in.append(p, take);
      p += take;
      n -= take;
      size_t used = feed(c, c->in.d, c->in.len);
      c->in.consume_front(used);
      continue;
    }
    size_t used = feed(c, p, n);
    p += used;
    n -= used;
    if (n && !c->close_after_flush) {
      c->in.append(p, n);
      n = 0;
    }
  }
  // A leftover that can never complete (only possible with HTTP heads) was answered in feed().
  conn_flush(c, w->scratch.d, w->scratch.len);
}

void on_connection(uv_stream_t* server, int status) {
  Worker* w = static_cast<Worker*>(server->data);
  if (status < 0)
    return;
  Conn* c = w->free_list;
  if (c) {
    w->free_list = c->free_next;
  } else {
    c = new Conn();
  }
  c->w = w;
  c->writing = c->reading = c->close_after_flush = c->closed = c->close_sent = false;
  c->proto = Proto::Http;
  c->body = Body::None;
  c->body_left = c->pay_left = c->pay_off = 0;
  c->ws_prev = c->ws_next = c->free_next = nullptr;
  uv_tcp_init(&w->loop, &c->tcp);
  c->tcp.data = c;
  c->wreq.data = c;
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(&c->tcp)) != 0) {
    c->closed = true;
    uv_close(reinterpret_cast<uv_handle_t*>(&c->tcp), on_closed);
    return;
  }
  uv_tcp_nodelay(&c->tcp, 1);
  uv_read_start(reinterpret_cast<uv_stream_t*>(&c->tcp), on_alloc, on_read);
  c->reading = true;
}

void on_ping_timer(uv_timer_t* t) {
  Worker* w = static_cast<Worker*>(t->data);
  Buf& out = w->scratch;
  out.len = 0;
  put_frame_header(out, 0x89, sizeof kPingPayload - 1);
  out.append(kPingPayload, sizeof kPingPayload - 1);
  for (Conn* c = w->ws_head; c;) {
    Conn* nx = c->ws_next;  // conn_flush may close c (and unlink it)
    // Only between frames: never inject into the middle of an echoed data frame.
    if (!c->close_sent && c->pay_left == 0 && !c->writing)
      conn_flush(c, out.d, out.len);
    c = nx;
  }
}

void run_worker(Worker* w) {
  uv_run(&w->loop, UV_RUN_DEFAULT);
}

int make_listener(const char* host, int port) {
  sockaddr_storage ss{};
  socklen_t sl;
  auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
  int fam;
  if (inet_pton(AF_INET, host, &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(uint16_t(port));
    sl = sizeof *s4;
    fam = AF_INET;
  } else if (inet_pton(AF_INET6, host, &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(uint16_t(port));
    sl = sizeof *s6;
    fam = AF_INET6;
  } else {
    fprintf(stderr, "backend: --host must be a numeric IPv4 or IPv6 address\n");
    exit(2);
  }
  int fd = socket(fam, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    perror("socket");
    exit(1);
  }
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one);
  if (bind(fd, reinterpret_cast<sockaddr*>(&ss), sl) != 0) {
    fprintf(stderr, "backend: bind %s:%d: %s\n", host, port, strerror(errno));
    exit(1);
  }
  if (listen(fd, 4096) != 0) {
    perror("listen");
    exit(1);
  }
  return fd;
}

void raise_nofile() {
  rlimit rl{};
  if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
    rl.rlim_cur = rl.rlim_max;
    setrlimit(RLIMIT_NOFILE, &rl);
  }
}

[[noreturn]] void usage() {
  fprintf(stderr,
          "usage: sluice_bench_backend --port P [--host ADDR] [--threads N] [--ping-interval SEC]\n"
          "  HTTP/1.1: 200 \"hello, world\\n\" to every request (keep-alive, pipelining)\n"
          "  WebSocket: echo server on the same port (any path)\n"
          "  --ping-interval SEC  send a ping to every WebSocket every SEC seconds (default off)\n"
          "  prints \"ready\" on stdout when listening\n");
  exit(2);
}

}  // namespace

int main(int argc, char** argv) {
  const char* host = "127.0.0.1";
  int port = -1;
  int threads = 1;
  double ping_s = 0;
  for (int i = 1; i < argc; i++) {
    std::string a = argv[i];
    auto val = [&]() -> const char* {
      if (i + 1 >= argc)
        usage();
      return argv[++i];
    };
    if (a == "--port")
      port = atoi(val());
    else if (a == "--host")
      host = val();
    else if (a == "--threads")
      threads = atoi(val());
    else if (a == "--ping-interval")
      ping_s = atof(val());
    else
      usage();
  }
  if (port <= 0 || port > 65535 || threads < 1 || threads > 256 || ping_s < 0)
    usage();
  signal(SIGPIPE, SIG_IGN);
  raise_nofile();

  std::vector<Worker*> workers;
  for (int i = 0; i < threads; i++) {
    auto* w = new Worker();
    w->fd = make_listener(host, port);
    w->ping_ms = uint64_t(ping_s * 1000);
    uv_loop_init(&w->loop);
    uv_tcp_init(&w->loop, &w->server);
    w->server.data = w;
    if (int r = uv_tcp_open(&w->server, w->fd); r != 0) {
      fprintf(stderr, "backend: uv_tcp_open: %s\n", uv_strerror(r));
      return 1;
    }
    if (int r = uv_listen(reinterpret_cast<uv_stream_t*>(&w->server), 4096, on_connection);
        r != 0) {
      fprintf(stderr, "backend: uv_listen: %s\n", uv_strerror(r));
      return 1;
    }
    if (w->ping_ms) {
      uv_timer_init(&w->loop, &w->ping_timer);
      w->ping_timer.data = w;
      uv_timer_start(&w->ping_timer, on_ping_timer, w->ping_ms, w->ping_ms);
    }
    workers.push_back(w);
  }
  printf("ready\n");
  fflush(stdout);

  std::vector<std::thread> ts;
  for (int i = 1; i < threads; i++)
    ts.emplace_back(run_worker, workers[size_t(i)]);
  run_worker(workers[0]);
  for (auto& t : ts)
    t.join();
  return 0;
}
