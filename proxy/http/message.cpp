#include "proxy/http/message.h"

#include <algorithm>
#include <charconv>
#include <cstdio>
#include <cstring>

namespace sluice::http {

namespace {
std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

// Writes a head straight into the string's buffer: one bounds check per line, where appending
// the name, ": ", the value and CRLF checked the capacity four times and called memcpy for each.
class HeadWriter {
 public:
  // `expected` is a good guess of the head's size: the buffer grows past it if needed.
  HeadWriter(std::string* out, size_t expected) : out_(out), pos_(out->size()) {
    out_->resize(pos_ + expected);
  }
  ~HeadWriter() { out_->resize(pos_); }
  HeadWriter(const HeadWriter&) = delete;
  HeadWriter& operator=(const HeadWriter&) = delete;

  void append(std::string_view s) { copy(room(s.size()), s); }
  void header(std::string_view name, std::string_view value) {
    char* p = copy(room(name.size() + value.size() + 4), name);
    *p++ = ':';
    *p++ = ' ';
    p = copy(p, value);
    *p++ = '\r';
    *p = '\n';
  }
  void framing(BodyFraming framing) {
    if (framing.kind == Framing::kChunked) {
      append("Transfer-Encoding: chunked\r\n");
    } else if (framing.kind == Framing::kContentLength) {
      char line[40] = "Content-Length: ";
      char* end = std::to_chars(line + 16, line + sizeof line - 2, framing.length).ptr;
      *end++ = '\r';
      *end++ = '\n';
      append(std::string_view(line, static_cast<size_t>(end - line)));
    }
  }

 private:
  // `n` bytes to write at the end of what is written so far.
  char* room(size_t n) {
    if (out_->size() - pos_ < n) {
      out_->resize(std::max(pos_ + n, 2 * out_->size()));
    }
    char* p = out_->data() + pos_;
    pos_ += n;
    return p;
  }
  static char* copy(char* p, std::string_view s) {
    if (!s.empty()) {  // an empty view may hold a null pointer, which memcpy must not get
      std::memcpy(p, s.data(), s.size());
    }
    return p + s.size();
  }

