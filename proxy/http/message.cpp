#include "proxy/http/message.h"

#include <charconv>
#include <cstdio>

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

void appendHeader(std::string* out, std::string_view name, std::string_view value) {
  out->append(name);
  out->append(": ");
  out->append(value);
  out->append("\r\n");
}

void appendFraming(std::string* out, BodyFraming framing) {
  if (framing.kind == Framing::kChunked) {
    out->append("Transfer-Encoding: chunked\r\n");
  } else if (framing.kind == Framing::kContentLength) {
    char line[40] = "Content-Length: ";
    char* end = std::to_chars(line + 16, line + sizeof line - 2, framing.length).ptr;
    *end++ = '\r';
    *end++ = '\n';
    out->append(line, static_cast<size_t>(end - line));
  }
}

// The headers that carry a message's framing: never copied, always written by sluice.
bool isFramingHeader(std::string_view name) {
  return iequals(name, "content-length") || iequals(name, "transfer-encoding");
}

bool isWebSocketHeader(std::string_view name) {
  return name.size() > 14 && iequalsBytes(name.data(), "sec-websocket-", 14);
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
  // + the request line and the X-Forwarded-* headers
  reserveHead(out, req,
              req.method.size() + req.url.size() + info.x_forwarded_for.size() +
                  info.x_forwarded_host.size() + info.forwarded.size() + 160);
  const ConnectionOptions connection(req.headers);
  out->append(req.method);
  out->push_back(' ');
  out->append(req.url);
  out->append(" HTTP/1.1\r\n");

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
    appendHeader(out, h.name, h.value);
  }
  if (info.upgrade) {
    const Header* upgrade = req.find("upgrade");
    appendHeader(out, "Connection", "Upgrade");
    appendHeader(out, "Upgrade", upgrade ? std::string_view(upgrade->value) : "websocket");
    if (!info.ws_extensions.empty()) {
      appendHeader(out, "Sec-WebSocket-Extensions", info.ws_extensions);
    }
  }
  if (!info.x_forwarded_for.empty()) {
    appendHeader(out, "X-Forwarded-For", info.x_forwarded_for);
  }
  if (!info.x_forwarded_proto.empty()) {
    appendHeader(out, "X-Forwarded-Proto", info.x_forwarded_proto);
  }
  if (!info.x_forwarded_host.empty()) {
    appendHeader(out, "X-Forwarded-Host", info.x_forwarded_host);
  }
  if (!info.forwarded.empty()) {
    appendHeader(out, "Forwarded", info.forwarded);
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

void writeDownstreamResponse(const ResponseHead& resp, BodyFraming framing, bool keep_alive,
                             std::string_view extra_headers, std::string* out) {
  reserveHead(out, resp, resp.reason.size() + extra_headers.size() + 96);  // + status line, framing
  const ConnectionOptions connection(resp.headers);
  char line[16] = "HTTP/1.1 ";
  char* end = std::to_chars(line + 9, line + sizeof line - 1, resp.status).ptr;
  *end++ = ' ';
  out->append(line, static_cast<size_t>(end - line));
  out->append(resp.reason.empty() ? std::string_view(reasonPhrase(resp.status))
                                  : std::string_view(resp.reason));
  out->append("\r\n");
  bool informational = resp.status >= 100 && resp.status < 200;
  // A response without a body (to HEAD, 304) keeps its Content-Length as information about the
  // representation: it frames nothing. A 204 never has one (RFC 9110 8.6).
  bool length_is_metadata = framing.kind == Framing::kNone && !informational && resp.status != 204;
  for (const Header& h : resp.headers) {
    if (isFramingHeader(h.name)) {
      if (length_is_metadata && iequals(h.name, "content-length")) {
        appendHeader(out, h.name, h.value);
      }
      continue;
    }
    if (!(resp.status == 101 && isWebSocketHeader(h.name)) && isHopByHop(h.name, connection)) {
      continue;
    }
    appendHeader(out, h.name, h.value);
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
