#include "proxy/http/message.h"

#include <charconv>
#include <cstdio>

namespace sluice::http {

namespace {
char lower(char c) {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

std::string_view trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) {
    s.remove_prefix(1);
  }
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) {
    s.remove_suffix(1);
  }
  return s;
}

void appendHeader(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

void appendFraming(std::string* out, Framing framing) {
  if (framing == Framing::kChunked) {
    out->append("Transfer-Encoding: chunked\r\n");
  }
}

// Room for a rewritten head of `head`'s headers and `extra` more bytes, so that building it does
// not grow the string step by step.
template <typename Head>
void reserveHead(std::string* out, const Head& head, size_t extra) {
  size_t n = extra;
  for (const Header& h : head.headers) {
    n += h.name.size() + h.value.size() + 4;
  }
  out->reserve(out->size() + n);
}

template <typename Head>
const Header* findHeader(const Head& head, std::string_view name) {
  for (const Header& h : head.headers) {
    if (iequals(h.name, name)) {
      return &h;
    }
  }
  return nullptr;
}
}  // namespace

bool iequalsBytes(const char* a, const char* b, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (lower(a[i]) != lower(b[i])) {
      return false;
    }
  }
  return true;
}

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

const Header* RequestHead::find(std::string_view name) const {
  return findHeader(*this, name);
}

size_t RequestHead::count(std::string_view name) const {
  size_t n = 0;
  for (const Header& h : headers) {
    n += iequals(h.name, name) ? 1 : 0;
  }
  return n;
}

void RequestHead::clear() {
  method.clear();
  url.clear();
  headers.clear();
  major = minor = 1;
}

const Header* ResponseHead::find(std::string_view name) const {
  return findHeader(*this, name);
}

void ResponseHead::clear() {
  status = 0;
  reason.clear();
  headers.clear();
  major = minor = 1;
}

bool isHopByHop(std::string_view name, std::string_view connection_value) {
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
  return !connection_value.empty() && headerHasToken(connection_value, name);
}

void writeUpstreamRequest(const RequestHead& req, const ForwardInfo& info, Framing framing,
                          std::string* out) {
  // + the request line and the X-Forwarded-* headers
  reserveHead(out, req, req.method.size() + req.url.size() + info.client_ip.size() + 160);
  const Header* connection = req.find("connection");
  std::string_view conn_value = connection ? std::string_view(connection->value) : "";
  out->append(req.method);
  out->push_back(' ');
  out->append(req.url);
  out->append(" HTTP/1.1\r\n");

  std::string xff;
  const Header* host = nullptr;
  bool has_request_id = false;
  for (const Header& h : req.headers) {
    if (iequals(h.name, "x-forwarded-for")) {
      if (!xff.empty()) {
        xff.append(", ");
      }
      xff.append(trim(h.value));
      continue;
    }
    if (iequals(h.name, "x-forwarded-proto") || iequals(h.name, "x-forwarded-host") ||
        iequals(h.name, "expect") || iequals(h.name, "x-client-cert-subject")) {
      continue;
    }
    if (iequals(h.name, "host")) {
      host = &h;
    } else if (iequals(h.name, "x-request-id")) {
      has_request_id = true;
    }
    if (info.strip_ws_extensions && iequals(h.name, "sec-websocket-extensions")) {
      continue;
    }
    if (info.upgrade && (iequals(h.name, "upgrade") || iequals(h.name, "connection"))) {
      continue;  // re-added below in canonical form
    }
    if (isHopByHop(h.name, conn_value)) {
      continue;
    }
    if (framing != Framing::kContentLength && iequals(h.name, "content-length")) {
      continue;
    }
    out->append(h.name);
    out->append(": ");
    out->append(h.value);
    out->append("\r\n");
  }
  if (info.upgrade) {
    const Header* upgrade = req.find("upgrade");
    appendHeader(out, "Connection", "Upgrade");
    appendHeader(out, "Upgrade", upgrade ? std::string_view(upgrade->value) : "websocket");
  }
  if (!xff.empty()) {
    xff.append(", ");
  }
  xff.append(info.client_ip);
  appendHeader(out, "X-Forwarded-For", xff);
  appendHeader(out, "X-Forwarded-Proto", info.proto);
  if (host != nullptr) {
    appendHeader(out, "X-Forwarded-Host", host->value);
  }
  if (!info.client_subject.empty()) {
    appendHeader(out, "X-Client-Cert-Subject", info.client_subject);
  }
  if (!has_request_id && !info.request_id.empty()) {
    appendHeader(out, "X-Request-Id", info.request_id);
  }
  appendFraming(out, framing);
  out->append("\r\n");
}

void writeDownstreamResponse(const ResponseHead& resp, Framing framing, bool keep_alive,
                             std::string_view extra_headers, std::string* out) {
  reserveHead(out, resp, resp.reason.size() + extra_headers.size() + 96);  // + status line, framing
  const Header* connection = resp.find("connection");
  std::string_view conn_value = connection ? std::string_view(connection->value) : "";
  char line[16] = "HTTP/1.1 ";
  char* end = std::to_chars(line + 9, line + sizeof line - 1, resp.status).ptr;
  *end++ = ' ';
  out->append(line, static_cast<size_t>(end - line));
  out->append(resp.reason.empty() ? std::string_view(reasonPhrase(resp.status))
                                  : std::string_view(resp.reason));
  out->append("\r\n");
  bool informational = resp.status >= 100 && resp.status < 200;
  for (const Header& h : resp.headers) {
    if (isHopByHop(h.name, conn_value)) {
      continue;
    }
    if (framing != Framing::kContentLength && iequals(h.name, "content-length") &&
        !(framing == Framing::kNone && !informational)) {
      continue;
    }
    out->append(h.name);
    out->append(": ");
    out->append(h.value);
    out->append("\r\n");
  }
  out->append(extra_headers);
  if (!informational) {
    appendFraming(out, framing);
    if (!keep_alive) {
      out->append("Connection: close\r\n");
    }
  }
  out->append("\r\n");
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