  std::string* out_;
  size_t pos_;  // the end of what is written
};

// The headers that carry a message's framing: never copied, always written by sluice.
bool isFramingHeader(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding");
}

bool isWebSocketHeader(std::string_view name) {
  return name.size() > 14 && iequalsBytes(name.data(), "sec-websocket-", 14);
}

// The size of a rewritten head of `head`'s headers and `extra` more bytes, so that building it
// does not grow the string step by step.
template <typename Head>
size_t headSize(const Head& head, size_t extra) {
  size_t n = extra;
  for (const Header& h : head.headers) {
    n += h.name.size() + h.value.size() + 4;
  }
  return n;
}

}  // namespace

bool headerHasToken(std::string_view value, std::string_view token) {
  while (!value.empty()) {
    size_t comma = value.find(',');
    std::string_view item = trim(value.substr(0, comma));
    if (iequals(item, token)) {
      return true;
    }
    if (comma == std::string_view::npos) {
      break;
    }
    value.remove_prefix(comma + 1);
  }
  return false;
}

bool headersHaveToken(const std::vector<Header>& headers, std::string_view name,
                      std::string_view token) {
  for (const Header& h : headers) {
    if (iequals(h.name, name) && headerHasToken(h.value, token)) {
      return true;
    }
  }
  return false;
}

ConnectionOptions::ConnectionOptions(const std::vector<Header>& headers) {
  for (const Header& h : headers) {
    if (!iequals(h.name, "connection")) {
      continue;
    }
    if (count_ == kInline) {
      headers_ = &headers;  // many lines: has() reads them all where they are
      return;
    }
    lines_[count_++] = h.value;
  }
}

bool ConnectionOptions::has(std::string_view token) const {
  if (headers_ != nullptr) {
    return headersHaveToken(*headers_, "connection", token);
  }
  for (size_t i = 0; i < count_; ++i) {
    if (headerHasToken(lines_[i], token)) {
      return true;
    }
  }
  return false;
}

bool onlyChunked(const std::vector<Header>& headers) {
  size_t lines = 0;
  for (const Header& h : headers) {
    if (iequals(h.name, "transfer-encoding")) {
      if (++lines > 1 || !iequals(trim(h.value), "chunked")) {
        return false;
      }
    }
  }
  return lines == 1;
}

bool isHopByHop(std::string_view name, const ConnectionOptions& connection) {
  static constexpr std::string_view kFixed[] = {
      "connection", "keep-alive", "te", "trailer", "transfer-encoding", "upgrade",
  };
  for (std::string_view f : kFixed) {
    if (iequals(name, f)) {
      return true;
    }
  }
  if (name.size() >= 6 && iequals(name.substr(0, 6), "proxy-")) {
    return true;
  }
  return connection.has(name);
}

void writeUpstreamRequest(const RequestHead& req, const ForwardInfo& info, BodyFraming framing,
                          std::string* out) {
  // + the request line, the headers sluice adds and the framing
  HeadWriter w(out, headSize(req, req.method.size() + req.url.size() + info.x_forwarded_for.size() +
                                      info.x_forwarded_host.size() + info.forwarded.size() +
                                      info.request_id.size() + info.client_subject.size() +
                                      info.ws_extensions.size() + 240));
  const ConnectionOptions connection(req.headers);
  w.append(req.method);
  w.append(" ");
  w.append(req.url);
  w.append(" HTTP/1.1\r\n");

  bool has_request_id = false;
  for (const Header& h : req.headers) {
    // Headers sluice writes itself, or never forwards. A Connection nomination cannot remove
    // the ones kept from here on: Host, X-Request-Id, and a handshake's Sec-WebSocket-*.
    if (isFramingHeader(h.name)) {
      continue;
    }
    if (iequals(h.name, "x-forwarded-for") || iequals(h.name, "x-forwarded-proto") ||
        iequals(h.name, "x-forwarded-host") || iequals(h.name, "forwarded") ||
        iequals(h.name, "expect") || iequals(h.name, "x-client-cert-subject")) {
      continue;
    }
    bool kept = false;
    if (iequals(h.name, "host")) {
      kept = true;
    } else if (iequals(h.name, "x-request-id")) {
      has_request_id = true;
      kept = true;
    } else if (info.upgrade) {
      if (iequals(h.name, "upgrade") || iequals(h.name, "connection")) {
        continue;  // re-added below in canonical form
      }
      if (isWebSocketHeader(h.name)) {
        if (info.strip_ws_extensions && iequals(h.name, "sec-websocket-extensions")) {
          continue;
        }
        kept = true;
      }
    }
    if (!kept && isHopByHop(h.name, connection)) {
      continue;
    }
    w.header(h.name, h.value);
  }
  if (info.upgrade) {
    const Header* upgrade = req.find("upgrade");
    w.header("Connection", "Upgrade");
    w.header("Upgrade", upgrade ? std::string_view(upgrade->value) : "websocket");
    if (!info.ws_extensions.empty()) {
      w.header("Sec-WebSocket-Extensions", info.ws_extensions);
    }
  }
  if (!info.x_forwarded_for.empty()) {
    w.header("X-Forwarded-For", info.x_forwarded_for);
  }
  if (!info.x_forwarded_proto.empty()) {
    w.header("X-Forwarded-Proto", info.x_forwarded_proto);
  }
  if (!info.x_forwarded_host.empty()) {
    w.header("X-Forwarded-Host", info.x_forwarded_host);
  }
  if (!info.forwarded.empty()) {
    w.header("Forwarded", info.forwarded);
  }
  if (!info.client_subject.empty()) {
    w.header("X-Client-Cert-Subject", info.client_subject);
  }
  if (!has_request_id && !info.request_id.empty()) {
    w.header("X-Request-Id", info.request_id);
  }
  w.framing(framing);
  w.append("\r\n");
}

void writeDownstreamResponse(const ResponseHead& resp, BodyFraming framing, bool keep_alive,
                             std::string_view extra_headers, std::string* out) {
  // + the status line, the framing and Connection: close
  HeadWriter w(out, headSize(resp, resp.reason.size() + extra_headers.size() + 128));
  const ConnectionOptions connection(resp.headers);
  char line[16] = "HTTP/1.1 ";
  char* end = std::to_chars(line + 9, line + sizeof line - 1, resp.status).ptr;
  *end++ = ' ';
  w.append(std::string_view(line, static_cast<size_t>(end - line)));
  w.append(resp.reason.empty() ? std::string_view(reasonPhrase(resp.status))
                               : std::string_view(resp.reason));
  w.append("\r\n");
  bool informational = resp.status >= 100 && resp.status < 200;
  // A response without a body (to HEAD, 304) keeps its Content-Length as information about the
  // representation: it frames nothing. A 204 never has one (RFC 9110 8.6).
  bool length_is_metadata = framing.kind == Framing::kNone && !informational && resp.status != 204;
  for (const Header& h : resp.headers) {
    if (isFramingHeader(h.name)) {
      if (length_is_metadata && iequals(h.name, "content-length")) {
        w.header(h.name, h.value);
      }
      continue;
    }
    if (!(resp.status == 101 && isWebSocketHeader(h.name)) && isHopByHop(h.name, connection)) {
      continue;
    }
    w.header(h.name, h.value);
  }
  w.append(extra_headers);
  if (!informational) {
    w.framing(framing);
    if (!keep_alive) {
      w.append("Connection: close\r\n");
    }
  }
  w.append("\r\n");
}

void writeLocalResponse(uint16_t status, std::string_view detail, bool keep_alive,
                        std::string_view extra_headers, bool head_only, std::string* out) {
  char buf[256];
  const char* reason = reasonPhrase(status);
  int body_len =
      snprintf(buf, sizeof buf, "%u %s%s%.*s\n", static_cast<unsigned>(status), reason,
               detail.empty() ? "" : ": ", static_cast<int>(detail.size()), detail.data());
  if (body_len < 0) {
    body_len = 0;
  }
  body_len = std::min<int>(body_len, static_cast<int>(sizeof buf) - 1);
  char head[256];
  int n = snprintf(head, sizeof head,
                   "HTTP/1.1 %u %s\r\nContent-Type: text/plain; charset=utf-8\r\n"
                   "Content-Length: %d\r\n%s",
                   static_cast<unsigned>(status), reason, body_len,
                   keep_alive ? "" : "Connection: close\r\n");
  out->append(head, static_cast<size_t>(n));
  out->append(extra_headers);
  out->append("\r\n");
  if (!head_only) {
    out->append(buf, static_cast<size_t>(body_len));
  }
}

const char* reasonPhrase(uint16_t status) {
  switch (status) {
    case 100:
      return "Continue";
    case 101:
      return "Switching Protocols";
    case 103:
      return "Early Hints";
    case 200:
      return "OK";
    case 201:
      return "Created";
    case 202:
      return "Accepted";
    case 204:
      return "No Content";
    case 206:
      return "Partial Content";
    case 301:
      return "Moved Permanently";
    case 302:
      return "Found";
    case 304:
      return "Not Modified";
    case 307:
      return "Temporary Redirect";
    case 308:
      return "Permanent Redirect";
    case 400:
      return "Bad Request";
    case 401:
      return "Unauthorized";
    case 403:
      return "Forbidden";
    case 404:
      return "Not Found";
    case 405:
      return "Method Not Allowed";
    case 408:
      return "Request Timeout";
    case 413:
      return "Content Too Large";
    case 417:
      return "Expectation Failed";
    case 426:
      return "Upgrade Required";
    case 429:
      return "Too Many Requests";
    case 431:
      return "Request Header Fields Too Large";
    case 500:
      return "Internal Server Error";
    case 501:
      return "Not Implemented";
    case 502:
      return "Bad Gateway";
    case 503:
      return "Service Unavailable";
    case 504:
      return "Gateway Timeout";
    case 505:
      return "HTTP Version Not Supported";
    default:
      return "Unknown";
  }
}

}  // namespace sluice::http
